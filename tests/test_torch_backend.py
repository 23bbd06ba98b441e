"""Training on the torch backend (on the CPU here): the same loop, schedule,
guarantees and file as the Rust core, and models that move between the two
by copying their arrays."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec  # noqa: E402

W2V = dict(vector_size=24, min_count=5, seed=1, workers=2)
MOE_PAIRS = dict(vector_size=16, heads=2, min_count=1, sample=0, workers=1, seed=1)
ATT_PAIRS = dict(vector_size=16, heads=2, key_size=4, min_count=1, sample=0, workers=1, seed=1)


def arrays(m):
    out = {"vectors": m.wv.vectors}
    for name in m._array_names:
        a = getattr(m, name, None)
        if a is not None:
            out[name] = a
    return out


@pytest.mark.parametrize("kw", [dict(sg=0), dict(sg=1), dict(sg=0, hs=1, negative=0), dict(sg=1, hs=1, negative=5)],
                         ids=["cbow", "skipgram", "cbow-hs", "skipgram-hs+ns"])
@pytest.mark.parametrize("mode", ["iterable", "corpus_file"])
def test_word2vec_learns_planted_structure_on_torch(corpus, corpus_file, groups, precision, precision_threshold, kw, mode):
    m = Word2Vec(backend="torch", epochs=3, **W2V, **kw)
    assert m.backend == "torch" and m.device == "cpu"
    if mode == "iterable":
        m.build_vocab(corpus)
        m.train(corpus, total_examples=m.corpus_count, epochs=3)
    else:
        m.build_vocab(corpus_file=corpus_file)
        m.train(corpus_file=corpus_file, total_words=m.corpus_total_words, epochs=3)
    assert np.isfinite(m.wv.vectors).all()
    assert precision(m.wv, groups) >= precision_threshold


@pytest.mark.parametrize("kw", [dict(), dict(loss="softmax"), dict(loss="hs"), dict(head_values="full"),
                                dict(positions="absolute", max_len=6, key_size=4)],
                         ids=["negative", "softmax", "hs", "full", "sentence"])
def test_bidirmoe_learns_the_pairs_on_torch(pair_corpus, assert_learns_pairs, kw):
    m = BidirMoE(pair_corpus[0], epochs=15, backend="torch", **MOE_PAIRS, **kw)
    assert_learns_pairs(m)


@pytest.mark.parametrize("kw", [dict(), dict(loss="softmax"), dict(positions="absolute", max_len=6)],
                         ids=["negative", "softmax", "sentence"])
def test_attention_learns_the_pairs_on_torch(pair_corpus, assert_learns_pairs, kw):
    m = BidirectionalAttention(pair_corpus[0], epochs=15, backend="torch", **ATT_PAIRS, **kw)
    assert_learns_pairs(m)


@pytest.mark.parametrize("make", [
    lambda **kw: Word2Vec(vector_size=16, min_count=1, workers=1, epochs=1, **kw),
    lambda **kw: BidirMoE(vector_size=16, heads=2, min_count=1, workers=1, epochs=1, **kw),
    lambda **kw: BidirMoE(vector_size=16, heads=2, min_count=1, workers=1, epochs=1, positions="absolute",
                          max_len=8, key_size=4, **kw),
    lambda **kw: BidirectionalAttention(vector_size=16, heads=2, key_size=4, min_count=1, workers=1, epochs=1, **kw),
], ids=["word2vec", "bidirmoe", "bidirmoe-sentence", "attention"])
def test_one_file_both_backends(corpus, tmp_path, make):
    left, right = ["w0", "w1"], ["w2", "w3"]
    # torch -> file -> Rust, and on.
    m = make(backend="torch")
    m.build_vocab(corpus)
    m.train(corpus, total_examples=m.corpus_count, epochs=1)
    left, right = [m.wv.index_to_key[i] for i in (3, 4)], [m.wv.index_to_key[i] for i in (5, 6)]
    m.save(tmp_path / "t.model")
    r = type(m).load(tmp_path / "t.model")
    assert r.backend == "rust"
    a, b = dict(m.predict_masked(left, right, topn=None)), dict(r.predict_masked(left, right, topn=None))
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) <= 1e-5
    r.train(corpus, total_examples=r.corpus_count, epochs=1)
    assert any(not np.array_equal(x, arrays(m)[k]) for k, x in arrays(r).items())
    # Rust -> file -> torch, and on.
    r.save(tmp_path / "r.model")
    t = type(m).load(tmp_path / "r.model", device="cpu", backend="torch")
    assert t.backend == "torch"
    a, b = dict(r.predict_masked(left, right, topn=None)), dict(t.predict_masked(left, right, topn=None))
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-5
    before = {k: v.copy() for k, v in arrays(t).items()}
    t.train(corpus, total_examples=t.corpus_count, epochs=1)
    assert all(np.isfinite(v).all() for v in arrays(t).values())
    assert any(not np.array_equal(v, before[k]) for k, v in arrays(t).items())


def test_seeded_cpu_training_is_deterministic(corpus):
    def run():
        m = BidirMoE(corpus, vector_size=16, heads=2, min_count=1, workers=1, seed=7, epochs=2, backend="torch")
        return arrays(m.train())

    a, b = run(), run()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_loss_callbacks_and_lockf(corpus):
    events = []

    class CB:
        def on_epoch_end(self, m):
            events.append("epoch")

    m = Word2Vec(vector_size=16, min_count=1, workers=1, epochs=2, backend="torch")
    m.build_vocab(corpus)
    lock = np.ones(len(m.wv), dtype=np.float32)
    lock[:10] = 0.0
    m.wv.vectors_lockf = lock
    frozen = m.wv.vectors[:10].copy()
    m.train(corpus, total_examples=m.corpus_count, epochs=2, compute_loss=True, callbacks=[CB()])
    assert events == ["epoch", "epoch"]
    assert m.get_latest_training_loss() > 0
    assert np.array_equal(m.wv.vectors[:10], frozen)
    assert not np.array_equal(m.wv.vectors[10:20], frozen)


class Stop(Exception):
    pass


def test_stop_and_resume_on_torch_read_each_line_once(tmp_path):
    lines = [" ".join(f"l{i}_{k}" for k in range(5)) for i in range(20000)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    m = Word2Vec(vector_size=8, min_count=1, sample=0, window=2, workers=2, seed=3, backend="torch")
    m.build_vocab(corpus_file=path)
    m.syn1neg[...] = np.random.default_rng(0).normal(0, 0.1, m.syn1neg.shape)
    v0 = m.wv.vectors.copy()

    def cb(info):
        if info["epoch_words"] >= 0.3 * m.corpus_total_words:
            raise Stop()

    with pytest.raises(Stop):
        m.train(corpus_file=path, total_words=m.corpus_total_words, epochs=1, progress_callback=cb, report_delay=0.01)
    v1 = m.wv.vectors.copy()
    m.train(corpus_file=path, total_words=m.corpus_total_words, resume_from=m.last_stop)
    before, after = (v1 != v0).any(1), (m.wv.vectors != v1).any(1)
    assert 0.05 < before.mean() < 0.95
    assert not (before & after).any()
    assert (~(before | after)).sum() <= 4


def test_to_torch_module_matches_predict_masked(corpus):
    m = BidirMoE(corpus, vector_size=16, heads=2, min_count=1, workers=1, epochs=1).train()
    module = m.to_torch()
    assert isinstance(module, torch.nn.Module)
    names = dict(module.named_parameters())
    assert names["vectors"].shape == m.wv.vectors.shape and names["vectors"].dtype == torch.float32
    left, right = m.wv.index_to_key[:3], m.wv.index_to_key[3:5]
    from bidirmoe.torch import encode_contexts

    l_ids, r_ids = encode_contexts(m, [left], [right])
    got = module(l_ids, r_ids)[0].detach().numpy()
    want = dict(m.predict_masked(left, right, topn=None))
    ref = np.log(np.array([want[w] for w in m.wv.index_to_key]))
    assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the same paths are tested on the CPU)")
def test_trains_on_cuda(corpus):
    m = BidirMoE(corpus, vector_size=16, heads=2, min_count=1, epochs=1, device="cuda").train()
    assert m.backend == "torch" and np.isfinite(m.wv.vectors).all()
