"""Tests for :mod:`bidirmoe.keyedvectors`, mostly by comparison with gensim 4 on identical vectors.

The vectors are random but structured: word pairs ``a<s>_<i> -> b<s>_<i>`` share a
per-section offset (so analogy questions are often, but not always, answered
correctly), some words have case variants placed before or after them in the
vocabulary, one word is an exact duplicate of another (exact score ties) and
one word has a zero vector (NaN scores in gensim).
"""

import doctest
import gzip
import os
import warnings

import numpy as np
import pytest

from bidirmoe.keyedvectors import KeyedVectors
import bidirmoe.keyedvectors as kv_module

N_WORDS = 2000
DIM = 50
N_SECTIONS = 4
N_PAIRS = 12


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

def _build_vocabulary(seed=1234):
    rng = np.random.default_rng(seed)
    words, vecs = [], []

    def add(word, vec):
        words.append(word)
        vecs.append(np.asarray(vec, dtype=np.float32))

    offsets = [rng.standard_normal(DIM) * 1.2 for _ in range(N_SECTIONS)]
    structured = []
    for s in range(N_SECTIONS):
        for i in range(N_PAIRS):
            base = rng.standard_normal(DIM)
            target = base + offsets[s] + rng.standard_normal(DIM) * 1.4
            structured.append((f"a{s}_{i}", base))
            structured.append((f"b{s}_{i}", target))
    fillers = [(f"w{i}", rng.standard_normal(DIM)) for i in range(N_WORDS - len(structured) - 15)]
    entries = structured + fillers
    order = rng.permutation(len(entries))
    entries = [entries[i] for i in order]
    for word, vec in entries:
        add(word, vec)
    # case variants: 'A0_1' before 'a0_1' (so case-insensitive lookups use it), 'B1_2' after 'b1_2'
    pos = words.index('a0_1')
    words.insert(pos, 'A0_1')
    vecs.insert(pos, rng.standard_normal(DIM).astype(np.float32))
    pos = words.index('b1_2')
    words.insert(pos + 1, 'B1_2')
    vecs.insert(pos + 1, rng.standard_normal(DIM).astype(np.float32))
    # near-copies of 'b0_5' (an input of some questions) and 'b0_6' (an answer), placed after them:
    # case-insensitively they upper-case to an input / the expected word
    for word in ('b0_5', 'b0_6'):
        pos = words.index(word)
        words.insert(pos + 1, word.upper())
        vecs.insert(pos + 1, (vecs[pos] + rng.standard_normal(DIM) * 0.01).astype(np.float32))
    # 'tom' followed by four near-copies that upper-case to 'TOM': they fill gensim's top-5
    # list with ignored (input) words, so the prediction becomes the 5th listed key
    add('tom', rng.standard_normal(DIM))
    for variant in ('Tom', 'TOM', 'tOm', 'toM'):
        add(variant, vecs[words.index('tom')] + rng.standard_normal(DIM).astype(np.float32) * 0.01)
    add('sue', rng.standard_normal(DIM))
    add('ann', rng.standard_normal(DIM))
    # mixed case word whose only form differs from the analogy file
    add('MiXeD', rng.standard_normal(DIM))
    # exact duplicate of an answer word: exact score ties
    add('dup_b2_3', vecs[words.index('b2_3')].copy())
    # zero vector: NaN similarities in gensim
    add('zero', np.zeros(DIM))
    add('Paris', rng.standard_normal(DIM))
    assert len(words) == len(set(words)) == N_WORDS
    return words, np.vstack(vecs).astype(np.float32)


def _write_analogies(path):
    lines = []
    rng = np.random.default_rng(7)
    for s in range(N_SECTIONS):
        lines.append(f": section-{s}" if s != 2 else ":   spaced section  ")
        for i in range(N_PAIRS):
            for j in rng.choice(N_PAIRS, size=6, replace=False):
                if i == j:
                    continue
                a, b, c, d = f"a{s}_{i}", f"b{s}_{i}", f"a{s}_{j}", f"b{s}_{j}"
                if (i + j) % 5 == 0:
                    a, b, c, d = a.upper(), b.upper(), c.upper(), d.upper()
                lines.append(f"{a} {b} {c} {d}")
    lines.append(": specials")
    lines.extend([
        "a0_1 b0_1 a0_2 b0_2",       # uses the case variant 'A0_1' when case-insensitive
        "a1_2 b1_2 a1_3 b1_3",       # 'B1_2' comes after 'b1_2': the first occurrence wins
        "a2_1 b2_1 a2_2 b2_3",
        "a0_4 b0_4 a0_5 b0_5",       # 'B0_6'/'B0_5' near-copies compete with the answer / inputs
        "a0_5 b0_5 a0_6 b0_6",
        "a0_6 b0_6 a0_5 b0_5",
        "a0_7 b0_7 a0_6 b0_6",
        "a0_6 b0_6 a0_7 b0_7",
        "sue tom ann tom",           # expected == an input; the top-5 list is mostly 'tom' variants
        "sue tom ann ann",
        "ann sue tom tom",
        "tom sue tom Tom",
        "a2_4 b2_4 a2_5 b2_3",       # answer with an exact duplicate vector
        "a2_3 b2_3 a2_6 dup_b2_3",
        "unknownword b0_1 a0_2 b0_2",  # OOV
        "a0_3 b0_3 a0_4",            # invalid: three words
        "",                          # invalid: empty
        "a0_3 b0_3 a0_4 b0_4 extra",  # invalid: five words
        "mixed paris a0_1 b0_1",     # only case-insensitively known
        "a3_1 a3_1 b3_1 b3_1",       # repeated inputs
        "a3_2 b3_2 a3_3 a3_2",       # expected answer is an input word
        "zero b3_2 a3_3 b3_3",       # zero vector in the question
        "w1 w2 w3 w4",
        "w10 w20 w30 w40",
    ])
    lines.append(": empty-section")
    lines.append(": last")
    for i in range(1, 6):
        lines.append(f"a3_0 b3_0 a3_{i} b3_{i}")
    with open(path, 'w', encoding='utf8') as fout:
        fout.write("\n".join(lines) + "\n")


