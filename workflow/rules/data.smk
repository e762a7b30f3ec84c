# Data stage: URL list -> URL table -> img2dataset shards -> grayscale float32 inputs store.


rule url_list:
    input:
        source=url_source(),
        code=code("url_list.py", exclude=["store/shards.py"]),
    output:
        table="results/urls/urls.parquet",
        counts="results/urls/urls.json",
    params:
        settings=url_list_settings(),
    log:
        "results/logs/urls/url_list.log",
    benchmark:
        "results/benchmarks/urls/url_list.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/url_list.py"


# Resumable: img2dataset works in results/downloading/<fingerprint>/, which Snakemake
# does not delete when it reruns a killed job; the finished folder becomes results/images.
rule download:
    input:
        urls="results/urls/urls.parquet",
        code=code("download.py", exclude=["store/shards.py"]),
    output:
        directory("results/images"),
    params:
        settings=download_settings(),
        work_root="results/downloading",
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
        code=code("inputs_store.py"),
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
