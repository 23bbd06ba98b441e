"""BidirMoE (SPEC Model 1, window mode): gradients against finite differences
of an independent float64 numpy implementation, the numpy forward used for
prediction against the same reference, CBOW at initialisation, learning,
determinism, persistence and errors."""


import numpy as np
import pytest

from bidirmoe import BidirMoE, Word2Vec, _core

# ---------------------------------------------------------------- reference


def ref_log_prob(P, words, offsets, target, heads, full, window, mask, loss, huffman=None, tpos=None,
                 negatives=()):
    """log p(target | context) for SPEC Model 1, written from the equations
    with explicit loops in float64 (independent of the library's code).
    Sentence mode when ``tpos`` (the target's position) is given: ``offsets``
    are absolute positions and P holds query/key/pos_key flattened to
    (H*L, dk), (H*V, dk), (H*L, dk), and pos_value as ``offset_value``.
    ``loss="negative"``: word2vec's objective with the given ``negatives``,
    log σ(beta[t]·z) + Σ_n log σ(-beta[n]·z)."""
    d = P["syn1"].shape[1] if loss == "hs" else P["beta"].shape[1]
    s = d if full else d // heads
    experts = []  # (value vector, gate logits per head)
    for w, r in zip(words, offsets):
        if tpos is None:
            ri = r + window if r < 0 else r + window - 1
            gates = [P["salience"][h, w] + P["offset_gate"][h, ri] for h in range(heads)]
        else:
            ri = r
            L, V, dk = P["pos_value_len"], P["values"].shape[0], P["query"].shape[1]
            gates = [P["query"][h * L + tpos] @ (P["key"][h * V + w] + P["pos_key"][h * L + r]) / np.sqrt(dk)
                     for h in range(heads)]
        x = P["values"][w] + P["offset_value"][ri]
        experts.append((x, gates))
    if mask and tpos is None:
        experts.append((P["mask_value"][0], [P["mask_gate"][0, h] for h in range(heads)]))
    elif mask:  # sentence mode: the masked token at tpos, key mask_key[h] (stored in mask_gate) + pos_key[tpos]
        L, dk = P["pos_value_len"], P["query"].shape[1]
        gates = [P["query"][h * L + tpos] @ (P["mask_gate"][0, h * dk:(h + 1) * dk] + P["pos_key"][h * L + tpos])
                 / np.sqrt(dk) for h in range(heads)]
        experts.append((P["mask_value"][0] + P["offset_value"][tpos], gates))
    z = np.zeros(d)
    for h in range(heads):
        logits = np.array([g[h] for _, g in experts])
        theta = np.exp(logits - logits.max())
        theta /= theta.sum()
        zh = sum(t * x[h * s:(h + 1) * s] for t, (x, _) in zip(theta, experts))
        if full:
            z += zh
        else:
            z[h * s:(h + 1) * s] = zh
    if loss == "softmax":
        logits = P["beta"] @ z + (0 if P.get("bias") is None else P["bias"][:, 0])
        m = logits.max()
        return logits[target] - m - np.log(np.exp(logits - m).sum())
    if loss == "negative":
        return -np.logaddexp(0.0, -P["beta"][target] @ z) - sum(np.logaddexp(0.0, P["beta"][n] @ z) for n in negatives)
    codes, points = huffman
    lp = 0.0
    for c, p in zip(codes[target], points[target]):
        f = P["syn1"][p] @ z
        lp += -np.logaddexp(0.0, -f) if c == 0 else -np.logaddexp(0.0, f)
    return lp


