"""Mini-batched targets with shared negatives (``batch_targets``), checked
against an independent numpy reference of the same batched math.

The Rust core trains one sentence (full windows, fixed learning rate) and
returns the negatives it drew; numpy replays the update with those draws:

* batched (B > 1): the hidden rows H (B x d) of B targets are scored against
  the output rows of their own targets and of K shared negatives in one
  product H · [beta_T ; beta_N]^T (B x (B + K)), of which each row uses its
  own target's column and the K negatives' columns; all scores and gradients
  come from the parameters as they were before the batch;
* B = 1: word2vec's exact per-target update (each output row is updated
  before the next one is scored; a negative equal to the target is skipped).
"""

from __future__ import annotations

import numpy as np
import pytest

from bidirmoe import BidirMoE, Word2Vec, _core

MAX_EXP, TABLE = 6.0, 1000
_x = (np.arange(TABLE) / TABLE * 2.0 - 1.0) * MAX_EXP
SIG_TABLE = (1.0 / (1.0 + np.exp(-_x))).astype(np.float32)


def sigmoid(f: float) -> float:
    """word2vec's tabulated sigmoid (1000 buckets over [-6, 6])."""
    if f <= -MAX_EXP:
        return 0.0
    if f >= MAX_EXP:
        return 1.0
    i = int(np.float32((np.float32(f) + np.float32(MAX_EXP)) * np.float32(TABLE / MAX_EXP / 2.0)))
    return float(SIG_TABLE[min(i, TABLE - 1)])


def windows(n: int, window: int):
    return [[c for c in range(max(0, p - window), min(n, p + window + 1)) if c != p] for p in range(n)]


def shared_negative_batch(H, targets, negs, beta, lr):
    """One batch: returns the gradients for H's rows and updates beta in place."""
    H = np.asarray(H, dtype=np.float64)
    b, k = len(targets), len(negs)
    cols = np.concatenate([targets, negs]).astype(int)
    S = H @ beta[cols].T  # (B x d) . (d x (B + K))
    G = np.zeros((b, b + k))
    for i in range(b):
        G[i, i] = lr * (1.0 - sigmoid(S[i, i]))
        for j in range(k):
            if negs[j] != targets[i]:
                G[i, b + j] = -lr * sigmoid(S[i, b + j])
    grad = G @ beta[cols]
    np.add.at(beta, cols, G.T @ H)
    return grad


def per_target(h, target, negs, beta, lr):
    """word2vec's sequential update of one target; returns the gradient for h."""
    grad = np.zeros_like(h)
    for label, o in [(1.0, target)] + [(0.0, n) for n in negs if n != target]:
        g = lr * (label - sigmoid(h @ beta[o]))
        grad += g * beta[o]
        beta[o] += g * h
    return grad


def ref_cbow(sent, syn0, beta, negs, window, batch, lr, mean=True):
    syn0, beta = syn0.astype(np.float64), beta.astype(np.float64)
    ctx = windows(len(sent), window)
    draws = iter(negs)
    k = len(negs) // ((len(sent) + batch - 1) // batch)
    for start in range(0, len(sent), batch):
        pos = list(range(start, min(start + batch, len(sent))))
        H = np.array([syn0[[sent[c] for c in ctx[p]]].sum(0) / (len(ctx[p]) if mean else 1) for p in pos])
        draw = [next(draws) for _ in range(k)]
        T = np.array([sent[p] for p in pos])
        if batch == 1:
            grads = [per_target(H[0], T[0], draw, beta, lr)]
        else:
            grads = shared_negative_batch(H, T, np.array(draw), beta, lr)
        for p, g in zip(pos, grads):
            for c in ctx[p]:
                syn0[sent[c]] += g if mean else g / len(ctx[p])
    return syn0, beta


def ref_skipgram(sent, syn0, beta, negs, window, batch, lr):
    syn0, beta = syn0.astype(np.float64), beta.astype(np.float64)
    ctx = windows(len(sent), window)
    draws = iter(negs)
    k = len(negs) // ((len(sent) + batch - 1) // batch)
    for start in range(0, len(sent), batch):
        pairs = [(c, p) for p in range(start, min(start + batch, len(sent))) for c in ctx[p]]
        H = syn0[[sent[c] for c, _ in pairs]]
        T = np.array([sent[p] for _, p in pairs])
        draw = np.array([next(draws) for _ in range(k)])
        if batch == 1:
            # one window: its context rows share the draw (negatives equal to the target dropped)
            t = T[0]
            kept = np.array([n for n in draw if n != t], dtype=int)
            cols = np.concatenate([[t], kept]).astype(int)
            S = H @ beta[cols].T
            G = np.array([[lr * ((1.0 if j == 0 else 0.0) - sigmoid(s)) for j, s in enumerate(row)] for row in S])
            grads = G @ beta[cols]
            np.add.at(beta, cols, G.T @ H)
        else:
            grads = shared_negative_batch(H, T, draw, beta, lr)
        for (c, _), g in zip(pairs, grads):
            syn0[sent[c]] += g
    return syn0, beta


