"""Word vectors keyed by token: gensim's ``KeyedVectors`` plus what bidirmoe adds.

:class:`KeyedVectors` subclasses :class:`gensim.models.KeyedVectors`. Every
query gensim offers (``most_similar``, ``similarity``, ``doesnt_match``,
``get_mean_vector``, ``add_vectors``, ...) is gensim's own method, so its
answers are gensim's by construction, and a bidirmoe ``KeyedVectors`` is
accepted wherever a gensim one is. This module holds only what we add or
replace:

* :meth:`KeyedVectors.evaluate_word_analogies` scores a block of questions
  with one matrix product and returns the same score and sections as gensim;
  :meth:`KeyedVectors.most_similar_batch` does the same for lists of
  ``most_similar`` queries. A query whose leading candidates lie too close
  together to be ordered safely in float32 is answered by gensim's own
  ``most_similar``.
* Bundled evaluation sets by name: ``"google"`` for analogies,
  ``"wordsim353"`` and ``"simlex999"`` (SimLex's ten-column file as
  distributed) for word pairs.
* :meth:`KeyedVectors.analogy_report`: per-question rank and cosine of the
  true answer (Wibisono & Wang 2023).
* :meth:`KeyedVectors.load_word2vec_format` reads word2vec C-tool files
  2-4x faster than gensim (``benches/bench_load.py``: 100,000 x 300, binary
  3.8x, text 2.3x) and names the line or byte offset of a damaged file; :meth:`KeyedVectors.save_word2vec_format`
  is gensim's writer, but a file is replaced only once it is complete.
* :meth:`KeyedVectors.save` stores gensim's class name in the file, so that
  ``gensim.models.KeyedVectors.load`` opens it without bidirmoe installed,
  and :meth:`KeyedVectors.load` opens any file of a plain gensim
  ``KeyedVectors`` as ours. (``pickle.dumps`` and ``copy.deepcopy`` keep our
  class as usual.)

Examples
--------
>>> import numpy as np
>>> import gensim
>>> from bidirmoe import KeyedVectors
>>> kv = KeyedVectors(2)
>>> kv.add_vectors(["cat", "dog", "car"], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
>>> isinstance(kv, gensim.models.KeyedVectors), kv.most_similar("cat", topn=1)[0][0]
(True, 'dog')
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import shutil
import tempfile
from numbers import Integral
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from gensim import utils as gensim_utils
from gensim.models import KeyedVectors as GensimKeyedVectors

from . import datasets
from .evaluation import analogy_report as _analogy_report
from .evaluation import folded_vocab, read_analogies

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

    from .evaluation import AnalogyReport

logger = logging.getLogger(__name__)

REAL = np.float32

__all__ = ["KeyedVectors", "REAL"]

#: Instance attributes of ours that gensim's class does not have: never written into saved files.
_OWN_ATTRIBUTES = frozenset({"_batch_stats", "batch_gap_safety", "batch_buffer_bytes"})
_KEY_TYPES = (str, int, np.integer)
#: Bytes read at a time from a binary word2vec file.
_READ_CHUNK = 1 << 20


class KeyedVectors(GensimKeyedVectors):
    """gensim's :class:`~gensim.models.KeyedVectors`, with batched evaluation and bundled data sets.

    Constructed, queried and modified exactly like gensim's (same parameters:
    ``vector_size``, ``count``, ``dtype``); the module docstring lists what
    differs.

    Attributes
    ----------
    batch_gap_safety : float
        Multiplies the float32 error bound below which the batched searches
        hand a query to gensim's exact computation (larger: more hand-offs).
    batch_buffer_bytes : int
        Size of the score matrix of one block of batched queries; larger
        vocabularies are scored in column chunks of that size.

    Examples
    --------
    >>> import numpy as np
    >>> from bidirmoe import KeyedVectors
    >>> kv = KeyedVectors(3)
    >>> kv.add_vectors(["a", "b"], np.eye(2, 3, dtype=np.float32))
    >>> print(kv)
    KeyedVectors<vector_size=3, 2 keys>
    """

    batch_gap_safety = 1.0
    batch_buffer_bytes = 64 << 20
    #: Counts from the last batched call: ``queries`` and ``exact_fallbacks`` (those answered by gensim).
    _batch_stats: Mapping[str, int] = MappingProxyType({})

    # ------------------------------------------------------------------ files and gensim

    def to_gensim(self) -> GensimKeyedVectors:
        """A plain :class:`gensim.models.KeyedVectors` holding copies of our keys, vectors and attributes.

        Examples
        --------
        >>> import numpy as np
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(["a"], np.array([[1, 2]], dtype=np.float32))
        >>> type(kv.to_gensim()).__module__, kv.to_gensim()["a"].tolist()
        ('gensim.models.keyedvectors', [1.0, 2.0])
        """
        plain = GensimKeyedVectors.__new__(GensimKeyedVectors)
        plain.__dict__.update(_state_of(self, copied=True))
        return plain

    @classmethod
    def from_gensim(cls, kv: Any) -> "KeyedVectors":
        """Copy a :class:`gensim.models.KeyedVectors` (or a model's ``.wv``) into ours.

        Raises
        ------
        TypeError
            For anything but gensim's plain ``KeyedVectors`` (or ours): gensim's
            subclasses such as ``FastTextKeyedVectors`` compute vectors
            differently and must stay what they are.

        Examples
        --------
        >>> import numpy as np, gensim
        >>> theirs = gensim.models.KeyedVectors(2)
        >>> theirs.add_vectors(["a"], np.array([[1, 2]], dtype=np.float32))
        >>> print(KeyedVectors.from_gensim(theirs))
        KeyedVectors<vector_size=2, 1 keys>
        """
        if not isinstance(kv, GensimKeyedVectors) and hasattr(kv, "wv"):
            kv = kv.wv
        if not (type(kv) is GensimKeyedVectors or isinstance(kv, cls)):
            raise TypeError(f"from_gensim needs a gensim.models.KeyedVectors, got {type(kv).__name__}")
        ours = cls.__new__(cls)
        ours.__dict__.update(_state_of(kv, copied=True))
        return ours

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save in gensim's own format, as a plain ``gensim.models.KeyedVectors``.

        The file records gensim's class, not ours, so that
        ``gensim.models.KeyedVectors.load`` opens it where bidirmoe is not
        installed; :meth:`load` turns it back into ours. The arguments are
        gensim's (``fname_or_handle``, ``separately``, ``sep_limit``,
        ``ignore``, ``pickle_protocol``): arrays larger than ``sep_limit``
        (10 MiB) go to ``.npy`` files beside it, which ``load(..., mmap="r")``
        maps instead of reading. Like every gensim file this is a pickle: load
        only files you trust.

        Examples
        --------
        >>> import os, tempfile, numpy as np, gensim
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(["a", "b"], np.array([[1, 2], [3, 4]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), "vectors.kv")
        >>> kv.save(path)
        >>> type(gensim.models.KeyedVectors.load(path)).__module__
        'gensim.models.keyedvectors'
        >>> KeyedVectors.load(path)["b"].tolist()
        [3.0, 4.0]
        """
        plain = GensimKeyedVectors.__new__(GensimKeyedVectors)
        plain.__dict__.update(_state_of(self))  # shares our arrays: nothing is copied
        plain.save(*args, **kwargs)
        if getattr(plain, "lifecycle_events", None) is not None:
            self.lifecycle_events = plain.lifecycle_events  # gensim's record of the save, kept on us too

    @classmethod
    def load(cls, fname: Any, mmap: Optional[str] = None) -> "KeyedVectors":
        """Load a file written by :meth:`save`, or by gensim's ``KeyedVectors.save``, as ours.

        Parameters
        ----------
        fname : str
            The file.
        mmap : {None, "r", "r+", "c"}, optional
            Memory-map the arrays that were saved to separate ``.npy`` files.

        Raises
        ------
        TypeError
            If the file holds something else than plain ``KeyedVectors`` (a
            whole gensim model, or ``FastTextKeyedVectors``).

        Examples
        --------
        >>> import os, tempfile, numpy as np, gensim
        >>> theirs = gensim.models.KeyedVectors(2)
        >>> theirs.add_vectors(["a"], np.array([[1, 2]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), "gensim.kv")
        >>> theirs.save(path)
        >>> print(KeyedVectors.load(path))
        KeyedVectors<vector_size=2, 1 keys>
        """
        obj = super().load(fname, mmap=mmap)
        if isinstance(obj, cls):
            return obj
        if type(obj) is GensimKeyedVectors:
            obj.__class__ = cls  # we add methods only, no state: the object is already complete
            return obj
        raise TypeError(
            f"{fname} holds a {type(obj).__module__}.{type(obj).__name__}, not plain KeyedVectors: load it with its "
            "own class (for a whole model, KeyedVectors.from_gensim(model) copies its .wv)")

    def save_word2vec_format(
            self, fname: Any, fvocab: Any = None, binary: bool = False, total_vec: Optional[int] = None,
            write_header: bool = True, prefix: str = "", append: bool = False, sort_attr: str = "count",
    ) -> None:
        """Write the word2vec C-tool format with gensim's writer; each file appears complete or not at all.

        gensim writes to a stand-in file beside ``fname`` (and ``fvocab``),
        which replaces the target only after everything was written: an
        interrupted or failed save leaves the previous file untouched. The
        parameters and the bytes written are gensim's; see
        :meth:`gensim.models.KeyedVectors.save_word2vec_format`. URLs and open
        handles are passed to gensim as they are.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(["a", "b"], np.array([[1, 0.5], [0, 1]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), "vectors.txt")
        >>> kv.save_word2vec_format(path)
        >>> print(open(path).read(), end="")
        2 2
        a 1.0 0.5
        b 0.0 1.0
        """
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(_replaced_on_success(fname, append))
            vocab_target = None if fvocab is None else stack.enter_context(_replaced_on_success(fvocab, append))
            super().save_word2vec_format(
                target, fvocab=vocab_target, binary=binary, total_vec=total_vec, write_header=write_header,
                prefix=prefix, append=append, sort_attr=sort_attr)

    @classmethod
    def load_word2vec_format(
            cls, fname: Any, fvocab: Any = None, binary: bool = False, encoding: str = "utf8",
            unicode_errors: str = "strict", limit: Optional[int] = None, datatype: DTypeLike = REAL,
            no_header: bool = False,
    ) -> "KeyedVectors":
        """Read a word2vec C-tool file (text or binary): gensim's parameters and results, faster.

        On a well-formed file the keys, vectors (bit for bit) and ``count``
        attribute equal what gensim reads. Where gensim misbehaves we differ:
        a repeated word keeps its first vector and the vocabulary shrinks
        (gensim 4.4 leaves a ``None`` key behind); a word missing from
        ``fvocab`` gets count 0 with a warning (gensim raises ``TypeError``);
        a text line with the wrong number of values raises ``ValueError``
        naming the line (gensim may broadcast a single value over the row);
        a file that ends early raises ``EOFError`` naming the line (text) or
        byte offset (binary).

        Parameters
        ----------
        fname : str
            The file; compressed (``.gz``, ``.bz2``, ...) and remote files are
            opened by gensim's opener.
        fvocab : str, optional
            ``word count`` lines (the C tool's ``-save-vocab`` output) giving
            the ``count`` attribute; without it counts descend from the
            number of vectors, as gensim makes them up.
        binary : bool, optional
            Binary format.
        encoding, unicode_errors : str, optional
            How the words are decoded.
        limit : int, optional
            Read only the first ``limit`` vectors.
        datatype : numpy dtype, optional
            Element type of the loaded vectors.
        no_header : bool, optional
            A text file without the ``count dimensions`` first line.

        Examples
        --------
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "vectors.txt")
        >>> _ = open(path, "w").write("2 3\\ncat 1 0 0\\ndog 0.9 0.1 0\\n")
        >>> kv = KeyedVectors.load_word2vec_format(path)
        >>> kv.index_to_key, kv["dog"].astype(float).round(2).tolist(), int(kv.get_vecattr("dog", "count"))
        (['cat', 'dog'], [0.9, 0.1, 0.0], 1)
        """
        counts = None if fvocab is None else _read_vocab_counts(fvocab, unicode_errors)
        name = fname if isinstance(fname, str) else repr(fname)
        logger.info("reading word vectors from %s", name)
        if no_header:
            if binary:
                raise NotImplementedError("no_header=True reads text files only: a binary file needs its header")
            with gensim_utils.open(fname, "rb") as fin:
                n_rows, dim = _text_file_shape(fin, limit, encoding, unicode_errors)
        with gensim_utils.open(fname, "rb") as fin:
            first_line = 1
            if not no_header:
                header = fin.readline()
                n_rows, dim = _parse_header(header, encoding, name)
                first_line = 2
            if limit:
                n_rows = min(n_rows, limit)
            if binary:
                rows = _binary_rows(fin, n_rows, dim, encoding, unicode_errors, len(header), name)
            else:
                rows = _text_rows(fin, n_rows, dim, encoding, unicode_errors, first_line, name)
            keys, vectors = _first_of_each_key(rows, n_rows, dim, datatype)
        kv = cls(dim, 0, dtype=datatype)
        kv.index_to_key = keys
        kv.key_to_index = {key: row for row, key in enumerate(keys)}
        kv.vectors = vectors
        kv.next_index = len(keys)
        if counts is None:
            kv.expandos["count"] = np.arange(n_rows, n_rows - len(keys), -1, dtype=np.int64)
        else:
            missing = [key for key in keys if key not in counts]
            if missing:
                logger.warning("%d words have no count in %s (first: %r); their count is 0",
                               len(missing), fvocab, missing[0])
            kv.expandos["count"] = np.array([counts.get(key, 0) for key in keys], dtype=np.int64)
        kv.add_lifecycle_event(
            "load_word2vec_format", msg=f"read {vectors.shape} {vectors.dtype} vectors from {name}",
            binary=binary, encoding=encoding)
        return kv

    # ------------------------------------------------------------------ batched search

    def _batch_tolerance(self) -> float:
        """Score gap above which our float32 block scores rank two rows as gensim does.

        For one row, our score and gensim's are float32 dot products of
        length ``d`` between the same unit-length query and the row scaled to
        unit length (gensim scales after the product, we before). Each is off
        the exact cosine by at most about ``d`` units of 2**-24 plus a few
        roundings, and the queries may differ in their last bits, so the two
        scores differ by at most ``bound`` below. Rows whose scores differ by
        more than twice that are ordered alike by both.
        """
        d = self.vector_size
        bound = (2 * d + 4 * math.sqrt(d) + 16) * 2.0 ** -24
        return 2 * bound * float(self.batch_gap_safety)

    def _top_rows(self, start: int, end: int, k: int, n_queries: int) -> Optional["_TopRows"]:
        """A top-``k`` searcher over rows ``start:end``, or None where gensim's own loop is the better choice."""
        if self.vectors.dtype not in (np.float32, np.float64) or end - start < 4 * k:
            return None  # other dtypes: our float32 error bound does not cover gensim's arithmetic
        norms = np.asarray(self.norms[start:end])
        if not np.all(np.isfinite(norms)):
            return None  # overflowing rows: gensim's scores there are not simply "never ranked"
        return _TopRows(self.vectors, norms, start, end, k, n_queries, self.batch_buffer_bytes)

    def _reliable(self, scores: Sequence[float], last: int) -> bool:
        """True when ranks ``0..last + 1`` are finite and each lies more than the tolerance below the one before."""
        tolerance = self._batch_tolerance()
        previous = scores[0]
        if not math.isfinite(previous):
            return False
        for score in scores[1:last + 2]:
            if not math.isfinite(score) or previous - score <= tolerance:
                return False
            previous = score
        return True

    def most_similar_batch(
            self, queries: Iterable[Any], topn: Optional[int] = 10, clip_start: int = 0,
            clip_end: Optional[int] = None, restrict_vocab: Optional[int] = None, batch_size: int = 512,
    ) -> List[Any]:
        """``[kv.most_similar(...) for each query]``, computed with one matrix product per block of queries.

        The keys and their order equal gensim's ``most_similar`` for every
        query; scores agree to float32 rounding. Queries whose candidates are
        too close to order safely in float32 are answered by
        ``most_similar`` itself.

        Parameters
        ----------
        queries : iterable
            Each a ``dict`` with ``"positive"`` and/or ``"negative"``, or
            anything ``most_similar`` takes as ``positive`` (a key, a vector,
            or a list of keys, vectors and ``(key, weight)`` pairs).
        topn, clip_start, clip_end, restrict_vocab : optional
            As in ``most_similar``; ``topn`` of None or below 1 is passed to
            it query by query.
        batch_size : int, optional
            Queries per matrix product.

        Returns
        -------
        list
            One ``most_similar`` result per query.

        Examples
        --------
        >>> import numpy as np
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(["cat", "dog", "car"], np.array([[1, 0], [0.9, 0.2], [0, 1]], dtype=np.float32))
        >>> [[key for key, _ in result] for result in kv.most_similar_batch(["cat", {"positive": ["car"]}], topn=1)]
        [['dog'], ['dog']]
        """
        specs = [(q.get("positive"), q.get("negative")) if isinstance(q, dict) else (q, None) for q in queries]
        self._batch_stats = {"queries": len(specs), "exact_fallbacks": len(specs)}  # until the block path runs

        def exact(positive, negative):
            return GensimKeyedVectors.most_similar(
                self, positive, negative, topn=topn, clip_start=clip_start, clip_end=clip_end,
                restrict_vocab=restrict_vocab)

        if not (isinstance(topn, Integral) and topn >= 1 and isinstance(clip_start, Integral) and clip_start >= 0):
            return [exact(p, n) for p, n in specs]
        self.fill_norms()
        start, end = (0, restrict_vocab) if restrict_vocab else (clip_start, clip_end or len(self.vectors))
        end = min(end, len(self.vectors))
        prepared = [self._query_vector(p, n) for p, n in specs]
        widest = max((len(inputs) for _, inputs in prepared), default=0)
        k = topn + widest + 1  # enough rows to skip the inputs, plus one to see the gap after the last answer
        searcher = self._top_rows(start, end, k, min(batch_size, len(specs))) if specs and end > start else None
        if searcher is None:
            return [exact(p, n) for p, n in specs]
        results: List[Any] = []
        fallbacks = 0
        for lo in range(0, len(specs), batch_size):
            block = prepared[lo:lo + batch_size]
            rows, scores = searcher.top(np.vstack([mean for mean, _ in block]).astype(np.float32))
            rows, scores = rows.tolist(), scores.tolist()
            for j, (mean, inputs) in enumerate(block):
                chosen, last = [], 0
                for rank, row in enumerate(rows[j]):
                    if row not in inputs:
                        chosen.append(row)
                        last = rank
                        if len(chosen) == topn:
                            break
                if len(chosen) == topn and self._reliable(scores[j], last):
                    sims = np.dot(self.vectors[chosen], mean) / self.norms[chosen]
                    results.append([(self.index_to_key[r], float(s)) for r, s in zip(chosen, sims)])
                else:
                    fallbacks += 1
                    results.append(exact(*specs[lo + j]))
        self._batch_stats = {"queries": len(specs), "exact_fallbacks": fallbacks}
        return results

    def _query_vector(self, positive: Any, negative: Any) -> Tuple[np.ndarray, frozenset]:
        """gensim's query vector for ``most_similar(positive, negative)`` and the rows it leaves out of the answer."""
        positive, negative = _as_list(positive), _as_list(negative)
        weights = np.concatenate((np.ones(len(positive)), -np.ones(len(negative))))
        keys = []
        for i, item in enumerate(list(positive) + list(negative)):
            if isinstance(item, _KEY_TYPES + (np.ndarray,)):
                keys.append(item)
            else:  # a (key or vector, weight) pair
                keys.append(item[0])
                weights[i] = item[1]
        mean = self.get_mean_vector(keys, weights, pre_normalize=True, post_normalize=True, ignore_missing=False)
        inputs = frozenset(self.get_index(key) for key in keys if isinstance(key, _KEY_TYPES) and self.has_index_for(key))
        return mean, inputs

    # ------------------------------------------------------------------ evaluation

    def evaluate_word_analogies(
            self, analogies: Any, restrict_vocab: Optional[int] = 300000, case_insensitive: bool = True,
            dummy4unknown: bool = False, similarity_function: str = "most_similar", batch_size: int = 512,
    ) -> Tuple[float, List[Dict[str, Any]]]:
        """Accuracy on analogy questions ``a b c d`` (is ``d`` the best answer to ``b - a + c``?): gensim's, batched.

        Returns the same score and sections as
        :meth:`gensim.models.KeyedVectors.evaluate_word_analogies`, scoring
        ``batch_size`` questions with one matrix product. For each question
        gensim takes ``most_similar(positive=[b, c], negative=[a], topn=5)``
        over the first ``restrict_vocab`` keys (words looked up case-folded
        with ``case_insensitive``, the first spelling in vocabulary order
        winning) and predicts the first listed key, case-folded, that is in
        that range and is none of ``a``, ``b``, ``c`` (else the last one
        listed); questions whose leading candidates are too close to order
        safely in float32 are answered by gensim's ``most_similar`` itself.

        Parameters
        ----------
        analogies : str
            A bundled set by name (``"google"``: ``questions-words.txt``) or a
            file of ``: section`` lines and four-word questions.
        restrict_vocab : int, optional
            Only the first ``restrict_vocab`` keys are candidates; questions
            with any other word are out of vocabulary.
        case_insensitive : bool, optional
            Compare words upper-cased.
        dummy4unknown : bool, optional
            Count out-of-vocabulary questions as wrong instead of skipping them.
        similarity_function : str, optional
            Ignored, as by gensim (always 3CosAdd).
        batch_size : int, optional
            Questions per matrix product.

        Returns
        -------
        score : float
            Share of questions answered correctly.
        sections : list of dict
            ``{"section": name, "correct": [...], "incorrect": [...]}`` per
            section (questions as 4-tuples), then ``"Total accuracy"``.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> kv = KeyedVectors(3)
        >>> kv.add_vectors(["man", "woman", "king", "queen", "apple"], np.array(
        ...     [[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [-1, 0, 0.2]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), "analogies.txt")
        >>> _ = open(path, "w").write(": family\\nman woman king queen\\nman king woman apple\\n")
        >>> score, sections = kv.evaluate_word_analogies(path)
        >>> score, [s["section"] for s in sections], sections[0]["incorrect"]
        (0.5, ['family', 'Total accuracy'], [('MAN', 'KING', 'WOMAN', 'APPLE')])
        """
        path = datasets.resolve(analogies) if isinstance(analogies, (str, os.PathLike)) else analogies
        vocab = folded_vocab(self.index_to_key[:restrict_vocab], case_insensitive)
        sections: List[Dict[str, Any]] = []
        outcomes = []  # (section, question, number of the asked question or None when out of vocabulary)
        asked: List[Tuple[str, ...]] = []
        n_read = n_unknown = 0
        for _, section_name, words in read_analogies(path):
            if words is None:
                sections.append({"section": section_name, "correct": [], "incorrect": []})
                continue
            question = tuple(w.upper() for w in words) if case_insensitive else tuple(words)
            n_read += 1
            if all(w in vocab for w in question):
                outcomes.append((sections[-1], question, len(asked)))
                asked.append(question)
            else:
                n_unknown += 1
                if dummy4unknown:
                    outcomes.append((sections[-1], question, None))
        answers = self._answer_analogies(asked, vocab, restrict_vocab, case_insensitive, batch_size)
        for section, question, number in outcomes:
            right = number is not None and answers[number] == question[3]
            section["correct" if right else "incorrect"].append(question)
        for section in sections:
            self._log_evaluate_word_analogies(section)
        if n_read:
            logger.info("%d of %d questions (%.1f%%) have a word outside the first %d keys and were %s",
                        n_unknown, n_read, 100.0 * n_unknown / n_read, len(self.index_to_key[:restrict_vocab]),
                        "counted wrong" if dummy4unknown else "skipped")
        total = {
            "section": "Total accuracy",
            "correct": [q for s in sections for q in s["correct"]],
            "incorrect": [q for s in sections for q in s["incorrect"]],
        }
        score = self._log_evaluate_word_analogies(total)
        sections.append(total)
        return score, sections

    def _answer_analogies(self, asked: List[Tuple[str, ...]], vocab: Dict[Any, int], restrict_vocab: Optional[int],
                          case_insensitive: bool, batch_size: int) -> List[Any]:
        """gensim's prediction (case-folded key, or None) for every question, mostly from block scores."""
        self._batch_stats = {"queries": len(asked), "exact_fallbacks": 0}
        if not asked:
            return []
        self.fill_norms()
        end = min(restrict_vocab or len(self.vectors), len(self.vectors))
        # gensim lists its 5 best keys after dropping the 3 inputs: it looks at the 8 best rows; a 9th shows the gap
        searcher = self._top_rows(0, end, 9, min(batch_size, len(asked)))
        if searcher is None:
            self._batch_stats = {"queries": len(asked), "exact_fallbacks": len(asked)}
            return [self._gensim_answer(q, vocab, restrict_vocab, case_insensitive) for q in asked]
        folded: Dict[int, Any] = {}
        answers = []
        fallbacks = 0
        for lo in range(0, len(asked), batch_size):
            block = asked[lo:lo + batch_size]
            inputs = [[vocab[w] for w in q[:3]] for q in block]
            rows, scores = searcher.top(self._analogy_queries(np.array(inputs, dtype=np.intp)))
            rows, scores = rows.tolist(), scores.tolist()
            for j, question in enumerate(block):
                answer, last, listed = None, 0, 0
                for rank, row in enumerate(rows[j][:8]):
                    if row in inputs[j]:
                        continue
                    if row not in folded:
                        key = self.index_to_key[row]
                        folded[row] = key.upper() if case_insensitive else key
                    answer, last, listed = folded[row], rank, listed + 1
                    if (answer in vocab and answer not in question[:3]) or listed == 5:
                        break
                if self._reliable(scores[j], last):
                    answers.append(answer)
                else:
                    fallbacks += 1
                    answers.append(self._gensim_answer(question, vocab, restrict_vocab, case_insensitive))
        self._batch_stats = {"queries": len(asked), "exact_fallbacks": fallbacks}
        return answers

    def _analogy_queries(self, inputs: np.ndarray) -> np.ndarray:
        """Unit float32 queries ``b/|b| + c/|c| - a/|a|`` for rows ``(a, b, c)`` (gensim's 3CosAdd vector)."""
        unit = [self.vectors[inputs[:, i]].astype(np.float64) / self.norms[inputs[:, i], None] for i in range(3)]
        with np.errstate(all="ignore"):  # zero vectors: NaN queries, which are never judged reliable
            query = unit[1] + unit[2] - unit[0]
            query /= np.linalg.norm(query, axis=1, keepdims=True)
        return query.astype(np.float32)

    def _gensim_answer(self, question: Tuple[str, ...], vocab: Dict[Any, int], restrict_vocab: Optional[int],
                       case_insensitive: bool) -> Any:
        """One question answered by gensim's ``most_similar``, with words looked up in the folded vocabulary."""
        a, b, c = question[:3]
        saved, self.key_to_index = self.key_to_index, vocab
        try:
            listed = GensimKeyedVectors.most_similar(
                self, positive=[b, c], negative=[a], topn=5, restrict_vocab=restrict_vocab)
        finally:
            self.key_to_index = saved
        answer = None
        for key, _ in listed:
            answer = key.upper() if case_insensitive else key
            if answer in vocab and answer not in question[:3]:
                break
        return answer

    def evaluate_word_pairs(
            self, pairs: Any, delimiter: str = "\t", encoding: str = "utf8", restrict_vocab: Optional[int] = 300000,
            case_insensitive: bool = True, dummy4unknown: bool = False,
    ) -> Tuple[Any, Any, float]:
        """gensim's ``evaluate_word_pairs``, also taking bundled sets by name and SimLex-999's own file.

        ``pairs`` is ``"wordsim353"``, ``"simlex999"`` or a path. A file whose
        first line is SimLex-999's header (``word1 word2 POS SimLex999 ...``)
        is read as word, word, SimLex score (its columns 1, 2 and 4), whatever
        ``delimiter`` says; any other file goes to gensim unchanged. The
        result is gensim's: Pearson and Spearman correlation with their
        p-values, and the percentage of pairs with unknown words.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(["a", "b", "c", "d"], np.array([[1, 0], [1, 0.1], [0, 1], [1, 1]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), "pairs.tsv")
        >>> _ = open(path, "w").write("a\\tb\\t9\\na\\tc\\t1\\na\\td\\t5\\nb\\tz\\t3\\n")
        >>> pearson, spearman, oov = kv.evaluate_word_pairs(path)
        >>> round(float(spearman[0]), 3), oov
        (1.0, 25.0)
        """
        path, delimiter = datasets.resolve_pairs(pairs, delimiter)
        with _three_columns_if_simlex(path, encoding) as plain:
            if plain is not None:
                path, delimiter = plain, "\t"
            return super().evaluate_word_pairs(
                path, delimiter=delimiter, encoding=encoding, restrict_vocab=restrict_vocab,
                case_insensitive=case_insensitive, dummy4unknown=dummy4unknown)

    def analogy_report(
            self, analogies: Any = "google", restrict_vocab: int = 300000, case_insensitive: bool = True,
            batch_size: int = 1024,
    ) -> "AnalogyReport":
        """Rank of the true answer and cos(d, b - a + c) per analogy question (Wibisono & Wang 2023, Tables 1-2).

        See :func:`bidirmoe.evaluation.analogy_report` for the parameters and the result.

        Examples
        --------
        >>> import os, tempfile, numpy as np
        >>> kv = KeyedVectors(2)
        >>> kv.add_vectors(["a", "b", "c", "d"], np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], dtype=np.float32))
        >>> path = os.path.join(tempfile.mkdtemp(), "q.txt")
        >>> _ = open(path, "w").write(": s\\na b c d\\n")
        >>> kv.analogy_report(path).groups_table()[-1]["top1"]
        1.0
        """
        return _analogy_report(self, analogies, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive,
                               batch_size=batch_size)


class _TopRows:
    """The ``k`` best rows of ``vectors[start:end]`` by cosine with each of a block of unit queries.

    Scores are float32 matrix products of the queries with a unit-scaled
    copy of one column chunk of rows at a time (a chunk's score matrix fills
    at most ``buffer_bytes``). Selection avoids a partition of every score
    row: the rows of a chunk are dealt into ``group``-sized groups, and the
    ``k``-th largest group maximum seen so far is a floor under the ``k``-th
    best score (``k`` groups each hold a score at least that high), so only
    the few groups reaching the floor are searched.
    """

    def __init__(self, vectors: np.ndarray, norms: np.ndarray, start: int, end: int, k: int, n_queries: int,
                 buffer_bytes: int) -> None:
        self.vectors, self.start, self.end, self.k = vectors, start, end, k
        n_rows, dim = end - start, vectors.shape[1]
        with np.errstate(divide="ignore"):
            self.inverse = (1.0 / norms).astype(np.float32)
        # zero rows: gensim's score is NaN (sorted last), ours -inf
        self.zero_rows = np.flatnonzero(norms == 0)
        self.inverse[self.zero_rows] = 0.0
        self.group = int(max(1, min(128, n_rows // (4 * k))))
        chunk = min(buffer_bytes // (4 * max(n_queries, 1)), buffer_bytes // (4 * max(dim, 1)), n_rows)
        self.chunk = max(1, -(-chunk // self.group)) * self.group  # whole groups
        self.rows = np.zeros((self.chunk, dim), dtype=np.float32)
        self.scores = np.empty(n_queries * self.chunk, dtype=np.float32)

    def top(self, queries: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``, each ``(len(queries), k)``: absolute row numbers and float64 scores, best first.

        Equal scores are ordered by row. A query with fewer than ``k``
        comparable scores (NaN query) gets NaN scores and row ``start``.
        """
        n_q, k, group = len(queries), self.k, self.group
        best_maxima = np.empty((n_q, 0), dtype=np.float32)
        floor = np.full(n_q, -np.inf, dtype=np.float32)
        found: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for lo in range(self.start, self.end, self.chunk):
            hi = min(lo + self.chunk, self.end)
            used = hi - lo
            width = -(-used // group) * group
            rows = self.rows[:width]
            np.multiply(self.vectors[lo:hi], self.inverse[lo - self.start:hi - self.start, None], out=rows[:used],
                        casting="same_kind")
            rows[used:] = 0.0
            scores = self.scores[:n_q * width].reshape(n_q, width)
            np.dot(queries, rows.T, out=scores)
            scores[:, used:] = -np.inf
            zeros = self.zero_rows[(self.zero_rows >= lo - self.start) & (self.zero_rows < hi - self.start)]
            scores[:, zeros - (lo - self.start)] = -np.inf
            # group g of this chunk: columns g, g + n_groups, g + 2 n_groups, ... (a cheap strided maximum)
            n_groups = width // group
            grouped = scores.reshape(n_q, group, n_groups)
            maxima = grouped.max(axis=1)
            best_maxima = np.concatenate((best_maxima, maxima), axis=1)
            if best_maxima.shape[1] >= k:
                best_maxima = np.partition(best_maxima, best_maxima.shape[1] - k, axis=1)[:, -k:]
                floor = best_maxima.min(axis=1)
            query, grp = np.nonzero(maxima >= floor[:, None])
            members = grouped[query, :, grp]
            hit, position = np.nonzero(members >= floor[query, None])
            found.append((query[hit], lo + position * n_groups + grp[hit], members[hit, position]))
        query, row, score = (np.concatenate(parts) for parts in zip(*found))
        keep = score >= floor[query]  # earlier chunks were searched with a lower floor
        query, row, score = query[keep], row[keep], score[keep]
        order = np.lexsort((row, -score, query))
        query, row, score = query[order], row[order], score[order]
        counts = np.bincount(query, minlength=n_q)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        take = np.minimum(first[:, None] + np.arange(k), max(len(row) - 1, 0))
        if len(row):
            rows_out, scores_out = row[take], score[take].astype(np.float64)
        else:
            rows_out, scores_out = np.full((n_q, k), self.start), np.full((n_q, k), np.nan)
        short = counts < k
        rows_out[short], scores_out[short] = self.start, np.nan
        return rows_out, scores_out


# ---------------------------------------------------------------------- helpers


def _state_of(kv: Any, copied: bool = False) -> Dict[str, Any]:
    """``vars(kv)`` without bidirmoe's own attributes; with ``copied``, independent of ``kv``."""
    state = {k: v for k, v in vars(kv).items() if k not in _OWN_ATTRIBUTES}
    if copied:
        arrays = {"vectors": state.pop("vectors", None), "norms": state.pop("norms", None)}
        state = copy.deepcopy(state)
        # np.array: in-memory copies, also of memory-mapped vectors
        state.update({k: None if v is None else np.array(v) for k, v in arrays.items()})
    return state


def _as_list(value: Any) -> List[Any]:
    """``positive`` / ``negative`` of ``most_similar`` as a list (gensim's reading of one key or vector)."""
    if value is None:
        return []
    if isinstance(value, _KEY_TYPES) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [value]
    return list(value)  # a list, or a 2-D array: one vector per row


@contextlib.contextmanager
def _replaced_on_success(target: Any, keep_content: bool) -> Iterator[Any]:
    """A stand-in path for local file ``target``, moved over it (atomically) when the block succeeds.

    The stand-in has ``target``'s own name inside a scratch directory beside
    it, so compression by extension and the final rename behave as for the
    target. With ``keep_content`` it starts as a copy of the target (append).
    """
    if not isinstance(target, (str, os.PathLike)) or "://" in os.fspath(target):
        yield target
        return
    target = os.fspath(target)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=os.path.dirname(os.path.abspath(target)))
    stand_in = os.path.join(scratch, os.path.basename(target))
    try:
        if keep_content and os.path.exists(target):
            shutil.copyfile(target, stand_in)
        yield stand_in
        with open(stand_in, "rb+") as written:
            os.fsync(written.fileno())
        if os.path.exists(target):
            shutil.copymode(target, stand_in)
        os.replace(stand_in, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_SIMLEX_HEADER = "word1\tword2\tPOS\tSimLex999"


@contextlib.contextmanager
def _three_columns_if_simlex(path: Any, encoding: str) -> Iterator[Optional[str]]:
    """For SimLex-999's own file, a temporary ``word1<TAB>word2<TAB>score`` copy of it; else None."""
    if not isinstance(path, (str, os.PathLike)):
        yield None
        return
    with gensim_utils.open(os.fspath(path), "r", encoding=encoding) as fin:
        if not fin.readline().startswith(_SIMLEX_HEADER):
            yield None
            return
        lines = [line.rstrip("\r\n").split("\t") for line in fin]
    with tempfile.TemporaryDirectory() as scratch:
        plain = os.path.join(scratch, os.path.basename(os.fspath(path)))
        with open(plain, "w", encoding=encoding) as out:
            out.writelines(f"{f[0]}\t{f[1]}\t{f[3]}\n" if len(f) > 3 else "\t".join(f) + "\n" for f in lines)
        yield plain


def _read_vocab_counts(fvocab: Any, unicode_errors: str) -> Dict[str, int]:
    """``{word: count}`` from ``word count`` lines (a later line for the same word wins, as in gensim)."""
    counts = {}
    with gensim_utils.open(fvocab, "rb") as fin:
        for line_no, line in enumerate(fin, start=1):
            fields = line.decode("utf8", errors=unicode_errors).split()
            if len(fields) != 2:
                raise ValueError(f"{fvocab}: line {line_no}: expected 'word count', got {line[:80]!r}")
            counts[fields[0]] = int(fields[1])
    return counts


def _parse_header(line: bytes, encoding: str, name: str) -> Tuple[int, int]:
    fields = line.decode(encoding).split()
    try:
        n_rows, dim = (int(f) for f in fields)
    except ValueError:
        raise ValueError(f"{name}: line 1: expected the header 'number_of_vectors dimensions', got {line[:80]!r}"
                         ) from None
    return n_rows, dim


def _text_file_shape(fin: Any, limit: Optional[int], encoding: str, unicode_errors: str) -> Tuple[int, int]:
    """Rows (at most ``limit``) and values per row (from the first line) of a text file without header."""
    n_rows, dim = 0, 0
    for line in fin:
        if n_rows == limit:
            break
        if n_rows == 0:
            dim = len(line.rstrip().decode(encoding, errors=unicode_errors).split(" ")) - 1
        n_rows += 1
    return n_rows, dim


def _text_rows(fin: Any, n_rows: int, dim: int, encoding: str, unicode_errors: str, first_line: int,
               name: str) -> Iterator[Tuple[List[str], Any]]:
    """Batches ``(words, values)`` of the next ``n_rows`` lines ``word v1 v2 ...`` (single spaces, as the C tool)."""
    words: List[str] = []
    values: List[List[float]] = []
    for i in range(n_rows):
        line = fin.readline()
        line_no = first_line + i
        if not line:
            raise EOFError(f"{name}: line {line_no}: the file ends after {i} of {n_rows} vectors "
                           "(wrong count in the header, or a truncated file?)")
        fields = line.rstrip().decode(encoding, errors=unicode_errors).split(" ")
        if len(fields) != dim + 1:
            raise ValueError(f"{name}: line {line_no}: {len(fields) - 1} values after {fields[0]!r}, expected {dim}")
        try:
            values.append(list(map(float, fields[1:])))
        except ValueError as err:
            raise ValueError(f"{name}: line {line_no}: {err}") from None
        words.append(fields[0])
        if len(words) == 1024:
            yield words, values
            words, values = [], []
    if words:
        yield words, values


def _binary_rows(fin: Any, n_rows: int, dim: int, encoding: str, unicode_errors: str, offset: int,
                 name: str) -> Iterator[Tuple[List[str], np.ndarray]]:
    """Batches ``(words, float32 vectors)`` of the next ``n_rows`` records ``word<space><dim float32>``.

    A newline before a word (the C tool writes one after each vector) is not
    part of the word. ``offset`` is the file position of the first record.
    Each batch is the records complete in one read of the file.
    """
    width = 4 * dim
    data, at = b"", 0  # unread bytes begin at data[at], which is file byte `offset`
    done = 0
    while done < n_rows:
        more = fin.read(_READ_CHUNK)
        if not more:
            raise EOFError(f"{name}: byte {offset}: the file ends inside vector {done + 1} of {n_rows} "
                           "(wrong count in the header, or a truncated file?)")
        data, at = data[at:] + more, 0
        last_start = len(data) - width - 1  # a record's space must lie at or before this to be complete
        begin, spaces, wanted = at, [], n_rows - done
        find = data.find
        while len(spaces) < wanted:
            space = find(b" ", at)
            if space < 0 or space > last_start:
                break  # this record continues in the next read
            spaces.append(space)
            at = space + 1 + width
        if spaces:
            offset += at - begin
            done += len(spaces)
            starts = [begin] + [space + 1 + width for space in spaces[:-1]]
            words = [data[a:b].decode(encoding, errors=unicode_errors).lstrip("\n") for a, b in zip(starts, spaces)]
            yield words, np.frombuffer(b"".join([data[b + 1:b + 1 + width] for b in spaces]), dtype=REAL).reshape(-1, dim)


def _first_of_each_key(batches: Iterator[Tuple[List[str], Any]], n_rows: int, dim: int,
                       datatype: DTypeLike) -> Tuple[List[str], np.ndarray]:
    """Keys in file order and their vectors; a repeated key keeps its first vector (logged)."""
    vectors = np.empty((n_rows, dim), dtype=datatype)
    keys: List[str] = []
    seen: set = set()
    for words, values in batches:
        fresh = [w not in seen and not seen.add(w) for w in words]  # type: ignore[func-returns-value]
        if all(fresh):
            vectors[len(keys):len(keys) + len(words)] = values
            keys.extend(words)
            continue
        for word, new, row in zip(words, fresh, values):
            if new:
                vectors[len(keys)] = row
                keys.append(word)
            else:
                logger.warning("word %r appears twice; keeping its first vector", word)
    if len(keys) < n_rows:
        vectors = np.ascontiguousarray(vectors[:len(keys)])
    return keys, vectors
