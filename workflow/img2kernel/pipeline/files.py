"""Files the stages write: whole or not at all (models use it through :meth:`Model.save`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator



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
