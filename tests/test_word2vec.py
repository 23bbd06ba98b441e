"""Word2Vec: gensim-compatible API, learning, determinism, training loop,
callbacks, loss, logging, persistence, errors, panics and Ctrl-C."""

from __future__ import annotations

import gzip
import inspect
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest

import bidirmoe
from bidirmoe import Word2Vec

FAST = dict(vector_size=24, workers=1, seed=1, min_count=5)


def train_model(corpus=None, corpus_file=None, **kw):
    params = dict(FAST)
    params.update(kw)
    if corpus_file is not None:
        return Word2Vec(corpus_file=str(corpus_file), **params)
    return Word2Vec(corpus, **params)


# --------------------------------------------------------------- signature

GENSIM_DEFAULTS = dict(
    sentences=None, corpus_file=None, vector_size=100, alpha=0.025, window=5, min_count=5, max_vocab_size=None,
    sample=1e-3, seed=1, workers=3, min_alpha=0.0001, sg=0, hs=0, negative=5, ns_exponent=0.75, cbow_mean=1,
    epochs=5, max_final_vocab=None, shrink_windows=True, callbacks=(),
)


def test_constructor_signature_matches_gensim_defaults():
    params = inspect.signature(Word2Vec.__init__).parameters
    for name, default in GENSIM_DEFAULTS.items():
        assert name in params, name
        assert params[name].default == default, name
        assert type(params[name].default) is type(default), name
    # The first two may be passed positionally, as in gensim.
    names = [n for n in params if n != "self"]
    assert names[:2] == ["sentences", "corpus_file"]


def test_constructor_signature_matches_installed_gensim():
    gensim = pytest.importorskip("gensim")
    theirs = inspect.signature(gensim.models.Word2Vec.__init__).parameters
    ours = inspect.signature(Word2Vec.__init__).parameters
    for name, default in GENSIM_DEFAULTS.items():
        assert theirs[name].default == ours[name].default == default, name
    # Every gensim argument is accepted, with gensim's default.
    for name, p in theirs.items():
        if name == "self":
            continue
        assert name in ours, f"gensim argument {name!r} missing"
        assert ours[name].default == p.default, name
    # Positional order of gensim's arguments is kept.
    theirs_order = [n for n in theirs if n != "self"]
    ours_order = [n for n in ours if n != "self" and n in theirs]
    assert ours_order == theirs_order


def test_constructor_stores_parameters():
    m = Word2Vec(vector_size=7, window=3, min_count=2, sg=1, hs=1, negative=0, epochs=4, seed=9)
    assert (m.vector_size, m.window, m.min_count, m.sg, m.hs, m.negative, m.epochs, m.seed) == (7, 3, 2, 1, 1, 0, 4, 9)
    assert m.wv is None  # no vocabulary yet, so no vectors


# ---------------------------------------------------------------- learning

CONFIGS = {
    "cbow_mean": dict(sg=0, cbow_mean=1),
    "cbow_sum": dict(sg=0, cbow_mean=0),
    "skipgram": dict(sg=1),
    "cbow_hs": dict(sg=0, hs=1, negative=0),
    "skipgram_hs": dict(sg=1, hs=1, negative=0),
    "cbow_hs_and_ns": dict(sg=0, hs=1, negative=5),
}


