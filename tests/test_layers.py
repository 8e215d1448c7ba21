"""The package's layers: a module imports nothing from a layer above its own.

Prediction and the model bundle run on a server without the training stack (deploy/), and
training runs without the commands that drive it. An import that climbs, even one inside
a function, ties the lower layer to everything above it; this test reads every source file
with `ast`, so such an import fails here, naming the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clearclass

SOURCE = Path(clearclass.__file__).parent

# From the bottom up; a module of a layer may import from its own layer and those below.
# Modules in no layer (exploration, demo, acquire, errors, progress, ...) are not checked.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("clearclass.data", "clearclass.model", "clearclass.fileio", "clearclass.bundle",
              "clearclass.onnx_runtime", "clearclass.predict", "clearclass.task",
              "clearclass.pages", "clearclass.hub_download")),
    # A run folder holds a training run: its reader may check the run's TrainConfig.
    ("training", ("clearclass.training", "clearclass.run_folder", "clearclass.tracking")),
    ("commands", ("clearclass.advice", "clearclass.evaluation", "clearclass.cleaning",
                  "clearclass.serve", "clearclass.runs_table",
                  "clearclass.export", "clearclass.hub", "clearclass.cli")),
]

# Known exceptions, each with its reason; an entry is (file relative to src/clearclass,
# imported module).
KNOWN = {
    # `run.evaluate()` in a notebook: TrainingRun hands over to the evaluation when called
    # (imported then, inside the method), as fastai's Learner hands over to its
    # interpretation. Nothing in training depends on it.
    ("training/run.py", "clearclass.evaluation"),
}


def _layer(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _module_name(path: Path, source: Path) -> str:
    parts = ["clearclass", *path.relative_to(source).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, at module level or inside functions;
    `from clearclass import training` counts as an import of clearclass.training."""
    name = _module_name(path, source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def _climbing_imports(source: Path = SOURCE) -> list[tuple[str, int, str, str]]:
    """(file, line, imported module, the layer it belongs to) for each climbing import."""
    climbing = []
    for path in sorted(source.rglob("*.py")):
        own = _layer(_module_name(path, source))
        if own is None:
            continue
        for line, imported in _imports(path, source):
            other = _layer(imported)
            if other is not None and other > own:
                # `from clearclass.export import x` is an import of clearclass.export.
                target = next(p for p in LAYERS[other][1]
                              if imported == p or imported.startswith(p + "."))
                climbing.append((path.relative_to(source).as_posix(), line, target,
                                 LAYERS[other][0]))
    return climbing


def test_no_module_imports_from_a_layer_above_its_own():
    unexpected = [f"src/clearclass/{file}:{line} imports {target} (the {layer} layer, above "
                  f"{file}'s)" for file, line, target, layer in _climbing_imports()
                  if (file, target) not in KNOWN]
    assert not unexpected, (
        "Imports that climb the layers (tests/test_layers.py LAYERS):\n  "
        + "\n  ".join(unexpected)
        + "\nMove what is needed down into a lower module instead.")


def test_every_known_exception_is_still_needed():
    found = {(file, target) for file, _, target, _ in _climbing_imports()}
    assert not KNOWN - found, (
        f"These imports are gone; remove them from KNOWN in tests/test_layers.py: "
        f"{sorted(KNOWN - found)}")


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    fake = tmp_path / "clearclass"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "low.py").write_text(
        "def f():\n    from ..training import loop\n    import clearclass.cli\n"
        "from clearclass import serve\nfrom clearclass.bundle import sha256\n")
    assert _climbing_imports(fake) == [
        ("data/low.py", 2, "clearclass.training", "training"),
        ("data/low.py", 3, "clearclass.cli", "commands"),
        ("data/low.py", 4, "clearclass.serve", "commands"),
    ]
