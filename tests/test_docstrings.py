"""Every docstring example in the package runs and gives what it shows.

Only the plotting examples need matplotlib: they are collected apart and
skipped (visibly) without it; every other example always runs."""

import doctest
import importlib

import pytest

MODULES = ["bidirmoe", "bidirmoe.word2vec", "bidirmoe.moe", "bidirmoe.attention", "bidirmoe.masked", "bidirmoe.training",
           "bidirmoe.corpora", "bidirmoe.evaluation", "bidirmoe.datasets"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _docstrings(name):
    """The module's docstrings with examples, split into (plain, plotting)."""
    found = doctest.DocTestFinder().find(importlib.import_module(name))
    with_examples = [t for t in found if t.examples]
    plotting = [t for t in with_examples if any("matplotlib" in ex.source for ex in t.examples)]
    return [t for t in with_examples if t not in plotting], plotting


PLOTTING = [(name, t.name) for name in MODULES for t in _docstrings(name)[1]]


def _run(tests):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain, _ = _docstrings(name)
    result = _run(plain)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


@pytest.mark.parametrize("name,qualname", PLOTTING, ids=[q for _, q in PLOTTING])
def test_plotting_docstring_examples_run(name, qualname, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the plotting examples need matplotlib").use("Agg")
    monkeypatch.chdir(tmp_path)
    tests = [t for t in _docstrings(name)[1] if t.name == qualname]
    result = _run(tests)
    assert result.attempted > 0 and result.failed == 0


def test_plotting_examples_are_found():
    # The split above must see the plot_offsets examples, or they would run nowhere.
    names = [q for _, q in PLOTTING]
    assert "bidirmoe.moe.BidirMoE.plot_offsets" in names
    assert "bidirmoe.attention.BidirectionalAttention.plot_offsets" in names
