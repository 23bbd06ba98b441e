"""The torch modules (bidirmoe.torch): the models' own parameters, a forward
equal to predict_masked, a loss whose autograd gradient is the Rust core's
SGD step, and copies both ways. CPU only; the CUDA check is skipped without a GPU."""

import doctest
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec, _core  # noqa: E402
from bidirmoe.torch import (BidirectionalAttentionModule, BidirMoEModule, Word2VecModule,  # noqa: E402
                            encode_contexts, from_torch, to_torch)
from bidirmoe.torch import modules as torch_modules  # noqa: E402

WORDS = [f"w{i}" for i in range(12)]


def _corpus(n=60, seed=0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    return [[WORDS[i] for i in rng.choice(len(WORDS), size=int(rng.integers(3, 9)), p=p)] for _ in range(n)]


CORPUS = _corpus()
#: Eight words with distinct counts (20..13): a Huffman tree with no ties.
STEP_CORPUS = [[f"w{i}"] * (20 - i) for i in range(8)]


def _randomize(model, seed, scale=0.5):
    """Every array of the model drawn from N(0, scale²): non-trivial gates,
    values and outputs (an untrained model has zero gates and outputs)."""
    rng = np.random.default_rng(seed)
    tied = getattr(model, "tie_output", False)
    model.wv.vectors = rng.normal(0, scale, model.wv.vectors.shape).astype(np.float32)
    for name in model._array_names:
        arr = getattr(model, name)
        if arr is not None and not (tied and name == "syn1neg"):
            setattr(model, name, rng.normal(0, scale, arr.shape).astype(np.float32))
    if tied:
        model.syn1neg = model.wv.vectors
    model.wv.norms = None
    if hasattr(model, "_sync_output_wv"):
        model._sync_output_wv()
    return model


def _make(family, kw, corpus=CORPUS, seed=3):
    common = dict(vector_size=6, window=3, min_count=1, epochs=1, workers=1, seed=seed)
    common.update(kw)
    if family == "w2v":
        return Word2Vec(corpus, **common)
    cls = BidirMoE if family == "moe" else BidirectionalAttention
    return cls(corpus, **common).train()


CASES = [
    ("w2v", dict(negative=5)),
    ("w2v", dict(negative=5, cbow_mean=0)),
    ("w2v", dict(negative=0, hs=1)),
    ("w2v", dict(negative=3, hs=1)),
    ("moe", dict(heads=2)),
    ("moe", dict(heads=2, mask_expert=False)),
    ("moe", dict(heads=2, head_values="full")),
    ("moe", dict(heads=3, head_values="full", mask_expert=False, loss="softmax")),
    ("moe", dict(heads=2, loss="softmax")),
    ("moe", dict(heads=2, loss="hs")),
    ("moe", dict(heads=2, positions="absolute", max_len=6, key_size=3)),
    ("moe", dict(heads=2, head_values="full", mask_expert=False, loss="softmax", positions="absolute", max_len=6)),
    ("moe", dict(heads=3, loss="hs", positions="absolute", max_len=5, key_size=2)),
    ("att", dict(heads=2)),
    ("att", dict(heads=2, loss="softmax", key_size=2, value_size=4)),
    ("att", dict(heads=1, loss="hs")),
    ("att", dict(heads=2, tie_output=True)),
    ("att", dict(heads=2, positions="absolute", max_len=6)),
    ("att", dict(heads=3, loss="softmax", positions="absolute", max_len=5, key_size=3, value_size=1)),
]
CASE_IDS = [f"{f}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for f, kw in CASES]


def _queries(seed, n=30):
    """Masked positions with contexts of every length (longer than the window
    and than max_len too), out-of-vocabulary words anywhere, and at least one
    known word each."""
    rng = np.random.default_rng(seed)
    pool = WORDS + ["oov1", "oov2"]
    lefts, rights = [], []
    for i in range(n):
        left = [pool[j] for j in rng.integers(0, len(pool), int(rng.integers(0, 8)))]
        right = [pool[j] for j in rng.integers(0, len(pool), int(rng.integers(0, 8)))]
        if not any(w in WORDS for w in left + right):
            right.append(WORDS[i % len(WORDS)])
        lefts.append(left)
        rights.append(right)
    return lefts, rights


# ------------------------------------------------------------ forward


@pytest.mark.parametrize("family,kw", CASES, ids=CASE_IDS)
def test_forward_equals_predict_masked(family, kw):
    model = _randomize(_make(family, kw), seed=1)
    module = model.to_torch()
    lefts, rights = _queries(seed=2)
    with torch.no_grad():
        logp = module(*encode_contexts(model, lefts, rights)).numpy()
    assert logp.shape == (len(lefts), len(model.wv))
    for i, (left, right) in enumerate(zip(lefts, rights)):
        p = dict(model.predict_masked(left, right, topn=None))
        want = np.log([p[w] for w in model.wv.index_to_key])
        assert np.abs(logp[i] - want).max() < 1e-5, (i, left, right)


def test_forward_drops_pads_wherever_they_stand():
    model = _randomize(_make("moe", dict(heads=2, positions="absolute", max_len=6)), seed=4)
    module = model.to_torch()
    left = torch.tensor([[3, 1, 2], [-1, 3, -1]])
    left = torch.cat([left, torch.tensor([[-1], [1]]), torch.tensor([[-1], [2]])], 1)
    right = torch.tensor([[5, -1, 7], [-1, 5, 7]])
    with torch.no_grad():
        out = module(left, right)
    assert torch.allclose(out[0], out[1], atol=1e-6)  # both are left [3, 1, 2], right [5, 7]


def test_skipgram_has_no_forward_but_trains():
    model = _make("w2v", dict(sg=1, negative=3))
    module = model.to_torch()
    with pytest.raises(ValueError, match="CBOW"):
        module(torch.tensor([[0]]), torch.tensor([[1]]))
    loss = module.loss({"targets": torch.tensor([1]), "context": torch.tensor([[0, -1, 2, 3, -1, 4]]),
                        "negatives": torch.tensor([[5, 6, 7]])})
    loss.backward()
    assert module.vectors.grad[[0, 2, 3, 4]].abs().sum() > 0 and module.vectors.grad[1].abs().sum() == 0


# -------------------------------------------------- the same parameters


@pytest.mark.parametrize("family,kw", CASES, ids=CASE_IDS)
def test_parameters_are_the_models_arrays_copied(family, kw):
    model = _randomize(_make(family, kw), seed=5)
    module = model.to_torch()
    tied = getattr(model, "tie_output", False)
    arrays = {"vectors": model.wv.vectors}
    arrays.update({n: getattr(model, n) for n in model._array_names
                   if getattr(model, n) is not None and not (tied and n == "syn1neg")})
    params = dict(module.named_parameters())
    assert set(params) == set(arrays)
    for name, arr in arrays.items():
        assert params[name].dtype == torch.float32 and tuple(params[name].shape) == arr.shape, name
        assert np.array_equal(params[name].detach().numpy(), arr), name
    for name in set(model._array_names) - set(arrays):
        assert getattr(module, name) is None, name  # absent in the model, None in the module
    before = model.wv.vectors.copy()
    with torch.no_grad():
        module.vectors.add_(1.0)
    assert np.array_equal(model.wv.vectors, before)  # a copy, not shared memory
    model.wv.vectors[0, 0] += 1.0
    assert module.vectors[0, 0].item() == pytest.approx(before[0, 0] + 1.0)  # (the module's own +1)


@pytest.mark.parametrize("family,kw", [CASES[0], CASES[3], CASES[6], CASES[10], CASES[16], CASES[17]],
                         ids=[CASE_IDS[i] for i in (0, 3, 6, 10, 16, 17)])
def test_from_torch_copies_back_and_training_continues(family, kw):
    model = _randomize(_make(family, kw), seed=6)
    module = model.to_torch()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    assert (model.load_torch_state(module) if family == "moe" else from_torch(module, model)) is model
    for name, p in module.named_parameters():
        arr = model.wv.vectors if name == "vectors" else getattr(model, name)
        assert arr.dtype == np.float32 and arr.flags.c_contiguous and np.array_equal(arr, p.detach().numpy()), name
        assert not np.shares_memory(arr, p.detach().numpy())
    if getattr(model, "tie_output", False):
        assert model.syn1neg is model.wv.vectors
    lefts, rights = _queries(seed=7, n=5)
    with torch.no_grad():
        logp = module(*encode_contexts(model, lefts, rights)).numpy()
    for i, (left, right) in enumerate(zip(lefts, rights)):
        p = dict(model.predict_masked(left, right, topn=None))
        assert np.abs(logp[i] - np.log([p[w] for w in model.wv.index_to_key])).max() < 1e-5
    # The model keeps training on the Rust backend, and moves back again.
    if family == "w2v":
        model.train(CORPUS, total_examples=len(CORPUS), epochs=1)
    else:
        model.train(epochs=1)
    assert not np.array_equal(model.wv.vectors, module.vectors.detach().numpy())
    assert np.array_equal(model.to_torch().vectors.detach().numpy(), model.wv.vectors)


def test_from_torch_refuses_a_model_that_does_not_match():
    model = _make("moe", dict(heads=2))
    module = model.to_torch()
    with pytest.raises(ValueError, match="heads"):
        from_torch(module, _make("moe", dict(heads=3)))
    with pytest.raises(ValueError, match="vocab_size"):
        from_torch(module, _make("moe", dict(heads=2), corpus=CORPUS + [["new", "words"]]))
    with pytest.raises(TypeError):
        from_torch(module, _make("w2v", {}))
    with pytest.raises(TypeError):
        to_torch(object())
    with pytest.raises(RuntimeError, match="build_vocab"):
        BidirMoE(vector_size=4).to_torch()
    hs = _make("w2v", dict(negative=0, hs=1))
    other = Word2Vec(vector_size=6, window=3, min_count=1, negative=0, hs=1)
    counts = {w: 100 - i for i, w in enumerate(hs.wv.index_to_key[::-1])}  # same size, another tree
    other.build_vocab_from_freq(counts)
    with pytest.raises(ValueError, match="Huffman"):
        from_torch(hs.to_torch(), other)


# --------------------------------------------------------- the loss


def _sentence_batch_vs_forward(model, rows):
    """Softmax / hs: each term of the sentence loss is −log p(target) from
    forward(left, right) (rows no longer than max_len are laid out identically)."""
    module = model.to_torch()
    tokens = torch.tensor(rows)
    losses = module.example_losses({"tokens": tokens})
    assert losses.shape == tokens.shape
    with torch.no_grad():
        for b, row in enumerate(rows):
            words = [w for w in row if w >= 0]
            for j, w in enumerate(row):
                if w < 0 or len(words) < 2:
                    assert losses[b, j].item() == 0.0
                    continue
                left = torch.tensor([[x for x in row[:j] if x >= 0] or [-1]])
                right = torch.tensor([[x for x in row[j + 1:] if x >= 0] or [-1]])
                assert losses[b, j].item() == pytest.approx(-module(left, right)[0, w].item(), abs=2e-5)
    return module, losses


@pytest.mark.parametrize("family,loss", [("moe", "softmax"), ("moe", "hs"), ("att", "softmax"), ("att", "hs")])
def test_sentence_loss_terms_are_forward_log_probs(family, loss):
    model = _randomize(_make(family, dict(heads=2, loss=loss, positions="absolute", max_len=6)), seed=8)
    rows = [[3, 1, 4, 1, 5, 9], [2, 6, -1, -1, -1, -1], [7, -1, -1, -1, -1, -1], [-1] * 6]
    module, losses = _sentence_batch_vs_forward(model, rows)
    assert module.loss({"tokens": torch.tensor(rows)}).item() == pytest.approx(losses.sum().item())
    assert (losses[0] > 0).all() and (losses[1, :2] > 0).all()


@pytest.mark.parametrize("family,kw", [("w2v", dict(negative=0, hs=1)), ("moe", dict(heads=2, loss="softmax")),
                                       ("moe", dict(heads=2, head_values="full", loss="hs")),
                                       ("att", dict(heads=2, loss="softmax")), ("att", dict(heads=1, loss="hs"))])
def test_window_loss_terms_are_forward_log_probs(family, kw):
    model = _randomize(_make(family, dict(kw, window=2)), seed=9)
    module = model.to_torch()
    context = torch.tensor([[3, 1, 4, 1], [-1, 5, 9, -1], [-1, -1, 2, -1], [-1, -1, -1, -1]])
    targets = torch.tensor([2, 6, 5, 3])
    losses = module.example_losses({"targets": targets, "context": context})
    with torch.no_grad():
        for b in range(3):
            left, right = context[b:b + 1, :2], context[b:b + 1, 2:]
            assert losses[b].item() == pytest.approx(-module(left, right)[0, targets[b]].item(), abs=2e-5)
    assert losses[3].item() == 0.0  # no context word: no example


def test_batch_examples_count_as_the_rust_core_and_row_tables_are_per_word():
    window = {"context": torch.tensor([[0, -1, 2, 3, -1, 4], [-1] * 6, [1, -1, -1, -1, -1, -1]])}
    assert _make("w2v", dict(sg=1, negative=3)).to_torch().batch_examples(window) == 5  # pairs
    cbow = _make("w2v", dict(negative=3, hs=1)).to_torch()
    assert cbow.batch_examples(window) == 2 and set(cbow.row_tables) == {"vectors", "syn1neg", "syn1"}
    moe = _make("moe", dict(heads=2, positions="absolute", max_len=6, loss="softmax")).to_torch()
    tokens = {"tokens": torch.tensor([[3, 1, 4, -1, -1, -1], [2, -1, -1, -1, -1, -1]])}
    assert moe.batch_examples(tokens) == 3 and set(moe.row_tables) == {"vectors", "syn1neg", "output_bias", "key"}
    assert set(_make("moe", dict(heads=2)).to_torch().row_tables) == {"vectors", "syn1neg", "salience"}
    assert _make("att", dict(tie_output=True)).to_torch().row_tables == ("vectors",)


def test_negative_sampling_skips_the_target_and_pads():
    model = _randomize(_make("moe", dict(heads=2, window=2, negative=3)), seed=10)
    module = model.to_torch()
    base = {"targets": torch.tensor([2]), "context": torch.tensor([[3, 1, 4, 1]])}
    ref = module.loss(dict(base, negatives=torch.tensor([[5, 7]])))
    with_target = module.loss(dict(base, negatives=torch.tensor([[5, 2, 7]])))
    with_pad = module.loss(dict(base, negatives=torch.tensor([[-1, 5, 7]])))
    assert with_target.item() == pytest.approx(ref.item(), rel=1e-7)
    assert with_pad.item() == pytest.approx(ref.item(), rel=1e-7)
    with pytest.raises(ValueError, match="negatives"):
        module.loss(base)
    with pytest.raises(ValueError, match="window mode"):
        module.loss({"tokens": torch.tensor([[1, 2]])})
    with pytest.raises(ValueError, match="2\\*window"):
        module.loss(dict(base, context=torch.tensor([[3, 1, 4]]), negatives=torch.tensor([[5]])))


@pytest.mark.parametrize("sg,cbow_mean,update", [(0, 1, True), (0, 1, False), (0, 0, True), (0, 0, False),
                                                 (1, 1, True)])
def test_word2vec_negative_sampling_gradient_is_the_closed_form(sg, cbow_mean, update):
    """Autograd's gradient of the Word2Vec loss against the closed form of
    word2vec's negative sampling, in float64: ∂/∂beta_o = (σ(beta_o·h) − label) h,
    ∂/∂h = Σ_o (σ(beta_o·h) − label) beta_o, and for CBOW the context words get
    ∂/∂h scaled as word2vec does (``word2vec_update``) or the exact gradient."""
    v, d = 9, 5
    rng = np.random.default_rng(11)
    vectors, syn1neg = rng.normal(0, 0.5, (v, d)), rng.normal(0, 0.5, (v, d))
    module = Word2VecModule(v, d, window=2, sg=sg, cbow_mean=cbow_mean, negative=3, word2vec_update=update).double()
    with torch.no_grad():
        module.vectors.copy_(torch.from_numpy(vectors))
        module.syn1neg.copy_(torch.from_numpy(syn1neg))
    target, context, negatives = 2, [4, -1, 6, 6], [7, 2, 0]  # the negative 2 is the target: skipped
    module.loss({"targets": torch.tensor([target]), "context": torch.tensor([context]),
                 "negatives": torch.tensor([negatives])}).backward()
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    outs = [(target, 1.0), (7, 0.0), (0, 0.0)]
    d_vec, d_out = np.zeros((v, d)), np.zeros((v, d))
    words = [w for w in context if w >= 0]

    def output_step(h):
        dh = np.zeros(d)
        for o, label in outs:
            g = sig(syn1neg[o] @ h) - label
            d_out[o] += g * h
            dh += g * syn1neg[o]
        return dh

    if sg:
        for w in words:  # each pair its own example
            d_vec[w] += output_step(vectors[w])
    else:
        n = len(words)
        h = vectors[words].sum(0) / (n if cbow_mean else 1)
        dh = output_step(h)
        exact = dh / n if cbow_mean else dh
        word2vec = dh if cbow_mean else dh / n
        for w in words:
            d_vec[w] += word2vec if update else exact
    np.testing.assert_allclose(module.syn1neg.grad.numpy(), d_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(module.vectors.grad.numpy(), d_vec, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family,kw", [("w2v", dict(negative=3, hs=1)), ("moe", dict(heads=2, window=2)),
                                       ("att", dict(heads=2, window=2, tie_output=True))])
def test_sparse_gradients_equal_dense(family, kw):
    model = _randomize(_make(family, kw), seed=12)
    batch = {"targets": torch.tensor([2, 5]), "negatives": torch.tensor([[1, 3, 4], [0, 0, 7]]),
             "context": torch.tensor([[3, 1, 4, 1] + [-1, -1] * (family == "w2v"), [-1, 5, 9, -1] + [2, -1] * (family == "w2v")])}
    dense, sparse = model.to_torch(), model.to_torch(sparse=True)
    dense.loss(batch).backward()
    sparse.loss(batch).backward()
    assert sparse.vectors.grad.is_sparse
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        g = q.grad.to_dense() if q.grad.is_sparse else q.grad
        assert torch.allclose(p.grad, g, atol=1e-6), name


# ------------------------------------------ one SGD step = the Rust core's


class _TableLogSigmoid(torch.autograd.Function):
    """log σ(sign·f) whose gradient uses word2vec's sigmoid table, as the Rust
    core does: d/df = label − σ_table(f), label 1 for sign +1, 0 for −1."""

    @staticmethod
    def forward(ctx, f, sign):
        ctx.save_for_backward(f, sign)
        return F.logsigmoid(sign * f)

    @staticmethod
    def backward(ctx, grad):
        f, sign = ctx.saved_tensors
        label = (sign > 0).to(f.dtype)
        return grad * (label - _table_sigmoid(f)), None


_TABLE = torch.tensor([1.0 / (1.0 + np.exp(-((i / 1000 * 2.0 - 1.0) * 6.0))) for i in range(1000)], dtype=torch.float32)


def _table_sigmoid(f):
    """rust/src/simd.rs SigmoidTable::sigmoid, in float32: 1000 entries over
    [-6, 6), index truncated, saturating outside."""
    f = f.float()
    idx = ((f + 6.0) * torch.tensor(np.float32(1000) / np.float32(6) / np.float32(2))).floor().long().clamp(0, 999)
    s = _TABLE[idx]
    return torch.where(f <= -6.0, 0.0, torch.where(f >= 6.0, 1.0, s)).to(f.dtype)


def _table_log_sigmoid(f, sign):
    return _TableLogSigmoid.apply(f, torch.as_tensor(sign, dtype=f.dtype, device=f.device))


def _snapshot(model):
    out = {"vectors": model.wv.vectors.copy()}
    out.update({n: getattr(model, n).copy() for n in model._array_names if getattr(model, n) is not None})
    return out


def _restore(model, snap):
    for name, arr in snap.items():
        np.copyto(model.wv.vectors if name == "vectors" else getattr(model, name), arr)


def _drawn_negatives(seed, k, target):
    """The negatives one Rust step with this seed draws for ``target``, or None
    unless they are ``k`` distinct words other than the target. The draws
    depend only on the seed and the vocabulary's table (STEP_CORPUS's), so a
    window-mode BidirMoE step shows them: the output rows it moves (see
    conftest's helper). With ``tie_output`` the tested model's own moved rows
    would include the context words."""
    probe = _randomize(BidirMoE(STEP_CORPUS, vector_size=2, window=1, negative=k, min_count=1, workers=1), seed=0)
    before = probe.syn1neg.copy()
    _core.moe_step(probe._vocab, probe._arrays(), probe._settings(), [0], [1], target, 1.0, seed=seed)
    moved = set(np.flatnonzero(np.any(probe.syn1neg != before, axis=1)).tolist())
    negatives = sorted(moved - {target})
    return negatives if target in moved and len(negatives) == k else None


def _rust_step(model, step, target, k):
    """Run ``step(arrays, settings, seed)`` — one Rust SGD step on the model's
    own arrays (``model._arrays()`` are views) — with a seed whose ``k``
    negatives are distinct and differ from the target (for such a step the
    update is exactly −lr × the gradient: a repeated negative would see its
    own first update). Returns (the arrays before, the step's loss, the negatives)."""
    before = _snapshot(model)
    for seed in range(300):
        negatives = _drawn_negatives(seed, k, target) if k else []
        if negatives is None:
            continue
        loss = step(model._arrays(), model._settings(), seed)
        return before, loss, negatives
    pytest.fail(f"no seed drew {k} distinct negatives")


def _assert_step_is_minus_lr_grad(model, before, module, lr, rel=1e-5, atol=0.0):
    """Every parameter moved by −lr × autograd's gradient: to ``rel`` of the
    array's largest step, plus the float32 rounding of the parameter itself
    (and ``atol``)."""
    moved = 0
    for name, p in module.named_parameters():
        after = model.wv.vectors if name == "vectors" else getattr(model, name)
        delta = after.astype(np.float64) - before[name]
        want = np.zeros(delta.shape) if p.grad is None else -lr * p.grad.double().numpy()
        rounding = 2.0 ** -23 * np.abs(before[name]).max()
        err = np.abs(delta - want).max()
        assert err <= rel * np.abs(want).max() + rounding + atol, (name, err, np.abs(want).max())
        moved += np.abs(want).max() > 1e3 * rounding
    return moved


def _steps(module, batch, loss_index, monkeypatch, table):
    """Autograd gradient of one example's loss (the sigmoid from word2vec's table if ``table``)."""
    if table:
        monkeypatch.setattr(torch_modules, "_signed_log_sigmoid", _table_log_sigmoid)
    module.zero_grad()
    loss = module.example_losses(batch)[loss_index]
    loss.backward()
    monkeypatch.undo()
    return loss.item()


MOE_STEP_CASES = [(pos, hv, mask, loss) for pos in ("window", "absolute") for hv in ("slice", "full")
                  for mask in (True, False) for loss in ("negative", "softmax", "hs")]


@pytest.mark.parametrize("positions,head_values,mask,loss", MOE_STEP_CASES)
def test_moe_loss_gradient_is_the_rust_step(positions, head_values, mask, loss, monkeypatch):
    lr, k, target = 1.0, 3, 3
    model = BidirMoE(STEP_CORPUS, vector_size=6, heads=2, head_values=head_values, mask_expert=mask, loss=loss,
                     positions=positions, window=2, max_len=6, key_size=3, negative=k, min_count=1, workers=1)
    _randomize(model, seed=13)
    module = model.to_torch()
    if positions == "window":
        words, offsets, tpos = [4, 4, 6], [-1, 1, 2], None  # offset -2 empty, word 4 twice
        batch, index = {"targets": torch.tensor([target]), "context": torch.tensor([[-1, 4, 4, 6]])}, 0
    else:
        words, offsets, tpos = [2, 5, 1, 7], [0, 1, 3, 4], 2  # position 5: padding
        batch, index = {"tokens": torch.tensor([[2, 5, target, 1, 7, -1]])}, (0, tpos)
    vocab = model._vocab
    before, rust_loss, negatives = _rust_step(model, lambda a, s, seed: _core.moe_step(
        vocab, a, s, words, offsets, target, lr, seed=seed, target_pos=tpos), target, k if loss == "negative" else 0)
    if loss == "negative":
        shape = (1, k) if tpos is None else (1, 6, k)
        negs = torch.zeros(shape, dtype=torch.long)
        negs[(0,) if tpos is None else (0, tpos)] = torch.tensor(negatives)
        batch["negatives"] = negs
    table = loss != "softmax"
    value = _steps(module, batch, index, monkeypatch, table)
    assert value == pytest.approx(rust_loss, rel=2e-2 if table else 1e-5)
    moved = _assert_step_is_minus_lr_grad(model, before, module, lr)
    assert moved == len(list(module.parameters()))  # every parameter took a real step
    if table:  # the exact objective: the table's precision (steps of 0.012 in the logit) away from the Rust step
        _steps(module, batch, index, monkeypatch, table=False)
        _assert_step_is_minus_lr_grad(model, before, module, lr, rel=3e-2, atol=lr * 4e-3)


ATT_STEP_CASES = [(pos, loss, tie) for pos in ("window", "absolute") for loss in ("negative", "softmax", "hs")
                  for tie in (False, True) if not (tie and loss == "hs")]


@pytest.mark.parametrize("positions,loss,tie", ATT_STEP_CASES)
def test_attention_loss_gradient_is_the_rust_step(positions, loss, tie, monkeypatch):
    lr, k, target = 1.0, 3, 3
    model = BidirectionalAttention(STEP_CORPUS, vector_size=6, heads=2, key_size=3, value_size=2, window=2,
                                   max_len=6, loss=loss, positions=positions, tie_output=tie, negative=k,
                                   min_count=1, workers=1)
    _randomize(model, seed=14)
    module = model.to_torch()
    if positions == "window":
        context, self_row = [(4, 1), (4, 3), (6, 4)], 2  # encoding rows of offsets -1, 1, 2
        batch, index = {"targets": torch.tensor([target]), "context": torch.tensor([[-1, 4, 4, 6]])}, 0
    else:
        context, self_row = [(2, 0), (5, 1), (1, 3), (7, 4)], 2
        batch, index = {"tokens": torch.tensor([[2, 5, target, 1, 7, -1]])}, (0, 2)
    vocab = model._vocab
    before, rust_loss, negatives = _rust_step(model, lambda a, s, seed: _core.attention_step(
        vocab, a, s, context, target, self_row, lr, seed=seed), target, k if loss == "negative" else 0)
    if loss == "negative":
        shape = (1, k) if positions == "window" else (1, 6, k)
        negs = torch.zeros(shape, dtype=torch.long)
        negs[(0,) if positions == "window" else (0, 2)] = torch.tensor(negatives)
        batch["negatives"] = negs
    table = loss != "softmax"
    value = _steps(module, batch, index, monkeypatch, table)
    assert value == pytest.approx(rust_loss, rel=2e-2 if table else 1e-5)
    moved = _assert_step_is_minus_lr_grad(model, before, module, lr)
    assert moved == len(list(module.parameters()))
    if table:
        _steps(module, batch, index, monkeypatch, table=False)
        _assert_step_is_minus_lr_grad(model, before, module, lr, rel=3e-2, atol=lr * 4e-3)


@pytest.mark.parametrize("sg,cbow_mean", [(0, 1), (0, 0), (1, 1)])
def test_word2vec_training_is_torch_sgd_on_the_loss(sg, cbow_mean, monkeypatch):
    """Rust training on one sentence (hierarchical softmax: deterministic; one
    worker, constant learning rate, no subsampling, full windows) equals
    plain SGD on the module's loss, example by example in the core's order:
    CBOW one step per position; skip-gram one output step per (context word,
    target) pair, the input vectors of a position updated after its pairs."""
    lr, window = 0.5, 2
    model = Word2Vec(vector_size=6, window=window, min_count=1, sg=sg, cbow_mean=cbow_mean, hs=1, negative=0,
                     sample=0, shrink_windows=False, workers=1, alpha=lr, min_alpha=lr, seed=7)
    model.build_vocab(STEP_CORPUS)
    _randomize(model, seed=15)
    module = model.to_torch()
    sentence = ["w3", "w0", "w5", "w5", "w1", "w7", "w2"]
    before = _snapshot(model)
    model.train([sentence], total_examples=1, epochs=1)
    monkeypatch.setattr(torch_modules, "_signed_log_sigmoid", _table_log_sigmoid)
    ids = [model.wv.key_to_index[w] for w in sentence]

    def offset_index(r):
        return r + window if r < 0 else r + window - 1

    for pos in range(len(ids)):
        ctx = [(offset_index(c - pos), ids[c]) for c in range(max(0, pos - window), min(len(ids), pos + window + 1))
               if c != pos]
        target = torch.tensor([ids[pos]])
        if sg:
            shift = torch.zeros_like(module.vectors)
            for col, w in ctx:
                row = torch.full((1, 2 * window), -1)
                row[0, col] = w
                module.zero_grad()
                module.loss({"targets": target, "context": row}).backward()
                with torch.no_grad():
                    module.syn1 -= lr * module.syn1.grad
                    shift -= lr * module.vectors.grad
            with torch.no_grad():
                module.vectors += shift
        else:
            row = torch.full((1, 2 * window), -1)
            for col, w in ctx:
                row[0, col] = w
            module.zero_grad()
            module.loss({"targets": target, "context": row}).backward()
            with torch.no_grad():
                for p in module.parameters():
                    p -= lr * p.grad
    for name, p in module.named_parameters():
        got = model.wv.vectors if name == "vectors" else getattr(model, name)
        change = np.abs(got.astype(np.float64) - before[name]).max()
        assert change > 0.01, name
        assert np.abs(p.detach().numpy() - got).max() <= 1e-5 * change + 4 * 2.0 ** -23 * np.abs(got).max(), name


# -------------------------------------------------------------- packaging


def test_bidirmoe_import_and_rust_training_stay_torch_free():
    code = ("import sys, bidirmoe\n"
            "m = bidirmoe.BidirMoE([['a', 'b', 'c']] * 20, vector_size=4, min_count=1, epochs=1, workers=1).train()\n"
            "bidirmoe.Word2Vec([['a', 'b', 'c']] * 20, vector_size=4, min_count=1, epochs=1)\n"
            "m.predict_masked(['a'], ['c'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torch_the_error_says_what_to_install():
    code = ("import sys\n"
            "class NoTorch:  # as if torch were not installed\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "import bidirmoe\n"
            "m = bidirmoe.Word2Vec([['a', 'b']] * 5, vector_size=4, min_count=1, epochs=1)\n"
            "try:\n"
            "    m.to_torch()\n"
            "except ImportError as e:\n"
            "    assert 'bidirmoe[torch]' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run(tmp_path, monkeypatch):
    import bidirmoe.torch

    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for mod in (bidirmoe.torch, torch_modules):
        for t in doctest.DocTestFinder().find(mod):
            runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted > 20 and result.failed == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU tests cover the same code)")
@pytest.mark.parametrize("family,kw", [CASES[4], CASES[10], CASES[13], CASES[17]],
                         ids=[CASE_IDS[i] for i in (4, 10, 13, 17)])
def test_cuda_module_agrees_with_cpu(family, kw):
    model = _randomize(_make(family, kw), seed=16)
    cpu, gpu = model.to_torch(), model.to_torch(device="cuda")
    assert gpu.vectors.is_cuda
    lefts, rights = _queries(seed=17, n=10)
    left, right = encode_contexts(model, lefts, rights)
    with torch.no_grad():
        assert torch.allclose(cpu(left, right), gpu(left, right).cpu(), atol=1e-5)
    if kw.get("positions") == "absolute":
        batch = {"tokens": torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, -1, -1, -1, -1]]),
                 "negatives": torch.randint(0, len(model.wv), (2, 6, 3))}
    else:
        batch = {"targets": torch.tensor([2, 5]), "context": torch.tensor([[3, 1, 4, 1, 5, 9], [-1, 5, 9, -1, 2, -1]]),
                 "negatives": torch.randint(0, len(model.wv), (2, 3))}
    cpu.loss(batch).backward()
    gpu.loss({k: v.cuda() for k, v in batch.items()}).backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert torch.allclose(p.grad, q.grad.cpu(), atol=1e-5), name
    assert np.array_equal(from_torch(gpu, model).wv.vectors, gpu.vectors.detach().cpu().numpy())