def _write_pairs(path, words, rng):
    with open(path, 'w', encoding='utf8') as fout:
        fout.write("# word1\tword2\tscore\n")
        for _ in range(150):
            a, b = rng.choice(len(words), size=2, replace=False)
            fout.write(f"{words[a]}\t{words[b]}\t{rng.uniform(0, 10):.2f}\n")
        fout.write("A0_1\tparis\t3.5\n")
        fout.write("oovword\tw1\t2.0\n")
        fout.write("bad line without tabs\n")
        fout.write("w1\tw2\tnot-a-number\n")
        fout.write("\n")


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    words, vectors = _build_vocabulary()
    root = tmp_path_factory.mktemp('kvdata')
    analogies = str(root / 'analogies.txt')
    _write_analogies(analogies)
    pairs = str(root / 'pairs.tsv')
    _write_pairs(pairs, words, np.random.default_rng(3))
    return {'words': words, 'vectors': vectors, 'analogies': analogies, 'pairs': pairs, 'root': root}


@pytest.fixture()
def ours(data):
    kv = KeyedVectors(DIM)
    kv.add_vectors(list(data['words']), data['vectors'].copy())
    return kv


@pytest.fixture()
def theirs(data):
    gensim_models = pytest.importorskip("gensim.models")
    kv = gensim_models.KeyedVectors(DIM)
    kv.add_vectors(list(data['words']), data['vectors'].copy())
    return kv


