"""The calls that reproduce a linear tool in OpenCV, scipy and torch, or a resize in Pillow, OpenCV
and ImageMagick (docs/pairs.md, "Reproducing it").

Each snippet reads the kernel and bias from the model file img2kernel wrote (safetensors:
``kernel`` (C_out, C_in, K, K) in correlation orientation, ``bias`` (C_out,)), takes ``src``,
the input as read (H, W) or (H, W, C), and leaves ``out`` as the tool stored it. Borders use
the library's own rule where it has one (:data:`img2kernel.borders.LIBRARY_NAMES`), else the
input is padded with numpy first; an ``unfiltered`` ring is copied from the input.
"""

from __future__ import annotations

import numpy as np

from img2kernel.borders import LIBRARY_NAMES, PADDED_RULES
from img2kernel.thresholds import STORAGE_RANGE, WIDENED_8BIT_STEP

NUMPY_PAD = {rule: mode for rule, (_, mode) in PADDED_RULES.items()}


def _store(output_storage: str, output: str = "") -> str:
    """The line that stores ``out`` as the tool's file does; ``output``: the model's output step."""
    if output == "uint16_x257":  # 8-bit levels in a 16-bit file
        return f"out = (np.clip(np.rint(out / {WIDENED_8BIT_STEP}), 0, 255) * {WIDENED_8BIT_STEP}).astype(np.uint16)\n"
    if output_storage not in STORAGE_RANGE:
        return f"out = out.astype(np.{output_storage})\n" if output_storage in ("float32", "float64") else ""
    low, high = STORAGE_RANGE[output_storage]
    return f"out = np.clip(np.rint(out), {low:g}, {high:g}).astype(np.{output_storage})\n"


def _unfiltered(halo: int) -> str:
    return (f"h = {halo}  # the tool leaves its edge ring unfiltered\n"
            "ring = np.ones(src.shape[:2], bool); ring[h:-h, h:-h] = False\n"
            "out[ring] = src[ring]\n")


def _load(path: str) -> str:
    return ("from safetensors.numpy import load_file\n"
            f"weights = load_file({path!r})\n"
            "k, b = weights['kernel'], weights['bias']\n")


def opencv(model, border: str, path: str, output_storage: str) -> str:
    """One ``cv2.filter2D`` call when every channel gets the same kernel (OpenCV filters each
    channel of ``src`` alike; for 8-bit ``src`` it rounds and saturates as the tool did), else a
    sum of calls per (output, input) channel in float64."""
    kernel, halo = model.kernel, model.halo
    # An unfiltered ring is copied from the input afterwards: any rule will do under it.
    constant, _, _ = LIBRARY_NAMES.get(border, ("cv2.BORDER_REPLICATE", None, None))
    pad = f"src_padded = np.pad(src, [(h, h), (h, h)] + [(0, 0)] * (src.ndim - 2), mode={NUMPY_PAD.get(border, 'edge')!r})\n"
    same = kernel.shape[0] == kernel.shape[1] and all(
        np.array_equal(kernel[o, i], kernel[0, 0] if o == i else np.zeros_like(kernel[0, 0]))
        for o in range(kernel.shape[0]) for i in range(kernel.shape[1])) and np.all(model.bias == model.bias[0])
    code = "import cv2\nimport numpy as np\n" + _load(path)
    source, crop = "src", ""
    if constant is None:  # wrap: filter2D refuses it, so pad first, filter, crop
        code += f"h = {halo}\n" + pad
        source, crop, constant = "src_padded", "[h:-h, h:-h]" if halo else "", "cv2.BORDER_REPLICATE"
    if same and output_storage == "uint8":
        code += f"out = cv2.filter2D({source}, -1, k[0, 0], delta=float(b[0]), borderType={constant}){crop}\n"
    else:
        code += (f"x = {source}.astype(np.float64).reshape({source}.shape[0], {source}.shape[1], -1)\n"
                 f"out = np.stack([sum(cv2.filter2D(x[..., i], -1, k[o, i], borderType={constant}) for i in range(k.shape[1]))"
                 f"{crop} + b[o] for o in range(k.shape[0])], axis=-1)\n"
                 "out = out[..., 0] if k.shape[0] == 1 else out\n") + _store(output_storage, model.output)
    return code


def scipy(model, border: str, path: str, output_storage: str) -> str:
    """``scipy.ndimage.correlate`` per (output, input) channel, in float64."""
    _, mode, _ = LIBRARY_NAMES.get(border, (None, "nearest", None))
    code = ("import numpy as np\nfrom scipy import ndimage\n" + _load(path)
            + "x = src.astype(np.float64).reshape(src.shape[0], src.shape[1], -1)\n"
            f"out = np.stack([sum(ndimage.correlate(x[..., i], k[o, i], mode={mode!r}) for i in range(k.shape[1])) + b[o]"
            " for o in range(k.shape[0])], axis=-1)\n"
            "out = out[..., 0] if k.shape[0] == 1 else out\n") + _store(output_storage, model.output)
    return code


