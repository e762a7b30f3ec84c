"""Headless Chromium for report tests: image-load check and screenshot, no driver needed."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Runs on load: counts the page's images and those that failed to decode.
IMAGE_CHECK = (
    '<script>window.addEventListener("load", () => { const images = [...document.images];'
    " const failed = images.filter(i => !(i.complete && i.naturalWidth > 0));"
    ' document.body.setAttribute("data-image-check", images.length + "/" + failed.length); });</script>'
)


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _run(binary: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    return result.stdout


def image_check(binary: str, page: Path) -> tuple[int, int]:
    """(images on the page, images that failed to load) after the load event."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "page.html"
        probe.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
        dom = _run(binary, "--dump-dom", probe.as_uri())
    match = re.search(r'data-image-check="(\d+)/(\d+)"', dom)
    if not match:
        raise AssertionError(f"the image check did not run in Chromium; DOM starts with: {dom[:300]!r}")
    return int(match.group(1)), int(match.group(2))


def screenshot(binary: str, page: Path, output: Path, size: str = "1280,2400") -> Path:
    _run(binary, f"--window-size={size}", f"--screenshot={output}", page.as_uri())
    return output


# Runs on load: the page's width against the window's, and the summary table's right edge.
LAYOUT_CHECK = (
    '<script>window.addEventListener("load", () => { const t = document.querySelector("table.summary");'
    ' document.body.setAttribute("data-layout", [window.innerWidth, document.documentElement.scrollWidth,'
    ' Math.ceil(t.getBoundingClientRect().right)].join("/")); });</script>'
)


def layout(binary: str, page: Path, width: int = 1366, height: int = 768) -> dict:
    """Widths in a ``width`` x ``height`` window: the window, the page's scroll width, the summary table's right edge."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "page.html"
        probe.write_text(page.read_text().replace("</body>", LAYOUT_CHECK + "</body>"))
        dom = _run(binary, f"--window-size={width},{height}", "--dump-dom", probe.as_uri())
    match = re.search(r'data-layout="(\d+)/(\d+)/(\d+)"', dom)
    if not match:
        raise AssertionError(f"the layout check did not run in Chromium; DOM starts with: {dom[:300]!r}")
    window, page_width, table_right = map(int, match.groups())
    return {"window": window, "page": page_width, "summary_right": table_right}
