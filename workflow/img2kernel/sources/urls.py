"""URL lists: from the user's file to the one table the download stage reads.

Accepted sources (by extension): ``.txt`` (one URL per line), ``.csv`` / ``.tsv`` /
``.parquet`` (a column named by ``url_col``), ``.jsonl`` (one JSON record per line) and
``.json``: a list of records, or a COCO annotation file, whose ``images`` records carry
``coco_url`` (and ``flickr_url``). The result, ``results/urls/urls.parquet``, has one
``url`` column in list order: blank entries and repeats dropped (a URL listed twice would
be downloaded twice and could land in both the train and the test split), then capped at
``max_images``, the first ones kept so a cap is the same subset every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".json": "json", ".jsonl": "jsonl"}
# A .json list is parsed whole to find its columns; above this size the url_list job
# checks it instead of every `snakemake` start (COCO's instances file is ~450 MB).
JSON_CHECK_LIMIT_BYTES = 64 * 2**20


class UrlListError(ValueError):
    """The URL list cannot be read, or has no usable URL column; names the file and field."""


def url_list_format(path: str | Path) -> str:
    """The format of a URL list, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UrlListError(f"{path}: unknown URL list format {suffix!r}; use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def _json_records(path: Path) -> list:
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UrlListError(f"{path}: not valid JSON ({err})") from None
    if isinstance(document, dict) and isinstance(document.get("images"), list):
        return document["images"]  # a COCO annotation file
    if isinstance(document, list):
        return document
    raise UrlListError(f"{path}: expected a list of records or a COCO annotation file with an 'images' list")


def list_columns(path: str | Path) -> list[str] | None:
    """The columns a URL list offers, read cheaply; None for a .txt list (no columns)
    and for a .json file too large to parse on every start (checked by the job instead)."""
    path = Path(path)
    fmt = url_list_format(path)
    if fmt == "txt":
        return None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    if fmt in ("csv", "tsv"):
        with open(path, newline="") as handle:
            header = handle.readline().rstrip("\r\n")
        return [c.strip().strip('"') for c in header.split("\t" if fmt == "tsv" else ",")]
    if fmt == "jsonl":
        with open(path) as handle:
            first = handle.readline()
        try:
            record = json.loads(first) if first.strip() else {}
        except json.JSONDecodeError as err:
            raise UrlListError(f"{path}: line 1 is not JSON ({err})") from None
        return sorted(record) if isinstance(record, dict) else []
    if path.stat().st_size > JSON_CHECK_LIMIT_BYTES:
        return None
    records = _json_records(path)
    return sorted({key for record in records[:1000] if isinstance(record, dict) for key in record})


def read_urls(path: str | Path, url_col: str = "url") -> pd.Series:
    """Every URL of the list, in list order, as strings (blank entries as empty strings)."""
    path = Path(path)
    fmt = url_list_format(path)
    if fmt == "txt":
        return pd.Series(path.read_text().splitlines(), dtype=object)
    if fmt == "parquet":
        table = pd.read_parquet(path)
    elif fmt in ("csv", "tsv"):
        table = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False)
    elif fmt == "jsonl":
        table = pd.read_json(path, lines=True, dtype=False)
    else:
        table = pd.DataFrame.from_records(_json_records(path))
    if url_col not in table.columns:
        raise UrlListError(
            f"{path}: field 'url_col': column {url_col!r} not found (columns: {', '.join(map(str, table.columns)) or 'none'})"
        )
    return table[url_col].fillna("").astype(str)


def sample_urls() -> pd.Series:
    """The photos inside scikit-image's wheel as ``file://`` URLs (see :mod:`img2kernel.sources.downloads`)."""
    from img2kernel.sources.downloads import sample_image_paths

    urls = [p.resolve().as_uri() for p in sample_image_paths()]
    if not urls:
        raise UrlListError("scikit-image ships no sample photos in this install (skimage/data is empty)")
    return pd.Series(urls, dtype=object)


def write_url_table(source: str | Path, output: str | Path, *, url_col: str = "url", max_images: int | None = None) -> dict:
    """Normalise ``source`` ('sample' or a URL list file) into ``output`` (parquet, one 'url' column).

    Returns the counts: listed, blank, repeated, capped (dropped by ``max_images``) and kept.
    """
    urls = sample_urls() if str(source) == "sample" else read_urls(source, url_col)
    stripped = urls.str.strip()
    blank = stripped == ""
    unique = stripped[~blank].drop_duplicates(keep="first")
    kept = unique if max_images is None else unique.iloc[:max_images]
    counts = {
        "source": str(source),
        "listed": int(len(urls)),
        "blank": int(blank.sum()),
        "repeated": int((~blank).sum() - len(unique)),
        "capped": int(len(unique) - len(kept)),
        "kept": int(len(kept)),
    }
    if counts["kept"] == 0:
        raise UrlListError(f"{source}: no URLs in the list ({json.dumps(counts)})")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"url": np.asarray(kept, dtype=object)}).to_parquet(output, index=False)
    return counts
