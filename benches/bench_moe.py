"""BidirMoE vs CBOW (ours and gensim's), same data, same settings, one run.

text8 prefix, the first 90 % for training (1000-word lines, ``corpus_file``)
and the last 10 % held out. Prints words/s (vocabulary + training wall time)
of BidirMoE with 1 and 4 heads, our CBOW and gensim's CBOW; held-out
masked-word prediction (``evaluate_masked``: top-1, top-10, mean
log-likelihood under the full softmax) for BidirMoE and our CBOW; Google
analogy accuracy (restrict_vocab=30000) of ``wv`` for each;
and BidirMoE's offset profile.

    python benches/bench_moe.py
    python benches/bench_moe.py --epochs 5 --max-targets 20000
    python benches/bench_moe.py --repeats 3 --batch-targets 1,16 --scaling
    python benches/bench_moe.py --repeats 3 --batch-targets 1 --no-eval --baseline /other/checkout/python

BidirMoE runs once per ``--batch-targets`` value (default: 1, the exact
per-target update and the library default, and 16). ``--scaling`` also times
BidirMoE (at the last ``--batch-targets`` value) and gensim's CBOW with 1
worker and prints each one's speed-up from 1 to ``--workers`` workers side by
side: the peer's own scaling on the same machine, in the same run. Before
and after every timed run it measures how long one cache line takes to go
from one thread to another and back (``_core._line_round_trip_ns``), and the
scaling line also gives the ratio of the 2-worker runs where that stayed
under ``NEAR_NS`` (cores sharing a cache) to all 1-worker runs.
``--repeats R`` runs every
configuration with seeds 1..R: median speed, and the held-out quality as mean
± standard deviation over the seeds (the seed-to-seed noise the batched
update is judged against). ``--baseline PYTHONPATH`` also times our CBOW and
BidirMoE (at the last ``--batch-targets`` value) from the bidirmoe found on
that path, each in a subprocess that reports its own training time,
interleaved with the other runs: a before/after in one run (speed only).
``--simd avx2+fma`` emulates a CPU without AVX-512 on one that has it: our
AVX2 kernels, and gensim's BLAS (scipy's OpenBLAS) at its Haswell kernels
(``OPENBLAS_CORETYPE=Haswell``, set before gensim loads it); ``--simd
scalar`` runs our portable loops against gensim as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import statistics
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import DEFAULT_CORPUS, NEAR_NS, heldout_split, line_round_trip, placement  # noqa: E402


BASELINE_CHILD = r"""
import json, sys, time
from bidirmoe import BidirMoE, Word2Vec, _core
path, kw = sys.argv[1], json.loads(sys.argv[2])
simd = kw.pop("simd", None)
if simd and not _core.force_simd(simd):
    sys.exit(f"this CPU lacks the {simd} kernels")
