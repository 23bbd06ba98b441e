"""The rest of gensim's Word2Vec training surface, checked against gensim
itself on the same inputs: growing the vocabulary, building it from counts or
step by step, memory estimates, score, predict_output_word, reset_from,
vectors_lockf, reading gensim's model files and writing gensim models,
save's keyword arguments, and the masked models' gensim-shaped train()."""

from __future__ import annotations

import heapq
import inspect
import os

import numpy as np
import pytest

from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec
from conftest import group_precision

gensim = pytest.importorskip("gensim")
from gensim.models import Word2Vec as GensimWord2Vec  # noqa: E402

SMALL = dict(vector_size=16, workers=1, seed=3)
NEW_GROUP = 7  # in the update corpus, topic group 7 is renamed: six words the first corpus never saw


@pytest.fixture(scope="module")
def split(corpus, groups):
    """(first corpus, update corpus, the renamed group): the update corpus
    brings a whole new topic group plus rare words of its own."""
    rename = {w: "new" + w for w in groups[NEW_GROUP]}
    first = [s for s in corpus[:2000]]
    second = [[rename.get(w, w) for w in s] for s in corpus[2000:]]
    return first, second, [rename[w] for w in groups[NEW_GROUP]]


def counts_of(wv):
    return {w: int(c) for w, c in zip(wv.index_to_key, wv.expandos["count"])}


def gensim_model(**kw):
    params = dict(SMALL)
    params.update(kw)
    return GensimWord2Vec(**params)


# ------------------------------------------------------ build_vocab(update=True)


@pytest.mark.parametrize("min_count", [1, 3, 20])
def test_update_gives_gensims_vocabulary_and_counts(split, min_count):
    first, second, new_group = split
    ours, theirs = Word2Vec(min_count=min_count, **SMALL), gensim_model(min_count=min_count)
    ours.build_vocab(first)
    theirs.build_vocab(first)
    before = list(ours.wv.index_to_key)
    vectors_before = ours.wv.vectors.copy()
    ours.build_vocab(second, update=True)
    theirs.build_vocab(second, update=True)
    assert counts_of(ours.wv) == counts_of(theirs.wv)
    assert ours.wv.index_to_key[:len(before)] == before  # known words keep their index
    assert set(ours.wv.index_to_key[len(before):]) == set(theirs.wv.index_to_key[len(before):])
    assert set(new_group) <= set(ours.wv.index_to_key[len(before):])
    assert all(ours.wv.key_to_index[w] == i for i, w in enumerate(ours.wv.index_to_key))
    assert (ours.corpus_count, ours.corpus_total_words) == (theirs.corpus_count, theirs.corpus_total_words)
    # Known words keep their vectors bit for bit; new words get the rows a fresh model of this size starts with.
    n_old, n = len(before), len(ours.wv.index_to_key)
    assert np.array_equal(ours.wv.vectors[:n_old], vectors_before)
    assert np.array_equal(ours.wv.vectors[n_old:], ours._init_vectors(n)[n_old:])
    assert ours.syn1neg.shape == (n, 16) and not ours.syn1neg[n_old:].any()


@pytest.mark.parametrize("seed,size", [(3, 16), (11, 100)])
def test_initial_vectors_are_gensims(seed, size):
    # gensim 4 starts every input vector uniform in [-1, 1) / vector_size
    # (twice word2vec.c's width); a Word2Vec with the same seed starts from
    # the same vectors bit for bit, and the output layer at zero.
    corpus = [[f"w{k}"] * (k + 1) + [f"w{(3 * k) % 23}"] for k in range(23)]  # no two words tie
    ours = Word2Vec(vector_size=size, min_count=1, seed=seed, workers=1)
    theirs = GensimWord2Vec(vector_size=size, min_count=1, seed=seed, workers=1)
    ours.build_vocab(corpus)
    theirs.build_vocab(corpus)
    assert ours.wv.index_to_key == theirs.wv.index_to_key
    assert np.array_equal(ours.wv.vectors, theirs.wv.vectors)
    assert 0.9 / size < np.abs(ours.wv.vectors).max() < 1.0 / size
    assert not ours.syn1neg.any() and not theirs.syn1neg.any()


def test_update_counts_a_known_word_even_below_min_count_in_the_new_corpus():
    ours, theirs = Word2Vec(min_count=3, **SMALL), gensim_model(min_count=3)
    first = [["a", "b", "c"]] * 5
    second = [["a", "d", "d", "d"]] * 1  # "a" once (below min_count), "d" three times
    for m in (ours, theirs):
        m.build_vocab(first)
        m.build_vocab(second, update=True)
    assert counts_of(ours.wv) == counts_of(theirs.wv) == {"a": 6, "b": 5, "c": 5, "d": 3}


