"""Training one model in several processes (``torchrun``) through torch.distributed.

Each process (rank) trains the model on its own shard of the corpus file
with all its threads (the Rust core) or its device (the torch backend), and
every ``sync_words`` of its corpus words the ranks combine their parameters
with ``all_reduce`` (zero-copy ``torch.from_numpy`` views of the numpy
arrays and buffers; the Rust workers park only for the round's arithmetic). Model
averaging of this kind is how Intel's pWord2Vec (Ji et al. 2016) scales
word2vec past one machine.

The launcher owns the processes and the rendezvous (``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``); this module only calls ``init_process_group`` (gloo on
CPUs, NCCL when the model trains on CUDA) and collectives, each bounded by a
timeout (``BIDIRMOE_DIST_TIMEOUT`` seconds, default 120), so a rank that
dies or cannot be reached ends the job with :class:`DistributedError`
instead of a hang.

One sync round, the same on every rank so the collectives always match:
the fused Rust kernels (``rust/src/sync.rs``) put this rank's change since
the last round on a flat wire buffer, one ``all_reduce`` sums it and one
sums a small control vector (this rank's corpus words this epoch, whether
it is still reading its shard, whether it asks to stop), and a second
kernel pass folds the sum into the consensus every rank shares. With
``Session.overlap`` the all-reduces start without waiting: the workers
train on while they run and the sums are taken in when they arrive (the
other ranks' changes arrive later); the last round of each epoch, and a
stop, still wait, so every rank ends the epoch with the same parameters. A
rank that has finished its shard keeps taking part in rounds (with no
change of its own) until every rank has finished, so no rank waits for a
collective nobody else will make.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

#: Corpus words each rank trains between two parameter averages (``sync_words``'s default).
#: Chosen with ``benches/bench_distributed.py``: see the README's distributed-training section.
DEFAULT_SYNC_WORDS = 50_000
#: Seconds any collective (and the rendezvous) may take before the job is declared broken.
DEFAULT_TIMEOUT = 120.0
TIMEOUT_ENV = "BIDIRMOE_DIST_TIMEOUT"
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A distributed run cannot go on (not launched by torchrun, a rank died or cannot be reached)."""


