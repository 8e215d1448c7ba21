"""Shared fixtures: small generated photo folders, and the real photos when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO_PHOTOS = REPO / "src" / "clearclass" / "demo_photos"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def make_photo(path: Path, colour=(128, 128, 128), size=(48, 40), seed: int = 0,
               mode: str = "RGB", **save_options) -> Path:
    """A noisy photo of one dominant colour, saved in the format its suffix says."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_options)
    return path


def make_dataset(root: Path, per_class: int = 10, classes=("red", "green", "blue"),
                 size=(48, 40)) -> Path:
    """DATA/<colour>/<n>.jpg: classes a tiny model separates in one or two epochs."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            make_photo(root / name / f"{i:03d}.jpg", COLOURS.get(name, (128, 128, 128)),
                       size=size, seed=100 * c + i)
    return root


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests keep decoded photos in their own folder, never in the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("pixel-cache")
    previous = os.environ.get("CLEARCLASS_CACHE_DIR")
    os.environ["CLEARCLASS_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CLEARCLASS_CACHE_DIR", None)
    else:
        os.environ["CLEARCLASS_CACHE_DIR"] = previous


@pytest.fixture
def colour_photos(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "colours")


def real_photo_root() -> Path:
    """Real dog photos: the shared Imagewoof set when present, else the bundled sample."""
    shared = SHARED_DATASETS / "imagewoof-2k"
    return shared if shared.is_dir() else DEMO_PHOTOS


@pytest.fixture
def tiny_train_settings() -> dict:
    """Settings that train timm's 0.4M-parameter test_resnet in seconds."""
    return dict(model="test_resnet", pretrained=False, item_resize=32, batch_size=8,
                epochs=1, freeze_epochs=1, learning_rate=1e-2, head_speedup=1.0, workers=0,
                device="cpu", onnx=False)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished run of test_resnet on the colour photos (trained once per test session)."""
    from clearclass.training import train

    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "colours", per_class=20)
    run = train(data=str(data), out=str(root / "run"), model="test_resnet", pretrained=False,
                # Batches of 4: 12 steps an epoch, enough to learn the colours whatever the
                # seed (batches of 8 failed one seed in 6).
                item_resize=32, batch_size=4, epochs=3, freeze_epochs=1, learning_rate=2e-2,
                head_speedup=1.0,
                workers=0, device="cpu")
    return run.run_dir


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (never a downloaded browser)."""
    # CI installs the browser and sets CLEARCLASS_BROWSER_TESTS=required: there a missing
    # browser fails the test instead of skipping it.
    required = os.environ.get("CLEARCLASS_BROWSER_TESTS") == "required"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        if required:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()