@pytest.fixture(scope="module")
def vocab_model():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(9)]
    corpus = [list(rng.choice(words, size=12, p=np.arange(9, 0, -1) / 45)) for _ in range(40)]
    return Word2Vec(corpus, vector_size=12, min_count=1, epochs=0, workers=1)


def start_arrays(m, seed):
    rng = np.random.default_rng(seed)
    v, d = len(m.wv.index_to_key), m.vector_size
    return (rng.uniform(-0.5, 0.5, (v, d)).astype(np.float32), rng.uniform(-0.5, 0.5, (v, d)).astype(np.float32))


@pytest.mark.parametrize("model", ["cbow", "skipgram"])
@pytest.mark.parametrize("batch", [1, 2, 4, 16])
@pytest.mark.parametrize("mean", [True, False])
def test_batched_update_matches_numpy(vocab_model, model, batch, mean):
    if model == "skipgram" and not mean:
        pytest.skip("cbow_mean is a CBOW setting")
    m = vocab_model
    rng = np.random.default_rng(batch)
    sent = [int(x) for x in rng.integers(0, len(m.wv.index_to_key), size=11)]
    sent[3] = sent[4]  # a target repeated inside one batch
    syn0, beta = start_arrays(m, batch)
    a, b = syn0.copy(), beta.copy()
    negs = _core.train_sentence_ns(model, m._vocab, a, b, sent, window=2, cbow_mean=mean, negative=5,
                                   batch_targets=batch, lr=0.3, seed=7)
    n_batches = (len(sent) + batch - 1) // batch
    assert len(negs) == 5 * n_batches
    if model == "cbow":
        want0, want1 = ref_cbow(sent, syn0, beta, negs, 2, batch, 0.3, mean)
    else:
        want0, want1 = ref_skipgram(sent, syn0, beta, negs, 2, batch, 0.3)
    assert np.abs(a - syn0).max() > 1e-3 and np.abs(b - beta).max() > 1e-3  # it trained
    np.testing.assert_allclose(a, want0, atol=2e-5)
    np.testing.assert_allclose(b, want1, atol=2e-5)


def test_batched_differs_from_per_target(vocab_model):
    """Batching is a different update (stale within the batch), not a relabelled copy."""
    m = vocab_model
    sent = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1]
    syn0, beta = start_arrays(m, 3)
    out = []
    for batch in (1, 8):
        a, b = syn0.copy(), beta.copy()
        _core.train_sentence_ns("cbow", m._vocab, a, b, sent, window=2, cbow_mean=True, negative=5,
                                batch_targets=batch, lr=0.3, seed=7)
        out.append(a)
    assert np.abs(out[0] - out[1]).max() > 1e-4


def test_negative_equal_to_a_target_is_exercised(vocab_model):
    """The tiny vocabulary makes a shared negative hit a batch's target (the g = 0 branch)."""
    m = vocab_model
    sent = [0, 0, 1, 0, 2, 0, 1, 0]
    syn0, beta = start_arrays(m, 1)
    negs = _core.train_sentence_ns("cbow", m._vocab, syn0, beta, sent, window=2, cbow_mean=True, negative=5,
                                   batch_targets=8, lr=0.1, seed=7)
    assert set(negs) & set(sent)


@pytest.mark.parametrize("sg", [0, 1])
def test_batch_targets_one_is_the_default_path_before_batching(sg):
    """batch_targets=1 trains exactly as the per-target code, deterministic with one worker."""
    corpus = [[f"w{(i * 7 + j) % 23}" for j in range(15)] for i in range(60)]
    runs = [Word2Vec(corpus, vector_size=8, min_count=1, epochs=2, workers=1, sg=sg, batch_targets=1, seed=s)
            for s in (3, 3)]
    np.testing.assert_array_equal(runs[0].wv.vectors, runs[1].wv.vectors)
    other = Word2Vec(corpus, vector_size=8, min_count=1, epochs=2, workers=1, sg=sg, batch_targets=8, seed=3)
    assert not np.array_equal(other.wv.vectors, runs[0].wv.vectors)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", 100000])
def test_bad_batch_targets(bad):
    with pytest.raises(ValueError, match="batch_targets"):
        Word2Vec(batch_targets=bad)


def test_batch_targets_saved_and_loaded(tmp_path):
    corpus = [["a", "b", "c", "d"]] * 30
    m = Word2Vec(corpus, vector_size=8, min_count=1, epochs=1, workers=1, batch_targets=5)
    m.save(str(tmp_path / "m.model"))
    assert Word2Vec.load(str(tmp_path / "m.model")).batch_targets == 5


# ------------------------------------------------------------------ BidirMoE

@pytest.mark.parametrize("heads,full,mask,absolute", [(1, False, False, False), (2, False, True, False),
                                                       (2, True, True, False), (2, False, True, True)])
