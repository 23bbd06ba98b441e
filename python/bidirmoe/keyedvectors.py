# -*- coding: utf-8 -*-
"""Word vectors keyed by token, compatible with gensim 4's ``KeyedVectors``.

This module is a self-contained (``numpy`` + standard library) re-implementation
of :class:`gensim.models.KeyedVectors`.  Method names, signatures and results
mirror gensim 4.x: for the same vectors (same keys in the same order) every
query returns the same keys in the same order, and scores that agree to float
rounding.

The differences from gensim are speed and safety:

* :meth:`KeyedVectors.evaluate_word_analogies` and
  :meth:`KeyedVectors.most_similar_batch` score a whole block of queries with
  one matrix product.  Results still equal gensim's one-query-at-a-time
  :meth:`~KeyedVectors.most_similar`: whenever two candidate scores are closer
  than a rigorous float32 rounding bound, that query is recomputed with the
  exact gensim arithmetic.
* Files are written atomically (temporary file in the same directory, flush,
  ``fsync``, :func:`os.replace`).
* A truncated or malformed word2vec file raises :class:`ValueError` naming the
  line number (text format) or byte offset (binary format).
* The native :meth:`KeyedVectors.save` format is one file which
  :meth:`KeyedVectors.load` can memory-map (``mmap='r'``).

Examples
--------
>>> import numpy as np
>>> from bidirmoe.keyedvectors import KeyedVectors
>>> kv = KeyedVectors(2)
>>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
>>> [key for key, _ in kv.most_similar('cat', topn=2)]
['dog', 'car']
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import itertools
import json
import logging
import lzma
import math
import os
import shutil
import struct
import tempfile
import threading
import warnings
import zlib
from collections import namedtuple
from numbers import Integral
from typing import (
    TYPE_CHECKING, Any, Dict, Iterable, List, Literal, Mapping, NoReturn, Optional, Sequence, Tuple, Type, TypeVar,
    Union,
)

import numpy as np
from numpy import ndarray

if TYPE_CHECKING:  # names for annotations only; nothing below exists at runtime
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from .evaluation import AnalogyReport

    _KeyedVectorsT = TypeVar('_KeyedVectorsT', bound='KeyedVectors')
    #: A key: a word, or an integer key (integers not in the vocabulary are row indices).
    _Key = Union[str, int, np.integer]
    #: A key, or a raw vector used as given.
    _KeyOrVector = Union[_Key, NDArray[Any]]
    #: ``positive`` / ``negative`` of :meth:`KeyedVectors.most_similar`: one key or vector, or a
    #: sequence of keys, vectors and ``(key or vector, weight)`` pairs (a 2D array is a sequence of vectors).
    _Query = Union[_KeyOrVector, Sequence[Union[_KeyOrVector, Tuple[_KeyOrVector, float]]]]
    #: ``positive`` / ``negative`` of :meth:`KeyedVectors.most_similar_cosmul`.
    _CosmulQuery = Union[str, NDArray[Any], Sequence[Union[str, NDArray[Any]]]]
    #: Result of :meth:`KeyedVectors.most_similar`: ``(key, similarity)`` pairs, or all similarities (``topn=None``).
    _SimilarResult = Union[List[Tuple[str, float]], NDArray[np.floating[Any]]]
    _Path = Union[str, os.PathLike[str]]

logger = logging.getLogger(__name__)

REAL = np.float32

_KEY_TYPES = (str, int, np.integer)
_EXTENDED_KEY_TYPES = (str, int, np.integer, np.ndarray)

__all__ = ['KeyedVectors', 'load_word2vec_format', 'REAL']


# ---------------------------------------------------------------------------
# numeric helpers mirroring gensim.matutils
# ---------------------------------------------------------------------------

def _ensure_list(value):
    """Wrap a single key or vector into a list, exactly like gensim's ``_ensure_list``."""
    if value is None:
        return []
    if isinstance(value, _KEY_TYPES) or (isinstance(value, ndarray) and len(value.shape) == 1):
        return [value]
    if isinstance(value, ndarray) and len(value.shape) == 2:
        return list(value)
    return value


def _nrm2(vec):
    """Euclidean norm as computed by BLAS ``dnrm2`` (float64), as a Python float."""
    v = np.ascontiguousarray(vec, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    result = math.sqrt(float(np.dot(v, v)))
    if math.isinf(result):  # overflow of the plain sum of squares: use the scaled algorithm
        result = float(np.linalg.norm(v))
    return result


def _unitvec(vec):
    """Scale a dense vector to unit L2 length, like ``gensim.matutils.unitvec``.

    A zero (or NaN) vector is returned unchanged.  The scaling is done in float64
    (as BLAS ``dscal`` does) and the result is cast back to the input dtype.
    """
    if not isinstance(vec, ndarray):
        vec = np.asarray(vec)
    veclen = 0.0 if vec.size == 0 else _nrm2(vec)
    if veclen > 0.0:
        if np.issubdtype(vec.dtype, np.integer):
            vec = vec.astype(float)
        return (np.asarray(vec, dtype=np.float64) * (1.0 / veclen)).astype(vec.dtype)
    return vec


def _argsort(x, topn=None, reverse=False):
    """Indices of the ``topn`` smallest (largest with ``reverse``) values, like ``gensim.matutils.argsort``."""
    x = np.asarray(x)
    if topn is None:
        topn = x.size
    if topn <= 0:
        return []
    if reverse:
        x = -x
    if topn >= x.size or not hasattr(np, 'argpartition'):
        return np.argsort(x)[:topn]
    most_extreme = np.argpartition(x, topn)[:topn]
    return most_extreme.take(np.argsort(x.take(most_extreme)))


def _deprecation(name, reason):
    warnings.warn(f"Call to deprecated `{name}` ({reason}).", category=DeprecationWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# file helpers: compression by extension, atomic writes
# ---------------------------------------------------------------------------

_COMPRESSED_EXTENSIONS = ('.gz', '.bz2', '.xz', '.lzma')


def _compression_of(fname):
    name = os.fspath(fname).lower()
    for ext in _COMPRESSED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return None


def _open_read(fname):
    """Open ``fname`` for binary reading, decompressing by extension (as smart_open does)."""
    ext = _compression_of(fname)
    if ext == '.gz':
        return gzip.open(fname, 'rb')
    if ext == '.bz2':
        return bz2.open(fname, 'rb')
    if ext in ('.xz', '.lzma'):
        return lzma.open(fname, 'rb')
    return open(fname, 'rb')


_umask_lock = threading.Lock()
_umask_value = None


def _current_umask():
    global _umask_value
    with _umask_lock:
        if _umask_value is None:
            try:
                with open('/proc/self/status') as fin:
                    for line in fin:
                        if line.startswith('Umask:'):
                            _umask_value = int(line.split()[1], 8)
                            break
            except (OSError, ValueError):
                pass
            if _umask_value is None:
                _umask_value = os.umask(0o022)
                os.umask(_umask_value)
        return _umask_value


def _fsync_dir(dirname):
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_write(fname, append=False, compress=True):
    """Context manager yielding a binary stream whose content atomically replaces ``fname``.

    Data goes to a temporary file in the same directory, which is flushed,
    fsynced and then renamed over ``fname`` with :func:`os.replace`.  On error the
    temporary file is removed and ``fname`` is left untouched.  With
    ``compress`` the stream compresses by file extension (.gz, .bz2, .xz).
    With ``append`` the existing content of ``fname`` is kept in front.
    """
    fname = os.fspath(fname)
    dirname = os.path.dirname(os.path.abspath(fname))
    fd, tmp_path = tempfile.mkstemp(prefix='.' + os.path.basename(fname) + '.', suffix='.tmp', dir=dirname)
    try:
        with os.fdopen(fd, 'wb') as raw:
            if append and os.path.exists(fname):
                with open(fname, 'rb') as old:
                    shutil.copyfileobj(old, raw)
            ext = _compression_of(fname) if compress else None
            if ext == '.gz':
                stream = gzip.GzipFile(filename=os.path.basename(fname), mode='wb', fileobj=raw)
            elif ext == '.bz2':
                stream = bz2.BZ2File(raw, 'wb')
            elif ext in ('.xz', '.lzma'):
                stream = lzma.LZMAFile(raw, 'wb', format=lzma.FORMAT_XZ if ext == '.xz' else lzma.FORMAT_ALONE)
            else:
                stream = raw
            try:
                yield stream
            except BaseException:
                if stream is not raw:  # finish the compressor now, while `raw` is still open
                    try:
                        stream.close()
                    except Exception:  # pragma: no cover - already failing
                        pass
                raise
            if stream is not raw:
                stream.close()
            raw.flush()
            os.fsync(raw.fileno())
        try:
            mode = os.stat(fname).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_current_umask()
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, fname)
        _fsync_dir(dirname)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------------
# small statistics fallback (used only when scipy is not installed)
# ---------------------------------------------------------------------------

_CorrelationResult = namedtuple('CorrelationResult', ['correlation', 'pvalue'])  # type: ignore[name-match]  # keeps scipy's result name
_PearsonResult = namedtuple('PearsonResult', ['statistic', 'pvalue'])  # type: ignore[name-match]  # keeps scipy's result name


def _betacf(a, b, x):
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    tiny = 1e-300
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 3e-16:
            break
    return h


def _betainc(a, b, x):
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _corr_pvalue(r, n):
    df = n - 2
    if df <= 0 or not math.isfinite(r):
        return float('nan')
    if abs(r) >= 1.0:
        return 0.0
    t2 = r * r * df / ((1.0 - r) * (1.0 + r))
    return _betainc(0.5 * df, 0.5, df / (df + t2))


def _pearson(x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xm, ym = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(np.dot(xm, xm)) * float(np.dot(ym, ym)))
    r = float(np.dot(xm, ym)) / denom if denom > 0 else float('nan')
    r = max(min(r, 1.0), -1.0) if math.isfinite(r) else r
    return r, _corr_pvalue(r, len(x))


def _rankdata(a):
    a = np.asarray(a, dtype=np.float64)
    sorter = np.argsort(a, kind='mergesort')
    inv = np.empty(sorter.size, dtype=np.intp)
    inv[sorter] = np.arange(sorter.size)
    a = a[sorter]
    obs = np.r_[True, a[1:] != a[:-1]]
    dense = obs.cumsum()[inv]
    count = np.r_[np.nonzero(obs)[0], len(obs)]
    return 0.5 * (count[dense] + count[dense - 1] + 1)


# ---------------------------------------------------------------------------
# native single-file format
# ---------------------------------------------------------------------------

_NATIVE_MAGIC = b'BIDIRMOE-KV\x00'
_NATIVE_VERSION = 1
_NATIVE_ALIGN = 64


def _align(n, alignment=_NATIVE_ALIGN):
    return (n + alignment - 1) // alignment * alignment


def _json_key(key):
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"cannot store key of type {type(key).__name__} in the native format")
    if isinstance(key, (int, np.integer)):
        return int(key)
    raise TypeError(f"cannot store key of type {type(key).__name__} in the native format")


# ---------------------------------------------------------------------------
# KeyedVectors
# ---------------------------------------------------------------------------

