"""Word2Vec: CBOW and skip-gram, a drop-in for ``gensim.models.Word2Vec``."""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from .corpora import check_corpus
from .masked import MaskedLM
from .training import TrainableModel, _check


class Word2Vec(MaskedLM, TrainableModel):
    """Train word vectors with CBOW or skip-gram (Mikolov et al. 2013).

    Same constructor names and defaults as gensim 4's ``Word2Vec``. Given a
    corpus, the constructor builds the vocabulary and trains at once.

    Parameters
    ----------
    sentences : iterable of list of str, optional
        Restartable iterable of tokenised sentences.
    corpus_file : str, optional
        Path to a plain or gzip text file (one sentence per line, lines of any
        length; each worker reads its own byte range). Faster than
        ``sentences``.
    vector_size : int
        Dimensionality of the vectors.
    alpha, min_alpha : float
        Learning rate, falling linearly from ``alpha`` to ``min_alpha``.
    window : int
        Largest distance between the current and a context word.
    min_count : int
        Ignore words with fewer occurrences.
    max_vocab_size : int, optional
        Cap on the counting table while scanning (rare words pruned, gensim rule).
    sample : float
        Subsampling threshold for frequent words (0 disables).
    seed : int
        Random seed; with ``workers=1`` training is bit-for-bit reproducible.
    workers : int
        Training threads.
    sg : {0, 1}
        1 for skip-gram, 0 for CBOW.
    hs : {0, 1}
        1 for hierarchical softmax.
    negative : int
        Number of negative samples (0 disables negative sampling).
    ns_exponent : float
        Exponent of the unigram distribution for negatives.
    cbow_mean : {0, 1}
        CBOW: 1 averages the context vectors, 0 sums them.
    epochs : int
        Passes over the corpus.
    max_final_vocab : int, optional
        Keep at most this many words (raises min_count as needed).
    shrink_windows : bool
        Draw the effective window uniformly from 1..window per word (word2vec).
    compute_loss : bool
        Track the training loss (see :meth:`get_latest_training_loss`).
    callbacks : sequence
        Objects with ``on_train_begin``, ``on_epoch_begin``, ``on_epoch_end``,
        ``on_train_end`` methods taking the model.
    progress : bool
        Show a tqdm progress bar (needs ``tqdm``).

    Examples
    --------
    >>> from bidirmoe import Word2Vec
    >>> corpus = [["king", "rules", "the", "land"], ["queen", "rules", "the", "land"]] * 200
    >>> model = Word2Vec(corpus, vector_size=16, min_count=1, epochs=3, workers=1)
    >>> model.wv["king"].shape
    (16,)
    >>> model.wv.most_similar("king", topn=1)[0][0] in model.wv
    True
    """

    _array_names = ("syn1neg", "syn1")
    _param_names = (
        "vector_size", "alpha", "window", "min_count", "max_vocab_size", "sample", "seed", "workers", "min_alpha",
        "sg", "hs", "negative", "ns_exponent", "cbow_mean", "epochs", "null_word", "sorted_vocab", "batch_words",
        "compute_loss", "comment", "max_final_vocab", "shrink_windows", "progress",
    )

    def __init__(self, sentences=None, corpus_file=None, vector_size=100, alpha=0.025, window=5, min_count=5,
                 max_vocab_size=None, sample=1e-3, seed=1, workers=3, min_alpha=0.0001, sg=0, hs=0, negative=5,
                 ns_exponent=0.75, cbow_mean=1, hashfxn=hash, epochs=5, null_word=0, trim_rule=None, sorted_vocab=1,
                 batch_words=10000, compute_loss=False, callbacks=(), comment=None, max_final_vocab=None,
                 shrink_windows=True, progress=False):
        self._reset_state()
        self.vector_size, self.alpha, self.window, self.min_count = vector_size, alpha, window, min_count
        self.max_vocab_size, self.sample, self.seed, self.workers = max_vocab_size, sample, seed, workers
        self.min_alpha, self.sg, self.hs, self.negative = min_alpha, sg, hs, negative
        self.ns_exponent, self.cbow_mean, self.epochs = ns_exponent, cbow_mean, epochs
        self.null_word, self.trim_rule, self.sorted_vocab = null_word, trim_rule, sorted_vocab
        self.batch_words, self.compute_loss, self.callbacks = batch_words, bool(compute_loss), tuple(callbacks or ())
        self.comment, self.max_final_vocab = comment, max_final_vocab
        self.shrink_windows, self.progress = bool(shrink_windows), bool(progress)
        self.hashfxn = hashfxn  # accepted for gensim compatibility; initialisation is seeded by `seed`
        self.syn1neg: Optional[np.ndarray] = None
        self.syn1: Optional[np.ndarray] = None
        self._validate()
        if sentences is not None or corpus_file is not None:
            check_corpus(sentences, corpus_file, passes=self.epochs + 1)
            self.build_vocab(corpus_iterable=sentences, corpus_file=corpus_file, trim_rule=trim_rule)
            self.train(corpus_iterable=sentences, corpus_file=corpus_file, total_examples=self.corpus_count,
                       total_words=self.corpus_total_words, epochs=self.epochs, start_alpha=self.alpha,
                       end_alpha=self.min_alpha, compute_loss=compute_loss, callbacks=callbacks)

    def _validate(self) -> None:
        self._validate_common()
        _check(self.sg in (0, 1, True, False), f"sg must be 0 or 1, got {self.sg!r}")
        _check(self.cbow_mean in (0, 1, True, False), f"cbow_mean must be 0 or 1, got {self.cbow_mean!r}")
        _check(self.null_word in (0, False), "null_word=1 is not supported: bidirmoe never pads sentences")
        _check(self.sorted_vocab in (1, True), "sorted_vocab=0 is not supported: the vocabulary is always in descending frequency order")

    def _init_params(self) -> None:
        n = len(self.wv.index_to_key)
        self.wv.vectors = self._init_vectors(n)
        self.syn1neg = np.zeros((n, self.vector_size), dtype=np.float32) if self.negative else None
        self.syn1 = np.zeros((n, self.vector_size), dtype=np.float32) if self.hs else None

    def _train_one_epoch(self, source, **schedule):
        for name in ("syn1neg", "syn1"):
            arr = getattr(self, name)
            if arr is not None and not (arr.flags.c_contiguous and arr.dtype == np.float32):
                setattr(self, name, np.ascontiguousarray(arr, dtype=np.float32))
        if not (self.wv.vectors.flags.c_contiguous and self.wv.vectors.dtype == np.float32 and self.wv.vectors.flags.writeable):
            self.wv.vectors = np.array(self.wv.vectors, dtype=np.float32, order="C")
        self.wv.norms = None  # vectors change: cached norms are stale
        return _core.train_epoch(
            "skipgram" if self.sg else "cbow", self._vocab, self.wv.vectors, self.syn1neg, self.syn1, source,
            window=int(self.window), shrink_windows=bool(self.shrink_windows), cbow_mean=bool(self.cbow_mean),
            negative=int(self.negative), hs=bool(self.hs), schedule=schedule,
        )

    def _context_vectors(self, ids: np.ndarray, window: int) -> np.ndarray:
        """CBOW's hidden vector: mean (``cbow_mean=1``) or sum of the context vectors."""
        if self.sg:
            raise ValueError("predict_masked / evaluate_masked are defined for CBOW (sg=0): skip-gram has no context vector")
        present = ids >= 0
        vecs = self.wv.vectors[np.where(present, ids, 0)] * present[..., None]
        z = vecs.sum(axis=1)
        if self.cbow_mean:
            z /= np.maximum(present.sum(axis=1), 1)[:, None]
        return z

    def __str__(self) -> str:
        return (f"Word2Vec<vocab={len(self.wv.index_to_key) if self.wv is not None else 0}, "
                f"vector_size={self.vector_size}, alpha={self.alpha}>")
