"""BidirectionalAttention: bidirectional attention with positional encodings,
trained with the masked-word objective (SPEC Model 2, "Multi-layer
attention", "Gated and active attention"); its exact image as a CBOW-MoE
(:meth:`BidirectionalAttention.to_moe`, one layer) and as a mixture of MoEs
(:meth:`BidirectionalAttention.moe_view`, any number of layers).

Token input ``e_m = rho[w_m] + p[r_m]``; the target position holds a learned
``[MASK]`` embedding (``e_j = mask + p[r_j]``). Layer l, head h, at every
position i: ``a(i, m) = softmax_m(<W_Q e_i (+ b_Q), W_K e_m> / sqrt(key_size))``,
``u_i = Σ_m a(i, m) φ(W_V e_m)``, ``e'_i = Σ_h W_O^h (g_i ⊙ u_i)`` (φ the
identity and g = 1 unless ``expert_activation`` / ``output_gate`` say
otherwise); ``p(k) ∝ exp(beta[k]·e^L_j + bias[k])``. No feed-forward block,
no residual, no layer norm: the setting in which the MoE views are exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .masked import MaskedModel
from .training import _check, _is_int, grow_rows

MASK = "[MASK]"
OUTPUT_GATES = (None, "headwise", "elementwise")
ACTIVATIONS = (None, "tanh", "gelu", "relu")
#: The per-layer attention arrays (a leading layer axis when ``layers > 1``).
LAYER_ARRAYS = ("W_Q", "W_K", "W_V", "W_O", "W_G", "b_G", "b_Q")


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the exact normal CDF (torch's default ``approximate='none'``)."""
    from scipy.special import erf  # scipy comes with gensim

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _activation(name: Optional[str], x: np.ndarray) -> np.ndarray:
    if name is None:
        return x
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    return _gelu(x)


