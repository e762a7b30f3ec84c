"""The train job of a ``pairs`` filter: fit the stored pairs, write the model and its evidence.

The model is the masked least-squares fit itself (:func:`img2kernel.fit.pairs.fit_pairs`),
exact for a linear tool, else the ladder's choice; the train job writes the same three files
for every source (the model, its JSON sidecar, the training table).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


from img2kernel import borders
from img2kernel.pipeline.files import written_whole
from img2kernel.fit.history import KERNEL_SIZE, write_history
from img2kernel.fit.ladder import LINEAR, ladder_for_pairs
from img2kernel.fit.pairs import PairsFit, detect_border, fit_pairs, load_pairs



def fit_and_climb(pairs, spec: dict, seed: int = 0) -> tuple[PairsFit, dict]:
    """The one fit of a pairs filter, for the train job and ``img2kernel fit`` alike: the
    least-squares fit, then the ladder when it is not linear; ``fit.model`` is the chosen
    model and ``fit.border`` its own edge rule. Returns (fit, the ladder's summary)."""
    fit = fit_pairs(pairs, max_ksize=int(spec.get("max_ksize") or 15), ksize=spec.get("ksize"), seed=seed)
    ladder = ladder_for_pairs(pairs, fit, seed=seed)
    if ladder.chosen != LINEAR:  # the chosen model's own edge: its ring against each rule
        fit.border = detect_border(ladder.model, pairs)
    fit.model = ladder.model
    return fit, ladder.summary()


def train_pairs(inputs_folder: str | Path, outputs_folder: str | Path, spec: dict, seed: int = 0) -> tuple[PairsFit, dict, dict]:
    """Fit a pairs filter from its stores; returns (fit, info for the JSON sidecar, store manifest)."""
    started = time.perf_counter()
    pairs, manifest = load_pairs(inputs_folder, outputs_folder)
    read_seconds = time.perf_counter() - started
    fit, ladder = fit_and_climb(pairs, spec, seed)
    info = {
        "filter": spec,
        "source": "pairs",
        **fit.summary(),
        **ladder,
        "pairs": manifest["pairs"],
        "split_mode": manifest["split_mode"],
        "splits": manifest["splits"],
        "input_storage": manifest["input_storage"],
        "output_storage": manifest["output_storage"],
        "conversions": manifest["conversions"],
        "read_seconds": read_seconds,
        "device": "cpu (closed-form least squares)",
    }
    return fit, info, manifest


def saved_border(fit: PairsFit) -> str:
    """The border rule the model file carries: "none needed" (1x1) and "valid-mode output" leave
    no rule to find, so apply uses the default."""
    return fit.border["rule"] if fit.border["rule"] in borders.RULES else borders.DEFAULT


def save_pairs_fit(fit: PairsFit, info: dict, model_path, info_path, history_path) -> None:
    """The chosen model (a linear pairs fit: ``kernel`` (C_out, C_in, K, K), ``bias`` (C_out,)),
    the JSON sidecar and the residual per kernel size; each written whole (``history_path`` may
    be None: the command line writes none)."""
    border = saved_border(fit)
    metadata = {
        "filter": info["filter"],
        "border": border,
        "units": "stored",
        "input_storage": info["input_storage"],
        "output_storage": info["output_storage"],
        "layout": fit.model.layout,
        "description": fit.model.describe(),
        # where the tool's output sits on the input's grid: apply writes the tool's size and turn
        "placement": (info.get("geometry") or {}).get("placement") or {},
    }
    fit.model.save(model_path, metadata)
    with written_whole(info_path) as partial:
        partial.write_text(json.dumps(info, indent=2))
    if history_path is not None:
        write_history([{"step": i + 1, "ksize": s["ksize"], "parameters": s["parameters"], "train_rms": s["train_rms"],
                        "heldout_rms": s["heldout_rms"]} for i, s in enumerate(fit.sizes)], KERNEL_SIZE, history_path)
