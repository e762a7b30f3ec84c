# Report stage: the summary over all filters (the kernel comparison table and its plot) and
# results/report.html, one self-contained page built from every stage's outputs. One job: both
# read every filter's evaluation, so an edit to one filter reruns them together anyway.


rule report:
    input:
        unpack(lambda wildcards: data_summaries()),
        evaluations=expand("results/eval/{filter}.json", filter=FILTERS),
        plots=expand("results/plots/{filter}/{figure}.png", filter=FILTERS, figure=["kernels", "training", "images"]),
        benchmarks=benchmark_files(),
        code=code("report.py", also=["report/templates/report.html.j2"]),
    output:
        report="results/report.html",
        table=report("results/tables/kernels.csv", caption="../report/table.rst", category="Summary"),
        markdown="results/tables/kernels.md",
        summary_plot=report("results/plots/summary.png", caption="../report/summary.rst", category="Summary"),
    threads: WIDE_JOB_THREADS
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/img2kernel.yaml"
    script:
        "../scripts/report.py"