def make_model(rng, v, d, heads, full, window, mask, loss):
    d_in = heads * d if full else d
    r = 2 * window
    P = {
        "values": rng.normal(0, 0.5, (v, d_in)),
        "salience": rng.normal(0, 0.5, (heads, v)),
        "offset_gate": rng.normal(0, 0.5, (heads, r)),
        "offset_value": rng.normal(0, 0.3, (r, d_in)),
        "beta": rng.normal(0, 0.5, (v, d)) if loss in ("softmax", "negative") else None,
        "bias": rng.normal(0, 0.5, (v, 1)) if loss == "softmax" else None,
        "syn1": rng.normal(0, 0.5, (v, d)) if loss == "hs" else None,
        "mask_gate": rng.normal(0, 0.5, (1, heads)) if mask else None,
        "mask_value": rng.normal(0, 0.3, (1, d_in)) if mask else None,
    }
    return P


def to_sentence_mode(P, rng, v, d, heads, full, mask, L, dk):
    """Turn ``make_model``'s window-mode parameters into sentence mode's, in place."""
    d_in = heads * d if full else d
    del P["salience"], P["offset_gate"]
    P.update(offset_value=rng.normal(0, 0.3, (L, d_in)), query=rng.normal(0, 0.7, (heads * L, dk)),
             key=rng.normal(0, 0.7, (heads * v, dk)), pos_key=rng.normal(0, 0.7, (heads * L, dk)),
             mask_gate=rng.normal(0, 0.5, (1, heads * dk)) if mask else None)


CASES = [
    # heads, full, mask, loss
    (1, False, False, "softmax"),
    (2, False, True, "softmax"),
    (3, True, True, "softmax"),
    (2, True, False, "softmax"),
    (2, False, True, "hs"),
]


@pytest.mark.parametrize("heads,full,mask,loss", CASES)
def test_one_step_equals_lr_times_finite_difference_gradient(heads, full, mask, loss, assert_step_is_lr_times_gradient):
    rng = np.random.default_rng(heads * 10 + full * 3 + mask)
    v, d, window = 7, 6, 2
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, loss == "hs")
    huffman = vocab.huffman()
    P = make_model(rng, v, d, heads, full, window, mask, loss)
    words, offsets, target = [1, 4, 4, 6], [-2, -1, 1, 2], 3
    args = (words, offsets, target, heads, full, window, mask, loss, huffman)
    arrays = {k: (None if a is None else a.astype(np.float32)) for k, a in P.items()}
    arrays.update(query=None, key=None, pos_key=None)
    before = {k: (None if a is None else a.copy()) for k, a in arrays.items()}
    settings = dict(heads=heads, full=full, window=window, shrink_windows=False, negative=0, hs=loss == "hs",
                    softmax=loss == "softmax", vector_size=d, absolute=False, max_len=2, key_size=1)
    lr = 0.01
    loss_val = _core.moe_step(vocab, arrays, settings, words, offsets, target, lr)
    # softmax is exact; hierarchical softmax uses word2vec's sigmoid table (steps of 0.012 in the logit).
    tol = dict(rel=2e-3, abs=2e-6) if loss == "softmax" else dict(rel=3e-2, abs=lr * 4e-3)
    assert loss_val == pytest.approx(-ref_log_prob(P, *args), rel=1e-3 if loss == "softmax" else 2e-2)
    checked = assert_step_is_lr_times_gradient(P, arrays, before, lr, lambda: ref_log_prob(P, *args), **tol)
    assert checked > 100