@pytest.mark.parametrize("mode", ["iterable", "corpus_file"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_learns_planted_structure(corpus, corpus_file, groups, precision, precision_threshold, config, mode):
    kw = dict(CONFIGS[config], epochs=3)
    m = train_model(corpus, **kw) if mode == "iterable" else train_model(corpus_file=corpus_file, **kw)
    assert np.isfinite(m.wv.vectors).all()
    p = precision(m.wv, groups)
    assert p >= precision_threshold, f"{config}/{mode}: precision {p:.3f}"
    if m.negative:
        assert m.syn1neg is not None and np.abs(m.syn1neg).sum() > 0
    else:
        assert m.syn1neg is None
    if m.hs:
        assert m.syn1 is not None and np.abs(m.syn1).sum() > 0
    else:
        assert m.syn1 is None


def test_untrained_model_fails_the_precision_test(corpus, groups, precision, precision_threshold):
    m = Word2Vec(**FAST)
    m.build_vocab(corpus)
    assert precision(m.wv, groups) < min(precision_threshold, 0.3)
    # epochs=0 trains nothing either.
    m0 = train_model(corpus, epochs=0)
    assert m0.trained_word_count == 0
    assert precision(m0.wv, groups) < min(precision_threshold, 0.3)


def test_initial_vectors_like_gensim(corpus):
    m = Word2Vec(**FAST)
    m.build_vocab(corpus)
    v = m.wv.vectors
    assert v.dtype == np.float32 and v.shape == (len(m.wv.index_to_key), 24)
    # gensim 4's width, [-1, 1) / vector_size (tests/test_gensim_surface.py: the same values)
    assert 0.9 / 24 < np.abs(v).max() <= 1.0 / 24 + 1e-7
    assert np.unique(v).size > v.size // 2
    assert np.all(m.syn1neg == 0)


@pytest.mark.parametrize("mode", ["iterable", "corpus_file"])
@pytest.mark.parametrize("sg", [0, 1])
def test_multiple_workers(corpus, corpus_file, groups, precision, precision_threshold, mode, sg):
    kw = dict(sg=sg, epochs=3, workers=2)
    m = train_model(corpus, **kw) if mode == "iterable" else train_model(corpus_file=corpus_file, **kw)
    assert np.isfinite(m.wv.vectors).all()
    assert precision(m.wv, groups) >= precision_threshold
    assert m.raw_word_count == 3 * sum(len(s) for s in corpus)


# ------------------------------------------------------------- determinism


@pytest.mark.parametrize("mode", ["iterable", "corpus_file"])
@pytest.mark.parametrize("sg", [0, 1])
def test_single_worker_is_deterministic(corpus, corpus_file, mode, sg):
    def run(seed):
        kw = dict(sg=sg, epochs=2, seed=seed, hs=1)
        return train_model(corpus, **kw) if mode == "iterable" else train_model(corpus_file=corpus_file, **kw)

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a.wv.vectors, b.wv.vectors)
    assert np.array_equal(a.syn1neg, b.syn1neg)
    assert np.array_equal(a.syn1, b.syn1)
    assert a.trained_word_count == b.trained_word_count
    assert not np.array_equal(a.wv.vectors, c.wv.vectors)
    assert not np.allclose(a.wv.vectors, c.wv.vectors, atol=1e-3)


def test_constructor_equals_build_vocab_plus_train(corpus):
    a = train_model(corpus, epochs=2)
    b = Word2Vec(**dict(FAST, epochs=2))
    b.build_vocab(corpus)
    b.train(corpus, total_examples=b.corpus_count, epochs=b.epochs)
    assert a.wv.index_to_key == b.wv.index_to_key
    assert np.array_equal(a.wv.vectors, b.wv.vectors)
    assert np.array_equal(a.syn1neg, b.syn1neg)


def test_iterable_and_corpus_file_same_vocabulary(corpus, corpus_file):
    a = train_model(corpus, epochs=1)
    b = train_model(corpus_file=corpus_file, epochs=1)
    assert a.wv.index_to_key == b.wv.index_to_key
    assert np.array_equal(a._vocab.counts, b._vocab.counts)
    assert a.corpus_count == b.corpus_count and a.corpus_total_words == b.corpus_total_words
    # Same seed, same initialisation.
    a0, b0 = Word2Vec(**FAST), Word2Vec(**FAST)
    a0.build_vocab(corpus)
    b0.build_vocab(corpus_file=str(corpus_file))
    assert np.array_equal(a0.wv.vectors, b0.wv.vectors)


# ------------------------------------------------------------ train() API


def test_train_requires_epochs_and_corpus_size(corpus):
    m = Word2Vec(**FAST)
    m.build_vocab(corpus)
    with pytest.raises(ValueError, match="epochs"):
        m.train(corpus, total_examples=m.corpus_count)
    with pytest.raises(ValueError, match="total_examples|total_words"):
        m.train(corpus, epochs=1)
    # Either one is enough.
    m.train(corpus, total_examples=m.corpus_count, epochs=1)
    m.train(corpus, total_words=m.corpus_total_words, epochs=1)


def test_train_before_build_vocab():
    m = Word2Vec(**FAST)
    with pytest.raises(RuntimeError, match="build_vocab"):
        m.train([["a", "b"]], total_examples=1, epochs=1)


def test_train_returns_effective_and_raw_words(corpus, planted):
    m = Word2Vec(**FAST)
    m.build_vocab(corpus)
    eff, raw = m.train(corpus, total_examples=m.corpus_count, epochs=3)
    n = planted.n_tokens
    assert raw == 3 * n
    assert (m.trained_word_count, m.raw_word_count) == (eff, raw)
    # Subsampling (sample=1e-3) and min_count drop words.
    assert 0 < eff < m._vocab.retained_words * 3
    expected = 3 * m._vocab.expected_kept_words
    assert abs(eff - expected) < 0.05 * expected


def test_effective_words_without_subsampling(corpus, planted):
    m = Word2Vec(**dict(FAST, sample=0))
    m.build_vocab(corpus)
    eff, raw = m.train(corpus, total_examples=m.corpus_count, epochs=2)
    retained = sum(c for c in planted.counts().values() if c >= 5)
    assert m._vocab.retained_words == retained
    assert eff == 2 * retained
    assert raw == 2 * planted.n_tokens
    # Second call: counts are per call, not cumulative.
    eff2, raw2 = m.train(corpus, total_examples=m.corpus_count, epochs=1)
    assert (eff2, raw2) == (retained, planted.n_tokens)
    assert (m.trained_word_count, m.raw_word_count) == (eff2, raw2)


def test_train_corpus_file(corpus_file, planted):
    m = Word2Vec(**FAST)
    m.build_vocab(corpus_file=str(corpus_file))
    eff, raw = m.train(corpus_file=str(corpus_file), total_words=m.corpus_total_words, epochs=2)
    assert raw == 2 * planted.n_tokens
    assert 0 < eff < raw


def test_continued_training_changes_vectors(corpus):
    m = train_model(corpus, epochs=1)
    before = m.wv.vectors.copy()
    syn1neg = m.syn1neg.copy()
    m.train(corpus, total_examples=m.corpus_count, epochs=1)
    assert not np.array_equal(before, m.wv.vectors)
    assert not np.array_equal(syn1neg, m.syn1neg)
    assert np.isfinite(m.wv.vectors).all()
    assert m.train_count == 2


def test_train_single_pass_generator(corpus):
    # One epoch needs one pass: a generator is fine (as in gensim).
    m = Word2Vec(**FAST)
    m.build_vocab(corpus)
    before = m.wv.vectors.copy()
    eff, raw = m.train((s for s in corpus), total_examples=len(corpus), epochs=1)
    assert raw == sum(len(s) for s in corpus)
    assert not np.array_equal(before, m.wv.vectors)


def test_sentences_keyword_alias(corpus):
    m = Word2Vec(**FAST)
    m.build_vocab(sentences=corpus)
    eff, raw = m.train(sentences=corpus, total_examples=m.corpus_count, epochs=1)
    assert raw == sum(len(s) for s in corpus)


def test_tuples_and_oov_words(corpus):
    m = train_model([tuple(s) for s in corpus], epochs=1)
    assert len(m.wv.index_to_key) > 0
    # Words not in the vocabulary are skipped but counted as raw words.
    eff, raw = m.train([["zzz_unknown"] * 10 + list(corpus[0])], total_examples=1, epochs=1)
    assert raw == 10 + len(corpus[0])


def test_long_python_sentence_is_chunked_not_truncated():
    # A 25,000-token sentence is trained on completely (in 10,000-token chunks).
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.integers(0, 50, size=25_000)]
    m = Word2Vec([words], vector_size=8, min_count=1, sample=0, epochs=2, workers=1)
    assert m.corpus_count == 1
    assert m.raw_word_count == 50_000
    assert m.trained_word_count == 50_000


