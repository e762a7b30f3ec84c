# Training stage: one job per filter learns its model from its pairs, whatever their source
# (our targets: gradient training and the least-squares oracle; your pairs: the pairs fit).


rule train:
    input:
        unpack(filter_stores),
        code=code("train.py"),
    output:
        model="results/models/{filter}.safetensors",
        info="results/models/{filter}.json",
        history="results/train/{filter}.csv",
    params:
        spec=filter_target_spec,
        settings=filter_training_settings,
        device=config["device"],
    # One thread a job for our filters: training works on 16 small crops (and the ladder on
    # 10,000 windows), which a second thread barely speeds up; two jobs side by side on two
    # cores finish the run sooner than one at a time on both. A pairs fit gets more.
    threads: train_threads
    resources:
        # With a GPU, local runs put at most `--resources gpu=N` training jobs on it at
        # once (profiles/default sets N=1); on a CPU-only machine jobs run side by side.
        gpu=training_gpus(),
        cpu_slots=1,
    log:
        "results/logs/train/{filter}.log",
    benchmark:
        "results/benchmarks/train/{filter}.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/train.py"
