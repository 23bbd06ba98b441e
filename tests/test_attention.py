"""BidirectionalAttention (SPEC Model 2): one Rust SGD step equals lr times
the finite-difference gradient of an independent float64 numpy
implementation of the attention layer."""


import numpy as np
import pytest

from bidirmoe import _core


def att_ref_log_prob(P, context, target, self_row, heads, dk, dv, negatives=None):
    """log p(target | context): e_m = rho[w] + p[r]; the masked token e_j =
    mask + p[self_row] attends to the context and to itself; one layer.
    With ``negatives``: word2vec's negative-sampling objective
    log σ(beta[t]·o) + Σ_n log σ(-beta[n]·o) instead of the softmax."""
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
    beta = P["rho"] if P.get("beta") is None else P["beta"]  # tie_output: beta = rho
    if negatives is not None:
        return -np.logaddexp(0.0, -beta[target] @ o) - sum(np.logaddexp(0.0, beta[n] @ o) for n in negatives)
    logits = beta @ o + P["bias"][:, 0]
    m = logits.max()
    return logits[target] - m - np.log(np.exp(logits - m).sum())


def random_att_params(rng, v, d, p_rows, heads, dk, dv):
    """Random attention parameters (float64) of the given sizes, beta included."""
    return {
        "rho": rng.normal(0, 0.5, (v, d)), "pos": rng.normal(0, 0.5, (p_rows, d)), "mask": rng.normal(0, 0.5, (1, d)),
        "wq": rng.normal(0, 0.5, (heads * dk, d)), "wk": rng.normal(0, 0.5, (heads * dk, d)),
        "wv": rng.normal(0, 0.5, (heads * dv, d)), "wo": rng.normal(0, 0.5, (d, heads * dv)),
        "beta": rng.normal(0, 0.5, (v, d)),
    }


@pytest.mark.parametrize("heads,dk,dv,absolute,tie", [(1, 3, 4, False, False), (2, 2, 3, False, False),
                                                      (2, 3, 2, True, False), (2, 2, 3, False, True)])
def test_attention_step_equals_lr_times_finite_difference_gradient(heads, dk, dv, absolute, tie,
                                                                    assert_step_is_lr_times_gradient):
    rng = np.random.default_rng(heads * 7 + dk + absolute)
    v, d, window, max_len = 6, 5, 2, 5
    p_rows = max_len if absolute else 2 * window + 1
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, False)
    P = random_att_params(rng, v, d, p_rows, heads, dk, dv)
    P["bias"] = rng.normal(0, 0.5, (v, 1))
    if tie:
        del P["beta"]  # rho is beta too: its gradient has both paths
    if absolute:
        context, self_row = [(1, 0), (4, 1), (1, 3), (5, 4)], 2  # word 1 twice: exact even for repeats
    else:
        context, self_row = [(1, 0), (4, 1), (1, 3), (5, 4)], window
    target = 2
    arrays = {k: a.astype(np.float32) for k, a in P.items()}
    arrays.setdefault("beta", None)
    arrays["syn1"] = None
    before = {k: a.copy() for k, a in arrays.items() if a is not None}
    settings = dict(heads=heads, key_size=dk, value_size=dv, window=window, shrink_windows=False, absolute=absolute,
                    max_len=max_len, negative=0, hs=False, softmax=True, vector_size=d, tie_output=tie)
    lr = 0.01
    loss = _core.attention_step(vocab, arrays, settings, context, target, self_row, lr)
    ref = lambda: att_ref_log_prob(P, context, target, self_row, heads, dk, dv)  # noqa: E731
    assert loss == pytest.approx(-ref(), rel=1e-4)
    checked = assert_step_is_lr_times_gradient(P, arrays, before, lr, ref, rel=2e-3, abs=2e-6)
    assert checked > 150


