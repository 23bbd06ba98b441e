"""Corpus inputs: restartable iterables of token lists, and checks on them.

Examples
--------
>>> import os, tempfile
>>> from bidirmoe.corpora import LineSentence
>>> path = os.path.join(tempfile.mkdtemp(), "c.txt")
>>> _ = open(path, "w").write("the cat sat\\non the mat\\n")
>>> list(LineSentence(path))
[['the', 'cat', 'sat'], ['on', 'the', 'mat']]
"""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import List, Optional, Sequence, Tuple

from . import _core

MAX_SENTENCE_LEN: int = _core.MAX_SENTENCE_LEN


_FORMATS = ((b"\x1f\x8b", "gzip", gzip.open), (b"BZh", "bzip2", bz2.open), (b"\xfd7zXZ\x00", "xz", lzma.open))


def compression(path) -> Optional[str]:
    """"gzip", "bzip2" or "xz" when the file starts with that format's magic bytes, else None.

    Examples
    --------
    >>> import os, tempfile, gzip
    >>> path = os.path.join(tempfile.mkdtemp(), "c")
    >>> _ = gzip.open(path, "wb").write(b"a b")
    >>> compression(path)
    'gzip'
    """
    with open(path, "rb") as f:
        magic = f.read(6)
    return next((name for m, name, _ in _FORMATS if magic.startswith(m)), None)


def open_compressed(path):
    """Open a plain, gzip, bzip2 or xz file (recognised by content, not name) for binary reading.

    Examples
    --------
    >>> import os, tempfile, bz2
    >>> path = os.path.join(tempfile.mkdtemp(), "c")
    >>> _ = bz2.open(path, "wb").write(b"a b")
    >>> open_compressed(path).read()
    b'a b'
    """
    kind = compression(path)
    opener = next((op for _, name, op in _FORMATS if name == kind), open)
    return opener(path, "rb")


def _is_file_object(source) -> bool:
    return hasattr(source, "read") and not isinstance(source, (str, bytes, os.PathLike))


def _decompressing(f):
    """``f``, or a decompressor over it when ``f`` is a seekable raw binary
    file whose content starts with gzip, bzip2 or xz magic bytes."""
    if isinstance(f, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)) or isinstance(f, io.TextIOBase):
        return f
    try:
        if not f.seekable():
            return f
        magic = f.read(6)
        f.seek(0)
    except (AttributeError, OSError, ValueError):
        return f
    if not isinstance(magic, bytes):
        return f
    opener = next((op for m, _, op in _FORMATS if magic.startswith(m)), None)
    return opener(f, "rb") if opener is not None else f


class LineSentence:
    """Sentences from a text file, one per line, tokens separated by whitespace.

    Like ``gensim.models.word2vec.LineSentence``: restartable (iterate it once
    per epoch), plain or compressed (gzip, bzip2, xz; recognised by content),
    and lines longer than ``max_sentence_length`` tokens are cut into several
    sentences.

    Parameters
    ----------
    source : str, os.PathLike or file object
        Path to the file, or a file object open for reading: text or binary,
        plain or a ``gzip`` / ``bz2`` / ``lzma`` file object (a binary file
        holding compressed bytes is decompressed too). Each iteration seeks
        back to the start; a stream that cannot seek can be read only once.
    max_sentence_length : int
        Longest sentence yielded (default 10,000, as gensim).
    limit : int, optional
        Read only the first ``limit`` lines.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "c.txt")
    >>> _ = open(path, "w").write("a b c d e\\n")
    >>> list(LineSentence(path, max_sentence_length=2))
    [['a', 'b'], ['c', 'd'], ['e']]
    >>> import gzip, io
    >>> buf = io.BytesIO()
    >>> with gzip.GzipFile(fileobj=buf, mode="wb") as f:
    ...     _ = f.write(b"x y\\nz\\n")
    >>> list(LineSentence(gzip.GzipFile(fileobj=io.BytesIO(buf.getvalue()))))
    [['x', 'y'], ['z']]
    """

    def __init__(self, source, max_sentence_length: int = MAX_SENTENCE_LEN, limit: Optional[int] = None):
        if _is_file_object(source):
            self.source = source
        else:
            self.source = os.fspath(source)
            if not os.path.isfile(self.source):
                raise FileNotFoundError(f"corpus file not found: {self.source}")
        if max_sentence_length < 1:
            raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
        self.max_sentence_length = max_sentence_length
        self.limit = limit
        self._passes = 0

    def __iter__(self) -> Iterator[List[str]]:
        if not _is_file_object(self.source):
            with open_compressed(self.source) as f:
                yield from self._sentences(f)
            return
        f = self.source
        seekable = getattr(f, "seekable", lambda: False)()
        if seekable:
            f.seek(0)
        elif self._passes:
            raise TypeError("LineSentence over a stream that cannot seek can be read only once; training needs "
                            "one pass per epoch plus one for the vocabulary: pass a path or a seekable file")
        self._passes += 1
        yield from self._sentences(_decompressing(f))

    def _sentences(self, lines) -> Iterator[List[str]]:
        # As gensim: binary lines end at b"\n" only; tokens split on any Unicode whitespace.
        step = self.max_sentence_length
        for line in itertools.islice(lines, self.limit):
            words = (line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line).split()
            for i in range(0, len(words), step):
                yield words[i : i + step]


