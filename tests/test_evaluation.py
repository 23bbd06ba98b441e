"""Bundled evaluation sets and the paper's analogy metrics, checked against
gensim's evaluators and an independent numpy computation."""

import numpy as np
import pytest

from bidirmoe import KeyedVectors, Word2Vec, datasets

gensim = pytest.importorskip("gensim")


@pytest.fixture(scope="module")
def text8_wv():
    # A real embedding: three CBOW epochs on the bundled 2.1M-word text8 sample, one worker so
    # the vectors are reproducible. One epoch gave a WordSim353 Spearman of 0.10-0.15 across seeds,
    # too close to the 0.1 floor below; three give 0.27-0.30.
    m = Word2Vec(corpus_file=datasets.path("text8-sample"), vector_size=50, epochs=3, workers=1, seed=1)
    return m.wv


@pytest.fixture(scope="module")
def gensim_wv(text8_wv):
    g = gensim.models.KeyedVectors(text8_wv.vector_size)
    g.add_vectors(list(text8_wv.index_to_key), text8_wv.vectors)
    return g


def test_google_by_name_equals_by_path(text8_wv):
    a = text8_wv.evaluate_word_analogies("google", restrict_vocab=5000)
    b = text8_wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=5000)
    assert a[0] == b[0] and a[1] == b[1]


def test_wordsim353_by_name_matches_gensim(text8_wv, gensim_wv):
    ours = text8_wv.evaluate_word_pairs("wordsim353")
    theirs = gensim_wv.evaluate_word_pairs(datasets.path("wordsim353"), delimiter=",")
    assert ours[0][0] == pytest.approx(theirs[0][0], abs=1e-6)
    assert ours[1][0] == pytest.approx(theirs[1][0], abs=1e-6)
    assert ours[2] == pytest.approx(theirs[2])
    assert ours[1][0] > 0.1  # a real embedding correlates with human judgements (random: ~0 +- 0.06)


def test_simlex999_own_format_read_directly(text8_wv, gensim_wv, tmp_path):
    # gensim needs a 3-column file: write one from SimLex's columns 1, 2 and 4.
    three = tmp_path / "simlex3.txt"
    with open(datasets.path("simlex999"), encoding="utf-8") as f, open(three, "w", encoding="utf-8") as out:
        next(f)
        n = 0
        for line in f:
            p = line.rstrip("\n").split("\t")
            out.write(f"{p[0]}\t{p[1]}\t{p[3]}\n")
            n += 1
    assert n == 999
    ours = text8_wv.evaluate_word_pairs("simlex999")
    theirs = gensim_wv.evaluate_word_pairs(str(three))
    assert ours[0][0] == pytest.approx(theirs[0][0], abs=1e-6)
    assert ours[1][0] == pytest.approx(theirs[1][0], abs=1e-6)
    assert ours[2] == pytest.approx(theirs[2])
    # The original file path (not just the name) is recognised by its header too.
    assert text8_wv.evaluate_word_pairs(datasets.path("simlex999"))[1][0] == pytest.approx(ours[1][0])


def test_analogy_report_matches_gensim_and_numpy(text8_wv):
    rv = 3000
    report = text8_wv.analogy_report("google", restrict_vocab=rv)
    rows = report.questions_table()
    score, sections = text8_wv.evaluate_word_analogies("google", restrict_vocab=rv)
    total = sections[-1]
    assert len(rows) == len(total["correct"]) + len(total["incorrect"])
    correct = {tuple(w.upper() for w in q) for q in total["correct"]}
    ranked_first = {(r["a"].upper(), r["b"].upper(), r["c"].upper(), r["d"].upper()) for r in rows if r["rank"] == 1}
    assert ranked_first == correct
    groups = {g["group"]: g for g in report.groups_table()}
    assert groups["total"]["top1"] == pytest.approx(score)
    assert groups["total"]["questions"] == groups["semantic"]["questions"] + groups["syntactic"]["questions"]
    # Independent float64 recomputation of a sample of ranks and cosines.
    keys = text8_wv.index_to_key[:rv]
    upper = {}
    for i, k in enumerate(keys):
        upper.setdefault(k.upper(), i)
    V = np.asarray(text8_wv.vectors[:rv], dtype=np.float64)
    U = V / np.linalg.norm(V, axis=1, keepdims=True)
    for r in rows[:: max(1, len(rows) // 50)]:
        ia, ib, ic, id_ = (upper[r[k].upper()] for k in "abcd")
        t = U[ib] - U[ia] + U[ic]
        t /= np.linalg.norm(t)
        s = U @ t
        assert r["cosine"] == pytest.approx(s[id_], abs=1e-4)
        s[[ia, ib, ic]] = -np.inf
        assert abs(r["rank"] - (1 + int((s > s[id_]).sum()))) <= 1  # float32 vs float64 near-ties


def test_analogy_report_frames_and_groups(text8_wv):
    report = text8_wv.analogy_report("google", restrict_vocab=2000)
    try:
        import pandas  # noqa: F401
    except ImportError:
        assert isinstance(report.groups, list)
    else:
        assert list(report.groups.index) == ["semantic", "syntactic", "total"]
        assert {"rank", "cosine", "section", "group"} <= set(report.questions.columns)
    assert report.skipped > 0
    secs = report.sections_table()
    assert {s["group"] for s in secs} == {"semantic", "syntactic"}
    assert all(s["group"] == ("syntactic" if s["section"].startswith("gram") else "semantic") for s in secs)


def test_analogy_report_bad_file_names_the_line(tmp_path, text8_wv):
    bad = tmp_path / "bad.txt"
    bad.write_text(": s\nthe of and\n")
    with pytest.raises(ValueError, match="line 2"):
        text8_wv.analogy_report(str(bad))


def test_read_analogies_sees_what_gensim_sees(tmp_path):
    from bidirmoe.evaluation import read_analogies
    text = (": first\n"
            "a b c d\n"
            "\n"
            "a b c\n"
            "a b c d e\n"
            ":nospace is a question line\n"
            ":   spaced   name  \n"
            "e f g h\n"
            ":: double colon\n"
            "i j k l\n"
            ": empty\n"
            ": last\n"
            "m n o p\n")
    path = tmp_path / "odd.txt"
    path.write_text(text)
    ours = {}
    for _, section, words in read_analogies(str(path)):
        ours.setdefault(section, [])
        if words is not None:
            ours[section].append(tuple(w.upper() for w in words))
    # gensim's evaluator, with no vocabulary and dummy4unknown, lists every question it read, per section
    _, sections = gensim.models.KeyedVectors(3).evaluate_word_analogies(str(path), dummy4unknown=True)
    assert ours == {s["section"]: s["incorrect"] for s in sections[:-1]}
    assert list(ours) == ["first", "spaced   name", "empty", "last"]  # "::" does not open a section
    with pytest.raises(ValueError, match="line 4"):
        list(read_analogies(str(path), strict=True))
    path.write_text("\n: late header\na b c d\n")
    with pytest.raises(ValueError, match="line 1"):
        list(read_analogies(str(path)))
