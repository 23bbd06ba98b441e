"""The `bidirmoe` command line, driven as a subprocess: every command, every
documented failure, Ctrl-C / SIGTERM with a checkpoint, and resuming."""

import bz2
import gzip
import json
import lzma
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from bidirmoe import KeyedVectors, datasets

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def run_cli(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "bidirmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, input=stdin, env=ENV)


def one_line_error(r, code=1, match=None):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("bidirmoe: error")]
    assert len(lines) == 1, r.stderr
    if match:
        assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def text(tmp_path_factory, corpus):
    d = tmp_path_factory.mktemp("cli")
    path = d / "corpus.txt"
    path.write_text("\n".join(" ".join(s) for s in corpus) + "\n")
    return path


@pytest.fixture(scope="module")
def big_text(tmp_path_factory, corpus):
    d = tmp_path_factory.mktemp("clibig")
    path = d / "big.txt"
    with open(path, "w") as f:
        for _ in range(60):
            f.write("\n".join(" ".join(s) for s in corpus) + "\n")
    return path


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    words = gzip.open(datasets.path("text8-sample"), "rt").read(1_300_000).split()[:200_000]
    path = tmp_path_factory.mktemp("en") / "en.txt"
    path.write_text("\n".join(" ".join(words[i:i + 1000]) for i in range(0, len(words), 1000)) + "\n")
    return path


FAST = ["--dim", "8", "--epochs", "1", "--min-count", "1", "--threads", "2", "--quiet"]


