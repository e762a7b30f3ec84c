"""The ``pairs`` source: the user's own (input, output) files, listed and checked.

A ``pairs`` filter names two folders (files matched by stem: ``a.png`` pairs with
``a.tif``) or a table (CSV or parquet) with ``input`` and ``output`` columns of paths,
``file://`` or ``http(s)://`` URLs. Relative paths resolve against the working directory.

:func:`check_pairs` runs when Snakemake starts, before any job: folders, matching, sizes
and channels from the files' headers, each error naming the file and the field.
The ``pairs_store`` job (:mod:`img2kernel.sources.pairs_store`) then decodes every file once
into two stores. Light imports only: the Snakefile reads this module on every start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from img2kernel.errors import FilterSpecError
from img2kernel.sources import geometry
from img2kernel.images import IMAGE_SUFFIXES, ImageReadError, image_header

SHOWN = 5  # names listed in an error before "and N more"
SNAKEMAKE_RESERVED = set("{}<>")  # characters Snakemake expands in an input path
DUPLICATE_ROW = "a repeat of an earlier row of the table"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}  # per-pixel split labels of a stored pair


@dataclass(frozen=True)
class PairRef:
    """One pair: its key and where its two files are (a local path or an http(s) URL)."""

    key: str
    input: str
    output: str

    @staticmethod
    def is_url(location: str) -> bool:
        return location.startswith(("http://", "https://"))


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def pair_key(stem: str, used: set[str]) -> str:
    """A store key from a file stem: letters, digits, _ and - only; unique among ``used``."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", stem)[:120] or "pair"
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


def _images_in(folder: Path, field: str) -> dict[str, Path]:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FilterSpecError(field, f"folder {str(folder)!r} {what}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FilterSpecError(field, f"folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise FilterSpecError(field, f"{by_stem[path.stem].name} and {path.name} in {str(folder)!r} have the same stem; "
                                         "keep one, pairs are matched by stem")
        by_stem[path.stem] = path
    return by_stem


def _shown(value) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _location(value, row: int, column: str, table: Path) -> str:
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise FilterSpecError("table", f"{table}: row {row + 1}: column {column!r} is empty")
    if not isinstance(value, str):  # a parquet column of numbers, bytes or lists
        raise FilterSpecError("table", f"{table}: row {row + 1}: column {column!r} holds "
                                       f"{'a list' if hasattr(value, 'tolist') else type(value).__name__} "
                                       f"{_shown(value)}, not a path or URL (text)")
    value = value.strip()
    if PairRef.is_url(value):
        return value
    if value.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(value).path)
    if "://" in value:
        raise FilterSpecError("table", f"{table}: row {row + 1}: column {column!r}: {value!r} is neither a path nor a file:// or http(s):// URL")
    return value


