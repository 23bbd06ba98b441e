"""Corpus inputs: the Rust corpus-file reader, LineSentence, and training
from files (plain, gzip, one huge line, invalid UTF-8)."""

from __future__ import annotations

import bz2
import gzip
import os

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


# LineSentence / PathLineSentences on open files, against gensim's own readers.


def _openers(path):
    """Ways a gensim user hands over an open corpus file (name, opener)."""
    return [
        ("text", lambda: open(path, encoding="utf-8")),
        ("binary", lambda: open(path, "rb")),
        ("gzip", lambda: gzip.open(str(path) + ".gz", "rb")),
        ("bz2", lambda: bz2.open(str(path) + ".bz2", "rb")),
    ]


@pytest.fixture
def small_text(tmp_path, corpus):
    path = tmp_path / "small.txt"
    text = "".join(" ".join(s) + "\n" for s in corpus[:200]) + "tail line without newline"
    path.write_text(text, encoding="utf-8")
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(text.encode())
    with bz2.open(str(path) + ".bz2", "wb") as f:
        f.write(text.encode())
    return path


@pytest.mark.parametrize("kind", ["text", "binary", "gzip", "bz2"])
def test_linesentence_on_open_files_matches_gensim(small_text, kind):
    gensim_word2vec = pytest.importorskip("gensim.models.word2vec")
    opener = dict(_openers(small_text))[kind]
    with opener() as ours_f, opener() as theirs_f:
        ours = LineSentence(ours_f, max_sentence_length=7, limit=150)
        theirs = gensim_word2vec.LineSentence(theirs_f, max_sentence_length=7, limit=150)
        expected = list(theirs)
        assert list(ours) == expected and len(expected) > 150
        assert list(ours) == expected  # restartable: seeks back to the start
    with opener() as f:
        assert list(LineSentence(f)) == list(LineSentence(small_text))


def test_linesentence_decompresses_a_raw_binary_file_object(small_text):
    with open(str(small_text) + ".gz", "rb") as f:
        assert list(LineSentence(f)) == list(LineSentence(small_text))


def test_linesentence_trains_from_an_open_file(small_text):
    with gzip.open(str(small_text) + ".gz", "rb") as f:
        m = Word2Vec(LineSentence(f), vector_size=8, min_count=2, epochs=2, workers=1)
    assert m.wv.index_to_key == Word2Vec(LineSentence(small_text), vector_size=8, min_count=2, epochs=1,
                                         workers=1).wv.index_to_key


def test_linesentence_on_a_stream_that_cannot_seek(small_text):
    class Stream:
        def __init__(self, lines):
            self._it = iter(lines)

        def read(self, n=-1):  # a file object, as far as LineSentence can tell
            raise NotImplementedError

        def seekable(self):
            return False

        def __iter__(self):
            return self._it

    ls = LineSentence(Stream(small_text.read_bytes().splitlines(keepends=True)))
    assert list(ls) == list(LineSentence(small_text))
    with pytest.raises(TypeError, match="only once"):
        list(ls)