t = time.perf_counter()
m = Word2Vec(corpus_file=path, **kw) if "heads" not in kw else BidirMoE(corpus_file=path, **kw).train()
print(json.dumps({"seconds": time.perf_counter() - t, "words": m.corpus_total_words}))
"""


class Timed:
    """A training run timed in a subprocess (``--baseline``): its words and its own time."""

    def __init__(self, pythonpath: str, path: str, kw: dict):
        env = {**os.environ, "PYTHONPATH": pythonpath}
        out = subprocess.run([sys.executable, "-c", BASELINE_CHILD, path, json.dumps(kw)],
                             check=True, capture_output=True, text=True, env=env)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        self.corpus_total_words, self.bench_seconds = got["words"], got["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-targets", type=int, default=10000)
    ap.add_argument("--no-gensim", action="store_true")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of every configuration, run r with seed r (median speed, quality over the seeds)")
    ap.add_argument("--batch-targets", default=None,
                    help="comma-separated batch_targets values for BidirMoE (default: 1,16)")
    ap.add_argument("--scaling", action="store_true", help="also time BidirMoE and gensim CBOW with 1 worker (thread scaling)")
    ap.add_argument("--no-eval", action="store_true", help="speed only")
    ap.add_argument("--baseline", default=None, metavar="PYTHONPATH",
                    help="also time our CBOW and BidirMoE from the bidirmoe on this path (another checkout's python/)")
    ap.add_argument("--simd", default=None, choices=["avx2+fma", "scalar"],
                    help="our kernels at this level instead of the CPU's best (avx2+fma: gensim's BLAS at Haswell's too)")
    args = ap.parse_args()

    if args.simd == "avx2+fma":
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"  # read when scipy's OpenBLAS loads (imports below)
    from bidirmoe import BidirMoE, Word2Vec, _core, datasets
    if args.simd and not _core.force_simd(args.simd):
        sys.exit(f"this CPU lacks the {args.simd} kernels")
    from bidirmoe.moe import format_offset_profile
    batches = [int(b) for b in (args.batch_targets or "1,16").split(",")]
    tmp = tempfile.mkdtemp(prefix="bench_moe_")
    train_path, heldout, cut, n_words = heldout_split(args.corpus, tmp)
    common = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs,
                  workers=args.workers)
    print(f"train: {cut:,} words, held out: {n_words - cut:,} words; settings: {common}; "
          f"seeds 1..{args.repeats}" + (f"; our kernels forced to {args.simd}" if args.simd else "") + "\n")

    configs = []  # (name, constructor)
    if not args.no_gensim:
        from gensim.models import Word2Vec as GensimWord2Vec
        configs.append(("gensim CBOW", lambda kw: GensimWord2Vec(corpus_file=train_path, **kw)))
    configs.append(("bidirmoe CBOW", lambda kw: Word2Vec(corpus_file=train_path, **kw)))
    for b in batches:
        for heads in (1, 4):
            configs.append((f"BidirMoE heads={heads} b={b}",
                            lambda kw, h=heads, b=b: BidirMoE(corpus_file=train_path, heads=h, batch_targets=b,
                                                              **kw).train()))
    if args.scaling:
        if not args.no_gensim:
            configs.append(("gensim CBOW 1 worker",
                            lambda kw: GensimWord2Vec(corpus_file=train_path, **dict(kw, workers=1))))
        for heads in (1, 4):
            configs.append((f"BidirMoE heads={heads} b={batches[-1]} 1 worker",
                            lambda kw, h=heads: BidirMoE(corpus_file=train_path, heads=h, batch_targets=batches[-1],
                                                         **dict(kw, workers=1)).train()))

    if args.baseline:
        b = batches[-1]
        simd = {"simd": args.simd} if args.simd else {}
        configs.append(("baseline bidirmoe CBOW", lambda kw: Timed(args.baseline, train_path, dict(kw, **simd))))
        for heads in (1, 4):
            configs.append((f"baseline BidirMoE heads={heads} b={b}",
                            lambda kw, h=heads: Timed(args.baseline, train_path, dict(kw, heads=h, batch_targets=b, **simd))))

    runs = {name: [] for name, _ in configs}  # name -> [(wps, model)]
    placed = {name: [] for name, _ in configs}  # name -> [(wps, near)]: near = both round trips short
    print("speed (vocabulary + training; cache-line round trip between two threads before / after, ns):")
    for r in range(1, args.repeats + 1):
        for name, make in configs:
            before = line_round_trip()
            t = time.perf_counter()
            model = make(dict(common, seed=r))
            dt = getattr(model, "bench_seconds", time.perf_counter() - t)
            after = line_round_trip()
            wps = model.corpus_total_words * args.epochs / dt
            near, trips = placement((before, after))
            placed[name].append((wps, near))
            print(f"  seed {r} {name:36s} {wps / 1e6:6.2f} M words/s ({dt:.1f}s)  [{trips}]", flush=True)
            quality = None
            if not args.no_eval and not name.startswith(("gensim", "baseline")) and "1 worker" not in name:
                quality = model.evaluate_masked(heldout, max_targets=args.max_targets, seed=0)
                quality["analogy"] = model.wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=30000)[0]
            runs[name].append((wps, quality, model if r == args.repeats else None))
    med = {name: statistics.median(w for w, _, _ in rs) for name, rs in runs.items()}
    gensim_wps = med.get("gensim CBOW")
    ours_cbow_wps = med["bidirmoe CBOW"]

    def spread(values, fmt):
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{fmt(statistics.mean(values))} ± {fmt(sd)}"

    print()
    print("| model | words/s (median) | vs gensim CBOW | vs our CBOW | held-out top-1, mean ± sd | top-10 | "
          "mean log-lik | analogy wv |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        wps = med[name]
        g = f"{wps / gensim_wps:.2f}x" if gensim_wps else "-"
        qs = [q for _, q, _ in rs if q is not None]
        if not qs:
            print(f"| {name} | {wps / 1e6:.2f} M | {g} | {wps / ours_cbow_wps:.2f}x | - | - | - | - |")
            continue
        print(f"| {name} | {wps / 1e6:.2f} M | {g} | {wps / ours_cbow_wps:.2f}x | "
              f"{spread([100 * q['top1'] for q in qs], lambda x: f'{x:.2f}')} % | "
              f"{spread([100 * q['top10'] for q in qs], lambda x: f'{x:.2f}')} % | "
              f"{spread([q['log_likelihood'] for q in qs], lambda x: f'{x:.3f}')} | "
              f"{spread([100 * q['analogy'] for q in qs], lambda x: f'{x:.1f}')} % |")
    if args.scaling:
        pairs = [(f"BidirMoE heads={heads} b={batches[-1]}", f"BidirMoE heads={heads} b={batches[-1]} 1 worker")
                 for heads in (1, 4)]
        if gensim_wps:
            pairs.append(("gensim CBOW", "gensim CBOW 1 worker"))
        print(f"\nthread scaling ({args.workers} workers / 1 worker, vocabulary + training, medians of the same run):")
        for two, one in pairs:
            # one worker does not depend on where a second thread would run: all its runs count
            near = [w for w, n in placed[two] if n]
            where = (f"; 2-worker runs with both round trips under {NEAR_NS} ns: {statistics.median(near) / med[one]:.2f}x "
                     f"({len(near)} of {args.repeats})" if near else "")
            print(f"  {two:28s} {med[two] / med[one]:.2f}x{where}")
    for name, rs in runs.items():
        model = rs[-1][2]
        if name.startswith("BidirMoE") and "1 worker" not in name and model is not None:
            print(f"\noffset profile of {name}, seed {args.repeats} (gate weight per offset, offset gates alone):")
            print(format_offset_profile(model.offset_profile()))
    os.unlink(train_path)
    os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
