"""The `clearclass` command. It parses options, calls the library and formats results.

The library raises `ClearclassError` with a message that says what to do; here it becomes
one red line and exit status 1 (`--debug` shows the traceback instead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from clearclass import __version__
from clearclass.errors import ClearclassError

app = typer.Typer(
    name="clearclass",
    help="Turn folders of photos into an image classifier you understand and can ship.\n\n"
         "Typical use: clearclass explore DATA, clearclass train DATA --out RUN, "
         "clearclass evaluate RUN, clearclass predict RUN/model PHOTO.jpg.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_state = {"debug": False}

DataArg = Annotated[str, typer.Argument(
    help="The labelled photos: a folder of class folders (DATA/<class>/<photo>.jpg, Stanford "
         "Dogs' Images/ too), a folder with train/ and valid/ (or val/, test/) class folders, "
         "or a CSV file with columns path,label[,is_valid] (paths relative to the CSV).",
    show_default=False, metavar="DATA")]
ValidPct = Annotated[float, typer.Option(
    help="Share of each class held out for validation when DATA has no split of its own.")]
Seed = Annotated[int, typer.Option(
    help="Random seed for the split, the new head, batch order and augmentation.")]
ItemResize = Annotated[int, typer.Option(
    help="Side, in pixels, of the square photos the model sees.")]
ResizeMethod = Annotated[str, typer.Option(
    help="How a photo becomes square: crop (random crop in training, centre crop otherwise), "
         "squish (stretch), or pad (fit inside, black bars).")]
BatchAugment = Annotated[str, typer.Option(
    help="Augmentation of each training batch: standard (fastai's aug_transforms defaults: "
         "flips, rotation, zoom, perspective warp, brightness, contrast) or none.")]
Strength = Annotated[float, typer.Option(
    help="Multiplies the rotation, warp and lighting of the augmentation (fastai's mult).")]
Workers = Annotated[int | None, typer.Option(
    help="Processes that decode photos; default one per CPU core.")]
Cache = Annotated[bool, typer.Option(
    help="Keep decoded photos on disk ($CLEARCLASS_CACHE_DIR, else ~/.cache/clearclass) so "
         "the next run skips decoding; --no-cache keeps them in memory only.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")]
Model = Annotated[str, typer.Option(
    help="Any timm architecture, e.g. resnet34, efficientnet_lite0, convnext_tiny.")]
Weights = Annotated[Path | None, typer.Option(
    help="Pretrained weights file (.safetensors or .pth of tensors) instead of timm's "
         "download.")]
Pretrained = Annotated[bool, typer.Option(
    help="Start from ImageNet weights; --no-pretrained starts from random weights.")]
BatchSize = Annotated[int, typer.Option(help="Photos per training step.")]
Device = Annotated[str, typer.Option(
    help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clearclass {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback when something goes wrong.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def train(
    data: DataArg,
    out: Annotated[Path | None, typer.Option(
        help="Run folder for the model, metrics and report; default runs/<data>-<model>.")] = None,
    model: Model = "resnet34",
    weights: Weights = None,
    pretrained: Pretrained = True,
    epochs: Annotated[int, typer.Option(
        help="Epochs with the whole model trainable, after the frozen ones.")] = 1,
    freeze_epochs: Annotated[int, typer.Option(
        help="Epochs first with the pretrained body frozen: only the new head learns.")] = 1,
    base_lr: Annotated[float, typer.Option(
        help="Peak learning rate, as fastai's; halved once unfrozen, the body lower still "
             "(see --lr-mult). `clearclass lr-find` suggests one.")] = 2e-3,
    lr_mult: Annotated[float, typer.Option(
        help="Once unfrozen, the body learns this many times slower than the head.")] = 100.0,
    head_lr_mult: Annotated[float, typer.Option(
        help="While the body is frozen, the new head learns at --base-lr times this.")] = 5.0,
    train_bn: Annotated[bool | None, typer.Option(
        "--train-bn/--no-train-bn",
        help="Let BatchNorm statistics adapt to your photos, as fastai does (the frozen "
             "epoch then back-propagates through the whole body). By default the pretrained "
             "statistics are kept (on imagewoof-2k faster and more accurate), and adapted "
             "only with --no-pretrained.", show_default=False)] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    batch_size: BatchSize = 64,
    item_resize: ItemResize = 224,
    resize_method: ResizeMethod = "crop",
    batch_augment: BatchAugment = "standard",
    augment_strength: Strength = 1.0,
    valid_pct: ValidPct = 0.2,
    seed: Seed = 42,
    device: Device = "auto",
    precision: Annotated[str, typer.Option(
        help="auto (bf16/fp16 mixed precision where the hardware does it natively), fp32, "
             "bf16 or fp16.")] = "auto",
    workers: Workers = None,
    cache: Cache = True,
    onnx: Annotated[bool, typer.Option(
        help="Also export the model to RUN/model/model.onnx at the end, checked against "
             "PyTorch, so that prediction runs in ONNX Runtime.")] = True,
    overwrite: Annotated[bool, typer.Option(
        help="Replace a model already in the run folder.")] = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a pretrained model on labelled photos, as fastai's fine_tune does.

    Example: clearclass train photos/ --model efficientnet_lite0 --epochs 3 --out runs/dogs

    Prints a row per epoch (epoch, train_loss, valid_loss, accuracy, time), also saved to
    RUN/metrics.csv. The model is saved as RUN/model (model.safetensors + model.json) after
    every epoch. Unreadable photos are skipped and listed in RUN/skipped.csv.
    """
    from clearclass.training import TrainConfig
    from clearclass.training import train as run_training

    config = TrainConfig(
        data=data, out=str(out) if out else None, model=model,
        weights=str(weights) if weights else None, pretrained=pretrained, epochs=epochs,
        freeze_epochs=freeze_epochs, train_bn=train_bn, base_lr=base_lr, lr_mult=lr_mult,
        head_lr_mult=head_lr_mult,
        weight_decay=weight_decay, batch_size=batch_size, item_resize=item_resize,
        resize_method=resize_method, batch_augment=batch_augment,
        augment_strength=augment_strength, valid_pct=valid_pct, seed=seed, device=device,
        precision=precision, workers=workers, cache=cache, onnx=onnx, overwrite=overwrite,
    )
    run_training(config, quiet=quiet)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `clearclass train`.",
                                        show_default=False, metavar="RUN")],
    top_losses: Annotated[int, typer.Option(
        help="How many of the worst-predicted photos to show.")] = 16,
    quiet: Quiet = False,
) -> None:
    """Evaluate a trained run on its validation photos and write RUN/report/.

    Example: clearclass evaluate runs/dogs

    Prints accuracy, top-5 accuracy and the most confused pairs, and writes
    confusion.png, most_confused.csv/.png, top_losses.png, per_class.csv and a
    self-contained index.html into RUN/report/.
    """
    from clearclass.evaluation import evaluate as run_evaluation

    run_evaluation(run, quiet=quiet, top_losses=top_losses)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(
        help="A model folder (RUN/model, with model.safetensors and model.json) or a run "
             "folder.", show_default=False, metavar="MODEL")],
    images: Annotated[list[Path], typer.Argument(
        help="Photos, or folders searched for photos.", show_default=False,
        metavar="IMAGE_OR_FOLDER...")],
    top_k: Annotated[int, typer.Option(help="How many most likely classes to list.")] = 3,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list, one object per photo: image, label, probability, "
                       "top_k.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
) -> None:
    """Predict the class of photos with a trained model.

    Example: clearclass predict runs/dogs/model rex.jpg photos/new/ --top-k 3 --json
    """
    from clearclass.predict import image_files, load

    classifier = load(model, device=device)
    files = image_files(images)
    results = classifier.predict_many(files, top_k=top_k)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        return
    for r in results:
        others = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in r.top_k[1:])
        typer.echo(f"{r.image}: {r.label} ({r.probability:.1%})"
                   + (f"; then {others}" if others else ""))