class SyncStop(Exception):
    """Raised on every rank at the same sync round when one rank asked to stop (e.g. for a checkpoint)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0].split(". This is typically")[0] if text else type(e).__name__  # gloo's advice: not ours
    return line[:300]


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


class Session:
    """This process's place in a distributed run: its rank, the number of
    ranks, and the collectives bidirmoe needs.

    Get it with :func:`start`; :meth:`close` ends the process group if
    bidirmoe started it."""

    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device, owned: bool, pinned: bool):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device = device
        self.owned, self.pinned = owned, pinned
        self.closed = False
        #: Set to True (by any rank) to make every rank stop at the next sync round with :class:`SyncStop`.
        self.stop_requested = False
        #: Corpus words of the current epoch done by all ranks together, as of the last round.
        self.epoch_words = 0
        #: Bytes this rank sent into parameter all-reduces so far, and sync rounds done.
        self.bytes_synced = 0
        self.rounds = 0
        #: Optional (rows, every): combine only the first ``rows`` rows of the per-word
        #: tables at each round (the most frequent words: the vocabulary is sorted),
        #: and every table whole at every ``every``-th round.
        self.hot_rows: Optional[Tuple[int, int]] = None
        #: How a round combines the ranks' parameters. "mixed" (the default):
        #: the per-word tables (one row per vocabulary word) take the sum of
        #: every rank's change since the last round — a row moves as it would
        #: with threads sharing one model, each rank having trained other
        #: occurrences of the word — while the arrays every example updates
        #: (BidirMoE's gates, offsets, mask expert) take the mean of the
        #: ranks' values: each rank's change estimates the same step, and
        #: adding them would multiply that step by the number of ranks.
        #: "sum" or "mean" treat every array one way ("mean" is plain model
        #: averaging, which divides the per-word learning rate by the ranks).
        self.combine = "mixed"
        #: False (the default): every round waits for its sums (the workers
        #: stay parked meanwhile) and all ranks hold the same parameters after
        #: each round. True: a round sends this rank's changes without
        #: waiting; the workers train on while the all-reduce runs and its
        #: sums are taken in as soon as they arrive (``poll``), at the latest
        #: at the next round, so the ranks see each other's changes later;
        #: the last round of an epoch (and a stop) still waits, so every rank
        #: ends the epoch with the same parameters. It pays where the ranks
        #: have idle cores or a slow network to hide; on the 2-core machine
        #: of the benchmark it did not, and it cost analogy accuracy (README).
        self.overlap = False
        #: What the changes travel as: "float32", or "bfloat16" (half the
        #: bytes; what rounding takes off a change stays in this rank's
        #: parameters and goes out with its next change, except at the
        #: blocking last round of an epoch, which drops it).
        self.wire_dtype = "float32"
        #: Seconds this rank's workers spent parked (the sync callback's time,
        #: early applies included), and the rounds due by the word count.
        self.parked_seconds = 0.0
        self.parked_rounds = 0
        # How long a collective may wait for the backend to release its tensors
        # (see _all_reduce); NCCL's watchdog releases them on its own schedule.
        self._settle_seconds = 2.0 if dist.get_backend() == "gloo" else 0.0
        self._buffers: Optional[_Buffers] = None
        # The round in flight: (parameter all-reduce, control all-reduce, pieces sent), or None.
        self._pending: Optional[tuple] = None
        self._ctrl: Optional[torch.Tensor] = None  # the control vector: one persistent buffer
        self._ctrl_quiet: Optional[int] = None  # its reference count at rest (see _quiet)
        self._last_total: Optional[int] = None  # all ranks' words at the last round whose sums arrived
        self._last_local = 0  # this rank's words at that round
        self._sent_local = 0  # this rank's words at the round in flight
        self._arrived: Optional[List[float]] = None  # control sums of a completed round not yet used
        #: Rounds whose sums were taken in as soon as they arrived (between two rounds).
        self.early_applies = 0

    def __repr__(self) -> str:
        return f"Session(rank={self.rank}, world={self.world}, backend={dist.get_backend() if not self.closed else None})"

    # ----------------------------------------------------------- collectives

    def _collective(self, what: str, fn, *args, **kwargs):
        if self.closed:
            raise DistributedError("the distributed session is closed")
        try:
            return fn(*args, **kwargs)
        except DistributedError:
            raise
        except (RuntimeError, ValueError, OSError) as e:  # DistBackendError, DistNetworkError, timeouts
            raise DistributedError(f"rank {self.rank}/{self.world}: {what} failed (another rank stopped, died "
                                   f"or cannot be reached): {_one_line(e)}") from None

    def _tensor(self, values, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    def _all_reduce(self, what: str, t: torch.Tensor) -> None:
        """Sum ``t`` over all ranks in place, and return only once the
        backend's worker thread has let go of it.

        gloo's worker drops its reference to a finished operation (and so to
        its tensors) a moment after ``wait`` returns here, and dropping a
        reference to a tensor that has a Python object takes the GIL. Should
        that happen while the interpreter shuts down, Python ends the worker
        thread inside C++ code and the process aborts ("terminate called
        without an active exception"). So each collective waits (GIL
        released) until the tensor's reference count is back where it was:
        no backend thread ever holds one of our tensors after a collective."""
        base = sys.getrefcount(t)
        self._collective(what, dist.all_reduce, t)
        self._settle(t, base)

    def _settle(self, t: torch.Tensor, base: int) -> None:
        """Wait (GIL released) until ``t``'s reference count is back to ``base``,
        its count in the caller's frame before the collective."""
        if self._settle_seconds > 0:
            deadline = time.monotonic() + self._settle_seconds
            while sys.getrefcount(t) > base + 1 and time.monotonic() < deadline:  # + this frame's own
                time.sleep(0.0002)

    def all_sum(self, values: Sequence[float]) -> List[float]:
        """The element-wise sum of ``values`` over all ranks."""
        t = self._tensor(list(values))
        self._all_reduce("all_reduce", t)
        return [float(x) for x in t.cpu().tolist()]

    def barrier(self) -> None:
        # A tiny all_reduce instead of dist.barrier: it is bounded by the
        # group's timeout on every backend.
        self.all_sum([0.0])

    def gather_to_root(self, obj):
        """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
        out = [None] * self.world if self.rank == 0 else None
        self._collective("gather", dist.gather_object, obj, out, dst=0)
        return out

    def broadcast_from_root(self, obj):
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.rank == 0 else None]
        self._collective("broadcast", dist.broadcast_object_list, box, src=0)
        return box[0]

    def broadcast_params(self, arrays: Sequence[np.ndarray]) -> None:
        """Overwrite every rank's ``arrays`` with rank 0's (e.g. after a stop at
        which the torch backend trained batches it had already prepared)."""
        for t in self.tensors_of(arrays):
            moved = t if t.device == self.device else t.to(self.device)
            base = sys.getrefcount(moved)
            self._collective("broadcast", dist.broadcast, moved, src=0)
            self._settle(moved, base)
            if moved is not t:
                t.copy_(moved)

    # -------------------------------------------------------------- vocabulary

    def combine_counts(self, counter):
        """Add every rank's raw word counts into ``counter`` (a ``_core.VocabCounter``
        of this rank's shard) so that all ranks hold the whole corpus's counts.

        Gathered on rank 0, summed there, and the sum broadcast; every rank then
        builds its vocabulary from the same counts with the same rules, so the
        words, their order, the sampling tables and the Huffman tree are those
        of one process counting the whole corpus."""
        words, counts = counter.export_counts()
        mine = (bytes(words), np.asarray(counts, dtype=np.uint64), int(counter.total_words), int(counter.sentences))
        parts = self.gather_to_root(mine)
        if self.rank == 0:
            from .. import _core

            merged = _core.VocabCounter()
            for w, c, total, sentences in parts:
                merged.merge_counts(w, c, total, sentences)
            mw, mc = merged.export_counts()
            summed = (bytes(mw), np.asarray(mc, dtype=np.uint64), int(merged.total_words), int(merged.sentences))
        else:
            summed = None
        w, c, total, sentences = self.broadcast_from_root(summed)
        from .. import _core

        out = _core.VocabCounter()
        out.merge_counts(w, c, total, sentences)
        return out

    # ------------------------------------------------------------- averaging

    def tensors_of(self, arrays: Sequence[np.ndarray]) -> List[torch.Tensor]:
        """Zero-copy tensors over the numpy parameter arrays (on the CPU: gloo;
        NCCL reduces device tensors, see :meth:`sync_round`'s ``tensors``)."""
        return [torch.from_numpy(a) for a in arrays]

    def begin_epoch(self, tensors: Sequence[torch.Tensor], vocab: Optional[int] = None) -> None:
        """Remember the parameters every rank starts the epoch with (identical
        on all ranks) as the consensus the rounds add the ranks' changes to.

        ``vocab`` (the number of words) tells which arrays have a row per
        word; without it the layout is made at the first round."""
        if self.combine not in ("mixed", "sum", "mean"):
            raise ValueError(f"combine must be 'mixed', 'sum' or 'mean', got {self.combine!r}")
        if self._pending is not None:
            raise DistributedError("internal error: a sync round is still in flight at the start of an epoch")
        self.epoch_words = 0
        self._arrived = None
        self._last_local = 0
        self._last_total = None
        if self.wire_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"wire_dtype must be 'float32' or 'bfloat16', got {self.wire_dtype!r}")
        self._buffers = _Buffers([t.detach() for t in tensors], getattr(torch, self.wire_dtype))
        if vocab is not None:
            self._buffers.layout(vocab, self.world, self.combine, self.hot_rows)

    def _buffers_for(self, tensors: Sequence[torch.Tensor], vocab: int) -> "_Buffers":
        b = self._buffers
        if b is None or len(b.consensus) != len(tensors):
            raise DistributedError("internal error: begin_epoch() was not called with these parameters")
        if b.pieces is None:
            b.layout(vocab, self.world, self.combine, self.hot_rows)
        return b

    def _start(self, what: str, t: torch.Tensor):
        """Start an all-reduce of ``t`` (a persistent buffer) without waiting."""
        return self._collective(what, dist.all_reduce, t, async_op=True)

    def _arrive(self) -> None:
        """Wait for the round in flight; its sums are then on the wire."""
        pending, self._pending = self._pending, None
        if pending is not None:
            data, ctrl, sent = pending
            self._collective("parameter all_reduce", data.wait)
            self._collective("all_reduce", ctrl.wait)
            self._buffers.arrived(sent)
            self._arrived = [float(x) for x in self._ctrl.tolist()]

    def _wait(self) -> Optional[List[float]]:
        """The control sums of the last round started (waiting for it if need
        be), or None when they were already taken (or no round was started)."""
        self._arrive()
        got, self._arrived = self._arrived, None
        return got

    def poll(self) -> bool:
        """True when the round in flight has completed: its sums can be taken
        in now (:meth:`apply_arrived`) rather than at the next round."""
        p = self._pending
        return p is not None and p[0].is_completed() and p[1].is_completed()

    def apply_arrived(self, tensors: Sequence[torch.Tensor]) -> None:
        """Fold the sums of the completed round into the parameters now (the
        caller has the workers parked), which shortens the other ranks'
        changes' delay from a round to the all-reduce's time; this rank's
        changes since then stay pending for the next round."""
        if self._pending is None:
            return
        self._arrive()
        self._buffers.exchange(tensors, False, send=False)
        self.early_applies += 1

    def _ctrl_values(self, local_words: int, running: bool) -> None:
        if self._ctrl is None:
            self._ctrl = torch.zeros(3, dtype=torch.float64, device=self.device)
        self._ctrl.copy_(self._tensor([float(local_words), 1.0 if running else 0.0,
                                       1.0 if self.stop_requested else 0.0]))

    def _round_async(self, local_words: int, tensors: Sequence[torch.Tensor], vocab: int, running: bool) -> None:
        """Fold the last round's sums in, send this round's changes, and
        return at once: the sums arrive while the workers train on."""
        b = self._buffers_for(tensors, vocab)
        hot_only = False
        if self.hot_rows is not None:
            hot_only = (self.rounds + 1) % max(self.hot_rows[1], 1) != 0  # the same decision on every rank
        sent = b.exchange(tensors, hot_only)
        self._ctrl_values(local_words, running)
        self._note_quiet()
        wire = b.wire_to_send(hot_only)
        if wire.device != self.device:  # numpy arrays with NCCL: through the device, blocking
            self._reduce(wire)
            data = _Done()
        else:
            data = self._start("parameter all_reduce", wire)
            self.bytes_synced += wire.numel() * wire.element_size()
        ctrl = self._start("all_reduce", self._ctrl)
        self._pending = (data, ctrl, sent)
        self.rounds += 1

    def _round_blocking(self, local_words: int, tensors: Sequence[torch.Tensor], vocab: int, running: bool
                        ) -> List[float]:
        """Send every change still held back and wait for the sums: afterwards
        every rank holds the same parameters, bit for bit. Returns the control sums."""
        self._wait()
        b = self._buffers_for(tensors, vocab)
        b.exchange(tensors, False)
        self._ctrl_values(local_words, running)
        self._note_quiet()
        wire = b.wire_to_send(False)
        self._reduce(wire)
        self._all_reduce("all_reduce", self._ctrl)
        b.adopt(tensors)
        self.rounds += 1
        ctrl = [float(x) for x in self._ctrl.tolist()]
        self.epoch_words = int(ctrl[0])
        self._last_total, self._last_local = int(ctrl[0]), int(local_words)
        return ctrl

    def _reduce(self, part: torch.Tensor) -> None:
        if part.device != self.device:  # e.g. numpy arrays on the CPU with NCCL: through the device
            moved = part.to(self.device)
            self._all_reduce("parameter all_reduce", moved)
            part.copy_(moved)
        else:
            self._all_reduce("parameter all_reduce", part)
        self.bytes_synced += part.numel() * part.element_size()

    def sync_round(self, local_words: int, tensors: Sequence[torch.Tensor], vocab: int, running: bool = True
                   ) -> Tuple[int, bool, bool]:
        """One round while this rank trains. Without :attr:`overlap`: send
        this rank's changes and word count, wait for the sums and take them
        in (every rank then holds the same parameters). With it: take in the
        sums of the round before if they were not taken in yet, send this
        round's changes and counts without waiting for them (the other ranks'
        changes thus arrive late: delayed averaging); a stop request seen in
        the round before's counts makes this a blocking round instead, so
        every rank stops here with the same parameters.

        Returns (the epoch's corpus words over all ranks — exact after a
        blocking round, else the last round's sum plus this rank's words since
        then times the number of ranks —, whether every rank has finished its
        shard, whether a rank asked to stop)."""
        before = self._wait()
        if not self.overlap or (before is not None and before[2] > 0):
            ctrl = self._round_blocking(local_words, tensors, vocab, running)
            return int(ctrl[0]), ctrl[1] == 0, ctrl[2] > 0
        if before is not None:
            self._last_total, self._last_local = int(before[0]), self._sent_local
        self._round_async(local_words, tensors, vocab, running)
        self._sent_local = int(local_words)
        total = self.epoch_words = self._estimate(int(local_words))
        return total, bool(before is not None and before[1] == 0), False

    def _estimate(self, local_words: int) -> int:
        """All ranks' words this epoch: the last known sum plus this rank's
        words since, times the number of ranks."""
        if self._last_total is None:
            return self.world * local_words
        return self._last_total + self.world * (local_words - self._last_local)

    def epoch_sync(self, tensors: Sequence[torch.Tensor], vocab: int):
        """The ``sync(local_words) -> global_words`` callback of one epoch:
        raises :class:`SyncStop` on every rank when one asked to stop."""
        def sync(local_words: int, round_due: bool = True) -> int:
            t0 = time.perf_counter()
            try:
                if not round_due:  # parked because the sums arrived (poll)
                    self.apply_arrived(tensors)
                    return self._estimate(int(local_words))
                total, _, stop = self.sync_round(int(local_words), tensors, vocab, running=True)
            finally:
                self.parked_seconds += time.perf_counter() - t0
                self.parked_rounds += bool(round_due)
            if stop:
                self.stop_requested = False
                raise SyncStop()
            return total
        return sync

    def finish_epoch(self, local_words: int, tensors: Sequence[torch.Tensor], vocab: int) -> Tuple[int, bool]:
        """After this rank's shard is done: take part in rounds until every rank
        is done, then one blocking round, so all ranks end the epoch with the
        same parameters. Returns (the epoch's words over all ranks, whether a
        rank asked to stop meanwhile)."""
        while True:
            if not self.overlap:
                ctrl = self._round_blocking(int(local_words), tensors, vocab, running=False)
                if ctrl[2] > 0:
                    self.stop_requested = False
                if ctrl[2] > 0 or ctrl[1] == 0:
                    return int(ctrl[0]), ctrl[2] > 0
                continue
            if self._pending is None and self._arrived is None:
                self._round_async(int(local_words), tensors, vocab, running=False)
                self._sent_local = int(local_words)
            before = self._wait()
            if before[2] > 0 or before[1] == 0:
                ctrl = self._round_blocking(int(local_words), tensors, vocab, running=False)
                stop = before[2] > 0 or ctrl[2] > 0
                if stop:
                    self.stop_requested = False
                return int(ctrl[0]), stop

    # ---------------------------------------------------------------- the end

    def _drain(self) -> None:
        """Wait for a round still in flight (training stopped between two
        rounds, e.g. on an error) and for gloo to let go of the buffers."""
        if self._pending is not None:
            try:
                self._wait()
            except DistributedError:  # a rank died: the round never completes
                self._pending = None
        self._quiet()

    def _quiet(self) -> None:
        """Wait (GIL released) until the backend holds no reference to the
        persistent buffers the asynchronous rounds sum (see _all_reduce for
        why): each is referenced from its one attribute only, so
        ``sys.getrefcount`` is 2 (with its own argument) once gloo is done."""
        if self._settle_seconds <= 0:
            return
        deadline = time.monotonic() + self._settle_seconds
        while time.monotonic() < deadline and self._busy_refs():
            time.sleep(0.0002)

    def _busy_refs(self) -> bool:
        """Whether a persistent buffer has more references than before its
        first collective (a view or numpy view of a tensor adds one of its
        own; the backend holding it adds one more)."""
        b = self._buffers
        if self._ctrl is not None and self._ctrl_quiet is not None and sys.getrefcount(self._ctrl) > self._ctrl_quiet:
            return True
        return (b is not None and b.quiet is not None
                and (sys.getrefcount(b.wire) > b.quiet[0] or sys.getrefcount(b.wire_hot) > b.quiet[1]))

    def _note_quiet(self) -> None:
        """Before the first collective on the persistent buffers: their reference counts at rest."""
        b = self._buffers
        if b is not None and b.quiet is None:
            b.quiet = (sys.getrefcount(b.wire), sys.getrefcount(b.wire_hot))
        if self._ctrl_quiet is None:
            self._ctrl_quiet = sys.getrefcount(self._ctrl)

    def close(self, force: bool = False) -> None:
        """End the process group if bidirmoe started it; a pinned session only with ``force``.

        Call it after every collective has completed (never from ``atexit``:
        gloo's threads must not outlive the interpreter's shutdown)."""
        global _SESSION
        if self.closed:
            return
        self._drain()
        if self.pinned and not force:
            return
        if self.owned and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except (RuntimeError, ValueError):  # pragma: no cover - a broken group is gone anyway
                pass
        self.closed = True
        if _SESSION is self:
            _SESSION = None
        _CLOSED.append(self.owned)


