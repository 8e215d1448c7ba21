"""Prediction with a trained model bundle: `clearclass.load(path).predict(image)`.

Photos go through the same decoding and resizing as validation photos in training
(`data.decode.load_item`), then the normalisation stored in the bundle. The network runs in
ONNX Runtime when the bundle has a `model.onnx` (written at the end of training, or by
`clearclass export`) and the device is the CPU: that path imports neither PyTorch nor timm,
and is the faster one on a CPU. Otherwise it runs in PyTorch. `model.onnx` is used only
while it matches the SHA-256 that model.json records for it (`clearclass export` writes
both); a damaged one is reported with a warning and PyTorch runs the weights instead.

`predict_many(..., unreadable="report")` goes on past photos it cannot read, giving each a
`Prediction` whose `error` says why, as `clearclass predict` does.

In a notebook, a `Prediction` that ends a cell shows as the photo with its top-k table (a
multi-label one: with the predicted set, and every label's probability and threshold).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clearclass import onnx_runtime, progress
from clearclass.bundle import (
    INFO_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    ModelInfo,
    bundle_folder,
    load_bundle,
    read_info,
    sha256,
)
from clearclass.data.decode import UnreadableImage, crop_or_pad, open_rgb, resize_to_fit, to_rgb
from clearclass.data.decode import load_item as _load_item
from clearclass.data.sources import is_image_file, label_text
from clearclass.device import device_name
from clearclass.errors import (
    ClearclassError,
    DataError,
    ModelFileError,
    SettingError,
    check_count,
    check_path,
    described,
)
from clearclass.parallel import available_cores
from clearclass.task import MultiLabel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ImageInput = str | Path | Image.Image | np.ndarray
BACKENDS = ("auto", "onnx", "torch")
UNREADABLE = ("raise", "report")  # what predict_many does with a photo it cannot read
SHOWN_SIDE = 320  # pixels: the longer side of a photo shown with its prediction


@dataclass
class Prediction:
    """The most likely class of one photo, and the `top_k` most likely with probabilities.

    For a photo that could not be read (`predict_many(..., unreadable="report")`), `error`
    says why; class_name and class_id are then empty, probability is nan and top_k is [].

    A multi-label model's prediction is a set: `labels` lists every label whose probability
    reaches its threshold (most likely first, maybe none), `probabilities` every label's;
    `class_name` is then the set's display names as one line ("beagle; dingo", "(none)"),
    `class_id` the same of their ids, and `probability` the most likely label's.

    Example:
        prediction = clearclass.load("runs/dogs/model").predict("new.jpg")
        print(prediction.class_name, f"{prediction.probability:.0%}", prediction.top_k[:2])
    """

    image: str
    class_name: str  # the display name: "Shih-Tzu"
    class_id: str  # the folder name (or labels CSV cell): "n02086240-Shih-Tzu"
    probability: float
    top_k: list[dict] = field(default_factory=list)  # [{"label", "class_id", "probability"}]
    source: Any = field(default=None, repr=False, compare=False)  # the photo, to show it
    error: str | None = None  # why the photo could not be read; None when it was predicted
    # Multi-label only: the predicted set and every label, [{"label", "class_id",
    # "probability", "threshold"}], most likely first; None for a single-label model.
    labels: list[dict] | None = None
    probabilities: list[dict] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The display name; kept for code written before `class_name`."""
        return self.class_name

    def to_dict(self) -> dict:
        """What `clearclass predict --json` prints and the HTTP API answers: the display name
        is its "label", there and in `top_k` (an output format, unchanged)."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        if self.labels is not None:  # multi-label: the set, then every label's probability
            return {"image": self.image, "labels": [t["label"] for t in self.labels],
                    "class_ids": [t["class_id"] for t in self.labels],
                    "predicted": self.labels, "probabilities": self.probabilities}
        return {"image": self.image, "label": self.class_name, "class_id": self.class_id,
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
        """The photo beside bars of its most likely classes (a multi-label prediction: of
        every label, each with its threshold marked, and the predicted set)."""
        from clearclass import figures

        if self.error is not None:
            raise DataError(f"{self.image}: {self.error}")

        name = Path(self.image).name if self.source is None or isinstance(
            self.source, (str, Path)) else self.image
        if self.probabilities is not None:
            return figures.multi_label_prediction(self.shown_photo(), self.probabilities,
                                                  title=name)
        return figures.prediction(self.shown_photo(), self.top_k, title=name)

    def _repr_png_(self) -> bytes | None:
        from clearclass import figures

        if self.error is not None:
            return None  # the HTML says why there is no photo
        return figures.png_bytes(self.plot())

    def _repr_html_(self) -> str:
        from clearclass import pages

        photo = "" if self.error is not None else pages.jpeg_uri(
            Image.fromarray(self.shown_photo()), quality=85)
        return pages.render("prediction.html", p=self, photo=photo)


class Classifier:
    """A trained model ready to predict, loaded from a bundle folder."""

    def __init__(self, info: ModelInfo, network: _Network, path: Path | None = None,
                 threshold: float | None = None):
        self.info, self.network, self.path = info, network, path
        # How outputs become a decision: softmax and the most likely class, or (multi-label)
        # sigmoids and every label over its threshold: model.json's, or `threshold` for all.
        self.task = info.decision()
        if threshold is not None:
            threshold = check_threshold(threshold)
            if info.task != "multi":
                raise SettingError("threshold", f"is for multi-label models; {path or 'this model'}"
                                                " gives one class per photo.")
            self.task = MultiLabel(threshold)

    def __repr__(self) -> str:
        return (f"Classifier({self.info.architecture}, {len(self.info.class_ids)} classes, "
                f"{self.info.item_resize} px, {self.backend}, from {str(self.path)!r})")

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
                     batch_size: int = 32, unreadable: str = "raise") -> list[Prediction]:
        """Predictions for several photos, in their order, computed in batches.

        `unreadable`: "raise" stops at the first photo that cannot be read (or does not
        exist) with a DataError; "report" gives it a Prediction whose `error` says why, and
        predicts the others.

        Example:
            classifier = clearclass.load("runs/dogs/model")
            for p in classifier.predict_many(["new.jpg", "gone.jpg"], unreadable="report"):
                print(p.image, p.error or p.class_name)  # gone.jpg does not exist
        """
        if unreadable not in UNREADABLE:
            raise SettingError("unreadable", f"must be one of {', '.join(UNREADABLE)}; got "
                                             f"{unreadable!r}.")
        check_count("batch_size", batch_size)
        k = min(check_top_k(top_k), len(self.info.class_ids))
        images = _photo_list(images)
        results: list[Prediction | None] = [None] * len(images)
        batch: list[tuple[int, ImageInput, np.ndarray]] = []

        def run_batch() -> None:
            probabilities = self.predict_proba_pixels(np.stack([b[2] for b in batch]))
            for (n, image, _), p in zip(batch, probabilities):
                results[n] = self.prediction(image, p, k)
            batch.clear()

        for n, image in enumerate(images):
            try:
                batch.append((n, image, self.preprocess(image)))
            except UnreadableInput as e:
                if unreadable == "raise":
                    raise
                results[n] = Prediction(_describe(image), "", "", math.nan, [], source=image,
                                        error=e.reason)
                continue
            if len(batch) == batch_size:
                run_batch()
        if batch:
            run_batch()
        return [r for r in results if r is not None]

    def prediction(self, image: ImageInput, p: np.ndarray, top_k: int = 5) -> Prediction:
        """The Prediction for probabilities `p` (one row of `predict_proba_pixels`)."""
        k = min(check_top_k(top_k), len(self.info.class_ids))
        order = np.argsort(-p, kind="stable")
        entries = [{"label": self.info.class_names[i], "class_id": self.info.class_ids[i],
                    "probability": float(p[i])} for i in order]
        best = order[0]
        if not isinstance(self.task, MultiLabel):
            return Prediction(_describe(image), self.info.class_names[best],
                              self.info.class_ids[best], float(p[best]), entries[:k],
                              source=image)
        thresholds = np.broadcast_to(np.asarray(self.task.thresholds, dtype=np.float64),
                                     p.shape)
        for entry, i in zip(entries, order):
            entry["threshold"] = float(thresholds[i])
        chosen = [e for e, i in zip(entries, order) if p[i] >= thresholds[i]]
        return Prediction(_describe(image), label_text(tuple(e["label"] for e in chosen)),
                          label_text(tuple(e["class_id"] for e in chosen)), float(p[best]),
                          entries[:k], source=image, labels=chosen, probabilities=entries)

    def predict_proba(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per photo (N x classes): a softmax over the classes,
        or (multi-label) each label's sigmoid."""
        check_count("batch_size", batch_size)
        images = _photo_list(images)
        rows = []
        for start in range(0, len(images), batch_size):
            pixels = np.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            rows.append(self.predict_proba_pixels(pixels))
        return np.concatenate(rows) if rows else np.zeros((0, len(self.info.class_ids)))

    def predict_proba_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for preprocessed uint8 squares (N x size x size x 3)."""
        return self.task.probabilities(self.network.logits(pixels))

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """A photo as the model's square uint8 input (size x size x 3).

        A photo that cannot be used raises UnreadableInput (a DataError) saying why.
        """
        size, method = self.info.item_resize, self.info.resize_method
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_file():
                raise UnreadableInput(image, _not_a_photo(path))
            try:
                return _load_item(path, size, method)
            except UnreadableImage as e:
                # Pillow's message names the file, which the message names already.
                reason = str(e).replace(f" {str(path)!r}", "")
                raise UnreadableInput(image, f"cannot be read as an image ({reason})") from None
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise UnreadableInput(image, "an array image must be height x width x 3, "
                                             "dtype uint8 (RGB)")
            image = _with_pixels(image, image.shape[1], image.shape[0])
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            _with_pixels(image, *image.size)
            # The same resize as a file's: a strip keeps its middle (data.decode.LONGEST_FIT).
            return crop_or_pad(resize_to_fit(image, size, method), size, method)
        raise UnreadableInput(image, f"cannot predict on a {type(image).__name__}; give a "
                                     "path, a PIL image or a uint8 array")


def _with_pixels(image: Any, width: int, height: int) -> Any:
    """`image`, or UnreadableInput when it has no pixels (0 x N)."""
    if width < 1 or height < 1:
        raise UnreadableInput(image, f"an image of {width} x {height} pixels has nothing to "
                                     "predict on; give one of at least 1 x 1")
    return image


def check_top_k(top_k: Any) -> int:
    """`top_k` when it is a whole number of at least 1; SettingError otherwise (a top_k of
    0 used to be taken for 1, where the server answers 400)."""
    return check_count("top_k", top_k)


def _photo_list(images: Any) -> Sequence[ImageInput]:
    """`images` as a sequence of photos; SettingError for one photo given where a list of
    them is wanted (a path would be read letter by letter) or for something else."""
    if isinstance(images, (str, Path, Image.Image, np.ndarray)):
        raise SettingError("images", f"must be a list of photos; got one "
                                     f"({_describe(images)}): use predict(photo) for one, "
                                     "or predict_many([photo]).")
    if isinstance(images, Iterable) and not isinstance(images, (bytes, dict)):
        return images if isinstance(images, Sequence) else list(images)
    raise SettingError("images", f"must be a list of photos (paths, PIL images or uint8 "
                                 f"arrays); got {images!r} ({type(images).__name__}).")


class UnreadableInput(DataError):
    """A photo that cannot be predicted on; `reason` says why without naming the photo."""

    def __init__(self, image: Any, reason: str):
        self.image, self.reason = _describe(image), reason
        super().__init__(f"{self.image}: {reason}.")


def _not_a_photo(path: Path) -> str:
    """Why a path that is not a file cannot be predicted on."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        if not any(p.is_file() and is_image_file(p) for p in path.rglob("*")):
            return "is a folder with no images in it"
        return "is a folder; give the photos in it (clearclass.predict.image_files lists them)"
    return "is not a file"


