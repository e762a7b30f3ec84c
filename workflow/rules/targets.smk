# Targets stage: one job per filter applies it with OpenCV to every stored input.


rule targets:
    input:
        inputs="results/store/inputs",
        code=code("targets.py"),
    output:
        directory("results/store/targets/{filter}"),
    params:
        spec=filter_target_spec,
        dtype=config["store"]["dtype"],
    log:
        "results/logs/targets/{filter}.log",
    benchmark:
        "results/benchmarks/targets/{filter}.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/targets.py"
