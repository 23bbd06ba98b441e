"""bidirmoe Word2Vec vs gensim Word2Vec, same file, same settings, one run.

Trains CBOW and skip-gram with both libraries (gensim in ``corpus_file``
mode) and prints words/s (vocabulary + training wall time), the ratio,
analogy accuracy on questions-words.txt (restrict_vocab=30000, scored by
gensim's evaluator for both), and peak RSS against the parameter bytes.
Each training run happens in a fresh subprocess that imports only the library
it measures; peak RSS is that process's own high-water mark (VmHWM, see
``_data.peak_rss_bytes``: ``ru_maxrss`` would report the parent's peak, which
Linux carries across exec), once after the import and once after training.

    python benches/bench_word2vec.py                 # text8 prefix as 1000-word lines
    python benches/bench_word2vec.py --repeats 3     # median of 3 interleaved runs
    python benches/bench_word2vec.py --single-line   # also: the same words as one huge line
    python benches/bench_word2vec.py --batch-targets 1,16 --scaling
    python benches/bench_word2vec.py --models cbow --batch-targets 1,16,16:10,16:15
    python benches/bench_word2vec.py --batch-targets 1 --baseline /path/to/other/checkout/python   # before/after
    python benches/bench_word2vec.py --batch-targets 1 --simd avx2+fma   # our AVX2 kernels on an AVX-512 CPU

A ``--batch-targets`` entry ``B:K`` runs bidirmoe with ``batch_targets=B`` and
``negative=K`` (more shared negatives per mini-batch; gensim keeps the
``negative=5`` of the settings).

bidirmoe is run once per ``--batch-targets`` value (default: 1, the exact
per-target update, and the model's default), side by side with gensim. Run
r of ``--repeats`` uses seed r + 1 for every library, so the accuracy columns
show the seed-to-seed spread (mean ± standard deviation over the seeds) next
to the median speed. ``--scaling`` also times bidirmoe (at the last
``--batch-targets`` entry) and gensim with 1 worker, interleaved with the
other runs, and prints both libraries' speed-ups from 1 to ``--workers``
workers side by side, for the whole run and for training alone (the
vocabulary scan left out: one thread in gensim, ``workers`` threads in
bidirmoe). A peer that scales no better on the same machine does not by
itself clear our code: ``examples/thread_scaling`` separates what the cores
give from what the workers lose by writing the same rows. Every run prints
the cache-line round trip between two threads before and after it
(``_core._line_round_trip_ns``), and the scaling table also gives the ratio
of the 2-worker runs where it stayed under ``NEAR_NS`` (cores sharing a
cache) to all 1-worker runs.

``--simd avx2+fma`` emulates a CPU without AVX-512 on one that has it:
bidirmoe takes its AVX2 kernels (``bidirmoe._core.force_simd``) and
gensim's BLAS (scipy's OpenBLAS, which gensim's inner loops call) its
Haswell kernels (``OPENBLAS_CORETYPE=Haswell``). ``--simd scalar`` runs
bidirmoe's portable loops against gensim as it is.

Needs gensim (``pip install .[bench]``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import DEFAULT_CORPUS, NEAR_NS, SHARED, line_round_trip, placement  # noqa: E402

ANALOGIES = os.path.join(SHARED, "eval", "analogy", "questions-words.txt")

CHILD = r"""
import json, sys, time
lib, sg, path, params = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, sys.argv[6])
from _data import peak_rss_bytes
simd = params.pop("simd", None)
if lib == "bidirmoe":
    from bidirmoe import Word2Vec, _core
    if simd and not _core.force_simd(simd):
        sys.exit(f"this CPU lacks the {simd} kernels")
else:
    from gensim.models import Word2Vec
rss_import = peak_rss_bytes()
t = time.perf_counter()
# What Word2Vec(corpus_file=path, ...) does, in two steps timed apart.
m = Word2Vec(sg=sg, **params)
m.build_vocab(corpus_file=path)
t_train = time.perf_counter()
m.train(corpus_file=path, total_words=m.corpus_total_words, epochs=m.epochs)
dt, train_seconds = time.perf_counter() - t, time.perf_counter() - t_train
rss = peak_rss_bytes()  # before the evaluation below imports anything more
words = m.corpus_total_words * params["epochs"]
vocab = len(m.wv.index_to_key)
param_bytes = m.wv.vectors.nbytes + (m.syn1neg.nbytes if getattr(m, "syn1neg", None) is not None else 0)
from gensim.models import KeyedVectors
kv = KeyedVectors(m.wv.vector_size)
kv.add_vectors(list(m.wv.index_to_key), m.wv.vectors)
acc = kv.evaluate_word_analogies(sys.argv[5], restrict_vocab=30000)[0]
print(json.dumps(dict(seconds=dt, words=words, wps=words / dt, train_wps=words / train_seconds, rss=rss, rss_import=rss_import, vocab=vocab,
                      param_bytes=param_bytes, acc=acc)))
