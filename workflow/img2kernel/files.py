"""Files the stages write and read: written whole or not at all, and safetensors kernels.

Nothing here imports torch, so `img2kernel apply` and the evaluation read models without it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def written_whole(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path beside ``path``, moved onto ``path`` when the block completes.

    A process killed or failing inside the block leaves ``path`` as it was (absent, or the
    previous version): never half a file. The temporary name keeps the extension, for
    writers that choose the format by it (OpenCV, ``np.save``).
    """
    path = Path(path)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_kernels(path: str | os.PathLike, kernels: np.ndarray, metadata: dict[str, str]) -> None:
    """Write (n, K, K) kernels as ``{"kernel": ...}`` in safetensors, whole or not at all."""
    from safetensors.numpy import save_file

    with written_whole(path) as partial:
        save_file({"kernel": np.ascontiguousarray(kernels)}, str(partial), metadata=metadata)


def load_kernels(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(kernels (n, K, K), metadata) from a model file; safetensors, nothing unpickled."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such model file (results/models/NAME.safetensors)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            if "kernel" not in handle.keys():
                raise ValueError(f"{path}: no 'kernel' tensor (has: {', '.join(handle.keys()) or 'none'})")
            return handle.get_tensor("kernel"), dict(handle.metadata() or {})
    except SafetensorError as err:
        raise ValueError(f"{path}: not a safetensors model file ({err})") from None
