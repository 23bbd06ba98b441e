"""BidirMoE: CBOW with mixture-of-experts weights — what a single-layer
bidirectional attention layer fits (Wibisono & Wang, UAI 2023; SPEC Model 1).

Each context word at offset r is an expert with vector
``x = alpha[w] + offset_value[r]``; per head h the experts are mixed with
weights ``theta_h = softmax(salience[h, w] + offset_gate[h, r])``; the mixture
``z`` predicts the masked word through the same output layer as word2vec
(negative sampling, full softmax or hierarchical softmax). Several heads are
stacked MoEs. Untrained, the gates are uniform and the offset values zero, so
the model starts as CBOW.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .masked import MaskedModel
from .training import _check, _check_hot_rows, _is_int, gensim_init, grow_rows
from .word2vec import _batch_targets_of, _check_batch_targets

MASK = "[MASK]"


def format_offset_profile(profile: Dict[str, Any], indent: str = "  ") -> str:
    """A table of :meth:`BidirMoE.offset_profile`: one column per offset, one row per head.

    Examples
    --------
    >>> import numpy as np
    >>> print(format_offset_profile({"offsets": [-1, 1], "weights": np.array([[0.25, 0.75]])}))
      offset     -1      1
      head 0  0.250  0.750
    """
    lines = [f"{indent}offset " + " ".join(f"{str(o):>6s}" for o in profile["offsets"])]
    lines += [f"{indent}head {h} " + " ".join(f"{x:6.3f}" for x in row) for h, row in enumerate(profile["weights"])]
    return "\n".join(lines)


class BidirMoE(MaskedModel):
    """CBOW whose context words are mixed by learned MoE weights (reparameterised bidirectional attention).

    Takes the same corpus arguments and word2vec parameters as
    :class:`Word2Vec`. Given a corpus, the constructor builds the vocabulary
    (``wv`` holds untrained vectors) but does not train: call :meth:`train`,
    which returns the model (call it again to keep training).
    ``build_vocab(corpus, update=True)`` grows the vocabulary, and with it
    every per-word table (vectors, output weights, salience or keys).

    Parameters
    ----------
    sentences, corpus_file, vector_size, alpha, window, min_count, max_vocab_size, sample, seed, workers,
    min_alpha, hs, negative, ns_exponent, epochs, max_final_vocab, shrink_windows, callbacks, progress,
    compute_loss, trim_rule, batch_words, device, backend, distributed, sync_words, sync_overlap, sync_dtype
        As in :class:`Word2Vec`.
    heads : int
        Number of MoE heads (stacked MoEs).
    head_values : {"slice", "full"}
        "slice": head h owns the h-th ``vector_size / heads`` slice of every
        value vector and the heads' mixtures are concatenated (cheap).
        "full": every head has its own full ``vector_size`` value table and the
        heads' mixtures are summed (the exact image of attention with an output
        projection mixing heads; ``heads`` times the memory).
    mask_expert : bool
        Add the masked position's own expert (a learned "no useful context" expert).
    loss : {"negative", "softmax", "hs"}, optional
        Output objective. Default: "hs" if ``hs=1`` and ``negative=0``, else "negative".
    positions : {"window", "absolute"}
        "window": experts are the words within ``window`` of the target, gated
        by ``salience[h, w] + offset_gate[h, r]``. "absolute" (sentence mode,
        the exact form of an attention layer): sentences are cut into chunks of
        ``max_len`` words, every other word of the chunk is an expert, gated by
        ``<query[h, j], key[h, w] + pos_key[h, m]> / sqrt(key_size)`` with
        values ``alpha[w] + pos_value[m]``. The mask expert is then the masked
        token at position j itself: gate ``<query[h, j], mask_key[h] + pos_key[h, j]>
        / sqrt(key_size)``, value ``mask_value + pos_value[j]`` (in window mode
        its gate is a learned scalar per head, ``mask_gate``).
    max_len : int
        Sentence mode: chunk length (positions 0..max_len-1). Default 32.
    key_size : int
        Sentence mode: query/key size d_k. Default 16.
    batch_targets : int
        With ``loss="negative"`` (Rust backend): this many consecutive targets
        (window mode) or masked positions (sentence mode) form one mini-batch:
        their forward passes use the parameters as they were before the batch,
        they share one draw of negatives in a single (B x d)·(d x K) product,
        then each runs its backward pass. ``1`` is the exact per-target update;
        ``None`` (default): 1 (``bidirmoe.word2vec.BATCH_TARGETS``) — on
        text8 a batch of 16 was no faster and lost held-out log-likelihood.
    hot_rows : int, optional
        Rust backend with 2 or more ``workers``: each worker trains on its own
        copies of the rows (``alpha`` and negative sampling's output
        vectors) of this many most frequent words and adds what it learned
        to the shared arrays every ``HOT_EVERY`` examples, before every
        distributed sync and when it finishes its share of an epoch, so no
        update is lost. Those rows are written by every worker all the time;
        sharing them is what kept 2 workers from training twice as fast.
        Window mode also keeps the hot words' gate scores (``salience``)
        private. ``0``: plain Hogwild (every row shared). ``None``
        (default): 0, off for BidirMoE: on text8 it did not make 2 workers
        measurably faster with 1 head, and with 4 heads it cost held-out
        log-likelihood (docs/speed.md, ninth round); try 256. Hierarchical
        softmax's inner nodes and the offset, mask and sentence-mode
        parameters stay shared; with one worker it changes nothing.

    Examples
    --------
    >>> from bidirmoe import BidirMoE
    >>> corpus = [["the", "king", "rules", "the", "land"], ["the", "queen", "rules", "the", "land"]] * 100
    >>> model = BidirMoE(corpus, vector_size=16, window=2, heads=2, min_count=1, epochs=3, workers=1).train()
    >>> model.wv["king"].shape
    (16,)
    >>> [w for w, p in model.predict_masked(["the"], ["rules"], topn=2)][0] in {"king", "queen"}
    True
    """

    #: ``hot_rows=None`` means this (see the parameter above).
    _hot_rows_default = 0
    _array_names = ("syn1neg", "syn1", "salience", "offset_gate", "offset_value", "mask_gate", "mask_value",
                    "query", "key", "pos_key", "pos_value", "mask_key", "output_bias")
    _param_names = (
        "vector_size", "alpha", "window", "min_count", "max_vocab_size", "sample", "seed", "workers", "min_alpha",
        "hs", "negative", "ns_exponent", "epochs", "batch_words", "compute_loss", "max_final_vocab", "shrink_windows",
        "progress", "heads", "head_values", "mask_expert", "loss", "positions", "max_len", "key_size",
        "batch_targets", "hot_rows",
    )

    def __init__(self, sentences=None, corpus_file=None, vector_size=100, alpha=0.025, window=5, min_count=5,
                 max_vocab_size=None, sample=1e-3, seed=1, workers=3, min_alpha=0.0001, hs=0, negative=5,
                 ns_exponent=0.75, epochs=5, heads=1, head_values="slice", mask_expert=True, loss=None,
                 positions="window", max_len=None, key_size=None, max_final_vocab=None, shrink_windows=True, batch_words=10000, callbacks=(),
                 progress=False, compute_loss=False, trim_rule=None,
                 device="cpu", backend=None, distributed=False,
                 sync_words=None, sync_overlap=False, sync_dtype="float32", batch_targets=None, hot_rows=None):
        self._reset_state()
        self.batch_targets, self.hot_rows = batch_targets, hot_rows
        self._set_backend(device, backend)
        self._set_distributed(distributed, sync_words, sync_overlap, sync_dtype)
        self.vector_size, self.alpha, self.window, self.min_count = vector_size, alpha, window, min_count
        self.max_vocab_size, self.sample, self.seed, self.workers = max_vocab_size, sample, seed, workers
        self.min_alpha, self.hs, self.negative, self.ns_exponent = min_alpha, hs, negative, ns_exponent
        self.epochs, self.heads, self.head_values, self.mask_expert = epochs, heads, head_values, bool(mask_expert)
        self.positions, self.max_final_vocab, self.shrink_windows = positions, max_final_vocab, bool(shrink_windows)
        self.batch_words, self.callbacks, self.progress = batch_words, tuple(callbacks or ()), bool(progress)
        self.compute_loss, self.trim_rule = bool(compute_loss), trim_rule
        self.max_len = 32 if max_len is None else max_len
        self.key_size = 16 if key_size is None else key_size
        self._finish_init(sentences, corpus_file, loss)

    # ------------------------------------------------------------ parameters

    def _validate(self) -> None:
        self._validate_masked()
        _check(_is_int(self.heads) and self.heads >= 1, f"heads must be a positive int, got {self.heads!r}")
        _check_batch_targets(self.batch_targets)
        _check_hot_rows(self.hot_rows)
        _check(self.head_values in ("slice", "full"), f"head_values must be 'slice' or 'full', got {self.head_values!r}")
        _check(self.head_values == "full" or self.vector_size % self.heads == 0,
               f"vector_size ({self.vector_size}) must be a multiple of heads ({self.heads}) with head_values='slice'")
        _check(_is_int(self.key_size) and self.key_size >= 1, f"key_size must be a positive int, got {self.key_size!r}")



    def _wv_size(self) -> int:
        # head_values="full": each word's row holds every head's value vector (H x vector_size).
        return self._d_in

    @property
    def _d_in(self) -> int:
        return self.vector_size * (self.heads if self.head_values == "full" else 1)

    def _init_params(self) -> None:
        v, d, h, r = len(self.wv.index_to_key), self.vector_size, self.heads, 2 * self.window
        self.wv.vectors = self._init_vectors_cols(v, self._d_in)
        self.syn1neg = np.zeros((v, d), dtype=np.float32) if self.loss in ("negative", "softmax") else None
        self.syn1 = np.zeros((v, d), dtype=np.float32) if self.loss == "hs" else None
        # SPEC: p(k | context) ∝ exp(beta[k]·z + bias[k]); the bias is learned with the exact softmax
        # only (negative sampling and hierarchical softmax have none, as in word2vec).
        self.output_bias = np.zeros(v, dtype=np.float32) if self.loss == "softmax" else None
        # Gates start uniform and offset values at zero: an untrained model is CBOW (SPEC).
        rng = np.random.default_rng(self.seed + 1)
        if self._absolute:
            length, dk = self.max_len, self.key_size
            self.salience = self.offset_gate = self.offset_value = None
            self.query = np.zeros((h, length, dk), dtype=np.float32)  # uniform gates until queries are learned
            self.key = ((rng.random((h, v, dk), dtype=np.float32) - 0.5) / dk).astype(np.float32)
            self.pos_key = ((rng.random((h, length, dk), dtype=np.float32) - 0.5) / dk).astype(np.float32)
            self.pos_value = np.zeros((length, self._d_in), dtype=np.float32)
        else:
            self.query = self.key = self.pos_key = self.pos_value = None
            self.salience = np.zeros((h, v), dtype=np.float32)
            self.offset_gate = np.zeros((h, r), dtype=np.float32)
            self.offset_value = np.zeros((r, self._d_in), dtype=np.float32)
        self.mask_gate = np.zeros(h, dtype=np.float32) if self.mask_expert and not self._absolute else None
        self.mask_key = None
        if self.mask_expert and self._absolute:
            self.mask_key = ((rng.random((h, self.key_size), dtype=np.float32) - 0.5) / self.key_size).astype(np.float32)
        self.mask_value = np.zeros(self._d_in, dtype=np.float32) if self.mask_expert else None
        self._sync_output_wv()

    def _grow_params(self, old: int) -> None:
        """Rows for the words a vocabulary update added: fresh value vectors,
        zero output weights and bias, neutral salience (0, as at the start),
        fresh random keys in sentence mode."""
        n, h = len(self.wv.index_to_key), self.heads
        self.wv.vectors = grow_rows(self.wv.vectors, n, fill=self._init_vectors_cols(n, self._d_in)[old:])
        self._grow_output_rows()
        self.salience = grow_rows(self.salience, n, axis=1)
        if self.key is not None:
            dk = self.key_size
            rng = np.random.default_rng([self.seed + 1, old])
            fresh = (rng.random((h, n - old, dk), dtype=np.float32) - np.float32(0.5)) / np.float32(dk)
            self.key = grow_rows(self.key, n, axis=1, fill=fresh)
        self._sync_output_wv()

    def _param_shapes(self, vocab_size: int) -> Dict[str, Tuple[int, ...]]:
        v, h, r, d_in = vocab_size, self.heads, 2 * self.window, self._d_in
        shapes = self._output_shapes(v)
        if self._absolute:
            length, dk = self.max_len, self.key_size
            shapes.update(query=(h, length, dk), key=(h, v, dk), pos_key=(h, length, dk), pos_value=(length, d_in))
            if self.mask_expert:
                shapes["mask_key"] = (h, dk)
        else:
            shapes.update(salience=(h, v), offset_gate=(h, r), offset_value=(r, d_in))
            if self.mask_expert:
                shapes["mask_gate"] = (h,)
        if self.mask_expert:
            shapes["mask_value"] = (d_in,)
        return shapes

    def _init_vectors_cols(self, rows: int, cols: int) -> np.ndarray:
        """The value vectors start as Word2Vec's input vectors do (gensim 4's
        range): uniform in [-1, 1) / vector_size. word2vec.c's half-width
        range gave 1 head a held-out log-likelihood 0.036 lower (-8.593 +-
        0.009 vs -8.557 +- 0.011, top-1 5.46 vs 5.85 %, 3 seeds; 4 heads
        within noise: docs/speed.md, thirteenth round)."""
        return gensim_init(self.seed, rows, cols, self.vector_size)

    def _arrays(self) -> Dict[str, Any]:
        self._contiguous_arrays()
        self._sync_output_wv()
        flat = lambda a: None if a is None else a.reshape(-1, a.shape[-1])  # noqa: E731  (views)
        return {
            "values": self.wv.vectors, "beta": self.syn1neg, "syn1": self.syn1, "salience": self.salience,
            "offset_gate": self.offset_gate,
            "offset_value": self.pos_value if self._absolute else self.offset_value,
            "query": flat(self.query), "key": flat(self.key), "pos_key": flat(self.pos_key),
            "mask_gate": flat(self.mask_key.reshape(1, -1)) if self.mask_key is not None
            else (None if self.mask_gate is None else self.mask_gate.reshape(1, -1)),
            "mask_value": None if self.mask_value is None else self.mask_value.reshape(1, -1),
            "bias": None if self.output_bias is None else self.output_bias.reshape(-1, 1),
        }

    def _settings(self) -> Dict[str, Any]:
        return {"heads": int(self.heads), "full": self.head_values == "full", "window": int(self.window),
                "shrink_windows": bool(self.shrink_windows), "negative": int(self.negative), "hs": bool(self.hs),
                "softmax": self.loss == "softmax", "vector_size": int(self.vector_size),
                "absolute": self._absolute, "max_len": int(self.max_len), "key_size": int(self.key_size),
                "batch_targets": _batch_targets_of(self)}

    def _train_one_epoch(self, source, **schedule):
        return _core.train_epoch_moe(self._vocab, self._arrays(), self._settings(), source, schedule)

    # ------------------------------------------------------------- inference

    def _gate_weights(self, rows: np.ndarray, window: int) -> Tuple[np.ndarray, np.ndarray]:
        """MoE weights theta (n x H x E) and expert vectors x (n x E x D_in).

        Window mode: a row holds the ids at offsets −window..−1, 1..window.
        Sentence mode: a row is [target position, ids at positions 0..max_len-1].
        Missing experts (id −1) get weight 0; the mask expert comes last."""
        n = rows.shape[0]
        if self._absolute:
            tpos, ids = rows[:, 0], rows[:, 1:]
            present = ids >= 0
            safe = np.where(present, ids, 0)
            q = self.query[:, tpos, :].transpose(1, 0, 2).astype(np.float64)  # n x H x dk
            keys = self.key[:, safe, :].transpose(1, 0, 2, 3) + self.pos_key[None, :, :, :]  # n x H x L x dk
            logits = np.einsum("nhk,nhlk->nhl", q, keys) / np.sqrt(self.key_size)
            values = self.wv.vectors[safe] + self.pos_value[None]
        else:
            ids = rows
            cols = np.concatenate([np.arange(self.window - window, self.window),
                                   np.arange(self.window, self.window + window)])
            present = ids >= 0
            safe = np.where(present, ids, 0)
            logits = self.salience[:, safe].transpose(1, 0, 2) + self.offset_gate[:, cols][None, :, :]  # n x H x R
            values = self.wv.vectors[safe] + self.offset_value[cols][None]
        logits = np.where(present[:, None, :], logits, -np.inf).astype(np.float64)
        x = values * present[..., None]  # n x E x D_in
        if self.mask_expert:
            if self._absolute:  # the masked token at position j: mask_key + pos_key[j], mask_value + pos_value[j]
                mk = self.mask_key[None] + self.pos_key[:, tpos, :].transpose(1, 0, 2)  # n x H x dk
                mlog = np.einsum("nhk,nhk->nh", q, mk)[:, :, None] / np.sqrt(self.key_size)
                mval = (self.mask_value[None] + self.pos_value[tpos])[:, None, :]
            else:
                mlog = np.broadcast_to(self.mask_gate[None, :, None], (n, self.heads, 1))
                mval = np.broadcast_to(self.mask_value[None, None, :], (n, 1, self._d_in))
            logits = np.concatenate([logits, mlog], axis=2)
            x = np.concatenate([x, mval], axis=1)
        logits -= logits.max(axis=2, keepdims=True)
        theta = np.exp(logits)
        theta /= theta.sum(axis=2, keepdims=True)
        return theta, x

    def _context_vectors(self, ids: np.ndarray, window: int) -> np.ndarray:
        theta, x = self._gate_weights(ids, window)
        h, d = self.heads, self.vector_size
        s = d if self.head_values == "full" else d // h
        zh = np.stack([np.einsum("ne,nes->ns", theta[:, k, :], x[:, :, k * s:(k + 1) * s]) for k in range(h)], axis=1)
        return zh.sum(axis=1) if self.head_values == "full" else zh.reshape(ids.shape[0], d)

    def gates(self, left: Sequence[str], right: Sequence[str]) -> Dict[str, Any]:
        """Each head's MoE weights over the context of one masked position.

        Returns
        -------
        dict
            ``experts``: list of (word, offset) — out-of-vocabulary words are
            dropped, the mask expert is ``("[MASK]", 0)``; in sentence mode
            (word, absolute position), the mask expert at the masked position;
            ``weights``: array heads x experts, each row summing to one.

        Examples
        --------
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, heads=2, min_count=1, epochs=1).train()
        >>> g = m.gates(["a", "b"], ["d"])
        >>> g["experts"]
        [('a', -2), ('b', -1), ('d', 1), ('[MASK]', 0)]
        >>> g["weights"].shape
        (2, 4)
        """
        self._check_masked_ready()
        row = self._query_row(left, right)
        theta, _ = self._gate_weights(row, self.window)
        if self._absolute:
            ids = row[0, 1:]
            where = list(range(self.max_len))  # absolute positions
        else:
            ids = row[0]
            where = list(range(-self.window, 0)) + list(range(1, self.window + 1))
        keep = [i for i in range(len(ids)) if ids[i] >= 0]
        experts = [(self.wv.index_to_key[ids[i]], where[i]) for i in keep]
        if self.mask_expert:
            keep.append(len(ids))
            experts.append((MASK, int(row[0, 0]) if self._absolute else 0))
        return {"experts": experts, "weights": theta[0][:, keep]}

    def offset_profile(self, corpus=None, max_targets: int = 5000, seed: int = 0) -> Dict[str, Any]:
        """Mean gate weight per offset and head: which offsets each head listens to.

        Without a corpus: the weights the offset gates alone give (every word
        equally salient). With a corpus: the mean MoE weight per offset over up
        to ``max_targets`` sampled positions with a full context.

        Returns
        -------
        dict
            ``offsets`` (−window..−1, 1..window, and ``"mask"`` with the mask
            expert) and ``weights``, an array heads x len(offsets).

        Examples
        --------
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> p = m.offset_profile()
        >>> p["offsets"], p["weights"].shape
        ([-2, -1, 1, 2, 'mask'], (1, 5))
        """
        self._check_masked_ready()
        if self._absolute:
            return self._absolute_offset_profile(corpus, max_targets, seed)
        offsets: List[Any] = list(range(-self.window, 0)) + list(range(1, self.window + 1))
        if self.mask_expert:
            offsets.append("mask")
        if corpus is None:
            logits = self.offset_gate.astype(np.float64)
            if self.mask_expert:
                logits = np.concatenate([logits, self.mask_gate[:, None]], axis=1)
            w = np.exp(logits - logits.max(axis=1, keepdims=True))
            return {"offsets": offsets, "weights": w / w.sum(axis=1, keepdims=True)}
        if isinstance(corpus, (str,)) or hasattr(corpus, "__fspath__"):
            from .corpora import LineSentence
            corpus = LineSentence(corpus)
        k2i = self.wv.key_to_index
        rng = np.random.default_rng(seed)
        rows: List[np.ndarray] = []
        seen = 0
        w = self.window
        for sent in corpus:
            ids = np.fromiter((k2i.get(t, -1) for t in sent), dtype=np.int64, count=len(sent))
            for j in range(w, len(ids) - w):
                ctx = np.concatenate([ids[j - w:j], ids[j + 1:j + w + 1]])
                if ids[j] < 0 or (ctx < 0).any():
                    continue
                seen += 1
                if len(rows) < max_targets:
                    rows.append(ctx)
                else:
                    k = int(rng.integers(seen))
                    if k < max_targets:
                        rows[k] = ctx
        if not rows:
            raise ValueError(f"no position in the corpus has a full in-vocabulary context of {2 * w} words")
        theta, _ = self._gate_weights(np.stack(rows), w)
        return {"offsets": offsets, "weights": theta.mean(axis=0)}

    def _absolute_offset_profile(self, corpus, max_targets: int, seed: int) -> Dict[str, Any]:
        """Sentence mode: gate weight binned by relative offset m − j, averaged
        over target positions j (positional gate terms alone, or a corpus sample)."""
        length, h = self.max_len, self.heads
        rel = list(range(-(length - 1), 0)) + list(range(1, length))
        col = {r: i for i, r in enumerate(rel)}
        if corpus is None:
            rows = []
            for j in range(length):
                row = np.full(1 + length, -1, dtype=np.int64)
                row[0] = j
                rows.append(row)
            rows = np.stack(rows)
            # Positional terms alone: every expert slot present, key[w] replaced by 0.
            q = self.query.astype(np.float64)
            logits = np.einsum("hjk,hmk->jhm", q, self.pos_key.astype(np.float64)) / np.sqrt(self.key_size)
            present = ~np.eye(length, dtype=bool)  # j x m: m != j
            logits = np.where(present[:, None, :], logits, -np.inf)
            if self.mask_expert:
                mk = self.mask_key[:, None, :] + self.pos_key  # H x L x dk: the masked token at j
                mlog = np.einsum("hjk,hjk->jh", q, mk.astype(np.float64)) / np.sqrt(self.key_size)
                logits = np.concatenate([logits, mlog[:, :, None]], axis=2)
            logits -= logits.max(axis=2, keepdims=True)
            theta = np.exp(logits)
            theta /= theta.sum(axis=2, keepdims=True)
            tpos = np.arange(length)
        else:
            if isinstance(corpus, str) or hasattr(corpus, "__fspath__"):
                from .corpora import LineSentence
                corpus = LineSentence(corpus)
            k2i = self.wv.key_to_index
            rng = np.random.default_rng(seed)
            sample: List[np.ndarray] = []
            seen = 0
            for sent in corpus:
                ids = np.fromiter((k2i[t] for t in sent if t in k2i), dtype=np.int64)
                for row, _ in self._rows_for_sentence(ids, self.window):
                    seen += 1
                    if len(sample) < max_targets:
                        sample.append(row)
                    elif (k := int(rng.integers(seen))) < max_targets:
                        sample[k] = row
            if not sample:
                raise ValueError("no sentence of the corpus has two or more in-vocabulary words")
            rows = np.stack(sample)
            theta, _ = self._gate_weights(rows, self.window)
            tpos = rows[:, 0]
        sums = np.zeros((h, len(rel)))
        counts = np.zeros(len(rel))
        for i, j in enumerate(tpos):
            for m in range(length):
                if m != j and (corpus is None or rows[i, 1 + m] >= 0):
                    sums[:, col[m - j]] += theta[i, :, m]
                    counts[col[m - j]] += 1
        weights = sums / np.maximum(counts, 1)
        offsets: List[Any] = list(rel)
        if self.mask_expert:
            offsets.append("mask")
            weights = np.concatenate([weights, theta[:, :, -1].mean(axis=0)[:, None]], axis=1)
        return {"offsets": offsets, "weights": weights}

    def plot_offsets(self, corpus=None, ax=None, path: Optional[str] = None, **kwargs):
        """Plot :meth:`offset_profile`: gate weight per offset, one line per head.

        Needs matplotlib (``pip install matplotlib``). Saves to ``path`` if given;
        returns the matplotlib Axes.

        Examples
        --------
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> try:
        ...     import matplotlib; matplotlib.use("Agg"); ax = m.plot_offsets()
        ... except ImportError:
        ...     pass
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("plot_offsets needs matplotlib: pip install matplotlib") from e
        prof = self.offset_profile(corpus, **kwargs)
        labels = [str(o) for o in prof["offsets"]]
        if ax is None:
            _, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 3.5))
        for h, row in enumerate(prof["weights"]):
            ax.plot(range(len(labels)), row, marker="o", label=f"head {h}")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_xlabel("offset from the masked word")
        ax.set_ylabel("mean gate weight")
        ax.set_title("BidirMoE: which offsets each head listens to")
        ax.legend()
        if path is not None:
            ax.figure.tight_layout()
            ax.figure.savefig(path)
        return ax

    def __str__(self) -> str:
        return (f"BidirMoE<vocab={len(self.wv.index_to_key) if self.wv is not None else 0}, vector_size={self.vector_size}, "
                f"heads={self.heads}, window={self.window}, loss={self.loss}>")