def read_table(path: Path) -> "list[tuple[object, object]]":
    """(input, output) cells of a CSV or parquet pairs table; errors name the table and its columns."""
    import pandas as pd

    if not path.is_file():
        raise FilterSpecError("table", f"table {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
        else:
            raise FilterSpecError("table", f"table {str(path)!r}: use a .csv, .tsv or .parquet file")
    except (ValueError, OSError) as err:
        raise FilterSpecError("table", f"table {str(path)!r} could not be read: {err}") from None
    missing = [c for c in ("input", "output") if c not in frame.columns]
    if missing:
        raise FilterSpecError(
            "table", f"table {str(path)!r} has no {' or '.join(repr(m) for m in missing)} column "
                     f"(columns: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    if frame.empty:
        raise FilterSpecError("table", f"table {str(path)!r} has no rows")
    return list(zip(frame["input"], frame["output"]))


def list_pairs(spec: dict, dropped: dict | None = None) -> list[PairRef]:
    """Every pair a ``pairs`` entry names, matched; raises FilterSpecError naming the field.

    A table row that repeats an earlier one is dropped (counted in ``dropped``, when given):
    kept, the same pair could land in train and in test, and the held-out figures would not be.
    """
    if "table" in spec:
        table = Path(spec["table"])
        used: set[str] = set()
        refs, seen = [], set()
        for row, (source, result) in enumerate(read_table(table)):
            source, result = _location(source, row, "input", table), _location(result, row, "output", table)
            if (source, result) in seen:
                if dropped is not None:
                    dropped[DUPLICATE_ROW] = dropped.get(DUPLICATE_ROW, 0) + 1
                continue
            seen.add((source, result))
            stem = Path(source.split("?")[0]).stem
            refs.append(PairRef(pair_key(stem, used), source, result))
        return refs
    inputs = _images_in(Path(spec["inputs"]), "inputs")
    outputs = _images_in(Path(spec["outputs"]), "outputs")
    lonely_inputs = sorted(set(inputs) - set(outputs))
    lonely_outputs = sorted(set(outputs) - set(inputs))
    if lonely_inputs or lonely_outputs:
        parts = []
        if lonely_inputs:
            parts.append(f"{len(lonely_inputs)} input(s) without an output: {_listing([inputs[s].name for s in lonely_inputs])}")
        if lonely_outputs:
            parts.append(f"{len(lonely_outputs)} output(s) without an input: {_listing([outputs[s].name for s in lonely_outputs])}")
        field = "outputs" if lonely_inputs else "inputs"
        raise FilterSpecError(field, "files are paired by stem, and " + "; ".join(parts))
    used = set()
    return [PairRef(pair_key(stem, used), str(inputs[stem]), str(outputs[stem])) for stem in sorted(inputs)]


def local_files(spec: dict) -> list[str]:
    """The local files a ``pairs`` entry reads (its table too): the ``pairs_store`` job's inputs."""
    refs = list_pairs(spec)
    files = [spec["table"]] if "table" in spec else []
    return files + [p for ref in refs for p in (ref.input, ref.output) if not PairRef.is_url(p)]


def mixed_storage(role: str, files: dict[str, str]) -> str:
    """The message for ``role`` files of several sample types, ``files`` one of each: {type: file}."""
    kinds = ", ".join(f"{location} is {storage}" for storage, location in files.items())
    return f"{role} files mix storage types ({kinds}); a kernel maps one file type's values, convert them to one type"


def largest_ksize(spec: dict) -> tuple[str, int]:
    """The field that bounds a ``pairs`` entry's kernel size and that largest size: its ``ksize``
    when set, else its ``max_ksize`` (default 15)."""
    return ("ksize", int(spec["ksize"])) if spec.get("ksize") else ("max_ksize", int(spec.get("max_ksize") or 15))


def check_pairs(spec: dict) -> dict:
    """Check a ``pairs`` entry from the files' headers, before any job; returns counts.

    An output of another size must have a placement on its input's grid that the sizes allow
    (:func:`img2kernel.sources.geometry.candidates`); the pairs store finds which from the pixels.

    Raises FilterSpecError (field ``inputs``, ``outputs`` or ``table``) naming the file.
    """
    refs = list_pairs(spec)
    field_in, field_out = ("table", "table") if "table" in spec else ("inputs", "outputs")
    size_field, size = largest_ksize(spec)
    channels: dict[str, tuple[int, str]] = {}
    storages: dict[str, tuple[str, str]] = {}  # the first file's sample type, per role
    local = 0
    smallest: tuple[int, str] | None = None  # the shortest side of any local input, and its file
    for ref in refs:
        headers = {}
        for role, location, field in (("input", ref.input, field_in), ("output", ref.output, field_out)):
            if PairRef.is_url(location):
                continue
            reserved = sorted(set(location) & SNAKEMAKE_RESERVED)
            if reserved:  # the files are the store job's inputs: Snakemake would read these as wildcards
                raise FilterSpecError(field, f"{location}: a path with {' '.join(reserved)} cannot be a Snakemake input "
                                             "(braces name wildcards, angle brackets path variables); rename the file or folder")
            try:
                headers[role] = image_header(location)
            except ImageReadError as err:
                raise FilterSpecError(field, str(err)) from None
            first = channels.setdefault(role, (headers[role].channels, location))
            if headers[role].channels != first[0]:
                raise FilterSpecError(
                    field, f"{location} has {headers[role].channels} channel(s) but {first[1]} has {first[0]}; "
                           f"every {role} must have the same channels"
                )
            kind = storages.setdefault(role, (headers[role].storage, location))
            if headers[role].storage != kind[0]:
                raise FilterSpecError(field, mixed_storage(role, {headers[role].storage: location, kind[0]: kind[1]}))
        if "input" in headers:
            side = min(headers["input"].height, headers["input"].width)
            smallest = (side, ref.input) if smallest is None or side < smallest[0] else smallest
        if len(headers) == 2:
            local += 1
            shape_in = (headers["input"].height, headers["input"].width)
            shape_out = (headers["output"].height, headers["output"].width)
            if not geometry.allowed(shape_in, shape_out):  # which placement holds is for the pixels to say
                raise FilterSpecError(field_out, geometry.size_mismatch(ref.input, shape_in, ref.output, shape_out))
    if smallest is not None and size > smallest[0]:  # the fit would stop on it, after the store was built
        raise FilterSpecError(size_field, f"a {size}x{size} kernel is larger than {smallest[1]}, whose shorter side is "
                                          f"{smallest[0]} pixels; no output pixel of it has a whole window (set a smaller "
                                          f"{size_field}, or leave that pair out)")
    return {"pairs": len(refs), "checked_locally": local, "urls": len(refs) - local}