# ---------------------------------------------------------- callbacks/loss


class Recorder:
    def __init__(self):
        self.events = []
        self.losses = []
        self.snapshots = []

    def on_train_begin(self, model):
        self.events.append("train_begin")

    def on_epoch_begin(self, model):
        self.events.append("epoch_begin")

    def on_epoch_end(self, model):
        self.events.append("epoch_end")
        self.losses.append(model.get_latest_training_loss())
        self.snapshots.append(model.wv.vectors.copy())

    def on_train_end(self, model):
        self.events.append("train_end")


def test_callbacks_order_and_counts(corpus):
    rec = Recorder()
    m = train_model(corpus, epochs=3, callbacks=[rec])
    assert rec.events == ["train_begin"] + ["epoch_begin", "epoch_end"] * 3 + ["train_end"]
    # Vectors change between epochs.
    assert not np.array_equal(rec.snapshots[0], rec.snapshots[1])
    assert np.array_equal(rec.snapshots[-1], m.wv.vectors)
    # train() takes callbacks too.
    rec2 = Recorder()
    m.train(corpus, total_examples=m.corpus_count, epochs=2, callbacks=[rec2])
    assert rec2.events == ["train_begin"] + ["epoch_begin", "epoch_end"] * 2 + ["train_end"]


def test_callbacks_partial_and_gensim_base_class(corpus):
    class OnlyEpochEnd:
        def __init__(self):
            self.n = 0

        def on_epoch_end(self, model):
            self.n += 1

    cb = OnlyEpochEnd()
    train_model(corpus, epochs=2, callbacks=[cb])
    assert cb.n == 2
    gensim = pytest.importorskip("gensim")

    class G(gensim.models.callbacks.CallbackAny2Vec):
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, model):
            self.epochs += 1

    g = G()
    train_model(corpus, epochs=2, callbacks=[g])
    assert g.epochs == 2


