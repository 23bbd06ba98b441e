"""bidirmoe's torch backend: the same models as ``torch.nn.Module``\\ s.

Each model family has a module that holds exactly the model's parameters
(same names, shapes and float32 dtype as the model's numpy arrays), a
``forward(left_ids, right_ids)`` giving ``log p(word | context)`` as
``predict_masked`` does, and a ``loss(batch)`` on training examples in the
format the Rust core produces, with the Rust core's objective:

* :class:`Word2VecModule` — CBOW and skip-gram (:class:`bidirmoe.Word2Vec`);
* :class:`BidirMoEModule` — CBOW-MoE (:class:`bidirmoe.BidirMoE`);
* :class:`BidirectionalAttentionModule` — :class:`bidirmoe.BidirectionalAttention`.

Moving a model between backends is a copy: ``model.to_torch()`` (or
:func:`to_torch`) builds the module from the model's arrays,
:func:`from_torch` writes a module's parameters back into a model.

torch is an optional dependency (``pip install "bidirmoe[torch]"``);
``import bidirmoe`` never imports it, this subpackage does.
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("bidirmoe's torch backend needs PyTorch: pip install \"bidirmoe[torch]\" (or pip install torch)") from e

from .modules import (BidirectionalAttentionModule, BidirMoEModule, Word2VecModule, encode_contexts, from_torch,
                      to_torch)

__all__ = ["Word2VecModule", "BidirMoEModule", "BidirectionalAttentionModule", "to_torch", "from_torch",
           "encode_contexts"]
