"""Training in several processes (torchrun + torch.distributed, gloo on loopback).

Each test launches ``python -m torch.distributed.run --standalone
--nproc_per_node 2`` on a small corpus: both ranks must end with the
vocabulary one process builds from the whole corpus (one plain or gzip
file, or several files split between the ranks; with and without
``max_vocab_size``), with bit-identical parameters after the final sync; a
killed rank must end the job with a non-zero status and no output file; a
rank that cannot reach the rendezvous must fail with one line; a stopped or
Ctrl-C'd run must resume from its checkpoint.
"""

import json
import os
import random
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from bidirmoe import BidirMoE, Word2Vec  # noqa: E402

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__import__("bidirmoe").__file__)))
LAUNCH_TIMEOUT = 240  # seconds: far above a normal run (a few seconds), only a hang reaches it


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small corpus with a Zipf-like vocabulary, as a plain and a gzip file."""
    import gzip

    d = tmp_path_factory.mktemp("dist")
    rng = random.Random(7)
    words = [f"w{i}" for i in range(400)]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    lines = [" ".join(rng.choices(words, weights, k=rng.randint(1, 40))) for _ in range(4000)]
    data = ("\n".join(lines) + "\n").encode()
    (d / "corpus.txt").write_bytes(data)
    (d / "corpus.txt.gz").write_bytes(gzip.compress(data))
    return d / "corpus.txt", d / "corpus.txt.gz"


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("BIDIRMOE_DIST_TIMEOUT", "60")
    env.update(extra)
    return env


def torchrun(args, cwd, nproc=2, **env):
    """Run ``torchrun --standalone --nproc_per_node nproc ARGS``; (status, stdout, stderr, seconds)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--max_restarts=0", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


# One launch runs every job (each rank writes what it ended with to
# OUT/JOB/rank{r}.npz and .json: the vocabulary — words, counts, keep
# probabilities, Huffman codes — and the parameters). The script starts the
# process group itself, as a user's torchrun script may: bidirmoe then uses
# it and leaves it open, so several models train in one process.
RANK_SCRIPT = r"""
import json, os, sys
import numpy as np
import torch.distributed as dist
from bidirmoe import BidirMoE, Word2Vec
from bidirmoe.corpora import RankPieces, open_compressed
import bidirmoe.torch.distributed as D

out = sys.argv[1]
jobs = json.loads(sys.argv[2])
MAX_VOCAB = int(sys.argv[3])
dist.init_process_group("gloo")
try:
    for name, (path, kind, backend) in jobs.items():
        s = D.start()  # the session the model will use
        sync = dict(sync_overlap=name.endswith("overlap"), sync_dtype="bfloat16" if "bf16" in name else "float32")
        shard_tokens = None
        if isinstance(path, list):  # several files: this rank's segment of them, read in place
            path = RankPieces(path, dist.get_rank(), dist.get_world_size())
            shard_tokens = []  # the tokens of its pieces, read here with Python
            for f, start, end in path.pieces:
                with open_compressed(f) as src:
                    data = src.read()
                shard_tokens += [t.decode() for t in (data if end is None else data[start:end]).split()]
        common = dict(corpus_file=path, vector_size=12, min_count=3, epochs=2, workers=2, seed=5,
                      distributed=True, sync_words=3000, backend=backend,
                      max_vocab_size=MAX_VOCAB if name.endswith("maxvocab") else None, **sync)
        if kind == "cbow-hs":
            model = Word2Vec(hs=1, negative=0, **common)
        else:
            model = BidirMoE(heads=2, **common).train()
        rank = dist.get_rank()
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        codes, points = model._vocab.huffman() or ([], [])
        arrays = {n: a for n, a in [("vectors", model.wv.vectors)] +
                  [(n, getattr(model, n, None)) for n in model._array_names] if isinstance(a, np.ndarray)}
        np.savez(os.path.join(d, f"rank{rank}.npz"), counts=np.asarray(model.wv.expandos["count"]),
                 keep=np.asarray(model._vocab.keep_probability), **{"p_" + k: v for k, v in arrays.items()})
        with open(os.path.join(d, f"rank{rank}.json"), "w") as f:
            json.dump({"words": model.wv.index_to_key, "codes": [list(c) for c in codes],
                       "points": [list(p) for p in points], "total_words": model.corpus_total_words,
                       "raw": model.raw_word_count, "shard_tokens": shard_tokens,
                       "copies": [p for p in os.listdir(out) if p.startswith(".bidirmoe")],
                       "session": {"overlap": s.overlap, "wire_dtype": s.wire_dtype}, "sync": sync}, f)
finally:
    dist.destroy_process_group()
"""


