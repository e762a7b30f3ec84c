"""Snakemake entry point: read a pairs filter's files once into its input and output stores."""
import json

from img2kernel.pipeline.logs import log_to
from img2kernel.sources.pairs_store import build_pairs_store

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        settings = json.loads(snakemake.params.settings)
        spec = {"name": snakemake.wildcards.filter, **settings["spec"]}
        manifest = build_pairs_store(spec, snakemake.output.inputs, snakemake.output.outputs, seed=settings["seed"],
                                     timeout=settings.get("timeout", 10), retries=settings.get("retries", 2))
        log.info("%s: %d pairs (%s split), channels %s, storage %s -> %s", spec["name"], manifest["pairs"],
                 manifest["split_mode"], manifest["channels"], manifest["input_storage"], manifest["output_storage"])