@pytest.mark.parametrize("heads,full,mask", [(1, False, False), (2, False, True), (2, True, True)])
def test_sentence_mode_step_equals_lr_times_finite_difference_gradient(heads, full, mask,
                                                                      assert_step_is_lr_times_gradient):
    rng = np.random.default_rng(100 + heads * 10 + full * 3 + mask)
    v, d, L, dk = 6, 4, 5, 3
    d_in = heads * d if full else d
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, False)
    P = {
        "values": rng.normal(0, 0.5, (v, d_in)), "offset_value": rng.normal(0, 0.3, (L, d_in)),
        "query": rng.normal(0, 0.7, (heads * L, dk)), "key": rng.normal(0, 0.7, (heads * v, dk)),
        "pos_key": rng.normal(0, 0.7, (heads * L, dk)), "beta": rng.normal(0, 0.5, (v, d)), "syn1": None,
        "bias": rng.normal(0, 0.5, (v, 1)),
        "mask_gate": rng.normal(0, 0.5, (1, heads * dk)) if mask else None,  # sentence mode: mask_key
        "mask_value": rng.normal(0, 0.3, (1, d_in)) if mask else None,
    }
    words, positions, target, tpos = [2, 5, 1, 2], [0, 1, 3, 4], 4, 2
    ref = dict(P, pos_value_len=L)
    args = (words, positions, target, heads, full, 0, mask, "softmax")
    arrays = {k: (None if a is None else a.astype(np.float32)) for k, a in P.items()}
    arrays.update(salience=None, offset_gate=None)
    before = {k: (None if a is None else a.copy()) for k, a in arrays.items()}
    settings = dict(heads=heads, full=full, window=1, shrink_windows=False, negative=0, hs=False, softmax=True,
                    vector_size=d, absolute=True, max_len=L, key_size=dk)
    lr = 0.01
    loss_val = _core.moe_step(vocab, arrays, settings, words, positions, target, lr, target_pos=tpos)
    assert loss_val == pytest.approx(-ref_log_prob(ref, *args, tpos=tpos), rel=1e-3)
    checked = assert_step_is_lr_times_gradient(P, arrays, before, lr, lambda: ref_log_prob(ref, *args, tpos=tpos),
                                               rel=2e-3, abs=2e-6)
    assert checked > 80


@pytest.mark.parametrize("heads,full,mask,absolute", [(1, False, False, False), (2, False, True, False),
                                                       (2, True, True, False), (2, False, True, True)])
def test_negative_sampling_step_equals_lr_times_finite_difference_gradient(heads, full, mask, absolute,
                                                                          step_with_distinct_negatives,
                                                                          assert_step_is_lr_times_gradient):
    rng = np.random.default_rng(200 + heads * 10 + full * 3 + mask + absolute)
    v, d, window, L, dk, k = 7, 6, 2, 5, 3, 3
    vocab = _core.Vocab.from_words([f"w{i}" for i in range(v)], list(range(20, 20 - v, -1)), 0.0, 0.75, False)
    P = make_model(rng, v, d, heads, full, window, mask, "negative")  # no output bias, as in word2vec
    target = 3
    if absolute:
        to_sentence_mode(P, rng, v, d, heads, full, mask, L, dk)
        words, offsets, tpos = [2, 5, 1, 2], [0, 1, 3, 4], 2
        ref = dict(P, pos_value_len=L)
        extra = dict(target_pos=tpos)
    else:
        words, offsets, tpos = [1, 4, 4, 6], [-2, -1, 1, 2], None
        ref = P
        extra = {}
    arrays0 = {k_: (None if a is None else a.astype(np.float32)) for k_, a in P.items()}
    for name in ("salience", "offset_gate", "query", "key", "pos_key"):
        arrays0.setdefault(name, None)
    settings = dict(heads=heads, full=full, window=window, shrink_windows=False, negative=k, hs=False, softmax=False,
                    vector_size=d, absolute=absolute, max_len=L, key_size=dk)
    lr = 0.01
    arrays, loss_val, negatives = step_with_distinct_negatives(
        lambda a, seed: _core.moe_step(vocab, a, settings, words, offsets, target, lr, seed=seed, **extra),
        arrays0, "beta", target, k)
    log_prob = lambda: ref_log_prob(ref, words, offsets, target, heads, full, window, mask, "negative",  # noqa: E731
                                    tpos=tpos, negatives=negatives)
    # word2vec's sigmoid table: steps of 0.012 in the logit, as for hs.
    assert loss_val == pytest.approx(-log_prob(), rel=2e-2)
    before = {k_: (None if a is None else a.copy()) for k_, a in arrays0.items()}
    checked = assert_step_is_lr_times_gradient(P, arrays, before, lr, log_prob, rel=3e-2, abs=lr * 4e-3)
    assert checked > 100


