"""The bidirmoe models as ``torch.nn.Module``\\ s: the same parameters (names,
shapes, float32), the same forward as ``predict_masked`` and the same
training objective as the Rust core.

Conventions shared by every module
----------------------------------
**Parameters.** A module holds exactly its model's arrays as
``nn.Parameter``\\ s named as the model names them: ``vectors`` is
``model.wv.vectors`` (SPEC's ``alpha`` / ``rho``), the others keep the
model's attribute names (``syn1neg``, ``syn1``, ``output_bias``,
``salience``, ``offset_gate``, …, ``W_Q``, …). An array that is None in the
model is registered as None (absent from ``state_dict``). The Huffman tree of
a hierarchical-softmax model lives in the buffers ``codes`` (int8, V x L, 0/1
per decision), ``points`` (int64, V x L, inner-node rows of ``syn1``) and
``lengths`` (int64, V), padded past each word's path. A freshly constructed
module has zeros everywhere: get initialised or trained weights from a model
(``model.to_torch()``, whose ``build_vocab`` initialises them exactly as the
Rust backend does), and write them back with :func:`from_torch`.

**forward(left_ids, right_ids)** returns ``log p(word | context)`` over the
vocabulary, shape (B, V), for B masked positions. ``left_ids`` (B, A) holds
the word ids before each masked position in text order (its last valid entry
is adjacent to the mask), ``right_ids`` (B, C) those after it (its first
valid entry is adjacent). ``-1`` means "no word" and is dropped, wherever it
stands, exactly as ``predict_masked`` drops out-of-vocabulary words before
forming the context. Window mode then keeps the ``window`` nearest words on
each side; sentence mode (``positions="absolute"``) lays the words out in one
chunk of ``max_len`` positions as ``predict_masked`` does (the left context
first, as much of it as fits while leaving room for the right one, up to half
the chunk). :func:`encode_contexts` turns lists of words into these tensors.
A row without any context word is predicted from the mask expert alone (or
from z = 0 without one); ``predict_masked`` refuses such a query.

**loss(batch)** is the sum over a batch of training examples of the Rust
core's objective (``example_losses`` gives the terms). ``batch`` is a dict of
integer tensors (numpy arrays are accepted), in the Rust core's formats:

* window examples: ``targets`` (B,), ``context`` (B, 2·window) with -1 for no
  word — column j is offset index j: offsets −window..−1, then 1..window —
  and ``negatives`` (B, K) when the objective is negative sampling;
* sentence examples (``positions="absolute"``): ``tokens`` (B, max_len)
  padded with -1; every non-pad position of a row is a target predicted from
  all the other non-pad positions of its row (rows with fewer than two words
  give no example, as in the Rust core); ``negatives`` (B, max_len, K).

Objectives, with z the context vector (SPEC): negative sampling
``−log σ(beta[t]·z) − Σ_n log σ(−beta[n]·z)`` (a negative equal to its
target, or -1, is skipped, as the Rust core skips it); full softmax
``−log softmax(beta·z + bias)[t]``; hierarchical softmax
``−Σ_path log σ(sign · syn1[node]·z)`` on the model's Huffman tree (code bit
0: sign +1). One SGD step with learning rate lr on one example moves every
parameter by ``-lr`` times autograd's gradient of its loss, as the Rust core
does (its sigmoid comes from word2vec's table, which is exact only on its
grid).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BidirectionalAttention
from ..moe import BidirMoE
from ..word2vec import Word2Vec

Tensor = torch.Tensor
Shape = Optional[Tuple[int, ...]]


# ------------------------------------------------------------------ helpers


def _signed_log_sigmoid(f: Tensor, sign) -> Tensor:
    """log σ(sign · f): every sigmoid term of the output layer (negative
    sampling, hierarchical softmax) goes through here."""
    return F.logsigmoid(sign * f)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def _mixture_weights(logits: Tensor, present: Tensor) -> Tensor:
    """Softmax over the last axis among the present experts (MoE / attention
    weights); absent experts get 0, and a row with no expert all zeros."""
    logits = logits.masked_fill(~present, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1) * present


def _huffman_arrays(huffman, vocab_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes int8 V x L, points int64 V x L, lengths int64 V) from the
    ``(codes, points)`` lists of ``model._vocab.huffman()``, zero-padded."""
    codes, points = huffman
    if len(codes) != vocab_size or len(points) != vocab_size:
        raise ValueError(f"the Huffman tree has {len(codes)} words, the module {vocab_size}")
    lengths = np.fromiter((len(c) for c in codes), dtype=np.int64, count=len(codes))
    width = max(1, int(lengths.max(initial=0)))
    filled = np.arange(width)[None, :] < lengths[:, None]
    n = int(lengths.sum())
    code_arr = np.zeros((vocab_size, width), dtype=np.int8)
    point_arr = np.zeros((vocab_size, width), dtype=np.int64)
    code_arr[filled] = np.fromiter(itertools.chain.from_iterable(codes), dtype=np.int8, count=n)
    point_arr[filled] = np.fromiter(itertools.chain.from_iterable(points), dtype=np.int64, count=n)
    return code_arr, point_arr, lengths


def _compact(ids: Tensor, to_end: bool) -> Tensor:
    """The valid ids (>= 0) of each row in their order, moved to the end
    (``to_end``) or the start of the row, the -1 entries to the other side."""
    key = (ids >= 0) if to_end else (ids < 0)
    order = torch.sort(key.to(torch.uint8), dim=1, stable=True).indices
    return ids.gather(1, order)


def _window_context(left: Tensor, right: Tensor, window: int) -> Tensor:
    """forward's (left, right) as window-mode context rows (B x 2·window): the
    ``window`` nearest valid words on each side, column j = offset index j."""
    pad = left.new_full((left.shape[0], window), -1)
    lo = torch.cat([pad, _compact(left, to_end=True)], dim=1)[:, -window:]
    hi = torch.cat([_compact(right, to_end=False), pad], dim=1)[:, :window]
    return torch.cat([lo, hi], dim=1)


