"""BidirMoE vs CBOW (ours and gensim's), same data, same settings, one run.

text8 prefix, the first 90 % for training (1000-word lines, ``corpus_file``)
and the last 10 % held out. Prints words/s (vocabulary + training wall time)
of BidirMoE with 1 and 4 heads, our CBOW and gensim's CBOW; held-out
masked-word prediction (``evaluate_masked``: top-1, top-10, mean
log-likelihood under the full softmax) for BidirMoE and our CBOW; Google
analogy accuracy (restrict_vocab=30000) of ``wv`` and ``output_wv`` for each;
and BidirMoE's offset profile.

    python benches/bench_moe.py
    python benches/bench_moe.py --epochs 5 --max-targets 20000
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
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-targets", type=int, default=10000)
    ap.add_argument("--no-gensim", action="store_true")
    args = ap.parse_args()

    from bidirmoe import BidirMoE, Word2Vec, datasets
    from bidirmoe.moe import format_offset_profile

    tmp = tempfile.mkdtemp(prefix="bench_moe_")
    train_path, heldout, cut, n_words = heldout_split(args.corpus, tmp)
    common = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, epochs=args.epochs,
                  workers=args.workers, seed=1)
    print(f"train: {cut:,} words, held out: {n_words - cut:,} words; settings: {common}\n")

    results = []

    def timed(name, fn):
        t = time.perf_counter()
        model = fn()
        dt = time.perf_counter() - t
        wps = model.corpus_total_words * args.epochs / dt
        results.append((name, model, wps))
        print(f"  {name:22s} {wps / 1e6:6.2f} M words/s ({dt:.1f}s)", flush=True)
        return model

    print("speed (vocabulary + training):")
    if not args.no_gensim:
        from gensim.models import Word2Vec as GensimWord2Vec
        timed("gensim CBOW", lambda: GensimWord2Vec(corpus_file=train_path, **common))
    timed("bidirmoe CBOW", lambda: Word2Vec(corpus_file=train_path, **common))
    timed("BidirMoE heads=1", lambda: BidirMoE(corpus_file=train_path, heads=1, **common).train())
    timed("BidirMoE heads=4", lambda: BidirMoE(corpus_file=train_path, heads=4, **common).train())
    gensim_wps = results[0][2] if not args.no_gensim else None
    ours_cbow_wps = next(w for n, m, w in results if n == "bidirmoe CBOW")
    print()
    print("| model | words/s | vs gensim CBOW | vs our CBOW | held-out top-1 | top-10 | mean log-lik | "
          "analogy wv | analogy output_wv |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_top1 = None
    for name, model, wps in results:
        if name.startswith("gensim"):
            acc = model.wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=30000)[0]
            print(f"| {name} | {wps / 1e6:.2f} M | 1.00x | {wps / ours_cbow_wps:.2f}x | - | - | - | {100 * acc:.1f} % | - |")
            continue
        ev = model.evaluate_masked(heldout, max_targets=args.max_targets, seed=0)
        if base_top1 is None:
            base_top1 = ev["top1"]
        acc_in = model.wv.evaluate_word_analogies("google", restrict_vocab=30000)[0]
        out_kv = getattr(model, "output_wv", None)
        if out_kv is None:
            from bidirmoe import KeyedVectors
            out_kv = KeyedVectors(model.vector_size)
            out_kv.add_vectors(list(model.wv.index_to_key), model.syn1neg)
        acc_out = out_kv.evaluate_word_analogies("google", restrict_vocab=30000)[0]
        g = f"{wps / gensim_wps:.2f}x" if gensim_wps else "-"
        print(f"| {name} | {wps / 1e6:.2f} M | {g} | {wps / ours_cbow_wps:.2f}x | {100 * ev['top1']:.2f} % "
              f"({ev['top1'] / base_top1:.2f}x) | {100 * ev['top10']:.2f} % | {ev['log_likelihood']:.3f} | "
              f"{100 * acc_in:.1f} % | {100 * acc_out:.1f} % |")
    for name, model, _ in results:
        if name.startswith("BidirMoE"):
            print(f"\noffset profile of {name} (gate weight per offset, offset gates alone):")
            print(format_offset_profile(model.offset_profile()))
    os.unlink(train_path)
    os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
