"""The torch backend against the Rust core, same data, same settings, one run.

text8 prefix, the first 90 % for training (1000-word lines, ``corpus_file``)
and the last 10 % held out. For each model, trains with the Rust core and
with ``backend="torch"`` on ``--device`` (default: the CPU) and prints
words/s (training wall time, vocabulary excluded), their ratio, and held-out
masked-word prediction (``evaluate_masked``: top-1, top-10, mean
log-likelihood under the full softmax) for the masked models, Google
analogy accuracy for Word2Vec. The Rust core must stay ahead on the CPU,
and the torch model's held-out top-1 must be within 10 % (relative) of the
Rust model's.

    python benches/bench_torch.py                       # BidirMoE (4 heads), 1 epoch, CPU
    python benches/bench_torch.py --models cbow,skipgram,bidirmoe --dim 300 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import DEFAULT_CORPUS, heldout_split  # noqa: E402



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--models", default="bidirmoe", help="comma-separated: cbow, skipgram, bidirmoe")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-targets", type=int, default=10000)
    args = ap.parse_args()

    import torch

    from bidirmoe import BidirMoE, Word2Vec, datasets

    tmp = tempfile.mkdtemp(prefix="bench_torch_")
    train_path, heldout, cut, n_words = heldout_split(args.corpus, tmp)
    common = dict(vector_size=args.dim, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs,
                  workers=args.workers, seed=1)
    where = args.device if args.device != "cpu" else f"CPU, {torch.get_num_threads()} torch threads"
    print(f"train: {cut:,} words, held out: {n_words - cut:,} words; torch {torch.__version__} on {where}; "
          f"settings: {common}\n")
    makers = {
        "cbow": lambda **kw: Word2Vec(**common, **kw),
        "skipgram": lambda **kw: Word2Vec(sg=1, **common, **kw),
        "bidirmoe": lambda **kw: BidirMoE(heads=args.heads, **common, **kw),
    }
    rows = []
    for name in args.models.split(","):
        for backend in ("rust", "torch"):
            kw = {} if backend == "rust" else {"device": args.device, "backend": "torch"}
            model = makers[name](**kw)
            model.build_vocab(corpus_file=train_path)
            t = time.perf_counter()
            model.train(corpus_file=train_path, total_words=model.corpus_total_words, epochs=args.epochs)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            wps = model.corpus_total_words * args.epochs / dt
            if name == "bidirmoe" or (name == "cbow"):
                ev = model.evaluate_masked(heldout, max_targets=args.max_targets, seed=0)
                quality = (ev["top1"], ev["top10"], ev["log_likelihood"])
            else:
                quality = None
            acc = model.wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=30000)[0]
            rows.append((name, backend, wps, quality, acc))
            print(f"  {name:9s} {backend:5s} {wps / 1e6:6.3f} M words/s ({dt:.1f}s)", flush=True)
    print()
    print("| model | backend | words/s | torch / rust | held-out top-1 | top-10 | mean log-lik | top-1 torch / rust | analogy |")
    print("|---|---|---|---|---|---|---|---|---|")
    by = {(n, b): (w, q, a) for n, b, w, q, a in rows}
    for n, b, w, q, a in rows:
        rw, rq, _ = by[(n, "rust")]
        ratio = f"{w / rw:.2f}x" if b == "torch" else "1.00x"
        if q is None:
            qcols = "- | - | - | -"
        else:
            rel = f"{q[0] / rq[0]:.3f}" if b == "torch" and rq[0] > 0 else "-"
            qcols = f"{100 * q[0]:.2f} % | {100 * q[1]:.2f} % | {q[2]:.3f} | {rel}"
        print(f"| {n} | {b} | {w / 1e6:.3f} M | {ratio} | {qcols} | {100 * a:.1f} % |")


if __name__ == "__main__":
    main()
