"""How TabularMoE's defaults were chosen: in-distribution validation only.

For every configuration of a small grid, TabularMoE is fitted on 80% of the
TRAINING rows of the paper's simulation (all 12 settings, seeds 100 and 101
— disjoint from bench_tabular.py's seeds 0, 1, 2) and scored on the other
20% of the training rows (same distribution as training). The configuration
with the best mean in-distribution validation accuracy becomes the default.
No test (out-of-distribution) row is used here.

    python benches/tune_tabular.py
"""

from __future__ import annotations

import itertools
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tabular import SETTINGS, simulate  # noqa: E402

GRID = {
    "epochs": [20, 50, 200],
    "learning_rate": [0.05, 0.2],
    "target_weight": [1.0, 4.0],
}
SEEDS = [100, 101]


def main() -> None:
    from bidirmoe import TabularMoE

    data = []
    for core, corr, xn in SETTINGS:
        for seed in SEEDS:
            x, y, _, _ = simulate(core, corr, xn, seed)  # the test rows are discarded
            idx = np.random.default_rng(seed).permutation(len(y))
            cut = int(0.8 * len(y))
            data.append((x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]))
    print("| " + " | ".join(GRID) + " | ID validation accuracy | fit s |")
    print("|" + "---|" * (len(GRID) + 2))
    best = None
    for values in itertools.product(*GRID.values()):
        kw = dict(zip(GRID, values))
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
