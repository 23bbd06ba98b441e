"""Stopping and resuming training exactly where it stopped (Python API and
command line): no corpus line trained twice or skipped in the interrupted
epoch, and with one worker and a seed the same vectors, bit for bit, as a
run that was never interrupted."""

import contextlib
import gc
import gzip
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec


class Stop(Exception):
    pass


def stop_after(fraction, total):
    """A progress callback that stops training once `fraction` of an epoch is done."""

    def cb(info):
        if info["epoch_words"] >= fraction * total:
            raise Stop()

    return cb


@contextlib.contextmanager
def no_gc():
    """An epoch of these tests takes about 0.1 s: a garbage collection of the
    heap earlier tests left can hold the thread that runs the progress
    callback for 0.2 s while the workers train on, so a stop meant for
    mid-epoch lands after the epoch's end. Collect first, then none."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Every line has words of its own (l{line}_{k}), so a word's input vector
    changes exactly when its line (or its part of a line cut by a byte
    range) is trained."""
    d = tmp_path_factory.mktemp("resume")
    lines = [" ".join(f"l{i}_{k}" for k in range(6)) for i in range(60_000)]
    text = "\n".join(lines) + "\n"
    plain = d / "probe.txt"
    plain.write_text(text)
    gz = d / "probe.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    return {"plain": plain, "gzip": gz, "lines": len(lines)}


@pytest.mark.parametrize("kind", ["plain", "gzip"])
@pytest.mark.parametrize("workers,later", [(1, 1), (2, 2), (2, 1), (1, 2)])
def test_interrupted_epoch_trains_every_line_once(probe, kind, workers, later):
    path = probe[kind]
    m = Word2Vec(vector_size=8, min_count=1, sample=0, window=2, negative=2, workers=workers, seed=5)
    m.build_vocab(corpus_file=path)
    # Non-zero output vectors, so every context word's first update is non-zero.
    m.syn1neg[...] = np.random.default_rng(0).normal(0, 0.1, m.syn1neg.shape)
    v0 = m.wv.vectors.copy()
    with no_gc(), pytest.raises(Stop):
        m.train(corpus_file=path, total_words=m.corpus_total_words, epochs=1,
                progress_callback=stop_after(0.3, m.corpus_total_words), report_delay=0.001)
    stop = m.last_stop
    assert stop["resume"] is not None and stop["epochs_left"] == 1
    v1 = m.wv.vectors.copy()
    m.workers = later
    m.train(corpus_file=path, total_words=m.corpus_total_words, resume_from=stop)
    v2 = m.wv.vectors
    before, after = (v1 != v0).any(1), (v2 != v1).any(1)
    assert 0.1 < before.mean() < 0.9                  # stopped mid-epoch
    assert not (before & after).any(), f"{(before & after).sum()} words trained again after resuming"
    # A byte range may start or end inside a line; a word left alone there
    # has no context to train with. At most one per range cut.
    assert (~(before | after)).sum() <= 2 * (workers + later), f"{(~(before | after)).sum()} words never trained"
    assert m.last_stop is None
    # The schedule went on from where it stopped: the two calls read one epoch.
    assert stop["epoch_words"] + m.raw_word_count == m.corpus_total_words


def _models():
    common = dict(vector_size=16, min_count=1, workers=1, seed=11, window=3)
    return {
        "cbow": lambda: Word2Vec(sample=1e-3, **common),
        "skipgram-hs": lambda: Word2Vec(sg=1, hs=1, negative=0, **common),
        "bidirmoe": lambda: BidirMoE(heads=2, **common),
        "bidirmoe-sentence": lambda: BidirMoE(heads=2, positions="absolute", max_len=12, **common),
        "attention": lambda: BidirectionalAttention(heads=2, key_size=4, **common),
    }


def _arrays(m):
    out = {"wv": m.wv.vectors}
    for name in getattr(m, "_array_names", ()):
        a = getattr(m, name, None)
        if a is not None:
            out[name] = a
    return out


