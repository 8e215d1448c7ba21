"""A multi-label set made from imagewoof-160: collages of 1-4 dog photos on a 2x2 grid.

Issue 25's benchmark data. Each collage is a 2x2 grid of CELL x CELL cells; 1 to 4 of them
hold a photo (centre-cropped to a square) of a different breed each, the others are blank
(grey). Its labels are the breeds present. Training collages take their photos from
imagewoof-160's train/ folder, validation collages from val/, so no photo is in both; the
number of photos per collage is drawn uniformly from 1-4 and the breeds without
replacement, so every breed is as frequent as any other and any two breeds occur together.

Writes OUT/images/{train,valid}/NNNNN.jpg and OUT/labels.csv (path,label,is_valid; the
labels of a collage separated by ';', fastai's label_delim), deterministic for a seed:

    python benchmarks/multilabel_collages.py OUT --train 3000 --valid 1000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from PIL import Image, ImageOps

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BREEDS = {"n02086240": "Shih-Tzu", "n02087394": "Rhodesian_ridgeback", "n02088364": "beagle",
          "n02089973": "English_foxhound", "n02093754": "Border_terrier",
          "n02096294": "Australian_terrier", "n02099601": "golden_retriever",
          "n02105641": "Old_English_sheepdog", "n02111889": "Samoyed", "n02115641": "dingo"}
CELL = 160  # pixels: the side of a cell, imagewoof-160's short side
BLANK = (128, 128, 128)


def photos_by_breed(folder: Path) -> dict[str, list[Path]]:
    return {wnid: sorted((folder / wnid).glob("*.JPEG")) for wnid in BREEDS}


def collage(chosen: list[tuple[str, Path]], rng: random.Random) -> Image.Image:
    """The photos in `chosen` in random cells of a 2x2 grid, the other cells blank."""
    image = Image.new("RGB", (2 * CELL, 2 * CELL), BLANK)
    cells = rng.sample(range(4), len(chosen))
    for cell, (_, path) in zip(cells, chosen):
        with Image.open(path) as photo:
            square = ImageOps.fit(photo.convert("RGB"), (CELL, CELL), Image.Resampling.BILINEAR)
        image.paste(square, ((cell % 2) * CELL, (cell // 2) * CELL))
    return image


def make(split: str, count: int, source: dict[str, list[Path]], out: Path,
         rng: random.Random) -> list[tuple[str, str, bool]]:
    rows = []
    folder = out / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        breeds = rng.sample(sorted(BREEDS), rng.randint(1, 4))
        chosen = [(wnid, rng.choice(source[wnid])) for wnid in breeds]
        path = folder / f"{n:05d}.jpg"
        collage(chosen, rng).save(path, quality=90)
        labels = ";".join(sorted(BREEDS[wnid] for wnid in breeds))
        rows.append((path.relative_to(out).as_posix(), labels, split == "valid"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=SHARED / "imagewoof-160")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--valid", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = make("train", args.train, photos_by_breed(args.data / "train"), args.out, rng)
    rows += make("valid", args.valid, photos_by_breed(args.data / "val"), args.out, rng)
    with open(args.out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "label", "is_valid"))
        writer.writerows(rows)
    print(f"{len(rows)} collages in {args.out} ({args.train} training, {args.valid} validation)")


if __name__ == "__main__":
    main()
