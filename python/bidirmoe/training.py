"""What every bidirmoe model shares: parameter checks, vocabulary building,
the epoch loop (threads in Rust, a producer thread for Python iterables),
learning-rate schedule, progress reporting, callbacks, Ctrl-C, and the
native save format.

A model class subclasses :class:`TrainableModel` and provides
``_init_params()``, ``_train_one_epoch(source, **schedule)`` and the names of
its arrays; everything else lives here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .corpora import check_corpus

logger = logging.getLogger("bidirmoe")

FORMAT_VERSION = 1

RULE_DEFAULT, RULE_DISCARD, RULE_KEEP = 0, 1, 2  # gensim.utils trim-rule values


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


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

    def __init__(self, total_words: int, epoch: int, epochs: int, report_delay: float, bar, hook=None, schedule=None):
        self.total = max(total_words, 1)
        self.epoch, self.epochs = epoch, epochs
        self.report_delay = report_delay
        self.bar = bar
        self.start = time.perf_counter()
        self.last_log = self.start
        self.last_raw = 0
        self.hook, self.schedule = hook, schedule

    def __call__(self, raw: int, effective: int, loss: float, final: bool = False) -> None:
        now = time.perf_counter()
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
        """Scan the corpus once, count words and build the vocabulary.

        Parameters
        ----------
        corpus_iterable : iterable of list of str, optional
            Restartable iterable of sentences (see :class:`bidirmoe.LineSentence`).
        corpus_file : str, optional
            Plain or gzip text file, read by the Rust core.
        trim_rule : callable, optional
            gensim's ``trim_rule(word, count, min_count)`` returning
            ``RULE_DISCARD``, ``RULE_KEEP`` or ``RULE_DEFAULT``.

        Examples
        --------
        >>> from bidirmoe import Word2Vec
        >>> m = Word2Vec(vector_size=8, min_count=1)
        >>> m.build_vocab([["a", "b", "a"]])
        >>> m.wv.index_to_key
        ['a', 'b']
        """
        if update:
            raise ValueError("build_vocab(update=True) is not supported yet: build a new model, or continue training "
                             "this one with train() on text whose new words you accept to ignore")
        if "sentences" in kwargs:
            corpus_iterable = kwargs.pop("sentences")
        if kwargs:
            raise TypeError(f"build_vocab() got unexpected keyword arguments: {sorted(kwargs)}")
        check_corpus(corpus_iterable, corpus_file, passes=1)
        trim_rule = trim_rule if trim_rule is not None else self.trim_rule
        counter = _core.VocabCounter(self.max_vocab_size, trim_rule)
        t0 = time.perf_counter()
        if corpus_file is not None:
            counter.add_file(os.fspath(corpus_file))
        else:
            batch: List[Any] = []
            for sentence in corpus_iterable:
                batch.append(sentence)
                if len(batch) >= 1024:
                    counter.add_sentences(batch)
                    batch.clear()
            counter.add_sentences(batch)
        if counter.total_words == 0:
            raise ValueError("the corpus is empty: it contains no tokens")
        if trim_rule is None:
            vocab = counter.finish(self.min_count, self.max_final_vocab, float(self.sample), float(self.ns_exponent), bool(self.hs))
        else:
            vocab = self._vocab_with_trim_rule(counter, trim_rule)
        if len(vocab) == 0:
            raise ValueError(
                f"the vocabulary is empty: no word occurs at least min_count={vocab.effective_min_count} times "
                f"in {counter.total_words} tokens; lower min_count"
            )
        self._set_vocab(vocab)
        self.corpus_count = counter.sentences
        self.corpus_total_words = counter.total_words
        logger.info(
            "collected %d word types from %d words in %d sentences in %.2fs; kept %d words (min_count=%d), %d corpus words; "
            "subsampling leaves about %.0f", len(counter), counter.total_words, counter.sentences,
            time.perf_counter() - t0, len(vocab), vocab.effective_min_count, vocab.retained_words, vocab.expected_kept_words,
        )
        self._init_params()

    def _vocab_with_trim_rule(self, counter, trim_rule):
        raw = counter.raw_counts()
        min_count = self.min_count
        if self.max_final_vocab is not None and self.max_final_vocab < len(raw):
            ordered = sorted(raw.values(), reverse=True)
            min_count = max(min_count, ordered[self.max_final_vocab] + 1)
        kept = []
        for w, c in raw.items():
            rule = trim_rule(w, c, min_count)
            if rule == RULE_KEEP or (rule != RULE_DISCARD and c >= min_count):
                kept.append((w, c))
        kept.sort(key=lambda wc: (-wc[1], wc[0]))
        return _core.Vocab.from_words([w for w, _ in kept], [c for _, c in kept], float(self.sample),
                                      float(self.ns_exponent), bool(self.hs), counter.total_words, counter.sentences, min_count)

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
        self.wv = wv

    def _wv_size(self) -> int:
        """Width of ``wv``'s vectors (``vector_size``, unless a model stores more per word)."""
        return int(self.vector_size)

    def _init_vectors(self, rows: int) -> np.ndarray:
        """gensim's initialisation: uniform in [-0.5, 0.5) / vector_size, seeded."""
        rng = np.random.default_rng(self.seed)
        return ((rng.random((rows, self.vector_size), dtype=np.float32) - np.float32(0.5)) / np.float32(self.vector_size))

    # ---------------------------------------------------------------- training

    def train(self, corpus_iterable=None, corpus_file=None, total_examples=None, total_words=None, epochs=None,
              start_alpha=None, end_alpha=None, word_count=0, queue_factor=2, report_delay=1.0,
              compute_loss=False, callbacks=(), progress_callback=None, schedule_words=None, first_epoch_words=None,
              **kwargs):
        """Train for ``epochs`` passes over the corpus (gensim's signature).

        The learning rate falls linearly from ``start_alpha`` (default
        ``alpha``) to ``end_alpha`` (default ``min_alpha``) over all epochs of
        this call. Ctrl-C stops the workers promptly and raises
        ``KeyboardInterrupt``; the model keeps what it learned so far.

        Beyond gensim's arguments: ``progress_callback(info)`` is called about
        every ``report_delay`` seconds with a dict (epoch, words done, words/s,
        learning rate, loss); an exception it raises stops training at a
        consistent point (the command line's checkpoints use this).
        ``schedule_words`` sets the length of the learning-rate schedule
        (default: epochs x corpus words) and ``first_epoch_words`` ends the
        first epoch early — with ``word_count`` they resume a schedule exactly.
        When training stops on an exception, ``model.last_stop`` records how
        far it got (epoch, words of that epoch, words in the schedule).

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
        if epochs is None:
            raise ValueError("train() needs an explicit epochs count (e.g. epochs=model.epochs), as gensim does")
        _check(_is_int(epochs) and epochs >= 0, f"epochs must be an int >= 0, got {epochs!r}")
        if corpus_file is None and total_examples is None and total_words is None:
            raise ValueError("train() needs total_examples or total_words (e.g. total_examples=model.corpus_count), as gensim does")
        check_corpus(corpus_iterable, corpus_file, passes=epochs)
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
        else:
            per_sentence = self.corpus_total_words / max(self.corpus_count, 1)
            words_per_epoch = int(round(int(total_examples) * per_sentence))
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
        for cb in callbacks:
            getattr(cb, "on_train_begin", lambda m: None)(self)
        t_start = time.perf_counter()
        try:
            for epoch in range(epochs):
                for cb in callbacks:
                    getattr(cb, "on_epoch_begin", lambda m: None)(self)
                t0 = time.perf_counter()
                max_words = int(first_epoch_words) if (epoch == 0 and first_epoch_words) else 0
                common = dict(alpha=alpha, min_alpha=min_alpha, total_words=schedule_total, words_before=words_done,
                              seed=int(self.seed) & 0xFFFFFFFFFFFFFFFF, epoch=int(self._epochs_done),
                              workers=int(self.workers), compute_loss=compute_loss,
                              report_delay=min(float(report_delay), 0.5), max_words=max_words)
                reporter = _Reporter(max_words or words_per_epoch, epoch, epochs, report_delay, bar,
                                     progress_callback, common)
                common["progress_cb"] = reporter
                try:
                    if corpus_file is not None:
                        raw, eff, ex, loss = self._train_one_epoch(os.fspath(corpus_file), **common)
                    else:
                        raw, eff, ex, loss = self._train_iterable_epoch(corpus_iterable, queue_factor, common)
                except BaseException as e:
                    got = int(getattr(e, "bidirmoe_epoch_words", 0))
                    self.last_stop = {"epochs_done": int(self._epochs_done), "epoch_words": got,
                                      "words_done": words_done + got, "schedule_words": schedule_total}
                    raise
                reporter(raw, eff, loss, final=True)
                elapsed = max(time.perf_counter() - t0, 1e-9)
                words_done += raw
                raw_total += raw
                trained += eff
                self.running_training_loss += loss
                self._epochs_done += 1
                logger.info("EPOCH %d/%d: trained on %d raw words (%d effective words) in %.2fs, %.0f words/s, %.0f effective words/s",
                            epoch + 1, epochs, raw, eff, elapsed, raw / elapsed, eff / elapsed)
                for cb in callbacks:
                    getattr(cb, "on_epoch_end", lambda m: None)(self)
        finally:
            if bar is not None:
                bar.close()
        self.train_count += 1
        self.total_train_time += time.perf_counter() - t_start
        self.trained_word_count, self.raw_word_count = trained, raw_total
        for cb in callbacks:
            getattr(cb, "on_train_end", lambda m: None)(self)
        logger.info("training on %d raw words (%d effective words) took %.1fs, %.0f effective words/s",
                    raw_total, trained, time.perf_counter() - t_start, trained / max(time.perf_counter() - t_start, 1e-9))
        return trained, raw_total

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
            result = self._train_one_epoch(queue, **common)
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

    # ------------------------------------------------------------- persistence

    def save(self, fname) -> None:
        """Save the full model (vectors, output weights, vocabulary, settings)
        to one file, atomically; ``load`` returns a model that can keep training.

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
            },
            "extra": dict(getattr(self, "extra_meta", {}) or {}),
        }
        arrays = {}
        if has_vocab:
            arrays["vectors"] = self.wv.vectors
            arrays["counts"] = np.asarray(self.wv.expandos["count"], dtype=np.int64)
        for name in self._array_names:
            arr = getattr(self, name, None)
            if arr is not None:
                arrays[name] = arr
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        atomic_write(fname, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, fname, mmap=None):
        """Load a model written by :meth:`save`.

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
        model.callbacks = ()
        model.trim_rule = None
        model.hashfxn = hash
        for name in cls._array_names:
            setattr(model, name, None)
        st = meta["state"]
        model.corpus_count, model.corpus_total_words = st["corpus_count"], st["corpus_total_words"]
        model._epochs_done, model.train_count, model.total_train_time = st["epochs_done"], st["train_count"], st["total_train_time"]
        model.extra_meta = meta.get("extra", {})
        if meta["words"] is None:
            return model
        counts = data["counts"]
        vocab = _core.Vocab.from_words(meta["words"], [int(c) for c in counts], float(model.sample), float(model.ns_exponent),
                                       bool(model.hs), meta["vocab"]["total_words"], meta["vocab"]["sentences"],
                                       meta["vocab"]["effective_min_count"])
        model._set_vocab(vocab)
        model.wv.vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
        for name in cls._array_names:
            setattr(model, name, np.ascontiguousarray(data[name], dtype=np.float32) if name in data.files else None)
        return model

    def _reset_state(self) -> None:
        self._vocab = None
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
