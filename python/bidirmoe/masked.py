"""Masked-word prediction shared by the CBOW-style models: the probability of
the word at one position given the words around it, under the full softmax
over the vocabulary (or the Huffman tree for ``hs`` models).

A model mixes this in and provides ``_context_vectors(rows, window)``: the
hidden vector z for each context row. By default a row holds the context
word ids at offsets −window..−1, 1..window (−1: no word there); a model with
another notion of context (BidirMoE's sentence mode) overrides
``_rows_for_sentence`` and ``_query_row`` too. As in training,
out-of-vocabulary words are dropped before contexts are formed.
"""

from __future__ import annotations

import itertools
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .corpora import LineSentence, check_corpus
from .training import TrainableModel, _check, _is_int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


class MaskedLM:
    """Mixin: ``predict_masked`` and ``evaluate_masked`` for CBOW-style models."""

    def _masked_window(self, window: Optional[int]) -> int:
        w = self.window if window is None else window
        if not isinstance(w, (int, np.integer)) or w < 1 or w > self.window:
            raise ValueError(f"window must be an int in 1..{self.window} (the model's window), got {window!r}")
        return int(w)

    def _known_ids(self, words: Sequence[str]) -> List[int]:
        """Vocabulary ids of ``words``, out-of-vocabulary words dropped (as in training)."""
        if isinstance(words, str):
            raise TypeError("left and right must be lists of str tokens (e.g. 'the king of'.split()), not str")
        k2i = self.wv.key_to_index
        return [k2i[w] for w in words if w in k2i]

    @property
    def _absolute(self) -> bool:
        """Sentence mode: a row is [target position, ids at positions 0..max_len-1]."""
        return getattr(self, "positions", "window") == "absolute"

    def _query_row(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """The context row (1 x columns) of one masked position between ``left`` and ``right``."""
        if self._absolute:
            lo, hi = self._known_ids(left), self._known_ids(right)
            room = self.max_len - 1
            a = min(len(lo), max(room - len(hi), room // 2))
            b = min(len(hi), room - a)
            row = np.full(1 + self.max_len, -1, dtype=np.int64)
            row[0] = a  # the masked position
            row[1:1 + a] = lo[len(lo) - a:]
            row[2 + a:2 + a + b] = hi[:b]
            return row[None, :]
        window = self.window
        lo, hi = self._known_ids(left)[-window:], self._known_ids(right)[:window]
        row = np.full(2 * window, -1, dtype=np.int64)
        row[window - len(lo):window] = lo  # left[-1] is offset −1
        row[window:window + len(hi)] = hi
        return row[None, :]

    def _rows_for_sentence(self, ids: np.ndarray, window: int) -> Iterator[Tuple[np.ndarray, int]]:
        """(context row, target id) for every position of one sentence of in-vocabulary ids."""
        if self._absolute:
            for start in range(0, len(ids), self.max_len):
                chunk = ids[start:start + self.max_len]
                if len(chunk) < 2:
                    continue
                for j in range(len(chunk)):
                    row = np.full(1 + self.max_len, -1, dtype=np.int64)
                    row[0] = j
                    row[1:1 + len(chunk)] = chunk
                    row[1 + j] = -1
                    yield row, int(chunk[j])
            return
        padded = np.concatenate([np.full(window, -1), ids, np.full(window, -1)])
        for j in range(len(ids)):
            yield np.concatenate([padded[j:j + window], padded[j + window + 1:j + 2 * window + 1]]), int(ids[j])

    def _log_probs(self, z: np.ndarray) -> np.ndarray:
        """log p(word | z) for every word, rows of z (n x d) -> (n x V)."""
        beta = getattr(self, "syn1neg", None)
        if beta is not None:
            logits = z @ beta.T
            bias = getattr(self, "output_bias", None)
            if bias is not None:
                logits = logits + bias
            return _log_softmax(logits.astype(np.float64))
        if getattr(self, "syn1", None) is None:
            raise RuntimeError("the model has no output layer yet: train it first")
        pts, sgn = self._huffman_paths()
        v = len(pts)
        scores = (z @ self.syn1.T).astype(np.float64)  # n x V (inner nodes: first V-1 rows)
        out = np.empty((z.shape[0], v))
        for r in range(z.shape[0]):
            out[r] = (_log_sigmoid(sgn * scores[r][pts]) * (sgn != 0)).sum(axis=1)
        return out

    def _huffman_paths(self) -> Tuple[np.ndarray, np.ndarray]:
        """Every word's Huffman path as arrays V x L: inner-node ids (``pts``) and
        the sign of each decision (``sgn``: code 0 -> +1, 1 -> -1, 0 past the path's end).
        log p(word | h) = sum over the path of log σ(sgn · h·syn1[pts])."""
        cached = getattr(self, "_huffman_cache", None)
        if cached is not None and cached[0] is self._vocab:
            return cached[1], cached[2]
        tree = self._vocab.huffman()
        if tree is None:
            raise RuntimeError("the model's vocabulary has no Huffman tree: it was built with hs=0")
        codes, points = tree
        lens = np.fromiter((len(c) for c in codes), dtype=np.int64, count=len(codes))
        pts = np.zeros((len(codes), max(1, int(lens.max(initial=0)))), dtype=np.int64)
        sgn = np.zeros(pts.shape)
        filled = np.arange(pts.shape[1])[None, :] < lens[:, None]
        n = int(lens.sum())  # codes are bytes (or lists) of 0/1; row-major fill matches the chained order
        pts[filled] = np.fromiter(itertools.chain.from_iterable(points), dtype=np.int64, count=n)
        sgn[filled] = 1.0 - 2.0 * np.fromiter(itertools.chain.from_iterable(codes), dtype=np.float64, count=n)
        self._huffman_cache = (self._vocab, pts, sgn)
        return pts, sgn

    def predict_masked(self, left: Sequence[str], right: Sequence[str], topn: Optional[int] = 10
                       ) -> List[Tuple[str, float]]:
        """The words most likely at a masked position, given the words around it.

        Parameters
        ----------
        left : list of str
            Words before the masked position (the last one is adjacent).
        right : list of str
            Words after it (the first one is adjacent).
        topn : int or None
            How many words; None gives the whole distribution over the vocabulary.

        Returns
        -------
        list of (str, float)
            Words and probabilities, most likely first.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["the", "cat", "sat", "on", "the", "mat"]] * 50, vector_size=8, min_count=1, epochs=3)
        >>> words = [w for w, p in m.predict_masked(["the"], ["sat"], topn=3)]
        >>> len(words)
        3
        >>> abs(sum(p for w, p in m.predict_masked(["the"], ["sat"], topn=None)) - 1) < 1e-6
        True
        """
        logp = self._log_probs(self._hidden_rows(left, right))[0]
        order = np.argsort(-logp, kind="stable")
        if topn is not None:
            order = order[:topn]
        keys = self.wv.index_to_key
        return [(keys[i], float(np.exp(logp[i]))) for i in order]

    def hidden(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """The vector the output layer scores at a masked position: CBOW's
        context mean (or sum), BidirMoE's mixture ``z``, the attention output
        ``o``. ``predict_masked`` is the softmax of ``beta · hidden + bias``.

        Parameters
        ----------
        left, right : list of str
            Words before and after the masked position, as in :meth:`predict_masked`.

        Returns
        -------
        numpy.ndarray
            Shape ``(vector_size,)``, float32.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["the", "cat", "sat", "on", "the", "mat"]] * 50, vector_size=8, min_count=1, epochs=1)
        >>> h = m.hidden(["the"], ["sat"])
        >>> bool(np.allclose(h, (m.wv["the"] + m.wv["sat"]) / 2, atol=1e-6))
        True
        """
        return np.asarray(self._hidden_rows(left, right)[0], dtype=np.float32)

    def _hidden_rows(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """The output layer's input for one masked position, as a 1 x d array."""
        self._check_query(left, right)
        return self._context_vectors(self._query_row(left, right), self.window)

    def _check_query(self, left: Sequence[str], right: Sequence[str]) -> None:
        """A query about one masked position needs a vocabulary and a known context word."""
        self._check_masked_ready()
        if not self._known_ids(left) and not self._known_ids(right):
            raise KeyError("none of the context words is in the vocabulary")

    def _check_masked_ready(self) -> None:
        if getattr(self, "_vocab", None) is None:
            raise RuntimeError("the model has no vocabulary: build_vocab()/train() it first")

    def evaluate_masked(self, corpus, max_targets: int = 10000, seed: int = 0, window: Optional[int] = None,
                        batch_size: int = 256) -> Dict[str, float]:
        """Masked-word prediction on held-out text.

        Drops out-of-vocabulary words (as training does), samples up to
        ``max_targets`` positions uniformly (seeded) and predicts each word
        from its context under the full softmax (no subsampling, no reduced
        windows).

        Parameters
        ----------
        corpus : iterable of list of str, or str path
            Held-out sentences (a path is read with :class:`LineSentence`).
        max_targets : int
            Most positions scored.
        seed : int
            Seed of the position sample.
        window : int, optional
            Context size (default: the model's).

        Returns
        -------
        dict
            ``top1`` and ``top10`` accuracy, mean ``log_likelihood`` of the true
            word (natural log), ``perplexity`` and the number of ``targets``.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> text = [["a", "b", "c", "d"]] * 100
        >>> m = Word2Vec(text, vector_size=8, min_count=1, epochs=5, workers=1)
        >>> r = m.evaluate_masked(text, max_targets=50)
        >>> sorted(r)
        ['log_likelihood', 'perplexity', 'targets', 'top1', 'top10']
        """
        self._check_masked_ready()
        w = self._masked_window(window)
        if not isinstance(max_targets, (int, np.integer)) or max_targets < 1:
            raise ValueError(f"max_targets must be a positive int, got {max_targets!r}")
        if isinstance(corpus, (str, os.PathLike)):
            corpus = LineSentence(corpus)
        k2i = self.wv.key_to_index
        rng = np.random.default_rng(seed)
        rows: List[np.ndarray] = []
        targets: List[int] = []
        seen = 0
        for sent in corpus:
            if isinstance(sent, str):
                raise TypeError("each sentence must be a list of str tokens, not a str")
            ids = np.fromiter((k2i[t] for t in sent if t in k2i), dtype=np.int64)
            if len(ids) < 2:
                continue
            for ctx, target in self._rows_for_sentence(ids, w):
                seen += 1
                if len(targets) < max_targets:  # reservoir sampling
                    rows.append(ctx)
                    targets.append(target)
                else:
                    k = int(rng.integers(seen))
                    if k < max_targets:
                        rows[k] = ctx
                        targets[k] = target
        if not targets:
            raise ValueError("no sentence of the corpus has two or more in-vocabulary words")
        ctx_all = np.stack(rows)
        tgt = np.asarray(targets)
        top1 = top10 = 0
        ll = 0.0
        for s in range(0, len(tgt), batch_size):
            logp = self._log_probs(self._context_vectors(ctx_all[s:s + batch_size], w))
            t = tgt[s:s + batch_size]
            true = logp[np.arange(len(t)), t]
            # Words scoring at least as high as the true one rank ahead of it
            # (ties count against: a model that cannot decide gets no credit).
            better = (logp >= true[:, None]).sum(axis=1) - 1
            top1 += int((better == 0).sum())
            top10 += int((better < 10).sum())
            ll += float(true.sum())
        n = len(tgt)
        return {"top1": top1 / n, "top10": top10 / n, "log_likelihood": ll / n, "perplexity": float(np.exp(-ll / n)),
                "targets": n}


class MaskedModel(MaskedLM, TrainableModel):
    """Base of the masked-word models (BidirMoE, BidirectionalAttention):
    an output objective chosen by ``loss``, a constructor that stores the
    corpus without training, ``train()`` that returns the model, and the
    output vectors as ``output_wv``."""

    #: Array attributes of the model besides ``wv.vectors`` (float32, trained in place).
    _array_names: Tuple[str, ...] = ()

    def _finish_init(self, sentences, corpus_file, loss) -> None:
        """The end of every masked model's constructor: default the loss, clear
        the arrays, validate, and keep the corpus for :meth:`train`."""
        self.loss = ("hs" if (self.hs and not self.negative) else "negative") if loss is None else loss
        for name in self._array_names + ("output_wv",):
            setattr(self, name, None)
        self._validate()
        self.sentences, self.corpus_file = sentences, corpus_file
        if sentences is not None or corpus_file is not None:
            check_corpus(sentences, corpus_file, passes=self.epochs + 1)
            # As gensim's build_vocab: the vocabulary and untrained vectors exist
            # from here on (wv.most_similar works, on random vectors); train() trains.
            self.build_vocab(corpus_iterable=sentences, corpus_file=corpus_file, trim_rule=self.trim_rule)

    def _validate_masked(self) -> None:
        """Checks every masked model shares: loss, word2vec parameters, positions."""
        self._validate_loss()
        self._validate_common()
        _check(self.positions in ("window", "absolute"), f"positions must be 'window' or 'absolute', got {self.positions!r}")
        _check(_is_int(self.max_len) and self.max_len >= 2, f"max_len must be an int >= 2, got {self.max_len!r}")

    def _validate_loss(self) -> None:
        """Resolve ``loss`` into word2vec's ``negative`` / ``hs`` switches."""
        _check(self.loss in ("negative", "softmax", "hs"), f"loss must be 'negative', 'softmax' or 'hs', got {self.loss!r}")
        if self.loss == "softmax":
            self.negative, self.hs = 0, 0
        elif self.loss == "hs":
            self.negative, self.hs = 0, 1
        else:
            _check(_is_int(self.negative) and self.negative > 0, f"loss='negative' needs negative > 0, got {self.negative!r}")
            self.hs = 0

    def _has_objective(self) -> bool:
        return self.loss == "softmax" or super()._has_objective()

    def _sync_output_wv(self) -> None:
        """``output_wv``: KeyedVectors sharing memory with the output vectors (None with ``hs``)."""
        from .keyedvectors import KeyedVectors

        if getattr(self, "syn1neg", None) is None:
            self.output_wv = None
            return
        kv = KeyedVectors(self.vector_size, count=0)
        kv.index_to_key, kv.key_to_index = self.wv.index_to_key, self.wv.key_to_index
        kv.vectors, kv.expandos, kv.norms = self.syn1neg, self.wv.expandos, None
        self.output_wv = kv

    def _contiguous_arrays(self) -> None:
        """Make every trained array C-contiguous, writable float32 (copying if needed)."""
        for name in self._array_names:
            arr = getattr(self, name)
            if arr is not None and not (arr.flags.c_contiguous and arr.dtype == np.float32 and arr.flags.writeable):
                setattr(self, name, np.array(arr, dtype=np.float32, order="C"))
        v = self.wv.vectors
        if not (v.flags.c_contiguous and v.dtype == np.float32 and v.flags.writeable):
            self.wv.vectors = np.array(v, dtype=np.float32, order="C")
        self.wv.norms = None  # vectors change: cached norms are stale

    def train(self, corpus_iterable=None, corpus_file=None, total_examples=None, total_words=None, epochs=None,
              start_alpha=None, end_alpha=None, word_count=0, queue_factor=2, report_delay=1.0, compute_loss=None,
              callbacks=None, **kwargs):
        """Train for ``epochs`` (default: the model's) and return the model.

        With no corpus argument, trains on the corpus given to the constructor
        (a model built without one builds its vocabulary on the first call).
        Calling it again keeps training, with a fresh linear learning-rate
        decay over the new epochs. The arguments are gensim's ``train``
        arguments, in gensim's order (``total_examples`` third), and
        default sensibly: ``total_words`` to the corpus's word count,
        ``compute_loss`` and ``callbacks`` to the constructor's. Others as
        :meth:`TrainableModel.train`.

        Examples
        --------
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c"]] * 30, vector_size=4, min_count=1, epochs=1).train()
        >>> m.train(epochs=1) is m
        True
        """
        if "sentences" in kwargs:
            corpus_iterable = kwargs.pop("sentences")
        if corpus_iterable is None and corpus_file is None:
            corpus_iterable, corpus_file = self.sentences, self.corpus_file
            if corpus_iterable is None and corpus_file is None:
                raise TypeError(f"no corpus: pass one to {type(self).__name__}(...) or to train()")
        if self._vocab is None:
            self.build_vocab(corpus_iterable=corpus_iterable, corpus_file=corpus_file)
        if total_examples is None and total_words is None:
            total_words = self.corpus_total_words
        if epochs is None and kwargs.get("resume_from") is None:
            epochs = self.epochs  # (resuming, the epochs left are the default)
        super().train(corpus_iterable=corpus_iterable, corpus_file=corpus_file, total_examples=total_examples,
                      total_words=total_words, epochs=epochs,
                      start_alpha=start_alpha, end_alpha=end_alpha, word_count=word_count, queue_factor=queue_factor,
                      report_delay=report_delay, compute_loss=self.compute_loss if compute_loss is None else compute_loss,
                      callbacks=self.callbacks if callbacks is None else callbacks, **kwargs)
        return self

    def _after_load(self) -> None:
        """Hook: restore derived state after :meth:`load`."""
        if self._vocab is not None:
            self._sync_output_wv()

    @classmethod
    def load(cls, fname, mmap=None, device=None, backend=None):
        model = super().load(fname, mmap=mmap, device=device, backend=backend)
        model.sentences, model.corpus_file = None, None
        model._after_load()
        return model
