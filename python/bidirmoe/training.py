"""What every bidirmoe model shares: parameter checks, vocabulary building,
the epoch loop (threads in Rust, a producer thread for Python iterables),
learning-rate schedule, progress reporting, callbacks, Ctrl-C, and the
native save format.

A model class subclasses :class:`TrainableModel` and provides
``_init_params()``, ``_train_one_epoch(source, **schedule)`` and the names of
its arrays; everything else lives here.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .corpora import RankPieces, as_pieces, check_corpus, corpus_source, count_in_order

logger = logging.getLogger("bidirmoe")

#: What a distributed run's parameter changes may travel as (``sync_dtype``).
SYNC_DTYPES = ("float32", "bfloat16")

FORMAT_VERSION = 1

RULE_DEFAULT, RULE_DISCARD, RULE_KEEP = 0, 1, 2  # gensim.utils trim-rule values

# Rough bytes per vocabulary word for estimate_memory: the word in Python
# (str, list slot, dict entry) and in Rust (word, index and token-table
# entries, count, subsampling threshold, alias-table slot); the Huffman code
# and path add about as much again per word with hs.
_VOCAB_BYTES_PER_WORD, _HUFFMAN_BYTES_PER_WORD = 350, 150


BACKENDS = ("rust", "torch")

#: Most bytes of vocabulary ids that ``train(corpus_file=...)`` keeps between
#: epochs (4 bytes per in-vocabulary word plus 24 per line or 10,000-word
#: chunk) so that later epochs skip reading and looking up the words of a
#: plain-text file again. A corpus whose ids do not fit is partly cached and
#: the rest read every epoch; 0 turns the cache off. Gzip files are always
#: read. The cache lives for one ``train()`` call.
ID_CACHE_BYTES = 512 << 20


def resolve_backend(device, backend) -> Tuple[str, str]:
    """Check a model's ``device`` / ``backend`` pair and return it normalised.

    ``backend`` defaults to "rust" on "cpu" and to "torch" on any other
    device. torch is imported only when the torch backend is asked for: a
    missing torch is an ``ImportError`` saying what to install, a device torch
    cannot reach (a CUDA GPU on a machine without one) a ``RuntimeError``
    naming it.

    Examples
    --------
    >>> resolve_backend(None, None)
    ('cpu', 'rust')
    """
    device = "cpu" if device is None else str(device)
    if backend is None:
        backend = "rust" if device == "cpu" else "torch"
    _check(backend in BACKENDS, f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "rust":
        _check(device == "cpu", f"the Rust backend runs on the CPU; device={device!r} needs backend='torch' (or leave backend unset)")
        return device, backend
    try:
        import torch
    except ImportError:
        raise ImportError(f"backend='torch' (device={device!r}) needs PyTorch: pip install \"bidirmoe[torch]\"") from None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a torch device string ('cpu', 'cuda', 'cuda:1', ...): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r}: torch sees no CUDA GPU on this machine "
                               f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RuntimeError(f"device={device!r}: the MPS backend is not available on this machine")
    return device, backend


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


#: Default ``hot_rows`` of CBOW and skip-gram (Rust backend, 2 or more
#: workers; BidirMoE's default is 0, see its docstring): each worker trains on private copies of the input and
#: negative-sampling output rows of this many most frequent words and merges
#: them into the shared arrays (adding what it learned since its last merge)
#: every ``HOT_EVERY`` trained examples, before every distributed sync and
#: at the end of its share of an epoch. Those rows are the ones every worker
#: writes all the time, and sharing them cost the 2-worker speed-up (see
#: docs/speed.md, ninth round). 0 turns it off (plain Hogwild); one worker always
#: trains the shared arrays.
HOT_ROWS = 256
#: Trained examples (CBOW/BidirMoE targets, skip-gram pairs) between a
#: worker's merges of its private rows; checked after each sentence.
HOT_EVERY = 4096


def gensim_init(seed, rows: int, cols: int, vector_size: int) -> np.ndarray:
    """gensim 4's initial vectors (``KeyedVectors.resize_vectors``): uniform in
    [-1, 1) / vector_size, drawn by ``numpy.random.default_rng(seed)`` for all
    rows at once, in float32 and in gensim's order of operations, so the same
    seed and shape give gensim's values bit for bit."""
    v = np.random.default_rng(seed).random((rows, cols), dtype=np.float32)
    v *= 2.0
    v -= 1.0
    v /= vector_size
    return v


def _check_hot_rows(h) -> None:
    _check(h is None or (_is_int(h) and h >= 0), f"hot_rows must be None or an int >= 0, got {h!r}")


def _hot_rows_of(model) -> int:
    """The ``hot_rows`` a model trains with (None or absent: its class's default)."""
    h = getattr(model, "hot_rows", None)
    return int(getattr(model, "_hot_rows_default", HOT_ROWS) if h is None else h)


def grow_rows(arr: Optional[np.ndarray], rows: int, axis: int = 0, fill: Optional[np.ndarray] = None
              ) -> Optional[np.ndarray]:
    """``arr`` extended along ``axis`` to ``rows`` entries with ``fill`` (default zeros); None stays None."""
    if arr is None or arr.shape[axis] >= rows:
        return arr
    if fill is None:
        shape = list(arr.shape)
        shape[axis] = rows - arr.shape[axis]
        fill = np.zeros(shape, dtype=arr.dtype)
    return np.ascontiguousarray(np.concatenate([arr, fill.astype(arr.dtype, copy=False)], axis=axis))


