"""Corpus inputs: the Rust corpus-file reader, LineSentence, and training
from files (plain, gzip, one huge line, invalid UTF-8)."""

from __future__ import annotations

import bz2
import gzip

import numpy as np
import pytest

import bidirmoe
from bidirmoe import LineSentence, Word2Vec
from bidirmoe.corpora import MAX_SENTENCE_LEN, read_corpus_file

FAST = dict(vector_size=24, workers=1, seed=1)


def test_max_sentence_len_is_10000():
    assert MAX_SENTENCE_LEN == 10_000
    assert bidirmoe._core.MAX_SENTENCE_LEN == 10_000


# --------------------------------------------------------- read_corpus_file


def test_long_line_is_cut_into_10000_token_chunks_in_order(tmp_path):
    tokens = [f"w{i}" for i in range(25_000)]
    path = tmp_path / "long.txt"
    path.write_text(" ".join(tokens) + "\n")
    chunks = read_corpus_file(path)
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_000]
    assert chunks[0][0] == "w0" and chunks[1][0] == "w10000" and chunks[2][0] == "w20000"
    assert [t for c in chunks for t in c] == tokens


def test_chunking_between_normal_lines(tmp_path):
    long = [f"x{i % 97}" for i in range(25_000)]
    path = tmp_path / "mixed.txt"
    # No trailing newline at the end of the file, blank lines, tabs and CRLF.
    path.write_bytes(b"a b\r\n\n" + " ".join(long).encode() + b"\n\t \nc\td  e")
    chunks = read_corpus_file(str(path))
    assert [len(c) for c in chunks] == [2, 10_000, 10_000, 5_000, 3]
    assert chunks[0] == ["a", "b"]
    assert chunks[-1] == ["c", "d", "e"]
    assert [t for c in chunks[1:4] for t in c] == long


