"""Every rule lists, as `code()` inputs, each package module its script can run.

Snakemake reruns a job when its script changes, not when a module that script imports
changes; the `code()` inputs close that gap. They are derived from the imports
(img2kernel.pipeline.codefiles); these tests check the derivation against what Python itself loads.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

from img2kernel.pipeline.codefiles import PACKAGE, modules_run_by

SCRIPTS = REPO / "workflow" / "scripts"
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
RULE_BLOCK = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.MULTILINE | re.DOTALL)


def rules_with_scripts() -> list[tuple[str, str, str]]:
    """(rule, its script's file name, the script named in its code() call)."""
    found = []
    for smk in RULES:
        for name, body in RULE_BLOCK.findall(smk.read_text()):
            script = re.search(r'script:\s*\n\s*"([^"]+)"', body)
            if script:
                listed = re.search(r'code=code\("([^"]+)"', body)
                found.append((name, Path(script.group(1)).name, listed.group(1) if listed else ""))
    return found


def test_the_rule_files_were_parsed():
    names = {name for name, _, _ in rules_with_scripts()}
    assert names == {"url_list", "download", "inputs_store", "targets", "pairs_store", "train", "evaluate", "report"}


@pytest.mark.parametrize("rule, script, listed", rules_with_scripts(), ids=lambda v: v)
def test_each_rule_derives_its_code_inputs_from_its_own_script(rule, script, listed):
    assert listed == script, f"rule {rule} runs {script} but its code() inputs are derived from {listed or 'nothing'}"


def loaded_by_importing(script: Path) -> set[str]:
    """Package modules Python loads when it runs every img2kernel import statement of ``script``."""
    statements = [ast.unparse(node) for node in ast.walk(ast.parse(script.read_text()))
                  if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("img2kernel")]
    program = (
        f"import sys, json; sys.path.insert(0, {str(PACKAGE.parent)!r})\n" + "\n".join(statements) + "\n"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('img2kernel') and getattr(m, '__file__', None))))"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    return {Path(f).resolve().relative_to(PACKAGE).as_posix() for f in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_derived_code_files_cover_what_python_loads(script):
    derived = set(modules_run_by(str(SCRIPTS / script)))
    missing = loaded_by_importing(SCRIPTS / script) - derived - {"pipeline/logs.py"}
    assert not missing, f"{script}: the derivation misses {sorted(missing)}"


def test_lazy_imports_inside_functions_count_too():
    # scripts/train.py imports the trainer and the pairs fit inside functions; both run.
    derived = modules_run_by(str(SCRIPTS / "train.py"))
    assert {"fit/gradient.py", "fit/filter_job.py", "fit/pairs_job.py", "fit/pairs.py", "fit/lstsq.py", "models/affine.py", "sources/pairs.py"} <= set(derived)
    assert "pipeline/logs.py" not in derived


def test_imports_kept_between_starts_are_reused_only_while_the_file_is_unchanged(tmp_path):
    # Each start is a fresh process: the first parses and writes the file, the second reads it,
    # the third sees an edited module (its new import must count) and parses it again.
    module = tmp_path / "pkg_module.py"
    kept = tmp_path / "kept.json"
    program = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from img2kernel.pipeline import codefiles\n"
        "codefiles.keep_imports_in(sys.argv[2])\n"
        "calls = []\n"
        "parse = codefiles._parsed_imports\n"
        "codefiles._parsed_imports = lambda path: calls.append(path.name) or parse(path)\n"
        "found = codefiles._imports(Path(sys.argv[3]))\n"
        "print(sorted({f.relative_to(codefiles.PACKAGE).as_posix() for f in found}), calls)\n"
    )

    def start() -> str:
        return subprocess.run([sys.executable, "-c", program, str(PACKAGE.parent), str(kept), str(module)],
                              capture_output=True, text=True, check=True).stdout.strip()

    module.write_text("from img2kernel.fit import lstsq\n")
    first, second = start(), start()
    assert first == "['__init__.py', 'fit/__init__.py', 'fit/lstsq.py'] ['pkg_module.py']" and kept.is_file()
    assert second == "['__init__.py', 'fit/__init__.py', 'fit/lstsq.py'] []"
    module.write_text("from img2kernel.fit import lstsq\nfrom img2kernel.models import rank\n")
    assert "models/rank.py" in start()
