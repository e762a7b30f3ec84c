"""Snakemake entry point: download the URL table with img2dataset (guarded: its workers re-import this file)."""
import json
import sys

# img2dataset imports webdataset, which imports torch (about a second a process) only for optional
# PyTorch classes it does without; img2dataset's logger and workers re-run this file, so none imports it.
sys.modules.setdefault("torch", None)

if __name__ == "__main__":
    from img2kernel.sources.downloads import download
    from img2kernel.pipeline.logs import log_to

    settings = json.loads(snakemake.params.settings)
    with log_to(snakemake.log[0]) as log:
        summary = download(
            snakemake.input.urls,
            snakemake.output[0],
            snakemake.params.work_root,
            processes=snakemake.threads,
            threads=4 * snakemake.threads,
            **settings,
        )
        log.info("download summary: %s", json.dumps(summary))