#: max_vocab_size for the "-maxvocab" jobs: far below the corpus's 400 words, so the count prunes.
MAX_VOCAB = 150


@pytest.fixture(scope="module")
def files(corpus):
    """The corpus's lines in three files: plain, gzip, and plain without a final line end."""
    import gzip

    lines = corpus[0].read_bytes().splitlines(keepends=True)
    d = corpus[0].parent
    a, b, c = d / "part-a.txt", d / "part-b.txt.gz", d / "part-c.txt"
    a.write_bytes(b"".join(lines[:1500]))
    b.write_bytes(gzip.compress(b"".join(lines[1500:2600])))
    c.write_bytes(b"".join(lines[2600:]).rstrip(b"\n"))
    return [a, b, c]


@pytest.fixture(scope="module")
def ranks(corpus, files, tmp_path_factory):
    """{job: [(meta, arrays) of rank 0, of rank 1]} from one torchrun launch."""
    d = tmp_path_factory.mktemp("ranks")
    script = d / "rank.py"
    script.write_text(RANK_SCRIPT)
    plain, gz = str(corpus[0]), str(corpus[1])
    jobs = {"plain": [plain, "cbow-hs", "rust"], "gzip": [gz, "cbow-hs", "rust"],
            "moe": [plain, "bidirmoe", "rust"], "moe-torch": [gz, "bidirmoe", "torch"],
            "plain-overlap": [plain, "cbow-hs", "rust"], "moe-bf16-overlap": [plain, "bidirmoe", "rust"],
            "moe-torch-overlap": [gz, "bidirmoe", "torch"], "files": [[str(f) for f in files], "cbow-hs", "rust"],
            "files-moe-torch": [[str(f) for f in files], "bidirmoe", "torch"],
            "plain-maxvocab": [plain, "cbow-hs", "rust"], "files-maxvocab": [[str(f) for f in files], "cbow-hs", "rust"]}
    rc, out, err, _ = torchrun([str(script), str(d), json.dumps(jobs), str(MAX_VOCAB)], cwd=d)
    assert rc == 0, err[-3000:]
    res = {}
    for job in jobs:
        res[job] = []
        for r in (0, 1):
            with open(d / job / f"rank{r}.json") as f:
                meta = json.load(f)
            res[job].append((meta, dict(np.load(d / job / f"rank{r}.npz"))))
    return res


def _check_sync_options_reached_the_session(*metas):
    """The model's sync_overlap / sync_dtype were the session's during the run
    (each job's session is the one of the job before: the model sets them)."""
    for meta in metas:
        assert meta["session"] == {"overlap": meta["sync"]["sync_overlap"], "wire_dtype": meta["sync"]["sync_dtype"]}


@pytest.mark.parametrize("which", ["plain", "gzip", "plain-overlap", "files", "plain-maxvocab", "files-maxvocab"])
def test_ranks_share_the_single_process_vocabulary_and_parameters(corpus, ranks, which):
    path = corpus[1] if which == "gzip" else corpus[0]  # "files" holds corpus[0]'s lines
    (m0, a0), (m1, a1) = ranks[which]
    _check_sync_options_reached_the_session(m0, m1)
    # The single-process vocabulary over the whole file, with the same settings.
    max_vocab = MAX_VOCAB if which.endswith("maxvocab") else None
    single = Word2Vec(vector_size=12, min_count=3, hs=1, negative=0, seed=5, max_vocab_size=max_vocab)
    single.build_vocab(corpus_file=str(path))
    codes, points = single._vocab.huffman()
    for meta, arrays in ((m0, a0), (m1, a1)):
        assert meta["words"] == single.wv.index_to_key
        np.testing.assert_array_equal(arrays["counts"], single.wv.expandos["count"])
        np.testing.assert_array_equal(arrays["keep"], single._vocab.keep_probability)
        assert meta["codes"] == [list(c) for c in codes] and meta["points"] == [list(p) for p in points]
        assert meta["total_words"] == single.corpus_total_words
        # The global word count: both shards together, every epoch.
        assert meta["raw"] == 2 * single.corpus_total_words
    # After the final sync both ranks hold the same parameters, bit for bit,
    # and training moved them.
    for name in ("p_vectors", "p_syn1"):
        np.testing.assert_array_equal(a0[name], a1[name])
    single.prepare_weights()
    assert not np.array_equal(a0["p_vectors"], single.wv.vectors)
    assert np.abs(a0["p_syn1"]).sum() > 0


