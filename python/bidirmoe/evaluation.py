"""Benchmarks of word vectors beyond gensim's: the analogy metrics of
Wibisono & Wang (UAI 2023, arXiv 2307.04057, Tables 1–2).

For each analogy ``a : b :: c : d`` the report gives the rank of the true
``d`` among the candidate words by cos(x, b̂ − â + ĉ) (3CosAdd on unit
vectors, ``a``, ``b`` and ``c`` excluded, candidates limited to the
``restrict_vocab`` most frequent words — exactly gensim's
``evaluate_word_analogies`` setting, so rank 1 means "answered correctly"),
and cos(d, b̂ − â + ĉ): how close the true answer lies to the analogy
direction, whether or not it wins.

Examples
--------
>>> import numpy as np
>>> from bidirmoe import KeyedVectors
>>> from bidirmoe.evaluation import analogy_report
>>> kv = KeyedVectors(3)
>>> kv.add_vectors(["man", "woman", "king", "queen", "apple"],
...                np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, -1]], dtype=np.float32))
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "q.txt")
>>> _ = open(path, "w").write(": family\\nman woman king queen\\n")
>>> report = analogy_report(kv, path)
>>> int(report.questions_table()[0]["rank"])
1
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from gensim import utils as gensim_utils

from .datasets import resolve as _resolve_dataset

if TYPE_CHECKING:  # for annotations only (keyedvectors imports this module)
    from .keyedvectors import KeyedVectors

logger = logging.getLogger(__name__)


def read_analogies(path: Any, strict: bool = False) -> Iterator[Tuple[int, str, Optional[Tuple[str, ...]]]]:
    """Walk an analogy file in word2vec's format (``questions-words.txt``), the way gensim reads it.

    Yields ``(line_no, section, words)`` per line, numbered from 1: ``words``
    is None on a line starting with ``": "``, which opens the section named
    by the rest of the line, else the four words of a question as written.
    The file is opened with gensim's opener (so ``.gz``, ``.bz2`` ... work)
    and decoded as UTF-8.

    Parameters
    ----------
    path : str
        The file.
    strict : bool, optional
        Raise on a line that does not hold four words; by default such a
        line is skipped (and logged), as gensim's evaluator does.

    Raises
    ------
    ValueError
        A line before the first section header, or (``strict``) a malformed
        line; the message names the line.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "q.txt")
    >>> _ = open(path, "w").write(": capitals\\nathens greece paris france\\nnot a question\\n")
    >>> list(read_analogies(path))
    [(1, 'capitals', None), (2, 'capitals', ('athens', 'greece', 'paris', 'france'))]
    """
    section = None
    with gensim_utils.open(path, "rb") as fin:
        for line_no, raw in enumerate(fin, start=1):
            line = raw.decode("utf8")
            if line.startswith(": "):
                section = line.lstrip(": ").strip()
                yield line_no, section, None
                continue
            if section is None:
                raise ValueError(f"{path}, line {line_no}: a question before the first ': section' line")
            words = line.split()
            if len(words) == 4:
                yield line_no, section, tuple(words)
            elif strict and words:
                raise ValueError(f"{path}, line {line_no}: expected 4 words, got {len(words)}")
            else:
                logger.info("%s, line %d: not four words, skipped", path, line_no)


def folded_vocab(keys: Iterable[Any], case_insensitive: bool = True) -> Dict[Any, int]:
    """``{key: row}`` for the analogy and word-pair evaluations.

    With ``case_insensitive`` the keys are upper-cased and, of several
    spellings that fold alike, the first row (the most frequent word, in a
    vocabulary sorted by frequency) is kept, as gensim does.

    Examples
    --------
    >>> folded_vocab(["Paris", "paris", "PARIS", "london"])
    {'PARIS': 0, 'LONDON': 3}
    """
    vocab: Dict[Any, int] = {}
    for row, key in enumerate(keys):
        vocab.setdefault(key.upper() if case_insensitive else key, row)
    return vocab


def _group_of(section: str) -> str:
    """Google-set convention: ``gram*`` sections are syntactic, the rest semantic."""
    return "syntactic" if section.lower().startswith("gram") else "semantic"


@dataclass
class AnalogyReport:
    """Per-question ranks and cosines, with per-group and per-section summaries.

    ``questions``, ``groups`` and ``sections`` are pandas DataFrames when pandas
    is installed, lists of dicts otherwise (``*_table()`` always gives dicts).
    """

    questions: Any
    groups: Any
    sections: Any
    skipped: int
    _rows: List[Dict[str, Any]] = field(default_factory=list, repr=False)
    _group_rows: List[Dict[str, Any]] = field(default_factory=list, repr=False)
    _section_rows: List[Dict[str, Any]] = field(default_factory=list, repr=False)

    def questions_table(self) -> List[Dict[str, Any]]:
        """Per-question rows as dicts: section, group, a, b, c, d, rank, cosine."""
        return list(self._rows)

    def groups_table(self) -> List[Dict[str, Any]]:
        """Per-group rows: group, questions, top1 (share ranked first), mean_cosine, median_rank."""
        return list(self._group_rows)

    def sections_table(self) -> List[Dict[str, Any]]:
        """Per-section rows, same columns as :meth:`groups_table` plus ``group``."""
        return list(self._section_rows)


def _summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    ranks = np.array([r["rank"] for r in rows], dtype=np.int64)
    cos = np.array([r["cosine"] for r in rows], dtype=np.float64)
    return {
        "questions": len(rows),
        "top1": float(np.mean(ranks == 1)) if len(rows) else float("nan"),
        "mean_cosine": float(np.mean(cos)) if len(rows) else float("nan"),
        "median_rank": float(np.median(ranks)) if len(rows) else float("nan"),
    }


def analogy_report(kv: KeyedVectors, analogies: Union[str, os.PathLike[str]] = "google", restrict_vocab: int = 300000,
                   case_insensitive: bool = True, batch_size: int = 1024) -> AnalogyReport:
    """Rank of the true answer and cos(d, b − a + c) for every analogy question.

    Parameters
    ----------
    kv : KeyedVectors
        The vectors (``model.wv``).
    analogies : str or os.PathLike
        Analogy file in word2vec's format (``: section`` lines, then ``a b c d``),
        or a bundled name such as ``"google"``.
    restrict_vocab : int
        Only the first (most frequent) ``restrict_vocab`` words are candidates;
        questions with a word outside them are skipped (counted in ``skipped``).
    case_insensitive : bool
        Compare words upper-cased, the first (most frequent) spelling winning,
        as gensim does.
    batch_size : int
        Questions scored per matrix product.

    Returns
    -------
    AnalogyReport

    Raises
    ------
    ValueError
        A line that is neither a section header nor four words, naming it
        (:meth:`~bidirmoe.KeyedVectors.evaluate_word_analogies` skips such
        lines, as gensim does; both read the file with :func:`read_analogies`).

    Examples
    --------
    See the module docstring.
    """
    path = _resolve_dataset(analogies)
    keys = list(kv.index_to_key[:restrict_vocab])
    vecs = np.asarray(kv.vectors[: len(keys)], dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    unit = vecs / np.where(norms == 0, 1, norms)
    lookup = folded_vocab(keys, case_insensitive)

    questions = []  # (section, a, b, c, d, ia, ib, ic, id)
    skipped = 0
    for _, section, words in read_analogies(path, strict=True):
        if words is None:
            continue
        idx = [lookup.get(w.upper() if case_insensitive else w) for w in words]
        if any(i is None for i in idx):
            skipped += 1
            continue
        questions.append((section, *words, *idx))

    rows: List[Dict[str, Any]] = []
    for start in range(0, len(questions), batch_size):
        block = questions[start:start + batch_size]
        ia = np.array([q[5] for q in block])
        ib = np.array([q[6] for q in block])
        ic = np.array([q[7] for q in block])
        id_ = np.array([q[8] for q in block])
        target = unit[ib] - unit[ia] + unit[ic]
        tn = np.linalg.norm(target, axis=1, keepdims=True)
        target /= np.where(tn == 0, 1, tn)
        sims = target @ unit.T
        r = np.arange(len(block))
        cos_d = sims[r, id_].copy()
        sims[r, ia] = -np.inf
        sims[r, ib] = -np.inf
        sims[r, ic] = -np.inf
        # Rank 1 = no candidate scores higher; ties count in d's favour.
        ranks = 1 + (sims > cos_d[:, None]).sum(axis=1)
        # d equal to one of a, b, c can never be produced by 3CosAdd.
        excluded = (id_ == ia) | (id_ == ib) | (id_ == ic)
        for k, q in enumerate(block):  # type: ignore[assignment]  # q reused: a question tuple here
            rows.append({
                "section": q[0], "group": _group_of(q[0]), "a": q[1], "b": q[2], "c": q[3], "d": q[4],
                "rank": int(len(keys)) if excluded[k] else int(ranks[k]), "cosine": float(cos_d[k]),
            })

    group_rows = []
    for g in ("semantic", "syntactic"):
        sel = [r for r in rows if r["group"] == g]
        group_rows.append({"group": g, **_summary(sel)})
    group_rows.append({"group": "total", **_summary(rows)})
    section_rows = []
    for s in dict.fromkeys(r["section"] for r in rows):
        sel = [r for r in rows if r["section"] == s]
        section_rows.append({"section": s, "group": _group_of(s), **_summary(sel)})

    try:
        import pandas as pd
    except ImportError:
        frames = (rows, group_rows, section_rows)
    else:
        frames = (pd.DataFrame(rows, columns=["section", "group", "a", "b", "c", "d", "rank", "cosine"]),
                  pd.DataFrame(group_rows).set_index("group"), pd.DataFrame(section_rows).set_index("section"))
    return AnalogyReport(*frames, skipped=skipped, _rows=rows, _group_rows=group_rows, _section_rows=section_rows)