def test_pathlinesentences_matches_gensim(tmp_path, corpus):
    gensim_word2vec = pytest.importorskip("gensim.models.word2vec")
    from bidirmoe.corpora import PathLineSentences

    d = tmp_path / "parts"
    d.mkdir()
    for name, part in (("b.txt", corpus[:50]), ("a.txt", corpus[50:120]), ("c.txt", corpus[120:130])):
        (d / name).write_text("".join(" ".join(s) + "\n" for s in part))
    theirs = list(gensim_word2vec.PathLineSentences(str(d), max_sentence_length=5, limit=30))
    ours = PathLineSentences(str(d), max_sentence_length=5, limit=30)
    assert list(ours) == theirs and list(ours) == theirs and len(theirs) > 70
    (d / "sub").mkdir()  # gensim would try to open a subdirectory; we read the files only
    (d / "sub" / "ignored.txt").write_text("not read\n")
    assert list(PathLineSentences(str(d), max_sentence_length=5, limit=30)) == theirs
    assert list(PathLineSentences(d / "a.txt")) == corpus[50:120]
    with open(d / "c.txt", "rb") as f:
        assert list(PathLineSentences([str(d / "b.txt"), f])) == corpus[:50] + corpus[120:130]
    with pytest.raises(FileNotFoundError):
        PathLineSentences(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        PathLineSentences(tmp_path / "empty")


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


# ------------------------------------------------- several files split between processes


@pytest.fixture
def mixed_files(tmp_path):
    """Plain, gzip, bz2, empty, no final line end, and one long line without
    any line end (a cut inside it must fall at whitespace)."""
    import random

    rng = random.Random(3)

    def text(lines):
        return "\n".join(" ".join(f"w{rng.randint(0, 60)}" for _ in range(rng.randint(0, 25)))
                         for _ in range(lines)).encode()

    specs = [("a.txt", text(300) + b"\n", None), ("b.txt.gz", text(200), gzip.compress),
             ("empty.txt", b"", None), ("c.txt", text(150), None), ("d.txt.bz2", text(250) + b"\n", bz2.compress),
             ("long.txt", b" ".join(f"x{i % 97}\t" .encode() for i in range(20_000)), None), ("e.txt", text(80), None)]
    paths, tokens = [], []
    for name, data, pack in specs:
        p = tmp_path / name
        p.write_bytes(pack(data) if pack else data)
        paths.append(str(p))
        tokens += data.split()
    return paths, tokens


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8, 13])
def test_rank_segments_hold_every_token_once_in_order(mixed_files, tmp_path, world):
    """The ranks' pieces, read in place by the Rust reader (a bz2 file, which
    it cannot stream, decompressed whole), hold every token once, in order."""
    from bidirmoe import _core
    from bidirmoe.corpora import RankPieces, shard_plan

    paths, tokens = mixed_files
    got, sizes = [], []
    for rank in range(world):
        with RankPieces(paths, rank, world, str(tmp_path)) as part:
            assert part.rank == rank and part.world == world and part.sources == tuple(paths)
            plan = shard_plan(paths, rank, world)
            assert plan == shard_plan(paths, rank, world)  # the same plan every time: a resume finds it
            assert len(part.pieces) == len(plan) and len(part.temporary) == sum(p.endswith(".bz2") for p, _, _ in plan)
            for (path, start, end), piece in zip(plan, part.pieces):
                assert end is None or 0 <= start < end
                assert piece == (path, start, end) or (path.endswith(".bz2") and piece[0] in part.temporary)
            mine = [t.encode() for s in _core.read_corpus_file(part.pieces) for t in s]
            counter = _core.VocabCounter()
            counter.add_file(part.pieces)
            assert counter.total_words == len(mine)
            temporary = list(part.temporary)
        assert not any(os.path.exists(t) for t in temporary)  # close() deleted the decompressed copy
        got += mine
        sizes.append(len(b" ".join(mine)))
    assert got == tokens
    if world <= 3:  # small worlds: every segment gets a fair part of the text
        assert min(sizes) > sum(sizes) / world / 3, sizes


def test_count_in_order_counts_every_file_as_one_process(mixed_files, tmp_path):
    """count_in_order (rank 0's count under max_vocab_size): every file in
    order, a bz2 one through a temporary copy that is gone afterwards."""
    from bidirmoe import _core
    from bidirmoe.corpora import count_in_order

    paths, tokens = mixed_files
    assert any(p.endswith(".bz2") for p in paths)
    counter = _core.VocabCounter()
    count_in_order(counter, paths, str(tmp_path))
    assert counter.total_words == len(tokens)
    expect = {}
    for t in tokens:
        expect[t.decode()] = expect.get(t.decode(), 0) + 1
    assert counter.raw_counts() == expect
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".bidirmoe-count-")]


def test_rank_pieces_refuse_what_they_cannot_read(mixed_files, tmp_path):
    from bidirmoe import _core
    from bidirmoe.corpora import RankPieces

    paths, _ = mixed_files
    with pytest.raises(ValueError, match="bzip2-compressed"):
        RankPieces([p for p in paths if p.endswith(".bz2")], 0, 1)
    with pytest.raises(FileNotFoundError, match="not found"):
        RankPieces([str(tmp_path / "missing.txt")], 0, 1)
    gz = next(p for p in paths if p.endswith(".gz"))
    with pytest.raises(ValueError, match="byte range"):
        _core.VocabCounter().add_file([(gz, 0, 10)])
    with pytest.raises(ValueError, match="does not lie"):
        _core.VocabCounter().add_file([(paths[0], 0, 10**9)])


def test_cut_in_a_line_without_line_end_falls_at_whitespace(tmp_path):
    from bidirmoe.corpora import shard_plan

    p = tmp_path / "one-line.txt"
    p.write_bytes(b"abcdefghi " * 1001)  # the middle (byte 5005) is inside a token
    (_, s0, e0), = shard_plan([str(p)], 0, 2)
    (_, s1, e1), = shard_plan([str(p)], 1, 2)
    assert (s0, e1) == (0, 10010) and e0 == s1 == 5009  # the next whitespace after byte 5005
    with pytest.raises(ValueError, match="rank"):
        shard_plan([str(p)], 2, 2)
