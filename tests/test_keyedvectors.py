"""Tests for :mod:`bidirmoe.keyedvectors`: what it adds to gensim's KeyedVectors, compared with
gensim itself on identical vectors.

The vectors are random but structured: word pairs ``a<s>_<i> -> b<s>_<i>`` share a
per-section offset (so analogy questions are often, but not always, answered
correctly), some words have case variants placed before or after them in the
vocabulary, one word is an exact duplicate of another (exact score ties) and
one word has a zero vector (NaN scores in gensim).
"""

import copy
import doctest
import gzip
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from gensim.models import KeyedVectors as GKV

import bidirmoe.keyedvectors as kv_module
from bidirmoe.keyedvectors import KeyedVectors

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
    kv = GKV(DIM)
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
# a gensim KeyedVectors, in and out of files
# ---------------------------------------------------------------------------

def test_is_a_gensim_keyedvectors(ours):
    assert issubclass(KeyedVectors, GKV)
    assert isinstance(ours, GKV)
    # only what we add or replace is defined here; everything else is gensim's own method
    for name in ('most_similar', 'similarity', 'get_mean_vector', 'add_vectors', 'most_similar_cosmul',
                 'sort_by_descending_frequency', 'vectors_for_all', 'fill_norms'):
        assert name not in vars(KeyedVectors) and getattr(KeyedVectors, name) is getattr(GKV, name)


QUERIES = [
    dict(positive='a0_1'),
    dict(positive=['a0_1', 'b0_2'], negative=['a0_2'], topn=3),
    dict(positive=[('a0_1', 0.5), ('b0_3', 2.0)], negative=[('w5', -0.7)]),
    dict(positive=['b2_3']),  # exact tie with dup_b2_3
    dict(positive=['w9'], restrict_vocab=500),
    dict(positive=['w9'], clip_start=100, clip_end=900),
]


def test_queries_are_gensims(ours, theirs):
    for query in QUERIES:
        assert_same_sims(ours.most_similar(**query), theirs.most_similar(**query), rtol=0, atol=0)
    assert ours.doesnt_match(['a0_1', 'a0_2', 'w77']) == theirs.doesnt_match(['a0_1', 'a0_2', 'w77'])


def test_saved_file_loads_in_gensim_without_bidirmoe(ours, tmp_path):
    ours.set_vecattr('w1', 'count', 7)
    ours.most_similar_batch(['w1', 'w2'])  # leaves our own per-instance attributes behind
    ours.batch_gap_safety = 2.0
    path = str(tmp_path / 'vectors.kv')
    ours.save(path)
    loaded = GKV.load(path)
    assert type(loaded) is GKV
    assert loaded.index_to_key == ours.index_to_key
    np.testing.assert_array_equal(loaded.vectors, ours.vectors)
    np.testing.assert_array_equal(loaded.expandos['count'], ours.expandos['count'])
    assert not {'_batch_stats', 'batch_gap_safety'} & set(vars(loaded))
    # a Python where bidirmoe cannot be imported at all
    script = ("import sys; sys.modules['bidirmoe'] = None\n"
              "from gensim.models import KeyedVectors\n"
              f"kv = KeyedVectors.load({path!r})\n"
              "print(type(kv).__module__, len(kv), kv.most_similar('a0_1', topn=1)[0][0])\n")
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['gensim.models.keyedvectors', str(len(ours)), ours.most_similar('a0_1', topn=1)[0][0]]
    back = KeyedVectors.load(path)
    assert type(back) is KeyedVectors and back.index_to_key == ours.index_to_key
    assert back.batch_gap_safety == 1.0  # our tuning attributes are not part of the file


@pytest.mark.parametrize('mmap', [None, 'r'])
def test_gensim_file_loads_as_ours(theirs, tmp_path, mmap):
    theirs.set_vecattr('w2', 'count', 11)
    path = str(tmp_path / 'gensim.kv')
    theirs.save(path, sep_limit=0)  # vectors in their own .npy file, which mmap maps
    loaded = KeyedVectors.load(path, mmap=mmap)
    assert type(loaded) is KeyedVectors
    assert isinstance(loaded.vectors, np.memmap) == (mmap == 'r')
    np.testing.assert_array_equal(loaded.vectors, theirs.vectors)
    assert int(loaded.get_vecattr('w2', 'count')) == 11
    assert [k for k, _ in loaded.most_similar_batch(['a0_1'])[0]] == [k for k, _ in theirs.most_similar('a0_1')]


