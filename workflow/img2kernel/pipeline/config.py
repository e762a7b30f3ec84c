"""Loading and validating config/config.yaml and config/filters.yaml.

Both files are checked against the JSON schemas in ``workflow/img2kernel/schemas/`` (package data, so an installed package validates too) through
``snakemake.utils.validate`` (which also fills in the schema defaults), then by the
checks a schema cannot express (duplicate names, square kernels, fractions that sum
below one, a URL list that exists and has its url column). Every error names the file,
the entry and the field, and is raised before Snakemake schedules a single job.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
FILTERS_SCHEMA = SCHEMA_DIR / "filters.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names file, entry and field."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last
    silently), and reads ``1e-10`` as the number people mean (YAML 1.1 wants ``1.0e-10``)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1's float pattern without its required dot: 1e-10, 5E3, -2e+4 (YAML 1.2 reads them as floats).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> Any:
    """Safe-load a YAML file; duplicate keys and syntax errors name the file."""
    path = Path(path)
    try:
        with open(path) as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def _describe_location(document: Any, path: list, file_label: str) -> str:
    """'config/filters.yaml: filter 'sobel_x' (entry 3)' or 'config/config.yaml: data'."""
    if len(path) >= 2 and path[0] == "filters" and isinstance(path[1], int):
        entry = document["filters"][path[1]] if isinstance(document, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"filter {name!r} (entry {path[1] + 1})" if isinstance(name, str) else f"filter (entry {path[1] + 1}, no valid name)"
        return f"{file_label}: {label}"
    if path:
        return f"{file_label}: section {path[0]!r}"
    return file_label


def _field_of(error) -> str:
    """The field a jsonschema error is about, including required/unexpected property names."""
    path = [str(p) for p in error.absolute_path]
    if path and path[0] == "filters" and len(path) >= 2:
        path = path[2:]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        path = path + [missing]
    elif error.validator in ("additionalProperties", "unevaluatedProperties") and "'" in error.message:
        path = path + [error.message.split("'")[1]]
    return ".".join(path) if path else "(top level)"


def _plain_message(error) -> str:
    """jsonschema's message, in words where its wording is schema jargon."""
    schema = error.validator_value
    if error.validator == "not" and isinstance(schema, dict) and schema.get("multipleOf") == 2:
        return f"{error.instance!r} must be odd (a kernel has a centre tap)"
    if error.validator == "type" and isinstance(error.instance, str) and "number" in str(schema):
        return f"{error.instance!r} is text, not a number"
    return error.message


def format_schema_error(error, document: Any, file_label: str) -> str:
    """Turn a jsonschema ValidationError into one line: file, entry, field, what was wrong."""
    path = list(error.absolute_path)
    where = _describe_location(document, path, file_label)
    return f"{where}: field {_field_of(error)!r}: {_plain_message(error)}"


