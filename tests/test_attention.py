"""BidirectionalAttention (SPEC Model 2): one Rust SGD step equals lr times
the finite-difference gradient of an independent float64 numpy
implementation of the attention layer."""

import itertools

import numpy as np
import pytest

from bidirmoe import _core


def att_ref_log_prob(P, context, target, self_row, heads, dk, dv):
    """log p(target | context): e_m = rho[w] + p[r]; the masked token e_j =
    mask + p[self_row] attends to the context and to itself; one layer."""
    e_j = P["mask"][0] + P["pos"][self_row]
    experts = [P["rho"][w] + P["pos"][r] for w, r in context] + [e_j]
    u = []
    for h in range(heads):
        wq, wk = P["wq"][h * dk:(h + 1) * dk], P["wk"][h * dk:(h + 1) * dk]
        wv = P["wv"][h * dv:(h + 1) * dv]
        q = wq @ e_j
        logits = np.array([q @ (wk @ e) for e in experts]) / np.sqrt(dk)
        a = np.exp(logits - logits.max())
        a /= a.sum()
        u.append(sum(ai * (wv @ e) for ai, e in zip(a, experts)))
    o = P["wo"] @ np.concatenate(u)
    logits = P["beta"] @ o + P["bias"][:, 0]
    m = logits.max()
    return logits[target] - m - np.log(np.exp(logits - m).sum())


@pytest.mark.parametrize("heads,dk,dv,absolute", [(1, 3, 4, False), (2, 2, 3, False), (2, 3, 2, True)])
def test_attention_step_equals_lr_times_finite_difference_gradient(heads, dk, dv, absolute):
    rng = np.random.default_rng(heads * 7 + dk + absolute)
    v, d, window, max_len = 6, 5, 2, 5
    p_rows = max_len if absolute else 2 * window + 1
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, False)
    P = {
        "rho": rng.normal(0, 0.5, (v, d)), "pos": rng.normal(0, 0.5, (p_rows, d)), "mask": rng.normal(0, 0.5, (1, d)),
        "wq": rng.normal(0, 0.5, (heads * dk, d)), "wk": rng.normal(0, 0.5, (heads * dk, d)),
        "wv": rng.normal(0, 0.5, (heads * dv, d)), "wo": rng.normal(0, 0.5, (d, heads * dv)),
        "beta": rng.normal(0, 0.5, (v, d)), "bias": rng.normal(0, 0.5, (v, 1)),
    }
    if absolute:
        context, self_row = [(1, 0), (4, 1), (1, 3), (5, 4)], 2  # word 1 twice: exact even for repeats
    else:
        context, self_row = [(1, 0), (4, 1), (1, 3), (5, 4)], window
    target = 2
    arrays = {k: a.astype(np.float32) for k, a in P.items()}
    arrays["syn1"] = None
    before = {k: a.copy() for k, a in arrays.items() if a is not None}
    settings = dict(heads=heads, key_size=dk, value_size=dv, window=window, shrink_windows=False, absolute=absolute,
                    max_len=max_len, negative=0, hs=False, softmax=True, vector_size=d)
    lr = 0.01
    loss = _core.attention_step(vocab, arrays, settings, context, target, self_row, lr)
    ref = lambda: att_ref_log_prob(P, context, target, self_row, heads, dk, dv)  # noqa: E731
    assert loss == pytest.approx(-ref(), rel=1e-4)
    eps, checked = 1e-6, 0
    for name, arr in P.items():
        delta = arrays[name].astype(np.float64) - before[name]
        for idx in itertools.product(*map(range, arr.shape)):
            orig = arr[idx]
            arr[idx] = orig + eps
            up = ref()
            arr[idx] = orig - eps
            down = ref()
            arr[idx] = orig
            assert delta[idx] == pytest.approx(lr * (up - down) / (2 * eps), rel=2e-3, abs=2e-6), (name, idx)
            checked += 1
    assert checked > 150
