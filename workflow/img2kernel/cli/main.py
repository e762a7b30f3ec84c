"""The `img2kernel` command: fit a kernel to your own image pairs, apply a learned model to any
image, and print the speed benchmarks."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each subcommand is a module of this package with ``add_parser(sub)`` and ``run(args, parser)``;
# it is imported when its command runs, so ``img2kernel apply`` never loads torch.
COMMANDS = {"bench": "img2kernel.cli.bench", "fit": "img2kernel.cli.fit", "apply": "img2kernel.cli.apply"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="img2kernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command]).run(args, parser)


if __name__ == "__main__":
    sys.exit(main())
