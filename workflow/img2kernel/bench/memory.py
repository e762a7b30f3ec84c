"""``img2kernel bench memory``: what a large photo and a decompression bomb cost.

A generated side x side colour pair (a photo blurred by OpenCV, 8-bit PNG) goes through
``img2kernel fit`` and through the workflow's jobs (a ``kind: pairs`` filter); each process's
peak resident memory (its ``VmHWM`` for the fit, Snakemake's ``benchmark:``
``max_rss`` for each job) is printed against the target of 4x the pair's decoded bytes plus
0.5 GB. A PNG header claiming 32000 x 32000 RGB pixels is then given to ``apply``, ``fit`` and
the config check, each of which must refuse it in seconds and in little memory.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pandas as pd
import yaml

# Peak memory a large pair may cost: this many times its decoded bytes, plus this much.
PAIR_FACTOR, PAIR_BASE_MB = 4, 500
BOMB_SECONDS, BOMB_MB = 3.0, 700
CLI = "import sys; from img2kernel.cli.main import main; sys.exit(main(sys.argv[1:]))"


def bomb_png(path: str | Path, width: int = 32000, height: int = 32000) -> None:
    """A valid PNG header claiming width x height RGB pixels, with a few bytes of pixel data:
    what a decompression bomb looks like to a reader that checks before it decodes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                           + chunk(b"IEND", b""))


def large_pair(folder: Path, side: int) -> int:
    """before/photo.png and after/photo.png (a 5x5 Gaussian by OpenCV), side x side RGB; their decoded bytes."""
    import cv2
    import skimage.data

    photo = cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    for name, image in (("before", photo), ("after", cv2.GaussianBlur(photo, (5, 5), 1.0))):
        (folder / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name / "photo.png"), image[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return 2 * photo.nbytes


def child_peak(command: list[str], cwd: Path) -> dict:
    """Run ``command``; its seconds, peak resident memory (MB), exit status and what it said.

    The peak is the child's own high-water mark (``VmHWM``, read every 10 ms until it exits), or
    its ``ru_maxrss`` where that exceeds this process's own high-water mark (below it,
    ``ru_maxrss`` may be this process's, inherited at the fork, not the child's).
    """
    import threading

    started = time.perf_counter()
    # A child's ru_maxrss can be this process's high-water mark (the fork shares its memory map).
    own_kb = _status_kb(os.getpid(), "VmHWM")
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(process.stdout.read()), daemon=True)
    reader.start()
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_kb = max(peak_kb, _status_kb(process.pid, "VmHWM"))
        time.sleep(0.01)
    process.returncode = os.waitstatus_to_exitcode(status)
    if usage.ru_maxrss > 1.05 * own_kb:  # above this process's peak, ru_maxrss is the child's own
        peak_kb = max(peak_kb, usage.ru_maxrss)
    reader.join()
    seconds = time.perf_counter() - started
    lines = [line for line in "".join(chunks).splitlines() if line.strip()]
    # The message: the line that names the refusal (Snakemake adds stack lines after it), else the last.
    said = next((line for line in lines if "header claims" in line), lines[-1] if lines else "")
    return {"seconds": seconds, "peak_mb": peak_kb / 1024, "status": process.returncode, "said": said.strip()}


