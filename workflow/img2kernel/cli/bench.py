"""``img2kernel bench [WHAT ...]``: print the benchmarks' figures (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

KNOWN = ["store", "targets", "stream", "train", "apply", "pairs", "geometry", "pipeline", "ladder", "memory"]


def add_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="print speed figures: store (crop rate), targets (MP/s), train (ours vs public recipe; needs `snakemake` run first), apply (huge image), pairs, geometry (outputs cropped, resized or turned), pipeline (first run, the README's pairs example, fit, no-op rerun against a trivial workflow, each three times; stages, 15x15 and 31x31 kernels), memory (a large colour pair through fit and the workflow; the decompression bomb)",
    )
    bench.add_argument("what", nargs="*", help="store, stream, targets, train, apply, pairs, geometry, pipeline, ladder, memory (default: store, stream, targets)")
    bench.add_argument("--store", default="results/store/inputs", help="inputs store (default: built from the sample photos if absent)")
    bench.add_argument("--filters", default="config/filters.yaml")
    bench.add_argument("--crop", type=int, default=128)
    bench.add_argument("--config", default="config/config.yaml")
    bench.add_argument("--targets", default="results/store/targets", help="targets stores, one folder per filter")
    bench.add_argument("--budget", type=float, default=60.0, help="seconds the public recipe gets per filter")
    bench.add_argument("--only", nargs="*", help="filter names (default: all)")
    bench.add_argument("--size", type=int, default=20000, help="side of the generated image for `apply`")
    bench.add_argument("--tile", type=int, default=1024, help="tile side for `apply`")
    bench.add_argument("--pair-side", type=int, default=10000, help="side of the generated colour pair for `memory`")
    bench.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                       help="where `train` trains, ours and the public recipe alike (default: cpu)")
    bench.add_argument("--cores", type=int, default=None,
                       help="snakemake --cores for `pipeline` (default: this machine's CPUs, as `make run`)")
    bench.add_argument("--keep", default=None, help="`pipeline`: run in this new folder and keep it (default: a temporary one)")
    bench.add_argument("--runs", type=int, default=3, help="`pipeline`: times each wait is measured (default 3)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from img2kernel.bench import speed as benchmarks

    unknown = sorted(set(args.what) - set(KNOWN))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
    args.what = args.what or ["store", "stream", "targets"]

    if "store" in args.what:
        result = benchmarks.bench_crops(args.store, size=args.crop)
        print(
            f"store reader: {result['crops_per_second']:,.0f} random {result['crop']}x{result['crop']} float32 "
            f"crops/s on one core ({result['images']} images, {result['store']})"
        )
    if "stream" in args.what:
        print(
            "\nstreaming reader vs training step, crops/s: (input, target) pairs read from a generated "
            "1 GiB store on one core, and consumed by the model's forward+backward on 2 threads:"
        )
        _print_table(benchmarks.bench_streaming(crop=64))
    if "targets" in args.what:
        print("\ntarget throughput on one core (store write path vs bare cv2.filter2D on the same arrays):")
        _print_table(benchmarks.bench_targets(args.store, args.filters))
    if "apply" in args.what:
        result = benchmarks.bench_apply(args.size, args.tile)
        print(
            f"\napply, a generated {result['size']}x{result['size']} float32 .npy ({result['image_mb']:,.0f} MB), "
            f"{result['ksize']}x{result['ksize']} kernel, one process each (tiled apply reads the file memory-mapped):"
        )
        _print_table(result["rows"])
    if "pairs" in args.what:
        from img2kernel.bench.pairs import JPEG_SPEED_TARGET, bench_jpeg_speed, bench_large_fit, bench_pairs

        print("\npairs made by other libraries from 6 sample photos (256x256; 512x512 for JPEG), fitted as a `pairs` "
              "filter; kernel errors are max-abs / largest true tap, lstsq64 an independent float64 least squares on "
              "the same (decoded) pixels; target: error <= error_target (max(2 x lstsq64, 1e-3); 0.02 for JPEG "
              "outputs), judged linear, offset within 1 level, right size, nonlinear judged not linear:")
        _print_table(bench_pairs())
        large = bench_large_fit()
        print(f"\n15x15 fit on {large['megapixels']:.1f} MP of 8-bit pairs ({large['train_pixels']:,} train pixels): "
              f"{large['fit_s']:.2f} s (target 10 s; normal equations {large['normal_equations_s']:.2f} s, sizes "
              f"{large['sizes_s']:.2f} s, channels {large['structure_s']:.2f} s, border {large['border_s']:.2f} s; reading "
              f"the files {large['read_s']:.2f} s more), size found {large['ksize_found']}, kernel error "
              f"{large['kernel_error']:.2g} (float64 least squares on the same pixels: {large['lstsq64_error']:.2g}), "
              f"linear {large['linear']}")
        print(f"\nJPEG fits against the lossless fit of the same pixels (best of 3 each; target: at most "
              f"{JPEG_SPEED_TARGET:g} times):")
        _print_table(bench_jpeg_speed())
    if "geometry" in args.what:
        from img2kernel.bench.geometry import PSNR_TARGET, bench_geometry

        print("\noutputs off their inputs' grid, made by other libraries from the sample photos (4 pairs, or one, "
              "256 px), fitted as a `pairs` filter; target: judged linear, held-out PSNR against the tool's file >= "
              f"{PSNR_TARGET:g} dB, the geometry and the resampler said; the crop's kernel within 2x of float64 least "
              "squares at the true placement (lstsq64):")
        _print_table(bench_geometry())
    if "ladder" in args.what:
        from img2kernel.bench.ladder import bench_ladder

        print("\nthe ladder of models on pairs made by other libraries (6 sample photos, 256x256: 4 train, 1 val, "
              "1 test); floors = held-out RMS in noise floors of the output's storage; ladder_s = the rungs after "
              "linear (target 30 s):")
        _print_table(bench_ladder(args.only))
    if "memory" in args.what:
        from img2kernel.bench.memory import bench_memory, print_memory

        print_memory(bench_memory(args.pair_side))
    if "pipeline" in args.what:
        from img2kernel.bench.pipeline import bench_pipeline

        from img2kernel.apply import usable_cpus

        args.cores = args.cores or usable_cpus()
        result = bench_pipeline(Path(args.config).parent, cores=args.cores, keep=args.keep, runs=args.runs)
        print(f"\npipeline on the configuration in {Path(args.config).parent}/, in fresh folders, --cores {args.cores}; "
              f"each wait {args.runs} times (median, fastest-slowest):")
        waits = {"first_run_s": "first run of the configuration", "pairs_example_s": "README pairs example, whole run",
                 "fit_gray_s": "img2kernel fit, one 512x512 gray pair", "fit_colour_s": "img2kernel fit, five colour pairs"}
        noop = result["noop"]
        rows = [{"wait": label, "median": f"{w['median']:.2f} s", "spread": f"{w['min']:.2f}-{w['max']:.2f} s",
                 "target": f"<= {w['target']:g} s", "met": w["met"]} for name, label in waits.items()
                for w in [result["waits"][name]]]
        ratio = noop["ratio"]
        rows.append({"wait": f"no-op `snakemake -n` / a trivial workflow of {noop['jobs']} jobs "
                             f"({noop['noop_s']:.2f} s / {noop['trivial_s']:.2f} s)",
                     "median": f"{ratio['median']:.2f}x", "spread": f"{ratio['min']:.2f}-{ratio['max']:.2f}x",
                     "target": f"<= {ratio['target']:g}x", "met": ratio["met"]})
        _print_table(rows)
        print(f"report {result['report_mb']:.2f} MB (target 3 MB)")
        print("\nper stage, summed over its jobs (jobs run in parallel, so the sums exceed the run's wall time): "
              "start-up = interpreter, Snakemake's preamble, module imports; work = the job's code without the "
              "imports it makes on its path (imports_s):")
        _print_table(result["stages"])
        print("\nlarge linear kernels trained on the run's inputs store (target: <= 5 s, error <= 2x the float64 "
              "least-squares oracle's on the same crops; 2 CPU threads):")
        _print_table(result["large_kernels"])
    if "train" in args.what:
        rows, magnitude = benchmarks.bench_training(
            args.store, args.targets, args.config, budget_seconds=args.budget, names=args.only, device=args.device
        )
        print(
            "\ntraining seconds to reach a kernel max-abs error of 1e-2 / 1e-3 / 1e-4 of the largest tap "
            f"(device {args.device}, 2 CPU threads; public recipe: Adam lr 1e-3, 16 zero-padded 128x128 crops "
            f"per step, {args.budget:.0f} s bound):"
        )
        _print_table(rows)
        if magnitude:
            print("\nsobel_magnitude: the learned pair after orthogonal Procrustes alignment, 5 seeds:")
            _print_table(magnitude)
    return 0


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(c for r in rows for c in r))  # every row's columns, first seen first
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.2f}"
    return str(value)