@pytest.fixture(autouse=True)
def _quiet_numpy():
    with np.errstate(divide='ignore', invalid='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        yield


def assert_same_sims(a, b, rtol=1e-5, atol=1e-6):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        return
    assert [k for k, _ in a] == [k for k, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# basic API
# ---------------------------------------------------------------------------

def test_lookup_api(ours, data):
    words = data['words']
    assert len(ours) == N_WORDS
    assert ours.index_to_key == words
    assert ours.key_to_index == {w: i for i, w in enumerate(words)}
    assert ours.vectors.dtype == np.float32 and ours.vectors.shape == (N_WORDS, DIM)
    assert 'a0_1' in ours and 'nope' not in ours
    assert 5 in ours and N_WORDS not in ours  # integer keys double as row indices, like gensim
    assert ours.get_index('b0_1') == words.index('b0_1')
    assert ours.get_index('nope', default=-1) == -1
    with pytest.raises(KeyError):
        ours.get_index('nope')
    with pytest.raises(KeyError):
        ours['nope']
    np.testing.assert_array_equal(ours['w3'], data['vectors'][words.index('w3')])
    assert ours[['w3', 'w4']].shape == (2, DIM)
    assert not ours.get_vector('w3').flags.writeable
    v = ours.get_vector('w3', norm=True)
    assert abs(np.linalg.norm(v) - 1) < 1e-6
    assert ours.has_index_for('w3') and not ours.has_index_for('nope')


def test_lookup_matches_gensim(ours, theirs, data):
    assert ours.index_to_key == theirs.index_to_key
    assert ours.key_to_index == theirs.key_to_index
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    ours.fill_norms()
    theirs.fill_norms()
    np.testing.assert_array_equal(ours.norms, theirs.norms)
    np.testing.assert_array_equal(ours.get_normed_vectors(), theirs.get_normed_vectors())
    for key in ['a0_1', 'zero', 7]:
        np.testing.assert_array_equal(ours.get_vector(key, norm=True), theirs.get_vector(key, norm=True))
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert ours.get_index(3) == theirs.get_index(3)
    for key in ['w1', 'nope', 10, 10 ** 6]:
        assert (key in ours) == (key in theirs)


def test_vecattr_and_counts(ours, theirs):
    for kv in (ours, theirs):
        kv.set_vecattr('w1', 'count', 17)
        kv.set_vecattr('w2', 'count', 3)
    assert int(ours.get_vecattr('w1', 'count')) == int(theirs.get_vecattr('w1', 'count')) == 17
    np.testing.assert_array_equal(ours.expandos['count'], theirs.expandos['count'])
    assert ours.expandos['count'].dtype == theirs.expandos['count'].dtype


def test_add_vectors_matches_gensim(ours, theirs, data):
    rng = np.random.default_rng(5)
    new = rng.standard_normal((3, DIM)).astype(np.float32)
    keys = ['new1', 'w5', 'new2']
    ours.add_vectors(keys, new)
    theirs.add_vectors(keys, new)
    assert ours.index_to_key == theirs.index_to_key
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    ours.add_vectors(keys, new * 2, replace=True)
    theirs.add_vectors(keys, new * 2, replace=True)
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    ours['single'] = new[0]
    theirs['single'] = new[0]
    assert ours.index_to_key == theirs.index_to_key
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    theirs.fill_norms(force=True)
    assert_same_sims(ours.most_similar('new1'), theirs.most_similar('new1'))


def test_add_vectors_extras_and_counts():
    kv = KeyedVectors(2)
    kv.add_vectors(['a', 'b'], np.eye(2, dtype=np.float32), extras={'count': np.array([5, 7])})
    kv.add_vectors(['c'], np.ones((1, 2), dtype=np.float32))  # other attributes grow with the vocabulary
    assert kv.expandos['count'].tolist() == [5, 7, 0]
    kv.add_vectors(['a', 'd'], np.full((2, 2), 3, dtype=np.float32), extras={'count': np.array([9, 1])},
                   replace=True)
    assert kv.index_to_key == ['a', 'b', 'c', 'd']
    assert kv.expandos['count'].tolist() == [9, 7, 0, 1]
    assert kv['a'].tolist() == [3.0, 3.0]
    kv.fill_norms()
    kv.add_vectors(['e'], np.ones((1, 2), dtype=np.float32))
    assert kv.most_similar('e', topn=1)[0][0] in ('a', 'c', 'd')  # norms were refreshed


def test_vectors_for_all_and_resize_match_gensim(ours, theirs):
    keys = ['w5', 'nope', 'a0_1', 'w5', 'zero']
    mine, ref = ours.vectors_for_all(keys), theirs.vectors_for_all(keys)
    assert mine.index_to_key == ref.index_to_key
    np.testing.assert_array_equal(mine.vectors, ref.vectors)
    np.testing.assert_array_equal(mine.expandos['count'], ref.expandos['count'])
    for kv in (mine, ref):
        kv.index_to_key = kv.index_to_key + ['extra1', 'extra2']
        kv.key_to_index.update({'extra1': 3, 'extra2': 4})
        kv.resize_vectors(seed=3)
    np.testing.assert_array_equal(mine.vectors, ref.vectors)


def test_add_vector_preallocated():
    kv = KeyedVectors(3, count=2)
    assert kv.add_vector('x', np.ones(3)) == 0
    assert kv.add_vector('y', np.arange(3)) == 1
    with pytest.warns(UserWarning):
        assert kv.add_vector('z', np.ones(3)) == 2
    assert kv.index_to_key == ['x', 'y', 'z']
    np.testing.assert_array_equal(kv['y'], [0, 1, 2])


# ---------------------------------------------------------------------------
# similarity queries
# ---------------------------------------------------------------------------

QUERIES = [
    dict(positive='a0_1'),
    dict(positive=['a0_1']),
    dict(positive=['a0_1', 'b0_2'], negative=['a0_2']),
    dict(positive=['a0_1', 'b0_2'], negative='a0_2', topn=3),
    dict(positive=[('a0_1', 0.5), ('b0_3', 2.0)], negative=[('w5', -0.7)]),
    dict(positive=['w1', 'w2', 'w3', 'w4', 'w5', 'w6'], negative=['w7', 'w8'], topn=25),
    dict(positive=['b2_3']),  # exact tie with dup_b2_3
    dict(positive=['w9'], topn=1),
    dict(positive=['w9'], topn=N_WORDS + 5),
    dict(positive=['w9'], topn=0),
    dict(positive=['w9'], topn=None),
    dict(positive=['w9', 'w10'], negative=['w11'], topn=None),
    dict(positive=['w9'], restrict_vocab=500),
    dict(positive=['w9'], restrict_vocab=500, topn=None),
    dict(positive=['w9'], clip_start=100, clip_end=900),
    dict(positive=['w9'], clip_end=300, topn=7),
    dict(positive=[3, 'w9']),
]


@pytest.mark.parametrize('query', QUERIES, ids=[str(i) for i in range(len(QUERIES))])
def test_most_similar_matches_gensim(ours, theirs, query):
    assert_same_sims(ours.most_similar(**query), theirs.most_similar(**query))


def test_most_similar_vectors(ours, theirs, data):
    vec = data['vectors'][10] * 3 - data['vectors'][20]
    assert_same_sims(ours.most_similar(positive=vec), theirs.most_similar(positive=vec))
    assert_same_sims(ours.most_similar(positive=[vec, 'w3'], negative=['w4']),
                     theirs.most_similar(positive=[vec, 'w3'], negative=['w4']))
    mat = data['vectors'][[1, 2]]
    assert_same_sims(ours.most_similar(positive=mat), theirs.most_similar(positive=mat))


def test_most_similar_errors(ours, theirs):
    for kv in (ours, theirs):
        with pytest.raises(KeyError):
            kv.most_similar(positive=['w1', 'missing'])
        with pytest.raises(ValueError):
            kv.most_similar(positive=[])


@pytest.mark.parametrize('query', [
    dict(positive=['a0_1', 'b0_2'], negative=['a0_2']),
    dict(positive=['w1']),
    dict(positive=['w1', 'w2'], negative=['w3', 'w4'], topn=20),
    dict(positive=['w1'], topn=None),
])
def test_most_similar_cosmul_matches_gensim(ours, theirs, query):
    assert_same_sims(ours.most_similar_cosmul(**query), theirs.most_similar_cosmul(**query))


def test_similar_by(ours, theirs, data):
    assert_same_sims(ours.similar_by_word('b1_1', topn=15), theirs.similar_by_word('b1_1', topn=15))
    assert_same_sims(ours.similar_by_key('b1_1', restrict_vocab=300), theirs.similar_by_key('b1_1', restrict_vocab=300))
    vec = data['vectors'][42]
    assert_same_sims(ours.similar_by_vector(vec, topn=12), theirs.similar_by_vector(vec, topn=12))
    assert_same_sims(ours.similar_by_vector(vec, topn=None), theirs.similar_by_vector(vec, topn=None))


def test_pairwise_metrics_match_gensim(ours, theirs, data):
    pairs = [('a0_1', 'b0_1'), ('w1', 'w2'), ('b2_3', 'dup_b2_3'), ('A0_1', 'Paris')]
    for a, b in pairs:
        assert ours.similarity(a, b) == pytest.approx(theirs.similarity(a, b), rel=1e-6, abs=1e-7)
        assert ours.distance(a, b) == pytest.approx(theirs.distance(a, b), rel=1e-6, abs=1e-7)
    assert ours.n_similarity(['w1', 'w2'], ['w3', 'a0_1']) == pytest.approx(
        theirs.n_similarity(['w1', 'w2'], ['w3', 'a0_1']), rel=1e-6)
    with pytest.raises(ZeroDivisionError):
        ours.n_similarity([], ['w1'])
    np.testing.assert_allclose(ours.distances('w1'), theirs.distances('w1'), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.distances('w1', ['w2', 'w3', 'a0_1']),
                               theirs.distances('w1', ['w2', 'w3', 'a0_1']), rtol=1e-6, atol=1e-7)
    vec = data['vectors'][3]
    np.testing.assert_allclose(ours.distances(vec, ['w2']), theirs.distances(vec, ['w2']), rtol=1e-6)
    np.testing.assert_allclose(
        KeyedVectors.cosine_similarities(vec, data['vectors'][:50]),
        type(theirs).cosine_similarities(vec, data['vectors'][:50]), rtol=1e-6, atol=1e-7)
    group = ['a0_1', 'a0_2', 'a0_3', 'b3_4', 'w77']
    assert ours.doesnt_match(group) == theirs.doesnt_match(group)
    assert [w for _, w in ours.rank_by_centrality(group)] == [w for _, w in theirs.rank_by_centrality(group)]
    np.testing.assert_allclose([s for s, _ in ours.rank_by_centrality(group)],
                               [s for s, _ in theirs.rank_by_centrality(group)], rtol=1e-6)
    for a, b in [('w1', 'w2'), ('b2_3', 'a2_3'), ('a0_1', 'w500')]:
        assert ours.rank(a, b) == theirs.rank(a, b)
        assert ours.closer_than(a, b) == theirs.closer_than(a, b)
        with pytest.warns(DeprecationWarning):
            assert ours.words_closer_than(a, b) == theirs.closer_than(a, b)
    assert ours.most_similar_to_given('a1_1', ['w1', 'b1_1', 'w2']) == \
        theirs.most_similar_to_given('a1_1', ['w1', 'b1_1', 'w2'])
    assert ours.relative_cosine_similarity('a1_1', 'b1_1') == pytest.approx(
        theirs.relative_cosine_similarity('a1_1', 'b1_1'), rel=1e-5)


@pytest.mark.parametrize('kwargs', [
    dict(), dict(pre_normalize=False), dict(post_normalize=True), dict(weights=[1.0, -2.0, 0.5]),
    dict(weights=np.array([0.3, 0.3, 0.4], dtype=np.float32), post_normalize=True),
])
def test_get_mean_vector_matches_gensim(ours, theirs, kwargs):
    keys = ['w1', 'a2_2', 'missing']
    np.testing.assert_allclose(ours.get_mean_vector(keys, **kwargs), theirs.get_mean_vector(keys, **kwargs),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(KeyError):
        ours.get_mean_vector(keys, ignore_missing=False)


def test_most_similar_batch(ours, theirs):
    queries = ['a0_1', {'positive': ['a0_1', 'b0_2'], 'negative': ['a0_2']}, ['w1', 'w2'],
               {'positive': [('w3', 2.0)], 'negative': ['w4']}, 'b2_3', {'positive': 'zero'}] + \
              [{'positive': [f'b{s}_{i}', f'a{s}_{(i + 1) % N_PAIRS}'], 'negative': [f'a{s}_{i}']}
               for s in range(N_SECTIONS) for i in range(N_PAIRS)]
    for kwargs, buffer_bytes in [(dict(topn=10), 10 ** 8), (dict(topn=3, restrict_vocab=700), 10 ** 8),
                                 (dict(topn=5, clip_start=50, clip_end=1500), 10 ** 8), (dict(topn=12), 3000)]:
        ours.batch_buffer_bytes = buffer_bytes
        batched = ours.most_similar_batch(queries, batch_size=16, **kwargs)
        assert ours._batch_stats['exact_fallbacks'] < len(queries)  # the batched path is really used
        for query, result in zip(queries, batched):
            spec = query if isinstance(query, dict) else {'positive': query}
            assert_same_sims(result, ours.most_similar(**spec, **kwargs))
            assert_same_sims(result, theirs.most_similar(**spec, **kwargs))
    full = ours.most_similar_batch(['w1', 'w2'], topn=None)
    assert_same_sims(full[1], theirs.most_similar('w2', topn=None))
    assert ours.most_similar_batch(['w1'], topn=0) == [[]]


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------

def assert_same_analogy_result(ours_result, theirs_result):
    score, sections = ours_result
    g_score, g_sections = theirs_result
    assert score == g_score
    assert [s['section'] for s in sections] == [s['section'] for s in g_sections]
    for sec, g_sec in zip(sections, g_sections):
        assert sec['correct'] == g_sec['correct'], sec['section']
        assert sec['incorrect'] == g_sec['incorrect'], sec['section']
        assert set(sec) == set(g_sec)


ANALOGY_VARIANTS = [
    dict(),
    dict(restrict_vocab=1500),
    dict(case_insensitive=False),
    dict(restrict_vocab=1200, case_insensitive=False, dummy4unknown=True),
    dict(restrict_vocab=None, dummy4unknown=True),
    dict(restrict_vocab=5),
]


@pytest.mark.parametrize('kwargs', ANALOGY_VARIANTS, ids=[str(k) for k in ANALOGY_VARIANTS])
def test_evaluate_word_analogies_matches_gensim(ours, theirs, data, kwargs):
    expected = theirs.evaluate_word_analogies(data['analogies'], **kwargs)
    got = ours.evaluate_word_analogies(data['analogies'], **kwargs)
    assert_same_analogy_result(got, expected)


def test_evaluate_word_analogies_is_meaningful(ours, data):
    score, sections = ours.evaluate_word_analogies(data['analogies'])
    assert 0.2 < score < 0.95
    total = sections[-1]
    assert total['section'] == 'Total accuracy'
    assert len(total['correct']) + len(total['incorrect']) > 200
    assert sections[2]['section'] == 'spaced section'
    assert ours._batch_stats['exact_fallbacks'] < ours._batch_stats['queries'] / 4


@pytest.mark.parametrize('batch_size', [1, 7, 64, 100000])
def test_evaluate_word_analogies_block_sizes(ours, theirs, data, batch_size):
    expected = theirs.evaluate_word_analogies(data['analogies'])
    assert_same_analogy_result(ours.evaluate_word_analogies(data['analogies'], batch_size=batch_size), expected)


@pytest.mark.parametrize('buffer_bytes', [1, 5000, 200000])
def test_evaluate_word_analogies_column_chunks(ours, theirs, data, buffer_bytes):
    """Small score buffers split the vocabulary into several column chunks per block."""
    ours.batch_buffer_bytes = buffer_bytes
    expected = theirs.evaluate_word_analogies(data['analogies'], case_insensitive=False)
    got = ours.evaluate_word_analogies(data['analogies'], case_insensitive=False, batch_size=50)
    assert_same_analogy_result(got, expected)
    assert ours._batch_stats['exact_fallbacks'] < ours._batch_stats['queries'] / 4


def test_evaluate_word_analogies_exact_path_agrees(ours, data):
    batched = ours.evaluate_word_analogies(data['analogies'])
    n_batched_fallbacks = ours._batch_stats['exact_fallbacks']
    ours.batch_gap_safety = 1e9  # every question falls back to the one-at-a-time computation
    exact = ours.evaluate_word_analogies(data['analogies'])
    assert ours._batch_stats['exact_fallbacks'] == ours._batch_stats['queries'] > n_batched_fallbacks
    assert_same_analogy_result(batched, exact)


def test_evaluate_word_analogies_gzip_and_errors(ours, theirs, data, tmp_path):
    gz = tmp_path / 'analogies.txt.gz'
    with open(data['analogies'], 'rb') as fin, gzip.open(gz, 'wb') as fout:
        fout.write(fin.read())
    assert_same_analogy_result(ours.evaluate_word_analogies(str(gz)),
                               theirs.evaluate_word_analogies(str(gz)))
    bad = tmp_path / 'no_header.txt'
    bad.write_text("a0_1 b0_1 a0_2 b0_2\n")
    for kv in (ours, theirs):
        with pytest.raises(ValueError, match='Missing section header'):
            kv.evaluate_word_analogies(str(bad))


def _reference_analogies(kv, path, restrict_vocab=300000, case_insensitive=True, dummy4unknown=False):
    """Direct transcription of gensim 4's one-question-at-a-time algorithm (no gensim needed)."""
    ok_keys = kv.index_to_key[:restrict_vocab]
    ok_vocab = {(k.upper() if case_insensitive else k): kv.get_index(k) for k in reversed(ok_keys)}
    vectors = kv.vectors
    norms = np.linalg.norm(vectors, axis=1)
    sections, section = [], None
    for line in open(path, 'rb'):
        line = line.decode('utf8')
        if line.startswith(': '):
            if section:
                sections.append(section)
            section = {'section': line.lstrip(': ').strip(), 'correct': [], 'incorrect': []}
            continue
        words = [w.upper() if case_insensitive else w for w in line.split()]
        if len(words) != 4:
            continue
        a, b, c, expected = words
        if not all(w in ok_vocab for w in words):
            if dummy4unknown:
                section['incorrect'].append((a, b, c, expected))
            continue
        mean = np.zeros(vectors.shape[1], dtype=vectors.dtype)
        for weight, word in zip(np.concatenate((np.ones(2), -np.ones(1))), (b, c, a)):
            mean += weight * (vectors[ok_vocab[word]] / norms[ok_vocab[word]])
        mean = mean / np.float64(3.0)
        mean = (mean.astype(np.float64) / np.sqrt(np.dot(mean.astype(np.float64), mean))).astype(np.float32)
        limit = restrict_vocab if restrict_vocab else len(vectors)
        dists = np.dot(vectors[:limit], mean) / norms[:limit]
        inputs = [ok_vocab[b], ok_vocab[c], ok_vocab[a]]
        x = -dists
        if 8 >= x.size:
            best = np.argsort(x)[:8]
        else:
            part = np.argpartition(x, 8)[:8]
            best = part.take(np.argsort(x.take(part)))
        sims = [kv.index_to_key[i] for i in best if i not in inputs][:5]
        predicted = None
        for key in sims:
            predicted = key.upper() if case_insensitive else key
            if predicted in ok_vocab and predicted not in {a, b, c}:
                break
        section['correct' if predicted == expected else 'incorrect'].append((a, b, c, expected))
    sections.append(section)
    total = {'section': 'Total accuracy',
             'correct': [q for s in sections for q in s['correct']],
             'incorrect': [q for s in sections for q in s['incorrect']]}
    n = len(total['correct']) + len(total['incorrect'])
    return (len(total['correct']) / n if n else 0.0), sections + [total]


@pytest.mark.parametrize('kwargs', ANALOGY_VARIANTS, ids=[str(k) for k in ANALOGY_VARIANTS])
def test_evaluate_word_analogies_matches_reference(ours, data, kwargs):
    """Same check as against gensim, but against a transcription of its algorithm (runs without gensim)."""
    assert_same_analogy_result(ours.evaluate_word_analogies(data['analogies'], **kwargs),
                               _reference_analogies(ours, data['analogies'], **kwargs))


@pytest.mark.parametrize('binary', [False, True])
@pytest.mark.parametrize('suffix', ['', '.gz', '.bz2', '.xz'])
def test_word2vec_round_trip(ours, tmp_path, binary, suffix):
    path = str(tmp_path / f'vectors{suffix}')
    ours.save_word2vec_format(path, binary=binary)
    loaded = KeyedVectors.load_word2vec_format(path, binary=binary)
    assert loaded.index_to_key == ours.index_to_key
    np.testing.assert_array_equal(loaded.vectors, ours.vectors)
    assert loaded.expandos['count'].tolist() == list(range(len(ours), 0, -1))
    if suffix:
        with open(path, 'rb') as fin:
            assert fin.read(3) != b'200'  # really compressed
    assert sorted(p.name for p in tmp_path.iterdir()) == [os.path.basename(path)]


PAIR_VARIANTS = [
    dict(), dict(case_insensitive=False), dict(dummy4unknown=True), dict(restrict_vocab=800),
]


@pytest.mark.parametrize('kwargs', PAIR_VARIANTS, ids=[str(k) for k in PAIR_VARIANTS])
def test_evaluate_word_pairs_matches_gensim(ours, theirs, data, kwargs):
    pearson, spearman, oov = ours.evaluate_word_pairs(data['pairs'], **kwargs)
    g_pearson, g_spearman, g_oov = theirs.evaluate_word_pairs(data['pairs'], **kwargs)
    np.testing.assert_allclose([pearson[0], pearson[1]], [g_pearson[0], g_pearson[1]], rtol=1e-6)
    np.testing.assert_allclose([spearman[0], spearman[1]], [g_spearman[0], g_spearman[1]], rtol=1e-6)
    assert oov == g_oov


def test_evaluate_word_pairs_without_scipy(ours, data, monkeypatch):
    import sys
    stats = pytest.importorskip('scipy.stats')
    expected = ours.evaluate_word_pairs(data['pairs'])
    monkeypatch.setitem(sys.modules, 'scipy', None)
    pearson, spearman, oov = ours.evaluate_word_pairs(data['pairs'])
    np.testing.assert_allclose(pearson[0], expected[0][0], rtol=1e-9)
    np.testing.assert_allclose(pearson[1], expected[0][1], rtol=1e-6)
    np.testing.assert_allclose(spearman[0], expected[1][0], rtol=1e-9)
    np.testing.assert_allclose(spearman[1], expected[1][1], rtol=1e-6)
    assert oov == expected[2]
    assert stats is not None


# ---------------------------------------------------------------------------
# word2vec C format
# ---------------------------------------------------------------------------

def _gensim_kv_class():
    return pytest.importorskip("gensim.models").KeyedVectors


@pytest.mark.parametrize('binary', [False, True])
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_word2vec_ours_to_gensim(ours, data, tmp_path, binary, suffix):
    GKV = _gensim_kv_class()
    path = str(tmp_path / f'vectors{".bin" if binary else ".txt"}{suffix}')
    ours.save_word2vec_format(path, binary=binary)
    loaded = GKV.load_word2vec_format(path, binary=binary)
    assert loaded.index_to_key == ours.index_to_key
    np.testing.assert_array_equal(loaded.vectors, ours.vectors)
    again = KeyedVectors.load_word2vec_format(path, binary=binary)
    np.testing.assert_array_equal(again.vectors, ours.vectors)
    np.testing.assert_array_equal(again.expandos['count'], loaded.expandos['count'])


@pytest.mark.parametrize('binary', [False, True])
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_word2vec_gensim_to_ours(theirs, tmp_path, binary, suffix):
    GKV = _gensim_kv_class()
    path = str(tmp_path / f'vectors{suffix}')
    theirs.save_word2vec_format(path, binary=binary)
    loaded = KeyedVectors.load_word2vec_format(path, binary=binary)
    reference = GKV.load_word2vec_format(path, binary=binary)
    assert loaded.index_to_key == reference.index_to_key == theirs.index_to_key
    np.testing.assert_array_equal(loaded.vectors, reference.vectors)
    np.testing.assert_array_equal(loaded.expandos['count'], reference.expandos['count'])
    for kwargs in [dict(limit=17), dict(datatype=np.float64), dict(datatype=np.float16, limit=5)]:
        ours_l = KeyedVectors.load_word2vec_format(path, binary=binary, **kwargs)
        ref_l = GKV.load_word2vec_format(path, binary=binary, **kwargs)
        assert ours_l.index_to_key == ref_l.index_to_key
        assert ours_l.vectors.dtype == ref_l.vectors.dtype
        np.testing.assert_array_equal(ours_l.vectors, ref_l.vectors)


@pytest.mark.parametrize('binary', [False, True])
def test_word2vec_files_byte_identical(tmp_path, data, binary):
    """Loaded from the same file (so both have 'count'), both libraries write identical bytes."""
    GKV = _gensim_kv_class()
    src = str(tmp_path / 'src.bin')
    KeyedVectors_from = KeyedVectors(DIM)
    KeyedVectors_from.add_vectors(list(data['words']), data['vectors'])
    KeyedVectors_from.save_word2vec_format(src, binary=True)
    ours = KeyedVectors.load_word2vec_format(src, binary=True)
    theirs = GKV.load_word2vec_format(src, binary=True)
    # shuffle counts so that the 'count' sort order differs from the index order
    counts = np.random.default_rng(0).integers(1, 50, size=len(ours))
    for kv in (ours, theirs):
        for key, count in zip(kv.index_to_key, counts):
            kv.set_vecattr(key, 'count', int(count))
    for kwargs in [dict(), dict(write_header=False), dict(total_vec=12345), dict(prefix='p_')]:
        ours.save_word2vec_format(str(tmp_path / 'o'), binary=binary, fvocab=str(tmp_path / 'ov'), **kwargs)
        theirs.save_word2vec_format(str(tmp_path / 'g'), binary=binary, fvocab=str(tmp_path / 'gv'), **kwargs)
        assert (tmp_path / 'o').read_bytes() == (tmp_path / 'g').read_bytes()
        assert (tmp_path / 'ov').read_bytes() == (tmp_path / 'gv').read_bytes()
    # without a 'count' attribute: index order
    plain = KeyedVectors(DIM)
    plain.add_vectors(list(data['words']), data['vectors'])
    plain_g = GKV(DIM)
    plain_g.add_vectors(list(data['words']), data['vectors'])
    plain.save_word2vec_format(str(tmp_path / 'o'), binary=binary)
    plain_g.save_word2vec_format(str(tmp_path / 'g'), binary=binary)
    assert (tmp_path / 'o').read_bytes() == (tmp_path / 'g').read_bytes()
    with pytest.raises(ValueError):
        plain.save_word2vec_format(str(tmp_path / 'o'), fvocab=str(tmp_path / 'ov'))


def test_word2vec_fvocab_and_no_header(ours, data, tmp_path):
    GKV = _gensim_kv_class()
    vec_path, vocab_path = str(tmp_path / 'v.txt'), str(tmp_path / 'vocab.txt')
    with open(vocab_path, 'w', encoding='utf8') as fout:
        for i, w in enumerate(data['words']):
            fout.write(f"{w} {1000 + 7 * (i % 13)}\n")
    ours.save_word2vec_format(vec_path)
    loaded = KeyedVectors.load_word2vec_format(vec_path, fvocab=vocab_path)
    reference = GKV.load_word2vec_format(vec_path, fvocab=vocab_path)
    np.testing.assert_array_equal(loaded.expandos['count'], reference.expandos['count'])
    nh_path = str(tmp_path / 'noheader.txt')
    ours.save_word2vec_format(nh_path, write_header=False)
    for kwargs in [dict(), dict(limit=33)]:
        loaded = KeyedVectors.load_word2vec_format(nh_path, no_header=True, **kwargs)
        reference = GKV.load_word2vec_format(nh_path, no_header=True, **kwargs)
        assert loaded.index_to_key == reference.index_to_key
        np.testing.assert_array_equal(loaded.vectors, reference.vectors)


def test_word2vec_c_tool_binary_layout(tmp_path):
    """The C tool writes a newline after every binary vector and a trailing space in text lines."""
    GKV = _gensim_kv_class()
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((4, 5)).astype(np.float32)
    words = ['</s>', 'the', 'naïve', 'x']
    bin_path = tmp_path / 'c.bin'
    with open(bin_path, 'wb') as fout:
        fout.write(b"4 5\n")
        for w, v in zip(words, vecs):
            fout.write(w.encode('utf8') + b' ' + v.tobytes() + b'\n')
    txt_path = tmp_path / 'c.txt'
    with open(txt_path, 'w', encoding='utf8') as fout:
        fout.write("4 5\n")
        for w, v in zip(words, vecs):
            fout.write(w + ' ' + ''.join(f'{x:.6f} ' for x in v) + '\n')
    for path, binary in [(bin_path, True), (txt_path, False)]:
        ours = KeyedVectors.load_word2vec_format(str(path), binary=binary)
        theirs = GKV.load_word2vec_format(str(path), binary=binary)
        assert ours.index_to_key == theirs.index_to_key == words
        np.testing.assert_array_equal(ours.vectors, theirs.vectors)


def _write_text(path, content):
    with open(path, 'wb') as fout:
        fout.write(content.encode('utf8'))


@pytest.mark.parametrize('content, line', [
    ("3 2\na 1 2\nb 3 4\n", 4),                   # one vector missing
    ("3 2\na 1 2\nb 3 4\nc 5", 4),               # last line cut short
    ("3 2\na 1 2\nb 3\nc 5 6\n", 3),              # value missing
    ("3 2\na 1 2\nb 3 4 5\nc 5 6\n", 3),          # extra value
    ("3 2\na 1 2\nb 3 x\nc 5 6\n", 3),            # not a number
    ("3 2\na 1  2\nb 3 4\nc 5 6\n", 2),           # double space (gensim splits on single spaces)
    ("three 2\na 1 2\n", 1),                      # bad header
    ("3\na 1 2\n", 1),                            # header too short
    ("", 1),                                      # empty file
])
def test_text_malformed_raises_with_line(tmp_path, content, line):
    path = str(tmp_path / 'bad.txt')
    _write_text(path, content)
    with pytest.raises(ValueError, match=rf"line {line}\b"):
        KeyedVectors.load_word2vec_format(path)


def test_text_truncated_gzip(tmp_path, ours):
    path = str(tmp_path / 'v.txt.gz')
    ours.save_word2vec_format(path)
    raw = open(path, 'rb').read()
    cut = str(tmp_path / 'cut.txt.gz')
    with open(cut, 'wb') as fout:
        fout.write(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"line \d+"):
        KeyedVectors.load_word2vec_format(cut)


def _binary_file(words, vecs):
    out = [f"{len(words)} {vecs.shape[1]}\n".encode()]
    for w, v in zip(words, vecs):
        out.append(w.encode('utf8') + b' ' + v.astype(np.float32).tobytes())
    return b''.join(out)


def test_binary_truncated_raises_with_offset(tmp_path):
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = _binary_file(['aa', 'bbb', 'c'], vecs)
    header = len(b"3 4\n")
    third_word_at = header + (3 + 16) + (4 + 16)
    # cut inside the third vector
    path = str(tmp_path / 'cut.bin')
    with open(path, 'wb') as fout:
        fout.write(blob[:-5])
    with pytest.raises(ValueError, match=rf"byte offset {third_word_at}\b"):
        KeyedVectors.load_word2vec_format(path, binary=True)
    # cut right after the second vector
    with open(path, 'wb') as fout:
        fout.write(blob[:third_word_at])
    with pytest.raises(ValueError, match=rf"byte offset {third_word_at}\b"):
        KeyedVectors.load_word2vec_format(path, binary=True)
    # the complete file loads
    with open(path, 'wb') as fout:
        fout.write(blob)
    kv = KeyedVectors.load_word2vec_format(path, binary=True)
    np.testing.assert_array_equal(kv.vectors, vecs)
    # header claims more vectors than present, with a tiny read chunk
    with open(path, 'wb') as fout:
        fout.write(b"4 4\n" + blob[header:])
    with pytest.raises(ValueError, match=r"byte offset \d+"):
        kv_module._load_word2vec_format(KeyedVectors, path, binary=True, binary_chunk_size=7)


def test_binary_malformed_raises_with_offset(tmp_path):
    vecs = np.ones((2, 3), dtype=np.float32)
    blob = bytearray(_binary_file(['ok', 'bad'], vecs))
    second_word_at = len(b"2 3\n") + 3 + 12
    blob[second_word_at] = 0xff  # invalid utf-8 start byte
    path = str(tmp_path / 'bad.bin')
    with open(path, 'wb') as fout:
        fout.write(bytes(blob))
    with pytest.raises(ValueError, match=rf"byte offset {second_word_at}\b"):
        KeyedVectors.load_word2vec_format(path, binary=True)
    kv = KeyedVectors.load_word2vec_format(path, binary=True, unicode_errors='ignore')
    assert kv.index_to_key == ['ok', 'ad']
    with open(path, 'wb') as fout:
        fout.write(b"2 x\n" + bytes(blob[4:]))
    with pytest.raises(ValueError, match=r"line 1"):
        KeyedVectors.load_word2vec_format(path, binary=True)


def test_atomic_write_keeps_old_file_on_failure(ours, tmp_path):
    path = tmp_path / 'vectors.txt'
    ours.save_word2vec_format(str(path))
    before = path.read_bytes()
    mode_before = os.stat(path).st_mode
    broken = KeyedVectors(DIM)
    broken.add_vectors(['fine', 'bad\udc80key'], np.ones((2, DIM), dtype=np.float32))
    with pytest.raises(UnicodeEncodeError):
        broken.save_word2vec_format(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['vectors.txt']
    with pytest.raises(UnicodeEncodeError):
        broken.save_word2vec_format(str(tmp_path / 'new.bin'), binary=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['vectors.txt']
    with pytest.raises(UnicodeEncodeError):
        broken.save_word2vec_format(str(tmp_path / 'new.txt.gz'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['vectors.txt']
    ours.save_word2vec_format(str(path), binary=True)
    assert os.stat(path).st_mode == mode_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['vectors.txt']


# ---------------------------------------------------------------------------
# native format, conversions, docs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('mmap', [None, 'r', 'c'])
def test_native_save_load(ours, tmp_path, mmap):
    ours.set_vecattr('w1', 'count', 99)
    ours.set_vecattr('w1', 'tag', 'hello')
    path = str(tmp_path / 'vectors.kv')
    ours.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['vectors.kv']
    loaded = KeyedVectors.load(path, mmap=mmap)
    assert loaded.index_to_key == ours.index_to_key
    assert loaded.key_to_index == ours.key_to_index
    np.testing.assert_array_equal(loaded.vectors, ours.vectors)
    assert loaded.vectors.dtype == ours.vectors.dtype
    np.testing.assert_array_equal(loaded.expandos['count'], ours.expandos['count'])
    assert loaded.get_vecattr('w1', 'tag') == 'hello'
    if mmap:
        assert isinstance(loaded.vectors, np.memmap)
    if mmap == 'r':
        assert not loaded.vectors.flags.writeable
    assert_same_sims(loaded.most_similar('a0_1'), ours.most_similar('a0_1'))


def test_native_int_keys_and_dtype(tmp_path):
    kv = KeyedVectors(3, dtype=np.float64)
    kv.add_vectors([0, 1, 2], np.arange(9, dtype=np.float64).reshape(3, 3))
    path = str(tmp_path / 'ints.kv')
    kv.save(path)
    loaded = KeyedVectors.load(path, mmap='r')
    assert loaded.index_to_key == [0, 1, 2]
    assert loaded.vectors.dtype == np.float64
    np.testing.assert_array_equal(loaded[1], [3, 4, 5])


def test_native_truncated_or_foreign(ours, tmp_path):
    path = tmp_path / 'vectors.kv'
    ours.save(str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(ValueError, match='truncated'):
        KeyedVectors.load(str(path))
    with pytest.raises(ValueError, match='truncated'):
        KeyedVectors.load(str(path), mmap='r')
    path.write_bytes(raw[:30])
    with pytest.raises(ValueError, match='truncated'):
        KeyedVectors.load(str(path))
    path.write_bytes(b'not a keyedvectors file at all')
    with pytest.raises(ValueError):
        KeyedVectors.load(str(path))


def test_gensim_conversions(ours, theirs):
    GKV = _gensim_kv_class()
    ours.set_vecattr('w1', 'count', 5)
    converted = ours.to_gensim()
    assert isinstance(converted, GKV)
    assert converted.index_to_key == ours.index_to_key
    np.testing.assert_array_equal(converted.vectors, ours.vectors)
    np.testing.assert_array_equal(converted.expandos['count'], ours.expandos['count'])
    assert_same_sims(converted.most_similar('a1_1'), ours.most_similar('a1_1'))
    back = KeyedVectors.from_gensim(theirs)
    assert back.index_to_key == theirs.index_to_key
    np.testing.assert_array_equal(back.vectors, theirs.vectors)
    assert_same_sims(back.most_similar('a1_1'), theirs.most_similar('a1_1'))
    back.vectors[0, 0] += 1  # a copy, not a view
    assert back.vectors[0, 0] != theirs.vectors[0, 0]


def test_sort_by_descending_frequency_matches_gensim(ours, theirs):
    counts = np.random.default_rng(2).integers(0, 30, size=len(ours))
    for kv in (ours, theirs):
        for key, count in zip(list(kv.index_to_key), counts):
            kv.set_vecattr(key, 'count', int(count))
        kv.sort_by_descending_frequency()
    assert ours.index_to_key == theirs.index_to_key
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    theirs.fill_norms(force=True)
    assert_same_sims(ours.most_similar('w3'), theirs.most_similar('w3'))


def test_docstring_examples():
    failures, attempted = doctest.testmod(kv_module, optionflags=doctest.ELLIPSIS)
    assert attempted > 50
    assert failures == 0


def test_every_public_method_documented():
    for name in dir(KeyedVectors):
        if name.startswith('_'):
            continue
        attr = getattr(KeyedVectors, name)
        if callable(attr):
            assert attr.__doc__ and 'Examples' in attr.__doc__, name
