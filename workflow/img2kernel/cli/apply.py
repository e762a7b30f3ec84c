"""``img2kernel apply MODEL INPUT OUTPUT``: a fitted model on an image of any size, tile by tile."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    apply = sub.add_parser(
        "apply",
        help="apply a learned kernel to an image of any size, tile by tile (equal to whole-image inference)",
    )
    apply.add_argument("model", help="results/models/NAME.safetensors")
    apply.add_argument("input", help="image (8/16-bit, gray or colour) or .npy array")
    apply.add_argument("output", help=".npy or .tif keep float32; .png is clipped to 0..255")
    apply.add_argument("--tile", type=int, default=1024, help="output tile side in pixels (default 1024)")
    apply.add_argument("--workers", type=int, default=None,
                       help="threads filtering tiles at once (default: the usable CPUs); each holds one tile")
    apply.add_argument("--colour", choices=["gray", "per-channel"], default="gray",
                       help="convert colour to gray (as the store does) or filter each channel")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from img2kernel.apply import apply_to_file

    try:
        shape = apply_to_file(args.model, args.input, args.output, tile=args.tile, colour=args.colour,
                              workers=args.workers, progress=True)
    except (OSError, ValueError) as err:
        parser.exit(2, f"img2kernel apply: {err}\n")
    channels = shape[2] if len(shape) == 3 else 1
    print(f"{args.output}: {shape[1]}x{shape[0]}, {channels} channel(s)")
    return 0