def test_max_vocab_size_pruning_depends_on_the_whole_corpus(corpus):
    """Why the "-maxvocab" jobs test something: pruning each half of the
    file on its own and adding the counts gives another vocabulary than
    pruning the whole file as it streams past (what every rank must get)."""
    from bidirmoe import _core

    whole = _core.VocabCounter(MAX_VOCAB)
    whole.add_file(str(corpus[0]))
    assert whole.prunes > 0
    halves = _core.VocabCounter()
    for rank in (0, 1):
        part = _core.VocabCounter(MAX_VOCAB)
        part.add_file(str(corpus[0]), (rank, 2))
        halves.merge_counts(*part.export_counts(), part.total_words, part.sentences)
    assert halves.raw_counts() != whole.raw_counts()


def test_several_files_are_split_between_the_ranks(corpus, ranks):
    """Each rank read its own segment of the three files, in place (no
    copy of it was written): together the segments hold every token of the
    corpus once, in corpus order."""
    from bidirmoe.corpora import read_corpus_file

    every = [t for s in read_corpus_file(str(corpus[0])) for t in s]
    for job in ("files", "files-moe-torch"):  # the Rust and the torch backend
        (m0, _), (m1, _) = ranks[job]
        assert m0["shard_tokens"] and m1["shard_tokens"]
        assert m0["shard_tokens"] + m1["shard_tokens"] == every
        assert m0["copies"] == m1["copies"] == []
        assert m0["raw"] == m1["raw"] == 2 * len(every)  # the global word count, both epochs


@pytest.mark.parametrize("job", ["moe", "moe-torch", "moe-bf16-overlap", "moe-torch-overlap", "files-moe-torch"])
def test_bidirmoe_parameters_identical_across_ranks(ranks, job):
    (m0, a0), (m1, a1) = ranks[job]
    _check_sync_options_reached_the_session(m0, m1)
    assert set(a0) == set(a1)
    for name in a0:
        np.testing.assert_array_equal(a0[name], a1[name], err_msg=name)
    assert np.abs(a0["p_syn1neg"]).sum() > 0 and np.abs(a0["p_salience"]).sum() > 0


# The command line, with a hook: rank KILL_RANK kills itself at sync round
# KILL_ROUND; with STOP_ROUND, rank 0 asks for a checkpoint at that round and
# the job ends (exit 3) right after the checkpoint is written; rank INT_RANK
# sends SIGINT at round INT_ROUND to itself, or with INT_LAUNCHER to torchrun
# (a Ctrl-C in torchrun's terminal: torchrun passes it on to every rank).
CLI_SCRIPT = r"""
import os, signal, sys
import bidirmoe.torch.distributed as D
from bidirmoe import cli

rank = int(os.environ["RANK"])
kill_rank, kill_round = int(os.environ.get("KILL_RANK", -1)), int(os.environ.get("KILL_ROUND", 0))
stop_round = int(os.environ.get("STOP_ROUND", 0))
int_rank, int_round = int(os.environ.get("INT_RANK", -1)), int(os.environ.get("INT_ROUND", 0))
plain_round = D.Session.sync_round

def sync_round(self, *args, **kwargs):
    if self.rounds == 0 and os.environ.get("RECORD"):
        with open(os.path.join(os.environ["RECORD"], f"session{rank}.txt"), "w") as f:
            f.write(f"{self.overlap} {self.wire_dtype}")
        # While training: any copy of the corpus written next to the output.
        with open(os.path.join(os.environ["RECORD"], f"spool{rank}.txt"), "w") as f:
            f.write(" ".join(p for p in os.listdir(os.environ["RECORD"]) if p.startswith(".bidirmoe")))
    if rank == kill_rank and self.rounds == kill_round:
        os.kill(os.getpid(), signal.SIGKILL)
    if rank == int_rank and self.rounds == int_round:  # Ctrl-C: to this rank only, or to the launcher
        os.kill(os.getppid() if os.environ.get("INT_LAUNCHER") else os.getpid(), signal.SIGINT)
    if rank == 0 and stop_round and self.rounds == stop_round:
        self.stop_requested = True
    return plain_round(self, *args, **kwargs)

D.Session.sync_round = sync_round
if stop_round:
    plain_stop = cli._stop_checkpoint

    def stop_checkpoint(*args):
        plain_stop(*args)
        D.current().barrier()  # rank 0 has written the checkpoint
        sys.stdout.flush()
        os._exit(3)  # a crash right after the checkpoint

    cli._stop_checkpoint = stop_checkpoint
sys.exit(cli.main(sys.argv[1:]))
"""

