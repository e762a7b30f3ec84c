#!/usr/bin/env python3
"""A local stand-in for a batch system, for ``snakemake --executor cluster-generic``.

    local_submit.py JOBSCRIPT     submit: print a job id, run the job in the background
    local_submit.py --status ID   status: print running, success or failed

Each job runs as its own detached process (own session, scrubbed environment) in a
sandbox of its own under ``$IMG2KERNEL_SANDBOXES/<id>/``: a fresh directory holding only
the job's declared inputs (from the properties line of Snakemake's job script) and the
workflow's config/ folder, the way a node without the shared working directory would
see it. A job that reads anything it did not declare fails. When the job ends, everything
it wrote there (outputs, log, benchmark) is copied back into the working directory, then
its state is set. Each job's record, ``<id>.json``, lists its pid and what it was given.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

SANDBOXES = Path(os.environ.get("IMG2KERNEL_SANDBOXES", "/tmp/img2kernel-sandboxes"))


def job_properties(script: str) -> dict:
    match = re.search(r"^# properties = (.*)$", script, re.MULTILINE)
    if not match:
        raise SystemExit("local_submit: no '# properties = ' line in the job script")
    return json.loads(match.group(1))


def working_directory(script: str) -> Path:
    match = re.search(r"^cd (.+?) && ", script, re.MULTILINE)
    if not match:
        raise SystemExit("local_submit: the job script does not start with 'cd <workdir> && '")
    return Path(shlex.split(match.group(1))[0])


def copy_in(workdir: Path, sandbox: Path, relative: str) -> None:
    source, dest = workdir / relative, sandbox / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True, copy_function=shutil.copy2, dirs_exist_ok=True)
    elif source.exists():
        shutil.copy2(source, dest)


def write_record(job_id: str, record: dict) -> None:
    """Atomically: the status command may read it at any moment."""
    partial = SANDBOXES / f"{job_id}.json.partial"
    partial.write_text(json.dumps(record))
    os.replace(partial, SANDBOXES / f"{job_id}.json")


def submit(jobscript: Path) -> str:
    script = jobscript.read_text()
    properties = job_properties(script)
    workdir = working_directory(script)
    job_id = f"{properties['jobid']:03d}-{properties['rule']}-{uuid.uuid4().hex[:6]}"
    sandbox = SANDBOXES / job_id
    sandbox.mkdir(parents=True)
    # Inputs inside the working directory are staged in; absolute ones outside it (the
    # workflow's own modules) are the deployed software, shared as on a cluster.
    staged = [p for p in properties["input"] if not os.path.isabs(p)]
    for relative in staged:
        copy_in(workdir, sandbox, relative)
    copy_in(workdir, sandbox, "config")
    # The job runs in the sandbox; Snakemake's own temp folder (--wait-for-files) moves with it.
    quoted = shlex.quote(str(workdir))
    script = script.replace(f"cd {quoted} && ", f"cd {shlex.quote(str(sandbox))} && ", 1)
    script = script.replace(f"'{workdir}/.snakemake/", f"'{sandbox}/.snakemake/")
    for folder in re.findall(rf"'{re.escape(str(sandbox))}/(\.snakemake/tmp\.[^'/]+)", script):
        (sandbox / folder).mkdir(parents=True, exist_ok=True)
    # A job with many inputs lists them in a --wait-for-files-file in that folder.
    for name in re.findall(rf"'{re.escape(str(sandbox))}/(\.snakemake/tmp\.[^']+\.waitforfilesfile\.txt)'", script):
        listed = (workdir / name).read_text().replace(f"{workdir}/", "")
        (sandbox / name).write_text(listed)
    (SANDBOXES / f"{job_id}.sh").write_text(script)
    record = {"rule": properties["rule"], "jobid": properties["jobid"], "workdir": str(workdir), "staged": staged,
              "output": properties["output"], "log": properties["log"], "state": "running"}
    write_record(job_id, record)
    with open(SANDBOXES / f"{job_id}.out", "w") as out:
        subprocess.Popen([sys.executable, __file__, "--run", job_id], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=scrubbed_environment())
    return job_id


def scrubbed_environment() -> dict:
    """What a batch job starts with: no variables of the submitting shell but the basics."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "IMG2KERNEL_SANDBOXES")
    return {k: os.environ[k] for k in keep if k in os.environ}


def run(job_id: str) -> None:
    record_path = SANDBOXES / f"{job_id}.json"
    record = json.loads(record_path.read_text())
    sandbox, workdir = SANDBOXES / job_id, Path(record["workdir"])
    before = {p for p in sandbox.rglob("*") if p.is_file()}
    started = time.time()
    job = subprocess.Popen(["/bin/sh", str(SANDBOXES / f"{job_id}.sh")], cwd=sandbox, env=scrubbed_environment())
    record.update(pid=job.pid, submitter_pid=os.getppid())
    write_record(job_id, record)
    returncode = job.wait()
    # Copy back everything the job wrote (outputs, logs, benchmarks), not Snakemake's scratch.
    written = []
    for path in sorted(sandbox.rglob("*")):
        relative = path.relative_to(sandbox)
        if path.is_file() and path not in before and relative.parts[0] != ".snakemake":
            dest = workdir / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(dest.name + ".copying")
            shutil.copy2(path, partial)
            os.replace(partial, dest)
            written.append(str(relative))
    record.update(returncode=returncode, seconds=time.time() - started, written=written,
                  state="success" if returncode == 0 else "failed")
    write_record(job_id, record)


def status(job_id: str) -> str:
    record_path = SANDBOXES / f"{job_id}.json"
    if not record_path.exists():
        return "failed"
    return json.loads(record_path.read_text())["state"]


if __name__ == "__main__":
    if sys.argv[1] == "--run":
        run(sys.argv[2])
    elif sys.argv[1] == "--status":
        print(status(sys.argv[2]))
    else:
        print(submit(Path(sys.argv[1])))
