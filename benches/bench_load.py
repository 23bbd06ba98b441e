#!/usr/bin/env python
"""Reading word2vec C-tool files: ``bidirmoe.KeyedVectors.load_word2vec_format`` against gensim's.

Usage::

    python benches/bench_load.py                          # 100000 x 300 random vectors, binary and text
    python benches/bench_load.py --size 20000 --formats text

Writes random vectors with gensim's writer to a temporary directory, reads
each file with both libraries (best of ``--repeat`` runs each, interleaved),
checks that keys, vectors (bit for bit) and counts are identical and prints
the times and the speed-up.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from gensim.models import KeyedVectors as GensimKeyedVectors

from bidirmoe import KeyedVectors


def best_time(load, repeat):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = load()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=100000, help='number of vectors')
    parser.add_argument('--dim', type=int, default=300)
    parser.add_argument('--formats', nargs='+', default=['binary', 'text'], choices=['binary', 'text'])
    parser.add_argument('--repeat', type=int, default=2)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    source = GensimKeyedVectors(args.dim)
    source.add_vectors([f"word{i}" for i in range(args.size)],
                       rng.standard_normal((args.size, args.dim)).astype(np.float32))
    with tempfile.TemporaryDirectory() as scratch:
        for fmt in args.formats:
            binary = fmt == 'binary'
            path = os.path.join(scratch, 'vectors.bin' if binary else 'vectors.txt')
            source.save_word2vec_format(path, binary=binary)
            size_mb = os.path.getsize(path) / 2 ** 20
            t_ours, t_gensim = float('inf'), float('inf')
            for _ in range(args.repeat):  # interleaved, so that both see the same page cache and machine load
                t, ours = best_time(lambda: KeyedVectors.load_word2vec_format(path, binary=binary), 1)
                t_ours = min(t_ours, t)
                t, theirs = best_time(lambda: GensimKeyedVectors.load_word2vec_format(path, binary=binary), 1)
                t_gensim = min(t_gensim, t)
            assert ours.index_to_key == theirs.index_to_key
            assert np.array_equal(ours.vectors, theirs.vectors) and ours.vectors.dtype == theirs.vectors.dtype
            assert np.array_equal(ours.expandos['count'], theirs.expandos['count'])
            print(f"{fmt:6s} {args.size} x {args.dim} ({size_mb:.0f} MiB): ours {t_ours:.2f} s, gensim {t_gensim:.2f} s "
                  f"-> {t_gensim / t_ours:.1f}x; identical keys, vectors and counts")
    return 0


if __name__ == '__main__':
    sys.exit(main())
