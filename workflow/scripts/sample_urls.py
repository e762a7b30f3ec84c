"""Snakemake entry point: list the sample photos inside scikit-image's wheel as file:// URLs."""
from img2kernel.data import write_sample_url_list
from img2kernel.logs import log_to

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        count = write_sample_url_list(snakemake.output[0])
        log.info("listed %d sample photos in %s", count, snakemake.output[0])
