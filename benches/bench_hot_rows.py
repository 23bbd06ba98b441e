"""Hot-row privatization (``hot_rows``) against plain Hogwild, same data, one run.

text8 prefix, the first 90 % for training (1000-word lines, ``corpus_file``)
and the last 10 % held out. For each seed 1..R and each model (CBOW,
skip-gram, BidirMoE with 1 and 4 heads; d = 100, window 5, negative 5,
sample 1e-3, min_count 5) it trains with 1 worker, with 2 workers and
``hot_rows=0`` (plain Hogwild) and with 2 workers and each ``--hot`` value,
interleaved, and prints:

* speed: words/s of training alone (wall time of ``train()``, the
  vocabulary scan excluded; median over the seeds) and each 2-worker
  configuration's speed-up over 1 worker;
* quality of every 2-worker configuration, mean ± sd over the seeds: Google
  analogy accuracy (restrict_vocab=30000) for CBOW and skip-gram; held-out
  masked top-1 and mean log-likelihood (``evaluate_masked``) for BidirMoE.

    python benches/bench_hot_rows.py --repeats 3
    python benches/bench_hot_rows.py --repeats 3 --models cbow,moe4 --hot 64,256,1024 --every 1024,4096

``--every`` sets ``bidirmoe.training.HOT_EVERY`` (examples between a
worker's merges); each (hot, every) pair is one configuration.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import DEFAULT_CORPUS, heldout_split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="cbow,sg,moe1,moe4")
    ap.add_argument("--hot", default="256", help="comma-separated hot_rows values (besides 0)")
    ap.add_argument("--every", default=None, help="comma-separated HOT_EVERY values (default: the library's)")
    ap.add_argument("--max-targets", type=int, default=10000)
    ap.add_argument("--no-eval", action="store_true", help="speed only")
    args = ap.parse_args()

    import bidirmoe.training as training
    from bidirmoe import BidirMoE, Word2Vec, datasets
    tmp = tempfile.mkdtemp(prefix="bench_hot_")
    train_path, heldout, cut, n_words = heldout_split(args.corpus, tmp)
    common = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs)
    print(f"train: {cut:,} words, held out: {n_words - cut:,} words; settings: {common}; seeds 1..{args.repeats}\n")
    everies = [int(e) for e in args.every.split(",")] if args.every else [training.HOT_EVERY]
    configs = [("1 worker", 1, 0, everies[0]), ("2 workers plain", 2, 0, everies[0])]
    configs += [(f"2 workers hot={h} every={e}", 2, int(h), e) for h in args.hot.split(",") for e in everies]
    models = args.models.split(",")

    def build(model, kw):
        if model in ("cbow", "sg"):
            m = Word2Vec(sg=int(model == "sg"), **kw)
        else:
            m = BidirMoE(heads=int(model[3:]), **kw)
        m.build_vocab(corpus_file=train_path)
        return m

    results = {(m, c[0]): [] for m in models for c in configs}  # -> [(wps, quality)]
    for r in range(1, args.repeats + 1):
        for model in models:
            for name, workers, hot, every in configs:
                training.HOT_EVERY = every
                m = build(model, dict(common, seed=r, workers=workers, hot_rows=hot))
                t = time.perf_counter()
                m.train(corpus_file=train_path, total_words=m.corpus_total_words, epochs=args.epochs)
                wps = m.corpus_total_words * args.epochs / (time.perf_counter() - t)
                q = {}
                if not args.no_eval and workers > 1:
                    if model.startswith("moe"):
                        q = m.evaluate_masked(heldout, max_targets=args.max_targets, seed=0)
                    else:
                        q = {"analogy": m.wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=30000)[0]}
                results[(model, name)].append((wps, q))
                shown = ", ".join(f"{k} {v:.4f}" for k, v in q.items() if isinstance(v, float))
                print(f"  seed {r} {model:5s} {name:32s} {wps / 1e6:6.2f} M words/s  {shown}", flush=True)

    def spread(xs):
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"

    print("\n| model | configuration | training words/s (median) | speed-up vs 1 worker | quality, mean ± sd over seeds |")
    print("|---|---|---|---|---|")
    for model in models:
        one = statistics.median(w for w, _ in results[(model, "1 worker")])
        for name, workers, _, _ in configs:
            rs = results[(model, name)]
            wps = statistics.median(w for w, _ in rs)
            keys = [k for k in ("analogy", "top1", "log_likelihood") if rs and k in rs[0][1]]
            quality = "; ".join(f"{k} {spread([q[k] for _, q in rs])}" for k in keys) or "-"
            print(f"| {model} | {name} | {wps / 1e6:.2f} M | {wps / one:.2f}x | {quality} |")


if __name__ == "__main__":
    main()