class _Network:
    """Runs the network on preprocessed uint8 squares; returns float32 logits."""

    name = ""

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _OnnxNetwork(_Network):
    name = "onnx"

    def __init__(self, onnx_path: Path, info: ModelInfo, threads: int | None = None):
        """Raises _OnnxUnusable where PyTorch may do instead; ModelFileError where model.json
        contradicts an ONNX file it vouches for (PyTorch would meet the same contradiction)."""
        import onnxruntime  # noqa: F401  (missing: an ImportError, not "cannot load" below)

        recorded = info.checksums.get(ONNX_FILE)  # None: exported before it was recorded
        try:
            damaged = recorded is not None and sha256(onnx_path) != recorded
        except OSError as e:
            raise _OnnxUnusable(f"Could not read {onnx_path} ({e.strerror or e})") from None
        if damaged:
            raise _OnnxUnusable(f"{onnx_path} does not match the checksum {INFO_FILE} records "
                                "for it (it was cut short or changed)")
        try:
            self.session = onnx_runtime.session(onnx_path, threads or available_cores(),
                                                inter_op_threads=1, optimization="all")
            inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
            in_shape, out_shape = list(inputs[0].shape), list(outputs[0].shape)
        except Exception as e:  # noqa: BLE001  (onnxruntime's errors derive from Exception)
            raise _OnnxUnusable(f"ONNX Runtime cannot load {onnx_path} "
                                f"({_first_line(e)})") from None
        source, classes = onnx_path.with_name(INFO_FILE), len(info.class_ids)
        try:
            described = onnx_runtime.read_metadata(self.session)
        except onnx_runtime.MetadataError as e:  # not clearclass's file: PyTorch may do
            raise _OnnxUnusable(f"{onnx_path}'s metadata is not what clearclass writes: "
                                f"{e.problem}") from None
        problem = None
        if out_shape and isinstance(out_shape[-1], int) and out_shape[-1] != classes:
            problem = (f"{source} lists {classes} class{'es' * (classes != 1)} but "
                       f"{ONNX_FILE} has {out_shape[-1]} outputs")
        elif (len(in_shape) == 4 and all(isinstance(d, int) for d in in_shape[2:])
              and in_shape[2:] != [info.item_resize, info.item_resize]):
            problem = (f"{source} gives the input size as {info.item_resize} px but {ONNX_FILE} "
                       f"takes {in_shape[2]} x {in_shape[3]} px")
        else:
            problem = _metadata_problem(described, info, source)
        if problem and recorded is None:
            raise _OnnxUnusable(problem)  # perhaps the export of other weights
        if problem:
            raise ModelFileError(f"{problem}. Restore {INFO_FILE} from a copy, or train the "
                                 "model again.")
        # Output 0, the logits, which every clearclass model.onnx has (the probabilities,
        # output 1, came later); the task turns them into probabilities as PyTorch's do.
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.path = onnx_path
        # (x / 255 - mean) / std as one multiply-add per channel.
        std = np.asarray(info.std, dtype=np.float32)
        self.scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
        self.shift = (-np.asarray(info.mean, dtype=np.float32) / std).reshape(1, 3, 1, 1)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.transpose(0, 3, 1, 2).astype(np.float32) * self.scale + self.shift
        try:
            return self.session.run([self.output_name],
                                    {self.input_name: np.ascontiguousarray(x)})[0]
        except Exception as e:  # noqa: BLE001  (onnxruntime's errors derive from Exception)
            raise ModelFileError(f"ONNX Runtime failed to run {self.path} ({_first_line(e)}). "
                                 f"Run `clearclass export {self.path.parent}` to write it "
                                 "again, or delete it to predict with PyTorch.") from None