TRAIN_ARGS = ["--model", "cbow", "--dim", "12", "--min-count", "3", "--epochs", "3", "--threads", "1", "-q",
              "--distributed", "--sync-words", "2000"]


def _cli(tmp_path, corpus_path, extra=(), **env):
    script = tmp_path / "cli_rank.py"
    script.write_text(CLI_SCRIPT)
    out = tmp_path / "vectors.txt"
    inputs = [str(p) for p in corpus_path] if isinstance(corpus_path, list) else [str(corpus_path)]
    rc, so, se, dt = torchrun([str(script), "train", *inputs, "-o", str(out), *TRAIN_ARGS, *extra],
                              cwd=tmp_path, **env)
    return rc, se, dt, out


@pytest.mark.parametrize("inputs, flags", [("one file", []), ("several files", []),
                                           ("one file", ["--sync-overlap"]), ("one file", ["--sync-dtype", "bfloat16"]),
                                           ("several files", ["--sync-overlap", "--sync-dtype", "bfloat16"])])
def test_cli_distributed_writes_vectors_on_rank0(corpus, files, tmp_path, inputs, flags):
    rc, err, _, out = _cli(tmp_path, files if inputs == "several files" else corpus[0], flags, RECORD=str(tmp_path))
    assert rc == 0, err[-3000:]
    want = f"{'--sync-overlap' in flags} {'bfloat16' if 'bfloat16' in flags else 'float32'}"
    assert [(tmp_path / f"session{r}.txt").read_text() for r in (0, 1)] == [want, want]  # the flags reached the session
    assert [(tmp_path / f"spool{r}.txt").read_text() for r in (0, 1)] == ["", ""]  # the inputs are read in place
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".bidirmoe")]
    lines = out.read_text().splitlines()
    single = Word2Vec(vector_size=12, min_count=3)
    single.build_vocab(corpus_file=str(corpus[0]))
    assert lines[0].split() == [str(len(single.wv)), "12"]
    assert [ln.split()[0] for ln in lines[1:]] == single.wv.index_to_key


def test_killed_rank_ends_the_job_without_output(corpus, tmp_path):
    rc, err, dt, out = _cli(tmp_path, corpus[0], KILL_RANK="1", KILL_ROUND="3", BIDIRMOE_DIST_TIMEOUT="20")
    assert rc != 0
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith("vectors.txt")]  # no temp file left either
    assert dt < 120
    # Rank 0 says what happened on one line: the collective that failed, or
    # the launcher's SIGTERM (torchrun stops the other ranks when one dies).
    assert "bidirmoe: error: rank 0/2: " in err or "bidirmoe: interrupted" in err, err[-3000:]