def test_moe_batch_is_lr_times_summed_gradient_at_the_old_parameters(heads, full, mask, absolute,
                                                                     assert_step_is_lr_times_gradient):
    """A BidirMoE mini-batch moves every parameter by lr x the sum over its
    targets of d log p(target) / d param, all taken at the parameters before
    the batch, with the one shared draw of negatives (a negative equal to a
    row's own target left out of that row): finite differences of the float64
    loop reference of test_moe.py, independent of the library's code."""
    from test_moe import make_model, ref_log_prob, to_sentence_mode

    rng = np.random.default_rng(300 + heads * 10 + full * 3 + mask + absolute)
    v, d, window, L, dk, k = 7, 6, 2, 5, 3, 4
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, False)
    P = make_model(rng, v, d, heads, full, window, mask, "negative")
    if absolute:
        to_sentence_mode(P, rng, v, d, heads, full, mask, L, dk)
        examples = [([2, 5, 1, 2], [0, 1, 3, 4], 3, 2), ([3, 0], [1, 2], 6, 0), ([4, 4, 1], [0, 2, 4], 2, 3)]
        ref = dict(P, pos_value_len=L)
    else:
        examples = [([1, 4, 4, 6], [-2, -1, 1, 2], 3, None), ([0, 2], [-1, 1], 5, None), ([3, 3, 1], [-2, -1, 1], 2, None)]
        ref = P
    arrays0 = {k_: (None if a is None else a.astype(np.float32)) for k_, a in P.items()}
    for name in ("salience", "offset_gate", "query", "key", "pos_key"):
        arrays0.setdefault(name, None)
    settings = dict(heads=heads, full=full, window=window, shrink_windows=False, negative=k, hs=False, softmax=False,
                    vector_size=d, absolute=absolute, max_len=L, key_size=dk, batch_targets=8)
    arrays = {k_: (None if a is None else a.copy()) for k_, a in arrays0.items()}
    lr = 0.01
    negs = _core.moe_batch_step(vocab, arrays, settings, examples, lr, seed=5)
    assert len(negs) == k

    def log_prob():
        return sum(ref_log_prob(ref, w, o, t, heads, full, window, mask, "negative", tpos=tp,
                                negatives=[n for n in negs if n != t]) for w, o, t, tp in examples)

    before = {k_: (None if a is None else a.copy()) for k_, a in arrays0.items()}
    checked = assert_step_is_lr_times_gradient(P, arrays, before, lr, log_prob, rel=3e-2, abs=lr * 4e-3)
    assert checked > 100


def test_moe_batch_step_errors():
    with pytest.raises(ValueError, match="batch_targets"):
        BidirMoE(batch_targets=0)
    m = BidirMoE([["w0", "w1", "w2", "w3"]] * 20, vector_size=4, min_count=1, workers=1, batch_targets=2)
    settings = dict(m._settings(), batch_targets=2)
    with pytest.raises(ValueError, match="2..=batch_targets"):
        _core.moe_batch_step(m._vocab, m._arrays(), settings, [([1], [1], 0, None)] * 3, 0.1)


@pytest.mark.parametrize("positions", ["window", "absolute"])
def test_moe_batch_targets_one_is_deterministic_and_batching_changes_the_update(positions):
    corpus = [[f"w{(i * 7 + j) % 23}" for j in range(15)] for i in range(60)]
    kw = dict(vector_size=8, min_count=1, epochs=2, workers=1, heads=2, positions=positions, seed=3)
    a, b = (BidirMoE(corpus, batch_targets=1, **kw).train() for _ in range(2))
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)
    c = BidirMoE(corpus, batch_targets=8, **kw).train()
    assert np.isfinite(c.wv.vectors).all() and not np.array_equal(c.wv.vectors, a.wv.vectors)


# ------------------------------------------------------------------ CLI

def _cli(*args):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "bidirmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.mark.parametrize("model", ["cbow", "skipgram", "bidirmoe"])
def test_cli_batch_targets(tmp_path, model):
    text = tmp_path / "c.txt"
    text.write_text("\n".join(" ".join(f"w{(i * 5 + j) % 17}" for j in range(12)) for i in range(80)) + "\n")
    fast = ["--dim", "8", "--epochs", "1", "--min-count", "1", "--threads", "1", "--quiet", "--model", model]
    r = _cli("train", text, "-o", tmp_path / "m.model", "--batch-targets", "4", *fast)
    assert r.returncode == 0, r.stderr
    cls = BidirMoE if model == "bidirmoe" else Word2Vec
    assert cls.load(str(tmp_path / "m.model")).batch_targets == 4
    r = _cli("train", text, "-o", tmp_path / "bad.model", "--batch-targets", "0", *fast)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "batch_targets" in r.stderr


def test_cli_batch_targets_refused_for_attention(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("a b c d e f\n" * 20)
    r = _cli("train", text, "-o", tmp_path / "m.model", "--model", "attention", "--batch-targets", "4", "--quiet")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--batch-targets" in r.stderr