class PathLineSentences:
    """Sentences from every file of a directory, file by file in name order, as :class:`LineSentence` reads them.

    Like ``gensim.models.word2vec.PathLineSentences``; beyond it, ``source``
    may also be a list of paths and file objects.

    Parameters
    ----------
    source : str, os.PathLike, file object, or list of them
        A directory (its regular files, sorted by name; subdirectories are
        skipped), one file, or a list of files.
    max_sentence_length : int
        Longest sentence yielded (default 10,000).
    limit : int, optional
        Read only the first ``limit`` lines of each file.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "b.txt"), "w").write("c d\\n")
    >>> _ = open(os.path.join(d, "a.txt"), "w").write("a b\\n")
    >>> list(PathLineSentences(d))
    [['a', 'b'], ['c', 'd']]
    """

    def __init__(self, source, max_sentence_length: int = MAX_SENTENCE_LEN, limit: Optional[int] = None):
        self.source = source
        if isinstance(source, (list, tuple)):
            inputs = list(source)
        elif _is_file_object(source):
            inputs = [source]
        else:
            path = os.fspath(source)
            if os.path.isdir(path):
                inputs = sorted(os.path.join(path, name) for name in os.listdir(path)
                                if os.path.isfile(os.path.join(path, name)))
                if not inputs:
                    raise ValueError(f"directory has no files to read: {path}")
            elif os.path.isfile(path):
                inputs = [path]
            else:
                raise FileNotFoundError(f"no such file or directory: {path}")
        self.input_files = inputs
        self._readers = [LineSentence(f, max_sentence_length=max_sentence_length, limit=limit) for f in inputs]
        self.max_sentence_length, self.limit = max_sentence_length, limit

    def __iter__(self) -> Iterator[List[str]]:
        for reader in self._readers:
            yield from reader


def check_corpus(corpus_iterable, corpus_file, passes: int) -> None:
    """Raise a precise exception if the corpus arguments cannot be trained on.

    ``passes`` is how many times the corpus will be iterated (vocabulary scan
    plus epochs): a one-shot iterator (generator, ``map``, open file) can only
    serve one.
    """
    if corpus_iterable is None and corpus_file is None:
        raise TypeError("pass a corpus: either corpus_iterable/sentences (an iterable of lists of str) or corpus_file (a path)")
    if corpus_iterable is not None and corpus_file is not None:
        raise TypeError("pass either corpus_iterable/sentences or corpus_file, not both")
    if isinstance(corpus_file, RankPieces):
        return  # its files were checked when it was made
    if isinstance(corpus_file, (list, tuple)):
        if not corpus_file:
            raise ValueError("corpus_file is an empty list: give at least one file")
        for path in corpus_file:
            check_corpus(None, path, passes)
            if compression(path) in ("bzip2", "xz"):
                raise ValueError(f"{os.fspath(path)} is {compression(path)}-compressed, which the corpus reader "
                                 "cannot stream: decompress it (or gzip it) first")
        return
    if corpus_file is not None:
        path = os.fspath(corpus_file)
        if not os.path.exists(path):
            raise FileNotFoundError(f"corpus_file not found: {path}")
        if not os.path.isfile(path):
            raise ValueError(f"corpus_file is not a regular file: {path}")
        return
    if isinstance(corpus_iterable, (str, bytes)):
        raise TypeError(
            "the corpus is a single string; pass an iterable of sentences, each a list of str tokens, "
            "e.g. [['hello', 'world'], ...], or corpus_file=PATH for a text file"
        )
    if not isinstance(corpus_iterable, Iterable):
        raise TypeError(f"the corpus must be an iterable of lists of str, got {type(corpus_iterable).__name__}")
    if passes > 1 and iter(corpus_iterable) is corpus_iterable:
        raise TypeError(
            f"the corpus is a one-shot iterator ({type(corpus_iterable).__name__}) but training needs {passes} passes "
            "over it (vocabulary scan + epochs); pass a restartable iterable such as a list, "
            "bidirmoe.LineSentence(path), or an object whose __iter__ starts over"
        )


