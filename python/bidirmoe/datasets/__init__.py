"""Small data sets shipped with bidirmoe, addressable by name.

=================  ==========================================================
name               file
=================  ==========================================================
``text8-sample``   first 2,139,748 words of text8 (Mahoney; English Wikipedia,
                   CC BY-SA), gzip, one line — the demo corpus
``google``         Google analogy set ``questions-words.txt`` (word2vec,
                   Apache-2.0), 14 sections, 19,544 questions
``wordsim353``     WordSim-353 (Finkelstein et al. 2002), 353 pairs, CSV
                   ``word1,word2,score`` with a header line
``simlex999``      SimLex-999 (Hill et al. 2015), 999 pairs, its own
                   10-column tab-separated format (score in column 4)
=================  ==========================================================

Examples
--------
>>> from bidirmoe import datasets
>>> import os
>>> os.path.isfile(datasets.path("google"))
True
"""

from __future__ import annotations

import os
from typing import Dict, List

_HERE = os.path.dirname(os.path.abspath(__file__))

_FILES: Dict[str, str] = {
    "text8-sample": "text8_sample.gz",
    "google": "questions-words.txt",
    "questions-words": "questions-words.txt",
    "questions-words.txt": "questions-words.txt",
    "wordsim353": "wordsim353.csv",
    "simlex999": "SimLex-999.txt",
}

#: Delimiters of the bundled word-pair files (the others use gensim's default tab).
_PAIR_DELIMITERS: Dict[str, str] = {"wordsim353": ","}


def names() -> List[str]:
    """Names accepted by :func:`path`.

    Examples
    --------
    >>> "google" in names()
    True
    """
    return sorted(_FILES)


def path(name: str) -> str:
    """Path of the bundled file called ``name`` (see :func:`names`).

    Raises
    ------
    KeyError
        Unknown name; the message lists the known ones.

    Examples
    --------
    >>> path("text8-sample").endswith("text8_sample.gz")
    True
    """
    try:
        return os.path.join(_HERE, _FILES[name])
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(names())}") from None


def resolve_pairs(name_or_path, delimiter: str):
    """``(path, delimiter)`` for ``evaluate_word_pairs``: a bundled name gets
    its file and that file's delimiter; a path keeps the caller's delimiter.

    Examples
    --------
    >>> resolve_pairs("wordsim353", "\t")[1]
    ','
    """
    p = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else name_or_path
    if isinstance(p, str) and p in _FILES:
        return path(p), _PAIR_DELIMITERS.get(p, delimiter)
    return name_or_path, delimiter


def resolve(name_or_path) -> str:
    """A bundled dataset's path if ``name_or_path`` is a known name, else the path itself.

    Examples
    --------
    >>> resolve("google") == path("google")
    True
    >>> resolve("/some/file.txt")
    '/some/file.txt'
    """
    p = os.fspath(name_or_path)
    return path(p) if p in _FILES else p
