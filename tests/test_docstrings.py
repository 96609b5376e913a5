"""The public API documents itself: every class and function a package exports has its own
docstring (the API reference is generated from them), and every docstring example runs and prints
what it shows (doctest)."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import edgegen

PACKAGES = ["edgegen", "edgegen.config", "edgegen.transform", "edgegen.prune", "edgegen.quant", "edgegen.reduce",
            "edgegen.distill", "edgegen.attention", "edgegen.models", "edgegen.data", "edgegen.eval", "edgegen.analysis",
            "edgegen.export", "edgegen.train", "edgegen.tracking", "edgegen.reproduce", "edgegen.ops"]


def _modules():
    names = ["edgegen"]
    for info in pkgutil.walk_packages(edgegen.__path__, "edgegen."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_every_exported_class_and_function_has_a_docstring():
    missing = []
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            doc = (obj.__doc__ or "").strip()
            if not doc or doc.startswith(f"{obj.__name__}("):  # none, or only the dataclass signature
                missing.append(f"{pkg}.{name}")
    assert missing == []


EXAMPLES = [name for name in _modules()
            if any(t.examples for t in doctest.DocTestFinder().find(importlib.import_module(name)))]


def test_the_main_verbs_carry_examples():
    assert {"edgegen.config", "edgegen.quant.api", "edgegen.prune.api", "edgegen.distill.losses",
            "edgegen.attention.modules", "edgegen.prune.schedule", "edgegen.analysis.stats"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
