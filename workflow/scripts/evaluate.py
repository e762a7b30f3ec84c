"""Snakemake entry point: evaluate one trained filter on the test split and plot it."""
from img2kernel.evaluate import evaluate_and_plot
from img2kernel.logs import log_to

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        result = evaluate_and_plot(
            snakemake.input.inputs,
            snakemake.input.targets,
            snakemake.input.model,
            snakemake.input.oracle,
            snakemake.input.info,
            snakemake.input.history,
            snakemake.output.result,
            snakemake.output.kernels,
            snakemake.output.training,
            snakemake.output.images,
            max_images=snakemake.params.max_images,
        )
        log.info("%s: %s (test PSNR %.1f dB)", result["filter"], result["verdict"], result["test_psnr"])
