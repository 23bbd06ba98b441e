"""Word2Vec: CBOW and skip-gram, a drop-in for ``gensim.models.Word2Vec``."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import _core
from .corpora import MAX_SENTENCE_LEN, check_corpus
from .masked import MaskedLM, _log_sigmoid
from .training import TrainableModel, _check, _check_hot_rows, _is_int, carry_tree_weights, gensim_init, grow_rows

#: Default ``batch_targets`` of every model (CBOW, skip-gram, BidirMoE): 1,
#: word2vec's exact per-target update. Batching is opt-in because it cost
#: accuracy on text8 (docs/speed.md): CBOW at 16 trained about 40 % faster
#: when it came in (no longer, since the exact update's register kernel) but
#: lost 0.7 analogy points (about 1.5 seed-to-seed standard deviations);
#: skip-gram batching windows bought ~5 % speed for a clear analogy loss;
#: BidirMoE at 16 was no faster and lost held-out log-likelihood.
BATCH_TARGETS = 1
#: Largest ``batch_targets`` the Rust core accepts.
MAX_BATCH_TARGETS = 1024


def _check_batch_targets(b) -> None:
    _check(b is None or (_is_int(b) and 1 <= b <= MAX_BATCH_TARGETS),
           f"batch_targets must be None or an int in 1..{MAX_BATCH_TARGETS}, got {b!r}")


def _batch_targets_of(model) -> int:
    """The ``batch_targets`` a model trains with (None: the default)."""
    # a model saved before the option existed was trained target by target
    b = getattr(model, "batch_targets", 1)
    return int(BATCH_TARGETS if b is None else b)

logger = logging.getLogger("bidirmoe")

_ZIP_MAGIC = b"PK\x03\x04"  # our native format is an .npz (zip) archive; gensim's is a pickle


class Word2Vec(MaskedLM, TrainableModel):
    """Train word vectors with CBOW or skip-gram (Mikolov et al. 2013).

    Same constructor names and defaults as gensim 4's ``Word2Vec``. Given a
    corpus, the constructor builds the vocabulary and trains at once.

    Parameters
    ----------
    sentences : iterable of list of str, optional
        Restartable iterable of tokenised sentences.
    corpus_file : str or list of str, optional
        Path to a plain or gzip text file (one sentence per line, lines of any
        length; each worker reads its own byte range), or a list of such
        files, read one after another in place. Faster than ``sentences``.
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
    device : str
        Where to train: "cpu" (default) or a torch device ("cuda", "cuda:1").
        Any device but "cpu" trains with the torch backend
        (``pip install "bidirmoe[torch]"``).
    backend : {"rust", "torch"}, optional
        "rust" (the default on "cpu": the multi-threaded SIMD core) or
        "torch" (on ``device``). Both hold the same parameters and save the
        same file; ``load(path, device=...)`` picks where a model lives.
    batch_targets : int, optional
        Rust backend, negative sampling alone: train this many consecutive
        targets of a sentence as one mini-batch that shares a single draw of
        negatives (HogBatch, Ji et al. 2016; skip-gram: the (context, target)
        pairs of this many windows). Each negative's output row is then
        loaded once per batch instead of once per target. ``1`` is word2vec's
        exact per-target update (skip-gram: one draw per window, whose context
        words share it); with hierarchical softmax every target is trained
        alone whatever this says. ``None`` (default): 1, the exact update
        (``BATCH_TARGETS``). For CBOW, 16 trains about
        40 % faster at a small measured cost in analogy accuracy; see
        ``benches/bench_word2vec.py`` and the README for speed and accuracy.
        A large batch on a tiny vocabulary can overshoot (many rows of one
        batch push the same few output vectors at once): use 1 there.
    hot_rows : int, optional
        Rust backend with 2 or more ``workers``: each worker trains on its own
        copies of the rows (input vectors and negative sampling's output
        vectors) of this many most frequent words and adds what it learned
        to the shared arrays every ``HOT_EVERY`` examples, before every
        distributed sync and when it finishes its share of an epoch, so no
        update is lost. Those rows are written by every worker all the time;
        sharing them is what kept 2 workers from training twice as fast.
        ``0``: plain Hogwild (every row shared). ``None`` (default):
        ``bidirmoe.training.HOT_ROWS`` (256; analogy accuracy within
        seed-to-seed noise on text8). Hierarchical softmax's inner nodes stay
        shared; with one worker it changes nothing.
    distributed : bool
        Train in several processes launched by ``torchrun`` (needs torch and
        ``corpus_file``): each rank counts and trains on its own shard of the
        file, the counts are summed (every rank gets the vocabulary of the
        whole file) and every ``sync_words`` words the ranks combine their
        parameters through ``torch.distributed`` (each word row gets the sum
        of the ranks' changes since the last sync, arrays every example
        updates get their mean). With ``max_vocab_size`` rank 0 alone
        counts the whole file (pruning depends on the order of the words),
        so the vocabulary stays the single-process one. ``corpus_file`` may
        also be a list of files (each rank reads its consecutive segment of
        them, cut by size: byte ranges and whole gzip files, in place) or a
        :class:`bidirmoe.corpora.RankPieces`, such a segment made by hand. See
        :mod:`bidirmoe.torch.distributed`.
    sync_words : int, optional
        With ``distributed``: corpus words each rank trains between two
        syncs (default 50,000).
    sync_overlap : bool
        With ``distributed``: False (default) parks the workers until a
        sync's sums arrive; True lets them train on while the all-reduce
        runs and takes the sums in when they arrive (the other ranks'
        changes arrive later; the last sync of an epoch still waits, so the
        ranks end every epoch with the same parameters). It pays where the
        network is slow and cores are free; on the benchmark's 2-core
        machine it cost analogy accuracy (README).
    sync_dtype : {"float32", "bfloat16"}
        With ``distributed``: what the changes travel as. "bfloat16" sends
        half the bytes; what rounding takes off a change goes out with the
        next one. Default "float32".

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
        "compute_loss", "comment", "max_final_vocab", "shrink_windows", "progress", "batch_targets", "hot_rows",
    )

    def __init__(self, sentences=None, corpus_file=None, vector_size=100, alpha=0.025, window=5, min_count=5,
                 max_vocab_size=None, sample=1e-3, seed=1, workers=3, min_alpha=0.0001, sg=0, hs=0, negative=5,
                 ns_exponent=0.75, cbow_mean=1, hashfxn=hash, epochs=5, null_word=0, trim_rule=None, sorted_vocab=1,
                 batch_words=10000, compute_loss=False, callbacks=(), comment=None, max_final_vocab=None,
                 shrink_windows=True, progress=False, device="cpu", backend=None, distributed=False,
                 sync_words=None, sync_overlap=False, sync_dtype="float32", batch_targets=None, hot_rows=None):
        self._reset_state()
        self.batch_targets, self.hot_rows = batch_targets, hot_rows
        self._set_backend(device, backend)
        self._set_distributed(distributed, sync_words, sync_overlap, sync_dtype)
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
        _check_batch_targets(self.batch_targets)
        _check_hot_rows(self.hot_rows)

    def _init_vectors(self, rows: int) -> np.ndarray:
        """gensim 4's initialisation: uniform in [-1, 1) / vector_size, drawn
        by ``numpy.random.default_rng(seed)`` for all rows at once, so a model
        starts from the vectors gensim starts from, bit for bit. (word2vec.c
        and gensim 3 draw from [-0.5, 0.5) / vector_size, half as wide: on
        the text8 prefix that cost CBOW about 0.4 analogy points.)"""
        return gensim_init(self.seed, rows, self.vector_size, self.vector_size)

    def _init_params(self) -> None:
        n = len(self.wv.index_to_key)
        self.wv.vectors = self._init_vectors(n)
        self.syn1neg = np.zeros((n, self.vector_size), dtype=np.float32) if self.negative else None
        self.syn1 = np.zeros((n, self.vector_size), dtype=np.float32) if self.hs else None

    def _train_one_epoch(self, source, **schedule):
        for name in ("syn1neg", "syn1"):
            arr = getattr(self, name)
            if arr is not None and not (arr.flags.c_contiguous and arr.flags.aligned and arr.dtype == np.float32):
                setattr(self, name, np.ascontiguousarray(arr, dtype=np.float32))
        if not (self.wv.vectors.flags.c_contiguous and self.wv.vectors.flags.aligned
                and self.wv.vectors.dtype == np.float32 and self.wv.vectors.flags.writeable):
            self.wv.vectors = np.array(self.wv.vectors, dtype=np.float32, order="C")
        self.wv.norms = None  # vectors change: cached norms are stale
        return _core.train_epoch(
            "skipgram" if self.sg else "cbow", self._vocab, self.wv.vectors, self.syn1neg, self.syn1, source,
            window=int(self.window), shrink_windows=bool(self.shrink_windows), cbow_mean=bool(self.cbow_mean),
            negative=int(self.negative), hs=bool(self.hs), schedule=schedule,
            batch_targets=_batch_targets_of(self),
        )

    # ------------------------------------------------------- vocabulary growth

    def _grow_params(self, old: int) -> None:
        """Rows for the words a vocabulary update added: the input vectors a new
        model of this size would start with, zero output weights."""
        n = len(self.wv.index_to_key)
        self.wv.vectors = grow_rows(self.wv.vectors, n, fill=self._init_vectors(n)[old:])
        self._grow_output_rows()

    def _param_shapes(self, vocab_size: int) -> Dict[str, Tuple[int, ...]]:
        return self._output_shapes(vocab_size)

    # ------------------------------------------------------------ prediction

    def score(self, sentences, total_sentences: int = int(1e6), chunksize: int = 100, queue_factor: int = 2,
              report_delay: float = 1) -> np.ndarray:
        """Log-probability of each sentence under the hierarchical softmax, as gensim's ``score``.

        Out-of-vocabulary words are dropped first (as in training). Each
        remaining word contributes the log-probability of its Huffman path
        given its context, which is every word within ``window`` (no random
        shrinking, no subsampling): skip-gram adds it up over the context
        words one by one, CBOW takes it once from the mean (``cbow_mean=1``)
        or the sum of the context vectors. Needs a model trained with
        ``hs=1``; the model is not changed.

        Parameters
        ----------
        sentences : iterable of list of str
            The sentences to score.
        total_sentences : int
            Score at most this many sentences (gensim's default: one million).
        chunksize, queue_factor, report_delay
            Accepted for gensim compatibility (scoring runs in this thread, in numpy).

        Returns
        -------
        numpy.ndarray
            One natural-log probability per sentence (float32, at most 0).

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> text = [["the", "cat", "sat", "on", "the", "mat"]] * 50
        >>> m = Word2Vec(text, vector_size=8, min_count=1, hs=1, negative=0, epochs=5, workers=1)
        >>> s = m.score([["the", "cat", "sat"], ["mat", "on", "cat"]])
        >>> s.shape, bool(s[0] > s[1])
        ((2,), True)
        """
        if self._vocab is None:
            raise RuntimeError("the model has no vocabulary: build_vocab() and train() it before score()")
        if not self.hs or self.syn1 is None:
            raise RuntimeError("score() uses the hierarchical softmax: it needs a model trained with hs=1")
        _check(_is_int(total_sentences) and total_sentences >= 0,
               f"total_sentences must be an int >= 0, got {total_sentences!r}")
        if isinstance(sentences, (str, bytes)):
            raise TypeError("sentences must be an iterable of lists of str tokens, not a single str")
        pts, sgn = self._huffman_paths()
        k2i = self.wv.key_to_index
        out: List[float] = []
        for sentence in sentences:
            if len(out) >= total_sentences:
                logger.warning("score(): stopped after total_sentences=%d sentences; pass a larger total_sentences "
                               "to score them all", total_sentences)
                break
            if isinstance(sentence, str):
                raise TypeError("each sentence must be a list of str tokens, not a str")
            ids = np.fromiter((k2i[t] for t in sentence if t in k2i), dtype=np.int64)[:MAX_SENTENCE_LEN]
            out.append(self._sentence_log_prob(ids, pts, sgn))
        return np.asarray(out, dtype=np.float32)

    def _sentence_log_prob(self, ids: np.ndarray, pts: np.ndarray, sgn: np.ndarray, chunk: int = 256) -> float:
        """Sum over positions of log p(word | full window) on the Huffman tree (float64)."""
        n, w = len(ids), int(self.window)
        if n == 0:
            return 0.0
        padded = np.concatenate([np.full(w, -1, dtype=np.int64), ids, np.full(w, -1, dtype=np.int64)])
        contexts = np.delete(np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1), w, axis=1)  # n x 2w
        total = 0.0
        for s in range(0, n, chunk):
            target, ctx = ids[s:s + chunk], contexts[s:s + chunk]
            present = ctx >= 0
            x = self.wv.vectors[np.where(present, ctx, 0)].astype(np.float64) * present[..., None]  # c x 2w x d
            nodes = self.syn1[pts[target]].astype(np.float64)  # c x L x d: the path's inner nodes
            signs = sgn[target]  # c x L, 0 past the end of a path
            if self.sg:  # one prediction per (context word, target) pair
                f = np.einsum("crd,cld->crl", x, nodes)
                lp = _log_sigmoid(signs[:, None, :] * f) * ((signs != 0)[:, None, :] & present[:, :, None])
            else:  # one prediction per target from the context's mean / sum
                h = x.sum(axis=1)
                if self.cbow_mean:
                    h /= np.maximum(present.sum(axis=1), 1)[:, None]
                lp = _log_sigmoid(signs * np.einsum("cd,cld->cl", h, nodes)) * (signs != 0)
            total += float(lp.sum())
        return total

    def predict_output_word(self, context_words_list, topn: Optional[int] = 10) -> Optional[List[Tuple[str, float]]]:
        """The words most probable between the given context words, as gensim's ``predict_output_word``.

        A CBOW-style prediction whatever ``sg`` is: the mean (``cbow_mean=1``)
        or sum of the context words' vectors, scored against every word's
        negative-sampling output vector (``syn1neg``) and normalised with a
        softmax over the vocabulary. Needs ``negative > 0``. Context words
        may be words or vocabulary indices; unknown ones are skipped.

        Parameters
        ----------
        context_words_list : list of str or int
            The context words.
        topn : int or None
            How many words to return (None: the whole vocabulary).

        Returns
        -------
        list of (str, float) or None
            Words and probabilities, most probable first; None (with a
            warning) when no context word is in the vocabulary.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> text = [["the", "cat", "sat", "on", "the", "mat"]] * 50
        >>> m = Word2Vec(text, vector_size=8, min_count=1, epochs=5, workers=1)
        >>> [w for w, p in m.predict_output_word(["the", "sat"], topn=2)]  # doctest: +SKIP
        ['cat', 'on']
        >>> len(m.predict_output_word(["the", "sat"], topn=3))
        3
        """
        if self._vocab is None:
            raise RuntimeError("the model has no vocabulary: build_vocab() and train() it first")
        if not self.negative or self.syn1neg is None:
            raise RuntimeError("predict_output_word() scores words with the negative-sampling output weights: "
                               "it needs a model trained with negative > 0")
        if isinstance(context_words_list, (str, bytes)):
            raise TypeError("context_words_list must be a list of words (or indices), not a single str")
        k2i, n = self.wv.key_to_index, len(self.wv.index_to_key)
        ids = []
        for w in context_words_list:
            if _is_int(w):
                if 0 <= w < n:
                    ids.append(int(w))
            elif w in k2i:
                ids.append(k2i[w])
        if not ids:
            logger.warning("predict_output_word(): none of the context words is in the vocabulary")
            return None
        h = self.wv.vectors[ids].astype(np.float64).sum(axis=0)
        if self.cbow_mean:
            h /= len(ids)
        logits = self.syn1neg.astype(np.float64) @ h
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        if topn is not None:
            order = order[:topn]
        keys = self.wv.index_to_key
        return [(keys[i], float(p[i])) for i in order]

    # ------------------------------------------------------- gensim interchange

    @classmethod
    def load(cls, fname, mmap=None, rethrow: bool = False, device=None, backend=None):
        """Load a model written by :meth:`save`, or a ``Word2Vec`` model saved by gensim.

        gensim files (gensim 4.x, and 3.x where gensim 4 still reads them;
        plain or compressed, arrays stored beside them or not) are read with
        gensim and converted by :meth:`from_gensim`: the same vocabulary in the
        same order, counts, vectors and output weights, ready to keep
        training. gensim's files are pickles, and unpickling runs code from
        the file: load them only from sources you trust (our own format holds
        no pickle). ``mmap`` is passed to gensim; ``rethrow`` is accepted for
        compatibility.

        Examples
        --------
        >>> import os, tempfile
        >>> from gensim.models import Word2Vec as GensimWord2Vec
        >>> from bidirmoe import Word2Vec
        >>> path = os.path.join(tempfile.mkdtemp(), "gensim.model")
        >>> GensimWord2Vec([["a", "b", "c"]] * 10, vector_size=4, min_count=1, epochs=1).save(path)
        >>> m = Word2Vec.load(path)
        >>> m.wv.vectors.shape, type(m).__name__
        ((3, 4), 'Word2Vec')
        """
        path = os.fspath(fname)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        with open(path, "rb") as f:
            native = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        if native:
            return super().load(path, mmap=mmap, device=device, backend=backend)
        model = cls.from_gensim(_load_gensim(path, mmap))
        model._set_backend(device, backend)
        return model

    @classmethod
    def from_gensim(cls, model) -> "Word2Vec":
        """A bidirmoe ``Word2Vec`` from a gensim ``Word2Vec`` (its weights copied).

        Settings, vocabulary (same order), counts, vectors, ``vectors_lockf``,
        negative-sampling weights and corpus sizes carry over exactly; the
        sampling tables are rebuilt from the counts. Hierarchical-softmax
        weights belong to gensim's Huffman tree, which breaks ties between
        equal counts differently from ours: each inner node's weights move to
        the node of our tree that splits the same words the same way. When
        all counts differ that is every node and the model's probabilities are
        gensim's; otherwise the nodes without a counterpart start at zero (a
        warning says how many) and training re-learns them.

        Examples
        --------
        >>> from gensim.models import Word2Vec as GensimWord2Vec
        >>> from bidirmoe import Word2Vec
        >>> g = GensimWord2Vec([["a", "b", "c"]] * 10, vector_size=4, min_count=1, epochs=1)
        >>> m = Word2Vec.from_gensim(g)
        >>> bool((m.wv.vectors == g.wv.vectors).all()), m.wv.index_to_key == g.wv.index_to_key
        (True, True)
        """
        gensim_w2v = _gensim_word2vec_class()
        from gensim.models import Doc2Vec, FastText

        if isinstance(model, (FastText, Doc2Vec)) or not isinstance(model, gensim_w2v):
            hint = (": load vectors with bidirmoe.KeyedVectors.load" if type(model).__name__ == "KeyedVectors" else "")
            raise TypeError(f"expected a gensim Word2Vec model, got {type(model).__module__}.{type(model).__name__}"
                            f"{hint}")
        wv = model.wv

        def setting(name, default):
            value = getattr(model, name, default)
            return default if value is None else value

        null_word = int(setting("null_word", 0))
        m = cls(vector_size=int(setting("vector_size", wv.vector_size)), alpha=float(setting("alpha", 0.025)),
                window=int(setting("window", 5)), min_count=int(setting("min_count", 5)),
                max_vocab_size=getattr(model, "max_vocab_size", None), sample=float(setting("sample", 1e-3)),
                seed=int(setting("seed", 1)), workers=int(setting("workers", 3)),
                min_alpha=float(setting("min_alpha", 1e-4)), sg=int(setting("sg", 0)), hs=int(setting("hs", 0)),
                negative=int(setting("negative", 5)), ns_exponent=float(setting("ns_exponent", 0.75)),
                cbow_mean=int(setting("cbow_mean", 1)), hashfxn=setting("hashfxn", hash),
                epochs=int(setting("epochs", 5)), batch_words=int(setting("batch_words", 10000)),
                compute_loss=bool(setting("compute_loss", False)), comment=getattr(model, "comment", None),
                max_final_vocab=getattr(model, "max_final_vocab", None),
                shrink_windows=bool(setting("shrink_windows", True)))
        if null_word:
            logger.warning("the gensim model pads with a null word; bidirmoe does not pad, and keeps %r as an "
                           "ordinary (never seen) word", "\0")
        m.train_count = int(setting("train_count", 0))
        m.total_train_time = float(setting("total_train_time", 0.0))
        m.running_training_loss = float(setting("running_training_loss", 0.0))
        words = list(wv.index_to_key)
        if not words:
            return m
        if "count" not in wv.expandos:
            raise ValueError("the gensim model has no word counts (wv.expandos['count']): cannot rebuild its vocabulary")
        counts = [int(c) for c in wv.expandos["count"]]
        m.corpus_count = int(setting("corpus_count", 0))
        m.corpus_total_words = int(setting("corpus_total_words", 0)) or sum(counts)
        vocab = _core.Vocab.from_words(words, counts, float(m.sample), float(m.ns_exponent), bool(m.hs),
                                       m.corpus_total_words, m.corpus_count,
                                       int(setting("effective_min_count", m.min_count)))
        m._set_vocab(vocab)
        m.wv.vectors = np.array(wv.vectors, dtype=np.float32, order="C")
        lockf = getattr(wv, "vectors_lockf", None)
        if lockf is not None and np.size(lockf) in (1, len(words)):
            m.wv.vectors_lockf = np.array(lockf, dtype=np.float32).reshape(-1)
        shape = (len(words), int(m.vector_size))
        if m.negative:
            theirs = getattr(model, "syn1neg", None)
            m.syn1neg = np.array(theirs, dtype=np.float32, order="C") if theirs is not None else np.zeros(shape, np.float32)
        if m.hs:
            m.syn1 = m._syn1_from_gensim(model, vocab, shape)
        return m

    def _syn1_from_gensim(self, model, vocab, shape) -> np.ndarray:
        """gensim's hierarchical-softmax weights on our Huffman tree (see :meth:`from_gensim`)."""
        theirs = getattr(model, "syn1", None)
        codes, points = model.wv.expandos.get("code"), model.wv.expandos.get("point")
        if theirs is None or codes is None or points is None:
            logger.warning("the gensim model has no hierarchical-softmax weights or tree: they start at zero")
            return np.zeros(shape, dtype=np.float32)
        out, carried = carry_tree_weights((list(codes), list(points)), np.asarray(theirs, dtype=np.float32),
                                          vocab.huffman(), shape[0])
        inner = max(shape[0] - 1, 0)
        if carried < inner:
            logger.warning("hierarchical softmax: %d of gensim's %d Huffman-tree nodes have no counterpart in ours "
                           "(equal counts are paired differently); their weights start at zero", inner - carried, inner)
        return out

    def to_gensim(self):
        """A gensim ``Word2Vec`` with this model's settings, vocabulary, counts and weights (copies).

        gensim's Huffman codes are set to this model's, so its hierarchical
        softmax gives the same probabilities (``score`` agrees up to gensim's
        table approximation of log σ); its subsampling thresholds and
        negative-sampling table are computed from the same counts. The result
        trains, saves and loads as any gensim model.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["a", "b", "c"]] * 10, vector_size=4, min_count=1, epochs=1)
        >>> g = m.to_gensim()
        >>> type(g).__module__, bool((g.wv["a"] == m.wv["a"]).all())
        ('gensim.models.word2vec', True)
        """
        gm = _gensim_word2vec_class()(
            vector_size=int(self.vector_size), alpha=float(self.alpha), window=int(self.window),
            min_count=int(self.min_count), max_vocab_size=self.max_vocab_size, sample=float(self.sample),
            seed=int(self.seed), workers=int(self.workers), min_alpha=float(self.min_alpha), sg=int(self.sg),
            hs=int(self.hs), negative=int(self.negative), ns_exponent=float(self.ns_exponent),
            cbow_mean=int(self.cbow_mean), epochs=int(self.epochs), batch_words=int(self.batch_words),
            compute_loss=bool(self.compute_loss), comment=self.comment, max_final_vocab=self.max_final_vocab,
            shrink_windows=bool(self.shrink_windows))
        gm.train_count, gm.total_train_time = int(self.train_count), float(self.total_train_time)
        gm.running_training_loss = float(self.running_training_loss)
        if self._vocab is None:
            return gm
        words = list(self.wv.index_to_key)
        kv = gm.wv
        kv.index_to_key = words
        kv.key_to_index = {w: i for i, w in enumerate(words)}
        kv.vectors = np.array(self.wv.vectors, dtype=np.float32)
        kv.norms = None
        kv.allocate_vecattrs(attrs=["count", "sample_int"], types=[int, np.uint32])
        kv.expandos["count"][:] = np.asarray(self.wv.expandos["count"], dtype=np.int64)
        # gensim stores the keep probability as a fraction of 2**32 - 1.
        kv.expandos["sample_int"][:] = np.round(np.asarray(self._vocab.keep_probability) * (2 ** 32 - 1))
        lockf = self._lockf_for_core()  # None: the default, 1 for every word
        kv.vectors_lockf = np.ones(1, dtype=np.float32) if lockf is None else lockf.copy()
        if self.hs:
            codes, points = self._vocab.huffman()
            kv.expandos["code"] = np.empty(len(words), dtype=object)
            kv.expandos["point"] = np.empty(len(words), dtype=object)
            for i, (c, p) in enumerate(zip(codes, points)):
                kv.expandos["code"][i] = np.frombuffer(bytes(c), dtype=np.uint8).copy()
                kv.expandos["point"][i] = np.asarray(p, dtype=np.uint32)
            gm.syn1 = np.array(self.syn1, dtype=np.float32)
        if self.negative:
            gm.syn1neg = np.array(self.syn1neg, dtype=np.float32)
            gm.make_cum_table()
        gm.corpus_count, gm.corpus_total_words = int(self.corpus_count), int(self.corpus_total_words)
        gm.effective_min_count = self.effective_min_count
        return gm

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


def _gensim_word2vec_class():
    try:
        from gensim.models import Word2Vec as GensimWord2Vec
    except ImportError as e:  # pragma: no cover - gensim is a dependency
        raise ImportError("reading or writing gensim models needs gensim: pip install gensim") from e
    return GensimWord2Vec


def _load_gensim(path: str, mmap):
    """The object in a file saved by gensim's ``save`` (a pickle, arrays maybe beside it)."""
    _gensim_word2vec_class()
    from gensim.utils import SaveLoad

    try:
        return SaveLoad.load(path, mmap=mmap)
    except Exception as e:
        raise ValueError(f"{path} is neither a bidirmoe model file nor a model gensim can load "
                         f"({type(e).__name__}: {e})") from e
