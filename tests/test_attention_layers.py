"""Multi-layer, gated and active attention (SPEC "Multi-layer attention",
"Gated and active attention"): the numpy forward and the torch module
against an independent float64 loop implementation of the equations; the
torch gradients against finite differences of that reference; moe_view
exact against the forward pass; training, backends, files."""

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bidirmoe import BidirectionalAttention  # noqa: E402
from bidirmoe.torch import encode_contexts  # noqa: E402

WORDS = [f"w{i}" for i in range(10)]


def _corpus(n=200, length=9, seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(WORDS, length)) for _ in range(n)]


CORPUS = _corpus()


def _phi(name, x):
    if name is None:
        return x
    if name == "tanh":
        return math.tanh(x)
    if name == "relu":
        return max(x, 0.0)
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))  # gelu


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def ref_hidden(P, cfg, inputs, target, present):
    """e^L at ``target`` by plain loops over layers, positions and heads.

    P: float64 arrays by model name (``W_Q`` ... with a layer axis always);
    inputs: list of layer-0 vectors e⁰_m; present: which positions are keys."""
    heads, dv, dk = cfg["heads"], cfg["value_size"], cfg["key_size"]
    e = [np.array(x, dtype=np.float64) for x in inputs]
    keys = [m for m in range(len(e)) if present[m]]
    for layer in range(cfg["layers"]):
        nxt = []
        for i in range(len(e)):
            out = np.zeros(cfg["vector_size"])
            for h in range(heads):
                q = P["W_Q"][layer][h] @ e[i]
                if cfg["qk_bias"]:
                    q = q + P["b_Q"][layer][h]
                scores = [q @ (P["W_K"][layer][h] @ e[m]) / math.sqrt(dk) for m in keys]
                top = max(scores)
                ws = [math.exp(s - top) for s in scores]
                tot = sum(ws)
                u = np.zeros(dv)
                for wgt, m in zip(ws, keys):
                    v = P["W_V"][layer][h] @ e[m]
                    u = u + (wgt / tot) * np.array([_phi(cfg["expert_activation"], x) for x in v])
                if cfg["output_gate"] is not None:
                    g = [_sigmoid(x) for x in P["W_G"][layer][h] @ e[i] + P["b_G"][layer][h]]
                    u = u * np.array(g if len(g) == dv else g * dv)
                out = out + P["W_O"][layer][:, h * dv:(h + 1) * dv] @ u
            nxt.append(out)
        e = nxt
    return e[target]


def ref_log_probs(P, cfg, left_ids, right_ids):
    """log p(. | context) of one masked position (window or sentence mode)."""
    mask = P["mask_embedding"]
    if cfg["positions"] == "absolute":
        ids = list(left_ids) + [None] + list(right_ids)
        inputs = [(mask if w is None else P["vectors"][w]) + P["pos_encoding"][m] for m, w in enumerate(ids)]
        target = len(left_ids)
        present = [True] * len(ids)  # the chunk holds only the words and the mask
    else:
        w = cfg["window"]
        lo = [None] * (w - len(left_ids)) + list(left_ids)
        hi = list(right_ids) + [None] * (w - len(right_ids))
        ids = lo + ["MASK"] + hi
        inputs = [(mask if x == "MASK" else P["vectors"][x if x is not None else 0]) + P["pos_encoding"][m]
                  for m, x in enumerate(ids)]
        target = w
        present = [x is not None for x in ids]
    z = ref_hidden(P, cfg, inputs, target, present)
    logits = P["syn1neg"] @ z + (P["output_bias"] if P.get("output_bias") is not None else 0.0)
    top = logits.max()
    return logits - top - math.log(np.exp(logits - top).sum())


def _params(m):
    P = {"vectors": m.wv.vectors.astype(np.float64)}
    for name in m._array_names:
        a = getattr(m, name)
        if a is not None:
            a = a.astype(np.float64)
            if name in ("W_Q", "W_K", "W_V", "W_O", "W_G", "b_G", "b_Q") and m.layers == 1:
                a = a[None]
            P[name] = a
    return P


def _cfg(m):
    return {k: getattr(m, k) for k in ("heads", "key_size", "value_size", "layers", "qk_bias", "output_gate",
                                       "expert_activation", "vector_size", "positions", "window")}


def _randomise(m, seed, scale=0.6):
    rng = np.random.default_rng(seed)
    m.wv.vectors[...] = rng.normal(0, scale, m.wv.vectors.shape)
    for name in m._array_names:
        a = getattr(m, name)
        if a is not None:
            a[...] = rng.normal(0, scale, a.shape)