def _status_kb(pid: int, field: str) -> int:
    """A /proc/PID/status memory field in kB (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith(field + ":")), 0)
    except (OSError, ValueError):
        return 0


def workflow_peaks(folder: Path, cores: int = 2) -> list[dict]:
    """The workflow's jobs on the pair (one ``kind: pairs`` filter): each job's wall time and peak memory."""
    from img2kernel.bench.pipeline import run_snakemake

    (folder / "config").mkdir(exist_ok=True)
    (folder / "config" / "config.yaml").write_text("{}\n")
    filters = {"filters": [{"name": "large", "kind": "pairs", "inputs": "before", "outputs": "after"}]}
    (folder / "config" / "filters.yaml").write_text(yaml.safe_dump(filters))
    run_snakemake(folder, "--quiet", "all", cores=cores)
    rows = []
    for path in sorted((folder / "results" / "benchmarks").rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rows.append({"job": str(path.relative_to(folder / "results" / "benchmarks").with_suffix("")),
                     "seconds": float(table["s"].iloc[-1]), "peak_mb": float(table["max_rss"].iloc[-1])})
    return rows


def bench_memory(side: int = 10000, workflow: bool = True) -> dict:
    """Peak memory of ``fit`` and the workflow's jobs on a side x side colour pair, and the bomb's refusals."""
    folder = Path(tempfile.mkdtemp(prefix="img2kernel-bench-memory-"))
    try:
        # Made in a process of its own: this one stays small while it runs the others.
        made = subprocess.run([sys.executable, "-c", f"from img2kernel.bench.memory import large_pair; from pathlib import Path; "
                               f"print(large_pair(Path({str(folder)!r}), {side}))"], capture_output=True, text=True, check=True)
        decoded = int(made.stdout.split()[-1])
        target_mb = PAIR_FACTOR * decoded / 2**20 + PAIR_BASE_MB
        fit = child_peak([sys.executable, "-c", CLI, "fit", "before/photo.png", "after/photo.png", "-o", "large.safetensors"],
                         folder)
        jobs = workflow_peaks(folder) if workflow else []
        bomb = folder / "bomb"
        (bomb / "before").mkdir(parents=True)
        (bomb / "after").mkdir()
        bomb_png(bomb / "before" / "a.png")
        bomb_png(bomb / "after" / "a.png")
        (bomb / "config").mkdir()
        (bomb / "config" / "config.yaml").write_text("{}\n")
        (bomb / "config" / "filters.yaml").write_text(yaml.safe_dump(
            {"filters": [{"name": "bomb", "kind": "pairs", "inputs": "before", "outputs": "after"}]}))
        from img2kernel.bench.pipeline import snakefile

        refusals = {
            "apply": [sys.executable, "-c", CLI, "apply", str(folder / "large.safetensors"), "before/a.png", "out.png"],
            "fit": [sys.executable, "-c", CLI, "fit", "before/a.png", "after/a.png", "-o", "bomb.safetensors"],
            "config check": [sys.executable, "-m", "snakemake", "-s", str(snakefile()), "-d", str(bomb), "-n", "--quiet"],
            "config check alone": [sys.executable, "-c", "import sys, yaml; from img2kernel.pipeline.config import "
                                   "check_filters; check_filters(yaml.safe_load(open('config/filters.yaml')), "
                                   "'config/filters.yaml')"],
        }
        bombs = {name: child_peak(command, bomb) for name, command in refusals.items()}
        # Snakemake's own start-up is most of the config check's time: a valid pair's dry run, for scale.
        for side_name in ("before", "after"):
            (bomb / side_name / "a.png").unlink()
            shutil.copy(folder / side_name / "photo.png", bomb / side_name / "a.png")
        dry_run = child_peak(refusals["config check"], bomb)
        return {"side": side, "decoded_mb": decoded / 2**20, "target_mb": target_mb, "fit": fit, "jobs": jobs,
                "bombs": bombs, "dry_run_s": dry_run["seconds"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_memory(result: dict) -> None:
    side, target = result["side"], result["target_mb"]
    print(f"\nmemory: a generated {side}x{side} RGB pair, 8-bit PNG ({result['decoded_mb']:,.0f} MB decoded); "
          f"target: peak <= {PAIR_FACTOR}x that + {PAIR_BASE_MB} MB = {target:,.0f} MB")
    fit = result["fit"]
    rows = [("img2kernel fit", fit["seconds"], fit["peak_mb"], fit["status"] == 0)]
    rows += [(f"workflow job {job['job']}", job["seconds"], job["peak_mb"], True) for job in result["jobs"]]
    for name, seconds, peak, ran in rows:
        verdict = "met" if ran and peak <= target else "NOT met" if ran else "failed"
        print(f"  {name:<34} {seconds:7.1f} s  {peak:8,.0f} MB  {verdict}")
    if fit["status"]:
        print(f"  fit failed: {fit['said']}")
    print(f"a PNG header claiming 32000x32000 RGB pixels; target: refused in <= {BOMB_SECONDS:g} s and <= {BOMB_MB} MB")
    for name, run in result["bombs"].items():
        refused = run["status"] != 0 and "header claims 32000x32000" in run["said"]
        met = refused and run["seconds"] <= BOMB_SECONDS and run["peak_mb"] <= BOMB_MB
        print(f"  {name:<34} {run['seconds']:7.1f} s  {run['peak_mb']:8,.0f} MB  {'met' if met else 'NOT met'}: {run['said'][:150]}")
    print(f"  (the config check runs in `snakemake -n`, whose dry run of the valid large pair takes {result['dry_run_s']:.1f} s; "
          "alone, it is the check_filters call Snakemake makes)")