@pytest.mark.parametrize("inputs", ["gzip file", "several files"])
def test_stop_then_resume(corpus, files, tmp_path, inputs):
    source = files if inputs == "several files" else corpus[1]
    ckpt = tmp_path / "run.ckpt"
    rc, err, _, out = _cli(tmp_path, source, ["--checkpoint", str(ckpt)], STOP_ROUND="4")
    assert rc != 0 and ckpt.exists() and not out.exists(), err[-3000:]
    meta = Word2Vec.load(str(ckpt)).extra_meta["cli"]
    assert meta["resume"] is not None and len(meta["resume"]["ranks"]) == 2
    assert 0 < meta["words_done"] < meta["schedule_words"]
    if inputs == "several files":  # each rank's position in each of its pieces, read in place
        assert all(r.get("shard_done") or len(r["pieces"]) >= 1 for r in meta["resume"]["ranks"])
    # A mid-epoch checkpoint of two ranks needs two ranks: one line, and the checkpoint stays.
    single = subprocess.run([sys.executable, "-m", "bidirmoe", "train", *map(str, source if isinstance(source, list)
                                                                             else [source]), "-o", str(tmp_path / "x.txt"),
                             *TRAIN_ARGS[:-3], "--resume", str(ckpt)], env=_env(), capture_output=True, text=True,
                            timeout=60)
    assert single.returncode == 1 and single.stderr.count("\n") == 1 and "ranks" in single.stderr, single.stderr
    assert ckpt.exists()
    _resume_matches_single_process(tmp_path, source, ckpt, corpus)


def _resume_matches_single_process(tmp_path, source, ckpt, corpus):
    """`--resume ckpt` finishes the distributed run, removes the checkpoint and writes the
    single-process vocabulary."""
    rc, err, _, out = _cli(tmp_path, source, ["--checkpoint", str(ckpt), "--resume", str(ckpt)])
    assert rc == 0, err[-3000:]
    assert out.exists() and not ckpt.exists()
    single = Word2Vec(vector_size=12, min_count=3)
    single.build_vocab(corpus_file=str(corpus[0]))
    assert [ln.split()[0] for ln in out.read_text().splitlines()[1:]] == single.wv.index_to_key