@pytest.mark.parametrize("n", [9_999, 10_000, 10_001, 20_000])
def test_chunk_boundaries(tmp_path, n):
    path = tmp_path / "n.txt"
    path.write_text(" ".join(["tok"] * n) + " \n")
    sizes = [len(c) for c in read_corpus_file(path)]
    expected = [10_000] * (n // 10_000) + ([n % 10_000] if n % 10_000 else [])
    assert sizes == expected


def test_read_corpus_file_gives_the_sentences(corpus, corpus_file):
    assert read_corpus_file(corpus_file) == corpus


def test_gzip_equals_plain(corpus, corpus_file, corpus_file_gz):
    assert read_corpus_file(corpus_file_gz) == read_corpus_file(corpus_file) == corpus


def test_gzip_detected_by_content_not_name(corpus, tmp_path, planted):
    path = tmp_path / "no_extension"
    with gzip.open(path, "wt") as f:
        f.write(planted.text())
    assert read_corpus_file(path) == corpus


def test_one_huge_line_is_chunked(corpus, corpus_file_oneline):
    flat = [w for s in corpus for w in s]
    chunks = read_corpus_file(corpus_file_oneline)
    assert [len(c) for c in chunks[:-1]] == [10_000] * (len(flat) // 10_000)
    assert [t for c in chunks for t in c] == flat


def test_invalid_utf8_is_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok \xff fine\nbad\xc3( \xe2\x82 end\ncaf\xc3\xa9\n")
    got = read_corpus_file(path)
    assert got == [["ok", "\ufffd", "fine"], ["bad\ufffd(", "\ufffd", "end"], ["caf\u00e9"]]


def test_missing_corpus_file():
    with pytest.raises(FileNotFoundError):
        read_corpus_file("/nonexistent/dir/corpus.txt")


def test_training_on_invalid_utf8_file(tmp_path, corpus):
    path = tmp_path / "bad.txt"
    good = "".join(" ".join(s) + "\n" for s in corpus[:500]).encode()
    path.write_bytes(good + b"\xff\xfe t0w1 t0w2 \xff\xfe\n" * 10 + good)
    m = Word2Vec(corpus_file=str(path), min_count=1, epochs=2, **FAST)
    assert "\ufffd\ufffd" in m.wv.key_to_index
    assert int(m._vocab.counts[m.wv.key_to_index["\ufffd\ufffd"]]) == 20
    assert np.isfinite(m.wv.vectors).all()
    # The same with gzip.
    gz = tmp_path / "bad.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    m2 = Word2Vec(corpus_file=str(gz), min_count=1, epochs=1, **FAST)
    assert m2.wv.index_to_key == m.wv.index_to_key


# ------------------------------------------------------------- LineSentence


def test_linesentence_reads_sentences(corpus, corpus_file):
    ls = LineSentence(corpus_file)
    assert list(ls) == corpus
    assert list(ls) == corpus, "LineSentence must be restartable"


def test_linesentence_compressed(corpus, corpus_file_gz, corpus_file_bz2):
    assert list(LineSentence(corpus_file_gz)) == corpus
    assert list(LineSentence(corpus_file_bz2)) == corpus


def test_linesentence_chunking(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b c d e\n\nf g\n")
    assert list(LineSentence(path, max_sentence_length=2)) == [["a", "b"], ["c", "d"], ["e"], ["f", "g"]]
    assert list(LineSentence(path)) == [["a", "b", "c", "d", "e"], ["f", "g"]]
    assert list(LineSentence(path, limit=1)) == [["a", "b", "c", "d", "e"]]


def test_linesentence_default_chunk_matches_corpus_file_reader(corpus_file_oneline, tmp_path):
    assert list(LineSentence(corpus_file_oneline)) == read_corpus_file(corpus_file_oneline)
    path = tmp_path / "long.txt"
    path.write_text(" ".join(f"w{i}" for i in range(25_000)) + "\n")
    assert [len(s) for s in LineSentence(path)] == [10_000, 10_000, 5_000]
    bz = tmp_path / "long.txt.bz2"
    bz.write_bytes(bz2.compress(path.read_bytes()))
    assert list(LineSentence(bz)) == list(LineSentence(path))


def test_linesentence_invalid_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok \xff fine\n")
    assert list(LineSentence(path)) == [["ok", "\ufffd", "fine"]]


def test_linesentence_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        LineSentence(tmp_path / "missing.txt")
    path = tmp_path / "c.txt"
    path.write_text("a\n")
    with pytest.raises(ValueError):
        LineSentence(path, max_sentence_length=0)


def test_train_with_linesentence_equals_corpus_file_vocab(corpus_file):
    a = Word2Vec(LineSentence(corpus_file), min_count=5, epochs=2, **FAST)
    b = Word2Vec(corpus_file=str(corpus_file), min_count=5, epochs=2, **FAST)
    assert a.wv.index_to_key == b.wv.index_to_key
    assert a.corpus_count == b.corpus_count
    assert a.raw_word_count == b.raw_word_count


# ------------------------------------------------------- training from files


@pytest.mark.parametrize("which", ["plain", "gz", "oneline"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_corpus_file_every_token_read_exactly_once(request, planted, which, workers):
    path = request.getfixturevalue({"plain": "corpus_file", "gz": "corpus_file_gz",
                                    "oneline": "corpus_file_oneline"}[which])
    epochs = 2
    m = Word2Vec(corpus_file=str(path), vector_size=8, min_count=1, sample=0, epochs=epochs, workers=workers)
    assert m.corpus_total_words == planted.n_tokens
    assert m.raw_word_count == epochs * planted.n_tokens
    # min_count=1, no subsampling: every token is trained on.
    assert m.trained_word_count == epochs * planted.n_tokens


def test_corpus_file_accepts_pathlike(corpus_file):
    m = Word2Vec(corpus_file=corpus_file, min_count=5, epochs=1, **FAST)
    assert len(m.wv.index_to_key) > 0


def test_corpus_file_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        Word2Vec(corpus_file=str(tmp_path), min_count=1, epochs=1, **FAST)


def test_huge_line_learns_like_short_lines(corpus_file, corpus_file_oneline, groups, precision, precision_threshold):
    kw = dict(min_count=5, epochs=3, **FAST)
    short = Word2Vec(corpus_file=str(corpus_file), **kw)
    huge = Word2Vec(corpus_file=str(corpus_file_oneline), **kw)
    assert huge.wv.index_to_key == short.wv.index_to_key
    assert huge.raw_word_count == short.raw_word_count
    p_short = precision(short.wv, groups)
    p_huge = precision(huge.wv, groups)
    assert p_short >= precision_threshold
    assert p_huge >= precision_threshold
    assert p_huge >= p_short - 0.1


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8, 13])
def test_corpus_file_small_file_many_workers_long_tokens(tmp_path, workers):
    # More workers than lines, tokens longer than a worker's byte range, no
    # trailing newline: each token must still be read exactly once and whole.
    tokens = ["alpha", "beta", "g" * 5000, "delta", "e" * 300, "zeta", "eta"]
    text = "alpha beta\n\ng" * 1 + "g" * 4999 + " delta\t" + "e" * 300 + "\r\nzeta  eta"
    path = tmp_path / "tiny.txt"
    path.write_text(text)
    assert [t for s in read_corpus_file(path) for t in s] == tokens
    m = Word2Vec(corpus_file=str(path), vector_size=4, min_count=1, sample=0, epochs=3, workers=workers)
    assert sorted(m.wv.index_to_key) == sorted(tokens)
    assert m.raw_word_count == 3 * len(tokens)
    assert m.trained_word_count == 3 * len(tokens)  # no token cut into OOV pieces
