"""results/report.html: one self-contained page (figures embedded as WebP, no network), Jinja2, autoescaped."""

from __future__ import annotations

import base64
import datetime
import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Sequence

import jinja2
import pandas as pd

from img2kernel.report import SHOWN_WIDTH
from img2kernel.report.summary import finding

PACKAGES = ("img2kernel", "torch", "numpy", "opencv-python-headless", "scikit-image", "scipy", "snakemake", "img2dataset")


# Figures are embedded at the width the page shows (SHOWN_WIDTH), as WebP. A figure of three
# test photos is 0.9 MB as PNG and about 0.1 MB so; the PNG files stay in results/plots.
# Method 2 of WebP's 0 (fastest) to 6: 49 figures in 1.1 s instead of method 4's 2.4 s, for
# files 4 % larger (method 0: 27 % larger).
WEBP_QUALITY = 85
WEBP_METHOD = 2


def data_uri(path: str | Path) -> str:
    """A figure as a data: URI (WebP at the width it is shown), so the page needs no other file."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > SHOWN_WIDTH:
            image = image.resize((SHOWN_WIDTH, round(image.height * SHOWN_WIDTH / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stage_of(relative: Path) -> str:
    """A benchmark file's stage: ``train/sobel_x.tsv`` -> ``train``; ``report.tsv`` -> ``report``."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def read_benchmarks(files: Sequence[str | Path], root: str | Path = "results/benchmarks") -> list[dict]:
    """Snakemake's benchmark TSVs as rows: stage, job, seconds, peak RSS (MB)."""
    rows = []
    for path in files:
        path = Path(path)
        table = pd.read_csv(path, sep="\t")
        relative = path.relative_to(root) if path.is_relative_to(root) else path
        rows.append(
            {
                "stage": stage_of(relative),
                "job": relative.stem if len(relative.parts) > 1 else "",
                "seconds": float(table["s"].iloc[-1]),
                "max_rss_mb": float(table["max_rss"].iloc[-1]) if table["max_rss"].iloc[-1] != "-" else math.nan,
            }
        )
    return rows


def versions() -> dict:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def render_report(
    evaluation_files: Sequence[str | Path],
    plot_dirs: Sequence[str | Path],
    table_csv: str | Path,
    summary_png: str | Path,
    download_summary: str | Path | None,
    store_manifest: str | Path | None,
    benchmark_files: Sequence[str | Path],
    output: str | Path,
    url_counts: str | Path | None = None,
    pairs_manifests: Sequence[str | Path] = (),
    workers: int = 1,
) -> str:
    """Render the report; every name from the config is escaped by Jinja2's autoescape.

    ``download_summary``, ``store_manifest``, ``url_counts``: the download of images for our
    own filters (None when every filter brings its own pairs); ``pairs_manifests``: the
    manifest.json of each pairs filter's store; ``workers``: threads encoding the figures
    (Pillow's encoder releases the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    evaluations = [json.loads(Path(p).read_text()) for p in evaluation_files]
    names = ("kernels", "training", "images")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        uris = list(pool.map(data_uri, [Path(d) / f"{name}.png" for d in plot_dirs for name in names]))
    filters = []
    for i, evaluation in enumerate(evaluations):
        filters.append(
            {
                **evaluation,
                "spec_json": json.dumps(evaluation["spec"], indent=1, sort_keys=True),
                "finding": finding(evaluation),
                "images_uri": dict(zip(names, uris[len(names) * i : len(names) * (i + 1)])),
            }
        )
    table = pd.read_csv(table_csv)
    benchmarks = read_benchmarks(benchmark_files)
    stage_totals = (
        pd.DataFrame(benchmarks).groupby("stage", sort=False).agg(jobs=("job", "size"), seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max")).reset_index().to_dict("records")
        if benchmarks
        else []
    )
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("img2kernel.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["fmt"] = _fmt
    html = environment.get_template("report.html.j2").render(
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        filters=filters,
        table=table.to_dict("records"),
        summary_uri=data_uri(summary_png),
        download=json.loads(Path(download_summary).read_text()) if download_summary else None,
        urls=json.loads(Path(url_counts).read_text()) if url_counts else None,
        store=json.loads(Path(store_manifest).read_text()) if store_manifest else None,
        pairs_stores=[json.loads(Path(p).read_text()) for p in pairs_manifests],
        benchmarks=benchmarks,
        stage_totals=stage_totals,
        versions=versions(),
        devices=sorted({e["device"] for e in evaluations}),
    )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(html)
    return html