@pytest.mark.parametrize("where", ["one rank", "launcher"])
def test_ctrl_c_stops_every_rank_at_a_checkpoint_that_resumes(corpus, files, tmp_path, where):
    ckpt = tmp_path / "run.ckpt"
    hook = dict(INT_RANK="1", INT_ROUND="4") if where == "one rank" else dict(INT_RANK="0", INT_ROUND="4",
                                                                                INT_LAUNCHER="1")
    rc, err, _, out = _cli(tmp_path, files, ["--checkpoint", str(ckpt)], **hook)
    assert rc != 0 and ckpt.exists() and not out.exists(), err[-3000:]
    assert f"bidirmoe: interrupted; checkpoint written to {ckpt} (resume with --resume {ckpt})" in err, err[-3000:]
    assert f"bidirmoe: interrupted; rank 0 wrote the checkpoint {ckpt}" in err, err[-3000:]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".bidirmoe") or ".tmp" in p]
    meta = Word2Vec.load(str(ckpt)).extra_meta["cli"]
    assert 0 < meta["words_done"] < meta["schedule_words"]
    # The checkpoint resumes (each rank finds the same pieces of the files) and the run completes.
    _resume_matches_single_process(tmp_path, files, ckpt, corpus)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_rendezvous_is_one_line(corpus, tmp_path):
    env = _env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               BIDIRMOE_DIST_TIMEOUT="3")
    p = subprocess.run([sys.executable, "-m", "bidirmoe", "train", str(corpus[0]), "-o", str(tmp_path / "v.txt"),
                        "--distributed", "-q"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1, p.stderr
    assert "cannot reach the rendezvous at 127.0.0.1" in p.stderr
    assert not (tmp_path / "v.txt").exists()


def test_not_under_torchrun(corpus, tmp_path, monkeypatch):
    from bidirmoe.torch.distributed import DistributedError

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(DistributedError, match="torchrun"):
        Word2Vec(corpus_file=str(corpus[0]), vector_size=8, min_count=1, distributed=True)
    p = subprocess.run([sys.executable, "-m", "bidirmoe", "train", str(corpus[0]), "-o", str(tmp_path / "v.txt"),
                        "--distributed"], env={k: v for k, v in _env().items() if k not in ("RANK", "WORLD_SIZE")},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "torchrun" in p.stderr


def test_settings_are_checked():
    with pytest.raises(ValueError, match="sync_words"):
        Word2Vec(vector_size=8, distributed=True, sync_words=0)
    from bidirmoe.cli import main

    assert main(["train", __file__, "-o", "x.txt", "--sync-words", "10"]) == 1  # needs --distributed
    with pytest.raises(ValueError, match="sync_dtype must be one of float32, bfloat16, got 'float16'"):
        Word2Vec(vector_size=8, distributed=True, sync_dtype="float16")
    with pytest.raises(ValueError, match="sync_overlap must be True or False"):
        BidirMoE(vector_size=8, distributed=True, sync_overlap="yes")
    model = BidirMoE(vector_size=8, distributed=True, sync_overlap=True, sync_dtype="bfloat16")
    assert (model.sync_overlap, model.sync_dtype) == (True, "bfloat16")


@pytest.mark.parametrize("flags", [["--sync-overlap"], ["--sync-dtype", "bfloat16"], ["--sync-words", "5"]])
def test_sync_flags_need_distributed(tmp_path, flags):
    p = subprocess.run([sys.executable, "-m", "bidirmoe", "train", __file__, "-o", str(tmp_path / "v.txt"), *flags],
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr == f"bidirmoe: error: {flags[0]}: only with --distributed\n"
    bad = subprocess.run([sys.executable, "-m", "bidirmoe", "train", __file__, "-o", str(tmp_path / "v.txt"),
                          "--distributed", "--sync-dtype", "float16"], env=_env(), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'float16'" in bad.stderr


# The Python API under torchrun: rank 1 gets Ctrl-C at sync round 4 (mode
# "stop"); every rank must raise KeyboardInterrupt at the same round with a
# last_stop that resumes the run (mode "resume", from rank 0's saved model).
PY_INT_SCRIPT = r"""
import json, os, signal, sys
import bidirmoe.torch.distributed as D
from bidirmoe import Word2Vec

corpus, ckpt, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]  # a path or a list of paths
rank = int(os.environ["RANK"])
plain_round = D.Session.sync_round

def sync_round(self, *args, **kwargs):
    if mode == "stop" and rank == 1 and self.rounds == 4:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C on one rank only
    return plain_round(self, *args, **kwargs)

D.Session.sync_round = sync_round
report = {"rank": rank}
if mode == "stop":
    model = Word2Vec(vector_size=12, min_count=3, workers=1, seed=5, distributed=True, sync_words=2000)
    model.build_vocab(corpus_file=corpus)
    try:
        model.train(corpus_file=corpus, total_words=model.corpus_total_words, epochs=3)
        report["finished"] = True
    except KeyboardInterrupt as e:
        report["message"] = str(e)
        report["stop"] = {k: v for k, v in model.last_stop.items() if k != "resume"}
        report["ranks"] = len(model.last_stop["resume"]["ranks"])
        if rank == 0:
            model.save(ckpt)
else:
    model = Word2Vec.load(ckpt)
    model.distributed, model.sync_words = True, 2000
    model.train(corpus_file=corpus, total_words=model.corpus_total_words, resume_from=model.last_stop)
    report["epochs_done"] = model._epochs_done
    report["last_stop"] = model.last_stop
with open(os.path.join(os.path.dirname(ckpt), f"{mode}{rank}.json"), "w") as f:
    json.dump(report, f)
"""


@pytest.mark.parametrize("inputs", ["one file", "several files"])
def test_python_api_ctrl_c_stops_every_rank_and_resumes(corpus, files, tmp_path, inputs):
    script = tmp_path / "py_rank.py"
    script.write_text(PY_INT_SCRIPT)
    ckpt = tmp_path / "model.bm"
    source = json.dumps(str(corpus[0]) if inputs == "one file" else [str(f) for f in files])
    rc, _, err, _ = torchrun([str(script), source, str(ckpt), "stop"], cwd=tmp_path)
    assert rc == 0, err[-3000:]
    stops = [json.loads((tmp_path / f"stop{r}.json").read_text()) for r in (0, 1)]
    for s in stops:
        assert "finished" not in s and "every rank stopped at sync round" in s["message"], s
        assert s["ranks"] == 2 and 0 < s["stop"]["words_done"] < s["stop"]["schedule_words"]
    assert stops[0]["stop"] == stops[1]["stop"]  # the same round on both ranks
    assert ckpt.exists()
    rc, _, err, _ = torchrun([str(script), source, str(ckpt), "resume"], cwd=tmp_path)
    assert rc == 0, err[-3000:]
    for r in (0, 1):
        done = json.loads((tmp_path / f"resume{r}.json").read_text())
        assert done["epochs_done"] == 3 and done["last_stop"] is None
