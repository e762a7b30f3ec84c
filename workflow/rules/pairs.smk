# Pairs stage: a `pairs` filter's own (input, output) files, decoded once into two stores.
# Its files are the job's inputs (listed from the folders or table when Snakemake starts),
# so adding, removing or editing one rebuilds this store and what depends on it.


rule pairs_store:
    input:
        files=pairs_files,
        code=code("pairs_store.py"),
    output:
        inputs=directory("results/store/pairs/{filter}/inputs"),
        outputs=directory("results/store/pairs/{filter}/outputs"),
    params:
        settings=pairs_settings,
    log:
        "results/logs/pairs/{filter}.log",
    benchmark:
        "results/benchmarks/pairs/{filter}.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/pairs_store.py"