def torch(model, border: str, path: str, output_storage: str) -> str:
    """``torch.nn.functional.conv2d`` (a cross-correlation, weights (C_out, C_in, K, K) as stored)
    after ``F.pad`` with the rule's mode, or numpy's padding where torch has none."""
    _, _, mode = LIBRARY_NAMES.get(border, (None, None, None))
    halo = model.halo
    code = ("import numpy as np\nimport torch\nimport torch.nn.functional as F\n" + _load(path)
            + "x = torch.from_numpy(src.astype(np.float64).reshape(src.shape[0], src.shape[1], -1)).permute(2, 0, 1)[None]\n")
    if mode is None and border == "unfiltered":
        mode = "replicate"
    if mode is None:
        code += (f"x = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0), ({halo}, {halo}), ({halo}, {halo})], "
                 f"mode={NUMPY_PAD.get(border, 'edge')!r}))\n")
    else:
        code += f"x = F.pad(x, ({halo}, {halo}, {halo}, {halo}), mode={mode!r})\n"
    code += ("out = F.conv2d(x, torch.from_numpy(k), torch.from_numpy(b))[0].permute(1, 2, 0).numpy()\n"
             "out = out[..., 0] if k.shape[0] == 1 else out\n") + _store(output_storage, model.output)
    return code


LIBRARIES = {"opencv": opencv, "scipy": scipy, "torch": torch}


# The libraries' resizes, by the resampler they apply: (name in RESAMPLERS, whether it widens the
# support by the factor) -> the library's constant. Pillow and ImageMagick widen it when reducing,
# and not when enlarging (the factor is then below 1); OpenCV's INTER_LINEAR and INTER_CUBIC never
# do, and its INTER_AREA is a widened box (at integer factors).
PILLOW_FILTERS = {"box (area average)": "Image.BOX", "triangle (bilinear)": "Image.BILINEAR",
                  "Keys cubic a = -0.5 (Catmull-Rom: Pillow's and ImageMagick's bicubic)": "Image.BICUBIC",
                  "Lanczos 3": "Image.LANCZOS"}
OPENCV_INTERPOLATIONS = {("triangle (bilinear)", False): "cv2.INTER_LINEAR",
                         ("Keys cubic a = -0.75 (OpenCV's bicubic)", False): "cv2.INTER_CUBIC",
                         ("box (area average)", True): "cv2.INTER_AREA"}
IMAGEMAGICK_FILTERS = {"box (area average)": "Box", "triangle (bilinear)": "Triangle",
                       "Keys cubic a = -0.5 (Catmull-Rom: Pillow's and ImageMagick's bicubic)": "Catrom",
                       "Mitchell-Netravali B = C = 1/3": "Mitchell", "Lanczos 2": "Lanczos2", "Lanczos 3": "Lanczos",
                       "Gaussian sigma 1/2 (ImageMagick's)": "Gaussian"}


def resize_snippets(model, placement=None) -> dict[str, str]:
    """{library: code} that makes a named resize (:meth:`img2kernel.models.resample.ResampleModel.named`)
    with a library's own call: both axes the same function, centred on the pixel-centre convention;
    {} where no library's resize is that. The ImageMagick entry is a shell command on files (left
    out for a turned output); the others end with the numpy line of ``placement``'s turn."""
    from img2kernel.evaluate.resamplers import RESAMPLERS

    names = list(RESAMPLERS)
    (row, row_centre, row_widening), (column, column_centre, column_widening) = model.functions
    if row != column or model.convention != "centre" or max(abs(row_centre), abs(column_centre)) > 0.01:
        return {}
    name, widened = names[row], max(row_widening, column_widening) > 1
    reducing = min(model.factor) < 1
    size = "(round(src.shape[1] * {1!r}), round(src.shape[0] * {0!r}))".format(*model.factor)
    found = {}
    if (name, widened) in OPENCV_INTERPOLATIONS and (reducing or not widened):
        found["opencv"] = f"import cv2\nout = cv2.resize(src, {size}, interpolation={OPENCV_INTERPOLATIONS[name, widened]})\n"
    if name in PILLOW_FILTERS and widened == reducing and model.normalised:
        found["pillow"] = ("import numpy as np\nfrom PIL import Image\n"
                           f"out = np.asarray(Image.fromarray(src).resize({size}, {PILLOW_FILTERS[name]}))\n")
    if name in IMAGEMAGICK_FILTERS and widened == reducing and model.normalised:
        percent = "x".join(dict.fromkeys(f"{100 * f:.6g}%" for f in (model.factor[1], model.factor[0])))
        found["imagemagick"] = f"convert in.png -filter {IMAGEMAGICK_FILTERS[name]} -resize {percent} out.png\n"
    turn = placement.numpy_code() if placement is not None else ""
    if turn:
        found = {library: code + ("import numpy as np\n" if "numpy" not in code else "") + turn
                 for library, code in found.items() if library != "imagemagick"}
    return found


def snippets(model, border: str, path: str, output_storage: str, placement=None) -> dict[str, str]:
    """{library: code} for an affine kernel model, or the library calls of a named resize
    (:func:`resize_snippets`); anything else: {}; ``placement``
    (:class:`img2kernel.sources.geometry.Placement`): the crop, resize or turn that follows."""
    if getattr(model, "functions", None):
        return resize_snippets(model, placement)
    if getattr(model, "kernel", None) is None or getattr(model, "bias", None) is None:
        return {}
    ring = _unfiltered(model.halo) if border == "unfiltered" and model.halo else ""
    ring += placement.numpy_code() if placement is not None else ""
    return {name: write(model, border, str(path), output_storage) + ring for name, write in LIBRARIES.items()}