def test_sentence_mode_trains_predicts_and_saves(corpus, tmp_path):
    m = BidirMoE(corpus[:1500], vector_size=12, heads=2, min_count=1, epochs=3, positions="absolute", max_len=6,
                 key_size=4, workers=2).train()
    assert m.salience is None and m.query.shape == (2, 6, 4) and m.key.shape == (2, len(m.wv), 4)
    assert np.abs(m.query).max() > 0 and np.abs(m.pos_value).max() > 0  # the gate and value paths learned
    r = m.evaluate_masked(corpus[1500:1800], max_targets=500)
    assert 0 <= r["top1"] <= r["top10"] <= 1 and np.isfinite(r["log_likelihood"])
    left, right = corpus[0][:2], corpus[0][3:5]
    g = m.gates(left, right)
    assert [pos for _, pos in g["experts"]] == [0, 1, 3, 4, 2] and np.allclose(g["weights"].sum(1), 1)
    p = m.offset_profile()
    assert p["offsets"][0] == -5 and p["offsets"][-1] == "mask" and np.isfinite(p["weights"]).all()
    path = tmp_path / "abs.model"
    m.save(str(path))
    m2 = BidirMoE.load(str(path))
    assert m2.positions == "absolute" and np.array_equal(m2.key, m.key)
    assert m2.predict_masked(left, right, topn=5) == m.predict_masked(left, right, topn=5)
    m2.train(corpus[:300], epochs=1)


@pytest.fixture(scope="module")
def trained(corpus):
    return BidirMoE(corpus, vector_size=24, window=3, heads=2, min_count=1, epochs=4, workers=1, seed=7).train()


def test_prediction_forward_matches_reference(trained):
    m = trained
    P = {"values": m.wv.vectors.astype(np.float64), "salience": m.salience.astype(np.float64), "bias": None,
         "offset_gate": m.offset_gate.astype(np.float64), "offset_value": m.offset_value.astype(np.float64),
         "beta": m.syn1neg.astype(np.float64), "mask_gate": m.mask_gate[None].astype(np.float64),
         "mask_value": m.mask_value[None].astype(np.float64)}
    left, right = m.wv.index_to_key[3:6], m.wv.index_to_key[10:12]
    words = [m.wv.key_to_index[w] for w in left + right]
    offsets = [-3, -2, -1, 1, 2]
    full = dict(m.predict_masked(left, right, topn=None))
    assert sum(full.values()) == pytest.approx(1.0, abs=1e-6)
    for t in (0, 5, 17):
        lp = ref_log_prob(P, words, offsets, t, m.heads, False, m.window, True, "softmax")
        assert np.log(full[m.wv.index_to_key[t]]) == pytest.approx(lp, abs=1e-4)
    g = m.gates(left, right)
    assert g["weights"].shape == (2, 6)
    assert np.allclose(g["weights"].sum(axis=1), 1.0)


def test_untrained_bidirmoe_is_cbow(corpus):
    m = BidirMoE(corpus, vector_size=12, window=2, heads=3, min_count=1, mask_expert=False)
    m.build_vocab(corpus)
    ids = np.array([[1, -1, 5, 9], [2, 3, 4, 6]])
    present = ids >= 0
    cbow = (m.wv.vectors[np.where(present, ids, 0)] * present[..., None]).sum(1) / present.sum(1, keepdims=True)
    assert np.allclose(m._context_vectors(ids, 2), cbow, atol=1e-7)
    # With the mask expert (gate 0, value 0) the direction is CBOW's, scaled by |C| / (|C| + 1).
    m2 = BidirMoE(corpus, vector_size=12, window=2, heads=3, min_count=1, mask_expert=True)
    m2.build_vocab(corpus)
    n = present.sum(1, keepdims=True)
    assert np.allclose(m2._context_vectors(ids, 2), cbow * n / (n + 1), atol=1e-7)


