"""Snakemake entry point: train one filter's learnable kernel and fit its least-squares oracle."""
import json

from img2kernel.logs import log_to
from img2kernel.train import save_outcome, train_filter

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        outcome = train_filter(
            snakemake.input.inputs,
            snakemake.input.targets,
            json.loads(snakemake.params.spec),
            json.loads(snakemake.params.settings),
            device=snakemake.params.device,
            threads=snakemake.threads,
            progress=True,
        )
        save_outcome(outcome, snakemake.output.model, snakemake.output.oracle, snakemake.output.info, snakemake.output.history)
        info = outcome.info
        log.info(
            "%s: %d steps in %.2f s on %s, stop: %s, kernel error: %s",
            info["filter"]["name"],
            info["steps"],
            info["seconds"],
            info["device"],
            info["stop_reason"],
            json.dumps(info["kernel_errors"]),
        )