VARIANTS = [
    dict(layers=1),
    dict(layers=2),
    dict(layers=3, heads=1),
    dict(layers=2, output_gate="headwise"),
    dict(layers=2, output_gate="elementwise", qk_bias=True),
    dict(layers=1, expert_activation="tanh", output_gate="headwise"),
    dict(layers=2, expert_activation="gelu"),
    dict(layers=2, heads=3, expert_activation="relu", qk_bias=True),
]
VARIANT_IDS = ["-".join(f"{k}={v}" for k, v in kw.items()) for kw in VARIANTS]


def _model(kw, absolute=False, **more):
    settings = dict(vector_size=6, heads=2, key_size=3, value_size=4, window=2, min_count=1, epochs=1, workers=1,
                    loss="softmax", seed=3, positions="absolute" if absolute else "window", max_len=6)
    settings.update(kw)
    settings.update(more)
    return BidirectionalAttention(CORPUS, **settings)


@pytest.mark.parametrize("absolute", [False, True], ids=["window", "sentence"])
@pytest.mark.parametrize("kw", VARIANTS, ids=VARIANT_IDS)
def test_numpy_and_torch_forward_match_the_loop_reference(kw, absolute):
    m = _model(kw, absolute)
    _randomise(m, seed=len(VARIANT_IDS) + m.layers)
    P, cfg = _params(m), _cfg(m)
    module = m.to_torch()
    k2i = m.wv.key_to_index
    rng = np.random.default_rng(1)
    for n_left, n_right in ((2, 2), (1, 2), (2, 0), (3, 1)):
        left, right = list(rng.choice(WORDS, n_left)), list(rng.choice(WORDS, n_right))
        w = m.window
        lo = left[-w:] if not absolute else left
        hi = right[:w] if not absolute else right
        ref = ref_log_probs(P, cfg, [k2i[x] for x in lo], [k2i[x] for x in hi])
        got = dict(m.predict_masked(left, right, topn=None))
        ours = np.log([got[x] for x in m.wv.index_to_key])
        assert np.abs(ours - ref).max() < 1e-5
        logp = module(*encode_contexts(m, [left], [right])).detach().double().numpy()[0]
        assert np.abs(logp - ref).max() < 1e-4


@pytest.mark.parametrize("absolute", [False, True], ids=["window", "sentence"])
@pytest.mark.parametrize("kw", VARIANTS, ids=VARIANT_IDS)
def test_torch_gradients_match_finite_differences_of_the_reference(kw, absolute):
    m = _model(kw, absolute)
    _randomise(m, seed=7 + m.layers, scale=0.5)
    module = m.to_torch().double()
    k2i = m.wv.key_to_index
    left, right, target = ["w1", "w4"], ["w2", "w7"], "w3"
    lt, rt = encode_contexts(m, [left], [right])
    loss = -module(lt, rt)[0, k2i[target]]
    loss.backward()
    P, cfg = _params(m), _cfg(m)

    def ref_loss():
        return -ref_log_probs(P, cfg, [k2i[x] for x in left], [k2i[x] for x in right])[k2i[target]]

    rng = np.random.default_rng(0)
    checked = 0
    for name, param in module.named_parameters():
        if param.grad is None:
            continue
        grad = param.grad.to_dense().numpy() if param.grad.is_sparse else param.grad.numpy()
        ref_arr = P[name]
        flat = np.flatnonzero(np.ones(param.shape))
        for idx in rng.choice(flat, size=min(6, flat.size), replace=False):
            pos = np.unravel_index(idx, param.shape)
            ref_pos = (0,) + pos if (m.layers == 1 and ref_arr.ndim == param.dim() + 1) else pos
            old = ref_arr[ref_pos]
            ref_arr[ref_pos] = old + 1e-6
            up = ref_loss()
            ref_arr[ref_pos] = old - 1e-6
            down = ref_loss()
            ref_arr[ref_pos] = old
            fd = (up - down) / 2e-6
            assert grad[pos] == pytest.approx(fd, rel=1e-4, abs=1e-6), (name, pos)
            checked += 1
    assert checked >= 40


LINEAR = [dict(layers=1, heads=1), dict(layers=1, heads=3), dict(layers=2, heads=1), dict(layers=2, heads=2),
          dict(layers=3, heads=2), dict(layers=2, heads=3, output_gate="headwise"),
          dict(layers=3, heads=1, output_gate="headwise", qk_bias=True), dict(layers=2, heads=2, qk_bias=True)]