@pytest.mark.parametrize("heads,dk,dv,absolute", [(1, 3, 4, False), (2, 2, 3, False), (2, 3, 2, True)])
def test_negative_sampling_step_equals_lr_times_finite_difference_gradient(heads, dk, dv, absolute,
                                                                          step_with_distinct_negatives,
                                                                          assert_step_is_lr_times_gradient):
    rng = np.random.default_rng(50 + heads * 7 + dk + absolute)
    v, d, window, max_len, k = 7, 5, 2, 5, 3
    p_rows = max_len if absolute else 2 * window + 1
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, False)
    P = random_att_params(rng, v, d, p_rows, heads, dk, dv)
    context, self_row = [(1, 0), (4, 1), (1, 3), (5, 4)], (2 if absolute else window)
    target = 2
    arrays0 = {k_: a.astype(np.float32) for k_, a in P.items()}
    arrays0.update(bias=None, syn1=None)
    settings = dict(heads=heads, key_size=dk, value_size=dv, window=window, shrink_windows=False, absolute=absolute,
                    max_len=max_len, negative=k, hs=False, softmax=False, vector_size=d, tie_output=False)
    lr = 0.01
    arrays, loss, negatives = step_with_distinct_negatives(
        lambda a, seed: _core.attention_step(vocab, a, settings, context, target, self_row, lr, seed=seed),
        arrays0, "beta", target, k)
    ref = lambda: att_ref_log_prob(P, context, target, self_row, heads, dk, dv, negatives=negatives)  # noqa: E731
    # word2vec's sigmoid table (steps of 0.012 in the logit) limits the agreement.
    assert loss == pytest.approx(-ref(), rel=2e-2)
    before = {k_: a for k_, a in arrays0.items() if a is not None}
    checked = assert_step_is_lr_times_gradient(P, arrays, before, lr, ref, rel=3e-2, abs=lr * 4e-3)
    assert checked > 150


# ---------------------------------------------------------------- the model class

from bidirmoe import BidirectionalAttention, BidirMoE  # noqa: E402


def _random_contexts(model, rng, n=12):
    keys = model.wv.index_to_key
    out = []
    for _ in range(n):
        lw, rw = int(rng.integers(0, model.window + 1)), int(rng.integers(0, model.window + 1))
        if lw + rw == 0:
            lw = 1
        out.append(([keys[i] for i in rng.integers(0, len(keys), lw)], [keys[i] for i in rng.integers(0, len(keys), rw)]))
    return out


@pytest.mark.parametrize("heads,loss,trained", [(1, "negative", False), (1, "softmax", True), (3, "negative", True),
                                                (2, "softmax", True)])
def test_to_moe_gives_the_same_distribution(corpus, heads, loss, trained):
    att = BidirectionalAttention(corpus[:1500], vector_size=12, heads=heads, key_size=4, value_size=5, window=3,
                                 min_count=1, epochs=2, workers=2, loss=loss, seed=heads)
    att.build_vocab(corpus[:1500])
    if trained:
        att.train()
    moe = att.to_moe()
    assert isinstance(moe, BidirMoE) and moe.head_values == "full" and moe.heads == heads
    for left, right in _random_contexts(att, np.random.default_rng(0)):
        pa = np.array([p for _, p in sorted(att.predict_masked(left, right, topn=None))])
        pm = np.array([p for _, p in sorted(moe.predict_masked(left, right, topn=None))])
        assert np.abs(pa - pm).max() < 1e-5
        ga, gm = att.gates(left, right), moe.gates(left, right)
        assert ga["experts"] == gm["experts"]
        assert np.abs(ga["weights"] - gm["weights"]).max() < 1e-5


def test_block_diagonal_output_projection_maps_to_slice_heads(corpus):
    att = BidirectionalAttention(corpus[:500], vector_size=8, heads=2, key_size=3, value_size=4, window=2,
                                 min_count=1, epochs=1, workers=1)
    att.build_vocab(corpus[:500])
    att.W_O[:4, 4:] = 0
    att.W_O[4:, :4] = 0
    moe = att.to_moe()
    assert moe.head_values == "slice" and moe.wv.vectors.shape == (len(att.wv), 8)
    left, right = corpus[0][:2], corpus[0][3:5]
    pa = dict(att.predict_masked(left, right, topn=None))
    pm = dict(moe.predict_masked(left, right, topn=None))
    assert max(abs(pa[w] - pm[w]) for w in pa) < 1e-5


