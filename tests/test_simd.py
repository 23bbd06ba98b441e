"""Every SIMD kernel level the CPU supports trains the same model correctly.

The kernel level is process-wide state: forcing one would change the kernels
under any other training running in the same process. So every level is
exercised in a child process of its own, which forces it, trains and hands
back the vectors; the test process itself never changes its level (except
for the one restore check below, which trains nothing)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bidirmoe import KeyedVectors, _core, simd_level

LEVELS = ["scalar", "avx2+fma", "avx512f", "neon"]

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs in a fresh interpreter: for each level the CPU has, force it, train,
# and save the vectors to OUT_DIR/<level>.npz; print what it found (JSON).
CHILD = r"""
import json, os, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from conftest import make_planted_corpus
from bidirmoe import Word2Vec, _core, simd_level
out_dir, found = sys.argv[1], {}
corpus = make_planted_corpus().sentences
for level in sys.argv[3:]:
    if not _core.force_simd(level):
        found[level] = None
        continue
    arrays = {}
    for sg in (0, 1):
        kw = dict(vector_size=24, min_count=1, epochs=4, workers=1, seed=3, sg=sg, window=4)
        a, b = Word2Vec(corpus, **kw), Word2Vec(corpus, **kw)
        arrays[f"sg{sg}_a"], arrays[f"sg{sg}_b"] = a.wv.vectors, b.wv.vectors
        keys = a.wv.index_to_key
    # One tiny epoch from the same start: kernels differ only in summation order.
    tiny = Word2Vec([["a", "b", "c", "d", "e"]] * 3, vector_size=37, min_count=1, epochs=1, workers=1, seed=5,
                    sample=0)
    arrays["tiny"] = tiny.wv.vectors
    np.savez(os.path.join(out_dir, level + ".npz"), **arrays)
    found[level] = {"reported": simd_level(), "keys": keys}
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For each level: None if the CPU lacks it, else (level reported while forced, keys, arrays)."""
    d = tmp_path_factory.mktemp("simd")
    r = subprocess.run([sys.executable, "-c", CHILD, str(d), HERE, *LEVELS], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(found) == set(LEVELS) and found["scalar"] is not None  # every CPU has the scalar kernels
    out = {}
    for level, info in found.items():
        if info is None:
            out[level] = None
            continue
        with np.load(d / f"{level}.npz") as data:
            out[level] = (info["reported"], info["keys"], {k: data[k] for k in data.files})
    return out


@pytest.fixture
def simd_restored():
    """Whatever a test forces, the level in effect before it is back afterwards."""
    before = simd_level()
    try:
        yield before
    finally:
        _core.force_simd(None)
        if simd_level() != before:
            _core.force_simd(before)
        assert simd_level() == before


def test_detected_level_is_known():
    assert simd_level() in LEVELS


def test_unknown_level_is_a_value_error(simd_restored):
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _core.force_simd("sse9")
    assert simd_level() == simd_restored  # a refused level changes nothing


def test_forcing_reports_the_level_and_is_undone(simd_restored):
    assert _core.force_simd("scalar") is True  # every CPU has the scalar kernels
    assert simd_level() == "scalar"
    _core.force_simd(None)
    assert simd_level() == simd_restored  # automatic again: the detected level


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("sg", [0, 1])
def test_each_level_learns_and_is_deterministic(level, sg, runs, groups, precision, precision_threshold):
    if runs[level] is None:
        pytest.skip(f"this CPU lacks the {level} kernels")
    reported, keys, arrays = runs[level]
    assert reported == level
    a, b = arrays[f"sg{sg}_a"], arrays[f"sg{sg}_b"]
    assert np.array_equal(a, b)
    kv = KeyedVectors(a.shape[1])
    kv.add_vectors(keys, a)
    assert precision(kv, groups) >= precision_threshold


def test_levels_agree_closely_on_one_step(runs):
    supported = [level for level in LEVELS if runs[level] is not None]
    if len(supported) < 2:
        pytest.skip(f"only {supported} available: nothing to compare")
    ref = runs[supported[0]][2]["tiny"]
    for level in supported[1:]:
        v = runs[level][2]["tiny"]
        assert np.allclose(v, ref, atol=1e-5), level
        assert not np.array_equal(v, np.zeros_like(v))


def test_line_round_trip_diagnostic():
    # The benchmarks' placement probe: two threads answer each other through one cache line.
    t = _core._line_round_trip_ns(rounds=2000, repeats=3)
    assert t is not None and 0 < t < 1e7
    assert _core._line_round_trip_ns(rounds=0) is None
    assert _core._line_round_trip_ns(rounds=10, repeats=0) is None
