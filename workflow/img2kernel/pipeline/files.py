"""Files the stages write: whole or not at all, and a full disk said in one line (models use it
through :meth:`Model.save`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

# Writers say a full disk in different words: OSError 28, safetensors' "os error 28", numpy's
# "N requested and M written", OpenCV's False. Below this much free space, a failed write is that.
NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(OSError):
    """A write that failed because the disk (or the quota) is full; the message says which file."""


def disk_full(folder: Path, err: BaseException) -> bool:
    """Whether ``err``, raised while writing into ``folder``, means the disk is full."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False



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
    except Exception as err:
        if disk_full(path.parent, err):
            partial.unlink(missing_ok=True)  # frees what the failed write took before the figure below
            free = shutil.disk_usage(path.parent).free / 1e6
            kept = "the earlier file is kept" if path.exists() else "nothing was written"
            full = DiskFullError(f"{path}: the disk is full ({free:.1f} MB free); {kept}")
            full.errno = errno.ENOSPC  # set after: OSError(errno, text) would print "[Errno 28]" first
            raise full from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def write_csv(path: str | os.PathLike, columns: list[str], rows, float_format: str | None = None) -> None:
    """``rows`` (sequences in ``columns`` order) as CSV, written whole; None and NaN fields empty,
    as pandas writes them; floats by ``float_format`` (None: their shortest exact form). The csv
    module, not pandas: a job that draws no table does not pay pandas' import."""
    import csv
    import math

    def field(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return float_format % value if float_format and isinstance(value, float) else value

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as partial, open(partial, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([field(v) for v in row] for row in rows)
