"""Schemas and cross-field checks: every bad value is rejected naming file, entry and field."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest

from img2kernel.pipeline.config import ConfigError, check_config, check_filters, load_yaml
from conftest import REPO

FILTERS = load_yaml(REPO / "config" / "filters.yaml")
LABEL = "config/filters.yaml"


def bad_filters(index: int, **changes) -> dict:
    document = copy.deepcopy(FILTERS)
    for field, value in changes.items():
        if value is KeyError:
            del document["filters"][index][field]
        else:
            document["filters"][index][field] = value
    return document


def test_repository_configs_are_valid():
    config = load_yaml(REPO / "config" / "config.yaml")
    check_config(config, "config/config.yaml", REPO)
    specs = check_filters(copy.deepcopy(FILTERS), LABEL, config["train"])
    assert len(specs) == 16
    assert specs[0]["output"] == "float"  # schema default filled in


@pytest.mark.parametrize(
    "index, changes, field, message",
    [
        (0, {"kind": "sobol"}, "kind", "is not one of"),
        (0, {"ksize": 4}, "ksize", "is not one of"),
        (0, {"ksize": -3}, "ksize", "is not one of"),
        (6, {"ksize": 4}, "ksize", "4 must be odd"),
        (6, {"ksize": "5"}, "ksize", "is not of type"),
        (0, {"dx": KeyError}, "dx", "required"),
        (0, {"dx": 0, "dy": 0}, "dx", "at least 1"),
        (0, {"dx": 3, "ksize": 3}, "dx", "smaller than ksize"),
        (0, {"colour": "red"}, "colour", "unexpected"),
        (9, {"kernel": [[1, 2], [3, 4]]}, "kernel", "odd"),
        (9, {"kernel": [[1, 2, 3], [4, 5, 6]]}, "kernel", "square"),
        (9, {"kernel": [[1, 2, 3], [4, math.nan, 6], [7, 8, 9]]}, "kernel", "finite"),
        (9, {"kernel": [[1, 2, 3], [4, math.inf, 6], [7, 8, 9]]}, "kernel", "finite"),
        (9, {"kernel": []}, "kernel", "should be non-empty"),
        (9, {"kernel": [[]]}, "kernel", "should be non-empty"),
        (1, {"name": "sobel/y"}, "name", "does not match"),
        (1, {"name": "..sobel"}, "name", "does not match"),
        (1, {"name": "Sobel"}, "name", "does not match"),
        (1, {"name": "sobel_x"}, "name", "already used by entry 1"),
        (1, {"name": KeyError}, "name", "required"),
        (10, {"ksize": 7}, "ksize", "is not one of"),
        (7, {"distribution": "cauchy"}, "distribution", "is not one of"),
        (11, {"output": "uint16"}, "output", "is not one of"),
    ],
)
def test_bad_filter_values_name_file_entry_and_field(index, changes, field, message):
    with pytest.raises(ConfigError) as err:
        check_filters(bad_filters(index, **changes), LABEL)
    text = str(err.value)
    assert text.startswith(f"{LABEL}: filter")
    assert f"(entry {index + 1}" in text
    assert f"field '{field}" in text  # 'kernel' or 'kernel.0'
    assert message in text


def test_empty_filter_list_and_empty_file():
    with pytest.raises(ConfigError, match=r"field 'filters'.*should be non-empty"):
        check_filters({"filters": []}, LABEL)
    with pytest.raises(ConfigError, match="file is empty"):
        check_filters(None, LABEL)


def test_duplicate_yaml_key_is_refused(tmp_path):
    path = tmp_path / "filters.yaml"
    path.write_text("filters:\n  - name: a\n    kind: sobel\n    kind: median\n")
    with pytest.raises(ConfigError, match=r"filters\.yaml: line 4: key 'kind' is given twice"):
        load_yaml(path)


@pytest.mark.parametrize(
    "override, field, message",
    [
        ({"crops": "many"}, "train.crops", "is not of type"),
        ({"optimiser": "adam"}, "train.optimiser", "unexpected"),
        ({"lr": -1}, "train.lr", "less than or equal to the minimum"),
        ({"ksize": 4}, "train.ksize", "4 must be odd"),  # the training job would fail on it
    ],
)
def test_bad_training_override_names_the_field(override, field, message):
    with pytest.raises(ConfigError) as err:
        check_filters(bad_filters(0, train=override), LABEL)
    assert f"filter 'sobel_x' (entry 1): field '{field}'" in str(err.value) and message in str(err.value)


def test_crop_smaller_than_kernel_is_refused():
    document = bad_filters(8, train={"crop_size": 5})
    with pytest.raises(ConfigError, match=r"'random_7' \(entry 9\): field 'train.crop_size'.*7x7"):
        check_filters(document, LABEL, {"crop_size": 64, "ksize": None})


def config_with(**sections) -> dict:
    config = load_yaml(REPO / "config" / "config.yaml")
    for section, values in sections.items():
        config[section].update(values) if isinstance(values, dict) else config.__setitem__(section, values)
    return config


@pytest.mark.parametrize(
    "sections, match",
    [
        ({"device": "tpu"}, r"section 'device': field 'device': 'tpu' is not one of"),
        ({"split": {"val": 0.6, "test": 0.5}}, r"section 'split': fields 'val' \+ 'test' must sum below 1"),
        ({"split": {"val": -0.1}}, r"section 'split': field 'split.val'"),
        ({"store": {"dtype": "int8"}}, r"field 'store.dtype'"),
        ({"data": {"urls": "nowhere/urls.parquet"}}, r"field 'urls': URL list .*nowhere/urls.parquet' does not exist"),
        ({"data": {"shard_size": 0}}, r"field 'data.shard_size'"),
        ({"data": {"max_images": 0}}, r"field 'data.max_images'"),
        ({"data": {"urls": "config/filters.yaml"}}, r"field 'urls': .*unknown URL list format '.yaml'"),
        ({"train": {"optimizer": "sgd"}}, r"field 'train.optimizer'"),
        ({"train": {"crop_size": "big"}}, r"field 'train.crop_size'"),
        ({"data": {"typo": 1}}, r"field 'data.typo'.*unexpected"),
    ],
)
def test_bad_config_values_name_file_and_field(sections, match):
    with pytest.raises(ConfigError, match=r"^config/config\.yaml: (section .*)?" + match):
        check_config(config_with(**sections), "config/config.yaml", REPO)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json", ".jsonl"])
def test_url_list_needs_its_url_column(tmp_path, suffix):
    path = tmp_path / f"urls{suffix}"
    table = pd.DataFrame({"link": ["http://127.0.0.1/a.png"]})
    if suffix == ".csv":
        table.to_csv(path, index=False)
    elif suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_json(path, orient="records", lines=suffix == ".jsonl")
    config = config_with(data={"urls": str(path)})
    with pytest.raises(ConfigError, match=r"field 'url_col': column 'url' not in .*columns: link"):
        check_config(config, "config/config.yaml")
    config = config_with(data={"urls": str(path), "url_col": "link"})
    check_config(config, "config/config.yaml")


# ----------------------------------------------------------------------------- values that pass a schema's bounds


@pytest.mark.parametrize(
    "sections, match",
    [
        ({"split": {"val": math.nan}}, r"section 'split': field 'val': nan is not a finite number"),
        ({"train": {"rel_tol": math.inf}}, r"section 'train': field 'rel_tol': inf is not a finite number"),
        ({"data": {"max_side": 20, "min_side": 64}}, r"field 'max_side': 20 is below min_side 64"),
        ({"train": {"seed": -1}}, r"field 'train.seed': -1 is less than the minimum of 0"),
        ({"train": {"ksize": 4}}, r"field 'train.ksize': 4 must be odd"),
        ({"split": {"seed": 2**40}}, r"field 'split.seed': .* is greater than the maximum of 4294967295"),
    ],
)
def test_values_that_would_destroy_or_corrupt_results_are_refused(sections, match):
    with pytest.raises(ConfigError, match=r"^config/config\.yaml: (section .*)?" + match):
        check_config(config_with(**sections), "config/config.yaml", REPO)


def test_bad_filter_numbers_are_refused_naming_the_entry():
    with pytest.raises(ConfigError, match=r"filter 'random_3' \(entry 8\): field 'seed': -1 is less than the minimum"):
        check_filters(bad_filters(7, seed=-1), LABEL)
    with pytest.raises(ConfigError, match=r"filter 'gaussian_5' \(entry 7\): field 'sigma': nan is not a finite number"):
        check_filters(bad_filters(6, sigma=math.nan), LABEL)
    huge = [[1e39, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ConfigError, match=r"filter 'emboss' \(entry 10\): field 'kernel': .*overflow the float32 targets"):
        check_filters(bad_filters(9, kernel=huge), LABEL)
    near = [[2e36, 0, 0], [0, 1, 0], [0, 0, 1]]  # finite in float32, but 256 * 2e36 is not
    with pytest.raises(ConfigError, match=r"field 'kernel': .*overflow"):
        check_filters(bad_filters(9, kernel=near), LABEL)


def test_messages_in_words_not_schema_jargon(tmp_path):
    with pytest.raises(ConfigError, match=r"field 'ksize': 4 must be odd"):
        check_filters(bad_filters(6, ksize=4), LABEL)  # gaussian: any odd size
    with pytest.raises(ConfigError, match=r"must be a mapping of filters, got a list \(put `filters:` above the list\)"):
        check_filters([{"name": "a", "kind": "sobel"}], LABEL)
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  rel_tol: 1e-10\n  kernel_tol: 5E-7\n  seed: 3\n")
    loaded = load_yaml(path)
    assert loaded["train"] == {"rel_tol": 1e-10, "kernel_tol": 5e-7, "seed": 3}  # numbers, as YAML 1.2 reads them


def test_a_crop_size_from_config_yaml_is_blamed_on_config_yaml():
    document = copy.deepcopy(FILTERS)
    with pytest.raises(ConfigError, match=r"^config/config.yaml: section 'train': field 'crop_size': crop size 5 .*'random_7' \(7x7\)"):
        check_filters(document, LABEL, {"crop_size": 5, "ksize": None}, config_label="config/config.yaml")


def test_the_schemas_are_package_data_so_an_installed_package_validates():
    import tomllib
    from importlib.resources import files

    from img2kernel.pipeline import config

    schemas = files("img2kernel") / "schemas"
    assert config.CONFIG_SCHEMA == schemas / "config.schema.yaml" and config.CONFIG_SCHEMA.is_file()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "schemas/*.yaml" in project["package-data"]["img2kernel"]
    subpackages = {p.parent.name for p in (REPO / "workflow" / "img2kernel").glob("*/__init__.py")}
    assert {f"img2kernel.{name}" for name in subpackages} <= set(project["packages"])


@pytest.mark.parametrize("entry, message", [
    ({"name": "g", "kind": "gaussian", "ksize": 5, "quality": 85},
     "filter 'g' (entry 1): field 'quality': a JPEG quality applies to `output: jpeg`; this entry's output is 'float'"),
    ({"name": "g", "kind": "gaussian", "ksize": 5, "output": "jpeg", "quality": 101}, "filter 'g' (entry 1): field 'quality': 101"),
    ({"name": "p", "kind": "pairs", "inputs": "a", "outputs": "b", "quality": 85},
     "filter 'p' (entry 1): field 'quality': a pairs filter has no quality"),
])
def test_a_jpeg_quality_is_checked_and_needs_output_jpeg(entry, message):
    with pytest.raises(ConfigError) as err:
        check_filters({"filters": [entry]}, LABEL, check_files=False)
    assert message in str(err.value), str(err.value)


def test_a_saturated_output_has_one_spelling_so_both_name_the_same_filter():
    from img2kernel.pipeline.config import canonical_json, target_spec
    from img2kernel.sources.filters import build_filter

    entry = {"name": "edges", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}
    old, new = (check_filters({"filters": [{**entry, "output": spelling}]}, LABEL)[0] for spelling in ("uint8", "abs_uint8"))
    assert old["output"] == new["output"] == "abs_uint8"
    assert canonical_json(target_spec(old)) == canonical_json(target_spec(new))  # the same params: nothing reruns
    assert build_filter(old).model_of(build_filter(old).kernels).output == "abs_uint8"  # the model's step of that name
