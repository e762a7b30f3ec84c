# Evaluation stage: one job per filter on the test split, then one summary over all filters.


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


rule summary:
    input:
        evaluations=expand("results/eval/{filter}.json", filter=FILTERS),
        code=code("summary.py"),
    output:
        csv=report("results/tables/kernels.csv", caption="../report/table.rst", category="Summary"),
        markdown="results/tables/kernels.md",
        plot=report("results/plots/summary.png", caption="../report/summary.rst", category="Summary"),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/summary.py"
