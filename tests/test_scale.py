"""Training from a store larger than a memory cap: the trainer streams it shard by shard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from img2kernel.sources.filters import build_filter
from img2kernel.store.shards import ShardWriter

CAP_MB = 512
SOBEL = {"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3, "output": "float"}

# Runs in a child process: with torch loaded and warmed up, cap the address space at
# CAP_MB above what it uses now (RLIMIT_AS: a hard limit, mappings included), show the
# store trains under it, and that the cap binds (mapping every shard at once then fails).
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import torch
    from img2kernel.fit.gradient import warm_up
    from img2kernel.fit.filter_job import train_filter
    torch.set_num_threads(1)
    warm_up(torch.device("cpu"), torch.float32)

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024  # MiB

    inputs, targets, spec, settings, cap_mb = json.loads(sys.argv[1])
    base_vm, base_rss = status("VmSize"), status("VmRSS")
    limit = (base_vm + cap_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcome = train_filter(inputs, targets, spec, settings, device="cpu", threads=1)
    peaks = {"peak_rss_above_start_mb": status("VmHWM") - base_rss, "vm_above_start_mb": status("VmPeak") - base_vm}
    from pathlib import Path
    try:
        whole = [np.memmap(p, mode="r") for d in (inputs, targets) for p in sorted(Path(d).glob("*.tar"))]
        mapped_whole_store = True
    except (MemoryError, OSError, ValueError):
        mapped_whole_store = False
    print(json.dumps({
        "mapped_whole_store": mapped_whole_store,
        "rel_error": outcome.info["kernel_errors"]["max_abs_rel"],
        "train_images": outcome.info["train_images"],
        **peaks,
    }))
    """
)


@pytest.fixture(scope="module")
def store_larger_than_the_cap(tmp_path_factory):
    """16 shards x 12 noise images of 1024x1024 float32: 768 MiB of inputs, 768 MiB of targets."""
    root = tmp_path_factory.mktemp("big")
    filt = build_filter(SOBEL)
    rng = np.random.default_rng(0)
    for shard in range(16):
        with ShardWriter(root / "inputs" / f"{shard:05d}.tar") as inputs, ShardWriter(root / "targets" / f"{shard:05d}.tar") as targets:
            for i in range(12):
                image = (rng.random((1024, 1024), dtype=np.float32) * 255).astype(np.float32)
                split = "val" if i == 0 else "test" if i == 1 else "train"
                inputs.add(f"{shard:02d}{i:04d}", image, split)
                targets.add(f"{shard:02d}{i:04d}", filt.apply(image), split)
    return root


def test_training_streams_a_store_three_times_larger_than_the_memory_cap(store_larger_than_the_cap):
    from test_train import SETTINGS

    root = store_larger_than_the_cap
    store_mb = sum(p.stat().st_size for p in root.rglob("*.tar")) / 2**20
    assert store_mb > 3 * CAP_MB
    args = json.dumps([str(root / "inputs"), str(root / "targets"), SOBEL, SETTINGS, CAP_MB])
    child = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert not result["mapped_whole_store"], "the cap does not bind: the test would prove nothing"
    assert result["train_images"] == 160
    assert result["rel_error"] < 1e-4
    assert result["vm_above_start_mb"] <= CAP_MB
    print(f"store {store_mb:.0f} MiB, cap {CAP_MB} MiB: {json.dumps(result)}")
