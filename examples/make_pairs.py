"""Make before/after pairs with a tool img2kernel did not write: Pillow's EMBOSS filter.

    python examples/make_pairs.py [FOLDER]

writes FOLDER/before/*.png (five of scikit-image's colour photos) and FOLDER/after/*.png
(the same photos through PIL.ImageFilter.EMBOSS, saved as 8-bit PNG), FOLDER defaulting
to `pairs`. README, "Your own pairs", fits them.
"""

import sys
from pathlib import Path

import skimage.data
from PIL import Image, ImageFilter

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")

if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "pairs")
    for folder in ("before", "after"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)())
        photo.save(root / "before" / f"{name}.png")
        photo.filter(ImageFilter.EMBOSS).save(root / "after" / f"{name}.png")
    print(f"{len(PHOTOS)} pairs in {root}/before and {root}/after")