@pytest.mark.parametrize("config", ["cbow_mean", "skipgram", "cbow_hs", "skipgram_hs"])
def test_loss_positive_and_decreasing(corpus, config):
    m = Word2Vec(**dict(FAST, compute_loss=True, sample=0, **CONFIGS[config]))
    m.build_vocab(corpus)
    losses = []
    for _ in range(4):
        # As in gensim, each train() call says whether it tracks the loss.
        m.train(corpus, total_examples=m.corpus_count, epochs=1, compute_loss=True)
        losses.append(m.get_latest_training_loss())
    assert all(np.isfinite(losses)) and all(x > 0 for x in losses)
    assert losses[-1] < losses[0], losses


def test_loss_via_callback_is_running_sum(corpus):
    rec = Recorder()
    m = train_model(corpus, epochs=3, compute_loss=True, callbacks=[rec])
    assert len(rec.losses) == 3
    assert rec.losses[0] > 0
    assert all(b > a for a, b in zip(rec.losses, rec.losses[1:])), rec.losses
    assert m.get_latest_training_loss() == pytest.approx(rec.losses[-1])
    # A new train() call starts the sum again.
    three_epochs = rec.losses[-1]
    m.train(corpus, total_examples=m.corpus_count, epochs=1, callbacks=[Recorder()], compute_loss=True)
    assert 0 < m.get_latest_training_loss() < three_epochs
    # ... and, as gensim's train(compute_loss=False) default, a call without it tracks nothing.
    m.train(corpus, total_examples=m.corpus_count, epochs=1)
    assert m.get_latest_training_loss() == 0.0 and m.compute_loss is False


def test_no_loss_without_compute_loss(corpus):
    m = train_model(corpus, epochs=1)
    assert m.get_latest_training_loss() == 0.0


def test_logging_reports_speed(corpus, caplog):
    caplog.set_level(logging.INFO, logger="bidirmoe")
    train_model(corpus, epochs=2)
    bidirmoe_records = [r for r in caplog.records if r.name.startswith("bidirmoe")]
    assert bidirmoe_records
    assert "words/s" in caplog.text


