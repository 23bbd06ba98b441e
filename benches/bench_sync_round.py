"""How long one distributed sync round parks the training workers, 2 ranks
(torchrun, gloo on loopback), in one run:

* ``numpy blocking``: the rounds as first written — a blocking all-reduce
  of the control vector, then per array ``p -= base``, a blocking
  all-reduce, ``p += base``, ``base[:] = p`` (torch ops on the numpy views),
  waiting for gloo to release each tensor;
* ``fused blocking``: ``Session.overlap = False``: the fused Rust kernels,
  one all-reduce of the flat wire buffer, still waiting for the sums;
* ``overlapped``: the default: the kernels, then the all-reduces start and
  the round returns; the next round takes in their sums.

Between two rounds each rank spins its CPU for ``--gap`` ms (a training
thread's ``sync_words`` words: 50 ms is about 50k words of CBOW on one
thread here), so the background all-reduce competes for the cores as it
does in training. The arrays are ``--tables`` float32 tables of
``--vocab`` x ``--dim`` (CBOW on text8's 22k words: 2 x 22000 x 100).

    flock /tmp/bench.lock python benches/bench_sync_round.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, statistics, sys, time
import numpy as np, torch, torch.distributed as dist
import bidirmoe.torch.distributed as D

a = json.loads(sys.argv[1])
s = D.start()
rng = np.random.default_rng(s.rank)
arrays = [np.random.default_rng(0).standard_normal((a["vocab"], a["dim"])).astype(np.float32)
          for _ in range(a["tables"])]
tensors = s.tensors_of(arrays)

def train(local):
    end = time.perf_counter() + a["gap"] / 1000
    rows = rng.integers(0, a["vocab"], 2000)
    for arr in arrays:
        arr[rows] += np.float32(1e-3)
    while time.perf_counter() < end:
        pass
    return local + 50_000

def numpy_blocking(local, bases):
    ctrl = torch.tensor([float(local), 1.0, 0.0], dtype=torch.float64)
    s._all_reduce("ctrl", ctrl)
    for t, base in zip(tensors, bases):
        t.sub_(base)
        s._all_reduce("p", t)
        t.add_(base)
        base.copy_(t)

out = {}
for mode in ("numpy blocking", "fused blocking", "overlapped"):
    s.overlap = mode == "overlapped"
    s.begin_epoch(tensors, a["vocab"])
    bases = [t.clone() for t in tensors]
    local, times = 0, []
    for k in range(a["rounds"]):
        local = train(local)
        t0 = time.perf_counter()
        if mode == "numpy blocking":
            numpy_blocking(local, bases)
        else:
            s.sync_round(local, tensors, a["vocab"])
        times.append(time.perf_counter() - t0)
    if mode != "numpy blocking":
        s.finish_epoch(local, tensors, a["vocab"])
    times.sort()
    out[mode] = (statistics.median(times) * 1000, times[int(0.9 * len(times))] * 1000)
    same = torch.tensor([float(np.abs(x).sum()) for x in arrays], dtype=torch.float64)
    mine = same.clone()
    dist.all_reduce(same)
    assert torch.equal(same, 2 * mine), "ranks differ after the epoch's last round"
if s.rank == 0:
    print("RESULT " + json.dumps(out), flush=True)
s.close()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=22000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--tables", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--gap", type=float, default=50.0, help="ms of CPU work between rounds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--max_restarts=0", script, json.dumps(vars(args))]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    res = next((json.loads(ln[7:]) for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if res is None:
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr[-2000:]}")
    mb = 4 * args.vocab * args.dim * args.tables / 1e6
    print(f"{args.tables} tables of {args.vocab} x {args.dim} float32 ({mb:.1f} MB), {args.rounds} rounds, "
          f"{args.gap:g} ms of CPU work between rounds, 2 ranks\n")
    print("| round | parked per round, median | p90 |")
    print("|---|---|---|")
    for mode, (med, p90) in res.items():
        print(f"| {mode} | {med:.1f} ms | {p90:.1f} ms |")


if __name__ == "__main__":
    sys.exit(main())