def test_bundled_datasets_resolve_by_name():
    assert os.path.getsize(datasets.path("text8-sample")) > 1_000_000
    with open(datasets.path("google"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert sum(1 for l in lines if l.startswith(":")) == 14
    assert sum(1 for l in lines if not l.startswith(":")) == 19544
    assert datasets.resolve("google") == datasets.path("google")
    assert datasets.resolve("some/file.txt") == "some/file.txt"
    with pytest.raises(KeyError, match="unknown dataset 'nope'; known: "):
        datasets.path("nope")


NUMBER_WORDS = {"zero", "one", "two", "four", "five", "six", "seven", "eight", "nine", "ten"}


def test_demo_trains_bidirmoe_and_prints_results():
    r = run_cli("demo", "--epochs", "1", "--threads", "2")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "offset profile" in out and "head 0" in out and "masked-word prediction" in out
    # What it learned: "three"'s printed neighbours are mostly number words
    # (random vectors give about 6 x 9 / 22,541 of them).
    line = next(l for l in out.splitlines() if l.strip().startswith("three") and "->" in l)
    near = [item.split(" (")[0].strip() for item in line.split("->")[1].split(", ")]
    assert len(near) == 6 and len(NUMBER_WORDS.intersection(near)) >= 3, line
    # The vocabulary and the analogy questions it reports, counted here independently:
    # words seen >= 5 times, and questions whose four words (upper-cased, as the
    # evaluator compares them) are all in that vocabulary.
    with gzip.open(datasets.path("text8-sample"), "rt", encoding="utf-8") as f:
        counts = Counter(f.read().split())
    vocab = {w.upper() for w, c in counts.items() if c >= 5}
    with open(datasets.path("google"), encoding="utf-8") as f:
        questions = [l.split() for l in f if not l.startswith(":") and l.strip()]
    n_ok = sum(all(w.upper() in vocab for w in q) for q in questions)
    assert f"vocabulary {sum(c >= 5 for c in counts.values()):,} words" in out
    tail = out.split("Google analogies (restrict_vocab=30000): ")[1]
    pct, n = float(tail.split(" %")[0]), int(tail.split(" of ")[1].split(" questions")[0].replace(",", ""))
    assert n == n_ok and 0.0 <= pct <= 100.0


def test_help_on_every_subcommand():
    for args in (["--help"], ["train", "--help"], ["eval", "--help"], ["similar", "--help"], ["analogy", "--help"],
                 ["demo", "--help"]):
        r = run_cli(*args)
        assert r.returncode == 0 and "usage:" in r.stdout, args


@pytest.mark.parametrize("model", ["bidirmoe", "attention", "cbow", "skipgram"])
def test_train_each_model_writes_vectors_gensim_reads(model, text, tmp_path):
    gensim = pytest.importorskip("gensim")
    out = tmp_path / "v.bin"
    r = run_cli("train", text, "-o", out, "--model", model, *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # --quiet
    g = gensim.models.KeyedVectors.load_word2vec_format(str(out), binary=True)
    ours = KeyedVectors.load_word2vec_format(str(out), binary=True)
    assert len(g) == len(ours) > 100 and np.allclose(g.vectors, ours.vectors)


def test_formats_from_extension_and_save_model(text, tmp_path):
    r = run_cli("train", text, "-o", tmp_path / "v.txt", "--save-model", tmp_path / "m.model", *FAST)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "v.txt").read_text().split("\n")[0].split()[1] == "8"
    from bidirmoe import BidirMoE

    m = BidirMoE.load(str(tmp_path / "m.model"))
    m.train(corpus_file=str(text), epochs=1)  # the full model keeps training
    r = run_cli("train", text, "-o", tmp_path / "native.bm", *FAST)
    assert r.returncode == 0, r.stderr
    assert BidirMoE.load(str(tmp_path / "native.bm")).wv.vector_size == 8
    r = run_cli("similar", tmp_path / "native.bm", m.wv.index_to_key[0], "--topn", "2")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 3
    r = run_cli("train", text, "-o", tmp_path / "v.txt.gz", *FAST)
    assert r.returncode == 0, r.stderr
    assert gzip.open(tmp_path / "v.txt.gz", "rt").readline().split()[1] == "8"


@pytest.mark.parametrize("name", ["vectors.w2v", "vectors", "vectors.model.gz", "vectors.bin.bz2"])
def test_unknown_output_extension_is_refused(name, text, tmp_path):
    out = tmp_path / name
    r = run_cli("train", text, "-o", out, *FAST)
    one_line_error(r, match=f"cannot tell the output format from '{name}'")
    for ext in (".bin", ".txt", ".vec", ".model"):
        assert ext in r.stderr
    assert "--format" in r.stderr
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_format_option_overrides_the_extension(text, tmp_path):
    out = tmp_path / "vectors.w2v"
    r = run_cli("train", text, "-o", out, "--format", "word2vec-bin", *FAST)
    assert r.returncode == 0, r.stderr
    assert len(KeyedVectors.load_word2vec_format(str(out), binary=True)) > 100
    r = run_cli("train", text, "-o", tmp_path / "vectors.bin", "--format", "word2vec-txt", *FAST)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "vectors.bin").read_text().split("\n")[0].split()[1] == "8"  # text, despite .bin


def test_inputs_dirs_globs_compressed_and_stdin(text, tmp_path):
    body = text.read_bytes()
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.gz").write_bytes(gzip.compress(body))
    (d / "b.bz2").write_bytes(bz2.compress(body))
    (d / "c.xz").write_bytes(lzma.compress(body))
    for inputs in ([d], [str(d / "*.?z*")], [d / "a.gz", d / "b.bz2"]):
        r = run_cli("train", *inputs, "-o", tmp_path / "v.bin", *FAST)
        assert r.returncode == 0, r.stderr
    r = run_cli("train", "-", "-o", tmp_path / "s.bin", *FAST, stdin=body.decode())
    assert r.returncode == 0, r.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".bidirmoe-corpus")]  # spool removed


