"""The Rust data path for the torch backend: ``_core.BatchStream`` hands out
training examples (targets, windows, chunks, negatives) as numpy batches.

Checked against independent numpy recomputations: the exact examples of a
small corpus, the negative-sampling distribution, exact resume after a stop
(plain and gzip files), determinism, and the word counts progress relies on."""

import gzip
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest

from bidirmoe import _core

TINY = """the cat sat on the mat
a dog ran fast
the cat ran
solo

zzz the dog sat on a mat of the cat
the the
"""


def schedule(**kw):
    s = dict(alpha=0.025, min_alpha=0.0001, total_words=1_000_000, words_before=0, seed=7, epoch=0, workers=1,
             compute_loss=False, report_delay=1.0, progress_cb=None, max_words=0, lockf=None, resume=None)
    s.update(kw)
    return s


def vocab_of(path, min_count=1, sample=0.0, hs=False):
    counter = _core.VocabCounter()
    counter.add_file(str(path))
    return counter.finish(min_count, None, sample, 0.75, hs)


def stream(vocab, source, sched=None, **settings):
    s = dict(kind="window", window=2, shrink_windows=False, negative=0, batch_targets=64, prefetch=4)
    s.update(settings)
    return _core.BatchStream(vocab, source if isinstance(source, _core.JobQueue) else str(source), s, sched or schedule())


def collect(batches):
    """Concatenate a list of batch dicts, key by key (rows for arrays, a list for scalars)."""
    out = {}
    for k in batches[0]:
        vals = [b[k] for b in batches]
        out[k] = np.concatenate(vals) if isinstance(vals[0], np.ndarray) else vals
    return out


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY)
    return path


def expected_windows(text, words, window):
    """Targets and context rows computed directly: every in-vocabulary position
    of a line with at least one in-vocabulary neighbour; columns = offsets
    -window..-1, 1..window; -1 where the line has no word."""
    index = {w: i for i, w in enumerate(words)}
    offsets = [r for r in range(-window, window + 1) if r != 0]
    targets, rows = [], []
    for line in text.splitlines():
        ids = [index[t] for t in line.split() if t in index]
        for pos in range(len(ids) if len(ids) >= 2 else 0):
            targets.append(ids[pos])
            rows.append([ids[pos + r] if 0 <= pos + r < len(ids) else -1 for r in offsets])
    return np.array(targets, dtype=np.int64), np.array(rows, dtype=np.int64).reshape(-1, 2 * window)


def test_window_batches_are_exactly_the_corpus_windows(tiny):
    voc = vocab_of(tiny, min_count=2)  # the singletons ("fast", "solo", "zzz", "of") are out of vocabulary
    assert "solo" not in voc.words and "the" in voc.words
    for window in (1, 2, 5):
        got = collect(list(stream(voc, tiny, window=window, batch_targets=3)))
        targets, context = expected_windows(TINY, voc.words, window)
        np.testing.assert_array_equal(got["targets"], targets)
        np.testing.assert_array_equal(got["context"], context)
        assert "negatives" not in got
        assert sum(got["raw_words"]) == len(TINY.split())


def test_window_batch_shapes_and_dtypes(corpus_file):
    voc = vocab_of(corpus_file, min_count=2, sample=1e-3)
    s = stream(voc, corpus_file, schedule(workers=2), window=3, shrink_windows=True, negative=4, batch_targets=500)
    batches = list(s)
    assert s.finish()[3] == 0.0
    sizes = [len(b["targets"]) for b in batches]
    assert max(sizes) == 500 and sum(size < 500 for size in sizes) <= 2, "only each worker's last batch is partial"
    for b in batches:
        assert set(b) == {"targets", "context", "negatives", "lr", "raw_words"}
        n = len(b["targets"])
        assert b["targets"].dtype == b["context"].dtype == b["negatives"].dtype == np.int64
        assert b["context"].shape == (n, 6) and b["negatives"].shape == (n, 4)
        assert isinstance(b["lr"], float) and 0.0001 <= b["lr"] <= 0.025 + 1e-6
        assert isinstance(b["raw_words"], int)
        assert ((b["context"] >= -1) & (b["context"] < len(voc))).all()
        assert ((b["negatives"] >= 0) & (b["negatives"] < len(voc))).all()
        assert (b["targets"] >= 0).all() and ((b["context"] >= 0).sum(axis=1) >= 1).all()
        # A shrunk window is one contiguous run of words around the target.
        present = b["context"] >= 0
        left, right = present[:, :3], present[:, 3:]
        assert (np.diff(left.astype(int), axis=1) >= 0).all() and (np.diff(right.astype(int), axis=1) <= 0).all()