def _metadata_problem(described: onnx_runtime.OnnxMetadata | None, info: ModelInfo,
                      source: Path) -> str | None:
    """Where model.onnx's metadata contradicts model.json (its task, its classes); None when
    they agree, or when the file has none (exported before clearclass wrote it). The
    thresholds may differ: model.json's decide, and may be changed after the export."""
    if described is None:
        return None
    if described.task != info.task:
        return (f"{source} gives the task as {info.task} but {ONNX_FILE} was exported for "
                f"{described.task}")
    if described.class_ids != list(info.class_ids):
        return (f"{source} lists the classes {_first_names(info.class_ids)} but {ONNX_FILE} "
                f"was exported for {_first_names(described.class_ids)}")
    return None


def _first_names(names: Sequence[str]) -> str:
    """The first few class ids, for a message."""
    shown = ", ".join(repr(n)[:40] for n in names[:3])
    return shown + (f" (of {len(names)})" if len(names) > 3 else "")


class _OnnxUnusable(ModelFileError):
    """model.onnx cannot be trusted or loaded; the weights in PyTorch may still serve."""


class _TorchNetwork(_Network):
    name = "torch"

    def __init__(self, folder: Path, info: ModelInfo, device: str):
        try:
            model, _ = load_bundle(folder)  # checks the files before it imports PyTorch
            import torch
        except ImportError as e:
            if (e.name or "").split(".")[0] not in ("torch", "timm", "safetensors"):
                raise
            raise ClearclassError(
                f"Predicting with {WEIGHTS_FILE} needs PyTorch, which is not installed here: "
                "`pip install torch timm`, or give a model with a working model.onnx (written "
                "by `clearclass export`).") from None

        self.torch = torch
        self.device = torch.device(device)
        try:
            self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        except RuntimeError as e:  # a GPU that is busy, out of memory or not supported
            raise ClearclassError(f"Could not put the model on {device} "
                                  f"({_first_line(e)}); use --device cpu.") from None
        self.info = info

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        from clearclass.data.augment import normalize

        torch = self.torch
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            out = self.model(normalize(x, self.info.mean, self.info.std))
        return out.float().cpu().numpy()


