"""Snakemake entry point: the kernel comparison table (CSV, markdown) and the summary plot."""
from img2kernel.pipeline.logs import log_to
from img2kernel.report.summary import write_summary

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        table = write_summary(snakemake.input.evaluations, snakemake.output.csv, snakemake.output.markdown, snakemake.output.plot)
        log.info("summary of %d filters written", len(table))
