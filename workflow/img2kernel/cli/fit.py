"""`img2kernel fit INPUT OUTPUT [...]`: the pairs fit of a pipeline filter, from the command line."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np


LIBRARY_WORDS = {"opencv": "OpenCV", "scipy": "scipy", "torch": "torch", "pillow": "Pillow", "imagemagick": "ImageMagick"}


def fit_files(files: list[str], model_path: str | Path, *, ksize: int | None = None, max_ksize: int = 15,
              channels: dict | None = None, holdout: float = 0.3, seed: int = 0) -> str:
    """Fit the pairs (input, output, input, output, ...), write the model, return the printout."""
    # Imported here: `img2kernel apply` and `bench` build this command's parser too.
    from img2kernel.evaluate.pairs import compression_note, heldout_scores, identification_of, precision_note, reproduction, verdict
    from img2kernel.fit.pairs import to_fit_pairs
    from img2kernel.fit.pairs_job import fit_and_climb, save_pairs_fit, saved_border
    from img2kernel.sources.pairs import PairRef, pair_key
    from img2kernel.sources.pairs_store import read_pairs

    if len(files) % 2:
        raise ValueError(f"give files in pairs, INPUT OUTPUT; got {len(files)} files (the last one, {files[-1]}, has no partner)")
    for value, name in ((ksize, "--ksize"), (max_ksize, "--max-ksize")):
        if value is not None and (value < 1 or value % 2 == 0):
            raise ValueError(f"{name} must be odd and positive, got {value}")
    if not 0 < holdout <= 0.8:
        raise ValueError(f"--holdout must be above 0 and at most 0.8, got {holdout}")
    if not Path(model_path).parent.is_dir():
        raise ValueError(f"{model_path}: folder {Path(model_path).parent} does not exist")
    if Path(model_path).is_dir():
        raise ValueError(f"{model_path} is a folder; give the model file's path, e.g. {Path(model_path) / 'kernel.safetensors'}")
    # The model and its JSON sidecar are written after the fit: refuse, before any work, a path
    # that would replace one of the pairs (`-o after.png` would destroy the tool's output).
    inputs = {Path(f).resolve() for f in files if Path(f).exists()}
    for written in (Path(model_path), Path(model_path).with_suffix(".json")):
        if written.resolve() in inputs:
            raise ValueError(f"{written}: writing the model there would overwrite one of the pairs' files; "
                             "choose another output path (-o)")
    used: set[str] = set()
    refs = [PairRef(pair_key(Path(files[i]).stem, used), files[i], files[i + 1]) for i in range(0, len(files), 2)]
    spec = {"name": "fit", "kind": "pairs", "holdout": holdout, "ksize": ksize, "max_ksize": max_ksize,
            "channels": {k: v for k, v in (channels or {}).items() if v}}
    loaded, manifest = read_pairs(spec, refs, seed=seed)
    pairs = to_fit_pairs(loaded, manifest)
    # The train job's fit and ladder (fit.pairs_job.fit_and_climb), so the same pairs give the same model.
    result, ladder = fit_and_climb(pairs, spec, seed)
    summary = {**result.summary(), **ladder}
    info = {"filter": {**spec, "files": files}, "source": "pairs", **summary, "input_storage": manifest["input_storage"],
            "output_storage": manifest["output_storage"]}
    info["reproduce"] = reproduction(result.model, {"border": saved_border(result)}, info, model_path)
    save_pairs_fit(result, info, model_path, Path(model_path).with_suffix(".json"), None)
    model = result.model
    identification = identification_of(model, info)
    lines = [f"pairs: {len(loaded)} ({'each split by disjoint tiles' if manifest['split_mode'] == 'tiles' else 'split by name'}), "
             f"{manifest['input_storage']} -> {manifest['output_storage']}, channels {model.c_in} -> {model.c_out}"]
    per_channel = " of a kernel per channel" if result.sizes[0]["structure"] == "per-channel" else ""
    lines.append(f"kernel size: {result.ksize}x{result.ksize}; RMS residual per size{per_channel} (larger of train and held-out): "
                 + ", ".join(f"{s['ksize']}: {s['residual_rms']:.3g}" for s in result.sizes)
                 + (f" (larger sizes, up to {result.size_window['max_ksize']}, not needed: {result.size_window['searched']}x"
                    f"{result.size_window['searched']} does not beat {result.ksize}x{result.ksize})" if result.size_window else ""))
    if len(result.structures) > 1:
        lines.append("structure: " + ", ".join(f"{s['structure']}{' (chosen)' if s['chosen'] else ''} {s['residual_rms']:.3g}"
                                               for s in result.structures))
    if len(ladder["ladder"]) > 1:
        lines.append("ladder (held-out residual in noise floors):")
        width = max(len(row["model"]) for row in ladder["ladder"])
        for row in ladder["ladder"]:
            lines.append(f"  {row['model']:<{width}} {row['residual_in_floors']:>8.3g}  {row['psnr_db']:6.1f} dB  {row['description']}"
                         + ("  (chosen)" if row["model"] == ladder["model"] else ""))
    lines.extend(ladder["ladder_notes"])
    lines.append(f"model: {model.describe()}")
    kernel = model.tensors().get("kernel")
    if kernel is not None and kernel.ndim == 4:  # (C_out, C_in, K, K) and a bias per output channel
        with np.printoptions(precision=5, suppress=True, linewidth=160):
            for o in range(model.c_out):
                for i in range(model.c_in):
                    if not np.any(kernel[o, i]):
                        continue  # a channel that does not reach this output
                    label = f"kernel out {o} <- in {i}" if model.c_in * model.c_out > 1 else "kernel (correlation orientation)"
                    lines.append(f"{label}:\n{kernel[o, i]}")
        lines.append("bias: " + ", ".join(f"{b:.5g}" for b in summary["bias"]))
    border = result.border
    lines.append(f"border: {border['rule']}" + ("; edge-ring RMS " + ", ".join(f"{r} {v:.3g}" for r, v in border["rms"].items())
                                                 if border["rms"] else f" ({border.get('note', '')})"))
    lines.append(verdict({**summary}, identification))
    for label, note in (("compression", compression_note(summary)), ("precision", precision_note(summary))):
        if note:
            lines.append(f"{label}: {note}")
    held = "test"
    scores = [metrics for _, metrics, _ in heldout_scores(model, border["rule"], pairs, held, whole=False)]
    if scores:
        lines.append(f"held-out {held} pixels: PSNR {np.mean([s['psnr'] for s in scores]):.2f} dB, "
                     f"{100 * np.mean([s['identical_fraction'] for s in scores]):.2f}% identical to the tool's file")
    if info["reproduce"]:
        library = next(iter(info["reproduce"]))  # OpenCV's call where it has one
        others = [LIBRARY_WORDS.get(k, k) for k in info["reproduce"] if k != library]
        others = " and ".join(others) if len(others) < 3 else ", ".join(others[:-1]) + " and " + others[-1]
        lines.append(f"the same in {LIBRARY_WORDS.get(library, library)}, src the input as read"
                     + (f" ({others}: \"reproduce\" in {Path(model_path).with_suffix('.json')})" if others else "")
                     + ":\n" + textwrap.indent(info["reproduce"][library].rstrip(), "    "))
    lines.append(f"model written to {model_path}, details in {Path(model_path).with_suffix('.json')} "
                 f"(apply it: img2kernel apply {model_path} IN OUT)")
    return "\n".join(lines)


def add_parser(sub) -> None:
    fit = sub.add_parser(
        "fit",
        help="find the kernel behind a tool's output from one or more before/after pairs (no config needed)",
        description="Fit the model that maps each INPUT to its OUTPUT (the same fit as a `kind: pairs` "
                    "filter): the affine kernel's size, border rule, channels and linear verdict, and the ladder's "
                    "model (a median, a curve, a magnitude, ...) when the tool is not linear.",
    )
    fit.add_argument("files", nargs="+", metavar="INPUT OUTPUT", help="pairs of files: input, output, input, output, ...")
    fit.add_argument("-o", "--output", default="kernel.safetensors", help="model file to write (default kernel.safetensors)")
    fit.add_argument("--ksize", type=int, default=None, help="the kernel size, if known (odd); else found up to --max-ksize")
    fit.add_argument("--max-ksize", type=int, default=15, help="largest odd size the search tries (default 15)")
    fit.add_argument("--channels-in", type=int, choices=[1, 3], default=None, help="fit 1 (gray) or 3 (RGB) input channels")
    fit.add_argument("--channels-out", type=int, choices=[1, 3], default=None, help="fit 1 or 3 output channels")
    fit.add_argument("--holdout", type=float, default=0.3, help="fraction held out, half to choose the size, half to report")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        print(fit_files(args.files, args.output, ksize=args.ksize, max_ksize=args.max_ksize,
                        channels={"input": args.channels_in, "output": args.channels_out}, holdout=args.holdout,
                        seed=args.seed))
    except (OSError, ValueError) as err:
        parser.exit(2, f"img2kernel fit: {err}\n")
    return 0
