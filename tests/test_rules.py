"""Every rule lists, as `code()` inputs, each package module its script can run.

Snakemake reruns a job when its script changes, not when a module that script imports
changes; the `code()` inputs close that gap only if they are complete. A module missing
from a rule's list would make an edit to it rerun nothing for that rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "workflow" / "img2kernel"
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
RULE_BLOCK = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.MULTILINE | re.DOTALL)
# Reachable by import but never run by the rule, and left out on purpose:
NOT_RUN = {
    # logs.py only formats the job's log, which no later stage reads.
    "*": {"logs.py", "__init__.py"},
    # data.py builds the inputs store too, but the download path never calls the store:
    # listing store.py would re-download every URL after a store edit.
    "url_list": {"store.py"},
    "download": {"store.py"},
}


def package_imports(path: Path) -> set[str]:
    """Package modules (file names) imported anywhere in a file, inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if node.level == 1 or module == "img2kernel" or module.startswith("img2kernel."):
            parts = module.split(".")[1:] if module.startswith("img2kernel") else module.split(".") if module else []
            if parts:
                names.add(parts[0] + ".py")
            else:  # `from . import plots` or `from img2kernel import plots`
                names.update(alias.name + ".py" for alias in node.names)
    return {name for name in names if (PACKAGE / name).is_file()}


def reachable_modules(script: Path) -> set[str]:
    seen, todo = set(), list(package_imports(script))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(package_imports(PACKAGE / name))
    return seen


def rules_with_scripts() -> list[tuple[str, Path, set[str]]]:
    found = []
    for smk in RULES:
        for name, body in RULE_BLOCK.findall(smk.read_text()):
            script = re.search(r'script:\s*\n\s*"([^"]+)"', body)
            if not script:
                continue
            listed = re.search(r"code=code\(([^)]*)\)", body)
            modules = set(re.findall(r'"([^"]+)"', listed.group(1))) if listed else set()
            found.append((name, (smk.parent / script.group(1)).resolve(), modules))
    return found


def test_the_rule_files_were_parsed():
    names = {name for name, _, _ in rules_with_scripts()}
    assert names == {"url_list", "download", "inputs_store", "targets", "train", "evaluate", "summary", "report"}


@pytest.mark.parametrize("rule, script, listed", rules_with_scripts(), ids=lambda v: v if isinstance(v, str) else "")
def test_code_inputs_cover_every_module_the_script_runs(rule, script, listed):
    missing = reachable_modules(script) - listed - NOT_RUN["*"] - NOT_RUN.get(rule, set())
    assert not missing, f"rule {rule}: add {sorted(missing)} to its code() inputs"