def test_numpy_forward_matches_reference_on_trained_model(corpus):
    att = BidirectionalAttention(corpus[:1500], vector_size=8, heads=2, key_size=3, value_size=4, window=2,
                                 min_count=1, epochs=2, workers=1, loss="softmax").train()
    P = {"rho": att.wv.vectors.astype(np.float64), "pos": att.pos_encoding.astype(np.float64),
         "mask": att.mask_embedding[None].astype(np.float64), "wq": att.W_Q.reshape(-1, 8).astype(np.float64),
         "wk": att.W_K.reshape(-1, 8).astype(np.float64), "wv": att.W_V.reshape(-1, 8).astype(np.float64),
         "wo": att.W_O.astype(np.float64), "beta": att.syn1neg.astype(np.float64),
         "bias": att.output_bias[:, None].astype(np.float64)}
    left, right = corpus[3][:2], corpus[3][3:5]
    k2i = att.wv.key_to_index
    context = [(k2i[w], 2 - len(left) + i) for i, w in enumerate(left)] + [(k2i[w], 3 + i) for i, w in enumerate(right)]
    full = dict(att.predict_masked(left, right, topn=None))
    for t in (0, 7, 20):
        lp = att_ref_log_prob(P, context, t, 2, 2, 3, 4)
        assert np.log(full[att.wv.index_to_key[t]]) == pytest.approx(lp, abs=1e-5)


def test_attention_learns_and_round_trips(corpus, tmp_path):
    att = BidirectionalAttention(corpus, vector_size=16, heads=2, window=3, min_count=1, epochs=1, workers=2, seed=2)
    att.build_vocab(corpus)
    before = att.evaluate_masked(corpus, max_targets=1500)
    att.train(epochs=6)
    after = att.evaluate_masked(corpus, max_targets=1500)
    assert after["log_likelihood"] > before["log_likelihood"] + 0.5 and after["top10"] > before["top10"] + 0.2
    path = tmp_path / "att.model"
    att.save(str(path))
    att2 = BidirectionalAttention.load(str(path))
    for name in ("W_Q", "W_K", "W_V", "W_O", "pos_encoding", "mask_embedding", "syn1neg"):
        assert np.array_equal(getattr(att, name), getattr(att2, name)), name
    left, right = corpus[1][:2], corpus[1][3:5]
    assert att2.predict_masked(left, right, topn=5) == att.predict_masked(left, right, topn=5)
    att2.train(corpus[:500], epochs=1)
    prof = att.offset_profile()
    assert prof["offsets"] == [-3, -2, -1, 1, 2, 3, "mask"] and np.allclose(prof["weights"].sum(1), 1)


def test_tied_output_trains_shares_memory_and_round_trips(corpus, tmp_path):
    att = BidirectionalAttention(corpus[:1500], vector_size=12, heads=2, window=2, min_count=1, epochs=2, workers=2,
                                 tie_output=True).train()
    assert att.syn1neg is att.wv.vectors and att.output_wv.vectors is att.wv.vectors
    r = att.evaluate_masked(corpus[1500:1800], max_targets=400)
    assert np.isfinite(r["log_likelihood"])
    path = tmp_path / "tied.model"
    att.save(str(path))
    att2 = BidirectionalAttention.load(str(path))
    assert att2.tie_output and att2.syn1neg is att2.wv.vectors
    moe = att.to_moe()
    left, right = corpus[0][:2], corpus[0][3:5]
    pa, pm = dict(att.predict_masked(left, right, topn=None)), dict(moe.predict_masked(left, right, topn=None))
    assert max(abs(pa[w] - pm[w]) for w in pa) < 1e-5
    with pytest.raises(ValueError, match="tie_output"):
        BidirectionalAttention(vector_size=8, tie_output=True, loss="hs")


PAIRS_KW = dict(vector_size=16, heads=2, key_size=4, min_count=1, sample=0, workers=1, seed=1)


@pytest.mark.parametrize("kw", [dict(loss="softmax", window=3, epochs=10), dict(loss="hs", window=3, epochs=10),
                                dict(positions="absolute", max_len=6, epochs=20)],
                         ids=["softmax", "hs", "sentence"])