def test_sentence_batches_are_the_chunks(tiny):
    voc = vocab_of(tiny, min_count=1)
    index = {w: i for i, w in enumerate(voc.words)}
    max_len, k = 3, 2
    batches = list(stream(voc, tiny, kind="sentence", max_len=max_len, negative=k, batch_targets=7))
    chunks = []
    for line in TINY.splitlines():
        ids = [index[t] for t in line.split()]
        chunks += [c for c in (ids[i:i + max_len] for i in range(0, len(ids), max_len)) if len(c) >= 2]
    want = np.array([c + [-1] * (max_len - len(c)) for c in chunks], dtype=np.int64)
    for b in batches:
        assert set(b) == {"tokens", "negatives", "lr", "raw_words"}
        assert b["tokens"].dtype == b["negatives"].dtype == np.int64
        assert b["tokens"].shape[1:] == (max_len,) and b["negatives"].shape == b["tokens"].shape + (k,)
        assert (b["tokens"] >= 0).sum() <= 7
        np.testing.assert_array_equal(b["negatives"] < 0, np.repeat((b["tokens"] < 0)[:, :, None], k, axis=2))
    np.testing.assert_array_equal(collect(batches)["tokens"], want)
    assert sum(b["raw_words"] for b in batches) == len(TINY.split())


def test_negatives_follow_unigram_to_the_075(tmp_path):
    counts = np.array([1000, 300, 100, 30, 10, 3, 1])
    words = [f"w{i}" for i in range(len(counts))]
    voc = _core.Vocab.from_words(words, counts.tolist(), 0.0, 0.75, False)
    path = tmp_path / "c.txt"
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(800)) + "\n")
    got = collect(list(stream(voc, path, window=2, negative=10)))["negatives"].ravel()
    assert got.size == 6400 * 10
    observed = np.bincount(got, minlength=len(words))

    def chi2(power):
        p = counts ** power / (counts ** power).sum()
        expected = p * got.size
        return ((observed - expected) ** 2 / expected).sum()

    # 6 degrees of freedom: P(chi2 > 27.9) = 1e-4 under the right distribution.
    assert chi2(0.75) < 27.9, chi2(0.75)
    assert chi2(1.0) > 1000 and chi2(0.5) > 1000, "the check tells the exponents apart"


@pytest.mark.parametrize("kind", ["plain", "gzip"])
@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_and_drain_resumes_with_exactly_the_rest(corpus_file, corpus_file_gz, planted, kind, workers):
    path = corpus_file if kind == "plain" else corpus_file_gz
    # Two workers share gzip blocks as they come, so which generator sees a
    # sentence varies: compare them without subsampling and shrinking.
    voc = vocab_of(corpus_file, min_count=3, sample=1e-3 if workers == 1 else 0.0)
    settings = dict(window=3, shrink_windows=workers == 1, negative=3, batch_targets=256)
    full = collect(list(stream(voc, path, schedule(workers=workers), **settings)))

    first = stream(voc, path, schedule(workers=workers), **settings)
    taken = [next(first) for _ in range(10)]
    first.cancel()
    taken += list(first)  # drain: every batch of the sentences read before the stop
    state = first.resume_state()
    raw1 = first.finish()[0]
    assert raw1 == sum(b["raw_words"] for b in taken) < planted.n_tokens
    assert state["gzip"] == (kind == "gzip") and len(state["workers"]) == workers

    second = stream(voc, path, schedule(workers=workers, resume=state), **settings)
    rest = list(second)
    assert raw1 + second.finish()[0] == planted.n_tokens == sum(full["raw_words"])
    both = collect(taken + rest)

    def examples(b):
        return Counter(map(tuple, np.column_stack([b["targets"], b["context"]]).tolist()))

    assert examples(both) == examples(full)
    if workers == 1:  # one worker: the very same examples, in the same order
        for key in ("targets", "context", "negatives"):
            np.testing.assert_array_equal(both[key], full[key])


class Stop(Exception):
    pass


def test_an_error_in_the_progress_callback_stops_the_stream_resumably(corpus_file, planted):
    voc = vocab_of(corpus_file, min_count=1, sample=0.0)
    calls = []

    def cb(raw, effective, loss):
        calls.append(raw)
        if len(calls) == 1:
            raise Stop()

    s = stream(voc, corpus_file, schedule(report_delay=0.01, progress_cb=cb), batch_targets=128, prefetch=2)
    taken = []
    with pytest.raises(Stop):
        for b in s:
            taken.append(b)
            time.sleep(0.003)
    taken += list(s)
    state = s.resume_state()
    rest = list(stream(voc, corpus_file, schedule(resume=state), batch_targets=128))
    full = list(stream(voc, corpus_file, batch_targets=128))
    assert sum(b["raw_words"] for b in taken) < planted.n_tokens
    np.testing.assert_array_equal(collect(taken + rest)["targets"], collect(full)["targets"])
    assert calls == sorted(calls)


