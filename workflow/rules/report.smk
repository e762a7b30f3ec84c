# Report stage: results/report.html, one self-contained page built from every stage's outputs.


rule report:
    input:
        unpack(lambda wildcards: data_summaries()),
        evaluations=expand("results/eval/{filter}.json", filter=FILTERS),
        plots=expand("results/plots/{filter}/{figure}.png", filter=FILTERS, figure=["kernels", "training", "images"]),
        table="results/tables/kernels.csv",
        summary_plot="results/plots/summary.png",
        benchmarks=benchmark_files(),
        code=code("report.py", also=["report/templates/report.html.j2"]),
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/report.py"
