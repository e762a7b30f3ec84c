"""URL lists: every accepted format to one table, blanks and repeats dropped, the cap applied."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

from img2kernel.sources.urls import UrlListError, list_columns, read_urls, write_url_table

URLS = [f"http://127.0.0.1/{i}.png" for i in range(5)]


def coco_annotation(urls):
    """The shape of COCO's annotation files: images records with coco_url, and more sections."""
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "coco_url": u, "flickr_url": u.replace("127", "flickr"), "height": 48, "width": 64}
              for i, u in enumerate(urls)]
    return {"info": {"year": 2017}, "licenses": [], "images": images, "annotations": [{"image_id": 0, "caption": "x"}]}


@pytest.mark.parametrize("suffix, url_col", [(".txt", "url"), (".csv", "url"), (".tsv", "url"), (".parquet", "url"), (".jsonl", "url"), (".json", "url"), (".json", "coco_url")])
def test_every_format_gives_the_urls_in_list_order(tmp_path, suffix, url_col):
    path = tmp_path / f"list{suffix}"
    table = pd.DataFrame({"url": URLS, "caption": list("abcde")})
    if suffix == ".txt":
        path.write_text("\n".join(URLS) + "\n")
    elif suffix in (".csv", ".tsv"):
        table.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    elif suffix == ".parquet":
        table.to_parquet(path)
    elif suffix == ".jsonl":
        table.to_json(path, orient="records", lines=True)
    elif url_col == "coco_url":
        path.write_text(json.dumps(coco_annotation(URLS)))
    else:
        table.to_json(path, orient="records")
    assert list(read_urls(path, url_col)) == URLS
    if suffix != ".txt":
        assert url_col in list_columns(path)


def test_blanks_repeats_and_the_cap_are_counted(tmp_path):
    source = tmp_path / "urls.txt"
    source.write_text("\n".join([URLS[0], "", URLS[1], URLS[0], "  ", URLS[2], URLS[3], URLS[1], URLS[4]]) + "\n")
    counts = write_url_table(source, tmp_path / "out.parquet", max_images=3)
    assert counts == {"source": str(source), "listed": 9, "blank": 2, "repeated": 2, "capped": 2, "kept": 3}
    assert list(pd.read_parquet(tmp_path / "out.parquet")["url"]) == URLS[:3]  # the first ones, every run


def test_coco_annotation_file_and_missing_field(tmp_path):
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(coco_annotation(URLS)))
    counts = write_url_table(path, tmp_path / "out.parquet", url_col="coco_url")
    assert counts["kept"] == 5
    with pytest.raises(UrlListError, match=r"captions_val2017.json: field 'url_col': column 'url' not found .*coco_url"):
        write_url_table(path, tmp_path / "out.parquet", url_col="url")
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(UrlListError, match="COCO annotation file with an 'images' list"):
        read_urls(path, "coco_url")


def test_an_empty_list_is_an_error(tmp_path):
    (tmp_path / "urls.txt").write_text("\n \n")
    with pytest.raises(UrlListError, match=r"urls.txt: no URLs in the list"):
        write_url_table(tmp_path / "urls.txt", tmp_path / "out.parquet")


def test_sample_lists_the_skimage_photos(tmp_path):
    counts = write_url_table("sample", tmp_path / "out.parquet")
    urls = list(pd.read_parquet(tmp_path / "out.parquet")["url"])
    assert counts["kept"] == len(urls) >= 20
    assert all(u.startswith("file://") and u.endswith((".png", ".jpg")) for u in urls)
    assert all(Path(urlparse(u).path).is_file() for u in urls)