class _Done:
    """A collective that already completed (stands in for an async handle)."""

    def wait(self) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


class _Buffers:
    """The sync buffers of one epoch's parameter arrays (see ``rust/src/sync.rs``):
    per array the consensus (the parameters all ranks agree on) and this
    rank's change in flight, and one flat wire buffer every round's
    all-reduce sums in place, so a round is one collective.

    Each array is one piece, or two with ``hot_rows`` (its first rows, the
    most frequent words, and the rest); the wire holds the always-sent
    pieces first, so a round that sends only those sends a prefix of it."""

    #: The fused Rust kernels on CPU float32 arrays (False: the torch ops
    #: every other device takes, e.g. to compare the two).
    use_kernels = True

    def __init__(self, tensors: Sequence[torch.Tensor], wire_dtype: torch.dtype = torch.float32):
        self.wire_dtype = wire_dtype
        self.consensus = [t.clone() for t in tensors]
        self.own = [torch.zeros_like(t) for t in tensors]
        self.pieces: Optional[list] = None  # [array, first row, end row, scale, always sent, wire offset]
        self.wire: Optional[torch.Tensor] = None
        self.wire_hot: Optional[torch.Tensor] = None  # its always-sent prefix (a persistent view)
        self.hot_size = 0
        self.in_flight: List[bool] = []
        self._numpy: Optional[list] = None

    def layout(self, vocab: int, world: int, combine: str, hot_rows) -> None:
        pieces = []
        for i, t in enumerate(self.consensus):
            per_word = vocab in t.shape  # a row (or column: BidirMoE's salience) per word
            scale = 1.0 / world if combine == "mean" or (combine == "mixed" and not per_word) else 1.0
            rows = t.shape[0] if t.dim() else 1
            if hot_rows is not None and t.dim() >= 1 and rows == vocab and hot_rows[0] < vocab:
                hot = max(int(hot_rows[0]), 0)
                pieces += [[i, 0, hot, scale, True], [i, hot, rows, scale, False]]
            else:
                pieces.append([i, 0, rows, scale, True])
        pieces.sort(key=lambda p: not p[4])  # stable: always-sent pieces first
        offset = 0
        for p in pieces:
            p.append(offset)
            offset += self._rows(self.consensus[p[0]], p[1], p[2]).numel()
            if p[4]:
                self.hot_size = offset
        first = self.consensus[0]
        self.pieces = pieces
        self._set_wire(torch.zeros(offset, dtype=self.wire_dtype, device=first.device))
        self.in_flight = [False] * len(pieces)
        self._numpy = None

    def _set_wire(self, wire: torch.Tensor) -> None:
        # The collectives only ever see these two tensor objects (see Session._quiet).
        self.wire, self.wire_hot = wire, wire[:self.hot_size]
        self._numpy = None
        self.quiet: Optional[Tuple[int, int]] = None  # their reference counts at rest (Session._quiet)

    @staticmethod
    def _rows(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
        return (t[a:b] if t.dim() else t).reshape(-1)

    def _views(self, i: int, piece, tensors):
        """(param, consensus, own, wire) of one piece, as flat views."""
        arr, a, b, _, _, off = piece
        p = self._rows(tensors[arr], a, b)
        c = self._rows(self.consensus[arr], a, b)
        o = self._rows(self.own[arr], a, b)
        return p, c, o, self.wire[off:off + p.numel()]

    def _move_to(self, device: torch.device) -> None:
        if self.wire.device != device:  # the torch engine trains on its device, the epoch ends on numpy arrays
            self.consensus = [t.to(device) for t in self.consensus]
            self.own = [t.to(device) for t in self.own]
            self._set_wire(self.wire.to(device))

    def _cpu_views(self):
        """numpy views of the buffers' pieces, for the fused Rust kernels
        (a bfloat16 wire as its bits: numpy has no bfloat16)."""
        if self._numpy is None:
            self._numpy = []
            for i, p in enumerate(self.pieces):
                _, c, o, w = self._views(i, p, self.consensus)
                w = w.view(torch.int16).numpy().view(np.uint16) if w.dtype == torch.bfloat16 else w.numpy()
                self._numpy.append((c.numpy(), o.numpy(), w))
        return self._numpy

    def _apply(self, tensors, fn_rust, fn_torch, skip=None) -> None:
        self._move_to(tensors[0].device)
        fast = self.use_kernels and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
                                        for t in tensors)
        cpu = self._cpu_views() if fast else None
        for i, piece in enumerate(self.pieces):
            if skip is not None and skip[i]:
                continue
            p, c, o, w = self._views(i, piece, tensors)
            if fast:
                fn_rust(i, piece, p.numpy(), *cpu[i])
            else:
                fn_torch(i, piece, p, c, o, w)

    def exchange(self, tensors, hot_only: bool, send: bool = True) -> List[bool]:
        """One round's arithmetic on every piece (``send=False``: only take in
        the sums on the wire); returns which pieces are now in flight."""
        from .. import _core

        sent = [send and (piece[4] or not hot_only) for piece in self.pieces]

        def rust(i, piece, p, c, o, w):
            _core.sync_exchange(p, c, o, w, piece[3], self.in_flight[i], sent[i])

        def fallback(i, piece, p, c, o, w):  # device tensors: the same arithmetic in torch
            new = p - c - o
            if self.in_flight[i]:
                c.add_(w.float(), alpha=piece[3])
            p.copy_(c).add_(new)
            if sent[i]:
                w.copy_(new)  # rounded to the wire's type
                o.copy_(w)
            else:
                o.zero_()

        # A piece neither in flight nor sent has nothing to do (its own part is 0).
        idle = [not (f or s) for f, s in zip(self.in_flight, sent)]
        self._apply(tensors, rust, fallback, idle)
        self.in_flight = [False] * len(self.pieces)
        return sent

    def arrived(self, sent: List[bool]) -> None:
        """The sums of the pieces ``sent`` are on the wire."""
        self.in_flight = list(sent)

    def adopt(self, tensors) -> None:
        """After a blocking round: every parameter becomes the new consensus."""
        from .. import _core

        def rust(i, piece, p, c, o, w):
            _core.sync_adopt(p, c, o, w, piece[3])

        def fallback(i, piece, p, c, o, w):
            c.add_(w.float(), alpha=piece[3])
            p.copy_(c)
            o.zero_()

        self._apply(tensors, rust, fallback)
        self.in_flight = [False] * len(self.pieces)

    def wire_to_send(self, hot_only: bool) -> torch.Tensor:
        return self.wire_hot if hot_only else self.wire