@app.command()
def explore(
    data: DataArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the figures; default runs/explore-<data>.")] = None,
    item_resize: ItemResize = 224,
    resize_method: ResizeMethod = "crop",
    batch_augment: BatchAugment = "standard",
    augment_strength: Strength = 1.0,
    valid_pct: ValidPct = 0.2,
    seed: Seed = 42,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Look at a dataset before training: counts, sizes, unreadable files, samples.

    Example: clearclass explore photos/

    Prints photos per class (train and validation), photo size statistics and unreadable
    files; writes samples.png (photos of each class) and augmented.png (what batch
    augmentation does) into OUT.
    """
    from clearclass.explore import explore as run_explore

    run_explore(data, out=out, valid_pct=valid_pct, seed=seed, item_resize=item_resize,
                resize_method=resize_method, batch_augment_preset=batch_augment,
                augment_strength=augment_strength, workers=workers, quiet=quiet)


@app.command("lr-find")
def lr_find(
    data: DataArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder for lr_find.png; default runs/<data>-<model>-lr-find.")] = None,
    model: Model = "resnet34",
    weights: Weights = None,
    pretrained: Pretrained = True,
    batch_size: BatchSize = 64,
    item_resize: ItemResize = 224,
    resize_method: ResizeMethod = "crop",
    batch_augment: BatchAugment = "standard",
    valid_pct: ValidPct = 0.2,
    seed: Seed = 42,
    device: Device = "auto",
    workers: Workers = None,
    cache: Cache = True,
    quiet: Quiet = False,
) -> None:
    """Suggest a learning rate: train briefly while raising it, and plot the loss.

    Example: clearclass lr-find photos/ --model resnet34

    As fastai's lr_find: 100 steps from 1e-7 to 10 with the body frozen; the suggestion is
    the middle of the longest fall of the loss ("valley"). Use it as --base-lr.
    """
    from clearclass.training import TrainConfig
    from clearclass.training import lr_find as run_lr_find

    default_out = f"runs/{Path(data).stem or 'data'}-{model.replace('/', '_')}-lr-find"
    config = TrainConfig(
        data=data, out=str(out or default_out), model=model,
        weights=str(weights) if weights else None, pretrained=pretrained,
        batch_size=batch_size, item_resize=item_resize, resize_method=resize_method,
        batch_augment=batch_augment,
        valid_pct=valid_pct, seed=seed, device=device, workers=workers, cache=cache,
        overwrite=True,
    )
    result = run_lr_find(config, quiet=quiet)
    if quiet:
        typer.echo(f"{result.suggestion:.2e}")


@app.command()
def export(
    model: Annotated[Path, typer.Argument(
        help="A model folder (RUN/model) or a run folder.", show_default=False,
        metavar="MODEL")],
    check: Annotated[bool, typer.Option(
        help="Run the ONNX file once and compare it with PyTorch.")] = True,
) -> None:
    """Export a model to ONNX (model.onnx, beside model.safetensors) for ONNX Runtime.

    Example: clearclass export runs/dogs/model

    The ONNX model takes normalised images (N x 3 x size x size; size, mean and std are in
    model.json) and returns logits, so prediction needs no PyTorch.
    """
    from clearclass.export import export_onnx

    path = export_onnx(model, check=check)
    typer.echo(f"Wrote {path}" + (" (checked against PyTorch)" if check else ""))


@app.command()
def cache(
    clear: Annotated[bool, typer.Option(
        "--clear", help="Delete every decoded photo in the cache.")] = False,
) -> None:
    """Show where decoded photos are cached and how much room they take, or clear it.

    Example: clearclass cache --clear

    Training keeps each photo decoded and resized in this folder, named by the file's
    bytes, so the next run skips decoding. Deleting it is always safe. Set
    CLEARCLASS_CACHE_DIR to move it.
    """
    from clearclass.data import cache as pixel_cache

    folder = pixel_cache.default_cache_dir()
    if clear:
        typer.echo(f"Deleted {pixel_cache.clear(folder)} decoded photo(s) from {folder}")
        return
    entries, size = pixel_cache.usage(folder)
    typer.echo(f"{folder}: {entries} decoded photo(s), {size / 1e6:.1f} MB")


download_app = typer.Typer(
    name="download",
    help="Download a dataset: from Kaggle, or a well-known public one (Imagewoof, "
         "Imagenette, Stanford Dogs), unpacked and ready for `clearclass train`.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)
app.add_typer(download_app)

DownloadOut = Annotated[Path, typer.Option(help="Folder to put the dataset in.")]
KeepArchives = Annotated[bool, typer.Option(
    help="Keep the downloaded archives after unpacking them.")]
Timeout = Annotated[float, typer.Option(
    help="Seconds a server may take to answer, or to send the next bytes.")]
Retries = Annotated[int, typer.Option(
    help="Retries of a failed request (connection error, timeout, 5xx, 429).")]


@download_app.command("kaggle")
def download_kaggle(
    dataset: Annotated[str, typer.Argument(
        help="The Kaggle dataset, OWNER/DATASET as in its URL (the URL itself works too).",
        show_default=False, metavar="OWNER/DATASET")],
    out: DownloadOut = Path("data"),
    keep_archives: KeepArchives = False,
    quiet: Quiet = False,
) -> None:
    """Download a Kaggle dataset with the kaggle package, unzip it, and say what to train on.

    Example: clearclass download kaggle jessicali9530/stanford-dogs-dataset --out data

    Credentials come from ~/.kaggle/kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY (create
    a token at https://www.kaggle.com/settings). The Stanford Dogs layout is recognised.
    """
    from clearclass.acquire import download_kaggle as run

    run(dataset, out=out, keep_archives=keep_archives, quiet=quiet)


def _public_dataset(name: str, size: str, out: Path, keep_archives: bool, timeout: float,
                    retries: int, quiet: bool) -> None:
    from clearclass.acquire import download_dataset

    download_dataset(name, size=size, out=out, keep_archives=keep_archives, timeout=timeout,
                     retries=retries, quiet=quiet)


Size = Annotated[str, typer.Option(
    help="fastai's release: full (originals), 320 or 160 (short side in pixels).")]


@download_app.command("imagewoof")
def download_imagewoof(out: DownloadOut = Path("data"), size: Size = "320",
                       keep_archives: KeepArchives = False, timeout: Timeout = 30.0,
                       retries: Retries = 3, quiet: Quiet = False) -> None:
    """Download Imagewoof (10 dog breeds from ImageNet) with its official train/val split.

    Example: clearclass download imagewoof --size 320 --out data

    Resumes a partial download, checks the published MD5, and writes labels.csv
    (path,label,is_valid) for `clearclass train`.
    """
    _public_dataset("imagewoof", size, out, keep_archives, timeout, retries, quiet)


@download_app.command("imagenette")
def download_imagenette(out: DownloadOut = Path("data"), size: Size = "320",
                        keep_archives: KeepArchives = False, timeout: Timeout = 30.0,
                        retries: Retries = 3, quiet: Quiet = False) -> None:
    """Download Imagenette (10 easy ImageNet classes) with its official train/val split.

    Example: clearclass download imagenette --size 160 --out data

    Resumes a partial download, checks the published MD5, and writes labels.csv
    (path,label,is_valid) for `clearclass train`.
    """
    _public_dataset("imagenette", size, out, keep_archives, timeout, retries, quiet)


@download_app.command("stanford-dogs")
def download_stanford_dogs(out: DownloadOut = Path("data"),
                           keep_archives: KeepArchives = False, timeout: Timeout = 30.0,
                           retries: Retries = 3, quiet: Quiet = False) -> None:
    """Download Stanford Dogs (120 breeds, 20,580 photos) with its official train/test split.

    Example: clearclass download stanford-dogs --out data

    Resumes a partial download, checks the published sizes, and writes labels.csv
    (path,label,is_valid: 12,000 training and 8,580 test photos) for `clearclass train`.
    """
    _public_dataset("stanford-dogs", "full", out, keep_archives, timeout, retries, quiet)


@app.command()
def search(
    queries: Annotated[list[str] | None, typer.Argument(
        help="What to search for, one class each (its folder is a slug of it).",
        show_default=False, metavar="QUERY...")] = None,
    provider: Annotated[str, typer.Option(
        help="duckduckgo (no key), pexels, unsplash, pixabay, flickr or serpapi (keys in "
             "PEXELS_API_KEY, UNSPLASH_ACCESS_KEY, PIXABAY_API_KEY, FLICKR_API_KEY, "
             "SERPAPI_API_KEY).")] = "duckduckgo",
    per_class: Annotated[int, typer.Option(help="Good, distinct photos wanted per class.")] =
        100,
    out: Annotated[Path, typer.Option(help="Folder for the dataset (one folder per class).")] =
        Path("photos"),
    classes: Annotated[Path | None, typer.Option(
        help="A text file with one class (search query) per line, instead of or besides "
             "QUERY.")] = None,
    max_side: Annotated[int | None, typer.Option(
        help="Resize photos whose long side is larger than this many pixels on save.")] =
        None,
    min_side: Annotated[int, typer.Option(
        help="Keep only photos whose short side is at least this many pixels.")] = 64,
    workers: Annotated[int, typer.Option(help="Parallel downloads.")] = 8,
    timeout: Timeout = 30.0,
    retries: Retries = 3,
    quiet: Quiet = False,
) -> None:
    """Search the web for photos of each class and save the good, distinct ones.

    Example: clearclass search "beagle" "pug" --provider pexels --per-class 50 --out dogs

    Keeps photos that decode and are big enough, drops exact and near duplicates, reports
    a photo found under two classes, and writes DIR/manifest.csv (file, class, source
    URL, provider, author, licence) so attribution can be honoured. Run it again to top up.
    """
    from clearclass.acquire import search as run

    run(queries or [], provider=provider, per_class=per_class, out=out, classes_file=classes,
        max_side=max_side, min_side=min_side, workers=workers, timeout=timeout,
        retries=retries, quiet=quiet)


@app.command()
def verify(
    folder: Annotated[Path, typer.Argument(help="A folder of class folders.",
                                           show_default=False, metavar="DIR")],
    delete: Annotated[bool, typer.Option(help="Delete the files found bad.")] = False,
    move_to: Annotated[Path | None, typer.Option(
        help="Move the files found bad into this folder, keeping their class folder.")] =
        None,
    fix_extensions: Annotated[bool, typer.Option(
        help="Rename files whose extension does not match their content (a PNG named "
             ".jpg).")] = False,
    min_side: Annotated[int, typer.Option(
        help="Photos with a shorter short side, in pixels, are reported as too small.")] = 64,
    quiet: Quiet = False,
) -> None:
    """Check a dataset: unreadable or truncated files, wrong extensions, tiny photos, duplicates.

    Example: clearclass verify photos/ --move-to rejected/

    fastai's verify_images, but it says what it found: a table of every problem, with
    duplicates within and across classes. Nothing changes unless --delete, --move-to
    or --fix-extensions.
    """
    from clearclass.acquire import verify as run

    run(folder, delete=delete, move_to=move_to, fix_extensions=fix_extensions,
        min_side=min_side, quiet=quiet)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's run.")] =
        Path("clearclass-demo"),
    quiet: Quiet = False,
) -> None:
    """Run the whole workflow offline on the bundled sample of dog photos.

    Example: clearclass demo

    Explores the sample, fine-tunes efficientnet_lite0 (one frozen and one unfrozen
    epoch), evaluates it, exports it to ONNX and predicts a few photos. A few minutes on
    two CPU cores.
    """
    from clearclass.demo import run_demo

    run_demo(out, quiet=quiet)


def main() -> None:
    """Entry point of the `clearclass` command."""
    try:
        app()
    except ClearclassError as e:
        if _state["debug"]:
            raise
        from clearclass.progress import err_console

        err_console.print(f"[bold red]error:[/bold red] {_escape(str(e))}")
        sys.exit(1)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        sys.exit(130)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":
    main()
