"""Snakemake entry point: the kernel comparison table (CSV, markdown) and the summary plot, then results/report.html."""
from pathlib import Path

from img2kernel.pipeline.logs import log_to
from img2kernel.report.page import render_report
from img2kernel.report.summary import write_summary

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        evaluations = snakemake.input.evaluations
        table = write_summary(evaluations, snakemake.output.table, snakemake.output.markdown, snakemake.output.summary_plot)
        log.info("summary of %d filters written", len(table))
        downloaded = "images" in snakemake.input.keys()
        render_report(
            evaluations,
            [Path(snakemake.output.table).parent.parent / "plots" / Path(e).stem for e in evaluations],
            snakemake.output.table,
            snakemake.output.summary_plot,
            Path(snakemake.input.images) / "summary.json" if downloaded else None,
            Path(snakemake.input.store) / "manifest.json" if downloaded else None,
            snakemake.input.benchmarks,
            snakemake.output.report,
            url_counts=snakemake.input.urls if downloaded else None,
            pairs_manifests=[Path(folder) / "manifest.json" for folder in snakemake.input.pairs_manifests],
            workers=snakemake.threads,
        )
        log.info("report written to %s", snakemake.output.report)
