"""Snakemake entry point: the user's URL list (or the sample photos) as results/urls/urls.parquet."""
import json

from img2kernel.pipeline.logs import log_to
from img2kernel.sources.urls import write_url_table

if __name__ == "__main__":
    settings = json.loads(snakemake.params.settings)
    with log_to(snakemake.log[0]) as log:
        counts = write_url_table(settings["source"], snakemake.output.table, url_col=settings["url_col"], max_images=settings["max_images"])
        with open(snakemake.output.counts, "w") as handle:
            json.dump(counts, handle, indent=2)
        log.info("URL list: %s", json.dumps(counts))