def test_load_refuses_other_gensim_objects(tmp_path):
    from gensim.models import Word2Vec as GensimWord2Vec
    model = GensimWord2Vec([['a', 'b', 'c']] * 5, vector_size=4, min_count=1, epochs=1, workers=1)
    path = str(tmp_path / 'w2v.model')
    model.save(path)
    with pytest.raises(TypeError, match='Word2Vec'):
        KeyedVectors.load(path)
    assert KeyedVectors.from_gensim(model).index_to_key == model.wv.index_to_key


def test_pickle_and_copy_keep_our_class(ours):
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert type(clone) is KeyedVectors
        np.testing.assert_array_equal(clone.vectors, ours.vectors)


def test_to_and_from_gensim_copy(ours, theirs):
    ours.set_vecattr('w1', 'count', 5)
    ours.most_similar_batch(['w1'])
    plain = ours.to_gensim()
    assert type(plain) is GKV and '_batch_stats' not in vars(plain)
    np.testing.assert_array_equal(plain.expandos['count'], ours.expandos['count'])
    plain.vectors[0, 0] += 1
    plain.expandos['count'][0] += 1
    assert plain.vectors[0, 0] != ours.vectors[0, 0] and plain.expandos['count'][0] != ours.expandos['count'][0]
    back = KeyedVectors.from_gensim(theirs)
    assert type(back) is KeyedVectors and back.index_to_key == theirs.index_to_key
    back.vectors[0, 0] += 1
    assert back.vectors[0, 0] != theirs.vectors[0, 0]
    with pytest.raises(TypeError):
        KeyedVectors.from_gensim(object())


def test_models_hand_out_our_keyedvectors(tmp_path):
    from bidirmoe import BidirMoE, Word2Vec
    sentences = [['the', 'cat', 'sat', 'on', 'the', 'mat'], ['a', 'dog', 'sat', 'on', 'a', 'log']] * 30
    for model in (Word2Vec(sentences, vector_size=8, min_count=1, epochs=1, workers=1),
                  BidirMoE(sentences, vector_size=8, heads=2, min_count=1, epochs=1, workers=1).train()):
        for kv in (model.wv, getattr(model, 'output_wv', None)):
            if kv is None:
                continue
            assert type(kv) is KeyedVectors
            assert kv.index_to_key[:2] == ['sat', 'on'] or len(kv) == 8
            assert kv.most_similar('cat', topn=2) == kv.to_gensim().most_similar('cat', topn=2)
            assert int(kv.get_vecattr('sat', 'count')) == 60
        path = str(tmp_path / f'{type(model).__name__}.kv')
        model.wv.save(path)
        assert GKV.load(path).index_to_key == model.wv.index_to_key


# ---------------------------------------------------------------------------
# batched most_similar
# ---------------------------------------------------------------------------

def test_most_similar_batch(ours, theirs):
    queries = ['a0_1', {'positive': ['a0_1', 'b0_2'], 'negative': ['a0_2']}, ['w1', 'w2'],
               {'positive': [('w3', 2.0)], 'negative': ['w4']}, 'b2_3', {'positive': 'zero'},
               {'positive': ['w5', 'w5']}, {'positive': [ours['w6'] * 3]}] + \
              [{'positive': [f'b{s}_{i}', f'a{s}_{(i + 1) % N_PAIRS}'], 'negative': [f'a{s}_{i}']}
               for s in range(N_SECTIONS) for i in range(N_PAIRS)]
    for kwargs, buffer_bytes in [(dict(topn=10), 10 ** 8), (dict(topn=3, restrict_vocab=700), 10 ** 8),
                                 (dict(topn=5, clip_start=50, clip_end=1500), 10 ** 8), (dict(topn=12), 3000)]:
        ours.batch_buffer_bytes = buffer_bytes
        batched = ours.most_similar_batch(queries, batch_size=16, **kwargs)
        assert ours._batch_stats['exact_fallbacks'] < len(queries) / 4  # the block path is really used
        for query, result in zip(queries, batched):
            spec = query if isinstance(query, dict) else {'positive': query}
            assert_same_sims(result, theirs.most_similar(**spec, **kwargs))
    for topn in (None, 0):  # passed to gensim as they are
        assert_same_sims(ours.most_similar_batch(['w1', 'w2'], topn=topn)[1], theirs.most_similar('w2', topn=topn))
    with pytest.raises(KeyError):
        ours.most_similar_batch(['w1', 'no-such-word'])