def test_ctrl_c_while_waiting_raises_and_cancels(tiny):
    voc = vocab_of(tiny)
    queue = _core.JobQueue(voc, 2)  # nothing is ever queued: the stream waits
    s = stream(voc, queue)
    main = threading.main_thread().ident
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(s)
    finally:
        timer.cancel()
        timer.join()
    assert time.monotonic() - t0 < 2.0
    assert list(s) == [], "the interrupt cancelled the stream: it ends without the producer"
    assert s.resume_state() is None  # an iterable source has no file position
    assert s.finish() == (0, 0, 0, 0.0)


def test_a_job_queue_gives_the_file_examples(corpus_file, corpus):
    voc = vocab_of(corpus_file, min_count=2, sample=1e-3)
    settings = dict(window=4, shrink_windows=True, negative=5)
    from_file = collect(list(stream(voc, corpus_file, **settings)))
    queue = _core.JobQueue(voc, 4)

    def produce():
        for i in range(0, len(corpus), 100):
            queue.put(corpus[i:i + 100])
        queue.close()

    producer = threading.Thread(target=produce)
    producer.start()
    from_queue = collect(list(stream(voc, queue, **settings)))
    producer.join()
    for key in ("targets", "context", "negatives"):
        np.testing.assert_array_equal(from_queue[key], from_file[key])
    assert sum(from_queue["raw_words"]) == sum(from_file["raw_words"])


@pytest.mark.parametrize("kind", ["window", "sentence"])
def test_one_worker_and_a_seed_give_the_same_batches(corpus_file, kind):
    voc = vocab_of(corpus_file, min_count=2, sample=1e-3)
    settings = dict(kind=kind, window=5, shrink_windows=True, max_len=12, negative=5, batch_targets=300)
    a, b = (list(stream(voc, corpus_file, schedule(seed=11), **settings)) for _ in range(2))
    other = collect(list(stream(voc, corpus_file, schedule(seed=12), **settings)))
    assert len(a) == len(b) > 10
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(collect(a)["negatives"], other["negatives"]), "the seed matters"


def test_raw_words_sum_to_the_corpus_words(corpus_file_gz, planted):
    voc = vocab_of(corpus_file_gz, min_count=5, sample=1e-3)  # rare words are out of vocabulary
    assert len(voc) < len(planted.counts())
    s = stream(voc, corpus_file_gz, schedule(workers=2), window=2, negative=1)
    batches = list(s)
    raw, effective, examples, _ = s.finish()
    assert sum(b["raw_words"] for b in batches) == raw == planted.n_tokens
    assert examples == sum(len(b["targets"]) for b in batches)
    assert effective < raw  # subsampling and the out-of-vocabulary words


def test_a_corpus_read_error_is_a_runtime_error(corpus_file, planted, tmp_path):
    voc = vocab_of(corpus_file)
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(planted.text().encode())[:20_000])
    s = stream(voc, broken, schedule(workers=2))
    with pytest.raises(RuntimeError, match="error reading the corpus"):
        for _ in s:
            pass
    with pytest.raises(RuntimeError):
        s.finish()
    with pytest.raises(RuntimeError):
        s.resume_state()


def test_finishing_before_the_end_discards_and_refuses_to_resume(corpus_file):
    voc = vocab_of(corpus_file)
    s = stream(voc, corpus_file, prefetch=1, batch_targets=32)
    next(s)
    with pytest.raises(RuntimeError, match="still running"):
        s.resume_state()
    raw = s.finish()[0]
    assert raw > 0
    with pytest.raises(RuntimeError, match="discarded"):
        s.resume_state()
    assert list(s) == []


def test_settings_are_checked(tiny):
    voc = vocab_of(tiny)
    for bad, msg in [(dict(windw=3), "unknown batch setting"), (dict(kind="bag"), "window' or 'sentence"),
                     (dict(window=0), "window must be"), (dict(kind="sentence", max_len=1), "max_len must be"),
                     (dict(kind="sentence"), "max_len"), (dict(batch_targets=0), "batch_targets")]:
        with pytest.raises(ValueError, match=msg):
            stream(voc, tiny, **bad)
    with pytest.raises(ValueError, match="negative"):
        _core.BatchStream(voc, str(tiny), {"kind": "window", "window": 2}, schedule())


def test_huffman_arrays_pad_the_paths(tiny):
    voc = vocab_of(tiny, hs=True)
    codes, points = voc.huffman()
    c, p, lengths = voc.huffman_arrays()
    depth = max(map(len, codes))
    assert c.dtype == np.int8 and p.dtype == np.int64 and lengths.dtype == np.int64
    assert c.shape == p.shape == (len(voc), depth)
    for w in range(len(voc)):
        n = len(codes[w])
        assert lengths[w] == n
        assert c[w, :n].tolist() == list(codes[w]) and p[w, :n].tolist() == list(points[w])
        assert (c[w, n:] == 0).all() and (p[w, n:] == -1).all()
    with pytest.raises(ValueError, match="hs=True"):
        vocab_of(tiny).huffman_arrays()
