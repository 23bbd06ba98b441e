"""The paper's first experiment: BidirectionalAttention vs its MoE image.

Trains BidirectionalAttention and BidirMoE (``head_values="full"``, the exact
image of attention with W_O mixing heads) on the same corpus with matched
sizes — text8 prefix, first 90 % for training, last 10 % held out — and
reports held-out masked-word top-1 / top-10 / mean log-likelihood, words/s,
both offset profiles side by side, and ``to_moe()`` of the trained attention
model evaluated next to them (it must equal the attention model's numbers).

Speed reference: a straightforward batched torch CPU implementation of the
same single-layer attention model with the same objective (negative
sampling), same threads, when torch is installed. Throughput is compared in
*effective* words/s (targets trained per second, after subsampling), the
quantity both implementations actually process.

    python benches/bench_equivalence.py
    python benches/bench_equivalence.py --epochs 5 --dim 64 --heads 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import DEFAULT_CORPUS, heldout_split  # noqa: E402


def torch_attention_speed(model, train_words, workers, batch=1024, max_targets=300_000, seed=0):
    """Effective words/s of a batched torch CPU version of the same model
    (window mode, negative sampling), on the same vocabulary and subsampling."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(workers)
    rng = np.random.default_rng(seed)
    k2i = model.wv.key_to_index
    keep = np.asarray(model._vocab.keep_probability)
    ids = np.fromiter((k2i[w] for w in train_words if w in k2i), dtype=np.int64)
    ids = ids[rng.random(len(ids)) < keep[ids]]
    v, d, h, dk, dv, w, neg = len(k2i), model.vector_size, model.heads, model.key_size, model.value_size, model.window, 5
    counts = np.asarray(model.wv.expandos["count"], dtype=np.float64) ** 0.75
    neg_probs = torch.tensor(counts / counts.sum())
    rho = torch.nn.Embedding(v, d, sparse=True)
    beta = torch.nn.Embedding(v, d, sparse=True)
    torch.nn.init.uniform_(rho.weight, -0.5 / d, 0.5 / d)
    torch.nn.init.zeros_(beta.weight)
    pos = torch.nn.Parameter(torch.randn(2 * w + 1, d) * 0.1 / d ** 0.5)
    mask = torch.nn.Parameter(torch.randn(d) * 0.1 / d ** 0.5)
    wq = torch.nn.Parameter(torch.randn(h, dk, d) / d ** 0.5)
    wk = torch.nn.Parameter(torch.randn(h, dk, d) / d ** 0.5)
    wv = torch.nn.Parameter(torch.randn(h, dv, d) / d ** 0.5)
    wo = torch.nn.Parameter(torch.randn(d, h * dv) / (h * dv) ** 0.5)
    opt_sparse = torch.optim.SGD([rho.weight, beta.weight], lr=model.alpha)
    opt_dense = torch.optim.SGD([pos, mask, wq, wk, wv, wo], lr=model.alpha)
    offsets = torch.tensor(list(range(-w, 0)) + list(range(1, w + 1)))
    rows = offsets + w
    ids_t = torch.from_numpy(ids)
    n = min(len(ids) - 2 * w, max_targets)
    t0 = time.perf_counter()
    done = 0
    for start in range(w, w + n, batch):
        j = torch.arange(start, min(start + batch, w + n))
        ctx = ids_t[j[:, None] + offsets]                          # B x 2w
        reduced = w - torch.randint(0, w, (len(j), 1))             # word2vec's reduced window
        valid = offsets.abs()[None, :] <= reduced                  # B x 2w
        e = rho(ctx) + pos[rows]                                   # B x 2w x d
        e_j = mask + pos[w]                                        # d
        e_all = torch.cat([e, e_j.expand(len(j), 1, d)], dim=1)    # B x (2w+1) x d
        valid = torch.cat([valid, torch.ones(len(j), 1, dtype=torch.bool)], dim=1)
        q = torch.einsum("hkd,d->hk", wq, e_j)
        k = torch.einsum("hkd,bed->bhek", wk, e_all)
        vv = torch.einsum("hkd,bed->bhek", wv, e_all)
        logits = torch.einsum("hk,bhek->bhe", q, k) / dk ** 0.5
        a = torch.softmax(logits.masked_fill(~valid[:, None, :], float("-inf")), dim=-1)
        o = torch.einsum("bhe,bhek->bhk", a, vv).reshape(len(j), h * dv) @ wo.T
        tgt = ids_t[j]
        negs = torch.multinomial(neg_probs, len(j) * neg, replacement=True).view(len(j), neg)
        pos_score = (beta(tgt) * o).sum(-1)
        neg_score = torch.bmm(beta(negs), o[:, :, None]).squeeze(-1)
        loss = -(F.logsigmoid(pos_score).sum() + F.logsigmoid(-neg_score).sum())
        opt_sparse.zero_grad()
        opt_dense.zero_grad()
        loss.backward()
        opt_sparse.step()
        opt_dense.step()
        done += len(j)
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-targets", type=int, default=10000)
    args = ap.parse_args()

    from bidirmoe import BidirectionalAttention, BidirMoE
    from bidirmoe.moe import format_offset_profile

    tmp = tempfile.mkdtemp(prefix="bench_equiv_")
    train_path, heldout, cut, n_words = heldout_split(args.corpus, tmp)
    common = dict(vector_size=args.dim, heads=args.heads, window=args.window, negative=5, sample=1e-3, min_count=5,
                  epochs=args.epochs, workers=args.workers, seed=1)
    print(f"train {cut:,} words, held out {n_words - cut:,}; {common}\n", flush=True)

    rows = []
    for name, make in (("BidirectionalAttention", lambda: BidirectionalAttention(corpus_file=train_path, **common)),
                       ("BidirMoE (full heads)", lambda: BidirMoE(corpus_file=train_path, head_values="full", **common))):
        t = time.perf_counter()
        model = make().train()
        dt = time.perf_counter() - t
        rows.append((name, model, model.corpus_total_words * args.epochs / dt, model.trained_word_count / dt))
        print(f"  trained {name} in {dt:.1f}s", flush=True)
    att, moe = rows[0][1], rows[1][1]
    image = att.to_moe()
    rows.append(("to_moe() of the attention", image, None, None))

    print("\n| model | words/s | effective words/s | held-out top-1 | top-10 | mean log-lik |")
    print("|---|---|---|---|---|---|")
    evals = {}
    for name, model, wps, eff in rows:
        ev = model.evaluate_masked(heldout, max_targets=args.max_targets, seed=0)
        evals[name] = ev
        speed = f"{wps / 1e3:.0f} k | {eff / 1e3:.0f} k" if wps else "– | –"
        print(f"| {name} | {speed} | {100 * ev['top1']:.2f} % | {100 * ev['top10']:.2f} % | {ev['log_likelihood']:.3f} |")
    diff = abs(evals["to_moe() of the attention"]["log_likelihood"] - evals["BidirectionalAttention"]["log_likelihood"])
    print(f"\n|log-lik(attention) - log-lik(to_moe)| = {diff:.2e} (exact map: rounding only)")
    print(f"reparameterisation payoff: BidirMoE / attention words/s = {rows[1][2] / rows[0][2]:.2f}x")

    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch not installed: no torch CPU speed reference (pip install torch)")
    else:
        with open(train_path, encoding="utf-8") as f:
            tw = torch_attention_speed(att, f.read().split(), args.workers)
        print(f"torch CPU attention (same model, batched, {args.workers} threads): {tw / 1e3:.0f} k effective words/s; "
              f"Rust attention / torch = {rows[0][3] / tw:.2f}x")

    print("\noffset profiles (gate weight per offset; attention via its exact MoE image):")
    for name, model in (("attention", att), ("BidirMoE", moe)):
        print(f"  {name}:")
        print(format_offset_profile(model.offset_profile(), indent="    "))
    os.unlink(train_path)
    os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
