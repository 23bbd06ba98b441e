"""The torch engine: one training epoch of any bidirmoe model on a torch device.

It sits behind :class:`bidirmoe.training.TrainableModel`'s epoch loop (the
same loop, schedule, callbacks, progress, Ctrl-C and resume as the Rust
path). The Rust core reads, subsamples and windows the corpus on all CPU
cores and hands out batches of examples as numpy arrays
(:class:`bidirmoe._core.BatchStream`: the same subsampling, window shrink,
negatives and schedule as the Rust models); this module moves them to the
device one batch ahead (pinned memory, non-blocking copies), computes the
model's loss with its :mod:`bidirmoe.torch.modules` module (the Rust core's
objective), and applies the update.

The update rule. A device wants batches of thousands of targets, and
word2vec's plain SGD does not survive them: summed over a batch, the steps
of a frequent word's rows are all taken from the same stale values (a
sequential SGD step sees the previous one). Measured on the bundled text8
sample, one epoch of CBOW: held-out top-1 0.98 % for the Rust core, and with
summed SGD 1.56 % at 64 targets per batch but 0.56 % at 4,096. Adagrad
(per-coordinate step sizes from the running sum of squared gradients, as
GloVe trains its vectors) keeps large batches at word2vec's quality or
better — see the README's table. Its rate follows word2vec's linear
schedule: ``torch_lr`` (per-word tables, sparse rows: only the rows a batch
touches move) and ``torch_dense_lr`` (parameters every example shares:
offset, position and mask tables, attention projections) times the
schedule's current rate over its start. The Adagrad state is kept across
epochs and ``train`` calls (not saved to files).
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional

import numpy as np
import torch

from .. import _core

if hasattr(torch.sparse, "check_sparse_tensor_invariants"):
    # Adagrad's sparse update builds COO tensors from indices torch itself
    # made; say so explicitly (torch warns when the choice is left implicit).
    torch.sparse.check_sparse_tensor_invariants.disable()

#: Most targets per batch handed from the Rust core to torch (model
#: attribute ``torch_batch_targets`` overrides); a small corpus gets smaller
#: batches, so an epoch still takes at least ``MIN_STEPS`` steps.
BATCH_TARGETS = 4096
MIN_STEPS = 256
#: Batches the Rust core may prepare ahead of the device.
PREFETCH = 4
#: Adagrad's base rate for the per-word tables (model attribute ``torch_lr``).
ROW_LR = 0.1
#: Adagrad's base rate for the shared dense parameters (model attribute ``torch_dense_lr``).
DENSE_LR = 0.02


def _device_batches(stream, device: torch.device) -> Iterator[Dict[str, object]]:
    """The stream's batches as tensors on ``device``, copied one batch ahead
    so the next copy overlaps the current batch's computation. When the
    stream raises (Ctrl-C, the progress callback), the batch already copied
    is still handed out before the exception."""
    pin = device.type == "cuda"

    def move(batch):
        # Examples in the batch, counted on the host: window targets, or a
        # sentence batch's tokens.
        if "targets" in batch:
            out = {"n_examples": int(batch["targets"].shape[0])}
        else:
            out = {"n_examples": int((batch["tokens"] >= 0).sum())}
        for k, v in batch.items():
            if isinstance(v, np.ndarray):
                t = torch.from_numpy(v)
                if pin:
                    t = t.pin_memory()
                out[k] = t.to(device, non_blocking=True)
            else:
                out[k] = v
        return out

    ahead = None
    it = iter(stream)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            break
        except BaseException:
            if ahead is not None:
                yield ahead
            raise
        nxt = move(batch)
        if ahead is not None:
            yield ahead
        ahead = nxt
    if ahead is not None:
        yield ahead


def _batch_targets(model) -> int:
    chosen = getattr(model, "torch_batch_targets", None)
    if chosen:
        return int(chosen)
    return int(min(BATCH_TARGETS, max(64, int(model.corpus_total_words) // MIN_STEPS)))


def _stream_settings(model) -> dict:
    sentence = getattr(model, "positions", "window") == "absolute"
    # Word2Vec has no `loss`: negative sampling whenever negative > 0 (with hs too, as gensim).
    negative = int(model.negative) if getattr(model, "loss", "negative") == "negative" else 0
    return {
        "kind": "sentence" if sentence else "window",
        "window": int(model.window),
        "shrink_windows": bool(model.shrink_windows),
        "negative": negative,
        "batch_targets": _batch_targets(model),
        "max_len": int(getattr(model, "max_len", 0) or 0),
        "prefetch": PREFETCH,
    }


class _Updater:
    """Adagrad on the module's parameters, two groups (per-word tables with
    sparse gradients, shared dense parameters), rates scaled by the
    schedule; ``vectors_lockf`` scales the word vectors' gradient rows (0
    leaves a row untouched, bit for bit)."""

    def __init__(self, model, module: torch.nn.Module, lockf: Optional[np.ndarray], device: torch.device,
                 alpha: float):
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        per_word = set(module.row_tables)
        rows = [p for n, p in self.params if n in per_word]
        dense = [p for n, p in self.params if n not in per_word]
        groups = [{"params": rows, "base": float(getattr(model, "torch_lr", ROW_LR))}]
        if dense:
            groups.append({"params": dense, "base": float(getattr(model, "torch_dense_lr", DENSE_LR))})
        self.opt = torch.optim.Adagrad(groups, lr=groups[0]["base"])
        self.alpha = max(float(alpha), 1e-12)
        self.lockf = None if lockf is None else torch.as_tensor(lockf, device=device)
        # Continue the model's Adagrad sums when they fit (same names and shapes).
        saved = getattr(model, "_torch_adagrad", None) or {}
        for name, p in self.params:
            s = saved.get(name)
            if s is not None and s.shape == p.shape:
                self.opt.state[p]["sum"] = s.to(device)
                self.opt.state[p]["step"] = torch.tensor(0.0)

    def state(self) -> dict:
        """The Adagrad sums by parameter name (kept on the model between epochs)."""
        return {name: self.opt.state[p]["sum"] for name, p in self.params if "sum" in self.opt.state[p]}

    @torch.no_grad()
    def step(self, lr: float) -> None:
        if self.lockf is not None:
            p = dict(self.params).get("vectors")
            if p is not None and p.grad is not None:
                g, f = p.grad, self.lockf
                if g.is_sparse:
                    g = g.coalesce()
                    idx = g.indices()[0]
                    p.grad = torch.sparse_coo_tensor(g.indices(), g.values() * f[idx % f.numel()].unsqueeze(-1), g.shape)
                else:
                    p.grad = g * f[torch.arange(g.shape[0], device=g.device) % f.numel()].unsqueeze(-1)
        for group in self.opt.param_groups:
            group["lr"] = group["base"] * lr / self.alpha
        self.opt.step()
        for _, p in self.params:
            p.grad = None


def _dist_step(model, session, module, stream, schedule: dict):
    """In a distributed run (:mod:`bidirmoe.torch.distributed`): a function
    to call after each batch with its corpus words, which averages the
    module's parameters (on the device: NCCL on CUDA, gloo on the CPU) with
    the other ranks every ``sync_words`` words. None otherwise."""
    if session is None:
        return None
    every = int(schedule["sync_words"])
    from .distributed import per_word_arrays

    named = dict(module.named_parameters())
    params = [named[name].data for name in per_word_arrays(model)]  # in the order begin_epoch saw them
    state = {"local": 0, "next": every}

    def step(raw_words: int) -> None:
        state["local"] += int(raw_words)
        if session.poll():  # the last round's sums arrived: take them in now
            session.apply_arrived(params)
        if state["local"] >= state["next"]:
            state["next"] = state["local"] + every
            sync = session.epoch_sync(params, len(model.wv.index_to_key))
            stream.set_global_words(sync(state["local"]))

    step.state = state
    return step


def train_epoch(model, source, common: dict):
    """Train one epoch of ``model`` on its torch device; returns
    ``(raw_words, effective_words, examples, loss)`` as the Rust core does.

    ``source`` is a corpus file path or a :class:`bidirmoe._core.JobQueue`;
    ``common`` the epoch's schedule (learning rates, words before, seed,
    workers, progress callback, ``vectors_lockf``, resume state). The
    model's arrays are copied to the device at the start and back when the
    epoch ends or stops; on a stop (Ctrl-C, an exception from the progress
    callback) every batch the Rust core had already prepared is still
    trained, so the resume state attached to the exception is exact.
    """
    device = torch.device(model.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(model.workers)))  # as many as the Rust core would use; restored below
    module = model.to_torch(device=device, sparse=True)
    schedule = dict(common)
    stream = _core.BatchStream(model._vocab, source, _stream_settings(model), schedule)
    update = _Updater(model, module, schedule.get("lockf"), device, schedule["alpha"])
    want_loss = bool(schedule.get("compute_loss"))
    total = torch.zeros((), dtype=torch.float64, device=device)

    def train(batch):
        if batch["n_examples"] == 0:  # only the corpus words of sentences that ended without a target
            return
        loss = module.loss(batch)
        loss.backward()
        update.step(float(batch["lr"]))
        if want_loss:
            total.add_(loss.detach().double())

    session = schedule.pop("dist_session", None)
    step = _dist_step(model, session, module, stream, schedule)

    try:
        try:
            for batch in _device_batches(stream, device):
                train(batch)
                if step is not None:
                    step(batch["raw_words"])
        except BaseException as stop:
            # Train what the workers had already handed out, so the resume
            # state (each worker's position after its last sentence) is exact.
            stream.cancel()
            for batch in _device_batches(stream, device):
                train(batch)
            raw, eff, ex, _ = stream.finish()
            try:
                stop.bidirmoe_epoch_words = raw
                stop.bidirmoe_resume = stream.resume_state()
            except AttributeError:  # pragma: no cover - exotic exception types
                pass
            raise
        raw, eff, ex, _ = stream.finish()
    finally:
        model.load_torch_state(module)
        model._torch_adagrad = update.state()
        torch.set_num_threads(threads)
    return raw, eff, ex, float(total.item()) if want_loss else 0.0
