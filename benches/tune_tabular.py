"""How TabularMoE's defaults were chosen: in-distribution validation only.

For every configuration of a small grid, TabularMoE is fitted on 80% of the
TRAINING rows of the paper's simulation (all 12 settings, seeds 100 to 103
— disjoint from the data seeds of bench_tabular.py) and scored on the other
20% of the training rows (same distribution as training). The configuration
with the best mean in-distribution validation accuracy becomes the default.
No test (out-of-distribution) row is used here.

    python benches/tune_tabular.py                       # the grid below
    python benches/tune_tabular.py --epochs 20 50 --learning-rate 0.01 0.02 --target-weight 1 4 --seeds 100 101
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tabular import SETTINGS, simulate  # noqa: E402

GRID = {
    "epochs": [20, 50, 100, 200],
    "learning_rate": [0.01, 0.02, 0.05],
    "target_weight": [1.0],
}
SEEDS = [100, 101, 102, 103]


def main() -> None:
    from bidirmoe import TabularMoE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, values in GRID.items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(values[0]), nargs="+", default=values)
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="simulation seeds (not the benchmark's 0, 1, 2)")
    ap.add_argument("--early-stopping", action="store_true", help="fit with early_stopping=True (epochs = the budget)")
    ap.add_argument("--vector-size", type=int, default=20)
    ap.add_argument("--heads", type=int, default=5)
    args = ap.parse_args()
    grid = {name: getattr(args, name) for name in GRID}
    fixed = {"vector_size": args.vector_size, "heads": args.heads}
    if args.early_stopping:
        fixed["early_stopping"] = True

    data = []
    for core, corr, xn in SETTINGS:
        for seed in args.seeds:
            x, y, _, _ = simulate(core, corr, xn, seed)  # the test rows are discarded
            idx = np.random.default_rng(seed).permutation(len(y))
            cut = int(0.8 * len(y))
            data.append((x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]))
    print(f"fixed: {fixed}\n")
    print("| " + " | ".join(grid) + " | ID validation accuracy | fit s |")
    print("|" + "---|" * (len(grid) + 2))
    best = None
    for values in itertools.product(*grid.values()):
        kw = dict(zip(grid, values), **fixed)
        accs, secs = [], 0.0
        for i, (xa, ya, xv, yv) in enumerate(data):
            m = TabularMoE(random_state=i, **kw)
            t = time.perf_counter()
            m.fit(xa.astype(str).astype(object), ya)
            secs += time.perf_counter() - t
            accs.append(m.score(xv.astype(str).astype(object), yv))
        acc = float(np.mean(accs))
        print(f"| {' | '.join(str(v) for v in values)} | {acc:.4f} | {secs / len(data):.2f} |", flush=True)
        if best is None or acc > best[0]:
            best = (acc, kw)
    print(f"\nbest by in-distribution validation: {best[1]} ({best[0]:.4f})")


if __name__ == "__main__":
    main()