@pytest.mark.parametrize("name", list(_models()))
def test_resumed_run_is_bit_identical_with_one_worker(probe, tmp_path, name):
    lines = probe["plain"].read_text().splitlines()[:6000]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(l.replace("_", " ").split()[:5]) for l in lines) + "\n")  # shared words
    make = _models()[name]

    def fresh():
        m = make()
        m.build_vocab(corpus_file=path)
        return m

    full = fresh()
    full.train(corpus_file=path, total_words=full.corpus_total_words, epochs=2)
    m = fresh()
    with pytest.raises(Stop):
        m.train(corpus_file=path, total_words=m.corpus_total_words, epochs=2,
                progress_callback=stop_after(0.4, m.corpus_total_words), report_delay=0.001)
    # Through a file, as a checkpoint would go.
    m.save(tmp_path / "ckpt.model")
    m = type(m).load(tmp_path / "ckpt.model")
    m.train(corpus_file=path, total_words=m.corpus_total_words, resume_from=m.last_stop)
    a, b = _arrays(full), _arrays(m)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{name}: {k} differs after resuming"


@pytest.mark.parametrize("name", ["cbow", "bidirmoe"])
def test_a_stop_while_replaying_cached_ids_resumes_bit_identically(probe, tmp_path, monkeypatch, name):
    """Epochs after the first replay the corpus's vocabulary ids kept in memory
    (``training.ID_CACHE_BYTES``): a run stopped in one of them and resumed
    ends with the arrays of a run that read the file every epoch."""
    from bidirmoe import _core, training

    lines = probe["plain"].read_text().splitlines()  # long enough for a progress tick mid-epoch
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(l.replace("_", " ").split()[:5]) for l in lines) + "\n")
    make = _models()[name]

    def fresh():
        m = make()
        m.build_vocab(corpus_file=path)
        return m

    monkeypatch.setattr(training, "ID_CACHE_BYTES", 0)
    full = fresh()
    full.train(corpus_file=path, total_words=full.corpus_total_words, epochs=3)
    monkeypatch.setattr(training, "ID_CACHE_BYTES", 1 << 30)
    made = []
    real = _core.IdCache
    monkeypatch.setattr(_core, "IdCache", lambda cap: made.append(real(cap)) or made[-1])
    m = fresh()
    total = m.corpus_total_words

    def stop_in_second_epoch(info):
        if info["epoch"] == 1 and info["epoch_words"] >= 0.5 * total:
            raise Stop()

    with no_gc(), pytest.raises(Stop):
        m.train(corpus_file=path, total_words=total, epochs=3, progress_callback=stop_in_second_epoch,
                report_delay=0.001)
    # The first epoch recorded the file's one range (one worker); the second replayed it.
    assert len(made) == 1 and made[0].ranges == 1 and made[0].nbytes >= 4 * 60_000
    assert m.last_stop["epochs_left"] == 2 and 0 < m.last_stop["epoch_words"] < total
    m.train(corpus_file=path, total_words=total, resume_from=m.last_stop)
    a, b = _arrays(full), _arrays(m)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{name}: {k} differs after resuming"