def load(path: str | Path, device: str = "auto", backend: str = "auto",
         threads: int | None = None, threshold: float | None = None) -> Classifier:
    """Load a model bundle (a folder with model.safetensors and model.json, or a run folder).

    `device`: auto (CUDA, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps.
    `backend`: "onnx" (ONNX Runtime, CPU), "torch", or "auto": ONNX Runtime when the bundle
    has model.onnx and the device is the CPU. `threads`: ONNX Runtime's threads (default:
    every core this process may use; a server with several worker processes shares them).
    `threshold`: a multi-label model predicts every label whose probability reaches this,
    instead of the thresholds its model.json holds.

    Example:
        classifier = clearclass.load("runs/dogs/model")
        print(classifier.predict("new.jpg").class_name, classifier.classes[:3])
    """
    check_path("path", path, "a model folder (RUN/model) or a run folder")
    if not isinstance(device, str):
        raise SettingError("device", f"must be a name such as auto, cpu, cuda or mps; got "
                                     f"{described(device)}.")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ClearclassError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if threads is not None:
        check_count("threads", threads)
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
        try:
            network: _Network = _OnnxNetwork(onnx_path, info, threads)
        except _OnnxUnusable as e:
            again = f"`clearclass export {folder}` writes it again"
            if backend == "onnx":
                raise ModelFileError(f"{e}; {again}, or use the torch backend.") from None
            progress.warn(f"{e}; predicting with PyTorch and {WEIGHTS_FILE} instead "
                          f"({again}).")
            network = _TorchNetwork(folder, info, device)
    else:
        network = _TorchNetwork(folder, info, device)
    return Classifier(info, network, folder, threshold)


def check_threshold(value: Any) -> float:
    """`value` as a multi-label threshold: a number from 0 to 1 (not NaN); SettingError
    otherwise."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value <= 1):
        raise SettingError("threshold", f"must be a number from 0 to 1; got {described(value)}.")
    return float(value)


def image_files(inputs: Iterable[str | Path], unreadable: str = "raise") -> list[Path]:
    """The photos named on a command line: files as given, folders searched recursively.

    A path that does not exist, or a folder with no images, raises DataError; with
    `unreadable="report"` it stays in the list instead, for `predict_many(...,
    unreadable="report")` to report in its place.

    Example:
        files = image_files(["photos", "new.jpg"])
        print(len(files), files[-1])  # new.jpg
    """
    if unreadable not in UNREADABLE:
        raise SettingError("unreadable", f"must be one of {', '.join(UNREADABLE)}; got "
                                         f"{unreadable!r}.")
    found = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if files:
                found.extend(files)
            elif unreadable == "report":
                found.append(path)
            else:
                raise DataError(f"No images found in folder {path}.")
        elif path.is_file() or unreadable == "report":
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


def _first_line(error: BaseException) -> str:
    """An exception's message on one line (onnxruntime's and torch's span several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."