def test_eval_similar_analogy(english, tmp_path):
    out = tmp_path / "v.bin"
    assert run_cli("train", english, "-o", out, "--model", "cbow", *FAST).returncode == 0
    r = run_cli("eval", out, "--analogies", "google", "--pairs", "wordsim353", "--pairs", "simlex999", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["analogies"][0]["set"] == "google" and len(res["pairs"]) == 2
    assert {g["group"] for g in res["analogies"][0]["groups"]} == {"semantic", "syntactic", "total"}
    w = KeyedVectors.load_word2vec_format(str(out), binary=True).index_to_key
    r = run_cli("analogy", out, w[1], w[2], w[3])
    assert r.returncode == 0 and f"{w[1]} : {w[2]} :: {w[3]} : ?" in r.stdout
    r = run_cli("eval", out)
    assert r.returncode == 0 and "paper's metrics" in r.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "min_count", "outdir", "garbage_vectors", "truncated_vectors",
                                  "unknown_set", "unknown_word", "bad_dim", "bad_resume"])
def test_bad_input_one_line_exit_1(case, text, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    out = tmp_path / "v.bin"
    if case == "missing":
        r = run_cli("train", tmp_path / "nope.txt", "-o", out, *FAST)
        one_line_error(r, match="input not found")
    elif case == "empty":
        one_line_error(run_cli("train", empty, "-o", out, *FAST), match="empty")
    elif case == "min_count":
        one_line_error(run_cli("train", text, "-o", out, *FAST, "--min-count", "1000000"), match="min_count")
    elif case == "outdir":
        t0 = time.perf_counter()
        one_line_error(run_cli("train", text, "-o", tmp_path / "no" / "v.bin", *FAST), match="does not exist")
        assert time.perf_counter() - t0 < 30
    elif case == "garbage_vectors":
        bad = tmp_path / "bad.bin"
        bad.write_bytes(os.urandom(5000))
        one_line_error(run_cli("similar", bad, "the"))
    elif case == "truncated_vectors":
        assert run_cli("train", text, "-o", out, *FAST).returncode == 0
        data = out.read_bytes()
        cut = tmp_path / "cut.bin"
        cut.write_bytes(data[: len(data) // 2])
        one_line_error(run_cli("eval", cut), match="cannot read vectors")
    elif case == "unknown_set":
        assert run_cli("train", text, "-o", out, *FAST).returncode == 0
        one_line_error(run_cli("eval", out, "--pairs", "simlex-1000"), match="not found")
    elif case == "unknown_word":
        assert run_cli("train", text, "-o", out, *FAST).returncode == 0
        one_line_error(run_cli("similar", out, "zzzz-not-a-word"), match="not in the vocabulary")
    elif case == "bad_resume":
        bad = tmp_path / "ckpt"
        bad.write_bytes(b"not a checkpoint")
        one_line_error(run_cli("train", text, "-o", out, "--resume", bad, "--quiet"), match="not a bidirmoe checkpoint")
    elif case == "bad_dim":
        one_line_error(run_cli("train", text, "-o", out, "--dim", "0", "--quiet"), match="--dim")
    assert not out.exists() or case in ("truncated_vectors", "unknown_set", "unknown_word")


def test_usage_errors_exit_2_without_traceback():
    for args in (["no-such-command"], ["train"], ["demo", "--epochs", "many"], ["train", "x", "-o", "y", "--model", "rnn"]):
        r = run_cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, args


def test_binary_garbage_input_trains(tmp_path):
    # Random bytes are text with odd words (invalid UTF-8 replaced): with
    # --min-count 1 there is a vocabulary, so training succeeds.
    g = tmp_path / "garbage.bin"
    g.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    r = run_cli("train", g, "-o", tmp_path / "v.bin", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and len(KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)) > 100


def _default_sigint():
    # As from a terminal: a child started from a background job inherits SIGINT
    # ignored, and Python then installs no Ctrl-C handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(big_text, out, sig, tmp_path, extra=()):
    proc = subprocess.Popen([sys.executable, "-m", "bidirmoe", "train", str(big_text), "-o", str(out), "--model",
                             "attention", "--dim", "16", "--epochs", "4", "--min-count", "1", "--threads", "2",
                             "--log-json", str(tmp_path / "p.jsonl"), *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until training (not vocabulary counting) is under way
        if (tmp_path / "p.jsonl").exists() and (tmp_path / "p.jsonl").stat().st_size > 0:
            break
        time.sleep(0.05)
    t0 = time.perf_counter()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.perf_counter() - t0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_exit_130_and_resume_finishes(sig, big_text, tmp_path):
    out = tmp_path / "v.bin"
    code, err, took = _interrupt(big_text, out, sig, tmp_path)
    assert code == 130, err
    assert took < 10 and "Traceback" not in err and "interrupted; checkpoint written" in err
    ckpt = tmp_path / "v.bin.checkpoint"
    assert ckpt.exists() and not out.exists()  # the output is either absent or complete
    from bidirmoe import BidirectionalAttention

    state = BidirectionalAttention.load(str(ckpt)).extra_meta["cli"]
    assert 0 < state["words_done"] < state["schedule_words"]
    # The checkpoint knows its model: no --model needed to resume.
    r = run_cli("train", big_text, "-o", out, "--resume", ckpt, "--threads", "2", "--quiet",
                "--log-json", tmp_path / "resume.jsonl")
    assert r.returncode == 0, r.stderr
    assert out.exists() and not ckpt.exists()
    first = json.loads((tmp_path / "resume.jsonl").read_text().splitlines()[0])
    # The learning-rate schedule continues where it stopped.
    assert first["words_done"] >= state["words_done"]
    assert first["lr"] <= 0.025 * (1 - state["words_done"] / state["schedule_words"]) + 1e-6


def test_checkpoint_every_writes_checkpoints_and_still_finishes(big_text, tmp_path):
    out = tmp_path / "v.bin"
    r = run_cli("train", big_text, "-o", out, "--model", "attention", "--dim", "16", "--epochs", "2",
                "--min-count", "1", "--threads", "2", "--checkpoint-every", "0.005")
    assert r.returncode == 0, r.stderr
    assert "checkpoint written" in r.stderr and out.exists()
    assert not (tmp_path / "v.bin.checkpoint").exists()


def test_progress_lines_when_not_a_terminal_and_json_log(text, tmp_path):
    r = run_cli("train", text, "-o", tmp_path / "v.bin", "--dim", "8", "--epochs", "2", "--min-count", "1",
                "--log-json", tmp_path / "log.jsonl")
    assert r.returncode == 0
    assert "vocabulary:" in r.stderr and "wrote" in r.stderr
    rows = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows and {"epoch", "progress", "words_per_sec", "lr", "loss_per_word", "eta_s"} <= set(rows[0])
    assert all(r["loss_per_word"] > 0 for r in rows)


def test_id_cache_option_sets_the_cap_and_changes_no_vector(text, tmp_path, monkeypatch):
    from bidirmoe import cli, training

    monkeypatch.setattr(training, "ID_CACHE_BYTES", training.ID_CACHE_BYTES)  # restored after the test
    caps = []
    real = training._core.IdCache

    def recording(cap):
        caps.append(cap)
        return real(cap)

    monkeypatch.setattr(training._core, "IdCache", recording)
    args = ["train", str(text), "--dim", "8", "--epochs", "3", "--min-count", "1", "--threads", "1", "--quiet",
            "--format", "word2vec-txt"]
    assert cli.main([*args, "-o", str(tmp_path / "a.txt")]) == 0
    assert caps == [512 << 20]
    assert cli.main([*args, "-o", str(tmp_path / "b.txt"), "--id-cache-mb", "0"]) == 0
    assert caps == [512 << 20]  # 0: no cache made, every epoch reads the file
    assert cli.main([*args, "-o", str(tmp_path / "c.txt"), "--id-cache-mb", "3"]) == 0
    assert caps == [512 << 20, 3 << 20]
    assert training.ID_CACHE_BYTES == 512 << 20  # the option holds for its own call only
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == (tmp_path / "c.txt").read_text()
    r = run_cli("train", text, "-o", tmp_path / "d.txt", "--id-cache-mb", "-1")
    assert r.returncode == 1 and r.stderr.strip() == "bidirmoe: error: --id-cache-mb must be >= 0, got -1"
