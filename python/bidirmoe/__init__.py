"""bidirmoe: word embeddings by word2vec-style streaming SGD with a Rust core.

CBOW and skip-gram (:class:`Word2Vec`, a drop-in for gensim's), with the
query surface of gensim's ``KeyedVectors``.

Examples
--------
>>> from bidirmoe import Word2Vec
>>> model = Word2Vec([["hello", "world"]] * 20, vector_size=8, min_count=1, epochs=1)
>>> len(model.wv)
2
"""

from . import _core
from .attention import BidirectionalAttention
from .corpora import LineSentence, PathLineSentences
from .keyedvectors import KeyedVectors
from .moe import BidirMoE
from .word2vec import Word2Vec

__version__ = "0.1.0"

__all__ = ["Word2Vec", "BidirMoE", "BidirectionalAttention", "KeyedVectors", "LineSentence", "PathLineSentences",
           "TabularMoE", "TabularMoERegressor", "simd_level", "__version__"]


def __getattr__(name):
    # TabularMoE needs scikit-learn: imported on first use, so bidirmoe imports without it.
    if name in ("TabularMoE", "TabularMoERegressor"):
        from . import tabular

        return getattr(tabular, name)
    raise AttributeError(f"module 'bidirmoe' has no attribute {name!r}")


def simd_level() -> str:
    """The SIMD kernels in use on this CPU: "avx512f", "avx2+fma", "neon" or "scalar".

    Examples
    --------
    >>> simd_level() in {"avx512f", "avx2+fma", "neon", "scalar"}
    True
    """
    return _core.simd_level()