def read_corpus_file(path) -> List[List[str]]:
    """The sentences of a corpus file exactly as the Rust reader splits them
    (10,000-token chunks, invalid UTF-8 replaced). Loads the whole file: for
    inspection and tests on small files.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "c.txt")
    >>> _ = open(path, "wb").write(b"ok \\xff\\n")
    >>> read_corpus_file(path)
    [['ok', '\\ufffd']]
    """
    return _core.read_corpus_file(os.fspath(path))


# ------------------------------------------------- one rank's part of several files

_SPACE = b" \t\n\r\x0b\x0c"  # what the Rust reader splits tokens on
#: How far past a cut a plain file is searched for a line end to cut at instead.
_LINE_SLACK = 1 << 20


def _size_estimate(path: str, kind: Optional[str]) -> int:
    """Bytes of text a file holds: its size, or for gzip the size its
    trailer records (modulo 4 GiB: used only while it is plausible), else a
    guess of 3x (gzip) / 4x (bz2, xz) the compressed size."""
    size = os.path.getsize(path)
    if kind is None:
        return size
    if kind == "gzip" and size >= 18:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            recorded = int.from_bytes(f.read(4), "little")
        if recorded >= size:
            return recorded
    return size * (3 if kind == "gzip" else 4)


def _cut_in_plain(path: str, offset: int, size: int) -> int:
    """Where to cut a plain file near ``offset``: after the first line end
    within ``_LINE_SLACK`` bytes, else at the first whitespace at or after
    ``offset`` (so no token is split), else at the end of the file."""
    if offset <= 0 or offset >= size:
        return min(max(offset, 0), size)
    with open(path, "rb") as f:
        f.seek(offset - 1)
        chunk = f.read(_LINE_SLACK + 1)  # chunk[j] is byte offset - 1 + j
        nl = chunk.find(b"\n")
        if nl >= 0:
            return offset + nl  # just past the line end
        if chunk[0] in _SPACE:
            return offset  # the cut already falls between tokens
        pos, skip = offset - 1, 1
        while chunk:
            hit = next((j for j in range(skip, len(chunk)) if chunk[j] in _SPACE), -1)
            if hit >= 0:
                return pos + hit  # the whitespace starts the next segment
            pos, skip = pos + len(chunk), 0
            chunk = f.read(1 << 16)
    return size


def shard_plan(files: Sequence[str], rank: int, world: int) -> List[Tuple[str, int, Optional[int]]]:
    """The pieces of ``files`` (the corpus, in order) that process ``rank``
    of ``world`` reads: ``(path, start, end)`` byte ranges of plain files,
    or ``(path, 0, None)`` for a whole compressed file (it cannot be entered
    in the middle).

    The files are laid end to end and cut into ``world`` consecutive
    segments of about equal text: a cut inside a plain file moves to the
    next line end (or whitespace), a cut inside a compressed file to its
    nearer edge. Every process computes the same cuts, so the segments
    never overlap and together hold every token exactly once.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> a, b = os.path.join(d, "a.txt"), os.path.join(d, "b.txt")
    >>> _ = open(a, "w").write("one two\\nthree four\\n")
    >>> _ = open(b, "w").write("five six\\n")
    >>> [(os.path.basename(p), s, e) for p, s, e in shard_plan([a, b], 0, 2)]
    [('a.txt', 0, 19)]
    >>> [(os.path.basename(p), s, e) for p, s, e in shard_plan([a, b], 1, 2)]
    [('b.txt', 0, 9)]
    """
    if not (0 <= rank < world):
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    units = []  # (path, kind, on-disk size, text estimate)
    for p in files:
        p = os.fspath(p)
        kind = compression(p)
        units.append((p, kind, os.path.getsize(p), _size_estimate(p, kind)))
    starts, total = [], 0
    for u in units:
        starts.append(total)
        total += u[3]
    # cuts[k]: (unit index, offset in it) where segment k begins; offsets are
    # real bytes for plain files and 0 for compressed ones.
    cuts = [(0, 0)]
    for k in range(1, world):
        target = total * k // world
        i = max((j for j in range(len(units)) if starts[j] <= target), default=0)
        path, kind, size, est = units[i]
        within = target - starts[i]
        if kind is not None or est == 0:
            cut = (i + 1, 0) if within * 2 >= est else (i, 0)
        else:
            off = _cut_in_plain(path, within, size)
            cut = (i + 1, 0) if off >= size else (i, off)
        cuts.append(max(cut, cuts[-1]))
    cuts.append((len(units), 0))
    (i0, o0), (i1, o1) = cuts[rank], cuts[rank + 1]
    pieces: List[Tuple[str, int, Optional[int]]] = []
    for i in range(i0, min(i1 + 1, len(units))):
        path, kind, size, _ = units[i]
        start = o0 if i == i0 else 0
        end = o1 if i == i1 else size
        if kind is not None:
            if i < i1:  # a compressed file lies wholly inside one segment
                pieces.append((path, 0, None))
        elif end > start:
            pieces.append((path, start, end))
    return pieces