def check_finite(document: Any, file_label: str, root: Any = None, path: tuple = ()) -> None:
    """Refuse NaN and infinite numbers anywhere (``.nan`` passes every schema bound), naming the field."""
    root = document if root is None else root
    if isinstance(document, float) and not math.isfinite(document):
        where = _describe_location(root, list(path), file_label)
        field = ".".join(str(p) for p in (path[2:] if path[:1] == ("filters",) else path[1:] if len(path) > 1 else path))
        raise ConfigError(f"{where}: field {field!r}: {document} is not a finite number")
    if isinstance(document, dict):
        for key, value in document.items():
            check_finite(value, file_label, root, path + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            check_finite(value, file_label, root, path + (index,))


def _require_mapping(document: Any, file_label: str, needs: str) -> None:
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "empty"
        hint = " (put `filters:` above the list)" if isinstance(document, list) and needs == "filters" else ""
        raise ConfigError(f"{file_label}: the file must be a mapping of {needs}, got a {kind}{hint}")


def validate_with_schema(document: Any, schema: str | Path, file_label: str) -> Any:
    """Validate (and fill defaults into) ``document`` with snakemake.utils.validate.

    Raises ConfigError with file, entry and field on the first (best-matching) error.
    """
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(document, str(Path(schema).resolve()), set_default=True)
    except WorkflowError as err:
        cause = next((a for a in err.args if isinstance(a, jsonschema.ValidationError)), None)
        cause = cause or err.__context__
        if isinstance(cause, jsonschema.ValidationError):
            raise ConfigError(format_schema_error(cause, document, file_label)) from None
        raise ConfigError(f"{file_label}: {err}") from None
    return document


def canonical_json(value: Any) -> str:
    """One stable text for a value: sorted keys, no whitespace. Used as Snakemake params."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------- config.yaml


def check_config(config: dict, file_label: str, base_dir: str | Path = ".", check_files: bool = True) -> dict:
    """Schema-validate config.yaml (defaults filled in place) and run the cross-field checks.

    ``check_files``: also open the URL list. The main Snakemake process does; a cluster job
    does not, since it may see only its own inputs (the URL list is url_list's alone).
    """
    _require_mapping(config, file_label, "settings")
    check_finite(config, file_label)
    validate_with_schema(config, CONFIG_SCHEMA, file_label)
    data, split = config["data"], config["split"]
    if data["max_side"] is not None and data["max_side"] < data["min_side"]:
        raise ConfigError(
            f"{file_label}: section 'data': field 'max_side': {data['max_side']} is below min_side {data['min_side']}; "
            "every image would be shrunk below the size that is kept"
        )
    if split["val"] <= 0:
        raise ConfigError(
            f"{file_label}: section 'split': field 'val': {split['val']} leaves no validation images; "
            "training stops by watching the val split (test may be 0: evaluation then uses val and says so)"
        )
    if split["val"] + split["test"] >= 1:
        raise ConfigError(
            f"{file_label}: section 'split': fields 'val' + 'test' must sum below 1 "
            f"(got {split['val']} + {split['test']}), or nothing is left to train on"
        )
    if check_files and data["urls"] != "sample":
        check_url_list(Path(base_dir) / data["urls"], data["url_col"], file_label)
    return config


def check_url_list(path: Path, url_col: str, file_label: str) -> None:
    """The URL list exists, has a known format and, for tables, the url column."""
    from img2kernel.sources.urls import UrlListError, list_columns

    where = f"{file_label}: section 'data': field 'urls'"
    if not path.is_file():
        raise ConfigError(f"{where}: URL list {str(path)!r} does not exist")
    try:
        columns = list_columns(path)
    except UrlListError as err:
        raise ConfigError(f"{where}: {err}") from None
    if columns is not None and url_col not in columns:
        raise ConfigError(
            f"{file_label}: section 'data': field 'url_col': column {url_col!r} not in {str(path)!r} "
            f"(columns: {', '.join(columns) or 'none'})"
        )


# ----------------------------------------------------------------------------- filters.yaml


# What a pairs entry may not say, as the user wrote it (before the schema fills defaults): its
# output is the tool's file as stored, and its fit is least squares and the ladder, seeded.
PAIRS_IGNORE = {"then": "the tool's output is what it is; a `then` step applies to our kinds",
                "output": "the output is the tool's file as stored; `output` applies to our kinds",
                "quality": "the output is the tool's file as stored; `quality` is that of our kinds' `output: jpeg`"}
PAIRS_TRAIN = {"seed"}  # the split's and the ladder's seed: the one training setting a pairs fit reads


def _refuse_fields_pairs_ignore(document: dict, file_label: str) -> None:
    """A pairs entry's fields that would be accepted and silently ignored are refused, naming them."""
    entries = document.get("filters")
    for i, spec in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(spec, dict) or spec.get("kind") != "pairs":
            continue
        where = f"{file_label}: filter {spec.get('name')!r} (entry {i + 1})"
        for field, why in PAIRS_IGNORE.items():
            if field in spec:
                raise ConfigError(f"{where}: field {field!r}: a pairs filter has no {field} ({why})")
        extra = sorted(set(spec.get("train") or {}) - PAIRS_TRAIN) if isinstance(spec.get("train"), dict) else []
        if extra:
            raise ConfigError(f"{where}: field 'train.{extra[0]}': a pairs filter is fitted by least squares and the "
                              f"ladder, which read only train.seed")


def check_filters(document: Any, file_label: str, train_defaults: dict | None = None, check_files: bool = True,
                  config_label: str = "config/config.yaml") -> list[dict]:
    """Schema-validate filters.yaml and check what the schema cannot; returns the filter specs.

    Each returned spec has its schema defaults filled in. Kernel-level checks (square,
    odd, finite, a random kernel that can be normalised) come from the filter registry;
    a ``pairs`` entry's files are checked from their headers (``check_files``: the main
    Snakemake process does, a cluster job, which sees only its own inputs, does not).
    """
    from img2kernel.sources.filters import FilterSpecError, build_filter, filter_output, model_ksize
    from img2kernel.sources import PAIRS, source_of

    if document is None:
        raise ConfigError(f"{file_label}: file is empty; it needs a 'filters:' list with at least one filter")
    _require_mapping(document, file_label, "filters")
    check_finite(document, file_label)
    _refuse_fields_pairs_ignore(document, file_label)
    validate_with_schema(document, FILTERS_SCHEMA, file_label)
    specs = document["filters"]
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        where = f"{file_label}: filter {spec['name']!r} (entry {i + 1})"
        if spec["name"] in seen:
            raise ConfigError(f"{where}: field 'name': {spec['name']!r} is already used by entry {seen[spec['name']] + 1}")
        seen[spec["name"]] = i
        if "output" in spec:  # one spelling, so both name the same filter (the same params)
            spec["output"] = filter_output(spec)
        if source_of(spec) == PAIRS:
            if "table" in spec and ("inputs" in spec or "outputs" in spec):
                raise ConfigError(f"{where}: field 'table': give either a table or inputs and outputs folders, not both")
            for folder in ("inputs", "outputs"):
                if "table" not in spec and folder not in spec:
                    raise ConfigError(f"{where}: field {folder!r}: a pairs filter needs inputs and outputs folders, or a table")
            if check_files:
                from img2kernel.sources.pairs import check_pairs

                try:
                    check_pairs(spec)
                except FilterSpecError as err:
                    raise ConfigError(f"{where}: field {err.field!r}: {err}") from None
            if spec.get("ksize") and spec["ksize"] > spec["max_ksize"]:
                raise ConfigError(f"{where}: field 'ksize': {spec['ksize']} is larger than max_ksize {spec['max_ksize']}")
            continue
        try:
            filt = build_filter(spec)
        except FilterSpecError as err:
            raise ConfigError(f"{where}: field {err.field!r}: {err}") from None
        if "train" in spec:
            check_training_override(spec["train"], where)
        if train_defaults is not None:
            settings = training_settings(train_defaults, spec)
            ksize = model_ksize(filt, settings)
            if settings["crop_size"] < ksize:
                # Name the file the crop size came from: the filter's override or config.yaml's default.
                own = "crop_size" in spec.get("train", {})
                source = f"{where}: field 'train.crop_size'" if own else f"{config_label}: section 'train': field 'crop_size'"
                raise ConfigError(
                    f"{source}: crop size {settings['crop_size']} is smaller than the kernel of filter "
                    f"{spec['name']!r} ({ksize}x{ksize})"
                )
    return specs


def check_training_override(override: dict, where: str) -> None:
    """A filter's ``train:`` mapping takes the fields of config.yaml's ``train`` section, same types."""
    import jsonschema

    section = copy.deepcopy(load_yaml(CONFIG_SCHEMA)["properties"]["train"])
    section.pop("default", None)
    for field_schema in section["properties"].values():
        field_schema.pop("default", None)  # an override holds only what the user wrote
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(section).iter_errors(override))
    if error is not None:
        path = [str(p) for p in error.absolute_path]
        if error.validator == "additionalProperties" and "'" in error.message:
            path.append(error.message.split("'")[1])
        raise ConfigError(f"{where}: field {'.'.join(['train', *path])!r}: {_plain_message(error)}")


def target_spec(spec: dict) -> dict:
    """The part of a filter's spec that determines its targets (no training overrides)."""
    return {k: v for k, v in spec.items() if k != "train"}


def training_settings(train_defaults: dict, spec: dict) -> dict:
    """config.yaml's training defaults with the filter's own ``train:`` overrides on top."""
    settings = copy.deepcopy(train_defaults)
    settings.update(spec.get("train", {}))
    return settings