@pytest.mark.parametrize("absolute", [False, True], ids=["window", "sentence"])
@pytest.mark.parametrize("kw", LINEAR, ids=["-".join(f"{k}={v}" for k, v in kw.items()) for kw in LINEAR])
def test_moe_view_is_exact(kw, absolute):
    m = _model(kw, absolute)
    _randomise(m, seed=11 * m.layers + m.heads, scale=0.5)
    rng = np.random.default_rng(2)
    for _ in range(4):
        left, right = list(rng.choice(WORDS, 2)), list(rng.choice(WORDS, int(rng.integers(1, 3))))
        view = m.moe_view(left, right)
        assert len(view.paths) == m.heads ** m.layers and view.paths == list(
            itertools.product(range(m.heads), repeat=m.layers))
        assert view.weights.shape == (len(view.paths), len(view.positions))
        assert view.experts.shape == view.weights.shape + (m.vector_size,)
        hidden = m.hidden(left, right).astype(np.float64)
        assert np.abs(view.hidden() - hidden).max() <= 1e-5 * max(1.0, np.abs(hidden).max())
        assert np.allclose(view.path_vectors().sum(0), view.hidden())
        assert ("[MASK]", 0 if not absolute else len(left)) in view.positions
        if m.output_gate is None:  # products of softmax rows: each path's weights sum to 1
            assert np.allclose(view.weights.sum(1), 1.0)


def test_moe_view_on_a_trained_two_layer_model():
    m = _model(dict(layers=2, heads=2, output_gate="headwise"), epochs=2)
    m.train()
    left, right = CORPUS[5][:2], CORPUS[5][3:5]
    view = m.moe_view(left, right)
    hidden = m.hidden(left, right).astype(np.float64)
    assert np.abs(view.hidden() - hidden).max() <= 1e-5 * max(1.0, np.abs(hidden).max())
    ent = view.path_entropy()
    assert ent.shape == (4,) and (ent >= 0).all() and (ent <= np.log(len(view.positions)) + 1e-9).all()


@pytest.mark.parametrize("kw,why", [(dict(expert_activation="tanh"), "not linear"),
                                    (dict(layers=2, output_gate="elementwise"), "elementwise")])
def test_moe_view_refuses_variants_without_one(kw, why):
    m = _model(kw)
    with pytest.raises(ValueError, match=why):
        m.moe_view(["w1"], ["w2"])


@pytest.mark.parametrize("kw", [dict(qk_bias=True), dict(output_gate="headwise"), dict(output_gate="elementwise"),
                                dict(output_gate="headwise", qk_bias=True)])
def test_to_moe_keeps_working_for_one_layer_variants(kw):
    m = _model(kw, heads=2)
    _randomise(m, seed=5, scale=0.5)
    moe = m.to_moe()
    for left, right in ((["w1", "w2"], ["w3"]), (["w9"], ["w0", "w5"])):
        pa, pm = dict(m.predict_masked(left, right, topn=None)), dict(moe.predict_masked(left, right, topn=None))
        assert max(abs(pa[w] - pm[w]) for w in pa) < 1e-5


def test_to_moe_with_query_bias_in_sentence_mode():
    m = _model(dict(qk_bias=True), absolute=True)
    _randomise(m, seed=6, scale=0.5)
    moe = m.to_moe()
    pa, pm = dict(m.predict_masked(["w1", "w2"], ["w3"], topn=None)), dict(moe.predict_masked(["w1", "w2"], ["w3"], topn=None))
    assert max(abs(pa[w] - pm[w]) for w in pa) < 1e-5


@pytest.mark.parametrize("kw,absolute,why", [(dict(layers=2), False, "moe_view"),
                                             (dict(expert_activation="gelu"), False, "not linear"),
                                             (dict(output_gate="headwise"), True, "sentence mode")])
def test_to_moe_refuses_what_has_no_cbow_moe(kw, absolute, why):
    with pytest.raises(ValueError, match=why):
        _model(kw, absolute).to_moe()


def test_variants_choose_the_torch_backend_and_refuse_rust():
    assert _model({}).backend == "rust"
    for kw in (dict(layers=2), dict(output_gate="headwise"), dict(expert_activation="relu"), dict(qk_bias=True)):
        assert _model(kw).backend == "torch"
        with pytest.raises(ValueError, match="torch backend"):
            _model(kw, backend="rust")


@pytest.mark.parametrize("kw,match", [(dict(layers=0), "layers"), (dict(layers=1.5), "layers"),
                                      (dict(output_gate="sigmoid"), "output_gate"),
                                      (dict(expert_activation="swish"), "expert_activation"),
                                      (dict(qk_bias="yes"), "qk_bias")])
def test_bad_variant_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        BidirectionalAttention(vector_size=8, **kw)


def test_shapes_and_layer_arrays():
    m = _model(dict(layers=3, heads=2, output_gate="elementwise", qk_bias=True))
    assert m.W_Q.shape == (3, 2, 3, 6) and m.W_O.shape == (3, 6, 8) and m.W_G.shape == (3, 2, 4, 6)
    assert m.b_G.shape == (3, 2, 4) and m.b_Q.shape == (3, 2, 3)
    assert not m.b_G.any() and not m.b_Q.any()  # biases start at 0
    one = m.layer_arrays(2)
    assert one["W_Q"].shape == (2, 3, 6) and np.shares_memory(one["W_Q"], m.W_Q)
    with pytest.raises(ValueError, match="layer"):
        m.layer_arrays(3)
    headwise = _model(dict(output_gate="headwise"))
    assert headwise.W_G.shape == (2, 1, 6) and headwise.b_Q is None


