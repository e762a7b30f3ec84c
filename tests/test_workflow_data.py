"""The data stage end to end: img2dataset from a loopback server into the inputs store."""

from __future__ import annotations

import http.server
import json
from pathlib import Path
import threading
import time
from collections import Counter

import cv2
import numpy as np
import pytest

from img2kernel.store.shards import Store
from conftest import planned_jobs, real_images, snakemake, write_workdir

pytestmark = pytest.mark.workflow


def serve_test_images(folder):
    """Four good images (gray, colour, RGBA, 16-bit), a 1x1 image, and a text file posing as PNG."""
    gray, colour_base, other = real_images(3, size=(48, 40))
    cv2.imwrite(str(folder / "gray.png"), gray)
    cv2.imwrite(str(folder / "colour.jpg"), cv2.cvtColor(colour_base, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([cv2.cvtColor(other, cv2.COLOR_GRAY2BGR), np.full_like(other, 255)]))
    cv2.imwrite(str(folder / "deep.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "dot.png"), np.zeros((1, 1), np.uint8))
    (folder / "not_an_image.png").write_text("this is not a PNG")
    return ["gray.png", "colour.jpg", "rgba.png", "deep.png", "dot.png", "not_an_image.png", "missing.png"]


def test_download_to_store_counts_failures_and_is_idempotent(tmp_path, image_server):
    base_url, folder = image_server
    names = serve_test_images(folder)
    (tmp_path / "urls.txt").write_text("".join(f"{base_url}/{n}\n" for n in names))
    workdir = write_workdir(tmp_path, [{"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}], "urls.txt")

    snakemake(workdir, "results/store/inputs")

    # The download fetches bytes as served; what they hold is the store's to judge.
    summary = json.loads((workdir / "results/images/summary.json").read_text())
    assert (summary["attempted"], summary["downloaded"], summary["failed"]) == (7, 6, 1)
    assert list(summary["failed_by_reason"]) == ["failed_to_download: 404 Client Error: File not found for url: "
                                                 f"{base_url}/missing.png"] or "404" in next(iter(summary["failed_by_reason"]))

    store = Store(workdir / "results/store/inputs")
    assert len(store) == 4
    assert store.keys() == sorted(store.keys())  # key order, not download order: the same store every run
    manifest = json.loads((workdir / "results/store/inputs/manifest.json").read_text())
    assert sum(manifest["splits"].values()) == 4 and all(manifest["splits"].values())
    assert manifest["skipped"] == {"could not decode": 1, "smaller than min_side 8": 1}  # the text file, the 1x1 dot
    assert manifest["conversions"] == {"alpha channel dropped": 1, "colour converted to gray": 2, "16-bit divided by 256": 1}
    # img2dataset's import of wandb makes temporary folders in every process: none is left.
    from conftest import SESSION_TMP

    assert not list(workdir.rglob("*wandb*")) and not [p for p in Path(SESSION_TMP).iterdir() if "wandb" in p.name]
    shapes = sorted(store.array(k).shape for k in store.keys())
    assert shapes == [(48, 40)] * 4
    arrays = [store.array(k) for k in store.keys()]
    assert all(a.dtype == np.float32 for a in arrays)
    # The gray PNG and its 16-bit copy decode to the same values: lossless, same scale.
    gray = real_images(1, size=(48, 40))[0].astype(np.float32)
    matches = [a for a in arrays if np.array_equal(a, gray)]
    assert len(matches) >= 1
    assert any(np.allclose(a, gray * 257 / 256) for a in arrays)

    assert planned_jobs(workdir, "results/store/inputs") == {}


def test_nothing_downloaded_fails_clearly(tmp_path, image_server):
    base_url, _ = image_server
    (tmp_path / "urls.txt").write_text(f"{base_url}/missing.png\n")
    workdir = write_workdir(tmp_path, [{"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}], "urls.txt")
    result = snakemake(workdir, "results/store/inputs", check=False)
    assert result.returncode != 0
    log = (workdir / "results/logs/images/download.log").read_text()
    assert "none of 1 URLs downloaded" in log and "404" in log
    assert not (workdir / "results/store/inputs").exists()


class FaultyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, except: /slow.png answers after the timeout, /error.png is a 500,
    /flaky.png is a 500 on the first request only, /drop.png closes the connection unanswered."""

    hits: Counter = Counter()

    def log_message(self, *args):
        pass

    def do_GET(self):
        FaultyHandler.hits[self.path] += 1
        if self.path == "/slow.png":
            time.sleep(2.5)
        elif self.path == "/error.png" or (self.path == "/flaky.png" and FaultyHandler.hits[self.path] == 1):
            self.send_error(500, "boom")
            return
        elif self.path == "/drop.png":
            self.close_connection = True
            return
        if self.path in ("/slow.png", "/flaky.png"):
            self.path = "/good.png"
        super().do_GET()


def test_download_faults_are_retried_counted_and_survived(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), real_images(1, size=(48, 40))[0])
    FaultyHandler.hits.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: FaultyHandler(*a, directory=str(folder), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        names = ["good.png", "flaky.png", "slow.png", "error.png", "drop.png"]
        (tmp_path / "urls.txt").write_text("".join(f"{base}/{n}\n" for n in names))
        workdir = write_workdir(
            tmp_path,
            [{"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}],
            "urls.txt",
            data={"retries": 1, "timeout": 1},
        )
        snakemake(workdir, "results/store/inputs")
    finally:
        server.shutdown()
        server.server_close()
    summary = json.loads((workdir / "results/images/summary.json").read_text())
    assert (summary["attempted"], summary["downloaded"], summary["failed"]) == (5, 2, 3)
    reasons = " | ".join(summary["failed_by_reason"])
    assert "timed out" in reasons and "500" in reasons and "Remote end closed" in reasons, reasons
    # Each failure was tried 1 + retries times; the flaky URL succeeded on its retry.
    assert FaultyHandler.hits["/flaky.png"] == 2 and FaultyHandler.hits["/error.png"] == 2
    assert len(Store(workdir / "results/store/inputs")) == 8  # the 2 images that arrived, as 2 x 2 tiles each


class GatedHandler(http.server.BaseHTTPRequestHandler):
    """``/img/{i}.png`` for 2,000+ URLs from one small PNG: every 100th is a 404, and
    requests for i >= ``gate_from`` wait until ``gate`` is set, so a test can kill the
    download while exactly the first shards are done."""

    png = b""
    gate = threading.Event()
    gate_from = 1000
    hits: Counter = Counter()

    def log_message(self, *args):
        pass

    def do_GET(self):
        index = int(self.path.rsplit("/", 1)[-1].split(".")[0])
        GatedHandler.hits[index] += 1
        if index >= GatedHandler.gate_from:
            GatedHandler.gate.wait(timeout=120)
        if index % 100 == 99:
            self.send_error(404)
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(self.png)))
            self.end_headers()
            self.wfile.write(self.png)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed with the pipeline


def test_large_url_list_is_capped_sharded_and_resumed_after_a_kill(tmp_path):
    """2,100 listed URLs, max_images 2,000, 200 per shard: kill the run when 5 shards are
    done; the rerun downloads only the other 5 and every URL is counted once."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import workflow_copy

    GatedHandler.png = cv2.imencode(".png", real_images(1, size=(24, 20))[0])[1].tobytes()
    GatedHandler.gate.clear()
    GatedHandler.hits.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GatedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        # A csv list, as a user would export one: the url column among others.
        rows = "".join(f"{base}/img/{i}.png,photo {i}\n" for i in range(2100))
        (tmp_path / "urls.csv").write_text("url,caption\n" + rows)
        workdir = write_workdir(
            tmp_path,
            [{"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}],
            "urls.csv",
            data={"max_images": 2000, "shard_size": 200, "timeout": 60},
        )
        cmd = [sys.executable, "-m", "snakemake", "-s", str(workflow_copy() / "Snakefile"), "-d", str(workdir), "--cores", "2", "results/images"]
        run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        partial = workdir / "results/downloading"
        deadline = time.monotonic() + 180
        while len(list(partial.glob("*/*_stats.json"))) < 5:
            assert run.poll() is None, "the download ended before the kill"
            assert time.monotonic() < deadline, "5 shards not done in 180 s"
            time.sleep(0.1)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        assert not (workdir / "results/images").exists()
        done_before_kill = sorted(p.name for p in partial.glob("*/*_stats.json"))
        assert done_before_kill == [f"{i:05d}_stats.json" for i in range(5)]
        assert sum(GatedHandler.hits[i] for i in range(1000)) == 1000

        GatedHandler.gate.set()
        snakemake(workdir, "results/store/inputs")  # a plain rerun resumes
    finally:
        GatedHandler.gate.set()
        server.shutdown()
        server.server_close()

    counts = json.loads((workdir / "results/urls/urls.json").read_text())
    assert (counts["listed"], counts["capped"], counts["kept"]) == (2100, 100, 2000)
    summary = json.loads((workdir / "results/images/summary.json").read_text())
    assert (summary["attempted"], summary["downloaded"], summary["failed"]) == (2000, 1980, 20)
    assert summary["shards"] == [f"{i:05d}.tar" for i in range(10)]
    assert summary["resumed_shards"] == 5
    assert list(summary["failed_by_reason"].values()) == [20] and "404" in next(iter(summary["failed_by_reason"]))
    # The 5 finished shards were not fetched again; nothing past the cap was ever fetched.
    assert all(GatedHandler.hits[i] == 1 for i in range(1000))
    assert all(GatedHandler.hits[i] >= 1 for i in range(1000, 2000))
    assert not any(GatedHandler.hits[i] for i in range(2000, 2100))
    assert not partial.exists()
    store = Store(workdir / "results/store/inputs")
    assert len(store) == 1980 and len(store.shards) == 10
