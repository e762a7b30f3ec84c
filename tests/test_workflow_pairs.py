"""Your own pairs through Snakemake: no download, the kernel found and reported, exact reruns,
bad input stopped before any job with nothing built lost, and apply reproducing the tool."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml
from PIL import Image, ImageFilter

from img2kernel.cli.main import main
from img2kernel.sources.filters import deriv_kernel
from img2kernel.models import AffineKernel, load_model
from conftest import clone_workdir, planned_jobs, snakemake, write_workdir
from test_pairs import gray_photos, rgb_photos

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Pairs made by scipy.ndimage (gray, convolve) and Pillow (colour sharpen), built once."""
    workdir = tmp_path_factory.mktemp("pairs")
    for folder in ("before", "after", "colour", "sharpened"):
        (workdir / folder).mkdir()
    for i, photo in enumerate(gray_photos(4, (64, 80))):
        Image.fromarray(photo).save(workdir / "before" / f"p{i}.png")
        out = np.clip(np.rint(ndi.convolve(photo.astype(float), deriv_kernel(1, 0, 3) / 4) + 127.5), 0, 255)
        Image.fromarray(out.astype(np.uint8)).save(workdir / "after" / f"p{i}.png")
    for i, photo in enumerate(rgb_photos(4, (64, 80))):
        Image.fromarray(photo).save(workdir / "colour" / f"c{i}.png")
        Image.fromarray(photo).filter(ImageFilter.SHARPEN).save(workdir / "sharpened" / f"c{i}.png")
    filters = [
        {"name": "scipy_edges", "kind": "pairs", "inputs": "before", "outputs": "after", "max_ksize": 7},
        {"name": "pillow_sharpen", "kind": "pairs", "inputs": "colour", "outputs": "sharpened", "max_ksize": 5},
    ]
    write_workdir(workdir, filters, "sample")
    snakemake(workdir)
    return workdir


def test_a_pairs_only_config_downloads_nothing_and_finds_the_kernels(built):
    results = built / "results"
    assert not (results / "images").exists() and not (results / "urls").exists() and not (results / "store" / "inputs").exists()
    edges = json.loads((results / "eval" / "scipy_edges.json").read_text())
    assert edges["linear"] is True and edges["ksize"] == 3 and edges["model"] == "linear" and edges["model_class"] == "affine"
    kernel = edges["identification"]["kernel"]
    assert kernel["name"] == "sobel_x (ksize 3)" and kernel["scale"] == pytest.approx(0.25, rel=2e-3)
    assert kernel["orientation"] == "rotated 180 degrees (the tool convolves)"
    assert edges["identification"]["text"].endswith("rotated 180 degrees (the tool convolves), offset +127.5")
    assert edges["border"]["rule"] in ("reflect", "replicate")
    assert edges["test_psnr"] > 50 and edges["split"] == "test"
    sharpen = json.loads((results / "eval" / "pillow_sharpen.json").read_text())
    assert sharpen["linear"] and sharpen["channels"] == {"input": 3, "output": 3, "structure": "per-channel"}
    assert sharpen["identification"]["text"].startswith("the same kernel on each colour channel, then Pillow SHARPEN x 1")
    assert sharpen["border"]["rule"] == "unfiltered" and sharpen["test_identical_fraction"] > 0.999
    # The model file is a contract: kernel (C_out, C_in, K, K), bias (C_out,).
    model, metadata = load_model(results / "models" / "pillow_sharpen.safetensors")
    assert isinstance(model, AffineKernel) and model.kernel.shape == (3, 3, 3, 3) and model.bias.shape == (3,)
    assert metadata["border"] == "unfiltered" and metadata["units"] == "stored" and model.output == "uint8"
    html = (results / "report.html").read_text()
    assert "Pillow SHARPEN" in html and "your pairs" in html and "border rule" in html
    table = (results / "tables" / "kernels.md").read_text()
    assert "scipy_edges" in table and "| pairs" in table
    assert planned_jobs(built) == {}


def test_apply_reproduces_the_tools_file_on_a_held_out_pair(built, tmp_path):
    evaluation = json.loads((built / "results" / "eval" / "pillow_sharpen.json").read_text())
    key = evaluation["images"][0]["key"]
    model = built / "results" / "models" / "pillow_sharpen.safetensors"
    assert main(["apply", str(model), str(built / "colour" / f"{key}.png"), str(tmp_path / "out.png")]) == 0
    ours = np.asarray(Image.open(tmp_path / "out.png"))
    theirs = np.asarray(Image.open(built / "sharpened" / f"{key}.png"))
    assert ours.shape == theirs.shape and np.mean(ours == theirs) > 0.999


