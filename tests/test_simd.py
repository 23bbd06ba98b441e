"""Every SIMD kernel level the CPU supports trains the same model correctly."""

import numpy as np
import pytest

from bidirmoe import Word2Vec, _core, simd_level

LEVELS = ["scalar", "avx2+fma", "avx512f", "neon"]


@pytest.fixture
def restore_simd():
    yield
    _core.force_simd(None)


def test_detected_level_is_known():
    assert simd_level() in LEVELS


def test_unknown_level_is_a_value_error(restore_simd):
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _core.force_simd("sse9")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("sg", [0, 1])
def test_each_level_learns_and_is_deterministic(level, sg, corpus, groups, precision, precision_threshold, restore_simd):
    if not _core.force_simd(level):
        pytest.skip(f"this CPU lacks {level}")
    assert simd_level() == level
    kw = dict(vector_size=24, min_count=1, epochs=4, workers=1, seed=3, sg=sg, window=4)
    a = Word2Vec(corpus, **kw)
    b = Word2Vec(corpus, **kw)
    assert np.array_equal(a.wv.vectors, b.wv.vectors)
    assert precision(a.wv, groups) >= precision_threshold


def test_levels_agree_closely_on_one_step(restore_simd):
    # One tiny epoch from the same start: kernels differ only in summation order.
    corpus = [["a", "b", "c", "d", "e"]] * 3
    kw = dict(vector_size=37, min_count=1, epochs=1, workers=1, seed=5, sample=0)
    ref = None
    for level in LEVELS:
        if not _core.force_simd(level):
            continue
        v = Word2Vec(corpus, **kw).wv.vectors
        if ref is None:
            ref = v
        else:
            assert np.allclose(v, ref, atol=1e-5), level