def test_most_similar_batch_float64(data):
    words, vectors = data['words'], data['vectors'].astype(np.float64)
    mine, ref = KeyedVectors(DIM, dtype=np.float64), GKV(DIM, dtype=np.float64)
    for kv in (mine, ref):
        kv.add_vectors(list(words), vectors)
    queries = [f'w{i}' for i in range(1, 60)]
    for query, result in zip(queries, mine.most_similar_batch(queries, topn=7)):
        assert_same_sims(result, ref.most_similar(query, topn=7))
    assert mine._batch_stats['exact_fallbacks'] < 10


# ---------------------------------------------------------------------------
# analogies
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
    ours.batch_gap_safety = 1e9  # every question goes to gensim's most_similar
    exact = ours.evaluate_word_analogies(data['analogies'])
    assert ours._batch_stats['exact_fallbacks'] == ours._batch_stats['queries'] > n_batched_fallbacks
    assert_same_analogy_result(batched, exact)


def test_evaluate_word_analogies_near_ties_are_handed_to_gensim(theirs, data):
    """Rows that are near-copies of each other make many questions too close to call in float32."""
    rng = np.random.default_rng(9)
    words, vectors = list(data['words']), data['vectors'].copy()
    vectors[1::2] = vectors[0::2] + rng.standard_normal(vectors[1::2].shape).astype(np.float32) * 1e-7
    mine, ref = KeyedVectors(DIM), GKV(DIM)
    for kv in (mine, ref):
        kv.add_vectors(words, vectors)
    assert_same_analogy_result(mine.evaluate_word_analogies(data['analogies'], case_insensitive=False),
                               ref.evaluate_word_analogies(data['analogies'], case_insensitive=False))
    assert mine._batch_stats['exact_fallbacks'] > mine._batch_stats['queries'] / 4


def test_evaluate_word_analogies_gzip_and_errors(ours, theirs, data, tmp_path):
    gz = tmp_path / 'analogies.txt.gz'
    with open(data['analogies'], 'rb') as fin, gzip.open(gz, 'wb') as fout:
        fout.write(fin.read())
    assert_same_analogy_result(ours.evaluate_word_analogies(str(gz)),
                               theirs.evaluate_word_analogies(str(gz)))
    bad = tmp_path / 'no_header.txt'
    bad.write_text("a0_1 b0_1 a0_2 b0_2\n")
    for kv in (ours, theirs):
        with pytest.raises(ValueError, match='section'):
            kv.evaluate_word_analogies(str(bad))


def test_evaluate_word_analogies_by_name(ours):
    from bidirmoe import datasets
    assert_same_analogy_result(ours.evaluate_word_analogies('google', dummy4unknown=True),
                               GKV.evaluate_word_analogies(ours, datasets.path('google'), dummy4unknown=True))


# ---------------------------------------------------------------------------
# word pairs
# ---------------------------------------------------------------------------

PAIR_VARIANTS = [
    dict(), dict(case_insensitive=False), dict(dummy4unknown=True), dict(restrict_vocab=800),
]


@pytest.mark.parametrize('kwargs', PAIR_VARIANTS, ids=[str(k) for k in PAIR_VARIANTS])
def test_evaluate_word_pairs_matches_gensim(ours, theirs, data, kwargs):
    assert ours.evaluate_word_pairs(data['pairs'], **kwargs) == theirs.evaluate_word_pairs(data['pairs'], **kwargs)


