"""The import layering of the Python package (docs/development.md): a module may import its own
layer and the layers below, never one above. Imports inside functions count too. A package's
``__init__`` (its face) may re-export any module of its own package."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "edgegen"

# Lowest first. A module belongs to the longest prefix listed.
LAYERS = [
    ("ops", ["edgegen._C", "edgegen._extension", "edgegen._atomic", "edgegen.ops", "edgegen.isa", "edgegen.memory"]),
    ("base", ["edgegen.config", "edgegen.transform", "edgegen.tensor_files"]),
    ("transforms", ["edgegen.prune", "edgegen.quant", "edgegen.distill", "edgegen.attention", "edgegen.reduce"]),
    ("models", ["edgegen.models"]),
    ("data", ["edgegen.data"]),
    ("measurement", ["edgegen.eval", "edgegen.analysis", "edgegen.export"]),
    ("training", ["edgegen.train", "edgegen.tracking", "edgegen.eval.runs", "edgegen.eval.run_samples"]),
    ("applications", ["edgegen.reproduce", "edgegen.cli", "edgegen.__main__"]),
]


# Compiled modules: built into the installed package, not in the source tree.
EXTENSIONS = {"edgegen._C"}


def layer_of(module: str) -> int | None:
    best, level = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, level = p, i
    return level


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports(path: Path, name: str):
    """The modules ``name`` imports; ``from package import module`` names the module itself."""
    known = {n for n, _ in modules()} | EXTENSIONS
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                module = node.module
            else:
                continue
            yield module
            yield from (f"{module}.{a.name}" for a in node.names
                        if f"{module}.{a.name}" in known)


def test_every_module_has_a_layer():
    assert [n for n, _ in modules() if n != "edgegen" and layer_of(n) is None] == []


def test_the_layer_table_rejects_an_upward_import():
    assert layer_of("edgegen.eval.fid") < layer_of("edgegen.train.loop")
    assert layer_of("edgegen.eval.runs") == layer_of("edgegen.train.loop")  # evaluates training runs
    assert layer_of("edgegen.models.gpt2") > layer_of("edgegen.attention.dense")
    assert layer_of("edgegen.unlisted_package.module") is None and layer_of("edgegen.opsx") is None


@pytest.mark.parametrize("name", [n for n, _ in modules() if n != "edgegen"])
def test_no_module_imports_a_layer_above_its_own(name):
    path = dict(modules())[name]
    own = layer_of(name)
    assert own is not None, f"{name} is in no layer of LAYERS"
    face = path.name == "__init__.py"
    internal = {m for m in imports(path, name) if m.startswith("edgegen.")}
    # An edgegen module missing from the table has no layer to compare: a failure, not the lowest layer.
    unlisted = sorted(m for m in internal if layer_of(m) is None)
    assert unlisted == [], f"{name} imports {unlisted}, which no layer of LAYERS lists"
    upward = sorted(m for m in internal if layer_of(m) > own and not (face and m.startswith(name + ".")))
    assert upward == [], f"{name} ({LAYERS[own][0]}) imports {upward}"


def test_package_faces_only_re_export():
    """``__init__.py`` files hold imports, ``__all__`` and constants; logic lives in modules."""
    logic = {}
    for name, path in modules():
        if path.name == "__init__.py":
            tree = ast.parse(path.read_text(encoding="utf-8"))
            defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            if defs:
                logic[name] = defs
    assert logic == {}