def _decompressed_copy(path: str, directory: str, prefix: str) -> str:
    """A temporary file in ``directory`` holding ``path`` decompressed (for
    the bz2 / xz files the Rust reader cannot stream); the caller deletes it.
    Nothing is left behind if the copy fails."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open_compressed(path) as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


class RankPieces:
    """Process ``rank`` of ``world``'s segment of a corpus of several files
    (:func:`shard_plan`), read in place: give it as ``corpus_file`` to a
    model (``distributed=True`` in that rank; or rank 0 of 1, the files one
    after another in one process). ``pieces`` are the byte ranges of plain
    files and the whole gzip files the Rust reader streams, in order, for
    the vocabulary scan and for training; a resumed run finds the same
    pieces (same files, rank and world).

    The Rust reader decodes plain and gzip text only: a bz2 or xz file of
    this rank's segment is decompressed whole into ``directory`` (a
    temporary file, deleted by :meth:`close`); without ``directory`` such a
    file is refused. Nothing else is copied. (Example: :func:`shard_plan`,
    whose pieces these are.)
    """

    def __init__(self, files: Sequence[str], rank: int, world: int, directory: Optional[str] = None):
        self.sources = tuple(os.fspath(f) for f in files)
        if not self.sources:
            raise ValueError("RankPieces needs at least one file")
        for f in self.sources:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"corpus file not found: {f}")
        self.rank, self.world, self.directory = rank, world, directory
        self.temporary: List[str] = []
        pieces = []
        try:
            for path, start, end in shard_plan(self.sources, rank, world):
                if end is None and compression(path) not in (None, "gzip"):
                    path = self._decompressed(path)
                pieces.append((path, start, end))
        except BaseException:
            self.close()
            raise
        self.pieces: List[Tuple[str, int, Optional[int]]] = pieces

    def _decompressed(self, path: str) -> str:
        if self.directory is None:
            raise ValueError(f"{path} is {compression(path)}-compressed, which the corpus reader cannot stream: "
                             "give RankPieces a directory to decompress it into, or decompress it")
        tmp = _decompressed_copy(path, self.directory, f".bidirmoe-rank{self.rank}-")
        self.temporary.append(tmp)
        return tmp

    def close(self) -> None:
        """Delete the temporary files (decompressed bz2/xz), if any."""
        for tmp in self.temporary:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.temporary = []

    def __enter__(self) -> "RankPieces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RankPieces(rank {self.rank} of {self.world}, {len(self.pieces)} piece(s) of "
                f"{len(self.sources)} file(s))")


def as_pieces(corpus_file, rank: int = 0, world: int = 1):
    """``corpus_file`` as the readers take it: a list or tuple of paths
    becomes the :class:`RankPieces` of process ``rank`` of ``world`` (all of
    them, one after another, in a single process); anything else is
    returned as it is."""
    if isinstance(corpus_file, (list, tuple)):
        return RankPieces(corpus_file, rank, world)
    return corpus_file


def corpus_source(corpus_file):
    """What the Rust reader streams for ``corpus_file``: its path, or the
    list of pieces of a :class:`RankPieces`."""
    if isinstance(corpus_file, RankPieces):
        return list(corpus_file.pieces)
    return os.fspath(corpus_file)


def count_in_order(counter, sources: Sequence[str], directory: str) -> None:
    """Count ``sources`` one after another into ``counter`` (a
    ``_core.VocabCounter``), as one process counts them joined: plain and
    gzip files in place, bz2 and xz through a decompressed temporary copy in
    ``directory`` (deleted at once)."""
    for src in sources:
        src = os.fspath(src)
        if compression(src) not in ("bzip2", "xz"):
            counter.add_file(src)
            continue
        tmp = _decompressed_copy(src, directory, ".bidirmoe-count-")
        try:
            counter.add_file(tmp)
        finally:
            os.unlink(tmp)
