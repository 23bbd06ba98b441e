"""BidirectionalAttention: a single-layer bidirectional attention layer with
positional encodings, trained with the masked-word objective (SPEC Model 2),
and its exact image as a CBOW-MoE (:meth:`BidirectionalAttention.to_moe`).

Token input ``e_m = rho[w_m] + p[r_m]``; the target position holds a learned
``[MASK]`` embedding (``e_j = mask + p[r_j]``) and attends to its context and
to itself. Per head ``q = W_Q e_j``, ``k_m = W_K e_m``, ``v_m = W_V e_m``,
``a = softmax(q·k / sqrt(key_size))``; ``o = W_O concat_h Σ_m a_m v_m``;
``p(k) ∝ exp(beta[k]·o + bias[k])``. One layer, no feed-forward block, no
residual, no layer norm: the setting in which the equivalence is exact.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .masked import MaskedModel
from .training import _check, _is_int, grow_rows

MASK = "[MASK]"


class BidirectionalAttention(MaskedModel):
    """Single-layer bidirectional attention (original parameterisation), trained in Rust or torch.

    Takes the same corpus arguments and word2vec parameters as
    :class:`BidirMoE`; ``.train()`` trains and returns the model.

    Parameters
    ----------
    vector_size : int
        Embedding size d (of ``rho``, the encodings, ``o`` and ``beta``).
    heads : int
        Attention heads.
    key_size, value_size : int, optional
        Per-head query/key size d_k and value size d_v (default ``vector_size // heads``).
    window : int
        Window mode: context offsets −window..window (reduced per target as in word2vec).
    positions : {"window", "absolute"}
        "absolute": sentences cut into chunks of ``max_len`` words, absolute
        positional encodings, every other word of the chunk is attended to.
    max_len : int
        Sentence mode chunk length (default 32).
    loss : {"negative", "softmax", "hs"}, optional
        Output objective (default "negative"); "softmax" learns a bias too.
    tie_output : bool
        Use the word embeddings as output vectors (beta = rho), as many
        language models do. Not with ``loss="hs"``.
    device, backend
        Where it trains, as in :class:`Word2Vec`.

    Examples
    --------
    >>> from bidirmoe import BidirectionalAttention
    >>> corpus = [["the", "king", "rules", "the", "land"], ["the", "queen", "rules", "the", "land"]] * 100
    >>> att = BidirectionalAttention(corpus, vector_size=16, heads=2, window=2, min_count=1, epochs=2, workers=1).train()
    >>> moe = att.to_moe()
    >>> p_att = dict(att.predict_masked(["the"], ["rules"], topn=None))
    >>> p_moe = dict(moe.predict_masked(["the"], ["rules"], topn=None))
    >>> max(abs(p_att[w] - p_moe[w]) for w in p_att) < 1e-5
    True
    """

    _array_names = ("syn1neg", "syn1", "output_bias", "pos_encoding", "mask_embedding", "W_Q", "W_K", "W_V", "W_O")
    _param_names = (
        "vector_size", "alpha", "window", "min_count", "max_vocab_size", "sample", "seed", "workers", "min_alpha",
        "hs", "negative", "ns_exponent", "epochs", "batch_words", "compute_loss", "max_final_vocab", "shrink_windows",
        "progress", "heads", "key_size", "value_size", "loss", "positions", "max_len", "tie_output",
    )

    def __init__(self, sentences=None, corpus_file=None, vector_size=64, alpha=0.025, window=5, min_count=5,
                 max_vocab_size=None, sample=1e-3, seed=1, workers=3, min_alpha=0.0001, hs=0, negative=5,
                 ns_exponent=0.75, epochs=5, heads=1, key_size=None, value_size=None, loss=None, positions="window",
                 max_len=None, tie_output=False, max_final_vocab=None, shrink_windows=True, batch_words=10000,
                 callbacks=(), progress=False, compute_loss=False, trim_rule=None,
                 device="cpu", backend=None):
        self._reset_state()
        self._set_backend(device, backend)
        self.vector_size, self.alpha, self.window, self.min_count = vector_size, alpha, window, min_count
        self.max_vocab_size, self.sample, self.seed, self.workers = max_vocab_size, sample, seed, workers
        self.min_alpha, self.hs, self.negative, self.ns_exponent = min_alpha, hs, negative, ns_exponent
        self.epochs, self.heads, self.positions = epochs, heads, positions
        self.max_len = 32 if max_len is None else max_len
        self.max_final_vocab, self.shrink_windows = max_final_vocab, bool(shrink_windows)
        self.batch_words, self.callbacks, self.progress = batch_words, tuple(callbacks or ()), bool(progress)
        self.compute_loss, self.trim_rule = bool(compute_loss), trim_rule
        self.tie_output = bool(tie_output)
        per_head = vector_size // heads if _is_int(vector_size) and _is_int(heads) and heads > 0 else 1
        self.key_size = max(per_head, 1) if key_size is None else key_size
        self.value_size = max(per_head, 1) if value_size is None else value_size
        self._finish_init(sentences, corpus_file, loss)

    def _validate(self) -> None:
        self._validate_masked()
        for name in ("heads", "key_size", "value_size"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 1, f"{name} must be a positive int, got {v!r}")
        _check(not (self.tie_output and self.loss == "hs"), "tie_output needs output vectors: not with loss='hs'")

    # ------------------------------------------------------------ parameters

    def _init_params(self) -> None:
        v, d, h, dk, dv = len(self.wv.index_to_key), self.vector_size, self.heads, self.key_size, self.value_size
        rng = np.random.default_rng(self.seed)
        f32 = np.float32
        self.wv.vectors = ((rng.random((v, d), dtype=f32) - f32(0.5)) / f32(d)).astype(f32)
        rows = self.max_len if self.positions == "absolute" else 2 * self.window + 1
        self.pos_encoding = (rng.normal(0, 0.1 / np.sqrt(d), (rows, d))).astype(f32)
        self.mask_embedding = (rng.normal(0, 0.1 / np.sqrt(d), d)).astype(f32)
        self.W_Q = rng.normal(0, 1 / np.sqrt(d), (h, dk, d)).astype(f32)
        self.W_K = rng.normal(0, 1 / np.sqrt(d), (h, dk, d)).astype(f32)
        self.W_V = rng.normal(0, 1 / np.sqrt(d), (h, dv, d)).astype(f32)
        self.W_O = rng.normal(0, 1 / np.sqrt(h * dv), (d, h * dv)).astype(f32)
        self.syn1neg = np.zeros((v, d), dtype=f32) if self.loss in ("negative", "softmax") else None
        if self.tie_output:
            self.syn1neg = self.wv.vectors  # beta = rho: one array
        self.syn1 = np.zeros((v, d), dtype=f32) if self.loss == "hs" else None
        self.output_bias = np.zeros(v, dtype=f32) if self.loss == "softmax" else None
        self._sync_output_wv()

    def _grow_params(self, old: int) -> None:
        """Rows for the words a vocabulary update added: fresh input vectors
        (rho), zero output weights and bias; the attention weights do not
        depend on the vocabulary."""
        n = len(self.wv.index_to_key)
        self.wv.vectors = grow_rows(self.wv.vectors, n, fill=self._init_vectors(n)[old:])
        self._grow_output_rows()
        if self.tie_output:
            self.syn1neg = self.wv.vectors  # beta = rho: one array
        self._sync_output_wv()

    def _param_shapes(self, vocab_size: int) -> Dict[str, Tuple[int, ...]]:
        v, d, h, dk, dv = vocab_size, self.vector_size, self.heads, self.key_size, self.value_size
        rows = self.max_len if self.positions == "absolute" else 2 * self.window + 1
        shapes = self._output_shapes(v)
        if self.tie_output:
            shapes.pop("syn1neg", None)  # the input vectors themselves
        shapes.update(pos_encoding=(rows, d), mask_embedding=(d,), W_Q=(h, dk, d), W_K=(h, dk, d), W_V=(h, dv, d),
                      W_O=(d, h * dv))
        return shapes

    # --------------------------------------------------------------- training

    def _arrays(self) -> Dict[str, Any]:
        self._contiguous_arrays()
        if self.tie_output:
            self.syn1neg = self.wv.vectors
        self._sync_output_wv()
        d = self.vector_size
        return {
            "rho": self.wv.vectors, "pos": self.pos_encoding, "mask": self.mask_embedding.reshape(1, d),
            "wq": self.W_Q.reshape(-1, d), "wk": self.W_K.reshape(-1, d), "wv": self.W_V.reshape(-1, d), "wo": self.W_O,
            "beta": None if self.tie_output else self.syn1neg, "syn1": self.syn1,
            "bias": None if self.output_bias is None else self.output_bias.reshape(-1, 1),
        }

    def _settings(self) -> Dict[str, Any]:
        return {"heads": int(self.heads), "key_size": int(self.key_size), "value_size": int(self.value_size),
                "window": int(self.window), "shrink_windows": bool(self.shrink_windows),
                "absolute": self._absolute, "max_len": int(self.max_len), "negative": int(self.negative),
                "hs": bool(self.hs), "softmax": self.loss == "softmax", "vector_size": int(self.vector_size),
                "tie_output": self.tie_output}

    def _train_one_epoch(self, source, **schedule):
        return _core.train_epoch_attention(self._vocab, self._arrays(), self._settings(), source, schedule)

    # ------------------------------------------------------------- inference

    def _experts(self, rows: np.ndarray, window: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs e (n x E x d) of the experts — the context, then the masked
        token itself — with a presence mask (n x E), and the target input e_j (n x d)."""
        if self._absolute:
            tpos, ids = rows[:, 0], rows[:, 1:]
            enc = np.broadcast_to(self.pos_encoding[None], (len(rows),) + self.pos_encoding.shape)
            self_rows = tpos
        else:
            ids = rows
            cols = np.concatenate([np.arange(self.window - window, self.window),
                                   np.arange(self.window + 1, self.window + window + 1)])
            enc = np.broadcast_to(self.pos_encoding[cols][None], (len(rows), len(cols), self.vector_size))
            self_rows = np.full(len(rows), self.window)
        present = ids >= 0
        e = (self.wv.vectors[np.where(present, ids, 0)] + enc).astype(np.float64)
        e_j = (self.mask_embedding[None] + self.pos_encoding[self_rows]).astype(np.float64)
        e = np.concatenate([e, e_j[:, None, :]], axis=1)
        present = np.concatenate([present, np.ones((len(rows), 1), dtype=bool)], axis=1)
        return e, present, e_j

    def _attention(self, rows: np.ndarray, window: int) -> Tuple[np.ndarray, np.ndarray]:
        """Attention weights (n x H x E) and head outputs u (n x H x d_v)."""
        e, present, e_j = self._experts(rows, window)
        q = np.einsum("hkd,nd->nhk", self.W_Q.astype(np.float64), e_j)
        k = np.einsum("hkd,ned->nhek", self.W_K.astype(np.float64), e)
        v = np.einsum("hkd,ned->nhek", self.W_V.astype(np.float64), e)
        logits = np.einsum("nhk,nhek->nhe", q, k) / np.sqrt(self.key_size)
        logits = np.where(present[:, None, :], logits, -np.inf)
        logits -= logits.max(axis=2, keepdims=True)
        a = np.exp(logits)
        a /= a.sum(axis=2, keepdims=True)
        return a, np.einsum("nhe,nhek->nhk", a, v)

    def _context_vectors(self, rows: np.ndarray, window: int) -> np.ndarray:
        _, u = self._attention(rows, window)
        return u.reshape(len(rows), -1) @ self.W_O.T.astype(np.float64)

    def gates(self, left: Sequence[str], right: Sequence[str]) -> Dict[str, Any]:
        """Each head's attention weights over the context of one masked position
        (the masked token itself last, as ``("[MASK]", 0)`` or its position).

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> g = m.gates(["a", "b"], ["d"])
        >>> g["experts"], g["weights"].shape
        ([('a', -2), ('b', -1), ('d', 1), ('[MASK]', 0)], (1, 4))
        """
        self._check_masked_ready()
        row = self._query_row(left, right)
        a, _ = self._attention(row, self.window)
        if self._absolute:
            ids, where = row[0, 1:], list(range(self.max_len))
        else:
            ids, where = row[0], list(range(-self.window, 0)) + list(range(1, self.window + 1))
        keep = [i for i in range(len(ids)) if ids[i] >= 0]
        experts = [(self.wv.index_to_key[ids[i]], where[i]) for i in keep]
        experts.append((MASK, int(row[0, 0]) if self._absolute else 0))
        keep.append(len(ids))
        return {"experts": experts, "weights": a[0][:, keep]}

    def offset_profile(self, corpus=None, max_targets: int = 5000, seed: int = 0) -> Dict[str, Any]:
        """Mean attention weight per offset and head — computed on the exact
        MoE image (:meth:`to_moe`), whose gates equal the attention weights.

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> m.offset_profile()["offsets"]
        [-2, -1, 1, 2, 'mask']
        """
        return self.to_moe().offset_profile(corpus, max_targets=max_targets, seed=seed)

    def plot_offsets(self, corpus=None, ax=None, path: Optional[str] = None, **kwargs):
        """Plot :meth:`offset_profile` (needs matplotlib); see :meth:`BidirMoE.plot_offsets`.

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> try:
        ...     import matplotlib; matplotlib.use("Agg"); ax = m.plot_offsets()
        ... except ImportError:
        ...     pass
        """
        ax = self.to_moe().plot_offsets(corpus, ax=ax, path=None, **kwargs)
        ax.set_title("BidirectionalAttention: which offsets each head attends to")
        if path is not None:
            ax.figure.tight_layout()
            ax.figure.savefig(path)
        return ax

    # ------------------------------------------------------------ equivalence

    def to_moe(self):
        """The CBOW-MoE (:class:`BidirMoE`) that gives the same p(word | context)
        for every input (SPEC "Equivalence, as code").

        For head h with ``M_h = W_O^h W_V^h``: expert values ``alpha_h = rho M_h^T``
        and ``offset_value_h = p M_h^T`` (``head_values="full"``, or "slice" when
        W_O is block-diagonal); gates ``salience[h, w] = <W_Q^h e_mask, W_K^h rho[w]> / sqrt(d_k)``
        and ``offset_gate[h, r] = <W_Q^h e_mask, W_K^h p[r]> / sqrt(d_k)`` with
        ``e_mask = mask + p[0]``; the mask expert is the masked token attending
        to itself; ``beta`` and ``bias`` are unchanged. Sentence mode maps to
        BidirMoE's sentence mode: ``query[h, j] = W_Q^h (mask + p[j])``,
        ``key[h, w] = W_K^h rho[w]``, ``pos_key[h, m] = W_K^h p[m]``,
        ``mask_key[h] = W_K^h mask``, ``pos_value = p M_h^T``.

        Examples
        --------
        See the class docstring.
        """
        from .moe import BidirMoE

        self._check_masked_ready()
        d, h, dk, dv, w = self.vector_size, self.heads, self.key_size, self.value_size, self.window
        f64, f32 = np.float64, np.float32
        rho, p = self.wv.vectors.astype(f64), self.pos_encoding.astype(f64)
        mask = self.mask_embedding.astype(f64)
        wo = self.W_O.astype(f64)
        blocks = [wo[:, k * dv:(k + 1) * dv] for k in range(h)]  # W_O^h: d x dv
        slice_mode = h * dv == d and all(
            not np.any(blocks[k][np.r_[0:k * dv, (k + 1) * dv:d]]) for k in range(h))
        d_in = d if slice_mode else h * d
        moe = BidirMoE(vector_size=d, window=w, heads=h, head_values="slice" if slice_mode else "full",
                       mask_expert=True, loss=self.loss, negative=self.negative or 5, hs=self.hs, alpha=self.alpha,
                       min_alpha=self.min_alpha, sample=self.sample, min_count=self.min_count, seed=self.seed,
                       workers=self.workers, epochs=self.epochs, ns_exponent=self.ns_exponent,
                       shrink_windows=self.shrink_windows, positions=self.positions, max_len=self.max_len,
                       key_size=dk)
        moe._set_vocab(self._vocab)
        moe.corpus_count, moe.corpus_total_words = self.corpus_count, self.corpus_total_words
        # Values: expert vectors M_h e with M_h = W_O^h W_V^h (its own block of z in "slice" form).
        values, enc_value, mask_value = np.zeros((len(rho), d_in)), np.zeros((len(p), d_in)), np.zeros(d_in)
        # Gates: <W_Q^h e_j, W_K^h e_m> / sqrt(d_k), split into word and encoding terms.
        q_in = mask[None] + p  # the masked token's input at each encoding row
        queries = np.stack([q_in @ self.W_Q[k].astype(f64).T for k in range(h)])  # H x P x dk
        keys = np.stack([rho @ self.W_K[k].astype(f64).T for k in range(h)])      # H x V x dk
        enc_keys = np.stack([p @ self.W_K[k].astype(f64).T for k in range(h)])    # H x P x dk
        mask_keys = np.stack([self.W_K[k].astype(f64) @ mask for k in range(h)])  # H x dk
        for k in range(h):
            wv = self.W_V[k].astype(f64)
            if slice_mode:
                m_h, cols = blocks[k][k * dv:(k + 1) * dv] @ wv, slice(k * dv, (k + 1) * dv)  # dv x d
            else:
                m_h, cols = blocks[k] @ wv, slice(k * d, (k + 1) * d)  # d x d
            values[:, cols] = rho @ m_h.T
            enc_value[:, cols] = p @ m_h.T
            mask_value[cols] = m_h @ mask
        moe.wv.vectors = values.astype(f32)
        if self._absolute:
            moe.salience = moe.offset_gate = moe.offset_value = moe.mask_gate = None
            moe.query, moe.key, moe.pos_key = queries.astype(f32), keys.astype(f32), enc_keys.astype(f32)
            moe.mask_key, moe.pos_value, moe.mask_value = mask_keys.astype(f32), enc_value.astype(f32), mask_value.astype(f32)
        else:
            # The query is the same for every target: q = W_Q (mask + p[0]), p[0] being row `window`.
            q = queries[:, w, :]  # H x dk
            offsets = np.concatenate([np.arange(0, w), np.arange(w + 1, 2 * w + 1)])  # rows for r = −w..−1, 1..w
            scale = 1 / np.sqrt(dk)
            moe.salience = (np.einsum("hvk,hk->hv", keys, q) * scale).astype(f32)
            moe.offset_gate = (np.einsum("hrk,hk->hr", enc_keys[:, offsets], q) * scale).astype(f32)
            moe.mask_gate = (np.einsum("hk,hk->h", mask_keys + enc_keys[:, w], q) * scale).astype(f32)
            moe.offset_value = enc_value[offsets].astype(f32)
            moe.mask_value = (mask_value + enc_value[w]).astype(f32)
            moe.query = moe.key = moe.pos_key = moe.pos_value = moe.mask_key = None
        moe.syn1neg = None if self.syn1neg is None else self.syn1neg.copy()
        moe.syn1 = None if self.syn1 is None else self.syn1.copy()
        moe.output_bias = None if self.output_bias is None else self.output_bias.copy()
        moe._sync_output_wv()
        return moe

    def _after_load(self) -> None:
        if self._vocab is not None and self.tie_output:
            self.syn1neg = self.wv.vectors  # the tie: one array
        super()._after_load()

    def __str__(self) -> str:
        return (f"BidirectionalAttention<vocab={len(self.wv.index_to_key) if self.wv is not None else 0}, "
                f"vector_size={self.vector_size}, heads={self.heads}, window={self.window}, loss={self.loss}>")
