# Data stage: URL list -> img2dataset shards -> grayscale float32 inputs store.


rule sample_urls:
    output:
        "results/urls/sample.txt",
    log:
        "results/logs/urls/sample.log",
    benchmark:
        "results/benchmarks/urls/sample.tsv"
    localrule: True
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/sample_urls.py"


rule download:
    input:
        urls=url_list(),
        code=code("data.py"),
    output:
        directory("results/images"),
    params:
        settings=download_settings(),
    threads: 8
    log:
        "results/logs/images/download.log",
    benchmark:
        "results/benchmarks/images/download.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/download.py"


rule inputs_store:
    input:
        images="results/images",
        code=code("data.py", "store.py"),
    output:
        directory("results/store/inputs"),
    params:
        settings=inputs_store_settings(),
    log:
        "results/logs/store/inputs.log",
    benchmark:
        "results/benchmarks/store/inputs.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/inputs_store.py"
