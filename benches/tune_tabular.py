"""How TabularMoE's defaults were chosen: in-distribution validation only.

For every configuration of a small grid, TabularMoE is fitted on 80% of the
TRAINING rows of the paper's simulation (all 12 settings, seeds 100 to 103
— disjoint from the data seeds of bench_tabular.py) and scored on the other
20% of the training rows (same distribution as training). The configuration
with the best mean in-distribution validation accuracy becomes the default.
No test (out-of-distribution) row is used here.

    python benches/tune_tabular.py                       # the grid below
    python benches/tune_tabular.py --epochs 20 50 --learning-rate 0.01 0.02 --target-weight 1 4 --seeds 100 101
    python benches/tune_tabular.py --epochs auto 50 100 200 --learning-rate 0.02 --real

With ``--real``, every configuration is also scored in distribution on the
training groups of two real shifts of bench_tabular.py (auto-mpg's US cars,
car's 2- and 3-door cars): 5-fold cross-validation within those rows, 3 fold
seeds. Their test groups are never read here. This is how ``epochs="auto"``
was chosen: the simulation's tables are all 2,000 rows, so it alone cannot
say how the number of passes should follow the size of a table.
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

def epochs_arg(v: str):
    return v if v == "auto" else int(v)


GRID = {
    "epochs": ["auto", 20, 50, 100, 200],
    "learning_rate": [0.01, 0.02, 0.05],
    "target_weight": [1.0],
}
SEEDS = [100, 101, 102, 103]


def main() -> None:
    from bidirmoe import TabularMoE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, values in GRID.items():
        kind = epochs_arg if name == "epochs" else type(values[0])
        ap.add_argument("--" + name.replace("_", "-"), type=kind, nargs="+", default=values)
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="simulation seeds (not the benchmark's 0, 1, 2)")
    ap.add_argument("--early-stopping", action="store_true", help="fit with early_stopping=True (epochs = the budget)")
    ap.add_argument("--real", action="store_true",
                    help="also 5-fold CV on the training groups of auto-mpg and car (in distribution)")
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
    real = real_folds() if args.real else {}
    print(f"fixed: {fixed}\n")
    cols = ["simulation"] + list(real)
    print("| " + " | ".join(grid) + " | " + " | ".join(f"ID accuracy: {c}" for c in cols) + " | fit s (simulation) |")
    print("|" + "---|" * (len(grid) + len(cols) + 1))
    best = None
    for values in itertools.product(*grid.values()):
        kw = dict(zip(grid, values), **fixed)
        acc, secs = score(TabularMoE, kw, data)
        accs = [acc] + [score(TabularMoE, kw, folds)[0] for folds in real.values()]
        print(f"| {' | '.join(str(v) for v in values)} | {' | '.join(f'{a:.4f}' for a in accs)} | {secs:.2f} |",
              flush=True)
        if best is None or acc > best[0]:
            best = (acc, kw)
    print(f"\nbest by in-distribution validation on the simulation: {best[1]} ({best[0]:.4f})")


def score(cls, kw, splits):
    """Mean validation accuracy over (x_train, y_train, x_val, y_val) splits, mean fit seconds."""
    accs, secs = [], 0.0
    for i, (xa, ya, xv, yv) in enumerate(splits):
        m = cls(random_state=i, **kw)
        t = time.perf_counter()
        m.fit(xa.astype(str).astype(object), ya)
        secs += time.perf_counter() - t
        accs.append(m.score(xv.astype(str).astype(object), yv))
    return float(np.mean(accs)), secs / len(splits)


def real_folds():
    """5-fold splits (3 fold seeds) of the TRAINING group of two real shifts; the test groups are dropped."""
    from sklearn.model_selection import StratifiedKFold

    from bench_tabular import auto_mpg, car_nursery

    groups = {"auto-mpg US cars": next(iter(auto_mpg().values())),
              "car 2-3 doors": car_nursery()["car: doors 2, 3 -> 4, 5more"]}
    out = {}
    for name, (x, y, _, _) in groups.items():
        out[name] = [(x[a], y[a], x[b], y[b]) for seed in range(3)
                     for a, b in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)]
    return out

if __name__ == "__main__":
    main()