def _sentence_row(left: Tensor, right: Tensor, max_len: int) -> Tuple[Tensor, Tensor]:
    """forward's (left, right) as sentence-mode rows: tokens (B x max_len, -1
    where no word) and the masked position of each row, laid out as
    ``MaskedLM._query_row`` does."""
    b = left.shape[0]
    room = max_len - 1
    pad = left.new_full((b, max_len), -1)
    lo = torch.cat([pad, _compact(left, to_end=True)], dim=1)
    hi = torch.cat([_compact(right, to_end=False), pad], dim=1)
    n_lo, n_hi = (left >= 0).sum(1), (right >= 0).sum(1)
    a = torch.minimum(n_lo, torch.clamp(room - n_hi, min=room // 2))  # left words kept: positions 0..a-1
    n_right = torch.minimum(n_hi, room - a)  # right words kept: positions a+1..a+n_right
    p = torch.arange(max_len, device=left.device)[None, :]
    lcol = (lo.shape[1] - a[:, None] + p).clamp(max=lo.shape[1] - 1)
    rcol = (p - a[:, None] - 1).clamp(min=0, max=hi.shape[1] - 1)
    tokens = torch.where(p < a[:, None], lo.gather(1, lcol),
                         torch.where((p > a[:, None]) & (p <= (a + n_right)[:, None]), hi.gather(1, rcol), -1))
    return tokens, a


def encode_contexts(vocab, lefts: Sequence[Sequence[str]], rights: Sequence[Sequence[str]],
                    device=None) -> Tuple[Tensor, Tensor]:
    """Lists of context words as ``(left_ids, right_ids)`` for a module's ``forward``.

    Parameters
    ----------
    vocab : model, KeyedVectors or dict
        Anything with ``wv.key_to_index`` or ``key_to_index``, or the mapping itself.
    lefts, rights : list of list of str
        For each masked position, the words before it (text order) and after it.
    device : str or torch.device, optional
        Where the tensors go.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        int64 tensors (B x A) and (B x C): left rows padded with -1 at the
        start, right rows at the end; out-of-vocabulary words are -1 too (the
        modules drop them, as ``predict_masked`` does).

    Examples
    --------
    >>> from bidirmoe.torch import encode_contexts
    >>> left, right = encode_contexts({"a": 0, "b": 1}, [["a", "b"], ["zz"]], [["b"], []])
    >>> left.tolist(), right.tolist()
    ([[0, 1], [-1, -1]], [[1], [-1]])
    """
    if hasattr(vocab, "wv"):
        vocab = vocab.wv
    k2i = getattr(vocab, "key_to_index", vocab)
    if len(lefts) != len(rights):
        raise ValueError(f"lefts and rights must have the same length, got {len(lefts)} and {len(rights)}")
    for words in itertools.chain(lefts, rights):
        if isinstance(words, str):
            raise TypeError("each context must be a list of str tokens (e.g. 'the king of'.split()), not a str")
    width_l = max((len(w) for w in lefts), default=0)
    width_r = max((len(w) for w in rights), default=0)
    left = np.full((len(lefts), width_l), -1, dtype=np.int64)
    right = np.full((len(rights), width_r), -1, dtype=np.int64)
    for i, words in enumerate(lefts):
        if words:
            left[i, width_l - len(words):] = [k2i.get(w, -1) for w in words]
    for i, words in enumerate(rights):
        if words:
            right[i, :len(words)] = [k2i.get(w, -1) for w in words]
    return torch.as_tensor(left, device=device), torch.as_tensor(right, device=device)


def _output_shapes(loss: str, vocab_size: int, dim: int, tie: bool = False) -> Dict[str, Shape]:
    """The output layer's arrays for a masked model's ``loss``."""
    return {"syn1neg": (vocab_size, dim) if loss in ("negative", "softmax") and not tie else None,
            "syn1": (vocab_size, dim) if loss == "hs" else None,
            "output_bias": (vocab_size,) if loss == "softmax" else None}


def _require_vocab(model) -> None:
    if getattr(model, "_vocab", None) is None or model.wv is None or model.wv.vectors is None:
        raise RuntimeError(f"the {type(model).__name__} has no vocabulary yet: build_vocab() (or train()) it first")


# ------------------------------------------------------------------- base


class _WordModule(nn.Module):
    """What every module shares: parameter registration under the model's
    names, the output layer, the batch formats, and the copies to and from a
    model. Subclasses set ``model_class``, ``objectives`` and implement
    ``hidden`` (window contexts) and list their settings in ``_settings``."""

    #: The bidirmoe model class this module mirrors.
    model_class: type = object
    #: Active output objectives: "negative", "softmax", "hs".
    objectives: Tuple[str, ...] = ()
    #: The model settings the module depends on (constructor keywords, besides vocab_size).
    _settings: Tuple[str, ...] = ()
    _absolute = False
    tie_output = False

    # --------------------------------------------------------- construction

    def _register_arrays(self, shapes: Mapping[str, Shape], device) -> None:
        """One parameter per array of the model (``vectors`` first, then the
        model's ``_array_names`` order), None where the model has none."""
        for name in ("vectors",) + tuple(self.model_class._array_names):
            shape = shapes.get(name)
            param = None if shape is None else nn.Parameter(torch.zeros(shape, dtype=torch.float32, device=device))
            self.register_parameter(name, param)

    def _init_output(self, objectives: Sequence[str], huffman, device) -> None:
        self.objectives = tuple(objectives)
        if "hs" in self.objectives:
            if huffman is None:
                raise ValueError("hierarchical softmax needs the Huffman tree: pass huffman=model._vocab.huffman()")
            codes, points, lengths = _huffman_arrays(huffman, self.vocab_size)
            self.register_buffer("codes", torch.as_tensor(codes, device=device))
            self.register_buffer("points", torch.as_tensor(points, device=device))
            self.register_buffer("lengths", torch.as_tensor(lengths, device=device))
        else:
            for name in ("codes", "points", "lengths"):
                self.register_buffer(name, None)

    @classmethod
    def _config_of(cls, model) -> Dict[str, Any]:
        """The constructor settings (besides ``huffman`` and options) of the module for ``model``."""
        config = {"vocab_size": len(model.wv.index_to_key)}
        config.update({name: getattr(model, name) for name in cls._settings})
        return config

    def _config(self) -> Dict[str, Any]:
        """This module's settings, as :meth:`_config_of` gives a model's."""
        config = {"vocab_size": self.vocab_size}
        config.update({name: getattr(self, "loss_name" if name == "loss" else name) for name in self._settings})
        return config

    @classmethod
    def from_model(cls, model, device=None, **options):
        """A module holding a copy of ``model``'s arrays (``options``: ``sparse``, …); see :func:`to_torch`.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> from bidirmoe.torch import Word2VecModule
        >>> m = Word2Vec([["a", "b", "c"]] * 20, vector_size=4, min_count=1, epochs=1)
        >>> Word2VecModule.from_model(m, sparse=True).sparse
        True
        """
        if not isinstance(model, cls.model_class):
            raise TypeError(f"{cls.__name__}.from_model needs a {cls.model_class.__name__}, got {type(model).__name__}")
        _require_vocab(model)
        huffman = model._vocab.huffman() if model.hs else None
        module = cls(**cls._config_of(model), huffman=huffman, device=device, **options)
        module._copy_from(model)
        return module

    def _model_arrays(self, model) -> Dict[str, Optional[np.ndarray]]:
        arrays = {"vectors": model.wv.vectors}
        arrays.update({name: getattr(model, name, None) for name in model._array_names})
        if self.tie_output:
            arrays["syn1neg"] = None  # the tied output vectors are `vectors` itself
        return arrays

    def _copy_from(self, model) -> None:
        arrays = self._model_arrays(model)
        params = dict(self.named_parameters())
        unknown = [n for n, a in arrays.items() if a is not None and n not in params]
        if unknown:
            raise ValueError(f"the model has arrays the {type(self).__name__} does not hold: {unknown}")
        with torch.no_grad():
            for name, param in params.items():
                src = arrays.get(name)
                if src is None or tuple(src.shape) != tuple(param.shape):
                    raise ValueError(f"{name}: the model's array has shape {None if src is None else src.shape}, "
                                     f"the module's parameter {tuple(param.shape)}")
                src = np.ascontiguousarray(src, dtype=np.float32)
                if not src.flags.writeable:
                    src = src.copy()
                param.copy_(torch.from_numpy(src))

    # ------------------------------------------------------------ inputs

    def _ids(self, x, name: str = "ids") -> Tensor:
        t = torch.as_tensor(x, device=self.vectors.device)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (word ids, -1 for none), got {t.dtype}")
        return t.long()

    def _rows(self, weight: Tensor, ids: Tensor) -> Tensor:
        """Rows ``weight[ids]`` (ids < 0 read row 0: callers mask them);
        sparse gradients with ``sparse=True``."""
        return F.embedding(ids.clamp(min=0), weight, sparse=self.sparse)

    def _window_batch(self, batch: Mapping[str, Any]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        targets = self._ids(batch["targets"], "targets")
        context = self._ids(batch["context"], "context")
        if targets.dim() != 1 or context.dim() != 2 or context.shape[0] != targets.shape[0]:
            raise ValueError(f"window batch: targets must be (B,) and context (B, 2*window), got "
                             f"{tuple(targets.shape)} and {tuple(context.shape)}")
        return targets, context, self._negatives(batch, targets.shape)

    def _negatives(self, batch: Mapping[str, Any], lead: Tuple[int, ...]) -> Optional[Tensor]:
        if "negative" not in self.objectives:
            return None
        if batch.get("negatives") is None:
            raise ValueError("negative sampling needs the batch's 'negatives'")
        negatives = self._ids(batch["negatives"], "negatives")
        if negatives.dim() != len(lead) + 1 or tuple(negatives.shape[:-1]) != tuple(lead):
            raise ValueError(f"negatives must have shape {tuple(lead) + ('K',)}, got {tuple(negatives.shape)}")
        return negatives

    # ------------------------------------------------------- output layer

    def _beta(self) -> Optional[Tensor]:
        """The output word vectors (SPEC ``beta``): ``syn1neg``, or ``vectors`` when tied."""
        return self.vectors if self.tie_output else self.syn1neg

    def log_probs(self, z: Tensor) -> Tensor:
        """``log p(word | z)`` for every word: (N x d) -> (N x V). Full softmax
        over ``beta·z (+ output_bias)`` when the model has output vectors,
        else the Huffman tree, as ``predict_masked``.

        Examples
        --------
        >>> import torch
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["a", "b", "c"]] * 20, vector_size=4, min_count=1, hs=1, negative=0, epochs=1)
        >>> logp = m.to_torch().log_probs(torch.randn(2, 4))
        >>> logp.shape, torch.allclose(logp.exp().sum(1), torch.ones(2))
        (torch.Size([2, 3]), True)
        """
        beta = self._beta()
        if beta is not None:
            logits = z @ beta.t()
            bias = getattr(self, "output_bias", None)  # (Word2Vec has none)
            if bias is not None:
                logits = logits + bias
            return torch.log_softmax(logits, dim=-1)
        scores = (z @ self.syn1.t())[:, self.points]  # N x V x L
        sign = 1.0 - 2.0 * self.codes.to(z.dtype)
        on_path = torch.arange(self.points.shape[1], device=z.device) < self.lengths[:, None]
        return (_signed_log_sigmoid(scores, sign) * on_path).sum(-1)

    def _output_losses(self, z: Tensor, targets: Tensor, negatives: Optional[Tensor]) -> Tensor:
        """−log-likelihood terms of the active objectives: z (N x M x d), each of
        the M hidden vectors of row n predicting ``targets[n]`` (with the
        row's ``negatives`` (N x K)) -> (N x M)."""
        loss = z.new_zeros(z.shape[:2])
        if "negative" in self.objectives:
            beta = self._beta()
            f_target = torch.einsum("nmd,nd->nm", z, self._rows(beta, targets))
            f_neg = torch.einsum("nmd,nkd->nmk", z, self._rows(beta, negatives))
            keep = ((negatives >= 0) & (negatives != targets[:, None])).to(z.dtype)  # the Rust core skips these
            loss = loss - _signed_log_sigmoid(f_target, 1.0) - (_signed_log_sigmoid(f_neg, -1.0) * keep[:, None, :]).sum(-1)
        if "hs" in self.objectives:
            nodes = self._rows(self.syn1, self.points[targets])  # N x L x d: the target's path
            f = torch.einsum("nmd,nld->nml", z, nodes)
            sign = (1.0 - 2.0 * self.codes[targets].to(z.dtype))[:, None, :]
            on_path = (torch.arange(self.points.shape[1], device=z.device) < self.lengths[targets][:, None]).to(z.dtype)
            loss = loss - (_signed_log_sigmoid(f, sign) * on_path[:, None, :]).sum(-1)
        if "softmax" in self.objectives:
            logits = z @ self._beta().t()
            bias = getattr(self, "output_bias", None)  # (Word2Vec has none)
            if bias is not None:
                logits = logits + bias
            idx = targets[:, None, None].expand(z.shape[0], z.shape[1], 1)
            loss = loss - torch.log_softmax(logits, dim=-1).gather(-1, idx)[..., 0]
        return loss

    # ---------------------------------------------------------- training

    def example_losses(self, batch: Mapping[str, Any]) -> Tensor:
        """The loss of each example of ``batch`` (see the module docs for the
        formats): (B,) for window batches, (B x max_len) for sentence batches
        (0 at pads); :meth:`loss` is their sum.

        Examples
        --------
        >>> import torch
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, min_count=1, epochs=1, loss="softmax",
        ...              positions="absolute", max_len=4).train()
        >>> module = m.to_torch()
        >>> tokens = torch.tensor([[0, 1, 2, 3], [2, 3, -1, -1], [1, -1, -1, -1]])
        >>> losses = module.example_losses({"tokens": tokens})
        >>> losses.shape, (losses > 0).tolist()
        (torch.Size([3, 4]), [[True, True, True, True], [True, True, False, False], [False, False, False, False]])
        >>> module.batch_examples({"tokens": tokens})
        6
        """
        if "tokens" in batch:
            if not self._absolute:
                raise ValueError(f"{type(self).__name__} is in window mode: batches have 'targets' and 'context', not 'tokens'")
            return self._sentence_losses(batch)
        if self._absolute:
            raise ValueError(f"{type(self).__name__} is in sentence mode (positions='absolute'): batches have 'tokens'")
        return self._window_losses(batch)

    def loss(self, batch: Mapping[str, Any]) -> Tensor:
        """Sum over the batch of the Rust core's objective (a scalar tensor).

        Examples
        --------
        >>> import torch
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
        >>> module = m.to_torch()
        >>> batch = {"targets": torch.tensor([2, 0]), "context": torch.tensor([[0, 1, 3, -1], [-1, -1, 1, 2]]),
        ...          "negatives": torch.tensor([[1, 3, 2], [3, 3, 1]])}  # the negative 2 = the target: skipped
        >>> loss = module.loss(batch)
        >>> loss.backward()
        >>> bool(loss > 0), module.vectors.grad.shape
        (True, torch.Size([4, 4]))
        """
        return self.example_losses(batch).sum()

    def batch_examples(self, batch: Mapping[str, Any]) -> int:
        """How many examples ``batch`` holds, counted as the Rust core counts
        them: window rows with a context word (skip-gram: (context word,
        target) pairs), sentence targets in rows of two or more words."""
        if "tokens" in batch:
            present = self._ids(batch["tokens"], "tokens") >= 0
            return int((present & (present.sum(1, keepdim=True) >= 2)).sum())
        present = self._ids(batch["context"], "context") >= 0
        return int(present.sum() if getattr(self, "sg", 0) else present.any(1).sum())

    @property
    def row_tables(self) -> Tuple[str, ...]:
        """Names of the parameters with one entry per vocabulary word
        (``vectors``, ``syn1neg``, ``syn1``, ``output_bias``, ``salience``,
        ``key``): an example touches them only at its own words. The other
        parameters are shared by every example."""
        per_word = ("vectors", "syn1neg", "syn1", "output_bias", "salience", "key")
        return tuple(n for n, _ in self.named_parameters() if n in per_word)

    def _window_losses(self, batch: Mapping[str, Any]) -> Tensor:
        targets, context, negatives = self._window_batch(batch)
        z = self.hidden(context)
        loss = self._output_losses(z[:, None, :], targets, negatives)[:, 0]
        return torch.where((context >= 0).any(1), loss, 0.0)  # no context word: no example (Rust)

    def _sentence_losses(self, batch: Mapping[str, Any]) -> Tensor:
        tokens = self._ids(batch["tokens"], "tokens")
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must be (B, L) with L <= max_len = {self.max_len}, got {tuple(tokens.shape)}")
        b, length = tokens.shape
        negatives = self._negatives(batch, (b, length))
        positions = torch.arange(length, device=tokens.device).expand(b, length)
        z = self.hidden_sentence(tokens, positions)  # B x L x d: every position as the target
        present = tokens >= 0
        flat_neg = None if negatives is None else negatives.reshape(b * length, -1)
        loss = self._output_losses(z.reshape(b * length, 1, -1), tokens.reshape(-1).clamp(min=0), flat_neg)
        valid = present & (present.sum(1, keepdim=True) >= 2)  # a chunk of one word is no example (Rust)
        return torch.where(valid, loss.view(b, length), 0.0)

    # ---------------------------------------------------------- forward

    def forward(self, left_ids, right_ids) -> Tensor:
        """``log p(word | context)`` (B x V) for B masked positions (see the module docs)."""
        left, right = self._ids(left_ids, "left_ids"), self._ids(right_ids, "right_ids")
        if left.dim() != 2 or right.dim() != 2 or left.shape[0] != right.shape[0]:
            raise ValueError(f"left_ids and right_ids must be (B, A) and (B, C), got {tuple(left.shape)} and "
                             f"{tuple(right.shape)}")
        if self._absolute:
            tokens, tpos = _sentence_row(left, right, self.max_len)
            z = self.hidden_sentence(tokens, tpos[:, None])[:, 0]
        else:
            z = self.hidden(_window_context(left, right, self.window))
        return self.log_probs(z)

    def _check_context(self, context: Tensor) -> Tensor:
        context = self._ids(context, "context")
        if context.dim() != 2 or context.shape[1] != 2 * self.window:
            raise ValueError(f"context must be (N, 2*window) = (N, {2 * self.window}), got {tuple(context.shape)}")
        return context

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config().items())


# --------------------------------------------------------------- Word2Vec


class Word2VecModule(_WordModule):
    """:class:`bidirmoe.Word2Vec` (CBOW or skip-gram) as a ``torch.nn.Module``.

    Parameters (``nn.Parameter``, float32): ``vectors`` (V x d, ``wv.vectors``),
    ``syn1neg`` (V x d, with ``negative > 0``), ``syn1`` (V x d, with ``hs``).
    Negative sampling and hierarchical softmax may be on together, as in
    word2vec: the loss is then their sum.

    Parameters
    ----------
    vocab_size, vector_size : int
        V and d.
    window, sg, cbow_mean, negative, hs : int
        As :class:`bidirmoe.Word2Vec`.
    huffman : (codes, points), optional
        ``model._vocab.huffman()``; needed with ``hs``.
    word2vec_update : bool
        CBOW only. word2vec, gensim and the Rust core give every context word
        the gradient with respect to the hidden vector h itself: with
        ``cbow_mean=1`` that is |C| times the gradient of the mean, with
        ``cbow_mean=0`` (gensim's rule) 1/|C| of the gradient of the sum. True
        (default): :meth:`loss`'s backward does the same, so an SGD step at
        the same learning rate is the Rust core's. False: the exact gradient.
        The loss value, and ``forward``'s gradients, are the same either way.
    sparse : bool
        Row lookups of ``vectors``, ``syn1neg`` and ``syn1`` give sparse gradients.
    device : str or torch.device, optional
        Where the parameters live.

    Notes
    -----
    ``forward`` is CBOW's prediction (as ``predict_masked``; not defined for
    skip-gram). In :meth:`loss` every (context word → target) pair of a
    skip-gram batch row is its own example (h = ``vectors[context word]``),
    sharing the row's negatives as the Rust core does; a CBOW row is one
    example, h the mean (``cbow_mean=1``) or sum of its context vectors.

    Examples
    --------
    >>> import torch
    >>> from bidirmoe import Word2Vec
    >>> from bidirmoe.torch import encode_contexts
    >>> text = [["the", "cat", "sat", "on", "the", "mat"]] * 50
    >>> m = Word2Vec(text, vector_size=8, window=2, min_count=1, epochs=2, workers=1)
    >>> module = m.to_torch()
    >>> sorted(name for name, _ in module.named_parameters())
    ['syn1neg', 'vectors']
    >>> logp = module(*encode_contexts(m, [["the"]], [["sat", "on"]])).detach()
    >>> p = dict(m.predict_masked(["the"], ["sat", "on"], topn=None))
    >>> abs(float(logp[0, m.wv.key_to_index["cat"]].exp()) - p["cat"]) < 1e-5
    True
    >>> batch = {"targets": torch.tensor([1, 2]), "context": torch.tensor([[0, 1, 2, 3], [-1, 0, 3, -1]]),
    ...          "negatives": torch.tensor([[3, 4, 0, 1, 2], [0, 1, 1, 4, 3]])}
    >>> module.loss(batch).backward()
    >>> module.syn1neg.grad.shape
    torch.Size([5, 8])
    """

    model_class = Word2Vec
    _settings = ("vector_size", "window", "sg", "cbow_mean", "negative", "hs")

    def __init__(self, vocab_size: int, vector_size: int, window: int = 5, sg: int = 0, cbow_mean: int = 1,
                 negative: int = 5, hs: int = 0, huffman=None, *, word2vec_update: bool = True, sparse: bool = False,
                 device=None):
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("vector_size", vector_size), ("window", window)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(negative, (int, np.integer)) or negative < 0:
            raise ValueError(f"negative must be an int >= 0, got {negative!r}")
        if not negative and not hs:
            raise ValueError("negative=0 and hs=0 leave no training objective")
        self.vocab_size, self.vector_size, self.window = int(vocab_size), int(vector_size), int(window)
        self.sg, self.cbow_mean, self.negative, self.hs = int(bool(sg)), int(bool(cbow_mean)), int(negative), int(bool(hs))
        self.word2vec_update, self.sparse = bool(word2vec_update), bool(sparse)
        v, d = self.vocab_size, self.vector_size
        self._register_arrays({"vectors": (v, d), "syn1neg": (v, d) if negative else None,
                               "syn1": (v, d) if hs else None}, device)
        self._init_output(("negative",) * (self.negative > 0) + ("hs",) * self.hs, huffman, device)


    def hidden(self, context, word2vec_update: bool = False) -> Tensor:
        """CBOW's hidden vector h (N x d) of context rows (N x C, -1 for no
        word): mean (``cbow_mean=1``) or sum of the context vectors, 0 for an
        empty row. ``word2vec_update``: scale the gradient reaching the
        context vectors as word2vec does (see the class docs)."""
        context = self._ids(context, "context")
        present = context >= 0
        rows = self._rows(self.vectors, context) * present.unsqueeze(-1).to(self.vectors.dtype)
        h = rows.sum(1)
        count = present.sum(1, keepdim=True).clamp(min=1).to(h.dtype)
        if self.cbow_mean:
            h = h / count
        if word2vec_update:
            h = _ScaleGrad.apply(h, count if self.cbow_mean else 1.0 / count)
        return h

    def forward(self, left_ids, right_ids) -> Tensor:
        """CBOW's ``log p(word | context)`` (B x V), as ``predict_masked`` (see the module docs)."""
        if self.sg:
            raise ValueError("forward (predict_masked) is defined for CBOW (sg=0): skip-gram has no context vector")
        return super().forward(left_ids, right_ids)

    def _window_losses(self, batch: Mapping[str, Any]) -> Tensor:
        targets, context, negatives = self._window_batch(batch)
        present = context >= 0
        if self.sg:  # each (context word -> target) pair is its own example
            pairs = self._output_losses(self._rows(self.vectors, context), targets, negatives)  # B x C
            return torch.where(present, pairs, 0.0).sum(1)
        z = self.hidden(context, word2vec_update=self.word2vec_update)
        loss = self._output_losses(z[:, None, :], targets, negatives)[:, 0]
        return torch.where(present.any(1), loss, 0.0)


# ---------------------------------------------------------------- BidirMoE


class BidirMoEModule(_WordModule):
    """:class:`bidirmoe.BidirMoE` (CBOW-MoE, SPEC Model 1) as a ``torch.nn.Module``.

    Parameters (``nn.Parameter``, float32; D_in = d, or heads·d with
    ``head_values="full"``): ``vectors`` (V x D_in, SPEC ``alpha``), the
    output layer (``syn1neg`` V x d for "negative"/"softmax", ``output_bias``
    V for "softmax", ``syn1`` V x d for "hs"), ``mask_value`` (D_in, with the
    mask expert), and per mode

    * window: ``salience`` (H x V), ``offset_gate`` (H x 2·window),
      ``offset_value`` (2·window x D_in), ``mask_gate`` (H, with the mask expert);
    * sentence (``positions="absolute"``): ``query`` (H x max_len x key_size),
      ``key`` (H x V x key_size), ``pos_key`` (H x max_len x key_size),
      ``pos_value`` (max_len x D_in), ``mask_key`` (H x key_size, with the mask expert).

    The others are None. Constructor parameters are the model's (see
    :class:`bidirmoe.BidirMoE`), plus ``vocab_size``, ``huffman``
    (``model._vocab.huffman()``, for "hs"), ``sparse`` and ``device`` as in
    :class:`Word2VecModule`.

    Examples
    --------
    >>> import torch
    >>> from bidirmoe import BidirMoE
    >>> from bidirmoe.torch import encode_contexts
    >>> corpus = [["the", "king", "rules", "the", "land"], ["the", "queen", "rules", "the", "land"]] * 50
    >>> m = BidirMoE(corpus, vector_size=8, window=2, heads=2, min_count=1, epochs=1, workers=1).train()
    >>> module = m.to_torch()
    >>> sorted(name for name, _ in module.named_parameters())
    ['mask_gate', 'mask_value', 'offset_gate', 'offset_value', 'salience', 'syn1neg', 'vectors']
    >>> logp = module(*encode_contexts(m, [["the"]], [["rules", "the"]])).detach()
    >>> p = dict(m.predict_masked(["the"], ["rules", "the"], topn=None))
    >>> abs(float(logp[0, m.wv.key_to_index["king"]].exp()) - p["king"]) < 1e-5
    True
    >>> batch = {"targets": torch.tensor([1]), "context": torch.tensor([[-1, 0, 3, 0]]),
    ...          "negatives": torch.tensor([[2, 4, 0]])}
    >>> module.loss(batch).backward()
    >>> module.offset_gate.grad.shape
    torch.Size([2, 4])
    """

    model_class = BidirMoE
    _settings = ("vector_size", "heads", "head_values", "mask_expert", "loss", "positions", "window", "max_len",
                 "key_size")

    def __init__(self, vocab_size: int, vector_size: int, heads: int = 1, head_values: str = "slice",
                 mask_expert: bool = True, loss: str = "negative", positions: str = "window", window: int = 5,
                 max_len: int = 32, key_size: int = 16, huffman=None, *, sparse: bool = False, device=None):
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("vector_size", vector_size), ("heads", heads),
                        ("window", window), ("max_len", max_len), ("key_size", key_size)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if head_values not in ("slice", "full"):
            raise ValueError(f"head_values must be 'slice' or 'full', got {head_values!r}")
        if head_values == "slice" and vector_size % heads:
            raise ValueError(f"vector_size ({vector_size}) must be a multiple of heads ({heads}) with head_values='slice'")
        if loss not in ("negative", "softmax", "hs"):
            raise ValueError(f"loss must be 'negative', 'softmax' or 'hs', got {loss!r}")
        if positions not in ("window", "absolute"):
            raise ValueError(f"positions must be 'window' or 'absolute', got {positions!r}")
        self.vocab_size, self.vector_size, self.heads = int(vocab_size), int(vector_size), int(heads)
        self.head_values, self.mask_expert, self.loss_name = head_values, bool(mask_expert), loss
        self.positions, self.window, self.max_len, self.key_size = positions, int(window), int(max_len), int(key_size)
        self._absolute = positions == "absolute"
        self.sparse = bool(sparse)
        v, d, h, r, length, dk = self.vocab_size, self.vector_size, self.heads, 2 * self.window, self.max_len, self.key_size
        full = head_values == "full"
        d_in = d * h if full else d
        self._width = d if full else d // h  # one head's block of a value row
        win, ab, mask = not self._absolute, self._absolute, self.mask_expert
        shapes: Dict[str, Shape] = dict(
            vectors=(v, d_in), **_output_shapes(loss, v, d),
            salience=(h, v) if win else None, offset_gate=(h, r) if win else None,
            offset_value=(r, d_in) if win else None, mask_gate=(h,) if win and mask else None,
            mask_value=(d_in,) if mask else None,
            query=(h, length, dk) if ab else None, key=(h, v, dk) if ab else None,
            pos_key=(h, length, dk) if ab else None, pos_value=(length, d_in) if ab else None,
            mask_key=(h, dk) if ab and mask else None)
        self._register_arrays(shapes, device)
        self._init_output((loss,), huffman, device)


    def _combine(self, zh: Tensor) -> Tensor:
        """Heads' mixtures (… x H x s) -> z (… x d): concatenated ("slice") or summed ("full")."""
        return zh.sum(-2) if self.head_values == "full" else zh.flatten(-2)

    def hidden(self, context) -> Tensor:
        """Window mode: the mixture z (N x d) of context rows (N x 2·window,
        column j = offset index j, -1 for no word). SPEC Model 1:
        θ_h = softmax(salience[h, w] + offset_gate[h, r]) over the context
        (and the mask expert), z_h = Σ θ_h (vectors[w] + offset_value[r])[head h].

        Examples
        --------
        >>> import torch
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, heads=2, min_count=1, epochs=1).train()
        >>> z = m.to_torch().hidden(torch.tensor([[0, 1, 3, -1]]))  # offsets -2, -1, +1 hold a, b, d
        >>> z.shape
        torch.Size([1, 4])
        """
        if self._absolute:
            raise ValueError("hidden() is the window-mode context vector: use hidden_sentence() in sentence mode")
        context = self._check_context(context)
        n, h = context.shape[0], self.heads
        present = context >= 0
        logits = self.salience[:, context.clamp(min=0)].permute(1, 0, 2) + self.offset_gate  # N x H x R
        x = self._rows(self.vectors, context) + self.offset_value  # N x R x D_in
        if self.mask_expert:
            logits = torch.cat([logits, self.mask_gate.view(1, h, 1).expand(n, h, 1)], dim=2)
            x = torch.cat([x, self.mask_value.view(1, 1, -1).expand(n, 1, -1)], dim=1)
            present = torch.cat([present, present.new_ones(n, 1)], dim=1)
        theta = _mixture_weights(logits, present[:, None, :])  # N x H x E
        return self._combine(torch.einsum("nhe,nehs->nhs", theta, x.view(n, x.shape[1], h, self._width)))

    def hidden_sentence(self, tokens, positions) -> Tensor:
        """Sentence mode: z (B x J x d) for target positions ``positions`` (B x J)
        of the rows ``tokens`` (B x L, L <= max_len, -1 for no word); the
        target's own position is left out of its context. SPEC:
        l_h(j, m) = <query[h, j], key[h, w_m] + pos_key[h, m]> / sqrt(key_size),
        x(m) = vectors[w_m] + pos_value[m]; the mask expert is the masked token
        (gate key mask_key[h] + pos_key[h, j], value mask_value + pos_value[j])."""
        if not self._absolute:
            raise ValueError("hidden_sentence() is for sentence mode (positions='absolute'): use hidden()")
        tokens, positions = self._ids(tokens, "tokens"), self._ids(positions, "positions")
        b, length = tokens.shape
        h, s, scale = self.heads, self._width, 1.0 / math.sqrt(self.key_size)
        keys = self.key[:, tokens.clamp(min=0)] + self.pos_key[:, None, :length]  # H x B x L x dk
        q = self.query[:, positions]  # H x B x J x dk
        logits = torch.einsum("hbjk,hblk->bhjl", q, keys) * scale
        present = (tokens >= 0)[:, None, :] & (torch.arange(length, device=tokens.device) != positions[..., None])
        x = (self._rows(self.vectors, tokens) + self.pos_value[:length]).view(b, length, h, s)
        if self.mask_expert:
            mask_keys = self.mask_key[:, None, None, :] + self.pos_key[:, positions]  # H x B x J x dk
            mask_logit = (q * mask_keys).sum(-1).permute(1, 0, 2) * scale  # B x H x J
            logits = torch.cat([logits, mask_logit[..., None]], dim=-1)
            present = torch.cat([present, present.new_ones(present.shape[:2] + (1,))], dim=-1)
        theta = _mixture_weights(logits, present[:, None])  # B x H x J x E
        zh = torch.einsum("bhjl,blhs->bjhs", theta[..., :length], x)
        if self.mask_expert:
            mask_x = (self.mask_value + self.pos_value[positions]).view(b, -1, h, s)  # B x J x H x s
            zh = zh + theta[..., length].permute(0, 2, 1)[..., None] * mask_x
        return self._combine(zh)


# ------------------------------------------------------------ attention


class BidirectionalAttentionModule(_WordModule):
    """:class:`bidirmoe.BidirectionalAttention` (SPEC Model 2, its layers and
    variants) as a ``torch.nn.Module``.

    Parameters (``nn.Parameter``, float32): ``vectors`` (V x d, SPEC ``rho``),
    ``pos_encoding`` (2·window+1 x d in window mode — row ``window + r`` for
    offset r, the target at row ``window`` — or max_len x d in sentence mode),
    ``mask_embedding`` (d), ``W_Q``, ``W_K`` (H x key_size x d), ``W_V``
    (H x value_size x d), ``W_O`` (d x H·value_size), with an output gate
    ``W_G`` (H x g x d) and ``b_G`` (H x g) (g = 1 headwise, value_size
    elementwise), with ``qk_bias`` ``b_Q`` (H x key_size) — each with a
    leading layer axis when ``layers > 1`` — and the output layer
    (``syn1neg``, ``output_bias``, ``syn1`` as the loss needs; with
    ``tie_output`` the output vectors are ``vectors`` and ``syn1neg`` is None).

    ``e_m = vectors[w_m] + pos_encoding[m]``; the masked position holds
    ``e_j = mask_embedding + pos_encoding[j]``. Each layer updates every
    position i: ``a_h(i, m) = softmax_m(<W_Q^h e_i + b_Q^h, W_K^h e_m> / sqrt(key_size))``,
    ``e'_i = W_O concat_h g_h(i) ⊙ Σ_m a_h(i, m) φ(W_V^h e_m)`` with
    ``g_h(i) = σ(W_G^h e_i + b_G^h)`` (1 without a gate) and φ the
    ``expert_activation`` (identity without); the last layer computes the
    target only. ``p(k) ∝ exp(beta[k]·e^L_j + bias[k])``.

    Constructor parameters are the model's (see
    :class:`bidirmoe.BidirectionalAttention`), plus ``vocab_size``,
    ``huffman``, ``sparse`` and ``device`` as in :class:`Word2VecModule`.

    Examples
    --------
    >>> from bidirmoe import BidirectionalAttention
    >>> from bidirmoe.torch import encode_contexts
    >>> corpus = [["the", "king", "rules", "the", "land"], ["the", "queen", "rules", "the", "land"]] * 50
    >>> att = BidirectionalAttention(corpus, vector_size=8, heads=2, window=2, min_count=1, epochs=1, workers=1).train()
    >>> module = att.to_torch()
    >>> module.W_Q.shape, module.pos_encoding.shape
    (torch.Size([2, 4, 8]), torch.Size([5, 8]))
    >>> logp = module(*encode_contexts(att, [["the"]], [["rules"]])).detach()
    >>> p = dict(att.predict_masked(["the"], ["rules"], topn=None))
    >>> abs(float(logp[0, att.wv.key_to_index["queen"]].exp()) - p["queen"]) < 1e-5
    True
    """

    model_class = BidirectionalAttention
    _settings = ("vector_size", "heads", "key_size", "value_size", "loss", "positions", "window", "max_len",
                 "tie_output", "layers", "output_gate", "expert_activation", "qk_bias")
    _activations = {None: None, "tanh": torch.tanh, "gelu": F.gelu, "relu": F.relu}

    def __init__(self, vocab_size: int, vector_size: int, heads: int = 1, key_size: Optional[int] = None,
                 value_size: Optional[int] = None, loss: str = "negative", positions: str = "window", window: int = 5,
                 max_len: int = 32, tie_output: bool = False, layers: int = 1, output_gate: Optional[str] = None,
                 expert_activation: Optional[str] = None, qk_bias: bool = False, huffman=None, *,
                 sparse: bool = False, device=None):
        super().__init__()
        per_head = max(vector_size // heads, 1) if isinstance(heads, (int, np.integer)) and heads > 0 else 1
        key_size = per_head if key_size is None else key_size
        value_size = per_head if value_size is None else value_size
        for name, v in (("vocab_size", vocab_size), ("vector_size", vector_size), ("heads", heads),
                        ("key_size", key_size), ("value_size", value_size), ("window", window), ("max_len", max_len),
                        ("layers", layers)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if loss not in ("negative", "softmax", "hs"):
            raise ValueError(f"loss must be 'negative', 'softmax' or 'hs', got {loss!r}")
        if positions not in ("window", "absolute"):
            raise ValueError(f"positions must be 'window' or 'absolute', got {positions!r}")
        if tie_output and loss == "hs":
            raise ValueError("tie_output needs output vectors: not with loss='hs'")
        if output_gate not in (None, "headwise", "elementwise"):
            raise ValueError(f"output_gate must be None, 'headwise' or 'elementwise', got {output_gate!r}")
        if expert_activation not in self._activations:
            raise ValueError(f"expert_activation must be one of {tuple(self._activations)}, got {expert_activation!r}")
        self.vocab_size, self.vector_size, self.heads = int(vocab_size), int(vector_size), int(heads)
        self.key_size, self.value_size, self.loss_name = int(key_size), int(value_size), loss
        self.positions, self.window, self.max_len = positions, int(window), int(max_len)
        self.tie_output, self.sparse = bool(tie_output), bool(sparse)
        self.layers, self.output_gate, self.expert_activation = int(layers), output_gate, expert_activation
        self.qk_bias = bool(qk_bias)
        self._absolute = positions == "absolute"
        v, d, h, dk, dv = self.vocab_size, self.vector_size, self.heads, self.key_size, self.value_size
        rows = self.max_len if self._absolute else 2 * self.window + 1
        lead = (self.layers,) if self.layers > 1 else ()
        g = 1 if output_gate == "headwise" else dv
        gated = output_gate is not None
        shapes: Dict[str, Shape] = dict(
            vectors=(v, d), **_output_shapes(loss, v, d, tie=self.tie_output), pos_encoding=(rows, d),
            mask_embedding=(d,), W_Q=lead + (h, dk, d), W_K=lead + (h, dk, d), W_V=lead + (h, dv, d),
            W_O=lead + (d, h * dv), W_G=lead + (h, g, d) if gated else None, b_G=lead + (h, g) if gated else None,
            b_Q=lead + (h, dk) if self.qk_bias else None)
        self._register_arrays(shapes, device)
        self._init_output((loss,), huffman, device)
        w = self.window  # window mode: encoding rows of offset indices 0..2w-1 (row w is the target's)
        self.register_buffer("_context_rows", torch.cat([torch.arange(w), torch.arange(w + 1, 2 * w + 1)]).to(device),
                             persistent=False)

    def _layer(self, name: str, layer: int) -> Optional[Tensor]:
        p = getattr(self, name)
        return None if p is None or self.layers == 1 else p[layer]

    def _layer_params(self, layer: int) -> Dict[str, Optional[Tensor]]:
        names = ("W_Q", "W_K", "W_V", "W_O", "W_G", "b_G", "b_Q")
        if self.layers == 1:
            return {n: getattr(self, n) for n in names}
        return {n: self._layer(n, layer) for n in names}

    def _values(self, p: Mapping[str, Optional[Tensor]], e: Tensor) -> Tensor:
        """φ(W_V^h e) for every head: (B x L x d) -> (B x H x L x d_v)."""
        v = torch.einsum("hvd,bld->bhlv", p["W_V"], e)
        act = self._activations[self.expert_activation]
        return v if act is None else act(v)

    def _gate(self, p: Mapping[str, Optional[Tensor]], e_query: Tensor) -> Optional[Tensor]:
        """σ(W_G^h e_i + b_G^h) at query inputs (B x Q x d) -> (B x Q x H x g), or None."""
        if p["W_G"] is None:
            return None
        return torch.sigmoid(torch.einsum("hgd,bqd->bqhg", p["W_G"], e_query) + p["b_G"])

    def _queries(self, p: Mapping[str, Optional[Tensor]], e_query: Tensor) -> Tensor:
        """W_Q^h e_i (+ b_Q^h): (B x Q x d) -> (B x H x Q x d_k)."""
        q = torch.einsum("hkd,bqd->bhqk", p["W_Q"], e_query)
        return q if p["b_Q"] is None else q + p["b_Q"][None, :, None, :]

    def _full_layer(self, layer: int, e: Tensor, present: Tensor) -> Tensor:
        """One layer at every position: e (B x P x d), present (B x P) -> (B x P x d)."""
        p = self._layer_params(layer)
        scale = 1.0 / math.sqrt(self.key_size)
        q = self._queries(p, e)
        k = torch.einsum("hkd,bpd->bhpk", p["W_K"], e)
        a = _mixture_weights(torch.einsum("bhqk,bhpk->bhqp", q, k) * scale, present[:, None, None, :])
        u = torch.einsum("bhqp,bhpv->bqhv", a, self._values(p, e))
        g = self._gate(p, e)
        if g is not None:
            u = u * g
        return u.flatten(-2) @ p["W_O"].t()

    def _attend(self, e: Tensor, present: Tensor, e_self: Tensor, layer: Optional[int] = None) -> Tensor:
        """A layer's output (B x J x d) at J masked positions per row only,
        each with input ``e_self`` (B x J x d) and attending to itself and to
        the present (B x J x L) context inputs ``e`` (B x L x d); the last
        layer by default."""
        p = self._layer_params(self.layers - 1 if layer is None else layer)
        scale = 1.0 / math.sqrt(self.key_size)
        q = self._queries(p, e_self)
        qk = torch.einsum("bhjk,hkd->bhjd", q, p["W_K"])  # <q, W_K e> = <W_K^T q, e>
        logits = torch.einsum("bhjd,bld->bhjl", qk, e) * scale
        self_logit = torch.einsum("bhjd,bjd->bhj", qk, e_self) * scale
        present = torch.cat([present, present.new_ones(present.shape[:2] + (1,))], dim=-1)
        a = _mixture_weights(torch.cat([logits, self_logit[..., None]], dim=-1), present[:, None])  # B x H x J x L+1
        length = e.shape[1]
        if self.expert_activation is None:  # Σ_m a_m W_V e_m = W_V Σ_m a_m e_m
            mixed = torch.einsum("bhjl,bld->bjhd", a[..., :length], e) + a[..., length].permute(0, 2, 1)[..., None] * e_self[:, :, None, :]
            u = torch.einsum("hvd,bjhd->bjhv", p["W_V"], mixed)
        else:
            u = (torch.einsum("bhjl,bhlv->bjhv", a[..., :length], self._values(p, e))
                 + a[..., length].permute(0, 2, 1)[..., None] * self._values(p, e_self).permute(0, 2, 1, 3))
        g = self._gate(p, e_self)
        if g is not None:
            u = u * g
        return u.flatten(-2) @ p["W_O"].t()

    def _deep(self, e: Tensor, present: Tensor, target: Tensor) -> Tensor:
        """All layers over rows of positions: e⁰ (N x P x d) with the [MASK]
        input at each row's ``target`` (N,), present (N x P) -> e^L at the
        targets (N x d)."""
        for layer in range(self.layers - 1):
            e = self._full_layer(layer, e, present)
        rows = torch.arange(e.shape[0], device=e.device)
        e_self = e[rows, target][:, None, :]
        others = present.clone()
        others[rows, target] = False
        return self._attend(e, others[:, None, :], e_self)[:, 0]

    def hidden(self, context) -> Tensor:
        """Window mode: the last layer's output at the target (N x d) for
        context rows (N x 2·window, column j = offset index j, -1 for no word)."""
        if self._absolute:
            raise ValueError("hidden() is the window-mode context vector: use hidden_sentence() in sentence mode")
        context = self._check_context(context)
        e = self._rows(self.vectors, context) + self.pos_encoding[self._context_rows]  # N x R x d
        e_self = (self.mask_embedding + self.pos_encoding[self.window]).expand(context.shape[0], 1, -1)
        if self.layers == 1:
            return self._attend(e, (context >= 0)[:, None, :], e_self)[:, 0]
        w = self.window  # all 2w+1 positions in offset order, the mask at index w
        e_all = torch.cat([e[:, :w], e_self, e[:, w:]], dim=1)
        present = torch.cat([context[:, :w] >= 0, context.new_ones(context.shape[0], 1, dtype=torch.bool),
                             context[:, w:] >= 0], dim=1)
        return self._deep(e_all, present, torch.full_like(context[:, 0], w))

    def hidden_sentence(self, tokens, positions) -> Tensor:
        """Sentence mode: the last layer's output (B x J x d) at target
        positions ``positions`` (B x J) of the rows ``tokens`` (B x L,
        L <= max_len, -1 for no word); the target's own token is not seen
        (it holds the [MASK] input).

        Examples
        --------
        >>> import torch
        >>> from bidirmoe import BidirectionalAttention
        >>> m = BidirectionalAttention([["a", "b", "c", "d"]] * 20, vector_size=4, min_count=1, epochs=1,
        ...                            positions="absolute", max_len=4).train()
        >>> o = m.to_torch().hidden_sentence(torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 2]]))
        >>> o.shape  # targets at positions 0 and 2 of the row
        torch.Size([1, 2, 4])
        """
        if not self._absolute:
            raise ValueError("hidden_sentence() is for sentence mode (positions='absolute'): use hidden()")
        tokens, positions = self._ids(tokens, "tokens"), self._ids(positions, "positions")
        b, length = tokens.shape
        e = self._rows(self.vectors, tokens) + self.pos_encoding[:length]  # B x L x d
        e_self = self.mask_embedding + self.pos_encoding[positions]  # B x J x d
        where = torch.arange(length, device=tokens.device)
        if self.layers == 1:  # the J targets of a row share its keys
            present = (tokens >= 0)[:, None, :] & (where != positions[..., None])
            return self._attend(e, present, e_self)
        # Deeper layers see the mask at one position: one copy of the row per target.
        j = positions.shape[1]
        is_target = (where == positions[..., None])  # B x J x L
        rows = torch.where(is_target[..., None], e_self[:, :, None, :], e[:, None]).reshape(b * j, length, -1)
        present = ((tokens >= 0)[:, None, :] | is_target).reshape(b * j, length)
        return self._deep(rows, present, positions.reshape(-1)).view(b, j, -1)


# ------------------------------------------------------------- conversion

_MODULES = (Word2VecModule, BidirMoEModule, BidirectionalAttentionModule)


def to_torch(model, device=None, **options) -> _WordModule:
    """The torch module of ``model`` holding a copy of its arrays (``model.to_torch()``).

    Parameters
    ----------
    model : Word2Vec, BidirMoE or BidirectionalAttention
        A model with a vocabulary (trained or just ``build_vocab``-ed).
    device : str or torch.device, optional
        Where the parameters go (default: the CPU).
    **options
        Module options: ``sparse``, and ``word2vec_update`` for Word2Vec.

    Examples
    --------
    >>> from bidirmoe import BidirMoE
    >>> from bidirmoe.torch import to_torch
    >>> m = BidirMoE([["a", "b", "c", "d"]] * 20, vector_size=4, window=2, min_count=1, epochs=1).train()
    >>> module = to_torch(m)
    >>> type(module).__name__, tuple(module.vectors.shape), module.vectors.dtype
    ('BidirMoEModule', (4, 4), torch.float32)
    >>> bool((module.salience.detach().numpy() == m.salience).all())
    True
    """
    for cls in _MODULES:
        if isinstance(model, cls.model_class):
            return cls.from_model(model, device=device, **options)
    raise TypeError(f"no torch module for {type(model).__name__}: expected Word2Vec, BidirMoE or BidirectionalAttention")


def from_torch(module: _WordModule, model):
    """Copy ``module``'s parameters into ``model`` (in place) and return the model.

    ``model`` supplies the vocabulary and settings and must match the module
    (same class, settings, vocabulary size and, with ``hs``, Huffman tree) —
    typically the model the module came from, or one loaded from its file.
    The arrays are copied to the CPU as float32 numpy arrays under the same
    names; the model keeps training on the Rust backend from there.

    Examples
    --------
    >>> import torch
    >>> from bidirmoe import Word2Vec
    >>> from bidirmoe.torch import from_torch
    >>> m = Word2Vec([["a", "b", "c"]] * 20, vector_size=4, min_count=1, epochs=1)
    >>> module = m.to_torch()
    >>> before = m.wv.vectors[0].copy()
    >>> with torch.no_grad():
    ...     module.vectors[0] = 1.0
    >>> bool((m.wv.vectors[0] == before).all())  # a copy: the model has not changed
    True
    >>> from_torch(module, m) is m, m.wv.vectors[0].tolist()
    (True, [1.0, 1.0, 1.0, 1.0])
    """
    if not isinstance(module, _MODULES):
        raise TypeError(f"expected a bidirmoe torch module, got {type(module).__name__}")
    if not isinstance(model, module.model_class):
        raise TypeError(f"a {type(module).__name__} goes into a {module.model_class.__name__}, not a {type(model).__name__}")
    _require_vocab(model)
    want, have = type(module)._config_of(model), module._config()
    diff = [f"{k} ({have[k]!r} in the module, {want[k]!r} in the model)" for k in want if have[k] != want[k]]
    if diff:
        raise ValueError("the module does not match the model: " + ", ".join(diff))
    if "hs" in module.objectives:
        codes, points, lengths = _huffman_arrays(model._vocab.huffman(), module.vocab_size)
        if not (np.array_equal(codes, module.codes.cpu().numpy()) and np.array_equal(points, module.points.cpu().numpy())
                and np.array_equal(lengths, module.lengths.cpu().numpy())):
            raise ValueError("the module's Huffman tree is not the model's: syn1 would not mean the same")
    arrays = {name: np.array(p.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)
              for name, p in module.named_parameters()}
    model.wv.vectors = arrays.pop("vectors")
    model.wv.norms = None  # vectors changed: cached norms are stale
    for name, arr in arrays.items():
        setattr(model, name, arr)
    if module.tie_output:
        model.syn1neg = model.wv.vectors  # beta = rho: one array
    if hasattr(model, "_sync_output_wv"):
        model._sync_output_wv()
    return model