def test_evaluate_word_pairs_reads_simlex_format(ours, theirs, data, tmp_path):
    rng = np.random.default_rng(4)
    words = data['words']
    simlex, plain = tmp_path / 'simlex.txt', tmp_path / 'plain.txt'
    rows = [(words[i], words[j], f'{rng.uniform(0, 10):.2f}') for i, j in rng.integers(0, N_WORDS, size=(80, 2))]
    simlex.write_text('word1\tword2\tPOS\tSimLex999\tconc(w1)\tconc(w2)\tconcQ\tAssoc(USF)\tSimAssoc333\tSD(SimLex)\n'
                      + ''.join(f'{a}\t{b}\tN\t{s}\t1\t2\t3\t4\t0\t0.5\n' for a, b, s in rows))
    plain.write_text(''.join(f'{a}\t{b}\t{s}\n' for a, b, s in rows))
    got = ours.evaluate_word_pairs(str(simlex), delimiter=',')  # the header decides, not the delimiter
    assert got == theirs.evaluate_word_pairs(str(plain))
    with pytest.raises(ValueError):  # gensim alone finds no 3-column line in SimLex's own file
        theirs.evaluate_word_pairs(str(simlex))


# ---------------------------------------------------------------------------
# word2vec C format
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('binary', [False, True])
@pytest.mark.parametrize('suffix', ['', '.gz', '.bz2'])
def test_word2vec_ours_to_gensim_and_back(ours, tmp_path, binary, suffix):
    path = str(tmp_path / f'vectors{".bin" if binary else ".txt"}{suffix}')
    ours.save_word2vec_format(path, binary=binary)
    assert sorted(p.name for p in tmp_path.iterdir()) == [os.path.basename(path)]  # no stand-in left behind
    loaded = GKV.load_word2vec_format(path, binary=binary)
    assert loaded.index_to_key == ours.index_to_key
    np.testing.assert_array_equal(loaded.vectors, ours.vectors)
    again = KeyedVectors.load_word2vec_format(path, binary=binary)
    assert type(again) is KeyedVectors and again.index_to_key == loaded.index_to_key
    np.testing.assert_array_equal(again.vectors, loaded.vectors)
    np.testing.assert_array_equal(again.expandos['count'], loaded.expandos['count'])
    assert again.expandos['count'].dtype == loaded.expandos['count'].dtype


@pytest.mark.parametrize('binary', [False, True])
def test_word2vec_reading_matches_gensim(theirs, tmp_path, binary):
    path = str(tmp_path / 'vectors.gz')
    theirs.save_word2vec_format(path, binary=binary)
    for kwargs in [dict(), dict(limit=17), dict(datatype=np.float64), dict(datatype=np.float16, limit=5),
                   dict(unicode_errors='ignore')]:
        mine, ref = (cls.load_word2vec_format(path, binary=binary, **kwargs) for cls in (KeyedVectors, GKV))
        assert mine.index_to_key == ref.index_to_key
        assert mine.vectors.dtype == ref.vectors.dtype
        np.testing.assert_array_equal(mine.vectors, ref.vectors)
        np.testing.assert_array_equal(mine.expandos['count'], ref.expandos['count'])
        assert mine.next_index == ref.next_index


def test_word2vec_binary_across_read_chunks(theirs, tmp_path, monkeypatch):
    path = str(tmp_path / 'vectors.bin')
    theirs.save_word2vec_format(path, binary=True)
    for chunk in (7, 200, 4096):
        monkeypatch.setattr(kv_module, '_READ_CHUNK', chunk)
        mine = KeyedVectors.load_word2vec_format(path, binary=True, limit=300)
        assert mine.index_to_key == theirs.index_to_key[:300]
        np.testing.assert_array_equal(mine.vectors, theirs.vectors[:300])


