"""Small data sets shipped with bidirmoe, addressable by name.

=================  ==========================================================
name               file
=================  ==========================================================
``text8-sample``   first 2,139,748 words of text8 (Mahoney; English Wikipedia,
                   CC BY-SA), gzip, one line — the demo corpus
``google``         Google analogy set ``questions-words.txt`` (word2vec,
                   Apache-2.0), 14 sections, 19,544 questions
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
}


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
