"""The evaluation record: what ``results/eval/{filter}.json`` holds, the same for every source.

Both evaluations (our filters against their true kernels, :mod:`img2kernel.evaluate.generated`;
your pairs, :mod:`img2kernel.evaluate.pairs`) fill one :class:`Evaluation`: the model and its
ladder, the verdict, and held-out scores computed by the same metrics
(:func:`img2kernel.evaluate.metrics.image_metrics`) under the same names. What only one source
can say (kernel errors against a known truth; the fit's size, channel and border tables) is its
``evidence``. The summary table and the report read these records and nothing else.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from img2kernel.pipeline.files import written_whole

# Held-out scores, each the mean over the evaluated images of the per-image metric.
SCORES = {"test_mse": "mse", "test_psnr": "psnr", "test_ssim": "ssim",
          "test_identical_fraction": "identical_fraction", "test_max_abs_error": "max_abs_error"}


def mean_over(images: list[dict], metric: str) -> float:
    """The mean of one per-image metric, NaN values (not measured) left out; NaN when none is left."""
    values = [m[metric] for m in images if metric in m and not math.isnan(m[metric])]
    return float(np.mean(values)) if values else math.nan


@dataclass
class Evaluation:
    """One filter's evaluation.

    Attributes:
        filter, kind, source, spec: the filter entry (``source``: ``generated`` or ``pairs``).
        ksize: the filter's kernel size (pairs: the size the fit chose); ``model_ksize`` the model's window.
        n_kernels, parameters: the chosen model's kernel count (0 for a model without one) and weights.
        model, model_class, model_description, expected_rung, ladder, ladder_notes, smallest_forms:
            the chosen rung and the ladder the train job climbed (:func:`img2kernel.fit.ladder.ladder_fields`).
        linear: the chosen model is one kernel that explains the pairs.
        verdict: one line a reader can act on.
        split, split_images: the held-out split scored and how many images it holds.
        images: per image: ``key``, ``shape`` and :func:`image_metrics`' fields (and the source's own).
        train_seconds, device: how the model was fitted.
        evidence: what only this source can say, written beside the common fields.
    """

    filter: str
    kind: str
    source: str
    spec: dict
    ksize: int
    model_ksize: int
    n_kernels: int
    parameters: int
    model: str
    model_class: str
    model_description: str
    expected_rung: str | None
    ladder: list
    ladder_notes: list
    smallest_forms: list
    linear: bool
    verdict: str
    split: str
    split_images: int
    images: list
    train_seconds: float
    device: str
    evidence: dict = field(default_factory=dict)

    def scores(self) -> dict:
        """The held-out scores (:data:`SCORES`): means over the images, NaN values left out."""
        return {name: mean_over(self.images, metric) for name, metric in SCORES.items()}

    def to_json(self) -> dict:
        record = asdict(self)
        evidence = record.pop("evidence")
        clash = set(evidence) & (set(record) | set(SCORES))
        if clash:
            raise ValueError(f"evidence may not redefine the record's own fields: {sorted(clash)}")
        return {**record, **self.scores(), **evidence}

    def write(self, path: str | Path) -> dict:
        """Write the JSON whole (beside its path, then moved into place); the dict written."""
        record = self.to_json()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path) as partial:
            partial.write_text(json.dumps(record, indent=2))
        return record
