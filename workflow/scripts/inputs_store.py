"""Snakemake entry point: decode downloaded images into the grayscale float32 inputs store."""
import json

from img2kernel.sources.downloads import build_inputs_store
from img2kernel.pipeline.logs import log_to

if __name__ == "__main__":
    settings = json.loads(snakemake.params.settings)
    with log_to(snakemake.log[0]) as log:
        manifest = build_inputs_store(
            snakemake.input.images,
            snakemake.output[0],
            val_fraction=settings["split"]["val"],
            test_fraction=settings["split"]["test"],
            split_seed=settings["split"]["seed"],
            dtype=settings["dtype"],
            min_side=settings["min_side"],
            max_side=settings["max_side"],
        )
        log.info("inputs store: %s", json.dumps(manifest))
