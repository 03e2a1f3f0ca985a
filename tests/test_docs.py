"""Docstring examples of the public API run as written."""

import doctest
import importlib

import pytest

MODULES = ["usef.models", "usef.models.usef", "usef.api", "usef.metrics", "usef.hub", "usef.audio"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_models_examples_exist():
    """The registry and USEF docstrings carry examples (the test above would pass on none)."""
    module = importlib.import_module("usef.models")
    assert doctest.DocTestFinder().find(module)[0].examples