_SESSION: Optional[Session] = None
_LAST: Optional[Session] = None
_CLOSED: List[bool] = []


def current() -> Optional[Session]:
    """The open session, if any."""
    return _SESSION


def last_session() -> Optional[Session]:
    """The most recent session, open or closed (its sync counters stay readable)."""
    return _LAST


def start(device=None, pin: bool = False) -> Session:
    """This process's :class:`Session`, joining the process group on the first call.

    Reads the torchrun environment; uses the process group the program
    already set up if there is one (bidirmoe then never ends it). Otherwise
    it starts one — NCCL when ``device`` is a CUDA device, else gloo — with
    a bounded timeout. ``pin=True`` keeps the session open until
    :meth:`Session.close` is called with ``pin`` released (the command line
    does this; models close a session they started when ``train`` ends).
    """
    global _SESSION, _LAST
    dev = torch.device("cpu" if device is None else device)
    if _SESSION is not None:
        if pin:
            _SESSION.pinned = True
        return _SESSION
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        _SESSION = _LAST = Session(rank, world, local, _comm_device(dev, local), owned=False, pinned=pin)
        return _SESSION
    if any(_CLOSED):
        raise DistributedError("the process group bidirmoe started was closed when train() finished; to train more "
                               "than once in one process, call torch.distributed.init_process_group() yourself first")
    missing = [k for k in _ENV if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"distributed training needs the torchrun environment ({', '.join(missing)} not set): "
                               "launch with e.g. torchrun --standalone --nproc_per_node 2 ...")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    seconds = _timeout()
    backend = "gloo"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError(f"device={str(dev)!r}: torch sees no CUDA GPU on this machine")
        torch.cuda.set_device(dev.index if dev.index is not None else local % torch.cuda.device_count())
        backend = "nccl"
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    with _native_stderr() as replay:
        try:
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=seconds))
        except (RuntimeError, ValueError, OSError, TimeoutError) as e:
            # torch's C++ side has logged each retry on stderr: the line below says it all.
            raise DistributedError(f"rank {rank}/{world} cannot reach the rendezvous at {where} within "
                                   f"{seconds:g}s ({TIMEOUT_ENV}): {_one_line(e)}") from None
        replay()
    _SESSION = _LAST = Session(rank, world, local, _comm_device(dev, local), owned=True, pinned=pin)
    return _SESSION


