# Helpers shared by the rules. Settings reach jobs through params: in one canonical
# JSON form, so Snakemake's params trigger reruns exactly the jobs whose settings changed.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

# The package lives in workflow/img2kernel. Scripts (and cluster jobs, which re-read
# this file) import it from here, so the code that runs is the code in this checkout.
PACKAGE_PARENT = str(Path(workflow.basedir) / "workflow")
if PACKAGE_PARENT not in sys.path:
    sys.path.insert(0, PACKAGE_PARENT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p
)


# Declared, so Snakemake passes it on to every job, on a cluster too.
envvars:
    "PYTHONPATH",


from img2kernel.pipeline.codefiles import keep_imports_in, modules_run_by
from img2kernel.pipeline.locks import clear_stale_locks, record_owner, release_owner
from img2kernel.sources import GENERATED, PAIRS, source_of, stores
from img2kernel.pipeline.config import (
    ConfigError,
    canonical_json,
    check_config,
    check_filters,
    load_yaml,
    target_spec,
    training_settings,
)

FILTER_NAME = "[a-z][a-z0-9_]{0,63}"

# `--cores 8` on a 2-core machine would put eight training and evaluation jobs on two
# cores and inflate every training time fourfold. Locally, those jobs also take one of
# `cpu_slots`, of which there are as many as this process may use CPUs
# (`--resources cpu_slots=N` overrides).
USABLE_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
if workflow.local_exec and "cpu_slots" not in workflow.global_resources:
    workflow.register_resource("cpu_slots", USABLE_CPUS)
# Threads of the jobs that scale to about four: a pairs fit (its BLAS) and the report (its
# figures encoded side by side); no more than this machine has (`--cores 8` on two CPUs would
# oversubscribe them).
WIDE_JOB_THREADS = min(4, USABLE_CPUS) if workflow.local_exec else 4
# Locally, training jobs that ask for gpu=1 take the one GPU in turn. Not on a cluster: there
# the scheduler places them (the SLURM profile turns gpu=1 into --gpus=1), and a global cap
# would serialise them. Registered here, not in profiles/default, because a workflow profile
# overrides the user's --profile and would impose the cap there too.
if workflow.local_exec and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", 1)

# A run killed with SIGKILL leaves Snakemake's locks behind: clear them if their owner
# is gone, so the next `snakemake --cores 8` finishes the work (see img2kernel.pipeline.locks).
if workflow.is_main_process:
    cleared = clear_stale_locks()
    if cleared:
        logger.warning(f"img2kernel: {cleared}")


onstart:
    record_owner()


onsuccess:
    release_owner()


onerror:
    release_owner()


wildcard_constraints:
    filter=FILTER_NAME,


# Each module's imports, kept between starts: a dry run need not parse the package again.
keep_imports_in(Path(".snakemake") / "img2kernel-imports.json")


def code(script, also=(), exclude=()):
    """Package modules a stage's script can run, as inputs: editing one reruns exactly the
    stages that can run it. Derived from the imports (img2kernel.pipeline.codefiles); ``also`` adds
    files no import names (a template), ``exclude`` drops modules imported but never run.

    Inside the working directory (a clone, run where it is) the paths are relative, so a
    project copied or cloned elsewhere has nothing to rerun; a workflow outside it (``-s``
    elsewhere) is named by absolute paths, which stay valid for cluster jobs.
    """
    script_path = Path(workflow.basedir) / "workflow" / "scripts" / script
    modules = list(modules_run_by(str(script_path), tuple(exclude))) + list(also)
    files = [Path(PACKAGE_PARENT) / "img2kernel" / m for m in modules]
    here = Path.cwd().resolve()
    return [str(f.resolve().relative_to(here)) if f.resolve().is_relative_to(here) else str(f) for f in files]


def config_label():
    """The config file a user would edit, for error messages."""
    return str(workflow.configfiles[-1]) if workflow.configfiles else "config/config.yaml"


def validated_filters():
    """Validate config.yaml and the filter list; returns {name: spec} with defaults filled."""
    try:
        check_config(config, config_label(), check_files=workflow.is_main_process)
        filters_file = config["filters"]
        specs = check_filters(load_yaml(filters_file), filters_file, config["train"], check_files=workflow.is_main_process,
                              config_label=config_label())
    except ConfigError as err:
        raise WorkflowError(f"invalid configuration: {err}") from None
    return {spec["name"]: spec for spec in specs}


def filter_names(source):
    """Names of the filters whose pairs come from ``source`` (GENERATED or PAIRS)."""
    return [name for name, spec in FILTERS.items() if source_of(spec) == source]


def filter_stores(wildcards):
    """The store folders of a filter's pairs, whatever their source: {inputs, targets}."""
    return stores(FILTERS[wildcards.filter])


def pairs_files(wildcards):
    """Every local file a pairs filter reads: editing, adding or removing one rebuilds its store."""
    from img2kernel.sources.pairs import local_files

    return local_files(FILTERS[wildcards.filter])