"""


def run(lib: str, sg: int, path: str, params: dict, pythonpath: str | None = None, blas_core: str | None = None) -> dict:
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}), **({"OPENBLAS_CORETYPE": blas_core} if blas_core else {})}
    out = subprocess.run([sys.executable, "-c", CHILD, lib, str(sg), path, json.dumps(params), ANALOGIES, HERE],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_lines(src: str, dst: str, words_per_line: int | None) -> int:
    opener = gzip.open if src.endswith(".gz") else open
    with opener(src, "rt", encoding="utf-8") as f:
        words = f.read().split()
    with open(dst, "w", encoding="utf-8") as f:
        if words_per_line is None:
            f.write(" ".join(words) + "\n")
        else:
            for i in range(0, len(words), words_per_line):
                f.write(" ".join(words[i:i + words_per_line]) + "\n")
    return len(words)


def parse_entry(entry: str) -> dict:
    """A ``--batch-targets`` entry, ``B`` or ``B:K``, as bidirmoe keyword arguments."""
    b, _, k = entry.partition(":")
    return {"batch_targets": int(b), **({"negative": int(k)} if k else {})}


def print_scaling(results: dict, last: dict, workers: int) -> None:
    """The thread-scaling table: words/s with ``workers`` workers over words/s
    with 1, ours and gensim's from the same run (medians), for the whole run
    (vocabulary scan + training) and for training alone."""
    print(f"\nthread scaling ({workers} workers / 1 worker, medians of the same run):")
    print("| model | library | vocabulary + training | training alone |")
    print("|---|---|---|---|")
    for model, rows in results.items():
        med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wps", "train_wps")} for name, rs in rows.items()}
        b = last[model]
        pairs = {"bidirmoe": (med[f"bidirmoe b={b}"], med[f"bidirmoe b={b} 1 worker"]),
                 "gensim": (med["gensim"], med["gensim 1 worker"])}
        ratio = {lib: {k: two[k] / one[k] for k in two} for lib, (two, one) in pairs.items()}
        for lib, r in ratio.items():
            name = f"bidirmoe b={b}" if lib == "bidirmoe" else lib
            two, one = ((f"bidirmoe b={b}", f"bidirmoe b={b} 1 worker") if lib == "bidirmoe" else ("gensim", "gensim 1 worker"))
            # one worker does not depend on where a second thread would run: all its runs count
            near = [x["wps"] for x in rows[two] if x.get("near")]
            where = (f" (2-worker runs under {NEAR_NS} ns: {statistics.median(near) / one_med:.2f}x, {len(near)} of "
                     f"{len(rows[two])})" if near and (one_med := statistics.median(x["wps"] for x in rows[one])) else "")
            print(f"| {model} | {name} | {r['wps']:.2f}x{where} | {r['train_wps']:.2f}x |")
        ours, peer = ratio["bidirmoe"]["train_wps"], ratio["gensim"]["train_wps"]
        per_word = med[f"bidirmoe b={b} 1 worker"]["train_wps"] / med["gensim 1 worker"]["train_wps"]
        if peer <= ours + 0.05:
            print(f"  {model}: gensim scales no better than bidirmoe on this machine ({peer:.2f}x vs {ours:.2f}x, "
                  f"training alone); examples/thread_scaling shows what the cores give and what the shared rows cost")
        else:
            print(f"  {model}: gensim scales better ({peer:.2f}x vs {ours:.2f}x, training alone); one bidirmoe "
                  f"worker trains {per_word:.1f}x the words/s of one gensim worker")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="text (or .gz) corpus; rewritten as 1000-word lines")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs per configuration (median reported)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--single-line", action="store_true", help="also train CBOW on the corpus as one huge line")
    ap.add_argument("--models", default="cbow,sg")
    ap.add_argument("--batch-targets", default=None,
                    help="comma-separated batch_targets values for bidirmoe (default: 1 and the library default)")
    ap.add_argument("--scaling", action="store_true", help="also time bidirmoe with 1 worker (thread scaling)")
    ap.add_argument("--baseline", default=None, metavar="PYTHONPATH",
                    help="also time the bidirmoe found on this PYTHONPATH (e.g. another checkout's python/), "
                         "interleaved, at the last --batch-targets entry: before/after in one run")
    ap.add_argument("--simd", default=None, choices=["avx2+fma", "scalar"],
                    help="bidirmoe's kernels at this level instead of the CPU's best (avx2+fma: gensim's BLAS at Haswell's too)")
    args = ap.parse_args()
    blas_core = "Haswell" if args.simd == "avx2+fma" else None
    params = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs, workers=args.workers)
    tmp = tempfile.mkdtemp(prefix="bench_w2v_")
    lines = os.path.join(tmp, "corpus_1000.txt")
    n = write_lines(args.corpus, lines, 1000)
    print(f"corpus: {args.corpus} -> {n:,} words in 1000-word lines; settings: {params}"
          + (f"; bidirmoe's kernels forced to {args.simd}" if args.simd else "")
          + (f", gensim's BLAS to {blas_core}" if blas_core else ""))
    from bidirmoe.word2vec import BATCH_TARGETS
    results, last = {}, {}
    for model in args.models.split(","):
        sg = 1 if model == "sg" else 0
        entries = args.batch_targets.split(",") if args.batch_targets else [str(b) for b in sorted({1, BATCH_TARGETS})]
        batches = [parse_entry(e) for e in entries]
        last[model] = entries[-1]
        if args.simd:
            batches = [{**b, "simd": args.simd} for b in batches]
        configs = [("gensim", "gensim", {})] + [(f"bidirmoe b={e}", "bidirmoe", b) for e, b in zip(entries, batches)]
        if args.baseline:
            configs += [(f"baseline bidirmoe b={entries[-1]}", "bidirmoe", {**batches[-1], "pythonpath": args.baseline})]
        if args.scaling:
            configs += [(f"bidirmoe b={entries[-1]} 1 worker", "bidirmoe", {**batches[-1], "workers": 1}),
                        ("gensim 1 worker", "gensim", {"workers": 1})]
        rows = {name: [] for name, _, _ in configs}
        for r in range(args.repeats):
            for name, lib, extra in configs:
                extra = dict(extra)
                pythonpath = extra.pop("pythonpath", None)
                before = line_round_trip()
                row = run(lib, sg, lines, {**params, "seed": r + 1, **extra}, pythonpath, blas_core)
                row["near"], trips = placement((before, line_round_trip()))
                print(f"  {model} seed {r + 1} {name:28s} {row['wps'] / 1e6:6.2f} M words/s  [{trips} ns]", flush=True)
                rows[name].append(row)
        results[model] = rows
    print()
    print("| model | library | words/s | ratio vs gensim | analogy acc (30k), mean ± sd over seeds | per seed | "
          "peak RSS MB | vs gensim | of which import MB | limit MB (1.5 x params + 200) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, rows in results.items():
        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()}
        g = med["gensim"]
        for name, rs in rows.items():
            x = med[name]
            accs = [100 * r["acc"] for r in rs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            limit = 1.5 * x["param_bytes"] / 2**20 + 200
            print(f"| {model} | {name} | {x['wps'] / 1e6:.2f} M | {x['wps'] / g['wps']:.2f}x | "
                  f"{statistics.mean(accs):.1f} ± {sd:.1f} % | {' / '.join(f'{a:.1f}' for a in accs)} | "
                  f"{x['rss'] / 2**20:.0f} | {x['rss'] / g['rss']:.2f}x | {x['rss_import'] / 2**20:.0f} | {limit:.0f} |")
    if args.scaling:
        print_scaling(results, last, args.workers)
    if args.single_line:
        one = os.path.join(tmp, "corpus_one_line.txt")
        write_lines(args.corpus, one, None)
        print("\nsame words as ONE line (CBOW):")
        for lib in ("gensim", "bidirmoe"):
            x = run(lib, 0, one, params)
            print(f"  {lib:9s} {x['wps'] / 1e6:.2f} M words/s, analogy acc {100 * x['acc']:.1f} %, "
                  f"peak RSS {x['rss'] / 2**20:.0f} MB")
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
