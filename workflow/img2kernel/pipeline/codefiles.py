"""The package modules a stage's script can run, derived from the imports (no hand-written lists).

Snakemake reruns a job when its script changes, not when a module the script imports
changes; the workflow lists these modules as each rule's inputs, so editing one reruns
exactly the stages that can run it. Imports inside functions count (lazy imports run
too). Standard library only: the Snakefile calls this on every start, a dry run included, so
each file's imports are kept between starts (:func:`keep_imports_in`), keyed by its size and
modification time.
"""

from __future__ import annotations

import ast
import atexit
import json
import os
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
# Reachable by import but never changes a result: the job log's formatting.
NEVER_RESULTS = {"pipeline/logs.py"}


def _resolve(base: Path, module: str | None, level: int, names: list[str]) -> list[Path]:
    """Files an import statement can load, inside the package; ``base`` is the importing file's folder."""
    if level == 0:
        if not module or not (module == "img2kernel" or module.startswith("img2kernel.")):
            return []
        parts, folder = module.split(".")[1:], PACKAGE
    else:
        folder = base
        for _ in range(level - 1):
            folder = folder.parent
        parts = module.split(".") if module else []
    target = folder.joinpath(*parts)
    found = []
    if target.with_suffix(".py").is_file():
        found.append(target.with_suffix(".py"))
    elif (target / "__init__.py").is_file():
        found.append(target / "__init__.py")
        # `from .models import affine` loads the submodule itself
        found.extend(target / f"{n}.py" for n in names if (target / f"{n}.py").is_file())
    return [f for f in found if PACKAGE in f.parents or f.parent == PACKAGE]


class _KeptImports:
    """Each file's imports from earlier starts, ``{file: [[mtime_ns, size], [imported files]]}``,
    and the JSON file they are read from and written to (none: nothing is kept)."""

    def __init__(self) -> None:
        self.file: Path | None = None
        self.entries: dict[str, list] = {}
        self.changed = False

    def write(self) -> None:
        if self.file is None or not self.changed:
            return
        partial = self.file.with_name(f"{self.file.name}.{os.getpid()}.partial")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.entries))
            os.replace(partial, self.file)  # whole or not at all, with jobs of a cluster starting side by side
        except OSError:
            partial.unlink(missing_ok=True)


_KEPT = _KeptImports()


def keep_imports_in(path: str | os.PathLike) -> None:
    """Reuse the imports found at earlier starts from ``path`` (a JSON file), and write it at exit
    when a file was parsed (quietly skipped where it cannot be written)."""
    _KEPT.file = Path(path).resolve()
    try:
        _KEPT.entries.update(json.loads(_KEPT.file.read_text()))
    except (OSError, ValueError):
        pass
    atexit.register(_KEPT.write)


@lru_cache(maxsize=None)
def _imports(path: Path) -> tuple[Path, ...]:
    """Package files ``path`` imports; each file is parsed once per Snakemake start, whatever the
    number of scripts that reach it, and not at all while it is unchanged (see keep_imports_in)."""
    stat = path.stat()
    stamp = [stat.st_mtime_ns, stat.st_size]
    kept = _KEPT.entries.get(str(path))
    if kept and kept[0] == stamp and all(Path(f).is_file() for f in kept[1]):
        return tuple(Path(f) for f in kept[1])
    files = _parsed_imports(path)
    if _KEPT.file is not None:
        _KEPT.entries[str(path)] = [stamp, [str(f) for f in files]]
        _KEPT.changed = True
    return files


def _parsed_imports(path: Path) -> tuple[Path, ...]:
    files = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            files.extend(_resolve(path.parent, node.module, node.level, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                files.extend(_resolve(path.parent, alias.name, 0, []))
    # importing a module runs the __init__ of every package above it first
    for found in list(files):
        folder = found.parent
        while folder == PACKAGE or PACKAGE in folder.parents:
            if (folder / "__init__.py").is_file():
                files.append(folder / "__init__.py")
            folder = folder.parent
    return tuple(files)


@lru_cache(maxsize=None)
def modules_run_by(script: str | Path, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Sorted package-relative paths (``fit/gradient.py``, ``models/affine.py``) ``script`` can run."""
    seen: set[Path] = set()
    todo = list(_imports(Path(script)))
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imports(path))
    names = {p.relative_to(PACKAGE).as_posix() for p in seen}
    return tuple(sorted(names - NEVER_RESULTS - set(exclude)))