def test_progress_bar(corpus, capsys):
    pytest.importorskip("tqdm")
    m = train_model(corpus, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "Word2Vec" in err and "100%" in err
    assert np.isfinite(m.wv.vectors).all()


# ------------------------------------------------------------ save / load

PARAMS = ("vector_size", "alpha", "window", "min_count", "max_vocab_size", "sample", "seed", "workers", "min_alpha",
          "sg", "hs", "negative", "ns_exponent", "cbow_mean", "epochs", "max_final_vocab", "shrink_windows",
          "compute_loss")


@pytest.fixture
def hs_ns_model(corpus):
    return train_model(corpus, epochs=2, hs=1, negative=3, sg=1, window=3, alpha=0.03, min_alpha=0.001,
                       ns_exponent=0.5, sample=1e-2, max_final_vocab=500, shrink_windows=False)


def test_save_load_round_trip(hs_ns_model, tmp_path):
    m = hs_ns_model
    path = tmp_path / "m.model"
    m.save(str(path))
    assert os.listdir(tmp_path) == ["m.model"], "no temp files left behind"
    l = Word2Vec.load(str(path))
    assert isinstance(l, Word2Vec)
    assert np.array_equal(l.wv.vectors, m.wv.vectors)
    assert l.wv.vectors.dtype == np.float32
    assert np.array_equal(l.syn1neg, m.syn1neg)
    assert np.array_equal(l.syn1, m.syn1)
    assert l.wv.index_to_key == m.wv.index_to_key
    assert l.wv.key_to_index == m.wv.key_to_index
    assert np.array_equal(l._vocab.counts, m._vocab.counts)
    np.testing.assert_array_equal(l._vocab.keep_probability, m._vocab.keep_probability)
    assert l._vocab.huffman() == m._vocab.huffman()
    assert l._vocab.effective_min_count == m._vocab.effective_min_count
    for name in PARAMS:
        assert getattr(l, name) == getattr(m, name), name
    assert (l.corpus_count, l.corpus_total_words) == (m.corpus_count, m.corpus_total_words)
    # Negative sampling table rebuilt the same way.
    assert np.array_equal(l._vocab.sample_negatives(1000, 5), m._vocab.sample_negatives(1000, 5))


def test_loaded_model_keeps_training_like_the_original(hs_ns_model, corpus, tmp_path):
    m = hs_ns_model
    path = tmp_path / "m.model"
    m.save(path)
    l = Word2Vec.load(path)
    before = l.wv.vectors.copy()
    m.train(corpus, total_examples=m.corpus_count, epochs=1)
    l.train(corpus, total_examples=l.corpus_count, epochs=1)
    assert not np.array_equal(before, l.wv.vectors)
    assert np.isfinite(l.wv.vectors).all()
    # workers=1: continuing from the file is bit-identical to continuing in memory.
    assert np.array_equal(l.wv.vectors, m.wv.vectors)
    assert np.array_equal(l.syn1neg, m.syn1neg)
    assert np.array_equal(l.syn1, m.syn1)


def test_save_load_numpy_scalar_parameters(corpus, tmp_path):
    # numpy integers / floats are accepted as parameters (the checks allow
    # np.integer and np.floating), so a model built with them must save too.
    m = Word2Vec(corpus, vector_size=np.int64(16), window=np.int32(3), min_count=np.int64(5), epochs=np.int64(1),
                 seed=np.int64(3), alpha=np.float32(0.02), workers=1)
    path = tmp_path / "np.model"
    m.save(path)
    l = Word2Vec.load(path)
    assert np.array_equal(l.wv.vectors, m.wv.vectors)
    assert (l.vector_size, l.window, l.min_count, l.epochs, l.seed) == (16, 3, 5, 1, 3)
    assert l.alpha == pytest.approx(0.02)


def test_save_overwrites_atomically(corpus, tmp_path):
    path = tmp_path / "m.model"
    a = train_model(corpus, epochs=1)
    a.save(path)
    b = train_model(corpus, epochs=1, seed=7)
    b.save(path)
    assert sorted(os.listdir(tmp_path)) == ["m.model"]
    assert np.array_equal(Word2Vec.load(path).wv.vectors, b.wv.vectors)


def test_failed_save_keeps_old_file(corpus, tmp_path, monkeypatch):
    path = tmp_path / "m.model"
    a = train_model(corpus, epochs=1)
    a.save(path)
    old = path.read_bytes()

    def broken_savez(f, *args, **arrays):
        f.write(b"partial garbage" * 100)
        raise OSError("disk full (simulated)")

    def broken_fsync(fd):
        raise OSError("disk full (simulated)")

    # Fail while writing (whichever numpy writer is used) or when syncing.
    monkeypatch.setattr(np, "savez", broken_savez)
    monkeypatch.setattr(np, "savez_compressed", broken_savez)
    monkeypatch.setattr(os, "fsync", broken_fsync)
    b = train_model(corpus, epochs=1, seed=7)
    with pytest.raises(OSError, match="simulated"):
        b.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.model"], "temp file left behind"
    assert path.read_bytes() == old
    assert np.array_equal(Word2Vec.load(path).wv.vectors, a.wv.vectors)


def test_save_into_missing_directory(corpus, tmp_path):
    m = train_model(corpus, epochs=1)
    with pytest.raises(FileNotFoundError):
        m.save(tmp_path / "missing" / "m.model")
    assert os.listdir(tmp_path) == []


def test_save_model_without_vocabulary(tmp_path, corpus):
    # As in gensim, a model can be saved before build_vocab: it loads back with
    # its parameters and no vocabulary, and can then be trained like a new one.
    m = Word2Vec(vector_size=8, window=3, min_count=2, seed=4, workers=1, epochs=1)
    path = tmp_path / "empty.model"
    m.save(path)
    assert os.listdir(tmp_path) == ["empty.model"]
    l = Word2Vec.load(path)
    assert (l.vector_size, l.window, l.min_count, l.seed, l.epochs) == (8, 3, 2, 4, 1)
    assert l.wv is None
    l.build_vocab(corpus)
    l.train(corpus, total_examples=l.corpus_count, epochs=1)
    fresh = Word2Vec(corpus, vector_size=8, window=3, min_count=2, seed=4, workers=1, epochs=1)
    assert np.array_equal(l.wv.vectors, fresh.wv.vectors)  # one worker and a seed: the same as never saved


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Word2Vec.load(tmp_path / "missing.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a model\x00\xff" * 50)
    with pytest.raises(ValueError):
        Word2Vec.load(garbage)
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        Word2Vec.load(empty)
    other_npz = tmp_path / "other.npz"
    np.savez(other_npz, x=np.arange(3))
    with pytest.raises(ValueError):
        Word2Vec.load(other_npz)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("corpus_", [[], [[]], [[], [], []]], ids=["empty", "one_empty_sentence", "empty_sentences"])
def test_empty_corpus(corpus_):
    with pytest.raises(ValueError, match="empty"):
        Word2Vec(corpus_, **FAST)
    m = Word2Vec(**FAST)
    with pytest.raises(ValueError, match="empty"):
        m.build_vocab(corpus_)


@pytest.mark.parametrize("content", [b"", b"\n\n  \t\n"], ids=["empty_file", "blank_lines"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_empty_corpus_file(tmp_path, content, compress):
    path = tmp_path / "empty.txt"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(ValueError, match="empty"):
        Word2Vec(corpus_file=str(path), **FAST)


def test_vocabulary_empty_after_min_count(corpus):
    with pytest.raises(ValueError, match="min_count"):
        Word2Vec(corpus, **dict(FAST, min_count=10**9))
    with pytest.raises(ValueError, match="min_count"):
        Word2Vec([["a", "b"], ["c"]], **FAST)


BAD_PARAMS = [
    dict(vector_size=0), dict(vector_size=-3), dict(vector_size=1.5), dict(window=0), dict(negative=-1),
    dict(negative=0, hs=0), dict(alpha=0), dict(alpha=-0.1), dict(sample=-1), dict(workers=0), dict(epochs=-1),
    dict(sg=2), dict(min_count=-1), dict(hs=2), dict(cbow_mean=2), dict(alpha=float("nan")), dict(min_alpha=-1),
    dict(max_vocab_size=0), dict(max_final_vocab=0),
]


@pytest.mark.parametrize("bad", BAD_PARAMS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_bad_parameters(bad, corpus):
    with pytest.raises(ValueError):
        Word2Vec(**dict(FAST, **bad))
    with pytest.raises(ValueError):
        Word2Vec(corpus[:100], **dict(FAST, **bad))


def test_missing_corpus_file(tmp_path, corpus):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        Word2Vec(corpus_file=missing, **FAST)
    m = Word2Vec(**FAST)
    with pytest.raises(FileNotFoundError):
        m.build_vocab(corpus_file=missing)
    m.build_vocab(corpus)
    with pytest.raises(FileNotFoundError):
        m.train(corpus_file=missing, total_words=100, epochs=1)


@pytest.mark.parametrize("make", [lambda c: (s for s in c), lambda c: iter(c), lambda c: map(list, c)],
                         ids=["generator", "iterator", "map"])
def test_one_shot_iterator_with_several_epochs(corpus, make):
    with pytest.raises(TypeError, match="restartable"):
        Word2Vec(make(corpus), **dict(FAST, epochs=2))
    m = Word2Vec(**FAST)
    m.build_vocab(make(corpus))  # a single pass is fine
    with pytest.raises(TypeError, match="restartable"):
        m.train(make(corpus), total_examples=len(corpus), epochs=2)


def test_sentences_as_strings():
    with pytest.raises(TypeError, match="list of str tokens"):
        Word2Vec(["the cat sat on the mat", "a dog"] * 10, **dict(FAST, min_count=1))
    with pytest.raises(TypeError, match="list of str tokens"):
        Word2Vec("the cat sat on the mat", **dict(FAST, min_count=1))


@pytest.mark.parametrize("bad", [[[1, 2, 3]], [["a", None]], [[b"bytes", b"tokens"]], [["a", "b"], 5]],
                         ids=["ints", "none", "bytes", "int_sentence"])
def test_non_str_tokens(bad):
    with pytest.raises(TypeError):
        Word2Vec(bad * 3, **dict(FAST, min_count=1))


def test_non_str_token_message():
    with pytest.raises(TypeError, match="str"):
        Word2Vec([["a", 1]] * 3, **dict(FAST, min_count=1))


def test_both_sentences_and_corpus_file(corpus, corpus_file):
    with pytest.raises(TypeError):
        Word2Vec(corpus, corpus_file=str(corpus_file), **FAST)
    m = Word2Vec(**FAST)
    with pytest.raises(TypeError):
        m.build_vocab(corpus, corpus_file=str(corpus_file))


class FlakyCorpus:
    """Fine for the vocabulary scan; from the second pass on, ``bad`` is
    served after half the corpus (an exception to raise, or a bad sentence)."""

    def __init__(self, sentences, bad):
        self.sentences, self.bad, self.passes = sentences, bad, 0

    def __iter__(self):
        self.passes += 1
        for i, s in enumerate(self.sentences):
            if self.passes > 1 and i == len(self.sentences) // 2:
                if isinstance(self.bad, BaseException):
                    raise self.bad
                yield self.bad
            yield s


@pytest.mark.parametrize("workers", [1, 2])
def test_exception_in_corpus_iterator_propagates(corpus, workers):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        Word2Vec(FlakyCorpus(corpus, ValueError("boom")), **dict(FAST, epochs=2, workers=workers))
    with pytest.raises(TypeError):
        Word2Vec(FlakyCorpus(corpus, [1, 2, 3]), **dict(FAST, epochs=2, workers=workers))
    assert time.monotonic() - t0 < 10
    assert not [t for t in threading.enumerate() if t.name == "bidirmoe-producer"]


# ------------------------------------------------------------------ panics


def test_rust_panic_in_worker_is_runtime_error(corpus):
    with pytest.raises(RuntimeError, match="panic"):
        bidirmoe._core._panic_in_worker()
    # The interpreter survives and training still works; and again.
    with pytest.raises(RuntimeError):
        bidirmoe._core._panic_in_worker()
    m = train_model(corpus, epochs=1, workers=2)
    assert np.isfinite(m.wv.vectors).all()


# ------------------------------------------------------------------ Ctrl-C


class RepeatedCorpus:
    """A restartable iterable yielding ``base`` ``times`` times, lazily."""

    def __init__(self, base, times):
        self.base, self.times = base, times

    def __iter__(self):
        for _ in range(self.times):
            yield from self.base


def _interrupt_training(train, delay=0.5):
    """Run ``train()`` and send SIGINT to the main thread after ``delay`` s.
    Returns (seconds from the signal to KeyboardInterrupt, or None if training
    ended without it; seconds the whole call took)."""
    main_ident = threading.main_thread().ident
    assert threading.get_ident() == main_ident, "signals are handled in the main thread"
    sent = []

    def fire():
        sent.append(time.monotonic())
        signal.pthread_kill(main_ident, signal.SIGINT)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(delay, fire)
    t0 = time.monotonic()
    latency = None
    try:
        timer.start()
        try:
            train()
        except KeyboardInterrupt:
            latency = time.monotonic() - sent[0]
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, old)
    return latency, time.monotonic() - t0


def _check_usable_after_interrupt(m, corpus):
    assert np.isfinite(m.wv.vectors).all()
    sims = m.wv.most_similar("t0w0", topn=5)
    assert len(sims) == 5
    assert not [t for t in threading.enumerate() if t.name == "bidirmoe-producer" and t.is_alive()]
    before = m.wv.vectors.copy()
    eff, raw = m.train(corpus, total_examples=len(corpus), epochs=1)
    assert raw == sum(len(s) for s in corpus)
    assert not np.array_equal(before, m.wv.vectors)
    assert np.isfinite(m.wv.vectors).all()


# Expensive per token (wide vectors, many negatives, wide skip-gram window),
# so one epoch over ~2.4M tokens takes several seconds: a KeyboardInterrupt
# within 5 s of the signal proves the workers stop mid-epoch, not at its end.
HEAVY = dict(vector_size=200, negative=20, window=10, sample=0, sg=1, workers=2, min_count=5, seed=1)
REPS = 60


def test_ctrl_c_corpus_file(corpus, planted, tmp_path):
    big = tmp_path / "big.txt"
    text = planted.text()
    with open(big, "w") as f:
        for _ in range(REPS):
            f.write(text)
    m = Word2Vec(**HEAVY)
    m.build_vocab(corpus)
    latency, _ = _interrupt_training(
        lambda: m.train(corpus_file=str(big), total_words=REPS * planted.n_tokens, epochs=3))
    assert latency is not None, "training finished without KeyboardInterrupt"
    assert latency < 5.0
    _check_usable_after_interrupt(m, corpus)


def test_ctrl_c_iterable(corpus):
    big = RepeatedCorpus(corpus, REPS)  # 240k sentences per epoch, generated lazily
    m = Word2Vec(**HEAVY)
    m.build_vocab(corpus)
    latency, _ = _interrupt_training(lambda: m.train(big, total_examples=REPS * len(corpus), epochs=3))
    assert latency is not None, "training finished without KeyboardInterrupt"
    assert latency < 5.0
    _check_usable_after_interrupt(m, corpus)


def test_ctrl_c_in_constructor(corpus):
    # Interrupting the constructor (vocabulary scan or training) must not hang either.
    latency, _ = _interrupt_training(lambda: Word2Vec(RepeatedCorpus(corpus, REPS), **dict(HEAVY, epochs=3)),
                                     delay=1.0)
    assert latency is not None and latency < 5.0
    # Still fine afterwards.
    m = train_model(corpus, epochs=1)
    assert np.isfinite(m.wv.vectors).all()
