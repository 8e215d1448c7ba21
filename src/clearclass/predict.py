"""Prediction with a trained model bundle: `clearclass.load(path).predict(image)`.

Photos go through the same decoding and resizing as validation photos in training
(`data.decode.load_item`), then the normalisation stored in the bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clearclass.data.augment import normalize
from clearclass.data.decode import UnreadableImage, crop_or_pad, resize_to_fit, to_rgb
from clearclass.data.decode import load_item as _load_item
from clearclass.data.sources import is_image_file
from clearclass.errors import DataError
from clearclass.export import ModelInfo, bundle_folder, load_bundle

ImageInput = str | Path | Image.Image | np.ndarray


@dataclass
class Prediction:
    """The most likely class of one photo, and the `top_k` most likely with probabilities."""

    image: str
    label: str  # display name
    class_id: str
    probability: float
    top_k: list[dict] = field(default_factory=list)  # [{"label", "class_id", "probability"}]

    def to_dict(self) -> dict:
        return {"image": self.image, "label": self.label, "class_id": self.class_id,
                "probability": self.probability, "top_k": self.top_k}


class Classifier:
    """A trained model ready to predict, loaded from a bundle folder."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo, path: Path | None = None,
                 device: str | torch.device = "cpu"):
        self.info, self.path = info, path
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()

    @property
    def classes(self) -> list[str]:
        """Display names, in the order of the model's outputs."""
        return list(self.info.class_names)

    def predict(self, image: ImageInput, top_k: int = 5) -> Prediction:
        """The most likely class of one photo (a path, a PIL image or an HxWx3 uint8 array)."""
        return self.predict_many([image], top_k=top_k)[0]

    def predict_many(self, images: Sequence[ImageInput], top_k: int = 5,
                     batch_size: int = 32) -> list[Prediction]:
        """Predictions for several photos, computed in batches."""
        probs = self.predict_proba(images, batch_size=batch_size)
        k = max(1, min(top_k, len(self.info.class_ids)))
        results = []
        for image, p in zip(images, probs):
            order = np.argsort(-p)[:k]
            top = [{"label": self.info.class_names[i], "class_id": self.info.class_ids[i],
                    "probability": float(p[i])} for i in order]
            best = order[0]
            results.append(Prediction(_describe(image), self.info.class_names[best],
                                      self.info.class_ids[best], float(p[best]), top))
        return results

    def predict_proba(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per photo (N x classes)."""
        rows = []
        for start in range(0, len(images), batch_size):
            pixels = np.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            rows.append(self.proba_of_pixels(pixels))
        return np.concatenate(rows) if rows else np.zeros((0, len(self.info.class_ids)))

    def proba_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for preprocessed uint8 squares (N x size x size x 3)."""
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            logits = self.model(normalize(x, self.info.mean, self.info.std))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """A photo as the model's square uint8 input (size x size x 3)."""
        size, method = self.info.size, self.info.resize_method
        if isinstance(image, (str, Path)):
            if not Path(image).is_file():
                raise DataError(f"{image} does not exist or is not a file.")
            try:
                return _load_item(image, size, method)
            except UnreadableImage as e:
                raise DataError(f"Cannot read {image} as an image ({e}).") from None
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DataError("An array image must be height x width x 3, dtype uint8 (RGB).")
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            return crop_or_pad(resize_to_fit(to_rgb(image), size, method), size, method)
        raise DataError(f"Cannot predict on a {type(image).__name__}; give a path, a PIL "
                        "image or a uint8 array.")


def load(path: str | Path, device: str = "cpu") -> Classifier:
    """Load a model bundle (a folder with model.safetensors and model.json, or a run folder).

    Example: `clearclass.load("runs/dogs/model").predict("rex.jpg").label`.
    """
    folder = bundle_folder(path)
    model, info = load_bundle(folder)
    return Classifier(model, info, folder, device=device)


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The photos named on a command line: files as given, folders searched recursively."""
    found = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not files:
                raise DataError(f"No images found in folder {path}.")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist.")
    return found


def _describe(image: ImageInput) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"
