"""Distributed training (torchrun, 2 ranks) vs one process, same data, one run.

For each corpus (the text8 prefix, first 90 % trained and the rest held
out; WikiText-2, train split trained and the valid split held out) and each
model (CBOW, BidirMoE), trains for ``--epochs`` epochs as

* 1 process x 1 thread,
* 1 process x 2 threads,
* 2 ranks x 1 thread (``torchrun --standalone --nproc_per_node 2``, gloo on
  loopback, ``distributed=True``), for each ``--sync`` setting,

and prints words/s (vocabulary + training wall time inside the process;
the launcher's start-up, torch's import and the rendezvous are not counted:
they are printed apart, a fixed cost of a few seconds per job), the speed-up over 1 x 1 and the
scaling efficiency (speed-up / 2), Google analogy accuracy
(restrict_vocab=30000) and held-out masked-word top-1
(``evaluate_masked``), and for the distributed runs the bytes each rank
sends into parameter all-reduces per sync against the corpus words all ranks
train between two syncs. ``--seeds`` repeats 1 x 1 with other seeds: the
spread is the seed-to-seed noise the distributed quality is judged against.

A ``--sync`` setting is ``N`` (combine everything every N words per rank,
the default rounds) or ``epoch``
(no round inside an epoch, only the blocking one at its end: what two
processes reach on this machine with almost no communication, the ceiling
of any sync design here), optionally
followed by ``:`` and comma-separated options: ``overlap`` (the
all-reduce runs while the workers train, its sums taken in as soon as they
arrive: ``sync_overlap=True``), ``blocking`` (every round waits for
its sums with the workers parked: ``sync_overlap=False``),
``bf16`` (the changes travel as bfloat16: ``sync_dtype="bfloat16"``),
``hot=K/M`` (every N words combine the K most frequent rows of the per-word
tables and the model's shared arrays, everything every M-th sync:
pWord2Vec's frequent-rows-more-often idea, Ji et al. 2016).

    flock /tmp/bench.lock python benches/bench_distributed.py
    python benches/bench_distributed.py --corpora text8 --models cbow --sync epoch 50000 50000:overlap 50000:bf16 50000:hot=5000/4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import DEFAULT_CORPUS, SHARED, heldout_split  # noqa: E402

WIKITEXT = os.path.join(SHARED, "wikitext-2")

# One training run; rank 0 (or the only process) prints one JSON line.
CHILD = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
from bidirmoe import BidirMoE, Word2Vec
params = dict(spec["params"])
sync = spec.get("sync")
if sync is not None:
    params["distributed"] = True
    every, _, rest = str(sync).partition(":")
    params["sync_words"] = 10 ** 15 if every == "epoch" else int(every)
    settings = {}
    for opt in filter(None, rest.split(",")):
        if opt.startswith("hot="):
            rows, every_full = opt[4:].split("/")
            settings["hot_rows"] = (int(rows), int(every_full))
        elif opt in ("blocking", "overlap"):
            params["sync_overlap"] = opt == "overlap"
        elif opt == "bf16":
            params["sync_dtype"] = "bfloat16"
        else:
            raise SystemExit(f"unknown sync option {opt!r}")
    import bidirmoe.torch.distributed as D
    plain_start = D.start
    def start(*a, **k):
        s = plain_start(*a, **k)
        for name, value in settings.items():
            setattr(s, name, value)
        return s
    D.start = start
startup = 0.0
if sync is not None:  # torch's import and the rendezvous: a fixed cost, reported apart
    t = time.perf_counter()
    import bidirmoe.torch.distributed as D
    D.start()
    startup = time.perf_counter() - t
t0 = time.perf_counter()
if spec["model"] == "cbow":
    m = Word2Vec(corpus_file=spec["train"], **params)
else:
    m = BidirMoE(corpus_file=spec["train"], **params).train()
dt = time.perf_counter() - t0
rank = int(os.environ.get("RANK", "0"))
out = {"seconds": dt, "words": m.corpus_total_words * params["epochs"], "vocab": len(m.wv), "startup": startup}
if sync is not None:
    import bidirmoe.torch.distributed as D
    s = D.last_session()
    out.update(rounds=s.rounds, bytes=s.bytes_synced, world=s.world,
               parked_ms=1000 * s.parked_seconds / max(s.parked_rounds, 1))
if rank == 0:
    with open(spec["heldout"], encoding="utf-8") as f:
        words = f.read().split()
    heldout = [words[i:i + 1000] for i in range(0, len(words), 1000)]
    out["top1"] = m.evaluate_masked(heldout, max_targets=spec["max_targets"], seed=0)["top1"]
    out["analogy"] = m.wv.evaluate_word_analogies("google", restrict_vocab=30000)[0]
    print("RESULT " + json.dumps(out), flush=True)
"""


