"""Make before/after pairs with a tool img2kernel did not write: Pillow's EMBOSS filter.

    python examples/make_pairs.py [FOLDER] [--jpeg QUALITY]

writes FOLDER/before/*.png (five of scikit-image's colour photos) and FOLDER/after/*.png
(the same photos through PIL.ImageFilter.EMBOSS, saved as 8-bit PNG), FOLDER defaulting
to `pairs`. With ``--jpeg QUALITY`` the tool's outputs are saved as Pillow JPEGs of that
quality (FOLDER/after/*.jpg, 4:2:0 chroma, Pillow's default), as most people's files are.
README, "Your own pairs", fits them.
"""

import argparse
from pathlib import Path

import skimage.data
from PIL import Image, ImageFilter

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="pairs")
    parser.add_argument("--jpeg", type=int, metavar="QUALITY", help="save the outputs as JPEG of this quality")
    args = parser.parse_args()
    root = Path(args.folder)
    for folder in ("before", "after"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)())
        photo.save(root / "before" / f"{name}.png")
        made = photo.filter(ImageFilter.EMBOSS)
        if args.jpeg:
            made.save(root / "after" / f"{name}.jpg", quality=args.jpeg)
        else:
            made.save(root / "after" / f"{name}.png")
    print(f"{len(PHOTOS)} pairs in {root}/before and {root}/after")
