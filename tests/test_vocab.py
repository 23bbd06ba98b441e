"""Vocabulary: counting, pruning, ordering, subsampling, negatives, Huffman tree.

Compared with gensim on the same corpus where gensim is installed: the
counting and pruning rules are the same, so the numbers must be identical.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from bidirmoe import Word2Vec, _core


# ------------------------------------------------------------------ helpers


def bm_vocab(corpus=None, corpus_file=None, **kw):
    kw.setdefault("vector_size", 8)
    kw.setdefault("workers", 1)
    m = Word2Vec(**kw)
    if corpus_file is not None:
        m.build_vocab(corpus_file=str(corpus_file))
    else:
        m.build_vocab(corpus)
    return m


def gensim_vocab(corpus=None, corpus_file=None, trim_rule=None, **kw):
    gensim = pytest.importorskip("gensim")
    kw.setdefault("vector_size", 8)
    kw.setdefault("workers", 1)
    m = gensim.models.Word2Vec(**kw)
    if corpus_file is not None:
        m.build_vocab(corpus_file=str(corpus_file), trim_rule=trim_rule)
    else:
        m.build_vocab(corpus, trim_rule=trim_rule)
    return m


def bm_counts(m) -> dict:
    words = m._vocab.words
    counts = np.asarray(m._vocab.counts)
    assert list(m.wv.index_to_key) == list(words)
    return {w: int(c) for w, c in zip(words, counts)}


def gensim_counts(g) -> dict:
    return {w: int(g.wv.get_vecattr(w, "count")) for w in g.wv.index_to_key}


def replica_counts(sentences, max_vocab_size=None):
    """Pure-Python replica of gensim's Word2Vec._scan_vocab + utils.prune_vocab:
    after each sentence, if the table holds more than max_vocab_size words,
    drop every word seen fewer than min_reduce times, then min_reduce += 1."""
    vocab: dict = {}
    total = 0
    n = 0
    min_reduce = 1
    prunes = 0
    for sent in sentences:
        n += 1
        for w in sent:
            vocab[w] = vocab.get(w, 0) + 1
        total += len(sent)
        if max_vocab_size and len(vocab) > max_vocab_size:
            vocab = {w: c for w, c in vocab.items() if c >= min_reduce}
            min_reduce += 1
            prunes += 1
    return vocab, total, n, prunes


def chunked(sentences, size=10_000):
    for s in sentences:
        for i in range(0, len(s), size):
            yield s[i:i + size]


# ------------------------------------------------------- counts vs gensim


@pytest.mark.parametrize("min_count", [1, 5, 20])
def test_counts_match_gensim(corpus, planted, min_count):
    m = bm_vocab(corpus, min_count=min_count)
    g = gensim_vocab(corpus, min_count=min_count)
    ours, theirs = bm_counts(m), gensim_counts(g)
    assert ours == theirs
    # Against the ground truth too, and min_count really applied.
    truth = {w: c for w, c in planted.counts().items() if c >= min_count}
    assert ours == truth
    assert m.corpus_count == g.corpus_count == len(corpus)
    assert m.corpus_total_words == g.corpus_total_words == planted.n_tokens


@pytest.mark.parametrize("max_final_vocab,min_count", [(30, 1), (100, 1), (100, 10), (5, 1), (100_000, 1)])
def test_max_final_vocab_matches_gensim(corpus, max_final_vocab, min_count):
    m = bm_vocab(corpus, min_count=min_count, max_final_vocab=max_final_vocab)
    g = gensim_vocab(corpus, min_count=min_count, max_final_vocab=max_final_vocab)
    ours = bm_counts(m)
    assert ours == gensim_counts(g)
    assert len(ours) <= max_final_vocab
    assert m._vocab.effective_min_count == g.effective_min_count


@pytest.mark.parametrize("max_vocab_size", [60, 200, 400, 700])
def test_max_vocab_size_pruning_matches_gensim(corpus, max_vocab_size):
    m = bm_vocab(corpus, min_count=1, max_vocab_size=max_vocab_size)
    g = gensim_vocab(corpus, min_count=1, max_vocab_size=max_vocab_size)
    ours = bm_counts(m)
    assert ours == gensim_counts(g)
    # Pruning must actually have happened for this test to mean anything.
    assert len(ours) < len(Counter(w for s in corpus for w in s))


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("max_vocab_size", [60, 700])
def test_max_vocab_size_pruning_matches_gensim_corpus_file(corpus_file_oneline, max_vocab_size, workers):
    # One huge line: both libraries cut it into 10,000-token sentences, and
    # pruning happens after each of them (in one pass, whatever the workers).
    m = bm_vocab(corpus_file=corpus_file_oneline, min_count=1, max_vocab_size=max_vocab_size, workers=workers)
    g = gensim_vocab(corpus_file=corpus_file_oneline, min_count=1, max_vocab_size=max_vocab_size)
    assert bm_counts(m) == gensim_counts(g)
    assert m.corpus_count == g.corpus_count
    assert m.corpus_total_words == g.corpus_total_words


@pytest.mark.parametrize("workers", [1, 2, 5])
@pytest.mark.parametrize("min_count", [1, 5])
def test_corpus_file_counts_match_gensim(corpus_file, min_count, workers):
    # With 2+ workers each thread counts the whole lines of one part of the file.
    m = bm_vocab(corpus_file=corpus_file, min_count=min_count, workers=workers)
    g = gensim_vocab(corpus_file=corpus_file, min_count=min_count)
    assert bm_counts(m) == gensim_counts(g)
    assert m.corpus_count == g.corpus_count
    assert m.corpus_total_words == g.corpus_total_words


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_vocab_counter_add_file_threads_count_as_one_pass(tmp_path, threads):
    # Lines longer than a sentence (10,000 tokens), blank lines, CRLF ends,
    # tabs and no final line end: the threads' parts start at line starts, so
    # sentences and counts are those of one pass (Python's own count here).
    rng = np.random.default_rng(3)
    lines = []
    for i in range(300):
        n = int(rng.choice([0, 3, 17, 40, 23_456], p=[0.1, 0.3, 0.3, 0.28, 0.02]))
        lines.append("\t ".join(f"w{int(k)}" for k in rng.integers(0, 80, n)) + (" \r" if i % 7 == 0 else ""))
    path = tmp_path / "ragged.txt"
    path.write_bytes("\n".join(lines).encode())
    counter = _core.VocabCounter(None)
    counter.add_file(str(path), threads=threads)
    tokens = [line.split() for line in lines]
    assert counter.raw_counts() == Counter(w for t in tokens for w in t)
    assert counter.total_words == sum(map(len, tokens))
    assert counter.sentences == sum(-(-len(t) // 10_000) for t in tokens)
    # A distributed rank's share (shard=(rank, world)): the tokens that start
    # in the bytes [rank/world, (rank+1)/world) of the file, a line cut at
    # the share's ends ending a sentence there; found here from the text.
    data = path.read_bytes()
    spans = [(m.start(), m.group().decode()) for m in re.finditer(rb"\S+", data)]
    line_of = np.searchsorted([i for i, b in enumerate(data) if b == ord("\n")], [s for s, _ in spans])
    for world in (2, 3):
        total = Counter()
        for rank in range(world):
            lo, hi = len(data) * rank // world, len(data) * (rank + 1) // world
            mine = [(w, line) for (s, w), line in zip(spans, line_of) if lo <= s < hi]
            shard = _core.VocabCounter(None)
            shard.add_file(str(path), shard=(rank, world), threads=threads)
            assert shard.raw_counts() == Counter(w for w, _ in mine), (rank, world)
            assert shard.total_words == len(mine)
            per_line = Counter(line for _, line in mine)
            assert shard.sentences == sum(-(-k // 10_000) for k in per_line.values())
            total.update(shard.raw_counts())
        assert total == counter.raw_counts()
    with pytest.raises(RuntimeError, match="rank 3 is not below world size 3"):
        _core.VocabCounter(None).add_file(str(path), shard=(3, 3), threads=threads)


def test_scan_vocab_threads_gzip_and_bad_workers(corpus_file, corpus_file_gz):
    one = bm_vocab(corpus_file=corpus_file, min_count=1)
    for path, workers in ((corpus_file, 4), (corpus_file_gz, 4)):  # gzip: one pass
        m = Word2Vec(vector_size=8, min_count=1, workers=1)
        assert m.scan_vocab(corpus_file=str(path), workers=workers) == (one.corpus_total_words, one.corpus_count)
        assert dict(m.raw_vocab) == bm_counts(one)  # min_count 1: every word
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        Word2Vec(vector_size=8).scan_vocab(corpus_file=str(corpus_file), workers=0)


@pytest.mark.parametrize("max_vocab_size", [None, 40, 60, 200, 700, 2000])
def test_vocab_counter_raw_counts_match_python_replica(corpus, max_vocab_size):
    counter = _core.VocabCounter(max_vocab_size)
    # Feed in several batches: pruning state must carry across calls.
    for i in range(0, len(corpus), 997):
        counter.add_sentences(corpus[i:i + 997])
    raw, total, n, prunes = replica_counts(corpus, max_vocab_size)
    assert counter.raw_counts() == raw
    assert len(counter) == len(raw)
    assert counter.total_words == total
    assert counter.sentences == n
    assert counter.prunes == prunes
    if max_vocab_size is not None and max_vocab_size <= 700:
        assert prunes > 0


@pytest.mark.parametrize("max_vocab_size", [None, 60, 700])
def test_vocab_counter_add_file_matches_python_replica(corpus, corpus_file_oneline, max_vocab_size):
    counter = _core.VocabCounter(max_vocab_size)
    counter.add_file(str(corpus_file_oneline))
    flat = [w for s in corpus for w in s]
    raw, total, n, prunes = replica_counts(chunked([flat]), max_vocab_size)
    assert counter.raw_counts() == raw
    assert counter.total_words == total == len(flat)
    assert counter.sentences == n == -(-len(flat) // 10_000)
    assert counter.prunes == prunes


def test_vocab_counter_handles_tuples_and_generators_as_sentences():
    counter = _core.VocabCounter()
    counter.add_sentences([("a", "b"), iter(["a", "c"]), ["a"]])
    assert counter.raw_counts() == {"a": 3, "b": 1, "c": 1}
    assert counter.sentences == 3
    assert counter.total_words == 5


# ---------------------------------------------------------------- ordering


@pytest.mark.parametrize("min_count", [1, 5])
def test_vocabulary_in_descending_frequency_order(corpus, min_count):
    m = bm_vocab(corpus, min_count=min_count)
    counts = np.asarray(m._vocab.counts)
    assert len(counts) == len(m.wv.index_to_key) > 0
    assert np.all(np.diff(counts.astype(np.int64)) <= 0)
    assert m.wv.key_to_index == {w: i for i, w in enumerate(m.wv.index_to_key)}
    truth = Counter(w for s in corpus for w in s)
    assert [truth[w] for w in m.wv.index_to_key] == counts.tolist()


def test_vocabulary_order_same_as_gensim_up_to_ties(corpus):
    m = bm_vocab(corpus, min_count=5)
    g = gensim_vocab(corpus, min_count=5)
    ours = bm_counts(m)
    # gensim sorts by count only (ties in insertion order); compare rank by rank.
    assert [ours[w] for w in m.wv.index_to_key] == [int(g.wv.get_vecattr(w, "count")) for w in g.wv.index_to_key]


# ------------------------------------------------------------- subsampling


@pytest.mark.parametrize("sample", [1e-3, 1e-2, 1e-5, 0, 1, 50, 300])
def test_keep_probability_matches_gensim(corpus, sample):
    m = bm_vocab(corpus, min_count=2, sample=sample)
    g = gensim_vocab(corpus, min_count=2, sample=sample)
    keep = np.asarray(m._vocab.keep_probability)
    assert keep.shape == (len(m.wv.index_to_key),)
    expected = np.array([int(g.wv.get_vecattr(w, "sample_int")) / 2**32 for w in m.wv.index_to_key])
    np.testing.assert_allclose(keep, expected, rtol=0, atol=1e-6)
    assert np.all((keep >= 0) & (keep <= 1))
    if sample == 0:
        assert np.all(keep == 1.0)
    else:
        # Every one of these settings downsamples the most frequent word.
        assert keep[0] < 0.999


def test_keep_probability_formula(corpus):
    # Independent of gensim: word2vec's formula with threshold sample * retained total.
    m = bm_vocab(corpus, min_count=5, sample=1e-3)
    counts = np.asarray(m._vocab.counts, dtype=np.float64)
    t = 1e-3 * counts.sum()
    p = np.minimum((np.sqrt(counts / t) + 1) * (t / counts), 1.0)
    np.testing.assert_allclose(m._vocab.keep_probability, p, atol=1e-6)
    assert m._vocab.expected_kept_words == pytest.approx(float((p * counts).sum()), rel=1e-6)


# -------------------------------------------------------------- negatives


@pytest.mark.parametrize("ns_exponent", [0.75, 0.0, 1.0, 0.5])
def test_negative_sampling_distribution(corpus, ns_exponent):
    m = bm_vocab(corpus, min_count=5, ns_exponent=ns_exponent)
    counts = np.asarray(m._vocab.counts, dtype=np.float64)
    v = len(counts)
    n = 400_000
    draws = np.asarray(m._vocab.sample_negatives(n, 7))
    assert draws.shape == (n,)
    assert draws.min() >= 0 and draws.max() < v
    freq = np.bincount(draws, minlength=v) / n
    p = counts ** ns_exponent
    p /= p.sum()
    # ~6 standard deviations per word, plus a little slack.
    tol = 6 * np.sqrt(p * (1 - p) / n) + 2e-4
    bad = np.nonzero(np.abs(freq - p) > tol)[0]
    assert bad.size == 0, f"words {bad[:10]}: got {freq[bad[:10]]}, expected {p[bad[:10]]}"
    # Total variation distance is small overall.
    assert 0.5 * np.abs(freq - p).sum() < 0.01


def test_negative_sampling_is_seeded(corpus):
    m = bm_vocab(corpus, min_count=5)
    a = np.asarray(m._vocab.sample_negatives(1000, 3))
    b = np.asarray(m._vocab.sample_negatives(1000, 3))
    c = np.asarray(m._vocab.sample_negatives(1000, 4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------- Huffman


def _check_huffman(codes, points, counts):
    v = len(counts)
    assert len(codes) == len(points) == v
    for c, p in zip(codes, points):
        assert len(c) == len(p) >= 1
        assert all(b in (0, 1) for b in c)
        assert all(0 <= x < v - 1 for x in p), "points must index the V-1 inner nodes"
        assert len(set(p)) == len(p), "a path visits each inner node once"
    strs = sorted("".join(map(str, c)) for c in codes)
    assert len(set(strs)) == v, "codes must be distinct"
    for a, b in zip(strs, strs[1:]):
        assert not b.startswith(a), f"code {a} is a prefix of {b}"
    # Full binary tree: Kraft equality.
    assert sum(2.0 ** -len(c) for c in codes) == pytest.approx(1.0, abs=1e-12)
    # All paths start at the same root.
    assert len({p[0] for p in points}) == 1
    # Optimality: a strictly more frequent word never has a longer code.
    lens = np.array([len(c) for c in codes])
    cnt = np.asarray(counts)
    for i in range(v):
        assert np.all(lens[cnt < cnt[i]] >= lens[i])


@pytest.mark.parametrize("min_count", [1, 5, 50])
def test_huffman_tree_is_valid_and_optimal_like_gensim(corpus, min_count):
    m = bm_vocab(corpus, min_count=min_count, hs=1, negative=0)
    tree = m._vocab.huffman()
    assert tree is not None
    codes, points = tree
    counts = [int(c) for c in m._vocab.counts]
    _check_huffman(codes, points, counts)
    ours = sum(c * len(code) for c, code in zip(counts, codes))
    g = gensim_vocab(corpus, min_count=min_count, hs=1, negative=0)
    theirs = sum(int(g.wv.get_vecattr(w, "count")) * len(g.wv.get_vecattr(w, "code")) for w in g.wv.index_to_key)
    assert ours == theirs


def test_huffman_absent_without_hs(corpus):
    m = bm_vocab(corpus, min_count=5, hs=0, negative=5)
    assert m._vocab.huffman() is None


def test_huffman_small_vocabularies():
    for counts in ([5, 3], [4, 4, 4], [100, 1, 1, 1, 1], [7, 5, 3, 2, 2, 1, 1, 1]):
        words = [f"w{i}" for i in range(len(counts))]
        voc = _core.Vocab.from_words(words, counts, 0.0, 0.75, True)
        codes, points = voc.huffman()
        _check_huffman(codes, points, counts)


# --------------------------------------------------------------- trim_rule

RULE_DEFAULT, RULE_DISCARD, RULE_KEEP = 0, 1, 2  # gensim.utils values


def _trim_rule(word, count, min_count):
    if word.startswith("r1"):
        return RULE_KEEP  # keep these rare words whatever their count
    if word.startswith("t1"):
        return RULE_DISCARD  # drop topic group 1 entirely
    return RULE_DEFAULT


@pytest.mark.parametrize("kw", [dict(min_count=5), dict(min_count=1), dict(min_count=5, max_final_vocab=100)],
                         ids=["min_count5", "min_count1", "max_final_vocab"])
def test_trim_rule_matches_gensim(corpus, kw):
    m = Word2Vec(vector_size=8, **kw)
    m.build_vocab(corpus, trim_rule=_trim_rule)
    ours = bm_counts(m)
    assert not any(w.startswith("t1") for w in ours)
    assert any(w.startswith("r1") and c < kw["min_count"] for w, c in ours.items()) or kw["min_count"] == 1
    counts = np.asarray(m._vocab.counts)
    assert np.all(np.diff(counts.astype(np.int64)) <= 0)
    g = gensim_vocab(corpus, **kw, trim_rule=_trim_rule)
    assert ours == gensim_counts(g)
    # Given to the constructor, the rule is applied the same way.
    c = Word2Vec(corpus, vector_size=8, epochs=0, trim_rule=_trim_rule, **kw)
    assert bm_counts(c) == ours


def test_trim_rule_with_max_vocab_size_matches_gensim(corpus):
    # gensim applies trim_rule while pruning the counting table too
    # (utils.prune_vocab(vocab, min_reduce, trim_rule=trim_rule)): RULE_KEEP
    # words survive the prunes, RULE_DISCARD words are dropped at each prune.
    m = Word2Vec(vector_size=8, min_count=1, max_vocab_size=300)
    m.build_vocab(corpus, trim_rule=_trim_rule)
    g = gensim_vocab(corpus, min_count=1, max_vocab_size=300, trim_rule=_trim_rule)
    assert bm_counts(m) == gensim_counts(g)