def test_editing_adding_and_removing_pairs_reruns_that_filter_only(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    photo = gray_photos(5, (64, 80))[4]
    Image.fromarray(photo).save(workdir / "before" / "p4.png")
    out = np.clip(np.rint(ndi.convolve(photo.astype(float), deriv_kernel(1, 0, 3) / 4) + 127.5), 0, 255)
    Image.fromarray(out.astype(np.uint8)).save(workdir / "after" / "p4.png")
    jobs = planned_jobs(workdir)
    assert {rule for rule, name in jobs if name == "pillow_sharpen"} == set()
    assert {rule for rule, name in jobs if name == "scipy_edges"} == {"pairs_store", "train", "evaluate"}
    assert {rule for rule, name in jobs if name is None} == {"report"}
    time.sleep(1.1)  # a new mtime
    edited = np.asarray(Image.open(workdir / "sharpened" / "c0.png")).copy()
    edited[0, 0] ^= 1
    Image.fromarray(edited).save(workdir / "sharpened" / "c0.png")
    assert {name for _, name in planned_jobs(workdir) if name} == {"scipy_edges", "pillow_sharpen"}
    # Removing the added pair again: scipy_edges's files are those its store was built from.
    (workdir / "before" / "p4.png").unlink()
    (workdir / "after" / "p4.png").unlink()
    assert {name for _, name in planned_jobs(workdir) if name} == {"pillow_sharpen"}
    snakemake(workdir)
    (workdir / "before" / "p3.png").unlink()
    (workdir / "after" / "p3.png").unlink()
    assert {name for _, name in planned_jobs(workdir) if name} == {"scipy_edges"}


def test_deleted_outputs_are_rebuilt_with_what_depends_on_them(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    (workdir / "results" / "models" / "scipy_edges.safetensors").unlink()
    jobs = planned_jobs(workdir)
    assert set(jobs) == {("train", "scipy_edges"), ("evaluate", "scipy_edges"), ("report", None)}


def test_bad_pairs_stop_before_any_job_and_keep_what_was_built(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    before = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    filters_file = workdir / "config" / "filters.yaml"
    document = yaml.safe_load(filters_file.read_text())
    cases = [
        ({"outputs": "nowhere"}, "field 'outputs': folder 'nowhere' does not exist"),
        ({"inputs": "colour"}, "files are paired by stem"),
    ]
    for change, message in cases:
        broken = json.loads(json.dumps(document))
        broken["filters"][0].update(change)
        filters_file.write_text(yaml.safe_dump(broken, sort_keys=False))
        result = snakemake(workdir, check=False)
        assert result.returncode != 0
        assert "config/filters.yaml: filter 'scipy_edges' (entry 1)" in result.stderr and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    after = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    assert after == before


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """Outputs off their inputs' grid through the rules: a Pillow half-size resize, a Pillow bicubic
    resize to 3/4 (whose sizes a crop of 24 and 32 pixels would fit too), an OpenCV bilinear
    enlargement by 2, an asymmetric crop after a 3x3 kernel (OpenCV), an output rotated 90 degrees
    (numpy)."""
    import cv2

    workdir = tmp_path_factory.mktemp("placed")
    blur = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 8
    makers = {
        "halved": lambda p: np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2), Image.LANCZOS)),
        "three_quarters": lambda p: np.asarray(Image.fromarray(p).resize((p.shape[1] * 3 // 4, p.shape[0] * 3 // 4),
                                                                         Image.BICUBIC)),
        "doubled": lambda p: cv2.resize(p, (p.shape[1] * 2, p.shape[0] * 2), interpolation=cv2.INTER_LINEAR),
        "cropped": lambda p: np.rint(cv2.filter2D(p.astype(np.float32), -1, blur)).astype(np.uint8)[5:-1, 3:-1],
        "rotated": lambda p: np.rot90(np.rint(cv2.filter2D(p.astype(np.float32), -1, blur)).astype(np.uint8), -1),
    }
    (workdir / "before").mkdir()
    photos = gray_photos(3, (96, 128))
    for name, make in makers.items():
        (workdir / name).mkdir()
        for i, photo in enumerate(photos):
            Image.fromarray(photo).save(workdir / "before" / f"p{i}.png")
            Image.fromarray(np.ascontiguousarray(make(photo))).save(workdir / name / f"p{i}.png")
    write_workdir(workdir, [{"name": name, "kind": "pairs", "inputs": "before", "outputs": name} for name in makers], "sample")
    snakemake(workdir)
    return workdir


@pytest.mark.parametrize("name, says", [
    ("halved", ["Lanczos 3, antialiased", "then resized by 1/2"]),
    ("three_quarters", ["Keys cubic a = -0.5", "antialiased (the support widened by the factor)", "pixel centres aligned",
                        "then resized by 3/4"]),
    ("doubled", ["triangle (bilinear), not antialiased", "then resized by 2"]),
    ("cropped", ["then cropped: 3 columns off the left, 1 off the right, 5 rows off the top, 1 off the bottom"]),
    ("rotated", ["then rotated 90 degrees clockwise"]),
])
def test_outputs_off_the_grid_are_placed_fitted_reported_and_reproduced(placed, tmp_path, name, says):
    import cv2

    evaluation = json.loads((placed / "results" / "eval" / f"{name}.json").read_text())
    text = evaluation["identification"]["text"]
    assert evaluation["linear"] and evaluation["test_psnr"] > 50 and all(s in text for s in says), text
    html = (placed / "results" / "report.html").read_text()
    assert says[-1] in html
    model = placed / "results" / "models" / f"{name}.safetensors"
    unseen = gray_photos(4, (72, 100))[3]
    Image.fromarray(unseen).save(tmp_path / "unseen.png")
    assert main(["apply", str(model), str(tmp_path / "unseen.png"), str(tmp_path / "ours.png")]) == 0
    ours = np.asarray(Image.open(tmp_path / "ours.png")).astype(np.float64)

    blur = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 8
    blurred = np.rint(cv2.filter2D(unseen.astype(np.float32), -1, blur))
    tool = {"halved": lambda: np.asarray(Image.fromarray(unseen).resize((50, 36), Image.LANCZOS)),
            "three_quarters": lambda: np.asarray(Image.fromarray(unseen).resize((75, 54), Image.BICUBIC)),
            "doubled": lambda: cv2.resize(unseen, (200, 144), interpolation=cv2.INTER_LINEAR),
            "cropped": lambda: blurred[5:-1, 3:-1], "rotated": lambda: np.rot90(blurred, -1)}[name]()
    assert ours.shape == tool.shape
    assert 10 * np.log10(255**2 / np.mean(np.square(ours - tool))) >= 50
