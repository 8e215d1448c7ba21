"""Photos with planted problems, not from ../shared: what `clean` and `advise` should put first.

Three kinds of shapes on cluttered backgrounds (143 photos, the triangles short of photos),
with 4 labels swapped (files named swapped_*), 3 photos of another kind planted (noise, a
blank frame, a 'screenshot' of text: planted_*) and 2 resized copies (copy_of_*). Issue 23's
closing note gives what `clean` and `advise` listed:

    python benchmarks/planted_problems.py shapes
    clearclass train shapes --model efficientnet_lite0 --item-resize 96 --epochs 3 \
        --batch-size 16 --out runs/shapes
    clearclass clean runs/shapes && clearclass advise runs/shapes
"""
import random
import shutil
import sys
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

root = Path(sys.argv[1])
shutil.rmtree(root, ignore_errors=True)
counts = {"circle": 60, "square": 60, "triangle": 18}


def photo(kind: str, seed: int) -> Image.Image:
    r = random.Random(seed)
    img = Image.new("RGB", (160, 120), tuple(r.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(12):  # clutter
        x, y = r.randrange(160), r.randrange(120)
        d.line((x, y, x + r.randrange(-30, 30), y + r.randrange(-30, 30)),
               fill=tuple(r.randrange(256) for _ in range(3)), width=2)
    colour = tuple(r.randrange(256) for _ in range(3))
    cx, cy, s = r.randrange(45, 115), r.randrange(40, 80), r.randrange(22, 36)
    if kind == "circle":
        d.ellipse((cx - s, cy - s, cx + s, cy + s), fill=colour)
    elif kind == "square":
        d.rectangle((cx - s, cy - s, cx + s, cy + s), fill=colour)
    else:
        d.polygon([(cx, cy - s), (cx - s, cy + s), (cx + s, cy + s)], fill=colour)
    return img


swapped = []
for kind, n in counts.items():
    for i in range(n):
        path = root / kind / f"{kind}_{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(kind, zlib.crc32(f"{kind}{i}".encode())).save(path, quality=90)
# 4 labels swapped: a circle filed as square, etc.
for kind, other, i in (("circle", "square", 3), ("square", "circle", 5),
                       ("circle", "triangle", 8), ("square", "triangle", 11)):
    src = root / kind / f"{kind}_{i:03d}.jpg"
    dst = root / other / f"swapped_{kind}_{i:03d}.jpg"
    src.rename(dst)
    swapped.append(dst)
# 3 photos of another kind
noise = Image.effect_noise((160, 120), 90).convert("RGB")
noise.save(root / "circle" / "planted_noise.jpg")
Image.new("RGB", (160, 120), (250, 250, 250)).save(root / "square" / "planted_blank.jpg")
shot = Image.new("RGB", (160, 120), "white")
d = ImageDraw.Draw(shot)
for k in range(8):
    d.text((4, 4 + 14 * k), "Error: file not found; retry later", fill="black",
           font=ImageFont.load_default())
shot.save(root / "triangle" / "planted_screenshot.jpg")
# 2 resized copies in the same class
for kind, i in (("circle", 20), ("square", 30)):
    Image.open(root / kind / f"{kind}_{i:03d}.jpg").resize((120, 90)).save(
        root / kind / f"copy_of_{kind}_{i:03d}.jpg", quality=70)
print("swapped:", [p.name for p in swapped])