def _tree_signature(tree, tags: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per inner node of a Huffman tree (codes, points): a hash of the words
    below it and a hash of those on its 0 side (sums of random per-word tags)."""
    codes, points = tree  # per word: code bits (bytes or ints) and inner-node ids
    lens = np.fromiter((len(p) for p in points), dtype=np.int64, count=len(points))
    words = np.repeat(np.arange(len(points)), lens)
    nodes = np.fromiter(itertools.chain.from_iterable(points), dtype=np.int64, count=len(words))
    bits = np.fromiter(itertools.chain.from_iterable(codes), dtype=np.uint8, count=len(words))
    inner = max(len(points) - 1, 0)
    below, zero_side = np.zeros(inner, dtype=np.uint64), np.zeros(inner, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(below, nodes, tags[words])
        np.add.at(zero_side, nodes[bits == 0], tags[words[bits == 0]])
    return below, zero_side


def carry_tree_weights(old_tree, old_weights: np.ndarray, new_tree, rows: int) -> Tuple[np.ndarray, int]:
    """Hierarchical-softmax output weights moved from one Huffman tree to another over the same words.

    Word i of the old tree is word i of the new one (the new tree may have
    more words). An inner node is known by the words below it and how it
    splits them between its children: a new node that splits the same words
    the same way as an old node takes that node's weights, negated when the
    children are swapped (the code bits flip, and p(bit) = σ(±u·h)). Other
    new nodes start at zero. Returns the weights (``rows`` rows) and the
    number of inner nodes carried over.
    """
    out = np.zeros((rows, old_weights.shape[1]), dtype=np.float32)
    n_words = max(len(old_tree[1]), len(new_tree[1]))
    tags = np.random.default_rng(0x9E3779B97F4A7C15).integers(0, 2 ** 64 - 1, size=n_words, dtype=np.uint64,
                                                               endpoint=True)
    old_below, old_zero = _tree_signature(old_tree, tags)
    new_below, new_zero = _tree_signature(new_tree, tags)
    if len(old_below) == 0 or len(new_below) == 0:
        return out, 0
    order = np.argsort(old_below, kind="stable")
    pos = np.minimum(np.searchsorted(old_below[order], new_below), len(order) - 1)
    match = order[pos]
    hit = old_below[match] == new_below
    with np.errstate(over="ignore"):
        same = hit & (old_zero[match] == new_zero)
        swapped = hit & ~same & (old_zero[match] == new_below - new_zero)
    k = np.flatnonzero(same)
    out[k] = old_weights[match[k]]
    k = np.flatnonzero(swapped)
    out[k] = -old_weights[match[k]]
    return out, int(same.sum() + swapped.sum())


def atomic_write(path: str, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync, then
    rename over ``path``: readers see the old file or the complete new one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's files are private; a saved model is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _Reporter:
    """gensim-style progress log lines, an optional tqdm bar and an optional
    ``progress_callback(info)`` (the command line's progress display)."""

    def __init__(self, total_words: int, epoch: int, epochs: int, report_delay: float, bar, hook=None, schedule=None,
                 latch=None):
        self.total = max(total_words, 1)
        self.latch = latch  # a single process's Ctrl-C latch: the engine stops here, at an exact position
        self.epoch, self.epochs = epoch, epochs
        self.report_delay = report_delay
        self.bar = bar
        self.start = time.perf_counter()
        self.last_log = self.start
        self.last_raw = 0
        self.hook, self.schedule = hook, schedule

    def __call__(self, raw: int, effective: int, loss: float, final: bool = False) -> None:
        now = time.perf_counter()
        if self.latch is not None and self.latch.interrupted and not final:
            raise KeyboardInterrupt("interrupted; model.last_stop resumes the run")
        if self.hook is not None and not final:  # the hook may stop training: only while it runs
            s = self.schedule
            done = s["words_before"] + raw
            frac = min(done / max(s["total_words"], 1), 1.0)
            self.hook({"epoch": self.epoch, "epochs": self.epochs, "epoch_words": raw, "words_done": done,
                       "schedule_words": s["total_words"], "seconds": now - self.start,
                       "words_per_sec": raw / max(now - self.start, 1e-9),
                       "lr": max(s["alpha"] - (s["alpha"] - s["min_alpha"]) * frac, s["min_alpha"]), "loss": loss})
        if self.bar is not None:
            self.bar.update(raw - self.last_raw)
        self.last_raw = raw
        if now - self.last_log >= self.report_delay and logger.isEnabledFor(logging.INFO):
            self.last_log = now
            elapsed = max(now - self.start, 1e-9)
            logger.info(
                "EPOCH %d/%d - PROGRESS: at %.2f%% words, %.0f words/s, %.0f effective words/s",
                self.epoch + 1, self.epochs, 100.0 * raw / self.total, raw / elapsed, effective / elapsed,
            )


class InterruptLatch:
    """A SIGINT/SIGTERM handler that makes training stop where its state is
    consistent instead of wherever the signal lands.

    The first signal is recorded (:attr:`interrupted`); in a distributed run
    it also asks every rank to stop at the next sync round. The code that
    trains looks at the latch at its stop points. torchrun passes a Ctrl-C
    on to every rank, so another signal within ``grace`` seconds
    (:attr:`GRACE` unless given) counts as the same one; a later one raises
    ``KeyboardInterrupt`` at once (no consistent state). While not
    :attr:`armed` (e.g. before training starts) a signal raises at once, as
    Python's own handler does."""

    #: Seconds after the first signal during which another counts as the same.
    GRACE = 5.0

    def __init__(self, session=None, armed: bool = True, grace: Optional[float] = None):
        self.session = session
        self.armed = armed
        self.grace = self.GRACE if grace is None else float(grace)
        self.first: Optional[float] = None

    @property
    def interrupted(self) -> bool:
        return self.first is not None

    def __call__(self, signum, frame):
        now = time.monotonic()
        if not self.armed or (self.first is not None and now - self.first > self.grace):
            raise KeyboardInterrupt
        if self.first is None:
            self.first = now
            if self.session is not None:
                self.session.stop_requested = True


class TrainableModel:
    """Base of the word2vec-style models: vocabulary, training loop, save/load."""

    #: Names of numpy arrays saved with the model (besides ``wv.vectors``).
    _array_names: Tuple[str, ...] = ()
    #: Constructor parameters saved with the model and restored by ``load``.
    _param_names: Tuple[str, ...] = ()

    # ------------------------------------------------------------------ checks

    def _validate_common(self) -> None:
        _check(_is_int(self.vector_size) and self.vector_size > 0, f"vector_size must be a positive int, got {self.vector_size!r}")
        _check(_is_int(self.window) and self.window > 0, f"window must be a positive int, got {self.window!r}")
        _check(_is_int(self.min_count) and self.min_count >= 0, f"min_count must be an int >= 0, got {self.min_count!r}")
        _check(_is_int(self.epochs) and self.epochs >= 0, f"epochs must be an int >= 0, got {self.epochs!r}")
        _check(_is_int(self.workers) and self.workers >= 1, f"workers must be an int >= 1, got {self.workers!r}")
        _check(_is_int(self.negative) and self.negative >= 0, f"negative must be an int >= 0, got {self.negative!r}")
        _check(self.hs in (0, 1, True, False), f"hs must be 0 or 1, got {self.hs!r}")
        _check(self._has_objective(), "negative=0 and hs=0 leave no training objective: set negative > 0 or hs=1")
        for name in ("alpha", "min_alpha", "sample", "ns_exponent"):
            v = getattr(self, name)
            _check(isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and math.isfinite(v),
                   f"{name} must be a finite number, got {v!r}")
        _check(self.alpha > 0, f"alpha must be > 0, got {self.alpha!r}")
        _check(self.min_alpha >= 0, f"min_alpha must be >= 0, got {self.min_alpha!r}")
        _check(self.sample >= 0, f"sample must be >= 0, got {self.sample!r}")
        _check(self.max_vocab_size is None or (_is_int(self.max_vocab_size) and self.max_vocab_size > 0),
               f"max_vocab_size must be a positive int or None, got {self.max_vocab_size!r}")
        _check(self.max_final_vocab is None or (_is_int(self.max_final_vocab) and self.max_final_vocab > 0),
               f"max_final_vocab must be a positive int or None, got {self.max_final_vocab!r}")
        _check(_is_int(self.seed), f"seed must be an int, got {self.seed!r}")
        _check(_is_int(self.batch_words) and self.batch_words > 0, f"batch_words must be a positive int, got {self.batch_words!r}")

    def _has_objective(self) -> bool:
        return self.negative > 0 or bool(self.hs)

    # --------------------------------------------------------------- vocabulary

    def build_vocab(self, corpus_iterable=None, corpus_file=None, update: bool = False, progress_per: int = 10000,
                    keep_raw_vocab: bool = False, trim_rule=None, **kwargs):
        """Scan the corpus once, count words and build the vocabulary (or grow it).

        The same three steps as gensim: :meth:`scan_vocab` counts the words,
        :meth:`prepare_vocab` keeps those passing ``min_count`` /
        ``max_final_vocab`` / ``trim_rule`` and builds the sampling tables
        (and the Huffman tree with ``hs``), and the parameters are set up
        (:meth:`prepare_weights`).

        Parameters
        ----------
        corpus_iterable : iterable of list of str, optional
            Restartable iterable of sentences (see :class:`bidirmoe.LineSentence`).
        corpus_file : str or list of str, optional
            Plain or gzip text file (or a list of them, read one after
            another), read by the Rust core.
        update : bool
            Grow the existing vocabulary instead of replacing it. Known words
            keep their index and trained vectors, and their counts grow by
            this corpus's counts; words new to the model that reach
            ``min_count`` in this corpus are appended (most frequent first)
            with freshly initialised vectors (zero output weights). The
            negative-sampling and subsampling tables and the Huffman tree are
            rebuilt from the summed counts. ``corpus_count`` and
            ``corpus_total_words`` describe this corpus, ready for ``train``.
        progress_per : int
            Accepted for gensim compatibility (counting runs in Rust).
        keep_raw_vocab : bool
            Keep the raw counts (:attr:`raw_vocab`) after the vocabulary is built.
        trim_rule : callable, optional
            gensim's ``trim_rule(word, count, min_count)`` returning
            ``RULE_DISCARD``, ``RULE_KEEP`` or ``RULE_DEFAULT``.
        **kwargs
            ``min_count``, ``sample``, ``dry_run``: passed to :meth:`prepare_vocab`.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec(vector_size=8, min_count=1)
        >>> m.build_vocab([["a", "b", "a"]])
        >>> m.wv.index_to_key
        ['a', 'b']
        >>> m.build_vocab([["c", "a"]], update=True)
        >>> m.wv.index_to_key, [int(c) for c in m.wv.expandos["count"]]
        (['a', 'b', 'c'], [3, 1, 1])
        """
        if "sentences" in kwargs:
            corpus_iterable = kwargs.pop("sentences")
        unknown = set(kwargs) - {"min_count", "sample", "dry_run"}
        if unknown:
            raise TypeError(f"build_vocab() got unexpected keyword arguments: {sorted(unknown)}")
        if update:
            self._check_can_update()
        total_words, sentences = self.scan_vocab(corpus_iterable, corpus_file, progress_per=progress_per,
                                                 trim_rule=trim_rule)
        self.corpus_count, self.corpus_total_words = sentences, total_words
        self.prepare_vocab(update=update, keep_raw_vocab=keep_raw_vocab, trim_rule=trim_rule, **kwargs)

    def build_vocab_from_freq(self, word_freq, keep_raw_vocab: bool = False, corpus_count=None, trim_rule=None,
                              update: bool = False):
        """Build (or, with ``update=True``, grow) the vocabulary from a ``{word: count}`` mapping.

        As gensim's: the counts stand in for a scanned corpus. ``corpus_count``
        sets the number of sentences (default 0); ``corpus_total_words`` is
        set to the sum of the counts, so ``train(..., total_words=...)`` or
        ``total_examples`` have a schedule to work from.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec(vector_size=8, min_count=2)
        >>> m.build_vocab_from_freq({"the": 10, "cat": 3, "rare": 1})
        >>> m.wv.index_to_key, m.corpus_total_words
        (['the', 'cat'], 14)
        """
        if update:
            self._check_can_update()
        freq = {}
        for word, count in dict(word_freq).items():
            if not isinstance(word, str):
                raise TypeError(f"word_freq keys must be str, got {type(word).__name__}: {word!r}")
            if not _is_int(count) or count < 0:
                raise ValueError(f"word_freq[{word!r}] must be an int >= 0, got {count!r}")
            freq[word] = int(count)
        self.raw_vocab = freq
        self.corpus_count = int(corpus_count or 0)
        self.corpus_total_words = sum(freq.values())
        self.prepare_vocab(update=update, keep_raw_vocab=keep_raw_vocab, trim_rule=trim_rule)

    def scan_vocab(self, corpus_iterable=None, corpus_file=None, progress_per: int = 10000, workers=None,
                   trim_rule=None):
        """Count the words of a corpus in one pass, into :attr:`raw_vocab`.

        The vocabulary itself is not changed: :meth:`prepare_vocab` does that.
        ``max_vocab_size`` prunes rare words during the count (gensim's rule).
        A plain-text ``corpus_file`` (in a distributed run: this process's
        share of it) is counted by ``workers`` threads (default: the model's
        ``workers``), each counting the whole lines of one part of it, with
        the same counts and totals as one pass;
        with ``max_vocab_size``, whose pruning depends on the order the
        words arrive in, for gzip files and for a list of files, the count
        is one pass. ``workers`` must be an int >= 1 whatever the corpus.
        ``progress_per`` is accepted for gensim compatibility.

        Returns
        -------
        (int, int)
            Tokens and sentences in the corpus.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec(min_count=1)
        >>> m.scan_vocab([["a", "b", "a"], ["c"]])
        (4, 2)
        >>> sorted(m.raw_vocab.items())
        [('a', 2), ('b', 1), ('c', 1)]
        """
        check_corpus(corpus_iterable, corpus_file, passes=1)
        trim_rule = trim_rule if trim_rule is not None else self.trim_rule
        counter = _core.VocabCounter(self.max_vocab_size, trim_rule)
        threads = self.workers if workers is None else workers
        _check(_is_int(threads) and threads >= 1, f"workers must be an int >= 1, got {threads!r}")
        t0 = time.perf_counter()
        session = self._dist_session_for(corpus_file)
        corpus_file = self._as_pieces(corpus_file, session)
        if session is not None:
            # Each rank counts its shard; the counts are summed so every rank
            # builds the vocabulary of the whole corpus. max_vocab_size prunes
            # while the words arrive, so what it keeps depends on their order
            # over the whole corpus: then rank 0 alone counts everything in
            # order, as one process does, and the others add nothing.
            if self.max_vocab_size is None:
                counter.add_file(corpus_source(corpus_file), self._rank_shard(corpus_file, session), threads=int(threads))
            elif session.rank == 0 and isinstance(corpus_file, RankPieces):
                count_in_order(counter, corpus_file.sources, corpus_file.directory or tempfile.gettempdir())
            elif session.rank == 0:
                counter.add_file(os.fspath(corpus_file))
            counter = session.combine_counts(counter)
        elif corpus_file is not None:
            counter.add_file(corpus_source(corpus_file), threads=int(threads))
        else:
            batch: List[Any] = []
            for sentence in corpus_iterable:
                batch.append(sentence)
                if len(batch) >= 1024:
                    counter.add_sentences(batch)
                    batch.clear()
            counter.add_sentences(batch)
        self._raw_counter, self._raw_dict = counter, None
        logger.info("collected %d word types from %d words in %d sentences in %.2fs", len(counter),
                    counter.total_words, counter.sentences, time.perf_counter() - t0)
        return int(counter.total_words), int(counter.sentences)

    @property
    def raw_vocab(self) -> Dict[str, int]:
        """``{word: count}`` of the last scan (empty once the vocabulary is built, unless ``keep_raw_vocab``)."""
        if self._raw_dict is None:
            self._raw_dict = self._raw_counter.raw_counts() if self._raw_counter is not None else {}
        return self._raw_dict

    @raw_vocab.setter
    def raw_vocab(self, counts) -> None:
        self._raw_counter, self._raw_dict = None, (dict(counts) if counts is not None else None)

    @property
    def effective_min_count(self) -> int:
        """The ``min_count`` the vocabulary was built with (raised by ``max_final_vocab`` if needed)."""
        return int(self._vocab.effective_min_count) if self._vocab is not None else int(self.min_count)

    def prepare_vocab(self, update: bool = False, keep_raw_vocab: bool = False, trim_rule=None, min_count=None,
                      sample=None, dry_run: bool = False) -> Dict[str, int]:
        """Turn the raw counts of :meth:`scan_vocab` into the vocabulary.

        Keeps the words passing ``min_count`` (raised to honour
        ``max_final_vocab``) and ``trim_rule``, builds the subsampling and
        negative-sampling tables (and Huffman tree with ``hs``) and sets up
        the parameters; with ``update=True`` grows the existing vocabulary
        (see :meth:`build_vocab`).

        Parameters
        ----------
        update : bool
            Grow the existing vocabulary instead of replacing it.
        keep_raw_vocab : bool
            Keep :attr:`raw_vocab` afterwards.
        trim_rule : callable, optional
            As in :meth:`build_vocab`.
        min_count, sample : optional
            Override the model's settings (stored on the model unless ``dry_run``).
        dry_run : bool
            Only report what these settings would give; the model is not changed.

        Returns
        -------
        dict
            gensim's report: ``drop_unique`` (word types dropped),
            ``retain_total`` (corpus words of the kept types),
            ``downsample_unique`` (kept types that subsampling thins),
            ``downsample_total`` (corpus words expected to survive
            subsampling), ``num_retained_words`` (kept types), and
            ``memory`` (:meth:`estimate_memory` for that many words).

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec(vector_size=8, min_count=1)
        >>> _ = m.scan_vocab([["a", "b", "a"], ["c", "a"]])
        >>> m.prepare_vocab(min_count=2, dry_run=True)["num_retained_words"]
        1
        >>> m.wv is None
        True
        >>> m.prepare_vocab(min_count=1)["num_retained_words"]
        3
        """
        min_count = self.min_count if min_count is None else min_count
        sample = self.sample if sample is None else sample
        _check(_is_int(min_count) and min_count >= 0, f"min_count must be an int >= 0, got {min_count!r}")
        _check(isinstance(sample, (int, float, np.floating)) and not isinstance(sample, bool) and sample >= 0,
               f"sample must be a number >= 0, got {sample!r}")
        trim_rule = trim_rule if trim_rule is not None else self.trim_rule
        if update:
            self._check_can_update()
            vocab, report = self._grown_vocab(min_count, float(sample), trim_rule)
        else:
            vocab, report = self._fresh_vocab(min_count, float(sample), trim_rule)
        report["memory"] = self.estimate_memory(vocab_size=report["num_retained_words"])
        logger.info("min_count=%d keeps %d word types (%d corpus words), drops %d; subsampling (sample=%g) thins %d "
                    "types, leaving about %d words", vocab.effective_min_count, report["num_retained_words"],
                    report["retain_total"], report["drop_unique"], sample, report["downsample_unique"],
                    report["downsample_total"])
        if dry_run:
            return report
        self.min_count, self.sample = min_count, sample
        if not keep_raw_vocab:
            self._raw_counter, self._raw_dict = None, None
        if update:
            old = len(self.wv.index_to_key)
            self._install_grown_vocab(vocab)
            self.prepare_weights(update=True, _old_rows=old)
        else:
            self._set_vocab(vocab)
            self.prepare_weights()
        return report

    def prepare_weights(self, update: bool = False, _old_rows: Optional[int] = None) -> None:
        """Set up the parameters for the current vocabulary.

        ``update=False`` initialises every parameter afresh (seeded);
        ``update=True`` keeps the trained ones and adds rows for words the
        vocabulary gained since (fresh input vectors, zero output weights).

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec(vector_size=4, min_count=1, seed=7)
        >>> m.build_vocab([["a", "b", "a"]])
        >>> first = m.wv.vectors.copy()
        >>> m.prepare_weights()  # the same seeded start again
        >>> bool((m.wv.vectors == first).all()), m.wv.vectors.shape
        (True, (2, 4))
        """
        if self._vocab is None:
            raise RuntimeError("the model has no vocabulary: call build_vocab() first")
        if not update:
            self._init_params()
            return
        old = self.wv.vectors.shape[0] if _old_rows is None else _old_rows
        if old < len(self.wv.index_to_key):
            self._grow_params(old)
        self._vocab_before_update = None
        lockf = getattr(self.wv, "vectors_lockf", None)
        n = len(self.wv.index_to_key)
        if lockf is not None and len(lockf) == old and old not in (1, n):
            self.wv.vectors_lockf = np.concatenate([lockf, np.ones(n - old, dtype=np.float32)]).astype(np.float32)

    def _grow_params(self, old: int) -> None:
        """Add parameter rows for words ``old..`` of the vocabulary (a model overrides this)."""
        raise NotImplementedError(f"{type(self).__name__} cannot grow its vocabulary (build_vocab(update=True))")

    def _grow_output_rows(self) -> None:
        """Output weights after a vocabulary update: zero rows for the new words
        (``syn1neg``, ``output_bias``), ``syn1`` moved to the rebuilt tree."""
        n = len(self.wv.index_to_key)
        self.syn1neg = grow_rows(getattr(self, "syn1neg", None), n)
        self.syn1 = self._grown_tree_weights(getattr(self, "syn1", None))
        if getattr(self, "output_bias", None) is not None:
            self.output_bias = grow_rows(self.output_bias, n)

    def _output_shapes(self, vocab_size: int) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the output layer's arrays (for :meth:`estimate_memory`)."""
        shapes: Dict[str, Tuple[int, ...]] = {}
        if self.hs:
            shapes["syn1"] = (vocab_size, int(self.vector_size))
        if self.negative or getattr(self, "loss", None) == "softmax":
            shapes["syn1neg"] = (vocab_size, int(self.vector_size))
        if getattr(self, "loss", None) == "softmax":
            shapes["output_bias"] = (vocab_size,)
        return shapes

    def _grown_tree_weights(self, syn1: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """``syn1`` for the Huffman tree rebuilt by a vocabulary update.

        The rebuilt tree's inner nodes are not the old ones: weights move to
        the nodes that split the same words the same way
        (:func:`carry_tree_weights`), the others start at zero."""
        n = len(self.wv.index_to_key)
        before = getattr(self, "_vocab_before_update", None)
        if syn1 is None or before is None:
            return grow_rows(syn1, n)
        old_tree, new_tree = before.huffman(), self._vocab.huffman()
        if old_tree is None or new_tree is None:
            return grow_rows(syn1, n)
        out, carried = carry_tree_weights(old_tree, syn1, new_tree, n)
        logger.info("hierarchical softmax: %d of %d inner nodes of the rebuilt Huffman tree keep their weights",
                    carried, max(n - 1, 0))
        return out

    def reset_from(self, other_model) -> None:
        """Take ``other_model``'s vocabulary (words, counts, sampling tables) and corpus size, and
        initialise fresh parameters; as gensim's, for trying several settings on one corpus.

        ``other_model`` may be any bidirmoe model or a gensim ``Word2Vec``.
        The tables are shared when the sampling settings agree (they are
        immutable) and rebuilt from the counts otherwise; the word lists are
        copied, so either model may later grow its vocabulary safely.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> a = Word2Vec([["a", "b", "c"]] * 10, vector_size=4, min_count=1, epochs=1)
        >>> b = Word2Vec(vector_size=8, sg=1)
        >>> b.reset_from(a)
        >>> b.wv.index_to_key == a.wv.index_to_key, b.wv.vectors.shape
        (True, (3, 8))
        """
        wv = getattr(other_model, "wv", None)
        if wv is None or not len(getattr(wv, "index_to_key", ())):
            raise RuntimeError("other_model has no vocabulary to take: build_vocab() it first")
        theirs = getattr(other_model, "_vocab", None)
        same_tables = theirs is not None and all(
            getattr(other_model, k, None) == getattr(self, k) for k in ("sample", "ns_exponent")) \
            and bool(other_model.hs) == bool(self.hs)
        if same_tables:
            vocab = theirs
        else:
            counts = [int(c) for c in wv.expandos["count"]]
            total = int(getattr(other_model, "corpus_total_words", None) or sum(counts))
            vocab = _core.Vocab.from_words(list(wv.index_to_key), counts, float(self.sample),
                                           float(self.ns_exponent), bool(self.hs), total,
                                           int(getattr(other_model, "corpus_count", None) or 0),
                                           int(getattr(other_model, "effective_min_count", None) or self.min_count))
        self._set_vocab(vocab)  # vocab.words is a fresh list: nothing shared with other_model but the tables
        self.corpus_count = int(getattr(other_model, "corpus_count", None) or 0)
        self.corpus_total_words = int(getattr(other_model, "corpus_total_words", None) or vocab.total_words)
        self._init_params()

    def _check_can_update(self) -> None:
        if self._vocab is None or self.wv is None or getattr(self.wv, "vectors", None) is None \
                or len(self.wv.vectors) == 0:
            raise RuntimeError("build_vocab(update=True) grows an existing vocabulary, and this model has none yet: "
                               "call build_vocab(corpus) (without update) first")

    def _keeps(self, word: str, count: int, min_count: int, trim_rule) -> bool:
        """gensim's keep decision: ``trim_rule`` may force keep/discard, else ``count >= min_count``."""
        if trim_rule is not None:
            rule = trim_rule(word, count, min_count)
            if rule == RULE_KEEP:
                return True
            if rule == RULE_DISCARD:
                return False
        return count >= min_count

    def _min_count_for(self, counts: Iterable[int], min_count: int) -> int:
        """``min_count`` raised until at most ``max_final_vocab`` types remain (gensim's rule)."""
        if self.max_final_vocab is None:
            return int(min_count)
        ordered = sorted(counts, reverse=True)
        if self.max_final_vocab < len(ordered):
            return max(int(min_count), int(ordered[self.max_final_vocab]) + 1)
        return int(min_count)

    @staticmethod
    def _report(raw_types: int, counts_of_kept: np.ndarray, keep: np.ndarray) -> Dict[str, int]:
        """prepare_vocab's report from the kept types' corpus counts and keep probabilities."""
        return {"drop_unique": int(raw_types - len(counts_of_kept)), "retain_total": int(counts_of_kept.sum()),
                "downsample_unique": int((keep < 1.0).sum()),
                "downsample_total": int((counts_of_kept * keep).sum()), "num_retained_words": int(len(counts_of_kept))}

    def _raw_totals(self) -> Tuple[int, int]:
        """Tokens and sentences of the last scan (or of the counts given to build_vocab_from_freq)."""
        if self._raw_counter is not None:
            return int(self._raw_counter.total_words), int(self._raw_counter.sentences)
        return sum(self.raw_vocab.values()), int(self.corpus_count or 0)

    def _fresh_vocab(self, min_count: int, sample: float, trim_rule):
        counter = self._raw_counter
        if counter is not None and counter.total_words == 0:
            raise ValueError("the corpus is empty: it contains no tokens")
        if counter is not None and trim_rule is None:  # all in Rust
            raw_types, total = len(counter), int(counter.total_words)
            vocab = counter.finish(min_count, self.max_final_vocab, sample, float(self.ns_exponent), bool(self.hs))
        else:
            raw = self.raw_vocab
            if not raw:
                raise ValueError("no word counts: scan_vocab() a corpus (or build_vocab_from_freq) first; "
                                 "prepare_vocab() consumes them unless keep_raw_vocab=True")
            total, sentences = self._raw_totals()
            raw_types = len(raw)
            eff = self._min_count_for(raw.values(), min_count)
            kept = sorted(((w, c) for w, c in raw.items() if self._keeps(w, c, eff, trim_rule)),
                          key=lambda wc: (-wc[1], wc[0]))
            vocab = _core.Vocab.from_words([w for w, _ in kept], [c for _, c in kept], sample,
                                           float(self.ns_exponent), bool(self.hs), total, sentences, eff)
        if len(vocab) == 0:
            raise ValueError(
                f"the vocabulary is empty: no word occurs at least min_count={vocab.effective_min_count} times "
                f"in {total} tokens; lower min_count"
            )
        counts = np.asarray(vocab.counts, dtype=np.float64)
        return vocab, self._report(raw_types, counts, np.asarray(vocab.keep_probability))

    def _grown_vocab(self, min_count: int, sample: float, trim_rule):
        """The vocabulary after adding the raw counts to the current one (indices of known words unchanged)."""
        raw = self.raw_vocab
        eff = self._min_count_for(raw.values(), min_count)
        known = self.wv.key_to_index
        retained, new = [], []
        for w, c in raw.items():
            if self._keeps(w, c, eff, trim_rule):
                retained.append(w)
                if w not in known:
                    new.append((w, c))
        new.sort(key=lambda wc: (-wc[1], wc[0]))
        old_words = list(self.wv.index_to_key)
        old_counts = np.asarray(self.wv.expandos["count"], dtype=np.int64)
        # As gensim: every known word's count grows by this corpus's count (kept there or not).
        summed = [int(c) + int(raw.get(w, 0)) for w, c in zip(old_words, old_counts)]
        total, sentences = self._raw_totals()
        vocab = _core.Vocab.from_words(old_words + [w for w, _ in new], summed + [c for _, c in new], sample,
                                       float(self.ns_exponent), bool(self.hs),
                                       int(self._vocab.total_words) + total, int(self._vocab.sentences) + sentences,
                                       eff)
        added = {w: len(old_words) + k for k, (w, _) in enumerate(new)}
        ids = np.fromiter((known[w] if w in known else added[w] for w in retained), dtype=np.int64,
                          count=len(retained))
        keep = np.asarray(vocab.keep_probability)[ids]
        counts = np.fromiter((raw[w] for w in retained), dtype=np.float64, count=len(retained))
        return vocab, self._report(len(raw), counts, keep)

    def _install_grown_vocab(self, vocab) -> None:
        """Point the model at a grown vocabulary; ``wv`` keeps its object, lists and vectors (grown later)."""
        self._vocab_before_update = self._vocab
        wv = self.wv
        old = len(wv.index_to_key)
        new_words = vocab.words[old:]
        for i, w in enumerate(new_words, start=old):
            wv.key_to_index[w] = i
        wv.index_to_key.extend(new_words)
        n = len(wv.index_to_key)
        for name, arr in list(wv.expandos.items()):
            if len(arr) < n:
                pad = np.zeros((n - len(arr),) + arr.shape[1:], dtype=arr.dtype)
                wv.expandos[name] = np.concatenate([arr, pad])
        wv.expandos["count"] = np.asarray(vocab.counts, dtype=np.int64)
        wv.norms = None
        self._vocab = vocab

    def _set_vocab(self, vocab) -> None:
        from .keyedvectors import KeyedVectors

        self._vocab = vocab
        words = vocab.words
        size = self._wv_size()
        wv = KeyedVectors(size, count=0)
        wv.index_to_key = words
        wv.key_to_index = {w: i for i, w in enumerate(words)}
        wv.vectors = np.zeros((len(words), size), dtype=np.float32)
        wv.expandos = {"count": np.asarray(vocab.counts, dtype=np.int64)}
        wv.norms = None
        # gensim 4: a per-word factor on input-vector updates (0 freezes a word);
        # length 1 is one factor for every word, length len(vocab) one per word.
        wv.vectors_lockf = np.ones(1, dtype=np.float32)
        self.wv = wv

    def estimate_memory(self, vocab_size: Optional[int] = None, report: Optional[Dict[str, int]] = None
                        ) -> Dict[str, int]:
        """Bytes the model needs for ``vocab_size`` words (default: its vocabulary) with its current settings.

        Keys as gensim's where they apply (``vocab``, ``vectors``, ``syn1``,
        ``syn1neg``, ``total``) plus the model's own arrays. ``vocab`` is an
        estimate of the vocabulary's tables in Python and Rust; array sizes are
        exact. Not counted (it is not the model's): while ``train(corpus_file=...)``
        runs, the corpus's vocabulary ids kept between epochs, about 4 bytes
        per corpus word and at most ``bidirmoe.training.ID_CACHE_BYTES``.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> r = Word2Vec(vector_size=100, negative=5).estimate_memory(vocab_size=1000)
        >>> r["vectors"], r["syn1neg"]
        (400000, 400000)
        """
        if vocab_size is None:
            vocab_size = len(self.wv.index_to_key) if self.wv is not None else 0
        v = int(vocab_size)
        out = dict(report or {})
        out["vocab"] = v * (_VOCAB_BYTES_PER_WORD + (_HUFFMAN_BYTES_PER_WORD if self.hs else 0))
        out["vectors"] = v * self._wv_size() * 4
        for name, shape in self._param_shapes(v).items():
            out[name] = int(np.prod(shape)) * 4
        out["total"] = sum(val for key, val in out.items() if key != "total")
        logger.info("estimated required memory for %d words and %d dimensions: %d bytes", v, self.vector_size,
                    out["total"])
        return out

    def _param_shapes(self, vocab_size: int) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the model's float32 arrays besides ``wv.vectors`` for ``vocab_size`` words."""
        return {}

    def _wv_size(self) -> int:
        """Width of ``wv``'s vectors (``vector_size``, unless a model stores more per word)."""
        return int(self.vector_size)

    def _init_vectors(self, rows: int) -> np.ndarray:
        """word2vec.c's initialisation: uniform in [-0.5, 0.5) / vector_size,
        seeded (Word2Vec overrides it with gensim 4's, twice as wide)."""
        rng = np.random.default_rng(self.seed)
        return ((rng.random((rows, self.vector_size), dtype=np.float32) - np.float32(0.5)) / np.float32(self.vector_size))

    # ---------------------------------------------------------------- training

    def train(self, corpus_iterable=None, corpus_file=None, total_examples=None, total_words=None, epochs=None,
              start_alpha=None, end_alpha=None, word_count=0, queue_factor=2, report_delay=1.0,
              compute_loss=False, callbacks=(), progress_callback=None, schedule_words=None, resume_from=None,
              **kwargs):
        """Train for ``epochs`` passes over the corpus (gensim's signature).

        The learning rate falls linearly from ``start_alpha`` (default
        ``alpha``) to ``end_alpha`` (default ``min_alpha``) over all epochs of
        this call. Ctrl-C stops the workers within about half a second, at
        their next progress report (or at the end of the epoch, if that
        comes first), and raises ``KeyboardInterrupt`` there; the model keeps
        what it learned so far and ``last_stop`` (below) is exact wherever
        the signal landed. A second Ctrl-C raises at once. A Ctrl-C during
        the last epoch's bookkeeping lets training finish, then raises.

        Beyond gensim's arguments: ``progress_callback(info)`` is called about
        every ``report_delay`` seconds with a dict (epoch, words done, words/s,
        learning rate, loss); an exception it raises stops training at a
        consistent point (the command line's checkpoints use this).
        ``schedule_words`` sets the length of the learning-rate schedule
        (default: epochs x corpus words).

        With ``corpus_file`` (plain text), the first epoch keeps every line's
        vocabulary ids in memory and later epochs of the same call replay
        them instead of reading and looking up the words again: the same
        training, bit for bit, at up to ``bidirmoe.training.ID_CACHE_BYTES``
        (512 MiB; about 4 bytes per word) of memory; lines that do not fit
        are read every epoch.

        When training stops on an exception (Ctrl-C, or one raised by a
        callback), ``model.last_stop`` records how far it got: the epoch, the
        words done, and — for ``corpus_file`` training — every worker's byte
        position in the file, random generator and learning rate. It is
        saved with the model. ``train(corpus_file=..., resume_from=model.last_stop)``
        then finishes the interrupted run exactly where it stopped: the rest
        of the interrupted epoch (no word read twice, none skipped), the
        remaining epochs (``epochs`` defaults to what was left) and the same
        learning-rate schedule. With ``workers=1`` and a fixed ``seed`` the
        result is bit-identical to an uninterrupted run.

        Returns
        -------
        (int, int)
            Effective words trained on (after subsampling and dropping
            out-of-vocabulary words) and raw corpus words processed.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> corpus = [["a", "b", "c", "d"]] * 50
        >>> m = Word2Vec(corpus, vector_size=8, min_count=1, epochs=1, workers=1)
        >>> eff, raw = m.train(corpus, total_examples=m.corpus_count, epochs=2)
        >>> raw
        400
        """
        if "sentences" in kwargs:
            corpus_iterable = kwargs.pop("sentences")
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments: {sorted(kwargs)}")
        if getattr(self, "_vocab", None) is None:
            raise RuntimeError("the model has no vocabulary: call build_vocab() before train(), or pass the corpus to the constructor")
        resume_state, resumed_words = None, 0
        if resume_from is not None:
            if not isinstance(resume_from, dict) or "words_done" not in resume_from or "schedule_words" not in resume_from:
                raise ValueError("resume_from must be a model's last_stop (a dict recorded when training stopped)")
            if corpus_file is None:
                raise ValueError("resume_from needs corpus_file: only training read from a file can continue at a position")
            if epochs is None:
                epochs = int(resume_from.get("epochs_left", 0))
            word_count = int(resume_from["words_done"])
            schedule_words = int(resume_from["schedule_words"])
            resume_state = resume_from.get("resume")
            if resume_state is not None and "ranks" in resume_state:
                resume_state = self._rank_resume(resume_state)
            resumed_words = int(resume_from.get("epoch_words", 0)) if resume_state is not None else 0
        if epochs is None:
            raise ValueError("train() needs an explicit epochs count (e.g. epochs=model.epochs), as gensim does")
        _check(_is_int(epochs) and epochs >= 0, f"epochs must be an int >= 0, got {epochs!r}")
        if corpus_file is None and total_examples is None and total_words is None:
            raise ValueError("train() needs total_examples or total_words (e.g. total_examples=model.corpus_count), as gensim does")
        check_corpus(corpus_iterable, corpus_file, passes=epochs)
        session = self._dist_session_for(corpus_file)
        corpus_file = self._as_pieces(corpus_file, session)
        if session is not None:
            from .torch.distributed import per_word_arrays
        alpha = float(self.alpha if start_alpha is None else start_alpha)
        min_alpha = float(self.min_alpha if end_alpha is None else end_alpha)
        _check(alpha > 0 and min_alpha >= 0, f"learning rates must be positive, got start_alpha={alpha}, end_alpha={min_alpha}")
        # As gensim: this call's compute_loss and callbacks, not the constructor's.
        compute_loss = bool(compute_loss)
        self.compute_loss = compute_loss
        callbacks = list(callbacks or ())

        # Words per epoch for the learning-rate schedule.
        if total_words is not None:
            words_per_epoch = int(total_words)
        elif corpus_file is not None:
            words_per_epoch = int(self.corpus_total_words)
        elif self.corpus_count:
            per_sentence = self.corpus_total_words / self.corpus_count
            words_per_epoch = int(round(int(total_examples) * per_sentence))
        else:  # vocabulary from word frequencies: no sentence count to scale by
            words_per_epoch = int(self.corpus_total_words)
        schedule_total = int(schedule_words) if schedule_words else max(words_per_epoch * epochs, 1)
        words_done = int(word_count)
        self.running_training_loss = 0.0
        trained, raw_total = 0, 0
        bar = None
        if self.progress:
            try:
                from tqdm.auto import tqdm
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("progress=True needs tqdm: pip install tqdm (or bidirmoe[progress])") from e
            bar = tqdm(total=schedule_total, unit="word", unit_scale=True, desc=type(self).__name__)
        # Where training stands if a callback stops it before the first epoch's work.
        self.last_stop = self._stop_point(resumed_words, words_done, schedule_total, epochs, resume_state)
        latch = self._interrupt_latch(session)
        for cb in callbacks:
            getattr(cb, "on_train_begin", lambda m: None)(self)
        t_start = time.perf_counter()
        # Epochs after the first replay the file's ids (the Rust engine only).
        id_cache = None
        if corpus_file is not None and getattr(self, "backend", "rust") != "torch" and ID_CACHE_BYTES > 0:
            id_cache = _core.IdCache(int(ID_CACHE_BYTES))
        try:
            for epoch in range(epochs):
                for cb in callbacks:
                    getattr(cb, "on_epoch_begin", lambda m: None)(self)
                t0 = time.perf_counter()
                resume = resume_state if epoch == 0 else None
                before = resumed_words if resume is not None else 0  # words of this epoch done before the stop
                common = dict(alpha=alpha, min_alpha=min_alpha, total_words=schedule_total, words_before=words_done,
                              seed=int(self.seed) & 0xFFFFFFFFFFFFFFFF, epoch=int(self._epochs_done),
                              workers=int(self.workers), compute_loss=compute_loss,
                              report_delay=min(float(report_delay), 0.5), max_words=0,
                              lockf=self._lockf_for_core(), resume=resume, id_cache=id_cache,
                              hot_rows=_hot_rows_of(self), hot_every=HOT_EVERY)
                if session is not None:
                    dist_arrays = self._dist_schedule(session, common)
                reporter = _Reporter(max(words_per_epoch - before, 1), epoch, epochs, report_delay, bar,
                                     progress_callback, common, latch if session is None else None)
                common["progress_cb"] = reporter
                try:
                    if session is not None and isinstance(resume, dict) and resume.get("shard_done"):
                        raw, eff, ex, loss = 0, 0, 0, 0.0  # this rank had finished its shard before the stop
                    elif corpus_file is not None:
                        raw, eff, ex, loss = self._run_epoch(corpus_source(corpus_file), common)
                    else:
                        raw, eff, ex, loss = self._train_iterable_epoch(corpus_iterable, queue_factor, common)
                    if session is not None:
                        # Fresh views: the torch engine hands back new arrays at the end of an epoch.
                        dist_arrays = session.tensors_of(list(per_word_arrays(self).values()))
                        raw, stopped = session.finish_epoch(raw, dist_arrays, len(self.wv.index_to_key))
                        if stopped:  # another rank stopped (checkpoint) while this one had finished its shard
                            from .torch.distributed import SyncStop

                            stop = SyncStop()
                            stop.bidirmoe_resume = {"shard_done": True}
                            session.epoch_words = raw
                            raise stop
                except BaseException as e:
                    got = int(getattr(e, "bidirmoe_epoch_words", 0))
                    if session is not None:
                        got = int(session.epoch_words)  # all ranks' words at the round every rank stopped at
                    if session is None and not hasattr(e, "bidirmoe_epoch_words"):
                        at = resume  # stopped before the engine started: where this epoch was to begin
                    else:
                        at = getattr(e, "bidirmoe_resume", None)
                    self.last_stop = self._stop_point(before + got, words_done + got, schedule_total, epochs - epoch, at)
                    if session is not None:
                        from .torch.distributed import SyncStop

                        if isinstance(e, SyncStop):
                            self._rank_stop(session, latch)
                    raise
                reporter(raw, eff, loss, final=True)
                elapsed = max(time.perf_counter() - t0, 1e-9)
                words_done += raw
                raw_total += raw
                trained += eff
                self.running_training_loss += loss
                self._epochs_done += 1
                # Where a callback that stops training now would leave it: at the next epoch's start.
                self.last_stop = self._stop_point(0, words_done, schedule_total, epochs - epoch - 1, None)
                logger.info("EPOCH %d/%d: trained on %d raw words (%d effective words) in %.2fs, %.0f words/s, %.0f effective words/s",
                            epoch + 1, epochs, raw, eff, elapsed, raw / elapsed, eff / elapsed)
                for cb in callbacks:
                    getattr(cb, "on_epoch_end", lambda m: None)(self)
                if session is None and latch is not None and latch.interrupted and epoch + 1 < epochs:
                    raise KeyboardInterrupt("interrupted between epochs; model.last_stop resumes the run")
        finally:
            if latch is not None:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            if bar is not None:
                bar.close()
            if session is not None:
                session.close()  # a session this call's model started: no collective is pending now
        self.train_count += 1
        self.last_stop = None  # finished: nothing to resume
        self.total_train_time += time.perf_counter() - t_start
        self.trained_word_count, self.raw_word_count = trained, raw_total
        for cb in callbacks:
            getattr(cb, "on_train_end", lambda m: None)(self)
        logger.info("training on %d raw words (%d effective words) took %.1fs, %.0f effective words/s",
                    raw_total, trained, time.perf_counter() - t_start, trained / max(time.perf_counter() - t_start, 1e-9))
        if latch is not None and latch.interrupted:  # after this rank's last sync round: training had finished
            raise KeyboardInterrupt("interrupted after training finished: the model is complete")
        return trained, raw_total

    # ------------------------------------------------------ distributed runs

    def _is_distributed(self) -> bool:
        return bool(getattr(self, "distributed", False))

    def _dist_session(self):
        """This process's torch.distributed session (imports torch: only with distributed=True)."""
        from .torch.distributed import start

        return start(device=getattr(self, "device", "cpu"))

    def _dist_session_for(self, corpus_file):
        """The torch.distributed session of a distributed model (None otherwise),
        which reads ``corpus_file``: each rank its shard of it."""
        if not self._is_distributed():
            return None
        if corpus_file is None:
            raise ValueError("distributed=True reads corpus_file (each rank its shard of it), not an iterable")
        session = self._dist_session()
        if isinstance(corpus_file, RankPieces) and (corpus_file.rank, corpus_file.world) != (session.rank, session.world):
            raise ValueError(f"corpus_file is the part of rank {corpus_file.rank} of {corpus_file.world}, but this "
                             f"process is rank {session.rank} of {session.world}")
        return session

    @staticmethod
    def _as_pieces(corpus_file, session):
        """A list of files: this process's pieces of them (all of them
        without a distributed session)."""
        return as_pieces(corpus_file, *((session.rank, session.world) if session is not None else (0, 1)))

    @staticmethod
    def _interrupt_latch(session) -> Optional[InterruptLatch]:
        """While train() runs, Ctrl-C stops training where ``last_stop`` is
        exact instead of wherever the signal lands (e.g. between the engine's
        return and the epoch's count). One process: at the engine's next
        progress report (at most 0.5 s) or at the end of the epoch, raising
        ``KeyboardInterrupt``; a second Ctrl-C raises at once. Distributed
        (torchrun passes Ctrl-C on to every rank): every rank stops at the
        next sync round and raises there. Only where Python's own Ctrl-C
        handler is in place (the command line brings its own)."""
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return None
        latch = InterruptLatch(session) if session is not None else InterruptLatch(grace=0.0)
        signal.signal(signal.SIGINT, latch)
        return latch

    def _rank_stop(self, session, latch) -> None:
        """Every rank stopped at one sync round (:class:`SyncStop`): when a
        rank's Ctrl-C asked for it, gather every rank's reader position into
        ``last_stop`` (as the command line's checkpoints hold them) and
        raise ``KeyboardInterrupt`` on every rank."""
        if session.all_sum([float(latch is not None and latch.interrupted)])[0] == 0:
            return  # a stop someone else asked for (e.g. the command line's checkpoint)
        ranks = session.broadcast_from_root(session.gather_to_root(self.last_stop["resume"]))
        self.last_stop["resume"] = {"ranks": ranks}
        raise KeyboardInterrupt(f"interrupted: every rank stopped at sync round {session.rounds}; "
                                "model.last_stop resumes the run") from None

    @staticmethod
    def _rank_shard(corpus_file, session) -> Optional[Tuple[int, int]]:
        """The part of ``corpus_file`` this rank reads, as (rank, world) for
        the Rust reader: its share of one file, or none for a :class:`RankPieces`
        (already only this rank's segment of several files)."""
        return None if isinstance(corpus_file, RankPieces) else (session.rank, session.world)

    def _set_distributed(self, distributed, sync_words, sync_overlap, sync_dtype) -> None:
        """Store and check the constructor's options for runs in several processes."""
        _check(sync_words is None or (_is_int(sync_words) and sync_words > 0),
               f"sync_words must be a positive int or None, got {sync_words!r}")
        _check(isinstance(sync_overlap, (bool, np.bool_)), f"sync_overlap must be True or False, got {sync_overlap!r}")
        _check(sync_dtype in SYNC_DTYPES, f"sync_dtype must be one of {', '.join(SYNC_DTYPES)}, got {sync_dtype!r}")
        self.distributed, self.sync_words = bool(distributed), sync_words
        self.sync_overlap, self.sync_dtype = bool(sync_overlap), sync_dtype

    def _dist_schedule(self, session, common) -> list:
        """Add this rank's shard, seed and sync callback to an epoch's schedule;
        returns the tensors a sync averages (zero-copy views of the numpy
        arrays; the torch engine averages its device tensors itself)."""
        from .torch.distributed import DEFAULT_SYNC_WORDS, per_word_arrays, rank_seed

        every = int(getattr(self, "sync_words", None) or DEFAULT_SYNC_WORDS)
        common["shard"] = (session.rank, session.world)
        common["seed"] = rank_seed(common["seed"], session.rank)
        common["sync_words"] = every
        # This model's options (a model loaded from disk: the defaults).
        session.overlap = bool(getattr(self, "sync_overlap", False))
        session.wire_dtype = getattr(self, "sync_dtype", "float32")
        tensors = session.tensors_of(list(per_word_arrays(self).values()))
        session.begin_epoch(tensors, len(self.wv.index_to_key))
        if getattr(self, "backend", "rust") == "torch":
            common["dist_session"] = session
        else:
            common["sync"] = session.epoch_sync(tensors, len(self.wv.index_to_key))
            if session.overlap:
                common["sync_poll"] = session.poll
        return tensors

    def _rank_resume(self, state):
        """This rank's part of a distributed checkpoint's resume state."""
        if not self._is_distributed():
            raise ValueError("this checkpoint was written by a distributed run (torchrun): resume it with "
                             "distributed=True (--distributed) and the same number of ranks")
        session = self._dist_session()
        ranks = state["ranks"]
        if len(ranks) != session.world:
            raise ValueError(f"the checkpoint stopped mid-epoch in a run of {len(ranks)} ranks; resume it with "
                             f"{len(ranks)} ranks (this run has {session.world})")
        return ranks[session.rank]

    def _stop_point(self, epoch_words, words_done, schedule_words, epochs_left, resume):
        """``last_stop``: how far training got, in the form ``train(resume_from=...)`` takes."""
        return {"epochs_done": int(self._epochs_done), "epoch_words": int(epoch_words), "words_done": int(words_done),
                "schedule_words": int(schedule_words), "epochs_left": int(epochs_left), "resume": resume}

    def _run_epoch(self, source, common):
        """One epoch on this model's backend: the Rust core in place on the
        numpy arrays, or the torch engine (which copies the arrays to the
        device, trains, and copies them back, also when stopped)."""
        if getattr(self, "backend", "rust") == "torch":
            from .torch.engine import train_epoch

            return train_epoch(self, source, common)
        return self._train_one_epoch(source, **common)

    def _set_backend(self, device, backend) -> None:
        """Where this model trains: ``backend`` "rust" (the CPU) or "torch" on ``device``."""
        self.device, self.backend = resolve_backend(device, backend)

    def _lockf_for_core(self):
        """``wv.vectors_lockf`` as the core takes it: None when it cannot
        change anything (absent, or one factor of 1), else a float32 array
        of length 1 or one per word."""
        lockf = getattr(self.wv, "vectors_lockf", None)
        if lockf is None:
            return None
        lockf = np.ascontiguousarray(lockf, dtype=np.float32).reshape(-1)
        if lockf.size == 1 and lockf[0] == 1.0:
            return None
        if lockf.size not in (1, len(self.wv.index_to_key)):
            raise ValueError(f"wv.vectors_lockf has {lockf.size} entries: expected 1 or one per word ({len(self.wv.index_to_key)})")
        return lockf

    def _train_iterable_epoch(self, corpus_iterable, queue_factor, common):
        """One epoch over a Python iterable: a producer thread converts batches
        of sentences to ids (in Rust) and queues them for the workers."""
        queue = _core.JobQueue(self._vocab, max(2, int(queue_factor) * int(self.workers)))
        error: List[BaseException] = []
        batch_words = int(self.batch_words)

        def produce():
            try:
                batch, n = [], 0
                for sentence in corpus_iterable:
                    batch.append(sentence)
                    n += len(sentence) if hasattr(sentence, "__len__") else 1
                    if n >= batch_words:
                        if not queue.put(batch):
                            return
                        batch, n = [], 0
                if batch:
                    queue.put(batch)
            except BaseException as e:  # re-raised in the training thread
                error.append(e)
                queue.cancel()
            finally:
                queue.close()

        producer = threading.Thread(target=produce, name="bidirmoe-producer", daemon=True)
        producer.start()
        try:
            result = self._run_epoch(queue, common)
        except BaseException:
            queue.cancel()
            producer.join()
            raise
        producer.join()
        if error:
            raise error[0]
        return result

    def get_latest_training_loss(self) -> float:
        """Sum of the loss over the last ``train()`` call (``compute_loss=True``).

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["a", "b", "c"]] * 20, vector_size=4, min_count=1, sample=0, compute_loss=True, epochs=1)
        >>> m.get_latest_training_loss() > 0
        True
        """
        return float(self.running_training_loss)

    def to_torch(self, device=None, **options):
        """This model as a ``torch.nn.Module`` holding a copy of its arrays (needs torch).

        The module (:mod:`bidirmoe.torch`) has the model's parameters under the
        same names, shapes and float32 dtype, ``forward(left_ids, right_ids)``
        giving the log-probabilities of :meth:`predict_masked`, and
        ``loss(batch)``, the Rust core's objective.
        :func:`bidirmoe.torch.from_torch` copies a module back into a model.
        ``device`` places the parameters; ``options`` go to the module
        (``sparse``, ``word2vec_update``).

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["a", "b", "c"]] * 20, vector_size=4, min_count=1, epochs=1)
        >>> try:
        ...     module = m.to_torch()  # torch is an optional dependency
        ...     assert tuple(module.vectors.shape) == m.wv.vectors.shape
        ... except ImportError:
        ...     pass
        """
        from .torch import to_torch  # torch is imported here only: the Rust path never imports it

        return to_torch(self, device=device, **options)

    def load_torch_state(self, module):
        """Copy a torch module's parameters into this model (see :meth:`to_torch`) and return the model.

        The same as :func:`bidirmoe.torch.from_torch(module, model)
        <bidirmoe.torch.from_torch>`: the module must come from a model of
        this class with the same settings and vocabulary; its parameters are
        copied to the CPU as float32 arrays under the same names.

        Examples
        --------
        >>> from bidirmoe import BidirMoE
        >>> m = BidirMoE([["a", "b", "c"]] * 20, vector_size=4, min_count=1, epochs=1).train()
        >>> try:
        ...     module = m.to_torch()  # torch is an optional dependency
        ...     assert m.load_torch_state(module) is m
        ... except ImportError:
        ...     pass
        """
        from .torch import from_torch

        return from_torch(module, self)

    # ------------------------------------------------------------- persistence

    def save(self, fname, separately=None, sep_limit: int = 10 * 1024 ** 2, ignore=frozenset(),
             pickle_protocol: int = 4) -> None:
        """Save the full model (vectors, output weights, vocabulary, settings)
        to one file, atomically; ``load`` returns a model that can keep training.

        The file is a numpy ``.npz`` archive with a JSON header: no pickle, so
        loading it runs no code. gensim's keyword arguments are accepted:
        ``ignore`` (names of arrays to leave out, e.g. ``{"syn1neg"}`` for a
        smaller file that keeps the vectors but cannot continue training) is
        honoured; ``separately``, ``sep_limit`` and ``pickle_protocol`` have no
        effect (the arrays always go into the one file, and nothing is
        pickled). ``fname`` may also be a file object open for binary writing.

        Examples
        --------
        >>> import os, tempfile
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec([["a", "b"]] * 10, vector_size=4, min_count=1, epochs=1)
        >>> path = os.path.join(tempfile.mkdtemp(), "m.model")
        >>> m.save(path)
        >>> Word2Vec.load(path).wv.index_to_key == m.wv.index_to_key
        True
        """
        def plain(v):
            return v.item() if isinstance(v, np.generic) else v

        has_vocab = self._vocab is not None
        meta = {
            "format": "bidirmoe-model",
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": {k: plain(getattr(self, k)) for k in self._param_names},
            "words": list(self.wv.index_to_key) if has_vocab else None,
            "vocab": {
                "total_words": int(self._vocab.total_words),
                "sentences": int(self._vocab.sentences),
                "effective_min_count": int(self._vocab.effective_min_count),
            } if has_vocab else None,
            "state": {
                "corpus_count": int(self.corpus_count),
                "corpus_total_words": int(self.corpus_total_words),
                "epochs_done": int(self._epochs_done),
                "train_count": int(self.train_count),
                "total_train_time": float(self.total_train_time),
                "last_stop": getattr(self, "last_stop", None),
            },
            "extra": dict(getattr(self, "extra_meta", {}) or {}),
        }
        arrays = {}
        if has_vocab:
            arrays["vectors"] = self.wv.vectors
            arrays["counts"] = np.asarray(self.wv.expandos["count"], dtype=np.int64)
            lockf = getattr(self.wv, "vectors_lockf", None)
            if lockf is not None:
                arrays["vectors_lockf"] = np.asarray(lockf, dtype=np.float32)
        for name in self._array_names:
            arr = getattr(self, name, None)
            if arr is not None:
                arrays[name] = arr
        for name in ({ignore} if isinstance(ignore, str) else set(ignore or ())) - {"vectors", "counts", "meta"}:
            arrays.pop(name, None)  # gensim's `ignore`: leave these attributes out
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        if hasattr(fname, "write"):
            np.savez(fname, **arrays)
        else:
            atomic_write(fname, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, fname, mmap=None, device=None, backend=None):
        """Load a model written by :meth:`save`, on either backend.

        The file is the same whichever backend trained the model;
        ``device`` / ``backend`` choose where the loaded model trains next
        (default: the Rust core on the CPU).

        Examples
        --------
        See :meth:`save`.
        """
        fname = os.fspath(fname)
        if not os.path.isfile(fname):
            raise FileNotFoundError(f"model file not found: {fname}")
        try:
            data = np.load(fname, allow_pickle=False)
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        except Exception as e:
            raise ValueError(f"{fname} is not a bidirmoe model file (or it is damaged): {e}") from None
        if meta.get("format") != "bidirmoe-model":
            raise ValueError(f"{fname} is not a bidirmoe model file")
        if meta["class"] != cls.__name__:
            raise ValueError(f"{fname} holds a {meta['class']}, not a {cls.__name__}; load it with bidirmoe.{meta['class']}.load")
        model = cls.__new__(cls)
        model._reset_state()
        for k, v in meta["params"].items():
            setattr(model, k, v)
        model._set_backend(device, backend)
        model.callbacks = ()
        model.trim_rule = None
        model.hashfxn = hash
        for name in cls._array_names:
            setattr(model, name, None)
        st = meta["state"]
        model.corpus_count, model.corpus_total_words = st["corpus_count"], st["corpus_total_words"]
        model._epochs_done, model.train_count, model.total_train_time = st["epochs_done"], st["train_count"], st["total_train_time"]
        model.last_stop = st.get("last_stop")
        model.extra_meta = meta.get("extra", {})
        if meta["words"] is None:
            return model
        counts = data["counts"]
        vocab = _core.Vocab.from_words(meta["words"], [int(c) for c in counts], float(model.sample), float(model.ns_exponent),
                                       bool(model.hs), meta["vocab"]["total_words"], meta["vocab"]["sentences"],
                                       meta["vocab"]["effective_min_count"])
        model._set_vocab(vocab)
        model.wv.vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
        if "vectors_lockf" in data.files:
            model.wv.vectors_lockf = np.array(data["vectors_lockf"], dtype=np.float32)
        for name in cls._array_names:
            setattr(model, name, np.ascontiguousarray(data[name], dtype=np.float32) if name in data.files else None)
        return model

    def _reset_state(self) -> None:
        self.device, self.backend = "cpu", "rust"
        self._torch_adagrad = None  # the torch engine's optimizer state between epochs
        self._vocab = None
        self._raw_counter = None  # the last scan's counts (Rust), until prepare_vocab consumes them
        self._raw_dict = None  # ... or as a dict (raw_vocab)
        self.wv = None
        self.corpus_count = 0
        self.corpus_total_words = 0
        self.train_count = 0
        self.total_train_time = 0.0
        self.running_training_loss = 0.0
        self.trained_word_count = 0
        self.raw_word_count = 0
        self._epochs_done = 0
        self.last_stop = None
        self.extra_meta = {}