@pytest.mark.parametrize("kw,epochs", [(dict(layers=2), 15), (dict(layers=2, output_gate="headwise", qk_bias=True), 15),
                                       (dict(layers=2, expert_activation="gelu", output_gate="elementwise"), 30)],
                         ids=["two-layers", "gated-bias", "active"])
def test_multi_layer_models_learn_the_pairs(pair_corpus, kw, epochs):
    from conftest import PAIRS, PAIR_AT, PAIR_LEN, NOISE

    train, held = pair_corpus
    m = BidirectionalAttention(vector_size=16, heads=2, key_size=4, min_count=1, sample=0, workers=1, seed=1,
                               epochs=epochs, **kw)
    m.build_vocab(train)
    before = m.evaluate_masked(held, max_targets=1000, seed=0)
    m.train(train, total_examples=m.corpus_count, epochs=epochs)
    after = m.evaluate_masked(held, max_targets=1000, seed=0)
    assert after["log_likelihood"] > before["log_likelihood"] + 1.0, (before, after)
    rng = np.random.default_rng(5)
    hits = 0
    for i in range(PAIRS):
        noise = [f"n{j}" for j in rng.integers(0, NOISE, PAIR_LEN - 2)]
        hits += m.predict_masked(noise[:PAIR_AT] + [f"k{i}"], noise[PAIR_AT:], topn=1)[0][0] == f"p{i}"
    assert hits / PAIRS >= 0.9, hits


def test_save_load_and_keep_training(tmp_path):
    m = _model(dict(layers=2, output_gate="headwise", qk_bias=True), epochs=1)
    m.train()
    path = tmp_path / "att.model"
    m.save(str(path))
    back = BidirectionalAttention.load(str(path))
    assert (back.layers, back.output_gate, back.qk_bias, back.backend) == (2, "headwise", True, "torch")
    for name in ("W_Q", "W_G", "b_G", "b_Q"):
        assert np.array_equal(getattr(back, name), getattr(m, name))
    left, right = ["w1", "w2"], ["w3"]
    assert dict(back.predict_masked(left, right, topn=3)) == dict(m.predict_masked(left, right, topn=3))
    before = back.W_Q.copy()
    back.train(CORPUS, total_examples=len(CORPUS), epochs=1)
    assert not np.array_equal(back.W_Q, before)
    with pytest.raises(ValueError, match="torch backend"):
        BidirectionalAttention.load(str(path), backend="rust")


def test_attention_weights_and_plot(tmp_path):
    m = _model(dict(layers=2, heads=2, output_gate="headwise"))
    w = m.attention_weights(["w1", "w2"], ["w3"])
    n = len(w["positions"])
    assert w["weights"].shape == (2, 2, n, n) and np.allclose(w["weights"].sum(-1), 1.0)
    assert w["gates"].shape == (2, 2, n, 1) and w["positions"][w["target"]][0] == "[MASK]"
    g = m.gates(["w1", "w2"], ["w3"])  # the last layer's row of the mask, the mask last
    assert np.allclose(g["weights"][:, -1], w["weights"][-1, :, w["target"], w["target"]])
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = m.plot_attention(["w1", "w2"], ["w3"], path=str(tmp_path / "att.png"))
    assert (tmp_path / "att.png").stat().st_size > 1000
    assert len(fig.axes) >= 5  # 2 layers x 2 heads, and the path mixture


def test_cli_trains_a_variant_and_refuses_it_for_other_models(tmp_path):
    import subprocess
    import sys

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(s) for s in CORPUS) + "\n")
    out = tmp_path / "att.model"
    run = lambda *a: subprocess.run([sys.executable, "-m", "bidirmoe", "train", str(corpus), "-q", "--min-count", "1",  # noqa: E731
                                     "--dim", "8", "--heads", "2", "--epochs", "1", "--threads", "1", *a],
                                    capture_output=True, text=True)
    r = run("-o", str(out), "--model", "attention", "--layers", "2", "--output-gate", "elementwise", "--qk-bias")
    assert r.returncode == 0, r.stderr
    m = BidirectionalAttention.load(str(out))
    assert (m.layers, m.output_gate, m.qk_bias, m.W_G.shape) == (2, "elementwise", True, (2, 2, 4, 8))
    r = run("-o", str(tmp_path / "v.txt"), "--model", "cbow", "--expert-activation", "gelu")
    assert r.returncode != 0 and "only for --model attention" in r.stderr and "Traceback" not in r.stderr
