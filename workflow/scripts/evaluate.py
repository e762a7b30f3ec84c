"""Snakemake entry point: evaluate one trained filter on its held-out pairs and plot it."""
import json

from img2kernel.pipeline.logs import log_to
from img2kernel.sources import GENERATED, PAIRS, source_of
from img2kernel.evaluate.kernels import write_kernels_csv


def evaluate_generated():
    from img2kernel.evaluate.generated import evaluate_and_plot

    return evaluate_and_plot(
        snakemake.input.inputs, snakemake.input.targets, snakemake.input.model, snakemake.input.info, snakemake.input.history, snakemake.output.result, snakemake.output.kernels,
        snakemake.output.training, snakemake.output.images, max_images=snakemake.params.max_images,
    )


def evaluate_pairs():
    from img2kernel.evaluate.pairs import evaluate_pairs_and_plot

    catalogue = json.loads(snakemake.params.catalogue) if snakemake.params.catalogue else {}
    return evaluate_pairs_and_plot(
        snakemake.input.inputs, snakemake.input.targets, snakemake.input.model, snakemake.input.info,
        snakemake.input.history, snakemake.output.result, snakemake.output.kernels, snakemake.output.training,
        snakemake.output.images, catalogue=catalogue, max_images=snakemake.params.max_images,
    )


EVALUATE = {GENERATED: evaluate_generated, PAIRS: evaluate_pairs}

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        spec = json.loads(open(snakemake.input.info).read())["filter"]
        result = EVALUATE[source_of(spec)]()
        write_kernels_csv(result, snakemake.output.kernels_csv)
        log.info("%s: %s (%s PSNR %.1f dB)", result["filter"], result["verdict"], result.get("split", "test"), result["test_psnr"])
