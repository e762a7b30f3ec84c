"""Snakemake entry point: train one filter's model from its pairs, by the pairs' source."""
import json

from img2kernel.pipeline.logs import log_to
from img2kernel.sources import GENERATED, PAIRS, source_of


def train_generated(spec, log):
    """Our own filter: gradient training of the learnable kernel, and the least-squares oracle."""
    from img2kernel.fit.filter_job import save_outcome, train_filter

    outcome = train_filter(snakemake.input.inputs, snakemake.input.targets, spec, json.loads(snakemake.params.settings),
                           device=snakemake.params.device, threads=snakemake.threads, progress=True)
    save_outcome(outcome, snakemake.output.model, snakemake.output.info, snakemake.output.history)
    info = outcome.info
    log.info("%s: %d steps in %.2f s on %s, stop: %s, kernel error: %s", spec["name"], info["steps"], info["seconds"],
             info["device"], info["stop_reason"], json.dumps(info["kernel_errors"]))


def train_pairs(spec, log):
    """Your own pairs: the masked least-squares fit, with size, border and noise floor."""
    from img2kernel.fit.pairs_job import save_pairs_fit, train_pairs as fit

    settings = json.loads(snakemake.params.settings)
    result, info, _ = fit(snakemake.input.inputs, snakemake.input.targets, spec, seed=int(settings["seed"]))
    save_pairs_fit(result, info, snakemake.output.model, snakemake.output.info, snakemake.output.history)
    log.info("%s: %s; %dx%d, border %s, held-out RMS %.3g (noise floor %.3g), %.2f s", spec["name"],
             result.model.describe(), result.ksize, result.ksize, result.border["rule"], result.residual_rms,
             result.noise_floor, result.seconds)


TRAIN = {GENERATED: train_generated, PAIRS: train_pairs}

if __name__ == "__main__":
    with log_to(snakemake.log[0]) as log:
        spec = json.loads(snakemake.params.spec)
        TRAIN[source_of(spec)](spec, log)
