# Evaluation stage: one job per filter on the test split (the summary over all filters is the report's).


rule evaluate:
    input:
        unpack(filter_stores),
        model="results/models/{filter}.safetensors",
        info="results/models/{filter}.json",
        history="results/train/{filter}.csv",
        code=code("evaluate.py"),
    output:
        result="results/eval/{filter}.json",
        kernels_csv="results/eval/{filter}.kernels.csv",
        kernels=report(
            "results/plots/{filter}/kernels.png",
            caption="../report/kernels.rst",
            category="Kernels",
            labels={"filter": "{filter}", "figure": "kernels"},
        ),
        training=report(
            "results/plots/{filter}/training.png",
            caption="../report/training.rst",
            category="Training",
            labels={"filter": "{filter}", "figure": "training curves"},
        ),
        images=report(
            "results/plots/{filter}/images.png",
            caption="../report/images.rst",
            category="Test images",
            labels={"filter": "{filter}", "figure": "test images"},
        ),
    params:
        max_images=config["eval"]["max_images"],
        catalogue=other_kernels,
    resources:
        cpu_slots=1,
    log:
        "results/logs/eval/{filter}.log",
    benchmark:
        "results/benchmarks/eval/{filter}.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/evaluate.py"

