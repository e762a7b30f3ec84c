"""Snakemake entry point: apply one filter to every stored input."""
import json

from img2kernel.pipeline.logs import log_to
from img2kernel.sources.targets import compute_targets

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        manifest = compute_targets(
            snakemake.input.inputs, snakemake.output[0], json.loads(snakemake.params.spec), snakemake.params.dtype
        )
        log.info("targets: %d images, %.1f MP/s", manifest["images"], manifest["megapixels_per_second"] or 0)