@contextlib.contextmanager
def _native_stderr():
    """Hold what native code writes on file descriptor 2 meanwhile; the block
    calls the yielded function to pass it on (an error leaves it out)."""
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to hold
        yield lambda: None
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        restored = []

        def restore():
            if not restored:
                os.dup2(saved, 2)
                os.close(saved)
                restored.append(True)

        def replay():
            restore()
            held.seek(0)
            data = held.read()
            if data:
                os.write(2, data)

        try:
            yield replay
        finally:
            restore()


def _comm_device(dev: torch.device, local: int) -> torch.device:
    if dev.type == "cuda":
        return torch.device("cuda", dev.index if dev.index is not None else local % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def rank_seed(seed: int, rank: int) -> int:
    """The training seed of ``rank``: the model's parameters start alike on every
    rank (the model seed), but each rank draws its own subsampling, windows and
    negatives."""
    return (int(seed) ^ (0x9E3779B97F4A7C15 * (rank + 1))) & 0xFFFFFFFFFFFFFFFF


def per_word_arrays(model) -> Dict[str, np.ndarray]:
    """The model's float32 parameter arrays by name (``vectors`` first), as averaged at a sync."""
    out = {"vectors": model.wv.vectors}
    for name in model._array_names:
        arr = getattr(model, name, None)
        if isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.size:
            out[name] = arr
    return out
