"""Stale Snakemake locks after a SIGKILL: recognised and cleared, so the next run just works.

Snakemake locks the working directory while it runs and removes the locks when it ends.
A run killed with SIGKILL cannot, and the next run refuses to start until someone runs
``snakemake --unlock``. The workflow records which process holds the locks (onstart); a
later run on the same host clears them only when that process is gone. A live run, or
one on another host (a cluster's submit node), is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

OWNER_FILE = "img2kernel-owner.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    # A recycled PID that is not Snakemake does not hold our locks.
    return not cmdline.exists() or b"snakemake" in cmdline.read_bytes()


def record_owner(snakemake_dir: str | Path = ".snakemake") -> None:
    """Called when a run starts: this process holds the locks."""
    path = Path(snakemake_dir) / OWNER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def release_owner(snakemake_dir: str | Path = ".snakemake") -> None:
    """Called when a run ends normally (success or error)."""
    (Path(snakemake_dir) / OWNER_FILE).unlink(missing_ok=True)


def clear_stale_locks(snakemake_dir: str | Path = ".snakemake") -> str | None:
    """Remove the locks of a dead run on this host; returns what was done, or None."""
    snakemake_dir = Path(snakemake_dir)
    owner_path, locks = snakemake_dir / OWNER_FILE, snakemake_dir / "locks"
    if not owner_path.is_file():
        return None
    try:
        owner = json.loads(owner_path.read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or _alive(pid):
        return None
    if locks.is_dir():
        shutil.rmtree(locks)
    owner_path.unlink(missing_ok=True)
    return f"removed the locks of an earlier run (process {pid}) that was killed before it could unlock"