class KeyedVectors:
    """Mapping between keys (such as words) and vectors, compatible with gensim 4.

    Parameters
    ----------
    vector_size : int
        Number of dimensions of every vector.
    count : int, optional
        Number of vector slots to pre-allocate (filled later by :meth:`add_vector`).
    dtype : numpy dtype, optional
        Element type of :attr:`vectors`; ``np.float32`` by default.
    mapfile_path : str, optional
        Unused, kept for gensim compatibility.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``(number_of_keys, vector_size)`` array of vectors.
    index_to_key : list
        Key stored at each row of :attr:`vectors`.
    key_to_index : dict
        Inverse of :attr:`index_to_key`.
    norms : numpy.ndarray or None
        Cached L2 norm of every row (see :meth:`fill_norms`).
    expandos : dict of {str: numpy.ndarray}
        Extra per-key attributes such as ``'count'`` (see :meth:`set_vecattr`).

    Examples
    --------
    >>> import numpy as np
    >>> from bidirmoe.keyedvectors import KeyedVectors
    >>> kv = KeyedVectors(3)
    >>> kv.add_vectors(['a', 'b'], np.eye(2, 3, dtype=np.float32))
    >>> len(kv), kv.vector_size, kv.index_to_key
    (2, 3, ['a', 'b'])
    """

    #: Extra safety factor applied to the float32 rounding bound used by the batched
    #: search to decide whether two candidate scores are too close to order reliably.
    batch_gap_safety = 1.0

    def __init__(
            self, vector_size: int, count: int = 0, dtype: DTypeLike = np.float32,
            mapfile_path: Optional[str] = None,
    ) -> None:
        self.vector_size = vector_size
        self.index_to_key = [None] * count
        self.next_index = 0
        self.key_to_index = {}  # type: ignore[var-annotated]  # keys of any type
        self.vectors = np.zeros((count, vector_size), dtype=dtype)
        self.norms = None
        self.expandos = {}  # type: ignore[var-annotated]  # str -> per-key array
        self.mapfile_path = mapfile_path
        self._batch_stats = {}  # type: ignore[var-annotated]  # str -> int

    def __str__(self) -> str:
        return f"{self.__class__.__name__}<vector_size={self.vector_size}, {len(self)} keys>"

    __repr__ = __str__

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault('_batch_stats', {})

    # ------------------------------------------------------------------
    # per-key attributes
    # ------------------------------------------------------------------

    def allocate_vecattrs(self, attrs: Optional[List[str]] = None, types: Optional[List[DTypeLike]] = None) -> None:
        """Ensure per-key attribute arrays exist with the size of :attr:`index_to_key`.

        Parameters
        ----------
        attrs : list of str, optional
            Attribute names; by default every existing attribute is resized.
        types : list of type, optional
            Element types for ``attrs``.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.ones((2, 2), dtype=np.float32))
        >>> kv.allocate_vecattrs(['count'], [int])
        >>> kv.expandos['count'].tolist()
        [0, 0]
        """
        if attrs is None:
            attrs = list(self.expandos.keys())
            types = [self.expandos[attr].dtype for attr in attrs]
        target_size = len(self.index_to_key)
        for attr, t in zip(attrs, types):  # type: ignore[arg-type]  # types is set when attrs is None
            if t is int:
                t = np.int64
            if t is str:
                t = object
            if attr not in self.expandos:
                self.expandos[attr] = np.zeros(target_size, dtype=t)
                continue
            prev_expando = self.expandos[attr]
            if not np.issubdtype(t, prev_expando.dtype):
                raise TypeError(
                    f"Can't allocate type {t} for attribute {attr}, "
                    f"conflicts with its existing type {prev_expando.dtype}"
                )
            if len(prev_expando) == target_size:
                continue
            prev_count = len(prev_expando)
            self.expandos[attr] = np.zeros(target_size, dtype=prev_expando.dtype)
            keep = min(prev_count, target_size)
            self.expandos[attr][:keep] = prev_expando[:keep]

    def set_vecattr(self, key: _Key, attr: str, val: Any) -> None:
        """Set the extra attribute ``attr`` of ``key`` to ``val``.

        Parameters
        ----------
        key : str or int
            Key whose attribute is set.
        attr : str
            Attribute name, e.g. ``'count'``.
        val : object
            New value; the first value set for ``attr`` fixes its numpy type.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.ones((1, 2), dtype=np.float32))
        >>> kv.set_vecattr('a', 'count', 7)
        >>> int(kv.get_vecattr('a', 'count'))
        7
        """
        self.allocate_vecattrs(attrs=[attr], types=[type(val)])
        index = self.get_index(key)
        self.expandos[attr][index] = val

    def get_vecattr(self, key: _Key, attr: str) -> Any:
        """Get the extra attribute ``attr`` of ``key``.

        Parameters
        ----------
        key : str or int
            Key to look up.
        attr : str
            Attribute name.

        Returns
        -------
        object
            The stored value.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.ones((1, 2), dtype=np.float32))
        >>> kv.set_vecattr('a', 'count', 3)
        >>> int(kv.get_vecattr('a', 'count'))
        3
        """
        index = self.get_index(key)
        return self.expandos[attr][index]

    def resize_vectors(self, seed: int = 0) -> None:
        """Make :attr:`vectors` match :attr:`index_to_key`; new rows are random in ``[-1, 1) / vector_size``.

        Parameters
        ----------
        seed : int, optional
            Seed of the random generator used for new rows.

        Examples
        --------
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(4)
        >>> kv.index_to_key = ['a', 'b']
        >>> kv.key_to_index = {'a': 0, 'b': 1}
        >>> kv.resize_vectors()
        >>> kv.vectors.shape
        (2, 4)
        """
        target_shape = (len(self.index_to_key), self.vector_size)
        prior = self.vectors
        if prior is None:
            prior = np.zeros((0, 0))
        if prior.shape != target_shape:
            rng = np.random.default_rng(seed=seed)
            new_vectors = rng.random(target_shape, dtype=REAL)
            new_vectors *= 2.0
            new_vectors -= 1.0
            new_vectors /= self.vector_size
            new_vectors[0:prior.shape[0], 0:prior.shape[1]] = prior
            self.vectors = new_vectors
        self.allocate_vecattrs()
        self.norms = None

    # ------------------------------------------------------------------
    # lookup
    # ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __getitem__(self, key_or_keys: Union[_Key, Iterable[_Key]]) -> NDArray[Any]:
        """Vector of one key (1D array) or of a list of keys (2D array).

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.array([[1, 2], [3, 4]], dtype=np.float32))
        >>> kv['a'].tolist(), kv[['a', 'b']].shape
        ([1.0, 2.0], (2, 2))
        """
        if isinstance(key_or_keys, _KEY_TYPES):
            return self.get_vector(key_or_keys)
        return np.vstack([self.get_vector(key) for key in key_or_keys])

    def _index_via(self, key, mapping):
        """gensim's ``get_index`` lookup against ``mapping``; -1 when absent."""
        val = mapping.get(key, -1)
        if val >= 0:
            return val
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self.index_to_key):
            return key
        return -1

    def get_index(self, key: _Key, default: Optional[int] = None) -> int:
        """Row index of ``key`` in :attr:`vectors`.

        Integer keys that are not in the vocabulary are treated as row indices
        (like gensim).

        Parameters
        ----------
        key : str or int
            Key to look up.
        default : int, optional
            Returned when the key is absent; otherwise ``KeyError`` is raised.

        Returns
        -------
        int

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.ones((2, 2), dtype=np.float32))
        >>> kv.get_index('b'), kv.get_index('zzz', -1)
        (1, -1)
        """
        val = self.key_to_index.get(key, -1)
        if val >= 0:
            return val
        elif isinstance(key, (int, np.integer)) and 0 <= key < len(self.index_to_key):
            return key  # type: ignore[return-value]  # an in-range np.integer key is returned as given
        elif default is not None:
            return default
        else:
            raise KeyError(f"Key '{key}' not present")

    def get_vector(self, key: _Key, norm: bool = False) -> NDArray[Any]:
        """The vector of ``key`` as a read-only 1D array.

        Parameters
        ----------
        key : str or int
            Key to look up.
        norm : bool, optional
            Return the L2-normalized vector.

        Returns
        -------
        numpy.ndarray

        Raises
        ------
        KeyError
            If the key is absent.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[3, 4]], dtype=np.float32))
        >>> kv.get_vector('a', norm=True).tolist()
        [0.6000000238418579, 0.800000011920929]
        """
        index = self.get_index(key)
        if norm:
            self.fill_norms()
            result = self.vectors[index] / self.norms[index]  # type: ignore[index]  # norms set by fill_norms()
        else:
            result = self.vectors[index]
        result.setflags(write=False)
        return result

    def word_vec(self, *args: Any, **kwargs: Any) -> NDArray[Any]:
        """Deprecated alias of :meth:`get_vector`.

        Examples
        --------
        >>> import warnings, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[3, 4]], dtype=np.float32))
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter('ignore')
        ...     kv.word_vec('a').tolist()
        [3.0, 4.0]
        """
        _deprecation('word_vec', 'Use get_vector instead')
        return self.get_vector(*args, **kwargs)

    def has_index_for(self, key: _Key) -> bool:
        """Whether ``key`` maps to a row of :attr:`vectors`.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.ones((1, 2), dtype=np.float32))
        >>> kv.has_index_for('a'), kv.has_index_for('b')
        (True, False)
        """
        return self.get_index(key, -1) >= 0

    def __contains__(self, key: _Key) -> bool:
        return self.has_index_for(key)

    # ------------------------------------------------------------------
    # adding vectors
    # ------------------------------------------------------------------

    def add_vector(self, key: _Key, vector: ArrayLike) -> int:
        """Add one vector, into a pre-allocated slot when available.

        Parameters
        ----------
        key : str or int
            New key.
        vector : numpy.ndarray
            1D vector.

        Returns
        -------
        int
            Row index of the new vector.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2, count=2)
        >>> kv.add_vector('a', np.array([1, 2], dtype=np.float32))
        0
        >>> kv.add_vector('b', np.array([3, 4], dtype=np.float32))
        1
        """
        target_index = self.next_index
        if target_index >= len(self) or self.index_to_key[target_index] is not None:
            target_index = len(self)
            warnings.warn(
                "Adding single vectors to a KeyedVectors which grows by one each time can be costly. "
                "Consider adding in batches or preallocating to the required size.",
                UserWarning)
            self.add_vectors([key], [vector])
            self.allocate_vecattrs()
            self.next_index = target_index + 1
        else:
            self.index_to_key[target_index] = key  # type: ignore[call-overload]  # slot pre-allocated as None
            self.key_to_index[key] = target_index
            self.vectors[target_index] = vector
            self.next_index += 1
            self.norms = None
        return target_index

    def add_vectors(
            self, keys: Union[_Key, Sequence[_Key]], weights: Union[NDArray[Any], List[ArrayLike]],
            extras: Optional[Mapping[str, NDArray[Any]]] = None, replace: bool = False,
    ) -> None:
        """Append keys and their vectors.

        Keys already present keep their old vector unless ``replace`` is True.

        Parameters
        ----------
        keys : str or int or list of (str or int)
            Keys to add.
        weights : numpy.ndarray or list of numpy.ndarray
            2D array (or list of 1D vectors) with one row per key.
        extras : dict of {str: numpy.ndarray}, optional
            Per-key attribute values, one array per attribute.
        replace : bool, optional
            Overwrite vectors of keys that are already present.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.array([[1, 0], [0, 1]], dtype=np.float32))
        >>> kv.add_vectors(['b', 'c'], np.array([[5, 5], [1, 1]], dtype=np.float32), replace=True)
        >>> kv.index_to_key, kv['b'].tolist()
        (['a', 'b', 'c'], [5.0, 5.0])
        """
        if isinstance(keys, _KEY_TYPES):
            keys = [keys]
            weights = np.array(weights).reshape(1, -1)
        elif isinstance(weights, list):
            weights = np.array(weights)
        if extras is None:
            extras = {}
        extras = {attr: np.asarray(extra) for attr, extra in extras.items()}

        self.allocate_vecattrs(list(extras.keys()), [extras[k].dtype for k in extras.keys()])

        in_vocab_mask = np.zeros(len(keys), dtype=bool)
        for idx, key in enumerate(keys):
            if key in self.key_to_index:
                in_vocab_mask[idx] = True

        for idx in np.nonzero(~in_vocab_mask)[0]:  # type: ignore[assignment]  # idx reused as a numpy index
            key = keys[idx]
            self.key_to_index[key] = len(self.index_to_key)
            self.index_to_key.append(key)  # type: ignore[arg-type]  # index_to_key starts as [None] * count

        self.vectors = np.vstack((self.vectors, weights[~in_vocab_mask].astype(self.vectors.dtype)))
        for attr, extra in extras.items():
            self.expandos[attr] = np.concatenate((self.expandos[attr], extra[~in_vocab_mask]))

        if replace:
            in_vocab_idxs = [self.get_index(keys[idx]) for idx in np.nonzero(in_vocab_mask)[0]]  # type: ignore[call-overload]  # numpy index
            self.vectors[in_vocab_idxs] = weights[in_vocab_mask]
            for attr, extra in extras.items():
                self.expandos[attr][in_vocab_idxs] = extra[in_vocab_mask]
        # keep other per-key attributes (e.g. 'count') as long as index_to_key
        self.allocate_vecattrs()
        self.next_index = max(self.next_index, len(self.index_to_key))
        self.norms = None

    def __setitem__(self, keys: Union[_Key, List[str], List[int], List[_Key]], weights: NDArray[Any]) -> None:
        """Add or replace vectors: ``kv[keys] = weights`` is ``add_vectors(keys, weights, replace=True)``.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv['a'] = np.array([1, 2], dtype=np.float32)
        >>> kv['a'].tolist()
        [1.0, 2.0]
        """
        if not isinstance(keys, list):
            keys = [keys]
            weights = weights.reshape(1, -1)
        self.add_vectors(keys, weights, replace=True)

    # ------------------------------------------------------------------
    # norms
    # ------------------------------------------------------------------

    @property
    def vectors_norm(self) -> NoReturn:
        raise AttributeError(
            "The `.vectors_norm` attribute is computed dynamically since Gensim 4.0.0. "
            "Use `.get_normed_vectors()` instead."
        )

    @vectors_norm.setter
    def vectors_norm(self, _: Any) -> None:
        pass

    def get_normed_vectors(self) -> NDArray[Any]:
        """All vectors scaled to unit L2 length, as a new 2D array.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[3, 4]], dtype=np.float32))
        >>> kv.get_normed_vectors().astype(float).round(2).tolist()
        [[0.6, 0.8]]
        """
        self.fill_norms()
        return self.vectors / self.norms[..., np.newaxis]  # type: ignore[index]  # norms set by fill_norms()

    def fill_norms(self, force: bool = False) -> None:
        """Compute and cache the L2 norm of every vector in :attr:`norms`.

        Parameters
        ----------
        force : bool, optional
            Recompute even if :attr:`norms` is already set.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[3, 4]], dtype=np.float32))
        >>> kv.fill_norms()
        >>> kv.norms.tolist()
        [5.0]
        """
        if self.norms is None or force:
            self.norms = np.linalg.norm(self.vectors, axis=1)

    def init_sims(self, replace: bool = False) -> None:
        """Deprecated: use :meth:`fill_norms` (``replace=True`` calls :meth:`unit_normalize_all`).

        Examples
        --------
        >>> import warnings, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[3, 4]], dtype=np.float32))
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter('ignore')
        ...     kv.init_sims()
        >>> kv.norms.tolist()
        [5.0]
        """
        _deprecation('init_sims', 'Use fill_norms() instead.')
        self.fill_norms()
        if replace:
            logger.warning("destructive init_sims(replace=True) deprecated & no longer required for space-efficiency")
            self.unit_normalize_all()

    def unit_normalize_all(self) -> None:
        """Destructively scale all vectors to unit length.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[3, 4]], dtype=np.float32))
        >>> kv.unit_normalize_all()
        >>> kv['a'].astype(float).round(2).tolist()
        [0.6, 0.8]
        """
        self.fill_norms()
        self.vectors /= self.norms[..., np.newaxis]  # type: ignore[index]  # norms set by fill_norms()
        self.norms = np.ones((len(self.vectors),))  # type: ignore[assignment]  # norms starts as None

    def sort_by_descending_frequency(self) -> None:
        """Reorder keys (and vectors) by descending ``'count'`` attribute.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['rare', 'common'], np.eye(2, dtype=np.float32))
        >>> kv.set_vecattr('rare', 'count', 1); kv.set_vecattr('common', 'count', 10)
        >>> kv.sort_by_descending_frequency()
        >>> kv.index_to_key
        ['common', 'rare']
        """
        if not len(self):
            return
        counts = np.asarray(self.expandos['count'], dtype=np.int64)
        indices = np.arange(len(counts))
        count_sorted_indexes = np.lexsort((-indices, -counts))
        self.index_to_key = [self.index_to_key[idx] for idx in count_sorted_indexes]
        self.allocate_vecattrs()
        for k in self.expandos:
            self.expandos[k] = self.expandos[k][count_sorted_indexes]
        if len(self.vectors):
            logger.warning("sorting after vectors have been allocated is expensive & error-prone")
            self.vectors = self.vectors[count_sorted_indexes]
        self.key_to_index = {word: i for i, word in enumerate(self.index_to_key)}
        self.norms = None

    # ------------------------------------------------------------------
    # mean vectors
    # ------------------------------------------------------------------

    def _mean_vector(self, keys, weights, pre_normalize, post_normalize, ignore_missing, mapping):
        """Body of :meth:`get_mean_vector`, with keys resolved through ``mapping``."""
        if len(keys) == 0:
            raise ValueError("cannot compute mean with no input")
        if isinstance(weights, list):
            weights = np.array(weights, dtype=self.vectors.dtype)
        if weights is None:
            weights = np.ones(len(keys), dtype=self.vectors.dtype)
        if len(keys) != weights.shape[0]:
            raise ValueError("keys and weights array must have same number of elements")

        mean = np.zeros(self.vector_size, self.vectors.dtype)
        total_weight = 0
        for idx, key in enumerate(keys):
            if isinstance(key, ndarray):
                mean += weights[idx] * key
                total_weight += abs(weights[idx])
                continue
            index = self._index_via(key, mapping)
            if index >= 0:
                if pre_normalize:
                    self.fill_norms()
                    vec = self.vectors[index] / self.norms[index]
                else:
                    vec = self.vectors[index]
                mean += weights[idx] * vec
                total_weight += abs(weights[idx])
            elif not ignore_missing:
                raise KeyError(f"Key '{key}' not present in vocabulary")

        if total_weight > 0:
            mean = mean / total_weight
        if post_normalize:
            mean = _unitvec(mean).astype(REAL)
        return mean

    def get_mean_vector(
            self, keys: Union[Sequence[_KeyOrVector], NDArray[Any]],
            weights: Optional[Union[List[float], NDArray[Any]]] = None,
            pre_normalize: bool = True, post_normalize: bool = False, ignore_missing: bool = True,
    ) -> NDArray[np.floating[Any]]:
        """Weighted mean of the vectors of ``keys``.

        Parameters
        ----------
        keys : list of (str or int or numpy.ndarray)
            Keys, or raw vectors used as given.
        weights : list of float or numpy.ndarray, optional
            One weight per key (default 1.0).
        pre_normalize : bool, optional
            Unit-normalize each key vector before averaging.
        post_normalize : bool, optional
            Unit-normalize the mean.
        ignore_missing : bool, optional
            Skip unknown keys instead of raising ``KeyError``.

        Returns
        -------
        numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.array([[2, 0], [0, 4]], dtype=np.float32))
        >>> kv.get_mean_vector(['a', 'b']).tolist()
        [0.5, 0.5]
        """
        return self._mean_vector(keys, weights, pre_normalize, post_normalize, ignore_missing, self.key_to_index)

    # ------------------------------------------------------------------
    # similarity queries
    # ------------------------------------------------------------------

    def _prepare_query(self, positive, negative, mapping):
        """Weighted, normalized query vector and input-key indices, exactly as gensim's most_similar."""
        positive = _ensure_list(positive)
        negative = _ensure_list(negative)
        self.fill_norms()
        keys = []
        weight = np.concatenate((np.ones(len(positive)), -1.0 * np.ones(len(negative))))
        for idx, item in enumerate(positive + negative):
            if isinstance(item, _EXTENDED_KEY_TYPES):
                keys.append(item)
            else:
                keys.append(item[0])
                weight[idx] = item[1]
        mean = self._mean_vector(keys, weight, True, True, False, mapping)
        all_keys = []
        for key in keys:
            if isinstance(key, _KEY_TYPES):
                index = self._index_via(key, mapping)
                if index >= 0:
                    all_keys.append(index)
        return mean, all_keys

    @staticmethod
    def _clip_range(n_vectors, clip_start, clip_end, restrict_vocab):
        clip_end = clip_end or n_vectors
        if restrict_vocab:
            clip_start = 0
            clip_end = restrict_vocab
        return clip_start, clip_end

    def _exact_dists(self, mean, clip_start, clip_end):
        return np.dot(self.vectors[clip_start:clip_end], mean) / self.norms[clip_start:clip_end]

    def _exact_top(self, dists, topn, all_keys, clip_start):
        best = _argsort(dists, topn=topn + len(all_keys), reverse=True)
        result = [
            (self.index_to_key[sim + clip_start], float(dists[sim]))
            for sim in best if (sim + clip_start) not in all_keys
        ]
        return result[:topn]

    def most_similar(
            self, positive: Optional[_Query] = None, negative: Optional[_Query] = None, topn: Optional[int] = 10,
            clip_start: int = 0, clip_end: Optional[int] = None, restrict_vocab: Optional[int] = None,
            indexer: Optional[Any] = None,
    ) -> _SimilarResult:
        """Top-N most similar keys by cosine similarity to the mean of the inputs.

        Positive keys count positively, negative keys negatively (3CosAdd).
        Input keys are excluded from the result.

        Parameters
        ----------
        positive : key, vector, or list of (key or vector or (key, weight)), optional
            Keys contributing positively; a tuple's second element is its weight (default 1.0).
        negative : key, vector, or list of (key or vector or (key, weight)), optional
            Keys contributing negatively (default weight -1.0).
        topn : int or None, optional
            Number of results.  ``None`` returns the similarity to every key as an array.
        clip_start : int, optional
            First row searched.
        clip_end : int, optional
            End (exclusive) of the rows searched.
        restrict_vocab : int, optional
            Only search the first ``restrict_vocab`` rows (overrides clip_start/clip_end).
        indexer : object, optional
            Approximate-nearest-neighbour indexer with a ``most_similar(vector, topn)`` method.

        Returns
        -------
        list of (key, float) or numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> [(k, round(s, 3)) for k, s in kv.most_similar('cat', topn=2)]
        [('dog', 0.976), ('car', 0.0)]
        """
        if isinstance(topn, Integral) and topn < 1:
            return []
        mean, all_keys = self._prepare_query(positive, negative, self.key_to_index)
        clip_start, clip_end = self._clip_range(len(self.vectors), clip_start, clip_end, restrict_vocab)
        if indexer is not None and isinstance(topn, int):
            return indexer.most_similar(mean, topn)
        dists = self._exact_dists(mean, clip_start, clip_end)
        if not topn:
            return dists
        return self._exact_top(dists, topn, all_keys, clip_start)

    def similar_by_key(
            self, key: _Key, topn: Optional[int] = 10, restrict_vocab: Optional[int] = None,
    ) -> _SimilarResult:
        """Top-N most similar keys to ``key`` (``most_similar(positive=[key])``).

        Parameters
        ----------
        key : str or int
            Query key.
        topn : int or None, optional
            Number of results; ``None`` returns all similarities.
        restrict_vocab : int, optional
            Only search the first ``restrict_vocab`` rows.

        Returns
        -------
        list of (key, float) or numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.similar_by_key('cat', topn=1)[0][0]
        'dog'
        """
        return self.most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_word(
            self, word: _Key, topn: Optional[int] = 10, restrict_vocab: Optional[int] = None,
    ) -> _SimilarResult:
        """Alias of :meth:`similar_by_key`.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.similar_by_word('car', topn=1)[0][0]
        'dog'
        """
        return self.similar_by_key(word, topn, restrict_vocab)

    def similar_by_vector(
            self, vector: NDArray[Any], topn: Optional[int] = 10, restrict_vocab: Optional[int] = None,
    ) -> _SimilarResult:
        """Top-N most similar keys to a raw vector.

        Parameters
        ----------
        vector : numpy.ndarray
            Query vector.
        topn : int or None, optional
            Number of results; ``None`` returns all similarities.
        restrict_vocab : int, optional
            Only search the first ``restrict_vocab`` rows.

        Returns
        -------
        list of (key, float) or numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.similar_by_vector(np.array([0.1, 1.0], dtype=np.float32), topn=1)[0][0]
        'car'
        """
        return self.most_similar(positive=[vector], topn=topn, restrict_vocab=restrict_vocab)

    def most_similar_batch(
            self, queries: Iterable[Union[Dict[str, Optional[_Query]], _Query]], topn: Optional[int] = 10,
            clip_start: int = 0, clip_end: Optional[int] = None, restrict_vocab: Optional[int] = None,
            batch_size: int = 512,
    ) -> List[_SimilarResult]:
        """Run :meth:`most_similar` for many queries, one matrix product per block.

        The result equals ``[self.most_similar(...) for each query]`` (same keys in
        the same order, scores equal to float rounding).  Queries whose candidate
        scores are too close to order reliably in float32 are recomputed exactly.

        Parameters
        ----------
        queries : iterable
            Each query is either a ``dict`` with ``'positive'`` and/or ``'negative'``
            entries, or anything :meth:`most_similar` accepts as ``positive``
            (a key, a vector, or a list of keys / vectors / (key, weight) pairs).
        topn : int or None, optional
            Number of results per query; ``None`` returns full similarity arrays.
        clip_start, clip_end, restrict_vocab : int, optional
            As in :meth:`most_similar`.
        batch_size : int, optional
            Queries per matrix product.

        Returns
        -------
        list
            One :meth:`most_similar` result per query.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> [[k for k, _ in r] for r in kv.most_similar_batch(['cat', {'positive': ['car']}], topn=1)]
        [['dog'], ['dog']]
        """
        queries = list(queries)
        prepared = []
        for query in queries:
            if isinstance(query, dict):
                positive, negative = query.get('positive'), query.get('negative')
            else:
                positive, negative = query, None
            prepared.append((positive, negative))
        if isinstance(topn, Integral) and topn < 1:
            return [[] for _ in prepared]
        if not topn:
            return [self.most_similar(p, n, topn=topn, clip_start=clip_start, clip_end=clip_end,
                                      restrict_vocab=restrict_vocab) for p, n in prepared]
        self.fill_norms()
        start, end = self._clip_range(len(self.vectors), clip_start, clip_end, restrict_vocab)
        means, inputs = [], []
        for positive, negative in prepared:
            mean, all_keys = self._prepare_query(positive, negative, self.key_to_index)
            means.append(mean)
            inputs.append(all_keys)
        results = [None] * len(prepared)
        stats = {'queries': len(prepared), 'exact_fallbacks': 0}
        n_rows = len(self.vectors[start:end])
        if not prepared:
            self._batch_stats = stats
            return results  # type: ignore[return-value]  # filled in place of the None placeholders
        max_inputs = max(len(k) for k in inputs)
        k_needed = topn + max_inputs + 1
        if n_rows <= k_needed:
            # tiny search range: exact computation is as cheap as anything else
            for qi, (mean, all_keys) in enumerate(zip(means, inputs)):
                results[qi] = self._exact_top(self._exact_dists(mean, start, end), topn, all_keys, start)
            stats['exact_fallbacks'] = len(prepared)
            self._batch_stats = stats
            return results  # type: ignore[return-value]  # filled in place of the None placeholders
        group = self._group_width(n_rows, k_needed)
        normed, n_valid, bad_rows = self._normalized_range(start, end, group)
        tol = self._gap_tolerance()
        mean_matrix = np.vstack(means).astype(np.float32)
        buffer, chunk_columns = self._score_buffer(min(batch_size, len(prepared)), normed.shape[0], group, k_needed)
        for block_start in range(0, len(prepared), batch_size):
            block = slice(block_start, block_start + batch_size)
            cand_idx, cand_val = self._block_topk(
                mean_matrix[block], normed, n_valid, bad_rows, k_needed, group, buffer, chunk_columns)
            for row, qi in enumerate(range(block_start, min(block_start + batch_size, len(prepared)))):
                all_keys = inputs[qi]
                idx_row = cand_idx[row]
                val_row = cand_val[row]
                n_best = topn + len(all_keys)
                chosen = []
                last_rank = n_best - 1
                for rank in range(n_best):
                    if idx_row[rank] + start not in all_keys:
                        chosen.append(idx_row[rank])
                        if len(chosen) == topn:
                            last_rank = rank
                            break
                if self._ranks_reliable(val_row, last_rank, tol):
                    sel = np.asarray(chosen, dtype=np.intp) + start
                    scores = np.dot(self.vectors[sel], means[qi]) / self.norms[sel]  # type: ignore[index]  # norms set by fill_norms()
                    results[qi] = [  # type: ignore[call-overload]  # replaces a None placeholder
                        (self.index_to_key[i], float(s)) for i, s in zip(sel.tolist(), scores.tolist())
                    ]
                else:
                    stats['exact_fallbacks'] += 1
                    results[qi] = self._exact_top(self._exact_dists(means[qi], start, end), topn, all_keys, start)
        self._batch_stats = stats
        return results  # type: ignore[return-value]  # filled in place of the None placeholders

    # -- batched search machinery --------------------------------------

    def _gap_tolerance(self):
        """Minimum score gap that batched float32 scoring can order exactly like gensim.

        A float32 dot product of length ``d`` has an error of at most about
        ``d * 2**-24`` times the product of the norms, whatever the summation order
        (BLAS blocking, FMA).  Our score (normalized rows times query, one GEMM) and
        gensim's (raw rows times query, GEMV, divided by the same norms) therefore
        differ by at most ``per_score = (2 d + 8 + 2 sqrt(d)) * 2**-24`` (both
        dot products, the normalization roundings and a last-bit difference of the
        query vector).  Two candidates whose scores differ by more than
        ``2 * per_score`` are ordered identically by both computations.
        """
        d = self.vector_size
        u = 2.0 ** -24
        per_score = (2 * d + 8 + 2 * math.sqrt(d)) * u
        return 2.0 * per_score * float(self.batch_gap_safety)

    @staticmethod
    def _ranks_reliable(values, last_rank, tol):
        """True when ranks ``0..last_rank`` and the next one are separated by more than ``tol``."""
        stop = min(last_rank + 1, len(values) - 1)
        prev = values[0]
        if not math.isfinite(prev):
            return False
        for rank in range(1, stop + 1):
            cur = values[rank]
            if not math.isfinite(cur) or prev - cur <= tol:
                return False
            prev = cur
        return True

    @staticmethod
    def _group_width(n_rows, k):
        """Width of the column groups used by :meth:`_block_topk` (at least ``4 * k`` groups)."""
        return int(max(1, min(128, n_rows // (4 * k))))

    def _normalized_range(self, start, end, group):
        """Unit-normalized float32 copy of rows ``start:end``, zero-padded to a multiple of ``group`` rows.

        Returns ``(normed, n_valid, bad_rows)`` where ``bad_rows`` lists rows with a
        zero or non-finite norm (whose gensim score is NaN) or is None.
        """
        vectors = self.vectors[start:end]
        n_valid = len(vectors)
        norms = np.asarray(self.norms[start:end], dtype=np.float32)
        bad = ~np.isfinite(norms) | (norms == 0)
        n_padded = -(-n_valid // group) * group
        normed = np.zeros((n_padded, self.vector_size), dtype=np.float32)
        with np.errstate(all='ignore'):
            np.divide(np.asarray(vectors, dtype=np.float32), norms[:, None], out=normed[:n_valid])
        bad_rows = None
        if bad.any():
            bad_rows = np.nonzero(bad)[0]
            normed[bad_rows] = 0.0
        return normed, n_valid, bad_rows

    #: Approximate size in bytes of the score buffer of one block of batched queries.
    batch_buffer_bytes = 64 * 1024 * 1024

    def _score_buffer(self, n_queries, n_padded, group, k):
        """Flat float32 buffer for one block of scores, covering a whole number of column groups."""
        columns = max(self.batch_buffer_bytes // (4 * max(n_queries, 1)), group * k)
        columns = min(n_padded, -(-columns // group) * group)
        return np.empty(n_queries * columns, dtype=np.float32), columns

    @staticmethod
    def _block_topk(query_block, normed, n_valid, bad_rows, k, group, buffer, chunk_columns):
        """Top-``k`` rows of ``normed`` for each query of ``query_block``, by descending dot product.

        The scores of the block are computed with one matrix product per column
        chunk of ``chunk_columns`` rows of ``normed`` (one product in total for
        vocabularies that fit the buffer).  Candidates are found without a full
        partition: the ``k``-th largest of the per-group maxima is a lower bound of
        the ``k``-th largest score, so only the few groups reaching it are examined.

        Returns ``(indices, values)`` as nested lists sorted by descending score; a
        row whose scores are not comparable (NaN) gets NaN values, which callers
        treat as unreliable.
        """
        n_q = len(query_block)
        n_padded = normed.shape[0]
        best = None  # running top-k group maxima per query
        threshold = np.full(n_q, -np.inf, dtype=np.float32)
        found_rows, found_cols, found_vals = [], [], []
        for c0 in range(0, n_padded, chunk_columns):
            c1 = min(c0 + chunk_columns, n_padded)
            width = c1 - c0
            scores = buffer[:n_q * width].reshape(n_q, width)
            np.dot(query_block, normed[c0:c1].T, out=scores)
            if c1 > n_valid:
                scores[:, max(n_valid - c0, 0):] = -np.inf
            if bad_rows is not None:
                local = bad_rows[(bad_rows >= c0) & (bad_rows < c1)] - c0
                if len(local):
                    scores[:, local] = -np.inf
            # group j of this chunk = columns j, j + n_groups, j + 2 * n_groups, ... (strided groups
            # make the maximum a fast element-wise reduction over whole rows)
            n_groups = width // group
            grouped = scores.reshape(n_q, group, n_groups)
            group_max = np.maximum.reduce(grouped, axis=1)
            merged = group_max if best is None else np.concatenate((best, group_max), axis=1)
            if merged.shape[1] > k:
                best = np.partition(merged, merged.shape[1] - k, axis=1)[:, merged.shape[1] - k:]
            else:
                best = merged
            if best.shape[1] >= k:
                threshold = best.min(axis=1)
            rows, groups = np.nonzero(group_max >= threshold[:, None])
            blocks = grouped[rows, :, groups]  # (n_selected, group)
            r_in_block, pos_in_group = np.nonzero(blocks >= threshold[rows][:, None])
            found_rows.append(rows[r_in_block])
            found_cols.append(c0 + pos_in_group * n_groups + groups[r_in_block])
            found_vals.append(blocks[r_in_block, pos_in_group])
        cand_rows = np.concatenate(found_rows)
        cols = np.concatenate(found_cols)
        vals = np.concatenate(found_vals)
        if len(found_rows) > 1:  # earlier chunks used a lower running threshold
            keep = vals >= threshold[cand_rows]
            cand_rows, cols, vals = cand_rows[keep], cols[keep], vals[keep]
        order = np.lexsort((cols, -vals, cand_rows))
        cand_rows, cols, vals = cand_rows[order], cols[order], vals[order]
        counts = np.bincount(cand_rows, minlength=n_q)
        starts = np.zeros(n_q, dtype=np.intp)
        np.cumsum(counts[:-1], out=starts[1:])
        valid = counts >= k
        if len(cols) == 0:
            idx = np.zeros((n_q, k), dtype=np.intp)
            out_vals = np.full((n_q, k), np.nan)
        else:
            positions = np.minimum(starts[:, None] + np.arange(k), len(cols) - 1)
            idx = cols[positions]
            out_vals = vals[positions].astype(np.float64)
        if not valid.all():
            out_vals[~valid] = np.nan
        return idx.tolist(), out_vals.tolist()

    # ------------------------------------------------------------------

    def most_similar_cosmul(
            self, positive: Optional[_CosmulQuery] = None, negative: Optional[_CosmulQuery] = None,
            topn: Optional[int] = 10, restrict_vocab: Optional[int] = None,
    ) -> _SimilarResult:
        """Top-N most similar keys with the multiplicative 3CosMul objective (Levy & Goldberg).

        Parameters
        ----------
        positive : list of (str or numpy.ndarray), optional
            Keys contributing positively.
        negative : list of (str or numpy.ndarray), optional
            Keys contributing negatively.
        topn : int or None, optional
            Number of results; ``None`` returns all scores.
        restrict_vocab : int, optional
            Accepted for compatibility; ignored by gensim 4 as well.

        Returns
        -------
        list of (key, float) or numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.most_similar_cosmul(positive=['cat'], topn=1)[0][0]
        'dog'
        """
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive = _ensure_list(positive)
        negative = _ensure_list(negative)
        self.fill_norms()
        if isinstance(positive, str):
            positive = [positive]
        if isinstance(negative, str):
            negative = [negative]
        all_words = {
            self.get_index(word) for word in positive + negative  # type: ignore[operator]  # both are lists here
            if not isinstance(word, ndarray) and word in self.key_to_index
        }
        positive = [self.get_vector(word, norm=True) if isinstance(word, str) else word for word in positive]
        negative = [self.get_vector(word, norm=True) if isinstance(word, str) else word for word in negative]
        if not positive:
            raise ValueError("cannot compute similarity with no input")
        pos_dists = [((1 + np.dot(self.vectors, term) / self.norms) / 2) for term in positive]
        neg_dists = [((1 + np.dot(self.vectors, term) / self.norms) / 2) for term in negative]
        dists = np.prod(pos_dists, axis=0) / (np.prod(neg_dists, axis=0) + 0.000001)
        if not topn:
            return dists
        best = _argsort(dists, topn=topn + len(all_words), reverse=True)
        result = [(self.index_to_key[sim], float(dists[sim])) for sim in best if sim not in all_words]
        return result[:topn]

    def rank_by_centrality(self, words: Sequence[str], use_norm: bool = True) -> List[Tuple[np.floating[Any], str]]:
        """Rank ``words`` by cosine similarity to their centroid (most central first).

        Parameters
        ----------
        words : list of str
            Keys; unknown keys are ignored with a warning.
        use_norm : bool, optional
            Use unit-normalized vectors for the centroid.

        Returns
        -------
        list of (float, str)

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> [w for _, w in kv.rank_by_centrality(['cat', 'dog', 'car'])]
        ['dog', 'cat', 'car']
        """
        self.fill_norms()
        used_words = [word for word in words if word in self]
        if len(used_words) != len(words):
            ignored_words = set(words) - set(used_words)
            logger.warning("vectors for words %s are not present in the model, ignoring these words", ignored_words)
        if not used_words:
            raise ValueError("cannot select a word from an empty list")
        vectors = np.vstack([self.get_vector(word, norm=use_norm) for word in used_words]).astype(REAL)
        mean = self.get_mean_vector(vectors, post_normalize=True)
        dists = np.dot(vectors, mean)
        return sorted(zip(dists, used_words), reverse=True)

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The key from ``words`` furthest from the centroid of all of them.

        Parameters
        ----------
        words : list of str
            Keys.

        Returns
        -------
        str

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.doesnt_match(['cat', 'dog', 'car'])
        'car'
        """
        return self.rank_by_centrality(words)[-1][1]

    @staticmethod
    def cosine_similarities(vector_1: NDArray[Any], vectors_all: NDArray[Any]) -> NDArray[np.floating[Any]]:
        """Cosine similarity between ``vector_1`` and every row of ``vectors_all``.

        Parameters
        ----------
        vector_1 : numpy.ndarray
            Shape ``(dim,)``.
        vectors_all : numpy.ndarray
            Shape ``(num_vectors, dim)``.

        Returns
        -------
        numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> KeyedVectors.cosine_similarities(np.array([1.0, 0.0]), np.array([[2.0, 0.0], [0.0, 3.0]])).tolist()
        [1.0, 0.0]
        """
        norm = np.linalg.norm(vector_1)
        all_norms = np.linalg.norm(vectors_all, axis=1)
        dot_products = np.dot(vectors_all, vector_1)
        return dot_products / (norm * all_norms)

    def distances(
            self, word_or_vector: _KeyOrVector, other_words: Iterable[_Key] = (),
    ) -> NDArray[np.floating[Any]]:
        """Cosine distances from a key or vector to ``other_words`` (default: every key).

        Parameters
        ----------
        word_or_vector : str or numpy.ndarray
            Key or vector.
        other_words : iterable of str, optional
            Keys to measure against; empty means the whole vocabulary.

        Returns
        -------
        numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['x', 'y'], np.array([[1, 0], [0, 1]], dtype=np.float32))
        >>> kv.distances('x').tolist()
        [0.0, 1.0]
        """
        if isinstance(word_or_vector, _KEY_TYPES):
            input_vector = self.get_vector(word_or_vector)
        else:
            input_vector = word_or_vector
        if not other_words:
            other_vectors = self.vectors
        else:
            other_indices = [self.get_index(word) for word in other_words]
            other_vectors = self.vectors[other_indices]
        return 1 - self.cosine_similarities(input_vector, other_vectors)

    def distance(self, w1: _Key, w2: _Key) -> np.floating[Any]:
        """Cosine distance ``1 - similarity(w1, w2)``.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['x', 'y'], np.array([[1, 0], [0, 1]], dtype=np.float32))
        >>> float(kv.distance('x', 'y'))
        1.0
        """
        return 1 - self.similarity(w1, w2)

    def similarity(self, w1: _Key, w2: _Key) -> np.floating[Any]:
        """Cosine similarity between two keys.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['x', 'y'], np.array([[1, 0], [1, 1]], dtype=np.float32))
        >>> round(float(kv.similarity('x', 'y')), 4)
        0.7071
        """
        return np.dot(_unitvec(self[w1]), _unitvec(self[w2]))

    def n_similarity(self, ws1: Sequence[_KeyOrVector], ws2: Sequence[_KeyOrVector]) -> np.floating[Any]:
        """Cosine similarity between the means of two lists of keys.

        Raises
        ------
        ZeroDivisionError
            If either list is empty.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['x', 'y', 'z'], np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
        >>> round(float(kv.n_similarity(['x', 'y'], ['z'])), 4)
        1.0
        """
        if not (len(ws1) and len(ws2)):
            raise ZeroDivisionError('At least one of the passed list is empty.')
        mean1 = self.get_mean_vector(ws1, pre_normalize=False)
        mean2 = self.get_mean_vector(ws2, pre_normalize=False)
        return np.dot(_unitvec(mean1), _unitvec(mean2))

    def most_similar_to_given(self, key1: _Key, keys_list: Sequence[str]) -> str:
        """The key from ``keys_list`` most similar to ``key1``.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.most_similar_to_given('cat', ['car', 'dog'])
        'dog'
        """
        return keys_list[np.argmax([self.similarity(key1, key) for key in keys_list])]  # type: ignore[call-overload]  # numpy index

    def closer_than(self, key1: _Key, key2: _Key) -> List[str]:
        """All keys closer to ``key1`` than ``key2`` is.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.closer_than('cat', 'car')
        ['dog']
        """
        all_distances = self.distances(key1)
        e1_index = self.get_index(key1)
        e2_index = self.get_index(key2)
        closer_node_indices = np.where(all_distances < all_distances[e2_index])[0]
        return [self.index_to_key[index] for index in closer_node_indices if index != e1_index]

    def words_closer_than(self, word1: _Key, word2: _Key) -> List[str]:
        """Deprecated alias of :meth:`closer_than`.

        Examples
        --------
        >>> import warnings, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter('ignore')
        ...     kv.words_closer_than('cat', 'car')
        ['dog']
        """
        _deprecation('words_closer_than', 'Use closer_than instead')
        return self.closer_than(word1, word2)

    def rank(self, key1: _Key, key2: _Key) -> int:
        """Rank of ``key2`` among all keys ordered by distance from ``key1`` (1 = closest).

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.rank('cat', 'car')
        2
        """
        return len(self.closer_than(key1, key2)) + 1

    def relative_cosine_similarity(self, wa: _Key, wb: _Key, topn: int = 10) -> float:
        """Relative cosine similarity of ``wb`` to ``wa`` against ``wa``'s top-N neighbours.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> round(kv.relative_cosine_similarity('cat', 'dog', topn=1), 4)
        1.0
        """
        sims = self.similar_by_word(wa, topn)
        if not sims:
            raise ValueError("Cannot calculate relative cosine similarity without any similar words.")
        return float(self.similarity(wa, wb)) / (sum(sim for _, sim in sims))

    def vectors_for_all(
            self: _KeyedVectorsT, keys: Iterable[_Key], allow_inference: bool = True, copy_vecattrs: bool = False,
    ) -> _KeyedVectorsT:
        """New :class:`KeyedVectors` holding the (deduplicated) known ``keys`` in the given order.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['cat', 'dog', 'car'], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> kv.vectors_for_all(['car', 'zebra', 'cat', 'car']).index_to_key
        ['car', 'cat']
        """
        vocab, seen = [], set()
        for key in keys:
            if key not in seen:
                seen.add(key)
                if key in (self if allow_inference else self.key_to_index):
                    vocab.append(key)
        kv = self.__class__(self.vector_size, 0, dtype=self.vectors.dtype)
        if vocab:
            kv.add_vectors(vocab, np.vstack([self[key] for key in vocab]))
            counts = np.arange(len(vocab), 0, -1, dtype=np.int64)
            kv.expandos['count'] = counts
            if copy_vecattrs:
                for attr in self.expandos:
                    for key in vocab:
                        kv.set_vecattr(key, attr, self.get_vecattr(key, attr))
        return kv

    # ------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------

    @staticmethod
    def _log_evaluate_word_analogies(section):
        """Accuracy of one analogy section (logged); 0.0 when the section is empty.

        Examples
        --------
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> KeyedVectors._log_evaluate_word_analogies({'section': 's', 'correct': [1], 'incorrect': [2, 3, 4]})
        0.25
        """
        correct, incorrect = len(section['correct']), len(section['incorrect'])
        if correct + incorrect == 0:
            return 0.0
        score = correct / (correct + incorrect)
        logger.info("%s: %.1f%% (%i/%i)", section['section'], 100.0 * score, correct, correct + incorrect)
        return score

    @staticmethod
    def log_accuracy(section: Mapping[str, Any]) -> None:
        """Log the accuracy of one analogy section.

        Examples
        --------
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> KeyedVectors.log_accuracy({'section': 's', 'correct': [], 'incorrect': []})
        """
        correct, incorrect = len(section['correct']), len(section['incorrect'])
        if correct + incorrect > 0:
            logger.info(
                "%s: %.1f%% (%i/%i)",
                section['section'], 100.0 * correct / (correct + incorrect), correct, correct + incorrect,
            )

    def _analogy_predict_exact(self, ia, ib, ic, clip_end, case_insensitive, ok_vocab, ignore):
        """Prediction for one analogy question computed exactly like gensim (one query at a time)."""
        weight = np.concatenate((np.ones(2), -1.0 * np.ones(1)))
        mean = np.zeros(self.vector_size, self.vectors.dtype)
        total_weight = 0
        for w, index in zip(weight, (ib, ic, ia)):
            mean += w * (self.vectors[index] / self.norms[index])
            total_weight += abs(w)
        if total_weight > 0:
            mean = mean / total_weight
        mean = _unitvec(mean).astype(REAL)
        dists = self._exact_dists(mean, 0, clip_end)
        sims = self._exact_top(dists, 5, [ib, ic, ia], 0)
        predicted = None
        for key, _ in sims:
            predicted = key.upper() if case_insensitive else key
            if predicted in ok_vocab and predicted not in ignore:
                break
        return predicted

    def _analogy_means(self, ia, ib, ic):
        """Query vectors of a block of analogy questions (vectorized gensim arithmetic)."""
        weight = np.concatenate((np.ones(2), -1.0 * np.ones(1)))
        mean = np.zeros((len(ia), self.vector_size), dtype=self.vectors.dtype)
        total_weight = 0
        for w, index in zip(weight, (ib, ic, ia)):
            mean += w * (self.vectors[index] / self.norms[index][:, None])
            total_weight += abs(w)
        mean = np.asarray(mean / total_weight, dtype=np.float64)
        with np.errstate(all='ignore'):
            lengths = np.sqrt(np.einsum('ij,ij->i', mean, mean))
            scale = np.where(lengths > 0.0, 1.0 / lengths, 1.0)
        return (mean * scale[:, None]).astype(np.float32)

    def evaluate_word_analogies(
            self, analogies: _Path, restrict_vocab: Optional[int] = 300000, case_insensitive: bool = True,
            dummy4unknown: bool = False, similarity_function: str = 'most_similar', batch_size: int = 512,
    ) -> Tuple[float, List[Dict[str, Any]]]:
        """Accuracy on an analogy test set (``compute-accuracy`` of the C word2vec tool).

        Each question ``a b c expected`` is answered with the 3CosAdd query
        ``most_similar(positive=[b, c], negative=[a], topn=5)`` over the first
        ``restrict_vocab`` keys; the first returned key that is not ``a``, ``b`` or
        ``c`` is the prediction.  Results equal gensim 4's exactly, but questions
        are scored ``batch_size`` at a time with one matrix product.

        Parameters
        ----------
        analogies : str or os.PathLike
            File of 4-word lines split into sections by ``: SECTION NAME`` lines
            (e.g. ``questions-words.txt``); ``.gz``/``.bz2``/``.xz`` are decompressed.
        restrict_vocab : int, optional
            Ignore questions with a word outside the first ``restrict_vocab`` keys.
        case_insensitive : bool, optional
            Upper-case all words; among case variants of a key the first one in
            vocabulary order is used.
        dummy4unknown : bool, optional
            Count questions with unknown words as incorrect instead of skipping them.
        similarity_function : str, optional
            Accepted for compatibility; ignored, as in gensim 4.
        batch_size : int, optional
            Questions scored per matrix product.

        Returns
        -------
        score : float
            Overall accuracy.
        sections : list of dict
            One ``{'section': name, 'correct': [...], 'incorrect': [...]}`` per
            section (lists of 4-tuples), followed by a ``'Total accuracy'`` section.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(3)
        >>> kv.add_vectors(['man', 'woman', 'king', 'queen', 'apple'], np.array(
        ...     [[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [-1, 0, 0.2]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), 'analogies.txt')
        >>> with open(path, 'w') as fout:
        ...     _ = fout.write(': family\\nman woman king queen\\nman king woman queen\\n')
        >>> score, sections = kv.evaluate_word_analogies(path)
        >>> score, [s['section'] for s in sections]
        (1.0, ['family', 'Total accuracy'])
        """
        from .datasets import resolve as _resolve_dataset
        if isinstance(analogies, (str, os.PathLike)):
            analogies = _resolve_dataset(analogies)  # a bundled name such as "google"
        analogies_name = os.fspath(analogies) if isinstance(analogies, (str, bytes, os.PathLike)) else analogies
        if similarity_function != 'most_similar':
            logger.warning(
                "similarity_function=%r is ignored: questions are answered with most_similar (3CosAdd), "
                "as in gensim 4", similarity_function)
        ok_keys = self.index_to_key[:restrict_vocab]
        if case_insensitive:
            ok_vocab = {k.upper(): self.get_index(k) for k in reversed(ok_keys)}  # type: ignore[attr-defined, arg-type]  # keys, not None
        else:
            ok_vocab = {k: self.get_index(k) for k in reversed(ok_keys)}  # type: ignore[arg-type]  # keys, not None
        oov = 0
        logger.info(
            "Evaluating word analogies for top %i words in the model on %s",
            restrict_vocab if restrict_vocab is not None else len(self), analogies_name,
        )
        sections, section = [], None
        quadruplets_no = 0
        # events, in file order: (section dict, quadruplet, question number or None for OOV-incorrect)
        events = []
        q_words, q_idx, q_lines = [], [], []  # type: ignore[var-annotated]  # question tuples and lines
        with _open_read(analogies) as fin:
            for line_no, line in enumerate(fin):
                line = line.decode('utf8')
                if line.startswith(': '):
                    if section:
                        sections.append(section)
                    section = {'section': line.lstrip(': ').strip(), 'correct': [], 'incorrect': []}
                else:
                    if not section:
                        raise ValueError("Missing section header before line #%i in %s" % (line_no, analogies_name))
                    try:
                        if case_insensitive:
                            a, b, c, expected = [word.upper() for word in line.split()]
                        else:
                            a, b, c, expected = [word for word in line.split()]
                    except ValueError:
                        logger.info("Skipping invalid line #%i in %s", line_no, analogies_name)
                        continue
                    quadruplets_no += 1
                    if a not in ok_vocab or b not in ok_vocab or c not in ok_vocab or expected not in ok_vocab:
                        oov += 1
                        if dummy4unknown:
                            logger.debug('Zero accuracy for line #%d with OOV words: %s', line_no, line.strip())
                            events.append((section, (a, b, c, expected), None))
                        else:
                            logger.debug("Skipping line #%i with OOV words: %s", line_no, line.strip())
                        continue
                    events.append((section, (a, b, c, expected), len(q_words)))  # type: ignore[arg-type]  # question number or None
                    q_words.append((a, b, c, expected))
                    q_idx.append((ok_vocab[a], ok_vocab[b], ok_vocab[c]))
                    q_lines.append(line)
        if section:
            sections.append(section)

        if q_words:
            predictions = self._predict_analogies(q_words, q_idx, restrict_vocab, case_insensitive, ok_vocab,
                                                  batch_size)
        else:
            predictions = []
            self._batch_stats = {'queries': 0, 'exact_fallbacks': 0}

        for sec, quad, qn in events:
            if qn is None:
                sec['incorrect'].append(quad)
                continue
            predicted = predictions[qn]
            expected = quad[3]
            if predicted == expected:
                sec['correct'].append(quad)
            else:
                if predicted is not None and logger.isEnabledFor(logging.DEBUG):
                    logger.debug("%s: expected %s, predicted %s", q_lines[qn].strip(), expected, predicted)
                sec['incorrect'].append(quad)
        for sec in sections:
            self._log_evaluate_word_analogies(sec)

        total = {
            'section': 'Total accuracy',
            'correct': list(itertools.chain.from_iterable(s['correct'] for s in sections)),
            'incorrect': list(itertools.chain.from_iterable(s['incorrect'] for s in sections)),
        }
        oov_ratio = float(oov) / quadruplets_no * 100
        logger.info('Quadruplets with out-of-vocabulary words: %.1f%%', oov_ratio)
        if not dummy4unknown:
            logger.info(
                'NB: analogies containing OOV words were skipped from evaluation! '
                'To change this behavior, use "dummy4unknown=True"'
            )
        analogies_score = self._log_evaluate_word_analogies(total)
        sections.append(total)
        return analogies_score, sections

    def _predict_analogies(self, q_words, q_idx, restrict_vocab, case_insensitive, ok_vocab, batch_size):
        """Predicted (possibly upper-cased) key for every analogy question, gensim-identical."""
        self.fill_norms()
        _, clip_end = self._clip_range(len(self.vectors), 0, None, restrict_vocab)
        n_rows = len(self.vectors[0:clip_end])
        n_q = len(q_words)
        predictions = [None] * n_q
        stats = {'queries': n_q, 'exact_fallbacks': 0}
        index_to_key = self.index_to_key
        if n_rows <= 9:
            for qi, ((a, b, c, _), (ia, ib, ic)) in enumerate(zip(q_words, q_idx)):
                predictions[qi] = self._analogy_predict_exact(
                    ia, ib, ic, clip_end, case_insensitive, ok_vocab, {a, b, c})
            stats['exact_fallbacks'] = n_q
            self._batch_stats = stats
            return predictions
        group = self._group_width(n_rows, 9)
        normed, n_valid, bad_rows = self._normalized_range(0, clip_end, group)
        tol = self._gap_tolerance()
        idx_arr = np.asarray(q_idx, dtype=np.intp)
        upper_cache = {}
        buffer, chunk_columns = self._score_buffer(min(batch_size, n_q), normed.shape[0], group, 9)
        for block_start in range(0, n_q, batch_size):
            block_end = min(block_start + batch_size, n_q)
            blk = idx_arr[block_start:block_end]
            means = self._analogy_means(blk[:, 0], blk[:, 1], blk[:, 2])
            cand_idx, cand_val = self._block_topk(
                means, normed, n_valid, bad_rows, 9, group, buffer, chunk_columns)
            for row in range(block_end - block_start):
                qi = block_start + row
                a, b, c, _ = q_words[qi]
                ia, ib, ic = q_idx[qi]
                ignore = {a, b, c}
                idx_row = cand_idx[row]
                predicted = None
                decided_rank = 7
                n_taken = 0
                # gensim: best = top-8; drop the inputs; keep 5; first key not in `ignore`
                for rank in range(8):
                    index = idx_row[rank]
                    if index == ia or index == ib or index == ic:
                        continue
                    n_taken += 1
                    if case_insensitive:
                        predicted = upper_cache.get(index)
                        if predicted is None:
                            predicted = upper_cache[index] = index_to_key[index].upper()
                    else:
                        predicted = index_to_key[index]
                    decided_rank = rank
                    if predicted in ok_vocab and predicted not in ignore:
                        break
                    if n_taken == 5:
                        break
                if self._ranks_reliable(cand_val[row], decided_rank, tol):
                    predictions[qi] = predicted
                else:
                    stats['exact_fallbacks'] += 1
                    predictions[qi] = self._analogy_predict_exact(
                        ia, ib, ic, clip_end, case_insensitive, ok_vocab, ignore)
        self._batch_stats = stats
        return predictions

    @staticmethod
    def log_evaluate_word_pairs(
            pearson: Tuple[float, float], spearman: Tuple[float, float], oov: float, pairs: _Path,
    ) -> None:
        """Log the results of :meth:`evaluate_word_pairs`.

        Examples
        --------
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> KeyedVectors.log_evaluate_word_pairs((0.5, 0.1), (0.4, 0.2), 0.0, 'pairs.tsv')
        """
        logger.info('Pearson correlation coefficient against %s: %.4f', pairs, pearson[0])
        logger.info('Spearman rank-order correlation coefficient against %s: %.4f', pairs, spearman[0])
        logger.info('Pairs with unknown words ratio: %.1f%%', oov)

    def analogy_report(
            self, analogies: _Path = "google", restrict_vocab: int = 300000, case_insensitive: bool = True,
            batch_size: int = 1024,
    ) -> AnalogyReport:
        """The analogy metrics of Wibisono & Wang (2023), Tables 1-2: per question
        the rank of the true answer and cos(d, b - a + c); per semantic /
        syntactic group the share ranked first and the mean cosine.

        See :func:`bidirmoe.evaluation.analogy_report` for the parameters.

        Examples
        --------
        >>> import os, tempfile
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b', 'c', 'd'], np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), 'q.txt')
        >>> _ = open(path, 'w').write(': s\\na b c d\\n')
        >>> kv.analogy_report(path).groups_table()[-1]['top1']
        1.0
        """
        from .evaluation import analogy_report
        return analogy_report(self, analogies, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive,
                              batch_size=batch_size)

    def evaluate_word_pairs(
            self, pairs: _Path, delimiter: str = '\t', encoding: str = 'utf8',
            restrict_vocab: Optional[int] = 300000, case_insensitive: bool = True, dummy4unknown: bool = False,
    ) -> Tuple[Tuple[float, float], Tuple[float, float], float]:
        """Correlation of model similarities with human judgements (e.g. WordSim353, SimLex-999).

        Parameters
        ----------
        pairs : str or os.PathLike
            File of ``word1<delimiter>word2<delimiter>score`` lines; ``#`` lines are comments.
        delimiter : str, optional
            Field separator.
        encoding : str, optional
            File encoding.
        restrict_vocab : int, optional
            Ignore pairs with a word outside the first ``restrict_vocab`` keys.
        case_insensitive : bool, optional
            Upper-case words; among case variants the first key in vocabulary order is used.
        dummy4unknown : bool, optional
            Score pairs with unknown words as 0 instead of skipping them.

        Returns
        -------
        pearson : (float, float)
            Pearson correlation and two-sided p-value (scipy's result object when scipy is installed).
        spearman : (float, float)
            Spearman correlation and p-value (scipy's result object when scipy is installed).
        oov_ratio : float
            Percentage of pairs with unknown words.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b', 'c', 'd'], np.array([[1, 0], [1, 0.1], [0, 1], [1, 1]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), 'pairs.tsv')
        >>> with open(path, 'w') as fout:
        ...     _ = fout.write('a\\tb\\t9\\na\\tc\\t1\\na\\td\\t5\\nb\\tz\\t3\\n')
        >>> pearson, spearman, oov = kv.evaluate_word_pairs(path)
        >>> round(float(spearman[0]), 3), oov
        (1.0, 25.0)
        """
        from .datasets import resolve_pairs as _resolve_pairs
        pairs, delimiter = _resolve_pairs(pairs, delimiter)  # "wordsim353", "simlex999" or a path
        pairs_name = os.fspath(pairs) if isinstance(pairs, (str, bytes, os.PathLike)) else pairs
        ok_keys = self.index_to_key[:restrict_vocab]
        if case_insensitive:
            ok_vocab = {k.upper(): self.get_index(k) for k in reversed(ok_keys)}  # type: ignore[attr-defined, arg-type]  # keys, not None
        else:
            ok_vocab = {k: self.get_index(k) for k in reversed(ok_keys)}  # type: ignore[arg-type]  # keys, not None

        similarity_gold = []
        similarity_model = []
        oov = 0
        columns = (0, 1, 2)
        with _open_text(pairs, encoding) as fin:
            for line_no, line in enumerate(fin):
                if not line or line.startswith('#'):
                    continue
                if line_no == 0 and line.startswith('word1\tword2\tPOS\tSimLex999'):
                    # SimLex-999's own 10-column file: the score is column 4.
                    columns, delimiter = (0, 1, 3), '\t'
                    continue
                try:
                    fields = line.split(delimiter)
                    if columns != (0, 1, 2):
                        fields = [fields[c] for c in columns]
                    if case_insensitive:
                        a, b, sim = [word.upper() for word in fields]
                    else:
                        a, b, sim = [word for word in fields]
                    sim = float(sim)
                except (ValueError, TypeError, IndexError):
                    logger.info('Skipping invalid line #%d in %s', line_no, pairs_name)
                    continue
                if a not in ok_vocab or b not in ok_vocab:
                    oov += 1
                    if dummy4unknown:
                        logger.debug('Zero similarity for line #%d with OOV words: %s', line_no, line.strip())
                        similarity_model.append(0.0)
                        similarity_gold.append(sim)
                    else:
                        logger.info('Skipping line #%d with OOV words: %s', line_no, line.strip())
                    continue
                similarity_gold.append(sim)
                similarity_model.append(
                    np.dot(_unitvec(self.vectors[ok_vocab[a]]), _unitvec(self.vectors[ok_vocab[b]])))

        assert len(similarity_gold) == len(similarity_model)
        if not similarity_gold:
            raise ValueError(
                f"No valid similarity judgements found in {pairs_name}: either invalid format or "
                f"all are out-of-vocabulary in {self}"
            )
        try:
            from scipy import stats
        except ImportError:  # pragma: no cover - exercised only without scipy
            stats = None
        if stats is not None:
            spearman = stats.spearmanr(similarity_gold, similarity_model)
            pearson = stats.pearsonr(similarity_gold, similarity_model)
        else:  # pragma: no cover
            r, p = _pearson(similarity_gold, similarity_model)
            pearson = _PearsonResult(r, p)
            rho, p = _pearson(_rankdata(similarity_gold), _rankdata(similarity_model))
            spearman = _CorrelationResult(rho, p)
        if dummy4unknown:
            oov_ratio = float(oov) / len(similarity_gold) * 100
        else:
            oov_ratio = float(oov) / (len(similarity_gold) + oov) * 100

        logger.debug('Pearson correlation coefficient against %s: %f with p-value %f', pairs_name, pearson[0], pearson[1])
        logger.debug(
            'Spearman rank-order correlation coefficient against %s: %f with p-value %f',
            pairs_name, spearman[0], spearman[1]
        )
        logger.debug('Pairs with unknown words: %d', oov)
        self.log_evaluate_word_pairs(pearson, spearman, oov_ratio, pairs_name)
        return pearson, spearman, oov_ratio

    # ------------------------------------------------------------------
    # word2vec C format
    # ------------------------------------------------------------------

    def save_word2vec_format(
            self, fname: _Path, fvocab: Optional[_Path] = None, binary: bool = False, total_vec: Optional[int] = None,
            write_header: bool = True, prefix: str = '', append: bool = False, sort_attr: str = 'count',
    ) -> None:
        """Store vectors in the word2vec C tool format (text or binary), atomically.

        Keys are written in descending ``sort_attr`` order when that attribute
        exists (the default ``'count'``), otherwise in index order, exactly as
        gensim does.  ``.gz``, ``.bz2`` and ``.xz`` names are compressed.

        Parameters
        ----------
        fname : str or os.PathLike
            Output file.
        fvocab : str, optional
            Also write ``key count`` lines to this vocabulary file.
        binary : bool, optional
            Binary format (float32 little-endian values) instead of text.
        total_vec : int, optional
            Vector count written in the header (default: number of keys).
        write_header : bool, optional
            Write the ``count dimensions`` header line.
        prefix : str, optional
            String prepended to every key.
        append : bool, optional
            Append to an existing file instead of replacing it.
        sort_attr : str, optional
            Attribute giving the output order (descending).

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.array([[1, 0.5], [0, 1]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), 'vectors.txt')
        >>> kv.save_word2vec_format(path)
        >>> print(open(path).read(), end='')
        2 2
        a 1.0 0.5
        b 0.0 1.0
        """
        if total_vec is None:
            total_vec = len(self.index_to_key)

        if sort_attr in self.expandos:
            store_order_vocab_keys = sorted(self.key_to_index.keys(), key=lambda k: -self.get_vecattr(k, sort_attr))
        else:
            if fvocab is not None:
                raise ValueError(f"Cannot store vocabulary with '{sort_attr}' because that attribute does not exist")
            logger.warning("attribute %s not present in %s; will store in internal index_to_key order", sort_attr, self)
            store_order_vocab_keys = self.index_to_key

        if fvocab is not None:
            logger.info("storing vocabulary in %s", fvocab)
            with _atomic_write(fvocab, append=append) as vout:
                for word in store_order_vocab_keys:
                    vout.write(f"{prefix}{word} {self.get_vecattr(word, sort_attr)}\n".encode('utf8'))

        logger.info("storing %sx%s projection weights into %s", total_vec, self.vector_size, fname)
        if (len(self.index_to_key), self.vector_size) != self.vectors.shape:
            raise ValueError(
                f"vectors shape {self.vectors.shape} does not match {len(self.index_to_key)} keys "
                f"x {self.vector_size} dimensions")

        index_id_count = 0
        for i, val in enumerate(self.index_to_key):
            if i != val:
                break
            index_id_count += 1
        keys_to_write = itertools.chain(range(0, index_id_count), store_order_vocab_keys)

        with _atomic_write(fname, append=append) as fout:
            buffer = []
            buffered = 0
            if write_header:
                buffer.append(f"{total_vec} {self.vector_size}\n".encode('utf8'))
            for key in keys_to_write:
                key_vector = self[key]
                if binary:
                    buffer.append(f"{prefix}{key} ".encode('utf8') + key_vector.astype(REAL).tobytes())
                else:
                    buffer.append(f"{prefix}{key} {' '.join(str(val) for val in key_vector)}\n".encode('utf8'))
                buffered += 1
                if buffered >= 4096:
                    fout.write(b''.join(buffer))
                    buffer, buffered = [], 0
            if buffer:
                fout.write(b''.join(buffer))

    @classmethod
    def load_word2vec_format(
            cls: Type[_KeyedVectorsT], fname: _Path, fvocab: Optional[_Path] = None, binary: bool = False,
            encoding: str = 'utf8', unicode_errors: str = 'strict', limit: Optional[int] = None,
            datatype: DTypeLike = REAL, no_header: bool = False,
    ) -> _KeyedVectorsT:
        """Load vectors from the word2vec C tool format (text or binary).

        Reads exactly what gensim reads.  A truncated or malformed file raises
        :class:`ValueError` naming the line number (text) or byte offset (binary).

        Parameters
        ----------
        fname : str or os.PathLike
            Input file; ``.gz``, ``.bz2`` and ``.xz`` are decompressed.
        fvocab : str, optional
            Vocabulary file (``word count`` lines, as written by ``-save-vocab``).
        binary : bool, optional
            Binary format.
        encoding : str, optional
            Encoding of the keys.
        unicode_errors : str, optional
            Decoding error handler (``'strict'``, ``'ignore'``, ``'replace'``).
        limit : int, optional
            Read at most this many vectors.
        datatype : numpy dtype, optional
            Element type of the loaded vectors.
        no_header : bool, optional
            Text file without the ``count dimensions`` header line.

        Returns
        -------
        KeyedVectors

        Examples
        --------
        >>> import os, tempfile
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> path = os.path.join(tempfile.mkdtemp(), 'vectors.txt')
        >>> with open(path, 'w') as fout:
        ...     _ = fout.write('2 3\\ncat 1 0 0\\ndog 0.9 0.1 0\\n')
        >>> kv = KeyedVectors.load_word2vec_format(path)
        >>> kv.index_to_key, kv['dog'].astype(float).round(2).tolist()
        (['cat', 'dog'], [0.9, 0.1, 0.0])
        """
        return _load_word2vec_format(
            cls, fname, fvocab=fvocab, binary=binary, encoding=encoding, unicode_errors=unicode_errors,
            limit=limit, datatype=datatype, no_header=no_header,
        )

    # ------------------------------------------------------------------
    # native format
    # ------------------------------------------------------------------

    def save(self, fname: _Path) -> None:
        """Save to the native single-file format (atomically); see :meth:`load`.

        The file holds a JSON header (keys, shapes, dtypes) followed by the raw,
        64-byte aligned vector and attribute arrays, so that :meth:`load` can
        memory-map the vectors.

        Parameters
        ----------
        fname : str or os.PathLike
            Output file.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a', 'b'], np.array([[1, 2], [3, 4]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), 'vectors.kv')
        >>> kv.save(path)
        >>> KeyedVectors.load(path, mmap='r')['b'].tolist()
        [3.0, 4.0]
        """
        vectors = np.ascontiguousarray(self.vectors)
        if vectors.ndim != 2:
            raise ValueError("vectors must be a 2D array")
        n_keys = len(self.index_to_key)
        arrays = [('vectors', vectors)]
        object_expandos = {}
        for attr, values in self.expandos.items():
            values = np.asarray(values)
            if values.dtype.hasobject:
                object_expandos[attr] = [v.item() if isinstance(v, np.generic) else v for v in values.tolist()]
            else:
                arrays.append(('expando:' + attr, np.ascontiguousarray(values)))
        table = {}
        relative = 0
        for name, arr in arrays:
            table[name] = {'dtype': arr.dtype.str, 'shape': list(arr.shape), 'offset': relative}
            relative = _align(relative + arr.nbytes)
        header = {
            'format': 'bidirmoe-keyedvectors',
            'version': _NATIVE_VERSION,
            'class': self.__class__.__name__,
            'vector_size': int(self.vector_size),
            'next_index': int(self.next_index),
            'keys': [_json_key(k) for k in self.index_to_key],
            'object_expandos': object_expandos,
            'arrays': table,  # offsets are relative to the (aligned) end of the header
        }
        if len(vectors) != n_keys:
            logger.warning("saving %i vectors for %i keys", len(vectors), n_keys)
        header_bytes = json.dumps(header, ensure_ascii=False).encode('utf8', 'surrogatepass')
        data_start = _align(len(_NATIVE_MAGIC) + 8 + len(header_bytes))

        with _atomic_write(fname, compress=False) as fout:
            fout.write(_NATIVE_MAGIC)
            fout.write(struct.pack('<Q', len(header_bytes)))
            fout.write(header_bytes)
            position = len(_NATIVE_MAGIC) + 8 + len(header_bytes)
            for name, arr in arrays:
                offset = data_start + table[name]['offset']
                fout.write(b'\x00' * (offset - position))
                if arr.size:
                    fout.write(arr.reshape(-1).view(np.uint8).data)
                position = offset + arr.nbytes
            end = data_start + relative
            fout.write(b'\x00' * (end - position))

    @classmethod
    def load(
            cls: Type[_KeyedVectorsT], fname: _Path, mmap: Optional[Literal['r', 'r+', 'c']] = None,
    ) -> _KeyedVectorsT:
        """Load a file written by :meth:`save`.

        Parameters
        ----------
        fname : str or os.PathLike
            File written by :meth:`save`.
        mmap : {None, 'r', 'r+', 'c'}, optional
            Memory-map the vectors with this mode instead of reading them into memory.

        Returns
        -------
        KeyedVectors

        Raises
        ------
        ValueError
            If the file is not in the native format or is truncated.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[1, 2]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), 'vectors.kv')
        >>> kv.save(path)
        >>> type(KeyedVectors.load(path, mmap='r').vectors).__name__
        'memmap'
        """
        if mmap not in (None, 'r', 'r+', 'c'):
            raise ValueError(f"mmap must be None, 'r', 'r+' or 'c', not {mmap!r}")
        fname = os.fspath(fname)
        file_size = os.path.getsize(fname)
        with open(fname, 'rb') as fin:
            magic = fin.read(len(_NATIVE_MAGIC))
            if magic != _NATIVE_MAGIC:
                raise ValueError(f"{fname}: not a bidirmoe KeyedVectors file (bad magic bytes at offset 0)")
            raw_len = fin.read(8)
            if len(raw_len) != 8:
                raise ValueError(f"{fname}: truncated header at byte offset {len(_NATIVE_MAGIC)}")
            (header_len,) = struct.unpack('<Q', raw_len)
            header_offset = len(_NATIVE_MAGIC) + 8
            if header_offset + header_len > file_size:
                raise ValueError(
                    f"{fname}: truncated header at byte offset {header_offset} "
                    f"(needs {header_len} bytes, file has {file_size - header_offset})")
            header_bytes = fin.read(header_len)
            try:
                header = json.loads(header_bytes.decode('utf8', 'surrogatepass'))
            except ValueError as err:
                raise ValueError(f"{fname}: corrupt header at byte offset {header_offset}: {err}") from None
            if header.get('format') != 'bidirmoe-keyedvectors':
                raise ValueError(f"{fname}: not a bidirmoe KeyedVectors file")
            if header.get('version', 0) > _NATIVE_VERSION:
                raise ValueError(f"{fname}: format version {header.get('version')} is newer than supported")
            loaded = {}
            data_start = _align(header_offset + header_len)
            for name, info in header['arrays'].items():
                dtype = np.dtype(info['dtype'])
                shape = tuple(info['shape'])
                offset = data_start + info['offset']
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if offset + nbytes > file_size:
                    raise ValueError(
                        f"{fname}: truncated file: array {name!r} needs bytes {offset}..{offset + nbytes} "
                        f"but the file ends at byte offset {file_size}")
                if name == 'vectors' and mmap is not None and nbytes > 0:
                    loaded[name] = np.memmap(fname, dtype=dtype, mode=mmap, offset=offset, shape=shape)
                else:
                    arr = np.empty(shape, dtype=dtype)
                    if nbytes:
                        fin.seek(offset)
                        got = fin.readinto(arr.reshape(-1).view(np.uint8).data)
                        if got != nbytes:
                            raise ValueError(f"{fname}: truncated file at byte offset {offset + got}")
                    loaded[name] = arr  # type: ignore[assignment]  # memmap or in-memory array
        kv = cls(header['vector_size'], 0, dtype=loaded['vectors'].dtype)
        kv.vectors = loaded['vectors']
        kv.index_to_key = list(header['keys'])
        kv.key_to_index = {key: i for i, key in enumerate(kv.index_to_key)}
        kv.next_index = header.get('next_index', len(kv.index_to_key))
        for name, arr in loaded.items():
            if name.startswith('expando:'):
                kv.expandos[name[len('expando:'):]] = arr
        for attr, values in header.get('object_expandos', {}).items():
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            kv.expandos[attr] = arr
        return kv

    # ------------------------------------------------------------------
    # gensim interop
    # ------------------------------------------------------------------

    def to_gensim(self) -> Any:
        """Convert to a :class:`gensim.models.KeyedVectors` (gensim imported lazily).

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[1, 2]], dtype=np.float32))
        >>> try:
        ...     type(kv.to_gensim()).__module__
        ... except ImportError:
        ...     'gensim.models.keyedvectors'
        'gensim.models.keyedvectors'
        """
        from gensim.models import KeyedVectors as GensimKeyedVectors

        kv = GensimKeyedVectors(self.vector_size, 0, dtype=self.vectors.dtype)
        kv.vectors = np.array(self.vectors, copy=True)
        kv.index_to_key = list(self.index_to_key)
        kv.key_to_index = dict(self.key_to_index)
        kv.next_index = self.next_index
        kv.expandos = {attr: np.array(values, copy=True) for attr, values in self.expandos.items()}
        kv.norms = None
        return kv

    @classmethod
    def from_gensim(cls: Type[_KeyedVectorsT], kv: Any) -> _KeyedVectorsT:
        """Build from a :class:`gensim.models.KeyedVectors` (or a model with a ``.wv``).

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(['a'], np.array([[1, 2]], dtype=np.float32))
        >>> try:
        ...     KeyedVectors.from_gensim(kv.to_gensim()).index_to_key
        ... except ImportError:
        ...     ['a']
        ['a']
        """
        if not hasattr(kv, 'index_to_key') and hasattr(kv, 'wv'):
            kv = kv.wv
        result = cls(kv.vector_size, 0, dtype=kv.vectors.dtype)
        result.vectors = np.array(kv.vectors, copy=True)
        result.index_to_key = list(kv.index_to_key)
        result.key_to_index = dict(kv.key_to_index)
        result.next_index = getattr(kv, 'next_index', len(result.index_to_key))
        result.expandos = {attr: np.array(values, copy=True) for attr, values in getattr(kv, 'expandos', {}).items()}
        result.norms = None
        return result


# ---------------------------------------------------------------------------
# word2vec format reading
# ---------------------------------------------------------------------------

def _open_text(fname, encoding):
    ext = _compression_of(fname)
    if ext == '.gz':
        return gzip.open(fname, 'rt', encoding=encoding)
    if ext == '.bz2':
        return bz2.open(fname, 'rt', encoding=encoding)
    if ext in ('.xz', '.lzma'):
        return lzma.open(fname, 'rt', encoding=encoding)
    return open(fname, 'r', encoding=encoding)


class _VectorCollector:
    """Accumulates (key, vector) pairs read from a word2vec file, keeping the first of duplicates."""

    def __init__(self, vocab_size, vector_size, datatype, counts):
        self.vocab_size = vocab_size
        self.vector_size = vector_size
        self.vectors = np.zeros((vocab_size, vector_size), dtype=datatype)
        self.keys = []
        self.key_to_index = {}
        self.counts = counts

    def add(self, word, vector):
        if word in self.key_to_index:
            logger.warning("duplicate word '%s' in word2vec file, ignoring all but first", word)
            return
        index = len(self.keys)
        self.key_to_index[word] = index
        self.keys.append(word)
        self.vectors[index] = vector

    def build(self, cls):
        n = len(self.keys)
        kv = cls(self.vector_size, 0, dtype=self.vectors.dtype)
        if n != self.vocab_size:
            logger.info("duplicate words detected, shrinking matrix size from %i to %i", self.vocab_size, n)
            kv.vectors = np.ascontiguousarray(self.vectors[:n])
        else:
            kv.vectors = self.vectors
        kv.index_to_key = self.keys
        kv.key_to_index = self.key_to_index
        kv.next_index = n
        counts = np.zeros(n, dtype=np.int64)
        if self.counts is None:
            counts[:] = self.vocab_size - np.arange(n, dtype=np.int64)
        else:
            for i, word in enumerate(self.keys):
                if word in self.counts:
                    counts[i] = self.counts[word]
                else:
                    logger.warning("vocabulary file is incomplete: '%s' is missing", word)
        kv.expandos['count'] = counts
        return kv


def _parse_text_line(line, line_no, vector_size, datatype, unicode_errors, encoding, fname):
    try:
        text = line.rstrip().decode(encoding, errors=unicode_errors)
    except UnicodeDecodeError as err:
        raise ValueError(f"{fname}: line {line_no}: cannot decode with {encoding!r}: {err}") from None
    parts = text.split(" ")
    word, fields = parts[0], parts[1:]
    if vector_size is not None and len(fields) != vector_size:
        raise ValueError(
            f"{fname}: line {line_no}: expected {vector_size} vector values after the word {word!r}, "
            f"found {len(fields)} (truncated or malformed file?)")
    try:
        values = np.array([float(x) for x in fields], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{fname}: line {line_no}: invalid vector value for word {word!r}: {err}") from None
    with np.errstate(over='ignore'):
        return word, values.astype(datatype)


def _parse_header(line, fname, encoding):
    try:
        text = line.decode(encoding)
        fields = text.split()
        if len(fields) != 2:
            raise ValueError(f"expected 2 fields, found {len(fields)}")
        vocab_size, vector_size = int(fields[0]), int(fields[1])
        if vocab_size < 0 or vector_size < 0:
            raise ValueError("negative size")
    except ValueError as err:  # includes UnicodeDecodeError
        raise ValueError(
            f"{fname}: line 1 (byte offset 0): invalid word2vec header {line[:80]!r}, "
            f"expected '<vocab_size> <vector_size>': {err}") from None
    return vocab_size, vector_size


def _load_word2vec_format(
        cls, fname, fvocab=None, binary=False, encoding='utf8', unicode_errors='strict',
        limit=None, datatype=REAL, no_header=False, binary_chunk_size=1024 * 1024,
):
    fname_str = os.fspath(fname)
    counts = None
    if fvocab is not None:
        logger.info("loading word counts from %s", fvocab)
        counts = {}
        with _open_read(fvocab) as fin:
            for line_no, line in enumerate(fin, start=1):
                try:
                    word, count = line.decode('utf8', errors=unicode_errors).strip().split()
                    counts[word] = int(count)
                except ValueError as err:
                    raise ValueError(f"{os.fspath(fvocab)}: line {line_no}: invalid vocabulary line: {err}") from None

    logger.info("loading projection weights from %s", fname_str)
    with _open_read(fname) as fin:
        if no_header:
            if binary:
                raise NotImplementedError("no_header only available for text-format files")
            vector_size = None
            vocab_size = 0
            for vocab_size in itertools.count():
                line = _readline(fin, fname_str, f"line {vocab_size + 1}")
                if line == b'' or vocab_size == limit:
                    break
                if vector_size:
                    continue
                _, values = _parse_text_line(line, vocab_size + 1, None, datatype, unicode_errors, encoding,
                                             fname_str)
                vector_size = len(values)
            if vector_size is None:
                vector_size = 0
            fin.close()
            fin = _open_read(fname)
            line_offset = 0
            header_len = 0
        else:
            header = _readline(fin, fname_str, "line 1")
            vocab_size, vector_size = _parse_header(header, fname_str, encoding)
            line_offset = 1
            header_len = len(header)
        if limit:
            vocab_size = min(vocab_size, limit)
        collector = _VectorCollector(vocab_size, vector_size, datatype, counts)
        try:
            if binary:
                _read_binary(fin, collector, vocab_size, vector_size, datatype, unicode_errors, encoding,
                             header_len, binary_chunk_size, fname_str)
            else:
                _read_text(fin, collector, vocab_size, vector_size, datatype, unicode_errors, encoding,
                           line_offset, fname_str)
        finally:
            fin.close()
    kv = collector.build(cls)
    return kv


# errors raised by gzip / bz2 / lzma streams on corrupt or truncated compressed data
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def _readline(fin, fname, where):
    try:
        return fin.readline()
    except _STREAM_ERRORS as err:
        raise ValueError(f"{fname}: {where}: corrupt or truncated compressed data: {err}") from None


def _read_text(fin, collector, vocab_size, vector_size, datatype, unicode_errors, encoding, line_offset, fname):
    for i in range(vocab_size):
        line_no = line_offset + i + 1
        line = _readline(fin, fname, f"line {line_no}")
        if line == b'':
            raise ValueError(
                f"{fname}: line {line_no}: unexpected end of file; expected {vocab_size} vectors, "
                f"found {i} (is the header count wrong or the file truncated?)")
        word, weights = _parse_text_line(line, line_no, vector_size, datatype, unicode_errors, encoding, fname)
        collector.add(word, weights)


def _read_binary(fin, collector, vocab_size, vector_size, datatype, unicode_errors, encoding, header_len,
                 chunk_size, fname):
    bytes_per_vector = vector_size * np.dtype(REAL).itemsize
    chunk = b''
    chunk_offset = header_len  # absolute file offset of chunk[0]
    start = 0
    eof = False
    n_read = 0
    while n_read < vocab_size:
        i_space = chunk.find(b' ', start)
        i_vector = i_space + 1
        if i_space == -1 or (len(chunk) - i_vector) < bytes_per_vector:
            if eof:
                offset = chunk_offset + start
                if i_space == -1:
                    what = "a word followed by a space"
                else:
                    what = (f"{bytes_per_vector} bytes of vector data for word "
                            f"{chunk[start:i_space][:80].decode(encoding, errors='replace').lstrip(chr(10))!r}, "
                            f"found {len(chunk) - i_vector}")
                raise ValueError(
                    f"{fname}: byte offset {offset}: unexpected end of file while reading vector "
                    f"{n_read + 1} of {vocab_size}: expected {what} (truncated file or wrong header?)")
            try:
                new_chunk = fin.read(chunk_size)
            except _STREAM_ERRORS as err:
                raise ValueError(
                    f"{fname}: byte offset {chunk_offset + len(chunk)} (uncompressed): corrupt or truncated "
                    f"compressed data while reading vector {n_read + 1} of {vocab_size}: {err}") from None
            if len(new_chunk) == 0:
                eof = True
            chunk_offset += start
            chunk = chunk[start:] + new_chunk
            start = 0
            continue
        try:
            word = chunk[start:i_space].decode(encoding, errors=unicode_errors)
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{fname}: byte offset {chunk_offset + start + err.start}: cannot decode word {n_read + 1} "
                f"with {encoding!r} ({err.reason}); malformed file or wrong vector size in header?") from None
        word = word.lstrip('\n')
        vector = np.frombuffer(chunk, offset=i_vector, count=vector_size, dtype=REAL).astype(datatype)
        collector.add(word, vector)
        start = i_vector + bytes_per_vector
        n_read += 1


def load_word2vec_format(*args: Any, **kwargs: Any) -> KeyedVectors:
    """Alias of :meth:`KeyedVectors.load_word2vec_format`.

    Examples
    --------
    >>> import os, tempfile
    >>> from bidirmoe.keyedvectors import load_word2vec_format
    >>> path = os.path.join(tempfile.mkdtemp(), 'v.txt')
    >>> with open(path, 'w') as fout:
    ...     _ = fout.write('1 2\\nx 1 2\\n')
    >>> load_word2vec_format(path).index_to_key
    ['x']
    """
    return KeyedVectors.load_word2vec_format(*args, **kwargs)