@pytest.mark.parametrize('binary', [False, True])
def test_word2vec_files_byte_identical(tmp_path, data, binary):
    """Our writer is gensim's: the same bytes, with counts, headers, prefixes and vocabulary files."""
    mine, ref = KeyedVectors(DIM), GKV(DIM)
    counts = np.random.default_rng(0).integers(1, 50, size=N_WORDS)
    for kv in (mine, ref):
        kv.add_vectors(list(data['words']), data['vectors'])  # (gensim 4.4's add_vectors fails with `extras`)
        kv.allocate_vecattrs(['count'], [np.int64])
        kv.expandos['count'][:] = counts
    for kwargs in [dict(), dict(write_header=False), dict(total_vec=12345), dict(prefix='p_')]:
        mine.save_word2vec_format(str(tmp_path / 'o'), binary=binary, fvocab=str(tmp_path / 'ov'), **kwargs)
        ref.save_word2vec_format(str(tmp_path / 'g'), binary=binary, fvocab=str(tmp_path / 'gv'), **kwargs)
        assert (tmp_path / 'o').read_bytes() == (tmp_path / 'g').read_bytes()
        assert (tmp_path / 'ov').read_bytes() == (tmp_path / 'gv').read_bytes()
    mine.save_word2vec_format(str(tmp_path / 'o'), binary=binary, append=True)
    ref.save_word2vec_format(str(tmp_path / 'g'), binary=binary, append=True)
    assert (tmp_path / 'o').read_bytes() == (tmp_path / 'g').read_bytes()


def test_word2vec_fvocab_and_no_header(ours, data, tmp_path):
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
        np.testing.assert_array_equal(loaded.expandos['count'], reference.expandos['count'])
    with pytest.raises(NotImplementedError):
        KeyedVectors.load_word2vec_format(nh_path, no_header=True, binary=True)


def test_word2vec_c_tool_layout(tmp_path):
    """The C tool writes a newline after every binary vector and a trailing space in text lines."""
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
        mine = KeyedVectors.load_word2vec_format(str(path), binary=binary)
        ref = GKV.load_word2vec_format(str(path), binary=binary)
        assert mine.index_to_key == ref.index_to_key == words
        np.testing.assert_array_equal(mine.vectors, ref.vectors)


def test_word2vec_repeated_words_and_missing_counts(tmp_path):
    dup = tmp_path / 'dup.txt'
    dup.write_text("3 2\na 1 2\nb 3 4\na 5 6\n")
    mine = KeyedVectors.load_word2vec_format(str(dup))  # gensim 4.4: keys ['a', 'b', None]
    assert mine.index_to_key == ['a', 'b'] and mine.vectors.shape == (2, 2)
    assert mine['a'].tolist() == [1, 2] and mine.expandos['count'].tolist() == [3, 2]
    vocab = tmp_path / 'vocab.txt'
    vocab.write_text("a 10\n")
    two = tmp_path / 'two.txt'
    two.write_text("2 2\na 1 2\nb 3 4\n")
    # gensim 4.4 raises TypeError here
    assert KeyedVectors.load_word2vec_format(str(two), fvocab=str(vocab)).expandos['count'].tolist() == [10, 0]


@pytest.mark.parametrize('content, line', [
    ("3 2\na 1 2\nb 3 4\n", 4),                   # one vector missing
    ("3 2\na 1 2\nb 3 4\nc 5", 4),               # last line cut short
    ("3 2\na 1 2\nb 3\nc 5 6\n", 3),              # value missing (gensim repeats the 3)
    ("3 2\na 1 2\nb 3 4 5\nc 5 6\n", 3),          # extra value
    ("3 2\na 1 2\nb 3 x\nc 5 6\n", 3),            # not a number
    ("3 2\na 1  2\nb 3 4\nc 5 6\n", 2),           # double space (values are split on single spaces)
    ("three 2\na 1 2\n", 1),                      # bad header
    ("3\na 1 2\n", 1),                            # header too short
    ("", 1),                                      # empty file
])
def test_text_malformed_raises_with_line(tmp_path, content, line):
    path = tmp_path / 'bad.txt'
    path.write_bytes(content.encode('utf8'))
    with pytest.raises((ValueError, EOFError), match=rf"line {line}\b"):
        KeyedVectors.load_word2vec_format(str(path))