def test_learns_the_pair_corpus_with_each_loss_and_mode(kw, pair_corpus, assert_learns_pairs):
    assert_learns_pairs(BidirectionalAttention(pair_corpus[0], **PAIRS_KW, **kw))


def test_attention_sentence_mode_and_determinism(corpus):
    kw = dict(vector_size=8, heads=2, min_count=1, epochs=1, workers=1, seed=4, positions="absolute", max_len=6)
    a = BidirectionalAttention(corpus[:600], **kw).train()
    b = BidirectionalAttention(corpus[:600], **kw).train()
    assert np.array_equal(a.W_Q, b.W_Q) and np.array_equal(a.wv.vectors, b.wv.vectors)
    assert a.pos_encoding.shape == (6, 8)
    r = a.evaluate_masked(corpus[600:800], max_targets=300)
    assert 0 <= r["top1"] <= r["top10"] <= 1 and np.isfinite(r["log_likelihood"])
    g = a.gates(corpus[0][:2], corpus[0][3:5])
    assert [pos for _, pos in g["experts"]] == [0, 1, 3, 4, 2]


@pytest.mark.parametrize("heads,trained", [(1, False), (2, True), (3, True)])
def test_to_moe_is_exact_in_sentence_mode(corpus, heads, trained):
    att = BidirectionalAttention(corpus[:1200], vector_size=12, heads=heads, key_size=4, value_size=3, min_count=1,
                                 epochs=2, workers=2, positions="absolute", max_len=7, loss="softmax", seed=heads)
    att.build_vocab(corpus[:1200])
    if trained:
        att.train()
    moe = att.to_moe()
    assert moe.positions == "absolute" and moe.mask_key.shape == (heads, 4)
    rng = np.random.default_rng(1)
    keys = att.wv.index_to_key
    for _ in range(10):
        lw, rw = int(rng.integers(0, 4)), int(rng.integers(1, 4))
        left = [keys[i] for i in rng.integers(0, len(keys), lw)]
        right = [keys[i] for i in rng.integers(0, len(keys), rw)]
        pa = np.array([p for _, p in sorted(att.predict_masked(left, right, topn=None))])
        pm = np.array([p for _, p in sorted(moe.predict_masked(left, right, topn=None))])
        assert np.abs(pa - pm).max() < 1e-5
        ga, gm = att.gates(left, right), moe.gates(left, right)
        assert ga["experts"] == gm["experts"] and np.abs(ga["weights"] - gm["weights"]).max() < 1e-5
    r_att = att.evaluate_masked(corpus[1200:1400], max_targets=300, seed=3)
    r_moe = moe.evaluate_masked(corpus[1200:1400], max_targets=300, seed=3)
    assert r_att["log_likelihood"] == pytest.approx(r_moe["log_likelihood"], abs=1e-5)


@pytest.mark.parametrize("kw,match", [(dict(heads=0), "heads"), (dict(key_size=0), "key_size"),
                                      (dict(positions="relative"), "positions"), (dict(loss="nce"), "loss")])
def test_attention_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        BidirectionalAttention(**dict(dict(vector_size=8, min_count=1), **kw))


def test_attention_hierarchical_softmax_and_plot(corpus, tmp_path):
    att = BidirectionalAttention(corpus[:1500], vector_size=8, heads=2, window=2, min_count=1, epochs=2, workers=2,
                                 loss="hs").train()
    assert att.syn1 is not None and att.output_wv is None and np.isfinite(att.W_O).all()
    r = att.evaluate_masked(corpus[1500:1700], max_targets=300)
    assert np.isfinite(r["log_likelihood"]) and 0 <= r["top1"] <= r["top10"] <= 1
    moe = att.to_moe()
    left, right = corpus[0][:2], corpus[0][3:5]
    pa, pm = dict(att.predict_masked(left, right, topn=None)), dict(moe.predict_masked(left, right, topn=None))
    assert max(abs(pa[w] - pm[w]) for w in pa) < 1e-5
    pytest.importorskip("matplotlib").use("Agg")
    out = tmp_path / "att_offsets.png"
    att.plot_offsets(path=str(out))
    assert out.stat().st_size > 1000