def prepare(corpus: str, tmp: str):
    """(train file, held-out file, train words) of one corpus."""
    if corpus == "text8":
        d = os.path.join(tmp, "text8")
        os.makedirs(d)
        train, heldout, cut, _ = heldout_split(DEFAULT_CORPUS, d)
        held = os.path.join(d, "heldout.txt")
        with open(held, "w", encoding="utf-8") as f:
            f.write("\n".join(" ".join(s) for s in heldout) + "\n")
        return train, held, cut
    train = os.path.join(WIKITEXT, "wiki.train.tokens")
    with open(train, encoding="utf-8") as f:
        n = sum(len(line.split()) for line in f)
    return train, os.path.join(WIKITEXT, "wiki.valid.tokens"), n


def run(spec: dict, ranks: int, threads: int) -> dict:
    spec = dict(spec, params=dict(spec["params"], workers=threads))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if ranks == 1:
        cmd = [sys.executable, "-c", CHILD, json.dumps(spec)]
    else:
        script = os.path.join(spec["tmp"], "child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "--max_restarts=0", script, json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["wps"] = r["words"] / r["seconds"]
            return r
    raise RuntimeError(f"run failed ({p.returncode}): {p.stderr[-2000:]}")


def load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["text8", "wikitext2"], choices=["text8", "wikitext2"])
    ap.add_argument("--models", nargs="+", default=["cbow", "bidirmoe"], choices=["cbow", "bidirmoe"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sync", nargs="+", default=["50000"], help="sync settings of the 2-rank runs (see above)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the 1 x 1 runs (noise)")
    ap.add_argument("--max-targets", type=int, default=10000)
    ap.add_argument("--no-two-threads", action="store_true", help="skip 1 process x 2 threads")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_dist_")
    print(f"load average at start: {load()} ({os.cpu_count()} cores)\n", flush=True)
    for corpus in args.corpora:
        train, held, n = prepare(corpus, tmp)
        for model in args.models:
            params = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs, seed=1)
            if model == "bidirmoe":
                params["heads"] = 2
            base = dict(model=model, train=train, heldout=held, params=params, max_targets=args.max_targets, tmp=tmp)
            rows = []
            singles = []
            for seed in range(1, args.seeds + 1):
                r = run(dict(base, params=dict(params, seed=seed)), 1, 1)
                singles.append(r)
                rows.append((f"1 x 1 (seed {seed})", r, load()))
            two = None
            if not args.no_two_threads:
                two = run(base, 1, 2)
                rows.append(("1 x 2 threads", two, load()))
            for sync in args.sync:
                r = run(dict(base, sync=sync), 2, 1)
                rows.append((f"2 ranks x 1, sync {sync}", r, load()))
            ref = statistics.median(r["wps"] for r in singles)
            acc = [r["analogy"] for r in singles]
            top = [r["top1"] for r in singles]
            print(f"### {corpus} ({n:,} training words), {model}, {args.epochs} epochs\n")
            print(f"1 x 1 over {len(singles)} seeds: analogy {100 * min(acc):.2f}-{100 * max(acc):.2f} %, "
                  f"held-out top-1 {100 * min(top):.2f}-{100 * max(top):.2f} %\n")
            print("| run | words/s | vs 1x1 | vs 1x2 | efficiency | analogy | held-out top-1 | syncs | MB/sync/rank | "
                  "words between syncs | parked/sync | start-up | load |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for name, r, ld in rows:
                speed = r["wps"] / ref
                eff = f"{100 * speed / r.get('world', 1):.0f} %" if "world" in r else "-"
                if "rounds" in r and r["rounds"]:
                    mb = f"{r['bytes'] / r['rounds'] / 1e6:.2f}"
                    between = f"{r['words'] / r['rounds']:,.0f}"
                    syncs = str(r["rounds"])
                    parked = f"{r['parked_ms']:.1f} ms"
                else:
                    mb = between = syncs = parked = "-"
                vs2 = f"{r['wps'] / two['wps']:.2f}x" if two else "-"
                print(f"| {name} | {r['wps'] / 1e3:.0f} k | {speed:.2f}x | {vs2} | {eff} | {100 * r['analogy']:.2f} % | "
                      f"{100 * r['top1']:.2f} % | {syncs} | {mb} | {between} | {parked} | "
                      f"{r['startup']:.1f} s | {ld} |")
            print(flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
