"""Every docstring example in the package runs and gives what it shows."""

import doctest
import importlib

import pytest

MODULES = ["bidirmoe", "bidirmoe.word2vec", "bidirmoe.moe", "bidirmoe.attention", "bidirmoe.masked", "bidirmoe.training",
           "bidirmoe.corpora", "bidirmoe.evaluation", "bidirmoe.datasets"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pytest.importorskip("matplotlib").use("Agg")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