def _softmax_present(logits: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Softmax over the last axis among the ``present`` entries (absent: weight 0)."""
    logits = np.where(present, logits, -np.inf)
    logits = logits - logits.max(axis=-1, keepdims=True)
    a = np.exp(logits)
    return a / a.sum(axis=-1, keepdims=True)


@dataclass
class MoEView:
    """A multi-layer attention model's output at one masked position, written
    as the mixture of MoEs of SPEC "Multi-layer attention".

    Attributes
    ----------
    paths : list of tuple of int
        The head paths π = (h_1, …, h_L), head of layer 1 first (0-based):
        ``heads ** layers`` of them.
    positions : list of (str, int)
        The input positions: a context word and its offset (window mode) or
        position (sentence mode); the masked position is ``("[MASK]", …)``.
    weights : numpy.ndarray
        (paths x positions): w_π(m), the sum over the intermediate positions
        of the products of (gated) attention weights along the path.
    experts : numpy.ndarray
        (paths x positions x vector_size): M_π e⁰_m, each position's input
        mapped through the path's value and output projections.
    """

    paths: List[Tuple[int, ...]]
    positions: List[Tuple[str, int]]
    weights: np.ndarray
    experts: np.ndarray

    def hidden(self) -> np.ndarray:
        """Σ_π Σ_m w_π(m) M_π e⁰_m: the vector the output layer scores (float64)."""
        return np.einsum("pm,pmd->d", self.weights, self.experts)

    def path_vectors(self) -> np.ndarray:
        """(paths x vector_size): each path's share of :meth:`hidden`."""
        return np.einsum("pm,pmd->pd", self.weights, self.experts)

    def path_entropy(self) -> np.ndarray:
        """(paths,): the entropy (nats) of each path's weights over the positions,
        normalised to sum to 1 (0: one position carries the path; log(n): spread evenly)."""
        w = np.abs(self.weights)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(w > 0, w * np.log(w), 0.0).sum(axis=1)


class BidirectionalAttention(MaskedModel):
    """Bidirectional attention (original parameterisation; SPEC Model 2 and
    its multi-layer, gated and active variants), trained in Rust or torch.

    Takes the same corpus arguments and word2vec parameters as
    :class:`BidirMoE`; ``.train()`` trains and returns the model.

    Parameters
    ----------
    vector_size : int
        Embedding size d (of ``rho``, the encodings, every layer's output and ``beta``).
    heads : int
        Attention heads per layer.
    layers : int
        Attention layers L (default 1). Every position of the window (or
        chunk), not only the target, is updated at each layer; the output
        layer reads the target's vector after layer L. With L > 1 the model
        is a mixture of ``heads ** layers`` MoEs (:meth:`moe_view`).
    key_size, value_size : int, optional
        Per-head query/key size d_k and value size d_v (default ``vector_size // heads``).
    output_gate : {None, "headwise", "elementwise"}
        A sigmoid gate on each head's output, ``σ(W_G e_i + b_G)`` from the
        query's input: one scalar per head, or one per value coordinate
        (seed 002's "G1"). In window mode with ``layers=1`` the query input
        is always the [MASK] token at offset 0, so the gate is a constant per
        head there: it matters from the second layer on and in sentence mode.
    expert_activation : {None, "tanh", "gelu", "relu"}
        "Active attention" (seed 003): φ applied to each value vector,
        ``softmax(QKᵀ) φ(X W_V)``: non-linear experts.
    qk_bias : bool
        False (default): the attention score ``<W_Q x, W_K y>`` is a
        quadratic monomial in the inputs. True: a query bias ``b_Q`` makes it
        a quadratic polynomial, ``<W_Q x + b_Q, W_K y>``. (A key bias would
        add ``<W_Q x + b_Q, b_K>``, the same for every key of a query: it
        cancels in the softmax, so the model has none.)
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
        Where it trains, as in :class:`Word2Vec`. The Rust core implements
        the defaults (one layer, no gate, no activation, no query bias); the
        other variants train on the torch backend (``backend=None`` picks it,
        on the CPU too; ``backend="rust"`` is an error for them).

    Notes
    -----
    Arrays: ``W_Q``, ``W_K`` (H x key_size x d), ``W_V`` (H x value_size x
    d), ``W_O`` (d x H·value_size), ``W_G`` (H x g x d, g = 1 headwise or
    value_size elementwise) and ``b_G`` (H x g) with a gate, ``b_Q`` (H x
    key_size) with ``qk_bias``. With ``layers > 1`` each has a leading
    layer axis (``W_Q[l]`` is layer l + 1's); :meth:`layer_arrays` gives one
    layer's arrays either way.

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

    _array_names = ("syn1neg", "syn1", "output_bias", "pos_encoding", "mask_embedding", "W_Q", "W_K", "W_V", "W_O",
                    "W_G", "b_G", "b_Q")
    _param_names = (
        "vector_size", "alpha", "window", "min_count", "max_vocab_size", "sample", "seed", "workers", "min_alpha",
        "hs", "negative", "ns_exponent", "epochs", "batch_words", "compute_loss", "max_final_vocab", "shrink_windows",
        "progress", "heads", "key_size", "value_size", "loss", "positions", "max_len", "tie_output",
        "layers", "output_gate", "expert_activation", "qk_bias",
    )
    # The variants' settings as models saved before they existed have them.
    layers, output_gate, expert_activation, qk_bias = 1, None, None, False

    def __init__(self, sentences=None, corpus_file=None, vector_size=64, alpha=0.025, window=5, min_count=5,
                 max_vocab_size=None, sample=1e-3, seed=1, workers=3, min_alpha=0.0001, hs=0, negative=5,
                 ns_exponent=0.75, epochs=5, heads=1, key_size=None, value_size=None, loss=None, positions="window",
                 max_len=None, tie_output=False, max_final_vocab=None, shrink_windows=True, batch_words=10000,
                 callbacks=(), progress=False, compute_loss=False, trim_rule=None,
                 device="cpu", backend=None, layers=1, output_gate=None, expert_activation=None, qk_bias=False):
        self._reset_state()
        self.layers, self.output_gate, self.expert_activation, self.qk_bias = layers, output_gate, expert_activation, qk_bias
        self._validate_variant()
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

    def _validate_variant(self) -> None:
        _check(_is_int(self.layers) and self.layers >= 1, f"layers must be a positive int, got {self.layers!r}")
        _check(self.output_gate in OUTPUT_GATES, f"output_gate must be one of {OUTPUT_GATES}, got {self.output_gate!r}")
        _check(self.expert_activation in ACTIVATIONS,
               f"expert_activation must be one of {ACTIVATIONS}, got {self.expert_activation!r}")
        _check(isinstance(self.qk_bias, (bool, np.bool_)), f"qk_bias must be True or False, got {self.qk_bias!r}")
        self.layers, self.qk_bias = int(self.layers), bool(self.qk_bias)

    @property
    def rust_variant(self) -> bool:
        """Whether the Rust core implements this model: one layer, no output
        gate, no expert activation, no query bias."""
        return self.layers == 1 and self.output_gate is None and self.expert_activation is None and not self.qk_bias

    def _variant_name(self) -> str:
        parts = [f"layers={self.layers}"] if self.layers != 1 else []
        parts += [f"output_gate={self.output_gate!r}"] if self.output_gate is not None else []
        parts += [f"expert_activation={self.expert_activation!r}"] if self.expert_activation is not None else []
        parts += ["qk_bias=True"] if self.qk_bias else []
        return ", ".join(parts)

    def _set_backend(self, device, backend) -> None:
        """As every model's, but the variants the Rust core does not implement
        go to the torch backend (an error with ``backend="rust"``)."""
        if not self.rust_variant:
            _check(backend != "rust", f"BidirectionalAttention({self._variant_name()}) trains on the torch backend: "
                                      "the Rust core implements one layer without gates, activation or query bias; "
                                      "use backend='torch' (or leave backend unset)")
            backend = "torch"
        super()._set_backend(device, backend)

    def _validate(self) -> None:
        self._validate_masked()
        self._validate_variant()
        for name in ("heads", "key_size", "value_size"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 1, f"{name} must be a positive int, got {v!r}")
        _check(not (self.tie_output and self.loss == "hs"), "tie_output needs output vectors: not with loss='hs'")

    # ------------------------------------------------------------ parameters

    def _layer_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the per-layer arrays this model has (with the layer axis when ``layers > 1``)."""
        d, h, dk, dv = self.vector_size, self.heads, self.key_size, self.value_size
        shapes = {"W_Q": (h, dk, d), "W_K": (h, dk, d), "W_V": (h, dv, d), "W_O": (d, h * dv)}
        if self.output_gate is not None:
            g = 1 if self.output_gate == "headwise" else dv
            shapes.update(W_G=(h, g, d), b_G=(h, g))
        if self.qk_bias:
            shapes["b_Q"] = (h, dk)
        lead = (self.layers,) if self.layers > 1 else ()
        return {name: lead + shape for name, shape in shapes.items()}

    def _init_params(self) -> None:
        v, d, h, dv = len(self.wv.index_to_key), self.vector_size, self.heads, self.value_size
        rng = np.random.default_rng(self.seed)
        f32 = np.float32
        self.wv.vectors = ((rng.random((v, d), dtype=f32) - f32(0.5)) / f32(d)).astype(f32)
        rows = self.max_len if self.positions == "absolute" else 2 * self.window + 1
        self.pos_encoding = (rng.normal(0, 0.1 / np.sqrt(d), (rows, d))).astype(f32)
        self.mask_embedding = (rng.normal(0, 0.1 / np.sqrt(d), d)).astype(f32)
        # Projections N(0, 1/fan_in); biases start at 0 (gates at σ(0) = 0.5).
        for name, shape in self._layer_shapes().items():
            if name.startswith("b_"):
                arr = np.zeros(shape, dtype=f32)
            else:
                arr = rng.normal(0, 1 / np.sqrt(h * dv if name == "W_O" else d), shape).astype(f32)
            setattr(self, name, arr)
        for name in set(LAYER_ARRAYS) - set(self._layer_shapes()):
            setattr(self, name, None)
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
        d = self.vector_size
        rows = self.max_len if self.positions == "absolute" else 2 * self.window + 1
        shapes = self._output_shapes(vocab_size)
        if self.tie_output:
            shapes.pop("syn1neg", None)  # the input vectors themselves
        shapes.update(pos_encoding=(rows, d), mask_embedding=(d,), **self._layer_shapes())
        return shapes

    def layer_arrays(self, layer: int) -> Dict[str, np.ndarray]:
        """The attention arrays of one layer (0-based), without the layer axis:
        ``W_Q``, ``W_K``, ``W_V``, ``W_O`` and, as the model has them, ``W_G``,
        ``b_G``, ``b_Q`` (views, not copies).

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=8, heads=2, min_count=1, epochs=1)
        >>> sorted(m.layer_arrays(0)), m.layer_arrays(0)["W_Q"] is m.W_Q  # one layer: no layer axis
        (['W_K', 'W_O', 'W_Q', 'W_V'], True)
        """
        _check(_is_int(layer) and 0 <= layer < self.layers, f"layer must be an int in 0..{self.layers - 1}, got {layer!r}")
        out = {}
        for name in self._layer_shapes():
            arr = getattr(self, name)
            out[name] = arr[layer] if self.layers > 1 else arr
        return out

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
        _check(self.rust_variant, f"BidirectionalAttention({self._variant_name()}) trains on the torch backend, "
                                  "not the Rust core")
        return _core.train_epoch_attention(self._vocab, self._arrays(), self._settings(), source, schedule)

    # ------------------------------------------------------------- inference

    def _inputs(self, rows: np.ndarray, window: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Layer-0 inputs of context rows: e⁰ (n x P x d, float64) over the P
        positions — offsets −window..window (the target at index ``window``),
        or the chunk's ``max_len`` positions — the [MASK] input at each
        row's target, a presence mask (n x P) and the target indices (n,)."""
        n = len(rows)
        if self._absolute:
            target, ids = rows[:, 0].astype(np.int64), rows[:, 1:]
            enc = self.pos_encoding.astype(np.float64)
        else:
            ids = np.concatenate([rows[:, :window], np.full((n, 1), -1), rows[:, window:]], axis=1)
            enc = self.pos_encoding[self.window - window:self.window + window + 1].astype(np.float64)
            target = np.full(n, window, dtype=np.int64)
        present = ids >= 0
        e = self.wv.vectors[np.where(present, ids, 0)].astype(np.float64) + enc[None]
        idx = np.arange(n)
        e[idx, target] = self.mask_embedding.astype(np.float64) + enc[target]
        present[idx, target] = True
        return e, present, target

    def _forward(self, e: np.ndarray, present: np.ndarray, target: np.ndarray, record: bool = False
                 ) -> Tuple[np.ndarray, List[Tuple[np.ndarray, Optional[np.ndarray]]]]:
        """The layers in float64 numpy: e^L at each row's target (n x d), and
        with ``record`` every layer's attention weights (n x H x P x P; query
        position, then key position) and output gates (n x H x P x g, or None).
        Without ``record`` the last layer computes the target's query only."""
        n, idx, scale = len(e), np.arange(len(e)), 1.0 / np.sqrt(self.key_size)
        d, h, dv = self.vector_size, self.heads, self.value_size
        records: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []
        for layer in range(self.layers):
            arr = {k: v.astype(np.float64) for k, v in self.layer_arrays(layer).items()}
            queries = e if record or layer < self.layers - 1 else e[idx, target][:, None]  # n x Q x d
            q = np.einsum("hkd,nqd->nhqk", arr["W_Q"], queries)
            if "b_Q" in arr:
                q = q + arr["b_Q"][None, :, None, :]
            k = np.einsum("hkd,npd->nhpk", arr["W_K"], e)
            a = _softmax_present(np.einsum("nhqk,nhpk->nhqp", q, k) * scale, present[:, None, None, :])
            u = np.einsum("nhqp,nhpv->nhqv", a, _activation(self.expert_activation,
                                                           np.einsum("hvd,npd->nhpv", arr["W_V"], e)))
            g = None
            if "W_G" in arr:
                g = 1.0 / (1.0 + np.exp(-(np.einsum("hgd,nqd->nhqg", arr["W_G"], queries) + arr["b_G"][None, :, None, :])))
                u = u * g
            e = np.einsum("nhqv,dhv->nqd", u, arr["W_O"].reshape(d, h, dv))
            if record:
                records.append((a, g))
        return (e[idx, target] if record else e[:, 0]), records

    def _context_vectors(self, rows: np.ndarray, window: int) -> np.ndarray:
        return self._forward(*self._inputs(rows, window))[0]

    def _query_view(self, left: Sequence[str], right: Sequence[str]):
        """One masked position's inputs, the recorded forward pass, and the
        labels and indices of its present positions."""
        self._check_query(left, right)
        row = self._query_row(left, right)
        e, present, target = self._inputs(row, self.window)
        _, records = self._forward(e, present, target, record=True)
        keys, t = self.wv.index_to_key, int(target[0])
        if self._absolute:
            ids, where = row[0, 1:], list(range(self.max_len))
        else:
            ids, where = np.concatenate([row[0, :self.window], [-1], row[0, self.window:]]), list(range(-self.window, self.window + 1))
        keep = [i for i in range(len(ids)) if present[0, i]]
        labels = [(MASK if i == t else keys[ids[i]], where[i]) for i in keep]
        return e[0], records, keep, t, labels

    def gates(self, left: Sequence[str], right: Sequence[str]) -> Dict[str, Any]:
        """The masked position's attention weights in each head of the last
        layer over the positions it sees (its context, then itself, last, as
        ``("[MASK]", 0)`` or ``("[MASK]", its position)``). With one layer
        these are the MoE gates of :meth:`to_moe`; with more, see
        :meth:`moe_view` for the whole mixture and :meth:`attention_weights`
        for every layer.

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> g = m.gates(["a", "b"], ["d"])
        >>> g["experts"], g["weights"].shape
        ([('a', -2), ('b', -1), ('d', 1), ('[MASK]', 0)], (1, 4))
        """
        _, records, keep, t, labels = self._query_view(left, right)
        order = [i for i in range(len(keep)) if keep[i] != t] + [keep.index(t)]  # the mask last
        a = records[-1][0][0, :, t, :]  # H x P: the target's row
        return {"experts": [labels[i] for i in order], "weights": a[:, [keep[i] for i in order]]}

    def attention_weights(self, left: Sequence[str], right: Sequence[str]) -> Dict[str, Any]:
        """Every layer's attention at one masked position.

        Returns
        -------
        dict
            ``positions``: the present positions as (word, offset or
            position), the mask as "[MASK]"; ``target``: the mask's index
            there; ``weights``: (layers x heads x P x P) attention weights,
            row = query position, column = key position; ``gates``:
            (layers x heads x P x g) output gates, or None without a gate.

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> w = m.attention_weights(["a", "b"], ["d"])
        >>> w["positions"], w["target"], w["weights"].shape
        ([('a', -2), ('b', -1), ('[MASK]', 0), ('d', 1)], 2, (1, 1, 4, 4))
        """
        _, records, keep, t, labels = self._query_view(left, right)
        sel = np.ix_(keep, keep)
        weights = np.stack([np.stack([a[0, h][sel] for h in range(self.heads)]) for a, _ in records])
        gates = None
        if self.output_gate is not None:
            gates = np.stack([g[0][:, keep] for _, g in records])
        return {"positions": labels, "target": keep.index(t), "weights": weights, "gates": gates}

    def moe_view(self, left: Sequence[str], right: Sequence[str]) -> MoEView:
        """The model's output at one masked position as an exact mixture of MoEs.

        For every head path π = (h_1, …, h_L) and input position m:
        ``w_π(m) = Σ g·a^{L,h_L}(j, m_{L-1}) ⋯ g·a^{1,h_1}(m_1, m)`` (sum over
        the intermediate positions; g the head's gate at the query position,
        1 without a gate) and the expert ``M_π e⁰_m`` with
        ``M_π = W_O^{L,h_L} W_V^{L,h_L} ⋯ W_O^{1,h_1} W_V^{1,h_1}``;
        ``Σ_π Σ_m w_π(m) M_π e⁰_m`` is the vector the output layer scores
        (:meth:`hidden`). The decomposition holds where the layers are linear
        in their values: no ``expert_activation``, ``output_gate`` None or
        "headwise"; for the other variants it does not exist and this raises.

        Parameters
        ----------
        left, right : list of str
            Words before and after the masked position, as in :meth:`predict_masked`.

        Returns
        -------
        MoEView
            ``paths``, ``positions``, ``weights`` (paths x positions),
            ``experts`` (paths x positions x d), ``hidden()``.

        Examples
        --------
        >>> import numpy as np
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, heads=2, window=2, min_count=1,
        ...                            epochs=1).train()
        >>> view = m.moe_view(["a", "b"], ["d"])
        >>> view.paths, view.weights.shape, view.experts.shape
        ([(0,), (1,)], (2, 4), (2, 4, 4))
        >>> bool(np.allclose(view.hidden(), m.hidden(["a", "b"], ["d"]), atol=1e-6))
        True
        """
        if self.expert_activation is not None:
            raise ValueError(f"moe_view: with expert_activation={self.expert_activation!r} the experts "
                             "φ(W_V e) are not linear maps of the inputs, so the output is no sum of path experts "
                             "M_π e⁰: the mixture-of-MoEs view does not exist for this model")
        if self.output_gate == "elementwise":
            raise ValueError("moe_view: an elementwise output gate scales each value coordinate by a different "
                             "input-dependent factor, so a path's map is no fixed matrix M_π: the mixture-of-MoEs "
                             "view does not exist for this model (it does with output_gate='headwise')")
        e, records, keep, t, labels = self._query_view(left, right)
        d, dv, n_pos = self.vector_size, self.value_size, e.shape[0]
        layer_maps = []  # per layer, per head: W_O^{l,h} W_V^{l,h} (d x d)
        for layer in range(self.layers):
            arr = self.layer_arrays(layer)
            wo, wv = arr["W_O"].astype(np.float64), arr["W_V"].astype(np.float64)
            layer_maps.append([wo[:, h * dv:(h + 1) * dv] @ wv[h] for h in range(self.heads)])
        paths = list(itertools.product(range(self.heads), repeat=self.layers))
        weights, experts = [], []
        for path in paths:
            w = np.zeros(n_pos)
            w[t] = 1.0
            m = np.eye(d)
            for layer in reversed(range(self.layers)):
                a, g = records[layer]
                h = path[layer]
                w = (w * (1.0 if g is None else g[0, h, :, 0])) @ a[0, h]
                m = m @ layer_maps[layer][h]  # M_π = (layer L map) ⋯ (layer 1 map)
            weights.append(w[keep])
            experts.append(e[keep] @ m.T)
        return MoEView(paths=paths, positions=labels, weights=np.array(weights), experts=np.array(experts))

    def plot_attention(self, left: Sequence[str], right: Sequence[str], path: Optional[str] = None):
        """Plot the attention at one masked position: a heatmap per layer and
        head (query positions down, key positions across), and, where
        :meth:`moe_view` exists, the path mixture (paths down, input
        positions across).

        Needs matplotlib (``pip install matplotlib``). Saves to ``path`` if
        given; returns the matplotlib Figure.

        Examples
        --------
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, heads=2, window=2, min_count=1,
        ...                            epochs=1).train()
        >>> try:
        ...     import matplotlib; matplotlib.use("Agg"); fig = m.plot_attention(["a", "b"], ["d"])
        ... except ImportError:
        ...     pass
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("plot_attention needs matplotlib: pip install matplotlib") from e
        att = self.attention_weights(left, right)
        try:
            view: Optional[MoEView] = self.moe_view(left, right)
        except ValueError:
            view = None  # no exact path mixture for this variant: the per-head maps only
        labels = [f"{w}\n{o:+d}" if not self._absolute else f"{w}\n{o}" for w, o in att["positions"]]
        rows, cols = self.layers + (view is not None), self.heads
        fig, axes = plt.subplots(rows, cols, figsize=(1.2 + 0.45 * len(labels) * cols, 1.0 + 0.45 * len(labels) * rows),
                                 squeeze=False)
        for layer in range(self.layers):
            for h in range(self.heads):
                ax = axes[layer, h]
                ax.imshow(att["weights"][layer, h], vmin=0, vmax=1, cmap="viridis")
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels(labels, fontsize=7)
                ax.set_yticks(range(len(labels)))
                ax.set_yticklabels(labels, fontsize=7)
                ax.set_title(f"layer {layer + 1}, head {h}", fontsize=9)
        if view is not None:
            for h in range(1, cols):
                axes[-1, h].axis("off")
            ax = axes[-1, 0]
            if cols > 1:
                ax.remove()
                ax = fig.add_subplot(rows, 1, rows)
            ax.imshow(view.weights, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_yticks(range(len(view.paths)))
            ax.set_yticklabels(["→".join(str(h) for h in p) for p in view.paths], fontsize=7)
            ax.set_title("path weights w_π(m) (mixture of MoEs)", fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig

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

        The variants with one layer map too: a query bias ``b_Q`` goes into
        the queries; in window mode an output gate is a constant per head
        (its input is always the [MASK] at offset 0), folded into
        ``M_h = W_O^h diag(g_h) W_V^h``. More than one layer, an
        ``expert_activation``, or a gate in sentence mode (where it changes
        with the target's position) have no CBOW-MoE image: a ValueError
        says so (:meth:`moe_view` covers several layers).

        Examples
        --------
        See the class docstring.
        """
        from .moe import BidirMoE

        self._check_masked_ready()
        if self.layers != 1:
            raise ValueError(f"to_moe: a model with layers={self.layers} is a mixture of MoEs, not one CBOW-MoE: "
                             "use moe_view(left, right)")
        if self.expert_activation is not None:
            raise ValueError(f"to_moe: with expert_activation={self.expert_activation!r} the experts are not linear "
                             "in the word and position vectors: no CBOW-MoE gives the same distribution")
        if self.output_gate is not None and self._absolute:
            raise ValueError("to_moe: in sentence mode the output gate depends on the target's position, which a "
                             "CBOW-MoE's values cannot: no CBOW-MoE gives the same distribution")
        d, h, dk, dv, w = self.vector_size, self.heads, self.key_size, self.value_size, self.window
        f64, f32 = np.float64, np.float32
        rho, p = self.wv.vectors.astype(f64), self.pos_encoding.astype(f64)
        mask = self.mask_embedding.astype(f64)
        wo = self.W_O.astype(f64)
        blocks = [wo[:, k * dv:(k + 1) * dv] for k in range(h)]  # W_O^h: d x dv
        if self.output_gate is not None:  # window mode: the gate's input is always mask + p[0] (row `window`)
            pre = np.einsum("hgd,d->hg", self.W_G.astype(f64), mask + p[w]) + self.b_G.astype(f64)
            gate = 1.0 / (1.0 + np.exp(-pre))  # H x g (g = 1 or dv)
            blocks = [blocks[k] * gate[k][None, :] for k in range(h)]  # W_O^h diag(g_h)
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
        if self.qk_bias:
            queries = queries + self.b_Q.astype(f64)[:, None, :]
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