def test_learns_masked_prediction_and_beats_untrained(corpus, groups):
    m = BidirMoE(corpus, vector_size=24, window=3, heads=2, min_count=1, epochs=1, workers=1, seed=1)
    m.build_vocab(corpus)
    before = m.evaluate_masked(corpus, max_targets=2000, seed=0)
    # The true gradient scales context updates by theta ~ 1/|C| (word2vec's CBOW
    # applies the full error), so on this 40k-token corpus it needs more epochs.
    m.train(epochs=20)
    after = m.evaluate_masked(corpus, max_targets=2000, seed=0)
    assert after["log_likelihood"] > before["log_likelihood"] + 0.5
    assert after["top10"] > before["top10"] + 0.2
    # A group word's context predicts a word of the same group first.
    grp = groups[0]
    top = [w for w, _ in m.predict_masked([grp[0]], [grp[1]], topn=3)]
    assert any(w in grp for w in top)


def test_full_head_vectors_are_all_heads_concatenated_and_save(corpus, tmp_path):
    from bidirmoe import KeyedVectors

    m = BidirMoE(corpus[:500], vector_size=6, heads=2, head_values="full", min_count=1, epochs=1).train()
    assert m.wv.vector_size == 12 and m.wv.vectors.shape[1] == 12 and m.output_wv.vector_size == 6
    path = tmp_path / "full.txt"
    m.wv.save_word2vec_format(str(path))
    assert np.allclose(KeyedVectors.load_word2vec_format(str(path)).vectors, m.wv.vectors, atol=1e-5)
    m2 = BidirMoE.load(str(_saved(m, tmp_path)))
    assert m2.wv.vector_size == 12


def _saved(model, tmp_path):
    path = tmp_path / "model"
    model.save(str(path))
    return path


PAIRS_KW = dict(vector_size=16, heads=2, min_count=1, sample=0, workers=1, seed=1)


@pytest.mark.parametrize("kw", [dict(loss="softmax", window=3, epochs=10), dict(loss="hs", window=3, epochs=10),
                                dict(head_values="full", window=3, epochs=20),
                                dict(positions="absolute", max_len=6, key_size=4, epochs=20),
                                dict(positions="absolute", max_len=6, key_size=4, loss="softmax", epochs=20)],
                         ids=["softmax", "hs", "full_heads", "sentence", "sentence_softmax"])
def test_learns_the_pair_corpus_with_each_loss_and_mode(kw, pair_corpus, assert_learns_pairs):
    m = assert_learns_pairs(BidirMoE(pair_corpus[0], **PAIRS_KW, **kw))
    if m.loss == "softmax":
        assert m.output_wv is not None and m.output_wv.vectors is m.syn1neg
        assert m.output_bias is not None and np.abs(m.output_bias).max() > 0  # the softmax bias is learned
    if m.loss == "hs":
        assert m.output_wv is None and m.syn1 is not None


@pytest.mark.parametrize("head_values", ["slice", "full"])
def test_initial_values_are_word2vecs_range(corpus, head_values):
    # The value vectors start uniform in [-1, 1) / vector_size, as
    # Word2Vec's (gensim 4's) input vectors do, seeded; the output layer at zero.
    m = BidirMoE(vector_size=16, heads=2, head_values=head_values, min_count=1, seed=5, workers=1)
    m.build_vocab(corpus)
    v = m.wv.vectors
    assert v.dtype == np.float32 and 0.9 / 16 < np.abs(v).max() < 1.0 / 16 and v.min() < -0.9 / 16
    again = BidirMoE(vector_size=16, heads=2, head_values=head_values, min_count=1, seed=5, workers=1)
    again.build_vocab(corpus)
    assert np.array_equal(again.wv.vectors, v)
    assert not m.syn1neg.any()


def test_deterministic_with_one_worker(corpus):
    kw = dict(vector_size=8, window=2, heads=2, min_count=1, epochs=2, workers=1, seed=3)
    a = BidirMoE(corpus, **kw).train()
    b = BidirMoE(corpus, **kw).train()
    for name in ("salience", "offset_gate", "offset_value", "mask_gate", "mask_value", "syn1neg"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.wv.vectors, b.wv.vectors)


