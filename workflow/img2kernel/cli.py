"""The `img2kernel` command: benchmarks (and, later, applying learned kernels)."""

from __future__ import annotations

import argparse
import sys


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.2f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="img2kernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="print speed figures")
    bench.add_argument("what", nargs="*", help="store, targets (default: all)")
    bench.add_argument("--store", default="results/store/inputs", help="inputs store (default: built from the sample photos if absent)")
    bench.add_argument("--filters", default="config/filters.yaml")
    bench.add_argument("--crop", type=int, default=128)

    args = parser.parse_args(argv)
    if args.command == "bench":
        from . import bench as benchmarks

        known = ["store", "targets"]
        unknown = sorted(set(args.what) - set(known))
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(known)}")
        args.what = args.what or known

        if "store" in args.what:
            result = benchmarks.bench_crops(args.store, size=args.crop)
            print(
                f"store reader: {result['crops_per_second']:,.0f} random {result['crop']}x{result['crop']} float32 "
                f"crops/s on one core ({result['images']} images, {result['store']})"
            )
        if "targets" in args.what:
            print("\ntarget throughput on one core (store write path vs bare cv2.filter2D on the same arrays):")
            _print_table(benchmarks.bench_targets(args.store, args.filters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