def pairs_settings(wildcards):
    """What decides a pairs filter's store: its files, channels, holdout, the split seed, and for
    a table (whose URLs are fetched) the data section's timeout and retries."""
    spec = FILTERS[wildcards.filter]
    keys = ("inputs", "outputs", "table", "channels", "holdout")
    fetch = {k: config["data"][k] for k in ("timeout", "retries")} if "table" in spec else {}  # only URLs are fetched
    return canonical_json({"spec": {k: spec[k] for k in keys if k in spec}, "seed": config["split"]["seed"], **fetch})


def other_kernels(wildcards):
    """For a pairs filter, the specs of the user's own filters, which its identification
    compares with; nothing for the others, so editing one filter reruns no other's evaluation."""
    if source_of(FILTERS[wildcards.filter]) != PAIRS:
        return ""
    return canonical_json({name: target_spec(FILTERS[name]) for name in filter_names(GENERATED)})


def url_source():
    """The user's URL list file, an input of url_list; none for the sample photos."""
    urls = config["data"]["urls"]
    return [] if urls == "sample" else [urls]


def url_list_settings():
    data = config["data"]
    return canonical_json({"source": data["urls"], "url_col": data["url_col"], "max_images": data["max_images"]})


def download_settings():
    data = config["data"]
    keys = ("shard_size", "timeout", "retries")
    return canonical_json({k: data[k] for k in keys})


def inputs_store_settings():
    """What decides the inputs store; the image size limits apply here, so editing them
    rebuilds the store without downloading again."""
    data = config["data"]
    return canonical_json(
        {"split": config["split"], "dtype": config["store"]["dtype"], "min_side": data["min_side"], "max_side": data["max_side"]}
    )


def filter_target_spec(wildcards):
    return canonical_json(target_spec(FILTERS[wildcards.filter]))


def filter_training_settings(wildcards):
    """config.yaml's training defaults with this filter's overrides: only its own edits rerun it."""
    return canonical_json(training_settings(config["train"], FILTERS[wildcards.filter]))


def train_threads(wildcards):
    """A pairs fit is BLAS-bound (its normal equations) and scales with threads; a generated
    filter trains on small crops, where one thread a job is the better use of the cores.
    Snakemake lowers the figure to --cores."""
    return WIDE_JOB_THREADS if source_of(FILTERS[wildcards.filter]) == PAIRS else 1


def training_gpus():
    """1 when training will use a GPU, else 0. Checked without importing torch (slow at parse time)."""
    from img2kernel.pipeline.devices import nvidia_gpu_visible

    device = config["device"]
    if device == "cpu":
        return 0
    if device == "cuda":
        return 1
    return int(nvidia_gpu_visible())


def benchmark_files():
    """Every benchmark file of the jobs the report covers (time and memory per stage)."""
    files = []
    if filter_names(GENERATED):
        files += ["results/benchmarks/urls/url_list.tsv", "results/benchmarks/images/download.tsv", "results/benchmarks/store/inputs.tsv"]
        files += expand("results/benchmarks/targets/{filter}.tsv", filter=filter_names(GENERATED))
    files += expand("results/benchmarks/pairs/{filter}.tsv", filter=filter_names(PAIRS))
    files += expand("results/benchmarks/{stage}/{filter}.tsv", stage=["train", "eval"], filter=FILTERS)
    return files


def data_summaries():
    """The download and inputs-store summaries the report shows; none when every filter brings its own pairs."""
    pairs_manifests = [stores(FILTERS[name])["inputs"] for name in filter_names(PAIRS)]
    if not filter_names(GENERATED):
        return {"pairs_manifests": pairs_manifests}
    return {
        "urls": "results/urls/urls.json",
        "images": "results/images",
        "store": "results/store/inputs",
        "pairs_manifests": pairs_manifests,
    }


def final_outputs():
    """What `snakemake` with no target builds: every filter's model, evaluation and plots,
    the tables and the report. Naming each one (not the report alone) makes a plain rerun
    rebuild any of them that was deleted, and what depends on it, and nothing else."""
    per_filter = expand(
        ["results/models/{filter}.safetensors", "results/eval/{filter}.json", "results/eval/{filter}.kernels.csv",
         "results/plots/{filter}/kernels.png",
         "results/plots/{filter}/training.png", "results/plots/{filter}/images.png"],
        filter=FILTERS,
    )
    # The stores too: Snakemake does not rebuild a deleted input of a job whose outputs exist.
    stores_of = [folder for name in FILTERS for folder in stores(FILTERS[name]).values()]
    downloaded = ["results/images"] if filter_names(GENERATED) else []
    return list(dict.fromkeys(downloaded + stores_of)) + per_filter + [
        "results/tables/kernels.csv", "results/tables/kernels.md", "results/report.html"]
