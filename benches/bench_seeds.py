"""The seed papers' claims about attention as mixtures of experts, measured
on real text (issue 12). One run, three experiments:

1. Sample efficiency (seeds 002 and 003). Held-out masked-word
   log-likelihood and top-1 against the number of training tokens, for plain
   multi-head attention, headwise and elementwise output gates, active
   attention (tanh, gelu) and the polynomial score (``qk_bias=True``; plain
   is the monomial one), at 1 and 2 layers, several seeds. The training
   tokens are nested prefixes of one mixed stream of the text8 prefix,
   WikiText-2 and PTB (a third from each); held-out text is the same mix of
   their unseen parts; one vocabulary (from the largest size) for all, so
   the log-likelihoods are comparable across sizes. Every variant trains on
   the torch backend (the same optimizer for all).
2. Linear analogies (the paper's "linear word analogies", Tables 1-2): on
   one corpus and one vocabulary, CBOW, skip-gram, BidirMoE (1 and 4 heads)
   and attention (1 and 2 layers): top-1, mean rank of the true word and
   mean cos(d, b - a + c), for the input and the output vectors, per
   semantic / syntactic / all.
3. The multi-layer mixture: for the trained 2-layer model of experiment 2,
   at held-out positions, how spread each head path's weights are over the
   positions (entropy) and how much of the hidden vector the top paths carry.

Prints tables, writes the raw numbers as JSON and the figures as PNG
(``--figures``, default ``docs/figures``). Words/s are printed for the
record; the machine is shared, so they are indicative only.

    python benches/bench_seeds.py                       # everything (about 30-40 min on 2 cores)
    python benches/bench_seeds.py --experiments 1 --seeds 2 --sizes 20000 200000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _data import DEFAULT_CORPUS, SHARED  # noqa: E402

VARIANTS = {
    "plain": {},
    "gate-headwise": {"output_gate": "headwise"},
    "gate-elementwise": {"output_gate": "elementwise"},
    "active-tanh": {"expert_activation": "tanh"},
    "active-gelu": {"expert_activation": "gelu"},
    "qk-bias": {"qk_bias": True},
}


# ----------------------------------------------------------------- data


def _lines(path: str, lower: bool = True) -> List[List[str]]:
    """Token lines of a WikiText / PTB file (headings and empty lines dropped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.strip()
            if not s or (s.startswith("= ") and s.endswith(" =")):
                continue
            out.append(s.lower().split() if lower else s.split())
    return out


def _chunks(words: Sequence[str], size: int = 100) -> List[List[str]]:
    return [list(words[i:i + size]) for i in range(0, len(words), size)]


def _take(sentences: List[List[str]], tokens: int) -> List[List[str]]:
    out, n = [], 0
    for s in sentences:
        if n >= tokens:
            break
        out.append(s[:tokens - n])
        n += len(out[-1])
    return out


def mixed_sources(held_tokens: int = 20000) -> Tuple[Dict[str, List[List[str]]], Dict[str, List[List[str]]]]:
    """(training pools, held-out sets) of the three sources."""
    with gzip.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as f:
        text8 = f.read().split()
    cut = int(len(text8) * 0.9)
    train = {"text8": _chunks(text8[:cut]),
             "wikitext-2": _lines(os.path.join(SHARED, "wikitext-2", "wiki.train.tokens")),
             "ptb": _lines(os.path.join(SHARED, "ptb", "ptb.train.txt"))}
    held = {"text8": _take(_chunks(text8[cut:]), held_tokens),
            "wikitext-2": _take(_lines(os.path.join(SHARED, "wikitext-2", "wiki.valid.tokens")), held_tokens),
            "ptb": _take(_lines(os.path.join(SHARED, "ptb", "ptb.valid.txt")), held_tokens)}
    return train, held


def training_set(pools: Dict[str, List[List[str]]], tokens: int) -> List[List[str]]:
    """A third of ``tokens`` from each pool (its first sentences), interleaved:
    the sets of growing ``tokens`` are nested."""
    parts = [_take(p, tokens // len(pools)) for p in pools.values()]
    out = []
    for i in range(max(len(p) for p in parts)):
        out.extend(p[i] for p in parts if i < len(p))
    return out


# ---------------------------------------------------------- experiment 1


def _dense_params(model) -> int:
    """Parameters besides the per-word tables (vectors, output layer)."""
    return int(sum(getattr(model, n).size for n in model._array_names
                   if getattr(model, n) is not None and n not in ("syn1neg", "syn1", "output_bias")))


def experiment_sample_efficiency(args) -> Dict:
    from bidirmoe import BidirectionalAttention

    pools, held_parts = mixed_sources()
    held = [s for part in held_parts.values() for s in part]
    largest = training_set(pools, max(args.sizes))
    counts = Counter(w for s in largest for w in s)
    print(f"\n== 1. sample efficiency: sizes {args.sizes} tokens (a third each of text8 / WikiText-2 / PTB), "
          f"held-out {sum(map(len, held))} tokens, vocabulary {sum(c >= args.min_count for c in counts.values())} "
          f"words (min_count {args.min_count} on the largest set)", flush=True)
    rows = []
    for layers in args.layers:
        for name, variant in VARIANTS.items():
            for size in args.sizes:
                data = training_set(pools, size)
                for seed in range(1, args.seeds + 1):
                    m = BidirectionalAttention(vector_size=args.dim, heads=args.heads, window=args.window,
                                               min_count=args.min_count, epochs=args.epochs,
                                               workers=args.torch_threads,
                                               seed=seed, layers=layers, backend="torch", **variant)
                    m.build_vocab_from_freq(counts)
                    m.torch_batch_targets = args.batch  # the same batch size at every training size
                    t0 = time.perf_counter()
                    m.train(data, total_examples=len(data), epochs=args.epochs)
                    dt = time.perf_counter() - t0
                    r = m.evaluate_masked(held, max_targets=args.held_targets, seed=0)
                    rows.append({"variant": name, "layers": layers, "tokens": size, "seed": seed,
                                 "log_likelihood": r["log_likelihood"], "top1": r["top1"],
                                 "words_per_s": args.epochs * size / dt, "dense_params": _dense_params(m),
                                 "params": _dense_params(m) + sum(a.size for a in (m.wv.vectors, m.syn1neg))})
                    print(f"  layers={layers} {name:17s} tokens={size:>7d} seed={seed}: "
                          f"LL {r['log_likelihood']:.3f} top1 {100 * r['top1']:.2f}% "
                          f"({rows[-1]['words_per_s'] / 1e3:.0f}k words/s)", flush=True)
    return {"rows": rows, "settings": {k: getattr(args, k) for k in ("sizes", "seeds", "dim", "heads", "window",
                                                                     "epochs", "min_count", "held_targets", "batch")}}


def _agg(rows, **where):
    sel = [r for r in rows if all(r[k] == v for k, v in where.items())]
    ll = np.array([r["log_likelihood"] for r in sel])
    t1 = np.array([r["top1"] for r in sel])
    return ll.mean(), ll.max() - ll.min(), t1.mean(), t1.max() - t1.min(), len(sel)


def report_sample_efficiency(res: Dict, figures: str) -> None:
    rows, sizes = res["rows"], sorted({r["tokens"] for r in res["rows"]})
    layer_set = sorted({r["layers"] for r in rows})
    print("\nHeld-out masked-word log-likelihood (nats, mean over seeds, ± half the min-max spread) and top-1:")
    for layers in layer_set:
        print(f"\n  layers = {layers}")
        print("  " + f"{'variant':17s} {'params':>16s} " + " ".join(f"{s:>21d}" for s in sizes))
        for name in VARIANTS:
            one = next(r for r in rows if r["variant"] == name and r["layers"] == layers)
            params = f"{one['params']} ({one['dense_params']})"
            cells = []
            for s in sizes:
                ll, spread, t1, _, _ = _agg(rows, variant=name, layers=layers, tokens=s)
                cells.append(f"{ll:7.3f}±{spread / 2:.3f} {100 * t1:5.2f}%")
            print("  " + f"{name:17s} {params:>16s} " + " ".join(f"{c:>21s}" for c in cells))
    print("  (params: all, and in brackets those besides the word vectors and output layer)")
    print("\nClaims, read off the numbers (a difference counts when it exceeds both variants' seed spreads):")
    claims = [("gate-headwise", "plain", "a headwise output gate beats plain attention (seed 002)"),
              ("gate-elementwise", "plain", "an elementwise output gate beats plain attention (seed 002)"),
              ("active-tanh", "plain", "active attention (tanh experts) beats linear experts (seed 003)"),
              ("active-gelu", "plain", "active attention (gelu experts) beats linear experts (seed 003)"),
              ("plain", "qk-bias", "the monomial score (no query bias) beats the polynomial one (seed 003)")]
    for better, worse, text in claims:
        for layers in layer_set:
            verdicts = []
            for s in sizes:
                a, sa, _, _, _ = _agg(rows, variant=better, layers=layers, tokens=s)
                b, sb, _, _, _ = _agg(rows, variant=worse, layers=layers, tokens=s)
                d = a - b
                verdicts.append("+" if d > max(sa, sb) else "-" if -d > max(sa, sb) else "=")
            wins, losses = verdicts.count("+"), verdicts.count("-")
            word = ("supported" if wins > len(sizes) / 2 and losses == 0 else
                    "contradicted" if losses > len(sizes) / 2 and wins == 0 else "not shown")
            print(f"  {text}, {layers} layer(s): {word} (per size {''.join(verdicts)}; "
                  "+ better, - worse, = within noise)")
    _plot_sample_efficiency(rows, sizes, layer_set, os.path.join(figures, "seeds_sample_efficiency.png"))


def _plot_sample_efficiency(rows, sizes, layer_set, path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib missing: no figure)")
        return
    fig, axes = plt.subplots(1, len(layer_set), figsize=(6 * len(layer_set), 4.2), squeeze=False, sharey=True)
    for ax, layers in zip(axes[0], layer_set):
        for name in VARIANTS:
            stats = [_agg(rows, variant=name, layers=layers, tokens=s) for s in sizes]
            mean = np.array([s[0] for s in stats])
            half = np.array([s[1] / 2 for s in stats])
            ax.errorbar(sizes, mean, yerr=half, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens")
        ax.set_title(f"{layers} layer(s)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("held-out log-likelihood (nats)")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle("Sample efficiency of attention variants (text8 + WikiText-2 + PTB)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"  figure: {path}")


# ---------------------------------------------------------- experiment 2


def _output_kv(model):
    from bidirmoe import KeyedVectors

    out = getattr(model, "syn1neg", None)
    if out is None:
        return None
    kv = KeyedVectors(out.shape[1], count=0)
    kv.index_to_key, kv.key_to_index = model.wv.index_to_key, model.wv.key_to_index
    kv.vectors = out
    return kv


def experiment_analogies(args) -> Tuple[Dict, object, List[List[str]]]:
    from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec
    from bidirmoe.evaluation import analogy_report

    tmp = tempfile.mkdtemp()
    with gzip.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as f:
        words = f.read().split()
    cut = int(len(words) * 0.9)
    path = os.path.join(tmp, "train.txt")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(0, cut, 1000):
            f.write(" ".join(words[i:min(i + 1000, cut)]) + "\n")
    held = _chunks(words[cut:], 1000)
    common = dict(vector_size=args.a_dim, window=5, min_count=5, epochs=args.a_epochs, workers=args.workers, seed=1)
    models = {
        "CBOW": lambda: Word2Vec(sg=0, **common),
        "skip-gram": lambda: Word2Vec(sg=1, **common),
        "BidirMoE 1 head": lambda: BidirMoE(heads=1, **common),
        "BidirMoE 4 heads": lambda: BidirMoE(heads=4, **common),
        "attention 1 layer": lambda: BidirectionalAttention(heads=4, **common),
        "attention 2 layers": lambda: BidirectionalAttention(heads=4, layers=2, **{**common, "workers": args.torch_threads}),
    }
    analogies = os.path.join(SHARED, "eval", "analogy", "questions-words.txt")
    print(f"\n== 2. linear analogies: text8 prefix ({cut} training words), d={args.a_dim}, window 5, "
          f"{args.a_epochs} epochs, Google analogies over the {args.restrict_vocab} most frequent words", flush=True)
    results, two_layer, vocab = {}, None, None
    for name, make in models.items():
        m = make()
        m.build_vocab(corpus_file=path)
        if vocab is None:
            vocab = list(m.wv.index_to_key)
        assert list(m.wv.index_to_key) == vocab, "one vocabulary for every model"
        t0 = time.perf_counter()
        m.train(corpus_file=path, total_words=m.corpus_total_words, epochs=args.a_epochs)
        dt = time.perf_counter() - t0
        entry = {"backend": m.backend, "words_per_s": args.a_epochs * cut / dt, "seconds": dt}
        for side, kv in (("input", m.wv), ("output", _output_kv(m))):
            if kv is None:
                continue
            rep = analogy_report(kv, analogies, restrict_vocab=args.restrict_vocab)
            q = rep.questions_table()
            entry[side] = {}
            for g in ("semantic", "syntactic", "all"):
                sel = [r for r in q if g == "all" or r["group"] == g]
                entry[side][g] = {"questions": len(sel), "top1": float(np.mean([r["rank"] == 1 for r in sel])),
                                  "mean_rank": float(np.mean([r["rank"] for r in sel])),
                                  "mean_cosine": float(np.mean([r["cosine"] for r in sel]))}
        if hasattr(m, "evaluate_masked") and name != "skip-gram":
            entry["masked_top1"] = m.evaluate_masked(held, max_targets=args.held_targets, seed=0)["top1"]
        results[name] = entry
        print(f"  {name:20s} trained on {m.backend} in {dt:.0f} s: {dt / args.a_epochs / 60:.1f} min an epoch, "
              f"{entry['words_per_s'] / 1e3:.0f}k words/s", flush=True)
        if name == "attention 2 layers":
            two_layer = m
    return results, two_layer, held


def report_analogies(results: Dict) -> None:
    for side in ("input", "output"):
        print(f"\n  {side} vectors" + ("" if side == "input" else " (the output layer's beta)"))
        head = "  " + f"{'model':20s}" + "".join(f"{g:>29s}" for g in ("Semantic", "Syntactic", "All"))
        print(head)
        print("  " + " " * 20 + "".join(f"{'top-1':>9s}{'mean rank':>11s}{'mean cos':>9s}" for _ in range(3)))
        for name, entry in results.items():
            if side not in entry:
                continue
            cells = "".join(f"{100 * c['top1']:8.2f}%{c['mean_rank']:11.0f}{c['mean_cosine']:9.3f}"
                            for c in (entry[side][g] for g in ("semantic", "syntactic", "all")))
            print("  " + f"{name:20s}" + cells)
    masked = {k: e["masked_top1"] for k, e in results.items() if "masked_top1" in e}
    if masked:
        print("\n  held-out masked-word top-1: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in masked.items()))


# ---------------------------------------------------------- experiment 3


def experiment_mixture(model, held: List[List[str]], positions: int, figures: str) -> Dict:
    """Path weight entropy and the share of z the top paths carry, at held-out positions."""
    rng = np.random.default_rng(0)
    k2i = model.wv.key_to_index
    w = model.window
    entropies, top_shares, n_pos = [], [], []
    done = 0
    while done < positions:
        sent = [t for t in held[int(rng.integers(len(held)))] if t in k2i]
        j = int(rng.integers(w, len(sent) - w))
        view = model.moe_view(sent[j - w:j], sent[j + 1:j + 1 + w])
        z = view.hidden()
        share = view.path_vectors() @ z / max(float(z @ z), 1e-30)  # each path's projection on z; sums to 1
        entropies.append(view.path_entropy())
        top_shares.append(np.sort(share)[::-1])
        n_pos.append(len(view.positions))
        done += 1
    ent = np.array(entropies)  # positions x paths
    shares = np.array(top_shares)
    paths = ["→".join(map(str, p)) for p in view.paths]
    uniform = float(np.mean(np.log(n_pos)))
    print(f"\n== 3. the 2-layer mixture ({len(paths)} head paths) at {positions} held-out positions "
          f"(window {w}; log(positions) = {uniform:.2f} nats is an even spread)")
    order = np.argsort(ent.mean(0))
    print("  path   weight entropy (nats, mean ± sd)")
    for i in order:
        print(f"  {paths[i]:6s} {ent[:, i].mean():.2f} ± {ent[:, i].std():.2f}")
    cum = np.cumsum(shares, axis=1).mean(0)
    print("  share of z carried by the top k paths (projection on z, mean over positions): "
          + ", ".join(f"top {k + 1}: {cum[k]:.2f}" for k in range(min(4, len(cum)))))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
        a.boxplot([ent[:, i] for i in order])
        a.set_xticks(range(1, len(order) + 1))
        a.set_xticklabels([paths[i] for i in order], fontsize=7)
        a.axhline(uniform, ls="--", c="gray", label="even spread")
        a.set_ylabel("entropy of w_π over positions (nats)")
        a.set_xlabel("head path (layer 1 → layer 2)")
        a.legend()
        b.plot(range(1, len(cum) + 1), cum, marker="o")
        b.set_xlabel("top k paths")
        b.set_ylabel("share of z (projection)")
        b.grid(alpha=0.3)
        fig.suptitle("2-layer attention as a mixture of MoEs (text8 prefix)")
        fig.tight_layout()
        path = os.path.join(figures, "seeds_mixture.png")
        os.makedirs(figures, exist_ok=True)
        fig.savefig(path, dpi=110)
        print(f"  figure: {path}")
    except ImportError:
        print("  (matplotlib missing: no figure)")
    return {"paths": paths, "entropy_mean": ent.mean(0).tolist(), "entropy_sd": ent.std(0).tolist(),
            "top_k_share": cum.tolist(), "even_spread": uniform}


# ------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", default="1,2,3")
    p.add_argument("--sizes", type=int, nargs="+", default=[25000, 50000, 100000, 250000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--min-count", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="experiment 1's targets per torch batch")
    p.add_argument("--held-targets", type=int, default=4000)
    p.add_argument("--a-dim", type=int, default=64, help="experiment 2's vector size")
    p.add_argument("--a-epochs", type=int, default=3, help="experiment 2's epochs")
    p.add_argument("--restrict-vocab", type=int, default=30000)
    p.add_argument("--mixture-positions", type=int, default=500)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads of the Rust-trained models")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="threads of the torch-trained models (1: on a busy machine more threads spin and stall)")
    p.add_argument("--figures", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "figures"))
    p.add_argument("--json", default=None, help="write the raw numbers here")
    args = p.parse_args()
    exps = {int(x) for x in args.experiments.split(",")}
    import torch

    print(f"bench_seeds: torch {torch.__version__} on the CPU, {args.torch_threads} torch thread(s), "
          f"{args.workers} Rust threads; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    out = {}
    if 1 in exps:
        out["sample_efficiency"] = experiment_sample_efficiency(args)
        report_sample_efficiency(out["sample_efficiency"], args.figures)
    if exps & {2, 3}:
        res, two_layer, held = experiment_analogies(args)
        out["analogies"] = res
        if 2 in exps:
            report_analogies(res)
        if 3 in exps:
            out["mixture"] = experiment_mixture(two_layer, held, args.mixture_positions, args.figures)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
