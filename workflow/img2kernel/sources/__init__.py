"""Pair sources: where a filter's (input, output) arrays come from (docs/design.md, "Sources").

Every filter's pairs end up in the sharded store, with splits, so training and evaluation
read them the same way whatever made them:

- ``generated``: images downloaded with img2dataset into ``results/store/inputs`` and the
  filter's own targets in ``results/store/targets/{name}`` (a kind of :mod:`img2kernel.sources.filters`);
- ``pairs``: the user's own before/after files (folders or a table of paths and URLs),
  read once into ``results/store/pairs/{name}/inputs`` and ``.../outputs``.

Adding a source: a module here with the same few functions, and one line in ``SOURCES``.
This module imports nothing heavy: the Snakefile reads it on every start.
"""

from __future__ import annotations

GENERATED, PAIRS = "generated", "pairs"


def source_of(spec: dict) -> str:
    """Which source a filter entry's pairs come from."""
    return PAIRS if spec.get("kind") == PAIRS else GENERATED


def stores(spec: dict) -> dict[str, str]:
    """The store folders holding a filter's inputs and targets (its outputs), by source."""
    name = spec["name"]
    if source_of(spec) == PAIRS:
        return {"inputs": f"results/store/pairs/{name}/inputs", "targets": f"results/store/pairs/{name}/outputs"}
    return {"inputs": "results/store/inputs", "targets": f"results/store/targets/{name}"}
