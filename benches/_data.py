"""Data preparation shared by the benchmark scripts."""

from __future__ import annotations

import gzip
import os
from typing import List, Tuple


def heldout_split(corpus: str, directory: str, train_share: float = 0.9) -> Tuple[str, List[List[str]], int, int]:
    """Split a (gzip) text corpus by position: the first ``train_share`` of its
    words written to ``directory/train.txt`` as 1000-word lines, the rest
    returned as held-out 1000-word sentences. Returns (train path, held-out
    sentences, train words, total words)."""
    opener = gzip.open if corpus.endswith(".gz") else open
    with opener(corpus, "rt", encoding="utf-8") as f:
        words = f.read().split()
    cut = int(len(words) * train_share)
    path = os.path.join(directory, "train.txt")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(0, cut, 1000):
            f.write(" ".join(words[i:min(i + 1000, cut)]) + "\n")
    return path, [words[i:i + 1000] for i in range(cut, len(words), 1000)], cut, len(words)