def test_corpus_file_and_save_load_continue(corpus, corpus_file, tmp_path):
    m = BidirMoE(corpus_file=str(corpus_file), vector_size=8, window=2, heads=2, min_count=1, epochs=1, workers=2).train()
    path = tmp_path / "moe.model"
    m.save(str(path))
    m2 = BidirMoE.load(str(path))
    for name in ("salience", "offset_gate", "offset_value", "mask_gate", "mask_value", "syn1neg"):
        assert np.array_equal(getattr(m, name), getattr(m2, name)), name
    assert m2.heads == 2 and m2.window == 2 and m2.wv.index_to_key == m.wv.index_to_key
    w = m.wv.index_to_key[0]
    assert m2.predict_masked([w], [], topn=3) == m.predict_masked([w], [], topn=3)
    before = m2.offset_gate.copy()
    m2.train(corpus_file=str(corpus_file), epochs=1)
    assert not np.array_equal(before, m2.offset_gate)
    with pytest.raises(ValueError, match="holds a BidirMoE"):
        Word2Vec.load(str(path))


def test_offset_profile_and_plot(trained, corpus, tmp_path):
    p = trained.offset_profile()
    assert p["offsets"] == [-3, -2, -1, 1, 2, 3, "mask"]
    assert p["weights"].shape == (2, 7) and np.allclose(p["weights"].sum(1), 1)
    emp = trained.offset_profile(corpus, max_targets=500)
    assert emp["weights"].shape == (2, 7) and np.allclose(emp["weights"].sum(1), 1)
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    out = tmp_path / "offsets.png"
    trained.plot_offsets(path=str(out))
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("kw,match", [
    (dict(heads=0), "heads"),
    (dict(heads=3, vector_size=8), "multiple of heads"),
    (dict(head_values="half"), "head_values"),
    (dict(loss="nce"), "loss"),
    (dict(positions="relative"), "positions"),
    (dict(positions="absolute", max_len=1), "max_len"),
    (dict(positions="absolute", key_size=0), "key_size"),
    (dict(loss="negative", negative=0), "negative > 0"),
    (dict(window=0), "window"),
])
def test_bad_parameters(kw, match):
    base = dict(vector_size=8, min_count=1)
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        BidirMoE(**base)


def test_usage_errors(trained, corpus):
    with pytest.raises(TypeError, match="no corpus"):
        BidirMoE(vector_size=8).train()
    with pytest.raises(ValueError, match="window"):
        trained.evaluate_masked(corpus, window=99)
    with pytest.raises(TypeError, match="lists of str"):
        trained.predict_masked("the king", ["of"])
    with pytest.raises(KeyError, match="none of the context words"):
        trained.predict_masked(["zzz-unknown"], ["yyy-unknown"])
    with pytest.raises(TypeError, match="one-shot iterator"):
        BidirMoE((s for s in corpus), vector_size=8, epochs=2)


def test_word2vec_cbow_masked_prediction_matches_numpy(corpus):
    m = Word2Vec(corpus, vector_size=16, window=3, min_count=1, epochs=2, workers=1)
    left, right = corpus[0][:2], corpus[0][3:5]
    ids = [m.wv.key_to_index[w] for w in left + right]
    z = m.wv.vectors[ids].astype(np.float64).mean(0)
    logits = m.syn1neg.astype(np.float64) @ z
    p = np.exp(logits - logits.max())
    p /= p.sum()
    got = m.predict_masked(left, right, topn=5)
    order = np.argsort(-p)[:5]
    assert [w for w, _ in got] == [m.wv.index_to_key[i] for i in order]
    assert np.allclose([q for _, q in got], p[order], atol=1e-6)
    sg = Word2Vec(corpus[:100], vector_size=8, min_count=1, epochs=1, sg=1)
    with pytest.raises(ValueError, match="CBOW"):
        sg.predict_masked(left, right)
