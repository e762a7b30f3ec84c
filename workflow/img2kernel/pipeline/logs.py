"""Send a job's output, including that of C libraries and child processes, to its log file."""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

TIMING = "timing:"


def process_age() -> float:
    """Seconds since this process started (the interpreter, Snakemake's script preamble and
    the script's module-level imports all run before a job's own code).

    On Linux the start is read in clock ticks from /proc against the boot clock: psutil's
    create_time adds the boot time, which the kernel reports in whole seconds, so its age
    is off by up to a second.
    """
    try:
        with open("/proc/self/stat") as stat:
            # Field 22 (starttime) follows the parenthesised command name, which may hold spaces.
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, AttributeError, IndexError, ValueError):
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())


@contextlib.contextmanager
def import_clock() -> Iterator[list[float]]:
    """Sum the time spent in (outermost) import statements while active; yields a 1-list."""
    spent = [0.0]
    depth = [0]
    original = builtins.__import__

    def timed_import(*args, **kwargs):
        depth[0] += 1
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                spent[0] += time.perf_counter() - started

    builtins.__import__ = timed_import
    try:
        yield spent
    finally:
        builtins.__import__ = original


@contextlib.contextmanager
def log_to(path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Redirect file descriptors 1 and 2 to ``path`` for the duration; yields a logger.

    Redirecting the descriptors, not just ``sys.stdout``, also captures OpenCV, torch
    and the processes img2dataset starts. An exception is logged before it propagates.
    The last line says where the job's time went (``timing: start-up ... s, work ... s, of
    which imports ... s``), read by ``img2kernel bench pipeline``.
    """
    startup = process_age()
    started = time.perf_counter()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
        logger = logging.getLogger("img2kernel")
        try:
            with import_clock() as imports:
                yield logger
            logger.info("%s start-up %.3f s, work %.3f s, of which imports %.3f s", TIMING, startup,
                        time.perf_counter() - started, imports[0])
        except BaseException:
            logger.exception("job failed")
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
