# Training stage: one job per filter learns its kernel(s) and fits the least-squares oracle.


rule train:
    input:
        inputs="results/store/inputs",
        targets="results/store/targets/{filter}",
        code=code("train.py", "model.py", "oracle.py", "kernels.py", "filters.py", "store.py", "ops.py", "files.py"),
    output:
        model="results/models/{filter}.safetensors",
        oracle="results/models/{filter}.oracle.safetensors",
        info="results/models/{filter}.json",
        history="results/train/{filter}.csv",
    params:
        spec=filter_target_spec,
        settings=filter_training_settings,
        device=config["device"],
    threads: 2
    resources:
        # With a GPU, local runs put at most `--resources gpu=N` training jobs on it at
        # once (profiles/default sets N=1); on a CPU-only machine jobs run side by side.
        gpu=training_gpus(),
        cpu_slots=2,
    log:
        "results/logs/train/{filter}.log",
    benchmark:
        "results/benchmarks/train/{filter}.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/train.py"