def test_resume_refuses_another_file(probe, tmp_path):
    m = Word2Vec(vector_size=8, min_count=1, workers=1)
    m.build_vocab(corpus_file=probe["plain"])
    with pytest.raises(Stop):
        m.train(corpus_file=probe["plain"], total_words=m.corpus_total_words, epochs=1,
                progress_callback=stop_after(0.3, m.corpus_total_words), report_delay=0.001)
    other = tmp_path / "other.txt"
    other.write_text("l1_1 l1_2\n")
    with pytest.raises(ValueError, match="not the one the checkpoint was taken on"):
        m.train(corpus_file=other, total_words=m.corpus_total_words, resume_from=m.last_stop)
    with pytest.raises(ValueError, match="resume_from"):
        m.train(corpus_file=probe["plain"], total_words=m.corpus_total_words, resume_from={"x": 1})


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_resume_is_bit_identical_with_one_thread(probe, tmp_path):
    lines = probe["plain"].read_text().splitlines()[:20000]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(l.replace("_", " ").split()[:5]) for l in lines) + "\n")
    args = ["train", str(corpus), "--model", "bidirmoe", "--dim", "16", "--epochs", "6", "--min-count", "1",
            "--threads", "1", "--seed", "3", "--heads", "4", "--window", "5"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref = tmp_path / "ref.bm"
    r = subprocess.run([sys.executable, "-m", "bidirmoe", *args, "-o", str(ref), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.bm"
    log = tmp_path / "p.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "bidirmoe", *args, "-o", str(out), "--log-json", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.stat().st_size > 0):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ckpt = tmp_path / "out.bm.checkpoint"
    r = subprocess.run([sys.executable, "-m", "bidirmoe", "train", str(corpus), "-o", str(out), "--resume",
                        str(ckpt), "--threads", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = BidirMoE.load(ref), BidirMoE.load(out)
    for k, v in _arrays(a).items():
        assert np.array_equal(v, _arrays(b)[k]), f"{k} differs after resuming through the CLI"


def _interrupting(real, n, when):
    """A stand-in for `_run_epoch` that sends this process SIGINT right before
    (`when` "before_...") or right after ("after_...", before Python counts
    the epoch) the engine runs the n-th epoch."""
    calls = []

    def run(self, source, common):
        calls.append(1)
        if when.startswith("before") and len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        out = real(self, source, common)
        if when.startswith("after") and len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    return run


@pytest.mark.parametrize("when", ["after_epoch", "before_epoch"])
def test_cli_ctrl_c_between_epochs_resumes_bit_identically(probe, tmp_path, monkeypatch, when):
    """A Ctrl-C that arrives in the Python bookkeeping between two epochs (not
    while the engine runs) still stops at a consistent point: the checkpoint
    resumes to the same vectors as a run that never stopped."""
    from bidirmoe import cli

    lines = probe["plain"].read_text().splitlines()[:3000]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n")
    args = ["train", str(corpus), "--model", "bidirmoe", "--dim", "8", "--epochs", "4", "--min-count", "1",
            "--threads", "1", "--seed", "3", "--heads", "2", "--quiet"]
    ref = tmp_path / "ref.bm"
    assert cli.main([*args, "-o", str(ref)]) == 0
    real = BidirMoE._run_epoch
    monkeypatch.setattr(BidirMoE, "_run_epoch", _interrupting(real, 2, when))
    out = tmp_path / "out.bm"
    assert cli.main([*args, "-o", str(out)]) == 130
    assert not out.exists()
    ckpt = tmp_path / "out.bm.checkpoint"
    state = BidirMoE.load(ckpt).extra_meta["cli"]
    assert state["epoch"] == 2 and state["epoch_words"] == 0 and state["resume"] is None
    monkeypatch.setattr(BidirMoE, "_run_epoch", real)
    assert cli.main(["train", str(corpus), "-o", str(out), "--resume", str(ckpt), "--threads", "1", "--quiet"]) == 0
    a, b = BidirMoE.load(ref), BidirMoE.load(out)
    for k, v in _arrays(a).items():
        assert np.array_equal(v, _arrays(b)[k]), f"{k} differs after a Ctrl-C between epochs"


@pytest.mark.parametrize("when", ["after_engine", "before_engine", "mid_epoch"])
def test_python_api_ctrl_c_anywhere_resumes_bit_identically(probe, tmp_path, monkeypatch, when):
    """train() from Python: a Ctrl-C that lands right after the engine
    returned an epoch (before Python counted it), right before the engine
    starts one, or while it runs, raises KeyboardInterrupt with a last_stop
    that resumes to the vectors of a run that never stopped."""
    lines = probe["plain"].read_text().splitlines()  # long enough for several progress reports an epoch
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(l.replace("_", " ").split()[:5]) for l in lines) + "\n")

    def fresh():
        m = BidirMoE(vector_size=8, min_count=1, workers=1, seed=6, heads=2)
        m.build_vocab(corpus_file=path)
        return m

    full = fresh()
    full.train(corpus_file=path, total_words=full.corpus_total_words, epochs=4)
    real = BidirMoE._run_epoch
    calls = []

    def interrupt_mid_epoch(info):
        if info["epoch"] == 1 and info["epoch_words"] >= 0.4 * info["schedule_words"] / 4 and not calls:
            calls.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    m = fresh()
    if when == "mid_epoch":
        kw = dict(progress_callback=interrupt_mid_epoch, report_delay=0.001)
    else:
        monkeypatch.setattr(BidirMoE, "_run_epoch", _interrupting(real, 2, when))
        kw = {}
    with no_gc(), pytest.raises(KeyboardInterrupt):
        m.train(corpus_file=path, total_words=m.corpus_total_words, epochs=4, **kw)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    stop = m.last_stop
    if when == "after_engine":
        assert (stop["epochs_done"], stop["epoch_words"], stop["resume"]) == (2, 0, None)
    elif when == "mid_epoch":
        assert stop["epochs_done"] == 1 and 0 < stop["epoch_words"] < m.corpus_total_words
    monkeypatch.setattr(BidirMoE, "_run_epoch", real)
    m.train(corpus_file=path, total_words=m.corpus_total_words, resume_from=stop)
    a, b = _arrays(full), _arrays(m)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after a Ctrl-C ({when}) and resuming"


def test_a_list_of_files_trains_as_their_concatenation_and_resumes(probe, tmp_path):
    """corpus_file=[plain, gzip, plain without a final line end]: the same
    vocabulary and, with one worker and a seed, the same vectors as the files
    joined into one; a run stopped mid-list resumes bit for bit."""
    lines = probe["plain"].read_text().splitlines()[:6000]
    text = [" ".join(l.replace("_", " ").split()[:5]) for l in lines]
    a, b, c, joined = tmp_path / "a.txt", tmp_path / "b.txt.gz", tmp_path / "c.txt", tmp_path / "all.txt"
    a.write_text("\n".join(text[:2000]) + "\n")
    with gzip.open(b, "wt") as f:
        f.write("\n".join(text[2000:4000]) + "\n")
    c.write_text("\n".join(text[4000:]))
    joined.write_text("\n".join(text))
    files = [str(a), b, str(c)]

    def fresh(corpus):
        m = BidirMoE(vector_size=8, min_count=1, workers=1, seed=4, heads=2)
        m.build_vocab(corpus_file=corpus)
        return m

    one = fresh(joined)
    one.train(corpus_file=joined, total_words=one.corpus_total_words, epochs=2)
    m = fresh(files)
    assert m.wv.index_to_key == one.wv.index_to_key and m.corpus_total_words == one.corpus_total_words
    with no_gc(), pytest.raises(Stop):
        m.train(corpus_file=files, total_words=m.corpus_total_words, epochs=2,
                progress_callback=stop_after(0.6, m.corpus_total_words), report_delay=0.001)
    assert m.last_stop["resume"]["pieces"]  # stopped within the list
    m.train(corpus_file=files, total_words=m.corpus_total_words, resume_from=m.last_stop)
    for k, v in _arrays(one).items():
        assert np.array_equal(v, _arrays(m)[k]), f"{k} differs from training on the joined file"
    with pytest.raises(ValueError, match="not the one the checkpoint was taken on|pieces"):
        m2 = fresh(files)
        with pytest.raises(Stop):
            m2.train(corpus_file=files, total_words=m2.corpus_total_words, epochs=1,
                     progress_callback=stop_after(0.5, m2.corpus_total_words), report_delay=0.001)
        m2.train(corpus_file=files[:2], total_words=m2.corpus_total_words, resume_from=m2.last_stop)
    bz = tmp_path / "d.txt.bz2"
    import bz2

    bz.write_bytes(bz2.compress(b"a b c\n"))
    for bad, msg in [([], "empty list"), ([str(a), str(tmp_path / "missing.txt")], "not found"),
                     ([str(a), str(bz)], "bzip2-compressed")]:
        with pytest.raises((ValueError, FileNotFoundError), match=msg):
            BidirMoE(corpus_file=bad, vector_size=8, min_count=1)
