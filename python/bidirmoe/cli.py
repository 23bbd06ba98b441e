"""The ``bidirmoe`` command line.

    bidirmoe demo            train on the bundled text8 sample and print results

Errors print one line on stderr and exit with status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Optional


def _demo(args: argparse.Namespace) -> int:
    from . import Word2Vec, datasets, simd_level

    corpus = datasets.path("text8-sample")
    print(f"bidirmoe demo: {args.model.upper()} on the bundled text8 sample ({os.path.getsize(corpus) / 1e6:.1f} MB gzip, "
          f"one 2.1M-word line), {args.epochs} epochs, {args.threads} threads, SIMD: {simd_level()}")
    t0 = time.perf_counter()
    model = Word2Vec(corpus_file=corpus, sg=int(args.model == "skipgram"), vector_size=100, window=5, min_count=5,
                     negative=5, sample=1e-3, epochs=args.epochs, workers=args.threads, seed=args.seed)
    dt = time.perf_counter() - t0
    words = model.corpus_total_words * args.epochs
    print(f"trained on {words:,} words in {dt:.1f}s ({words / dt / 1e6:.2f} M words/s), vocabulary {len(model.wv):,} words\n")
    for w in ("king", "france", "computer", "three", "running"):
        if w in model.wv:
            near = ", ".join(f"{n} ({s:.2f})" for n, s in model.wv.most_similar(w, topn=6))
            print(f"  {w:9s} -> {near}")
    score, sections = model.wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=30000)
    total = sections[-1]
    n = len(total["correct"]) + len(total["incorrect"])
    print(f"\nGoogle analogies (restrict_vocab=30000): {100 * score:.1f} % of {n:,} questions answered correctly")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bidirmoe", description="Word embeddings by word2vec-style streaming SGD (Rust core).")
    p.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    d = sub.add_parser("demo", help="train on the bundled text8 sample and print neighbours and an analogy score",
                       description="Train on the bundled text8 sample (2.1M words) and print neighbours and the "
                                   "Google analogy accuracy.")
    d.add_argument("--model", choices=["cbow", "skipgram"], default="cbow")
    d.add_argument("--epochs", type=int, default=5)
    d.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="worker threads (default: all cores)")
    d.add_argument("--seed", type=int, default=1)
    d.set_defaults(func=_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("bidirmoe: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"bidirmoe: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
