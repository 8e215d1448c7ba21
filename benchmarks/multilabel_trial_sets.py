"""Two multi-label sets unlike the collages, for trying multi-label as a new user would.

shapes/: 600 generated scenes of 0-3 shapes (circle, square, triangle, star) on tinted
    noise; labels: the shapes drawn, ';'-separated, an empty cell for none. Sizes from
    150x150 to 320x240, and JPEG, PNG with alpha, greyscale and EXIF-rotated JPEG files,
    named with spaces and non-ASCII letters. No photo from ../shared.
scenes/: 400 scenes of 1-3 imagewoof-2k dogs of 4 breeds pasted at random sizes onto crops
    of scikit-learn's two sample photos (china.jpg, flower.jpg); labels space-separated as
    fastai's label_delim=' ' writes them, with an is_valid column.

    python benchmarks/multilabel_trial_sets.py /tmp/trial   # the sets of issue 25's trial
    clearclass train /tmp/trial/shapes/labels.csv --model efficientnet_lite0 \\
        --item-resize 128 --threshold auto --epochs 2 --out runs/shapes
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGEWOOF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagewoof-2k"
SHAPES = ("circle", "square", "triangle", "star")
BREEDS = {"n02088364-beagle": "beagle", "n02111889-Samoyed": "samoyed",
          "n02099601-golden_retriever": "golden_retriever", "n02086240-Shih-Tzu": "shih_tzu"}


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, x: int, y: int, r: int,
               colour: tuple[int, int, int]) -> None:
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    elif kind == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    else:
        points = [(x + (r if i % 2 == 0 else r * 0.45) * np.cos(np.pi / 2 + i * np.pi / 5),
                   y - (r if i % 2 == 0 else r * 0.45) * np.sin(np.pi / 2 + i * np.pi / 5))
                  for i in range(10)]
        draw.polygon(points, fill=colour)


def shapes(out: Path, rng: random.Random, count: int = 600) -> None:
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        w, h = rng.choice([(200, 200), (260, 180), (180, 240), (320, 240), (150, 150)])
        noise = np.array(Image.effect_noise((w, h), rng.uniform(10, 60)).convert("RGB"))
        tint = np.array([rng.randint(60, 200) for _ in range(3)])
        img = Image.fromarray(np.clip(noise * 0.5 + tint * 0.5, 0, 255).astype("uint8"))
        draw = ImageDraw.Draw(img)
        kinds = rng.sample(SHAPES, rng.choices([0, 1, 2, 3], weights=[1, 3, 3, 2])[0])
        for kind in kinds:
            r = rng.randint(min(w, h) // 10, min(w, h) // 5)
            draw_shape(draw, kind, rng.randint(r, w - r), rng.randint(r, h - r), r,
                       tuple(rng.randint(0, 255) for _ in range(3)))
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
        kind = rng.choice(["jpg", "jpg", "png", "grey", "rotated"])
        name = rng.choice(["scène", "shape photo", "img"]) + f" {i:03d}"
        path = f"imgs/{name}.{'png' if kind == 'png' else 'jpg'}"
        if kind == "png":
            img.convert("RGBA").save(out / path)
        elif kind == "grey":
            img.convert("L").save(out / path, quality=90)
        elif kind == "rotated":  # stored on its side, with the EXIF orientation that rights it
            exif = Image.Exif()
            exif[0x0112] = 6
            img.transpose(Image.Transpose.ROTATE_90).save(out / path, exif=exif, quality=90)
        else:
            img.save(out / path, quality=90)
        rows.append([path, ";".join(kinds)])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])


def scenes(out: Path, rng: random.Random, count: int = 400) -> None:
    from sklearn.datasets import load_sample_images

    backgrounds = [Image.fromarray(a) for a in load_sample_images().images]
    pools = {b: sorted((IMAGEWOOF / b).iterdir()) for b in BREEDS}
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    w, h = 256, 192
    for i in range(count):
        background = rng.choice(backgrounds)
        x0, y0 = rng.randint(0, background.width - 2 * w), rng.randint(0, background.height - 2 * h)
        img = background.crop((x0, y0, x0 + 2 * w, y0 + 2 * h)).resize((w, h))
        breeds = rng.sample(sorted(BREEDS), rng.choices([1, 2, 3], weights=[3, 3, 1])[0])
        slots = rng.sample([(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)], len(breeds))
        for breed, (sx, sy) in zip(breeds, slots):
            dog = Image.open(rng.choice(pools[breed])).convert("RGB")
            side = rng.randint(70, 96)
            dog.thumbnail((min(side, w // 2), min(side, h // 2)))
            img.paste(dog, (sx + rng.randint(0, w // 2 - dog.width),
                            sy + rng.randint(0, h // 2 - dog.height)))
        path = f"imgs/scene_{i:03d}.jpg"
        img.save(out / path, quality=88)
        rows.append([path, " ".join(sorted(BREEDS[b] for b in breeds)),
                     "True" if i % 5 == 0 else "False"])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "is_valid"], *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shapes(args.out / "shapes", rng)
    scenes(args.out / "scenes", rng)
    print(f"Wrote {args.out / 'shapes' / 'labels.csv'} and {args.out / 'scenes' / 'labels.csv'}")


if __name__ == "__main__":
    main()