def test_update_with_trim_rule_and_from_freq_matches_gensim():
    from gensim.utils import RULE_DEFAULT, RULE_KEEP

    def rule(word, count, min_count):
        return RULE_KEEP if word.startswith("keep") else RULE_DEFAULT

    first = {"the": 50, "cat": 10, "dog": 4, "keep_a": 1}
    second = {"the": 20, "cat": 1, "emu": 7, "yak": 2, "keep_b": 1}
    ours, theirs = Word2Vec(min_count=5, **SMALL), gensim_model(min_count=5)
    for m in (ours, theirs):
        m.build_vocab_from_freq(first, trim_rule=rule, corpus_count=9)
        m.build_vocab_from_freq(second, trim_rule=rule, update=True, corpus_count=4)
    assert counts_of(ours.wv) == counts_of(theirs.wv)
    assert ours.wv.index_to_key[:3] == ["the", "cat", "keep_a"]
    assert ours.corpus_count == theirs.corpus_count == 4


def test_update_rebuilds_the_negative_sampling_table_as_gensim(split):
    first, second, new_group = split
    ours, theirs = Word2Vec(min_count=3, **SMALL), gensim_model(min_count=3)
    for m in (ours, theirs):
        m.build_vocab(first)
        m.build_vocab(second, update=True)
    cum = theirs.cum_table.astype(np.float64)
    p_theirs = np.diff(np.concatenate([[0.0], cum])) / cum[-1]
    p_theirs = dict(zip(theirs.wv.index_to_key, p_theirs))
    n = 400_000
    draws = np.bincount(ours._vocab.sample_negatives(n, 7), minlength=len(ours.wv))
    for w, i in ours.wv.key_to_index.items():
        p = p_theirs[w]
        if p > 0.005:
            assert abs(draws[i] / n - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-4, w
    assert all(draws[ours.wv.key_to_index[w]] > 0 for w in new_group)


def test_update_rebuilds_subsampling_from_the_summed_counts(split):
    first, second, _ = split
    ours = Word2Vec(min_count=3, sample=1e-3, **SMALL)
    ours.build_vocab(first)
    ours.build_vocab(second, update=True)
    # gensim's thresholds for a vocabulary with exactly these counts.
    ref = gensim_model(min_count=1, sample=1e-3)
    ref.build_vocab_from_freq(counts_of(ours.wv))
    theirs = {w: int(ref.wv.get_vecattr(w, "sample_int")) for w in ref.wv.index_to_key}
    mine = np.round(np.asarray(ours._vocab.keep_probability) * (2 ** 32 - 1)).astype(np.int64)
    assert max(abs(int(mine[i]) - theirs[w]) for i, w in enumerate(ours.wv.index_to_key)) <= 1
    assert (np.asarray(ours._vocab.keep_probability) < 1).sum() >= 5  # the frequent words are thinned


def _huffman_cost(model):
    codes, _ = model._vocab.huffman()
    return sum(int(c) * len(code) for c, code in zip(model.wv.expandos["count"], codes))


def _optimal_cost(counts):
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def test_update_rebuilds_a_valid_huffman_tree_over_all_words(split):
    first, second, new_group = split
    m = Word2Vec(first, min_count=3, hs=1, negative=0, epochs=1, **SMALL)
    m.build_vocab(second, update=True)
    codes, points = m._vocab.huffman()
    n = len(m.wv)
    assert len(codes) == n
    words = ["".join(map(str, c)) for c in codes]
    assert len(set(words)) == n
    ordered = sorted(words)
    assert not any(b.startswith(a) for a, b in zip(ordered, ordered[1:]))  # prefix-free
    nodes = {p for path in points for p in path}
    assert nodes == set(range(n - 1))  # every inner node used, ids 0..V-2


def test_updated_huffman_tree_is_optimal(split):
    first, second, _ = split
    m = Word2Vec(first, min_count=3, hs=1, negative=0, epochs=1, **SMALL)
    m.build_vocab(second, update=True)
    assert _huffman_cost(m) == _optimal_cost(m.wv.expandos["count"])


def test_fresh_huffman_tree_is_optimal(corpus):
    m = Word2Vec(min_count=3, hs=1, negative=0, **SMALL)
    m.build_vocab(corpus)
    assert _huffman_cost(m) == _optimal_cost(m.wv.expandos["count"])


@pytest.mark.parametrize("sg,hs,negative", [(0, 0, 5), (1, 0, 5), (0, 1, 0), (1, 1, 0)])
def test_training_continues_after_update_and_learns_the_new_words(split, groups, sg, hs, negative):
    first, second, new_group = split
    m = Word2Vec(first, vector_size=24, min_count=3, sg=sg, hs=hs, negative=negative, epochs=5, workers=1, seed=1)
    old_groups = [g for k, g in enumerate(groups) if k != NEW_GROUP]
    before = group_precision(m.wv, old_groups)
    m.build_vocab(second, update=True)
    m.train(second, total_examples=m.corpus_count, epochs=8)
    assert np.isfinite(m.wv.vectors).all()
    assert group_precision(m.wv, [new_group]) >= 0.6
    assert group_precision(m.wv, old_groups) >= min(before, 0.8) - 0.1


def test_update_carries_hierarchical_softmax_weights_to_the_rebuilt_tree(split):
    """The rebuilt tree's inner nodes are new; weights follow the nodes that split the same words the same way."""
    first, second, _ = split
    m = Word2Vec(first, min_count=3, hs=1, negative=0, epochs=2, **SMALL)
    old_tree, old_syn1 = m._vocab.huffman(), m.syn1.copy()
    m.build_vocab(second, update=True)
    new_codes, new_points = m._vocab.huffman()
    old_codes, old_points = old_tree

    def splits(codes, points):
        out = {}
        for w, (c, p) in enumerate(zip(codes, points)):
            for bit, node in zip(c, p):
                out.setdefault(node, (set(), set()))[bit].add(w)
        return {node: (frozenset(a), frozenset(b)) for node, (a, b) in out.items()}

    old_splits = {v: k for k, v in splits(old_codes, old_points).items()}
    carried = 0
    for node, (zero, one) in splits(new_codes, new_points).items():
        if (zero, one) in old_splits:
            assert np.array_equal(m.syn1[node], old_syn1[old_splits[(zero, one)]])
            carried += 1
        elif (one, zero) in old_splits:
            assert np.array_equal(m.syn1[node], -old_syn1[old_splits[(one, zero)]])
            carried += 1
        else:
            assert not m.syn1[node].any()
    assert carried > 0


def test_update_needs_an_existing_vocabulary():
    with pytest.raises(RuntimeError, match="has none yet"):
        Word2Vec(min_count=1).build_vocab([["a", "b"]], update=True)


def test_bidirmoe_update_grows_every_per_word_table(split):
    first, second, new_group = split
    m = BidirMoE(first, vector_size=16, window=3, heads=2, min_count=3, epochs=3, workers=1, seed=2).train()
    n_old = len(m.wv)
    values, salience, beta = m.wv.vectors.copy(), m.salience.copy(), m.syn1neg.copy()
    m.build_vocab(second, update=True)
    n = len(m.wv)
    assert n > n_old and m.wv.vectors.shape == (n, 16) and m.salience.shape == (2, n) and m.syn1neg.shape == (n, 16)
    assert np.array_equal(m.wv.vectors[:n_old], values) and np.array_equal(m.salience[:, :n_old], salience)
    assert np.array_equal(m.syn1neg[:n_old], beta) and not m.salience[:, n_old:].any()
    assert m.output_wv.vectors.shape == (n, 16)
    m.train(second, epochs=4)
    assert np.isfinite(m.wv.vectors).all() and np.isfinite(m.salience).all()
    assert m.salience[:, n_old:].any()  # the new words' gates learn
    assert group_precision(m.wv, [new_group]) >= 0.5


def test_bidirmoe_sentence_mode_update_grows_the_keys(split):
    first, second, _ = split
    m = BidirMoE(first[:600], vector_size=8, positions="absolute", max_len=12, key_size=4, heads=2, min_count=2,
                 epochs=1, workers=1).train()
    keys, n_old = m.key.copy(), len(m.wv)
    m.build_vocab(second[:600], update=True)
    n = len(m.wv)
    assert m.key.shape == (2, n, 4) and np.array_equal(m.key[:, :n_old], keys) and m.key[:, n_old:].any()
    m.train(second[:600], epochs=1)
    assert np.isfinite(m.key).all()


@pytest.mark.parametrize("loss", ["negative", "hs"])
def test_attention_update_grows_and_keeps_training(split, loss):
    first, second, _ = split
    m = BidirectionalAttention(first[:600], vector_size=8, window=2, min_count=2, epochs=1, workers=1,
                               loss=loss).train()
    n_old, rho = len(m.wv), m.wv.vectors.copy()
    m.build_vocab(second[:600], update=True)
    n = len(m.wv)
    assert m.wv.vectors.shape == (n, 8) and np.array_equal(m.wv.vectors[:n_old], rho)
    out = m.syn1neg if loss == "negative" else m.syn1
    assert out.shape == (n, 8)
    m.train(second[:600], epochs=1)
    assert np.isfinite(m.wv.vectors).all()


# ------------------------------------------- scan / prepare / from_freq / memory


def test_scan_and_prepare_vocab_report_as_gensim(corpus):
    ours, theirs = Word2Vec(min_count=5, sample=1e-3, **SMALL), gensim_model(min_count=5, sample=1e-3)
    assert ours.scan_vocab(corpus) == theirs.scan_vocab(corpus)
    assert ours.raw_vocab == dict(theirs.raw_vocab)
    for min_count in (1, 5, 20):
        mine = ours.prepare_vocab(min_count=min_count, dry_run=True)
        ref = theirs.prepare_vocab(min_count=min_count, dry_run=True)
        for key in ("drop_unique", "retain_total", "downsample_unique", "num_retained_words"):
            assert mine[key] == ref[key], (min_count, key)
        assert abs(mine["downsample_total"] - ref["downsample_total"]) <= 1
    assert ours.wv is None and ours.min_count == 5  # a dry run changes nothing
    ours.prepare_vocab()
    theirs.prepare_vocab()
    theirs.prepare_weights()
    assert counts_of(ours.wv) == counts_of(theirs.wv)
    assert ours.wv.vectors.shape == theirs.wv.vectors.shape
    assert ours.raw_vocab == {}  # consumed, as gensim's
    with pytest.raises(ValueError, match="keep_raw_vocab"):
        ours.prepare_vocab()


def test_prepare_vocab_keep_raw_vocab_allows_a_second_try(corpus):
    m = Word2Vec(min_count=5, **SMALL)
    m.scan_vocab(corpus)
    m.prepare_vocab(keep_raw_vocab=True)
    n5 = len(m.wv)
    m.prepare_vocab(min_count=20)
    assert len(m.wv) < n5 and m.min_count == 20 and min(m.wv.expandos["count"]) >= 20


@pytest.mark.parametrize("max_final_vocab", [None, 40])
def test_build_vocab_from_freq_matches_gensim(corpus, max_final_vocab):
    freq = {}
    for s in corpus:
        for w in s:
            freq[w] = freq.get(w, 0) + 1
    ours = Word2Vec(min_count=3, max_final_vocab=max_final_vocab, **SMALL)
    theirs = gensim_model(min_count=3, max_final_vocab=max_final_vocab)
    ours.build_vocab_from_freq(freq, corpus_count=len(corpus))
    theirs.build_vocab_from_freq(freq, corpus_count=len(corpus))
    assert counts_of(ours.wv) == counts_of(theirs.wv)
    assert ours.effective_min_count == theirs.effective_min_count
    assert ours.corpus_count == len(corpus) and ours.corpus_total_words == sum(freq.values())
    ours.train(corpus, total_examples=len(corpus), epochs=1)
    assert np.isfinite(ours.wv.vectors).all()


def test_build_vocab_from_freq_rejects_bad_counts():
    with pytest.raises(ValueError, match="int >= 0"):
        Word2Vec(min_count=1).build_vocab_from_freq({"a": 2.5})
    with pytest.raises(TypeError, match="str"):
        Word2Vec(min_count=1).build_vocab_from_freq({1: 2})


@pytest.mark.parametrize("hs,negative", [(0, 5), (1, 0), (1, 5)])
def test_estimate_memory_arrays_match_gensim(hs, negative):
    ours = Word2Vec(vector_size=50, hs=hs, negative=negative).estimate_memory(vocab_size=1234)
    theirs = gensim_model(vector_size=50, hs=hs, negative=negative).estimate_memory(vocab_size=1234)
    for key in ("vectors", "syn1", "syn1neg"):
        assert ours.get(key) == theirs.get(key), key
    assert ours["total"] == sum(v for k, v in ours.items() if k != "total")


@pytest.mark.parametrize("make", [
    lambda c: BidirMoE(c, vector_size=16, window=2, heads=2, min_count=1, workers=1),
    lambda c: BidirMoE(c, vector_size=16, heads=2, head_values="full", loss="softmax", min_count=1, workers=1),
    lambda c: BidirMoE(c, vector_size=8, positions="absolute", max_len=10, loss="hs", min_count=1, workers=1),
    lambda c: BidirectionalAttention(c, vector_size=8, heads=2, window=2, min_count=1, workers=1),
    lambda c: BidirectionalAttention(c, vector_size=8, tie_output=True, min_count=1, workers=1),
    lambda c: Word2Vec(c, vector_size=8, hs=1, min_count=1, epochs=1, workers=1),
])
def test_estimate_memory_counts_the_models_own_arrays(corpus, make):
    m = make(corpus[:300])
    report = m.estimate_memory()
    assert report["vectors"] == m.wv.vectors.nbytes
    arrays = {k: v for k, v in report.items() if k not in ("vocab", "vectors", "total")}
    assert arrays == {name: getattr(m, name).nbytes for name in arrays}
    present = {name for name in getattr(m, "_array_names", ()) + ("W_Q", "W_K", "W_V", "W_O", "pos_encoding",
                                                                     "mask_embedding")
               if getattr(m, name, None) is not None and getattr(m, name) is not m.wv.vectors}
    assert present == set(arrays)  # every array counted once


# ----------------------------------------------------------------- score


def _pairs(model, sentences):
    """Terms in gensim's score of each sentence (for its log-table error bound)."""
    codes, _ = model._vocab.huffman()
    k2i, w = model.wv.key_to_index, model.window
    out = []
    for s in sentences:
        ids = [k2i[t] for t in s if t in k2i]
        terms = 0
        for i, t in enumerate(ids):
            ctx = len(ids[max(0, i - w):i]) + len(ids[i + 1:i + w + 1])
            terms += len(codes[t]) * (ctx if model.sg else 1)
        out.append(terms)
    return np.asarray(out)


@pytest.mark.parametrize("sg,cbow_mean", [(0, 1), (0, 0), (1, 1)])
def test_score_matches_gensim(corpus, sg, cbow_mean):
    m = Word2Vec(corpus[:1500], vector_size=16, min_count=3, hs=1, negative=0, sg=sg, cbow_mean=cbow_mean,
                 window=3, epochs=2, workers=1, seed=5, alpha=0.025 if cbow_mean else 0.01)
    rng = np.random.default_rng(0)
    held_out = corpus[3000:3100]
    salad = [list(rng.choice(m.wv.index_to_key, size=len(s))) for s in held_out]  # words drawn uniformly
    sentences = held_out + salad + [["unknown", "words"], []]
    g = m.to_gensim()  # same weights, and gensim uses our Huffman codes
    # gensim skips terms with |x| >= 6 (keep x inside) and reads log σ(x) from a
    # 1000-entry table over [-6, 6) at index floor(83 (x + 6)): at a point up to
    # 0.012 + (x + 6) / 250 below x. log σ has slope < 1, so that bounds each term's error.
    reach = np.abs(m.wv.vectors @ m.syn1.T).max() * (1 if (sg or cbow_mean) else 2 * m.window)
    assert reach < 6
    ours = m.score(sentences)
    theirs = g.score(sentences, total_sentences=len(sentences))
    assert ours.dtype == np.float32 and ours.shape == (len(sentences),)
    bound = (0.0121 + (reach + 6) / 250) * _pairs(m, sentences) + 1e-4
    assert (np.abs(ours - theirs) <= bound).all()
    assert ours[-1] == ours[-2] == 0 and (ours[:-2] < 0).all()
    # Same order wherever the scores differ by more than gensim's table error.
    diff_ours = ours[:, None] - ours[None, :]
    diff_theirs = theirs[:, None] - theirs[None, :]
    clear = np.abs(diff_ours) > bound[:, None] + bound[None, :]
    assert clear.sum() > 2000
    assert (np.sign(diff_ours[clear]) == np.sign(diff_theirs[clear])).all()
    # A trained model prefers real sentences to word salad of the same length.
    assert (ours[:100] > ours[100:200]).mean() > 0.9


def test_score_limits_and_errors(corpus, caplog):
    m = Word2Vec(corpus[:500], min_count=3, hs=1, negative=0, epochs=1, **SMALL)
    with caplog.at_level("WARNING", logger="bidirmoe"):
        assert m.score(corpus[:10], total_sentences=4).shape == (4,)
    assert "total_sentences" in caplog.text
    with pytest.raises(RuntimeError, match="hs=1"):
        Word2Vec(corpus[:500], min_count=3, epochs=1, **SMALL).score(corpus[:3])
    with pytest.raises(RuntimeError, match="hs=1"):
        GensimWord2Vec(corpus[:500], min_count=3, epochs=1, **SMALL).score(corpus[:3])
    with pytest.raises(TypeError):
        m.score(["a sentence as a str"])


# --------------------------------------------------------- predict_output_word


@pytest.mark.parametrize("sg,cbow_mean", [(0, 1), (0, 0), (1, 1)])
def test_predict_output_word_matches_gensim(corpus, groups, sg, cbow_mean):
    m = Word2Vec(corpus, vector_size=24, min_count=3, sg=sg, cbow_mean=cbow_mean, epochs=3, workers=1, seed=4)
    g = m.to_gensim()
    contexts = [groups[0][:3], groups[2][1:5] + ["the"], ["of", groups[5][0], "not-a-word"],
                [m.wv.key_to_index[groups[1][0]], groups[1][1]]]
    for ctx in contexts:
        ours, theirs = m.predict_output_word(ctx, topn=8), g.predict_output_word(ctx, topn=8)
        assert [w for w, _ in ours] == [w for w, _ in theirs]
        np.testing.assert_allclose([p for _, p in ours], [p for _, p in theirs], rtol=1e-4)
    top = [w for w, _ in m.predict_output_word(groups[3][:4], topn=3)]
    assert sum(w in groups[3] for w in top) >= 2
    full = m.predict_output_word(groups[3][:4], topn=None)
    assert len(full) == len(m.wv) and abs(sum(p for _, p in full) - 1) < 1e-9


def test_predict_output_word_unknown_context_and_errors(corpus, caplog):
    m = Word2Vec(corpus[:500], min_count=3, epochs=1, **SMALL)
    with caplog.at_level("WARNING", logger="bidirmoe"):
        assert m.predict_output_word(["nope", "neither"]) is None
    assert "vocabulary" in caplog.text
    assert m.to_gensim().predict_output_word(["nope", "neither"]) is None
    with pytest.raises(RuntimeError, match="negative > 0"):
        Word2Vec(corpus[:500], min_count=3, hs=1, negative=0, epochs=1, **SMALL).predict_output_word(["the"])


# ------------------------------------------------------------------ reset_from


def test_reset_from_takes_the_vocabulary_and_starts_fresh(corpus, split):
    a = Word2Vec(corpus, min_count=3, epochs=1, **SMALL)
    b = Word2Vec(vector_size=8, min_count=3, sg=1, workers=1, seed=9)
    b.reset_from(a)
    assert b.wv.index_to_key == a.wv.index_to_key and counts_of(b.wv) == counts_of(a.wv)
    assert b._vocab is a._vocab  # same sampling settings: tables shared
    assert np.array_equal(b.wv.vectors, b._init_vectors(len(a.wv))) and not b.syn1neg.any()
    assert (b.corpus_count, b.corpus_total_words) == (a.corpus_count, a.corpus_total_words)
    ga, gb = a.to_gensim(), gensim_model(vector_size=8, min_count=3, sg=1)
    gb.reset_from(ga)
    assert gb.wv.index_to_key == b.wv.index_to_key and gb.corpus_count == b.corpus_count
    b.train(corpus, total_examples=b.corpus_count, epochs=1)
    a_words = list(a.wv.index_to_key)
    b.build_vocab(split[1], update=True)  # growing one leaves the other alone
    assert a.wv.index_to_key == a_words and len(b.wv) > len(a_words)


def test_reset_from_rebuilds_tables_for_other_settings_and_takes_gensim_models(corpus):
    a = Word2Vec(corpus, min_count=3, epochs=1, **SMALL)
    b = Word2Vec(min_count=3, hs=1, negative=0, **SMALL)
    b.reset_from(a)
    assert b._vocab is not a._vocab and b._vocab.huffman() is not None and b.syn1.shape == (len(a.wv), 16)
    g = GensimWord2Vec(corpus, min_count=3, epochs=1, **SMALL)
    c = Word2Vec(min_count=3, **SMALL)
    c.reset_from(g)
    assert c.wv.index_to_key == g.wv.index_to_key and counts_of(c.wv) == counts_of(g.wv)
    c.train(corpus, total_examples=c.corpus_count, epochs=1)
    with pytest.raises(RuntimeError, match="no vocabulary"):
        c.reset_from(Word2Vec())


# ---------------------------------------------------------------- vectors_lockf
# Honoured by the Rust trainers (the epoch call passes it); a 0 freezes a word's input vector.


def test_vectors_lockf_exists_and_grows_with_the_vocabulary(split):
    first, second, _ = split
    m = Word2Vec(first, min_count=3, epochs=1, **SMALL)
    assert m.wv.vectors_lockf.dtype == np.float32 and np.array_equal(m.wv.vectors_lockf, [1.0])
    m.wv.vectors_lockf = np.full(len(m.wv), 0.5, dtype=np.float32)
    n_old = len(m.wv)
    m.build_vocab(second, update=True)
    assert m.wv.vectors_lockf.shape == (len(m.wv),) and (m.wv.vectors_lockf[:n_old] == 0.5).all()
    assert (m.wv.vectors_lockf[n_old:] == 1).all()
    m.wv.vectors_lockf = np.zeros(1, dtype=np.float32)  # one factor for all words stays one
    m.build_vocab(first + [["brand", "new"]] * 5, update=True)
    assert m.wv.vectors_lockf.shape == (1,)


def _frozen_rows_stay(model, corpus, train):
    n = len(model.wv)
    lockf = np.ones(n, dtype=np.float32)
    frozen = np.arange(0, n, 3)
    lockf[frozen] = 0.0
    model.wv.vectors_lockf = lockf
    before = model.wv.vectors.copy()
    train()
    after = model.wv.vectors
    assert np.array_equal(after[frozen], before[frozen])  # bit-identical
    free = np.setdiff1d(np.arange(n), frozen)
    assert (np.abs(after[free] - before[free]).max(axis=1) > 0).mean() > 0.9


@pytest.mark.parametrize("sg,hs,negative", [(0, 0, 5), (1, 0, 5), (0, 1, 0), (1, 1, 0)])
def test_vectors_lockf_zero_freezes_rows_word2vec(corpus, sg, hs, negative):
    m = Word2Vec(corpus[:1000], min_count=3, sg=sg, hs=hs, negative=negative, epochs=1, **SMALL)
    _frozen_rows_stay(m, corpus, lambda: m.train(corpus[:1000], total_examples=1000, epochs=2))


def test_vectors_lockf_zero_freezes_rows_corpus_file(corpus, corpus_file):
    m = Word2Vec(corpus_file=str(corpus_file), min_count=3, epochs=1, **SMALL)
    _frozen_rows_stay(m, corpus, lambda: m.train(corpus_file=str(corpus_file), total_words=m.corpus_total_words,
                                                 epochs=1))


def test_vectors_lockf_zero_freezes_rows_bidirmoe(corpus):
    m = BidirMoE(corpus[:1000], vector_size=16, window=3, heads=2, min_count=3, epochs=1, workers=1).train()
    _frozen_rows_stay(m, corpus, lambda: m.train(epochs=2))


def test_vectors_lockf_single_zero_freezes_every_word(corpus):
    m = Word2Vec(corpus[:1000], min_count=3, epochs=1, **SMALL)
    m.wv.vectors_lockf = np.zeros(1, dtype=np.float32)
    before = m.wv.vectors.copy()
    m.train(corpus[:1000], total_examples=1000, epochs=1)
    assert np.array_equal(m.wv.vectors, before) and m.syn1neg.any()


def test_vectors_lockf_is_saved_and_exchanged_with_gensim(tmp_path, corpus):
    m = Word2Vec(corpus[:500], min_count=3, epochs=1, **SMALL)
    lockf = np.linspace(0, 1, len(m.wv)).astype(np.float32)
    m.wv.vectors_lockf = lockf
    m.save(str(tmp_path / "m"))
    assert np.array_equal(Word2Vec.load(str(tmp_path / "m")).wv.vectors_lockf, lockf)
    g = m.to_gensim()
    assert np.array_equal(g.wv.vectors_lockf, lockf)
    assert np.array_equal(Word2Vec.from_gensim(g).wv.vectors_lockf, lockf)


# ------------------------------------------------------- gensim's model files


def _assert_same_model(ours, theirs, hs_exact=True):
    assert ours.wv.index_to_key == theirs.wv.index_to_key
    assert counts_of(ours.wv) == counts_of(theirs.wv)
    assert np.array_equal(ours.wv.vectors, theirs.wv.vectors)
    for name in ("vector_size", "window", "sg", "hs", "negative", "cbow_mean", "epochs", "min_count", "alpha",
                 "min_alpha", "sample", "seed", "ns_exponent"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.corpus_count == theirs.corpus_count
    if theirs.negative:
        assert np.array_equal(ours.syn1neg, theirs.syn1neg)


@pytest.mark.parametrize("save_kw", [{}, {"sep_limit": 0}, {"suffix": ".gz"}])
def test_load_a_model_saved_by_gensim(tmp_path, corpus, save_kw):
    g = GensimWord2Vec(corpus[:1500], min_count=3, epochs=2, **SMALL)
    path = str(tmp_path / ("g.model" + save_kw.pop("suffix", "")))
    g.save(path, **save_kw)
    m = Word2Vec.load(path)
    assert type(m) is Word2Vec
    _assert_same_model(m, g)
    before = m.wv.vectors.copy()
    m.train(corpus[:1500], total_examples=m.corpus_count, epochs=1)
    assert not np.array_equal(m.wv.vectors, before) and np.isfinite(m.wv.vectors).all()


def test_load_a_separately_saved_gensim_model_with_mmap(tmp_path, corpus):
    g = GensimWord2Vec(corpus[:500], min_count=3, epochs=1, **SMALL)
    g.save(str(tmp_path / "g"), sep_limit=0)
    m = Word2Vec.load(str(tmp_path / "g"), mmap="r")
    _assert_same_model(m, g)
    assert m.wv.vectors.flags.writeable


def _distinct_count_corpus(seed=11, n_words=24):
    """Words with all-different counts: gensim's Huffman tree and ours then split the words identically."""
    rng = np.random.default_rng(seed)
    counts = rng.choice(np.arange(40, 400), size=n_words, replace=False)
    tokens = np.repeat([f"w{i}" for i in range(n_words)], counts)
    rng.shuffle(tokens)
    return [list(tokens[i:i + 10]) for i in range(0, len(tokens), 10)]


def _gensim_log_probs(g, h):
    """log p(word | h) for every word, from gensim's own tree and weights (numpy)."""
    out = np.zeros(len(g.wv))
    for i in range(len(g.wv)):
        code, point = g.wv.expandos["code"][i], g.wv.expandos["point"][i]
        f = g.syn1[point].astype(np.float64) @ h
        out[i] = -np.logaddexp(0, -(1 - 2 * code.astype(np.float64)) * f).sum()
    return out


@pytest.mark.parametrize("sg", [0, 1])
def test_load_gensim_hierarchical_softmax_model(tmp_path, sg):
    text = _distinct_count_corpus()
    g = GensimWord2Vec(text, min_count=1, hs=1, negative=0, sg=sg, epochs=3, **SMALL)
    g.save(str(tmp_path / "g"))
    m = Word2Vec.load(str(tmp_path / "g"))
    _assert_same_model(m, g)
    h = np.random.default_rng(0).normal(size=(5, 16))
    ours = m._log_probs(h)
    for row in range(5):
        np.testing.assert_allclose(ours[row], _gensim_log_probs(g, h[row]), rtol=1e-6, atol=1e-9)
    m.train(text, total_examples=m.corpus_count, epochs=1)
    assert np.isfinite(m.syn1).all()


def test_load_gensim_hs_model_with_tied_counts_warns_and_trains(tmp_path, caplog):
    text = [["a", "b", "c", "d", "e", "f"]] * 20 + [["g", "h"]] * 5
    g = GensimWord2Vec(text, min_count=1, hs=1, negative=0, epochs=2, **SMALL)
    g.save(str(tmp_path / "g"))
    with caplog.at_level("WARNING", logger="bidirmoe"):
        m = Word2Vec.load(str(tmp_path / "g"))
    _assert_same_model(m, g)
    # Six words of count 20: gensim's heap and our builder pair them differently.
    assert "5 of gensim's 7 Huffman-tree nodes have no counterpart" in caplog.text
    m.train(text, total_examples=len(text), epochs=1)
    assert np.isfinite(m.syn1).all()


@pytest.mark.parametrize("name", ["model-from-gensim-3.8.0.w2v", "old_w2v_models/w2v_3.4.0.mdl",
                                  "old_w2v_models/w2v_1.0.0.mdl", "word2vec_3.3", "word2vec_old", "word2vec_old_sep"])
def test_load_gensim_3x_model_files(name):
    from gensim.test.utils import datapath

    path = datapath(name)
    if not os.path.exists(path):
        pytest.skip(f"gensim's test data has no {name}")
    try:
        g = GensimWord2Vec.load(path)
    except Exception as e:  # only where gensim itself can still read it
        pytest.skip(f"gensim cannot load {name}: {e}")
    m = Word2Vec.load(path)
    _assert_same_model(m, g)
    words = list(m.wv.index_to_key)
    m.train([words * 3] * 5, total_examples=5, epochs=1)
    assert np.isfinite(m.wv.vectors).all()


def test_load_rejects_what_is_not_a_word2vec_model(tmp_path):
    from gensim.models import KeyedVectors as GensimKeyedVectors

    kv = GensimKeyedVectors(4)
    kv.add_vectors(["a", "b"], np.ones((2, 4), dtype=np.float32))
    kv.save(str(tmp_path / "kv"))
    with pytest.raises(TypeError, match="KeyedVectors.load"):
        Word2Vec.load(str(tmp_path / "kv"))
    (tmp_path / "junk").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="neither a bidirmoe model"):
        Word2Vec.load(str(tmp_path / "junk"))
    with pytest.raises(FileNotFoundError):
        Word2Vec.load(str(tmp_path / "missing"))


@pytest.mark.parametrize("hs,negative", [(0, 5), (1, 0), (1, 5)])
def test_to_gensim_gives_gensim_the_same_model(tmp_path, corpus, hs, negative):
    m = Word2Vec(corpus[:1500], min_count=3, hs=hs, negative=negative, epochs=2, **SMALL)
    g = m.to_gensim()
    assert type(g) is GensimWord2Vec
    _assert_same_model(m, g)
    assert np.array_equal(g.wv.get_vecattr(0, "count"), m.wv.expandos["count"][0])
    word = m.wv.index_to_key[5]
    assert [w for w, _ in g.wv.most_similar(word, topn=5)] == [w for w, _ in m.wv.most_similar(word, topn=5)]
    if hs:
        # gensim runs on our tree: through gensim and back, every inner node keeps its weights.
        g.save(str(tmp_path / "g"))
        back = Word2Vec.load(str(tmp_path / "g"))
        assert np.array_equal(back.syn1, m.syn1)
    g.train(corpus[:1500], total_examples=g.corpus_count, epochs=1)  # gensim keeps training it
    assert np.isfinite(g.wv.vectors).all()
    g.save(str(tmp_path / "g2"))
    assert GensimWord2Vec.load(str(tmp_path / "g2")).wv.index_to_key == m.wv.index_to_key


def test_to_gensim_without_vocabulary_and_sampling_thresholds(corpus):
    assert len(Word2Vec(vector_size=8).to_gensim().wv) == 0
    m = Word2Vec(corpus[:500], min_count=3, sample=1e-3, epochs=1, **SMALL)
    g = m.to_gensim()
    ref = gensim_model(min_count=3, sample=1e-3)
    ref.build_vocab_from_freq(counts_of(m.wv))
    for w in m.wv.index_to_key:
        assert abs(int(g.wv.get_vecattr(w, "sample_int")) - int(ref.wv.get_vecattr(w, "sample_int"))) <= 1


# ---------------------------------------------------------------- save kwargs


def test_save_accepts_gensims_keywords(tmp_path, corpus):
    m = Word2Vec(corpus[:500], min_count=3, epochs=1, **SMALL)
    m.save(str(tmp_path / "a"), separately=["syn1neg"], sep_limit=0, pickle_protocol=2)
    a = Word2Vec.load(str(tmp_path / "a"))
    assert np.array_equal(a.wv.vectors, m.wv.vectors) and np.array_equal(a.syn1neg, m.syn1neg)
    m.save(str(tmp_path / "b"), ignore={"syn1neg"})
    b = Word2Vec.load(str(tmp_path / "b"))
    assert b.syn1neg is None and np.array_equal(b.wv.vectors, m.wv.vectors)
    assert os.path.getsize(tmp_path / "b") < os.path.getsize(tmp_path / "a")
    with open(tmp_path / "c", "wb") as f:  # an open file, as gensim's fname_or_handle
        m.save(f)
    assert np.array_equal(Word2Vec.load(str(tmp_path / "c")).wv.vectors, m.wv.vectors)
    with pytest.raises(TypeError):
        m.save(str(tmp_path / "d"), compress_level=9)


# ------------------------------------------- masked models: train(), wv before it


def test_masked_train_takes_gensims_positional_arguments(corpus):
    theirs = [p for p in inspect.signature(GensimWord2Vec.train).parameters if p != "self"]
    for cls in (BidirMoE, BidirectionalAttention):
        ours = [p for p in inspect.signature(cls.train).parameters if p != "self"]
        assert ours[:7] == theirs[:7], cls
    m = BidirMoE(corpus[:300], vector_size=8, window=2, min_count=1, epochs=1, workers=1)
    m.train(corpus[:300], None, 300, None, 3)  # as gensim: corpus, corpus_file, total_examples, total_words, epochs
    assert m._epochs_done == 3


@pytest.mark.parametrize("cls", [BidirMoE, BidirectionalAttention])
def test_masked_model_has_untrained_vectors_before_train(corpus, cls):
    m = cls(corpus[:300], vector_size=8, window=2, min_count=2, epochs=1, workers=1)
    assert m.wv is not None and len(m.wv) > 10
    word = m.wv.index_to_key[0]
    assert len(m.wv.most_similar(word, topn=3)) == 3  # random vectors, as after gensim's build_vocab
    before = m.wv.vectors.copy()
    assert m.train() is m and not np.array_equal(m.wv.vectors, before)
    assert m.corpus_count == 300