def test_text_truncated_gzip(tmp_path, ours):
    path = str(tmp_path / 'v.txt.gz')
    ours.save_word2vec_format(path)
    raw = open(path, 'rb').read()
    cut = tmp_path / 'cut.txt.gz'
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises((EOFError, ValueError)):
        KeyedVectors.load_word2vec_format(str(cut))


def _binary_file(words, vecs):
    out = [f"{len(words)} {vecs.shape[1]}\n".encode()]
    for w, v in zip(words, vecs):
        out.append(w.encode('utf8') + b' ' + v.astype(np.float32).tobytes())
    return b''.join(out)


def test_binary_truncated_raises_with_offset(tmp_path, monkeypatch):
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = _binary_file(['aa', 'bbb', 'c'], vecs)
    header = len(b"3 4\n")
    third_word_at = header + (3 + 16) + (4 + 16)
    path = tmp_path / 'cut.bin'
    for cut in (blob[:-5], blob[:third_word_at], b"4 4\n" + blob[header:]):
        path.write_bytes(cut)
        for chunk in (7, 1 << 20):
            monkeypatch.setattr(kv_module, '_READ_CHUNK', chunk)
            with pytest.raises(EOFError, match=r"byte \d+"):
                KeyedVectors.load_word2vec_format(str(path), binary=True)
    monkeypatch.undo()
    path.write_bytes(b"4 4\n" + blob[header:])
    with pytest.raises(EOFError, match=rf"byte {third_word_at + 2 + 16}\b"):  # the 4th vector would start there
        KeyedVectors.load_word2vec_format(str(path), binary=True)
    path.write_bytes(blob[:-5])
    with pytest.raises(EOFError, match=rf"byte {third_word_at}\b"):
        KeyedVectors.load_word2vec_format(str(path), binary=True)
    path.write_bytes(blob)
    np.testing.assert_array_equal(KeyedVectors.load_word2vec_format(str(path), binary=True).vectors, vecs)


def test_binary_bad_bytes(tmp_path):
    blob = bytearray(_binary_file(['ok', 'bad'], np.ones((2, 3), dtype=np.float32)))
    blob[len(b"2 3\n") + 3 + 12] = 0xff  # invalid utf-8 start byte in the second word
    path = tmp_path / 'bad.bin'
    path.write_bytes(bytes(blob))
    with pytest.raises(UnicodeDecodeError):
        KeyedVectors.load_word2vec_format(str(path), binary=True)
    for errors in ('ignore', 'replace'):
        mine = KeyedVectors.load_word2vec_format(str(path), binary=True, unicode_errors=errors)
        assert mine.index_to_key == GKV.load_word2vec_format(str(path), binary=True, unicode_errors=errors).index_to_key


def test_save_word2vec_format_keeps_old_file_on_failure(ours, tmp_path):
    path = tmp_path / 'vectors.txt'
    ours.save_word2vec_format(str(path))
    os.chmod(path, 0o640)
    before = path.read_bytes()
    broken = KeyedVectors(DIM)
    broken.add_vectors(['fine', 'bad\udc80key'], np.ones((2, DIM), dtype=np.float32))
    for target in ('vectors.txt', 'new.bin', 'new.txt.gz'):
        with pytest.raises(UnicodeEncodeError):
            broken.save_word2vec_format(str(tmp_path / target), binary=target.endswith('.bin'))
        assert sorted(p.name for p in tmp_path.iterdir()) == ['vectors.txt']
    assert path.read_bytes() == before
    ours.save_word2vec_format(str(path), binary=True)
    assert os.stat(path).st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------------
# documentation
# ---------------------------------------------------------------------------

def test_docstring_examples():
    failures, attempted = doctest.testmod(kv_module, optionflags=doctest.ELLIPSIS)
    assert attempted > 40
    assert failures == 0


def test_every_method_of_ours_documented():
    for name, attr in vars(KeyedVectors).items():
        if not name.startswith('_') and callable(getattr(KeyedVectors, name)):
            assert attr.__doc__ and 'Examples' in attr.__doc__, name
