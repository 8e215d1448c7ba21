"""Prediction with a trained model bundle: `clearclass.load(path).predict(image)`.

Photos go through the same decoding and resizing as validation photos in training
(`data.decode.load_item`), then the normalisation stored in the bundle. The network runs in
ONNX Runtime when the bundle has a `model.onnx` (written at the end of training, or by
`clearclass export`) and the device is the CPU: that path imports neither PyTorch nor timm,
and is the faster one on a CPU. Otherwise it runs in PyTorch.

In a notebook, a `Prediction` that ends a cell shows as the photo with its top-k table.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clearclass.bundle import ONNX_FILE, ModelInfo, bundle_folder, load_bundle, read_info
from clearclass.data.decode import UnreadableImage, crop_or_pad, open_rgb, resize_to_fit, to_rgb
from clearclass.data.decode import load_item as _load_item
from clearclass.data.sources import is_image_file
from clearclass.device import device_name
from clearclass.errors import ClearclassError, DataError
from clearclass.parallel import available_cores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ImageInput = str | Path | Image.Image | np.ndarray
BACKENDS = ("auto", "onnx", "torch")
SHOWN_SIDE = 320  # pixels: the longer side of a photo shown with its prediction


@dataclass
class Prediction:
    """The most likely class of one photo, and the `top_k` most likely with probabilities.

    Example:
        prediction = clearclass.load("runs/dogs/model").predict("new.jpg")
        print(prediction.label, f"{prediction.probability:.0%}", prediction.top_k[:2])
    """

    image: str
    label: str  # display name
    class_id: str
    probability: float
    top_k: list[dict] = field(default_factory=list)  # [{"label", "class_id", "probability"}]
    source: Any = field(default=None, repr=False, compare=False)  # the photo, to show it

    def to_dict(self) -> dict:
        return {"image": self.image, "label": self.label, "class_id": self.class_id,
                "probability": self.probability, "top_k": self.top_k}

    def shown_photo(self) -> np.ndarray:
        """The photo, at most SHOWN_SIDE pixels on its longer side (uint8, RGB)."""
        source = self.source if self.source is not None else self.image
        if isinstance(source, np.ndarray):
            source = Image.fromarray(source)
        img = to_rgb(source) if isinstance(source, Image.Image) else open_rgb(source)
        img = img.copy()
        img.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
        return np.asarray(img)

    def plot(self) -> Figure:
        """The photo beside bars of its most likely classes."""
        from clearclass import figures

        name = Path(self.image).name if self.source is None or isinstance(
            self.source, (str, Path)) else self.image
        return figures.prediction(self.shown_photo(), self.top_k, title=name)

    def _repr_png_(self) -> bytes:
        from clearclass import figures

        return figures.png_bytes(self.plot())

    def _repr_html_(self) -> str:
        buffer = io.BytesIO()
        Image.fromarray(self.shown_photo()).save(buffer, format="JPEG", quality=85)
        photo = base64.b64encode(buffer.getvalue()).decode("ascii")
        rows = "".join(
            f"<tr><td style='text-align:left'>{html.escape(t['label'])}</td>"
            f"<td style='text-align:right'>{t['probability']:.1%}</td></tr>" for t in self.top_k)
        return (f"<div style='display:flex;gap:1em;align-items:flex-start'>"
                f"<img alt='{html.escape(self.image)}' src='data:image/jpeg;base64,{photo}'>"
                f"<div><p><b>{html.escape(self.label)}</b> ({self.probability:.1%})</p>"
                f"<table><tr><th>class</th><th>probability</th></tr>{rows}</table>"
                f"<p><code>{html.escape(self.image)}</code></p></div></div>")


class Classifier:
    """A trained model ready to predict, loaded from a bundle folder."""

    def __init__(self, info: ModelInfo, network: _Network, path: Path | None = None):
        self.info, self.network, self.path = info, network, path

    def __repr__(self) -> str:
        return (f"Classifier({self.info.architecture}, {len(self.info.class_ids)} classes, "
                f"{self.info.size} px, {self.backend}, from {str(self.path)!r})")

    @property
    def classes(self) -> list[str]:
        """Display names, in the order of the model's outputs."""
        return list(self.info.class_names)

    @property
    def backend(self) -> str:
        """"onnx" or "torch": what runs the network."""
        return self.network.name

    def predict(self, image: ImageInput, top_k: int = 5) -> Prediction:
        """The most likely class of one photo (a path, a PIL image or an HxWx3 uint8 array)."""
        return self.predict_many([image], top_k=top_k)[0]

    def predict_many(self, images: Sequence[ImageInput], top_k: int = 5,
                     batch_size: int = 32) -> list[Prediction]:
        """Predictions for several photos, computed in batches."""
        probabilities = self.predict_proba(images, batch_size=batch_size)
        k = max(1, min(top_k, len(self.info.class_ids)))
        results = []
        for image, p in zip(images, probabilities):
            order = np.argsort(-p)[:k]
            top = [{"label": self.info.class_names[i], "class_id": self.info.class_ids[i],
                    "probability": float(p[i])} for i in order]
            best = order[0]
            results.append(Prediction(_describe(image), self.info.class_names[best],
                                      self.info.class_ids[best], float(p[best]), top,
                                      source=image))
        return results

    def predict_proba(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per photo (N x classes)."""
        rows = []
        for start in range(0, len(images), batch_size):
            pixels = np.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            rows.append(self.predict_proba_pixels(pixels))
        return np.concatenate(rows) if rows else np.zeros((0, len(self.info.class_ids)))

    def predict_proba_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for preprocessed uint8 squares (N x size x size x 3)."""
        logits = self.network.logits(pixels)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

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


class _Network:
    """Runs the network on preprocessed uint8 squares; returns float32 logits."""

    name = ""

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _OnnxNetwork(_Network):
    name = "onnx"

    def __init__(self, onnx_path: Path, info: ModelInfo, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        # (x / 255 - mean) / std as one multiply-add per channel.
        std = np.asarray(info.std, dtype=np.float32)
        self.scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
        self.shift = (-np.asarray(info.mean, dtype=np.float32) / std).reshape(1, 3, 1, 1)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.transpose(0, 3, 1, 2).astype(np.float32) * self.scale + self.shift
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]


class _TorchNetwork(_Network):
    name = "torch"

    def __init__(self, folder: Path, info: ModelInfo, device: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        model, _ = load_bundle(folder)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.info = info

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        from clearclass.data.augment import normalize

        torch = self.torch
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            out = self.model(normalize(x, self.info.mean, self.info.std))
        return out.float().cpu().numpy()


def load(path: str | Path, device: str = "auto", backend: str = "auto") -> Classifier:
    """Load a model bundle (a folder with model.safetensors and model.json, or a run folder).

    `device`: auto (CUDA, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps.
    `backend`: "onnx" (ONNX Runtime, CPU), "torch", or "auto": ONNX Runtime when the bundle
    has model.onnx and the device is the CPU.

    Example:
        classifier = clearclass.load("runs/dogs/model")
        print(classifier.predict("new.jpg").label, classifier.classes[:3])
    """
    if backend not in BACKENDS:
        raise ClearclassError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    folder = bundle_folder(path)
    info = read_info(folder)
    device = device_name(device)
    onnx_path = folder / ONNX_FILE
    use_onnx = backend == "onnx" or (backend == "auto" and device == "cpu"
                                     and onnx_path.is_file() and _has_onnxruntime())
    if use_onnx:
        if not onnx_path.is_file():
            raise ClearclassError(f"{folder} has no {ONNX_FILE}; run `clearclass export "
                                  f"{folder}` first, or use the torch backend.")
        if device != "cpu":
            raise ClearclassError("The onnx backend runs on the CPU; use --device cpu.")
        network: _Network = _OnnxNetwork(onnx_path, info)
    else:
        network = _TorchNetwork(folder, info, device)
    return Classifier(info, network, folder)


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


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _describe(image: ImageInput) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"
