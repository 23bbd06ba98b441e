"""Type stubs for the compiled Rust core ``bidirmoe._core``."""

from os import PathLike
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

MAX_SENTENCE_LEN: int

class VocabCounter:
    """Streaming word counter with gensim's max_vocab_size pruning."""

    def __init__(self, max_vocab_size: Optional[int] = None,
                 trim_rule: Optional[Callable[[str, int, int], int]] = None) -> None: ...
    def add_sentences(self, sentences: Iterable[Sequence[str]]) -> None: ...
    def add_file(self, path: Union[str, PathLike, Pieces], shard: Optional[Tuple[int, int]] = None,
                 threads: int = 1) -> None:
        """Count a file, or with ``shard=(rank, world)`` that process's share of it (as training splits it),
        or a list of pieces of several files in order (``bidirmoe.corpora.shard_plan``). With ``threads`` > 1
        a plain file or share (no pieces, no ``max_vocab_size``) is counted by that many threads: same counts."""
    @property
    def total_words(self) -> int: ...
    @property
    def sentences(self) -> int: ...
    @property
    def prunes(self) -> int: ...
    def __len__(self) -> int: ...
    def raw_counts(self) -> Dict[str, int]: ...
    def export_counts(self) -> Tuple[bytes, npt.NDArray[np.uint64]]:
        """The raw counts as words joined by "\\n" (UTF-8) and their counts, to send to another process."""
    def merge_counts(self, words: bytes, counts: Sequence[int], total_words: int, sentences: int) -> None:
        """Add another counter's ``export_counts`` and totals."""
    def finish(self, min_count: int, max_final_vocab: Optional[int], sample: float, ns_exponent: float, hs: bool) -> Vocab: ...

class Vocab:
    """A finished vocabulary in descending frequency order, with sampling tables."""

    @staticmethod
    def from_words(words: List[str], counts: List[int], sample: float, ns_exponent: float, hs: bool,
                   total_words: int = 0, sentences: int = 0, effective_min_count: int = 1) -> Vocab: ...
    def __len__(self) -> int: ...
    @property
    def words(self) -> List[str]: ...
    @property
    def counts(self) -> npt.NDArray[np.uint64]: ...
    @property
    def total_words(self) -> int: ...
    @property
    def sentences(self) -> int: ...
    @property
    def effective_min_count(self) -> int: ...
    @property
    def retained_words(self) -> int: ...
    @property
    def expected_kept_words(self) -> float: ...
    @property
    def keep_probability(self) -> npt.NDArray[np.float64]: ...
    def sample_negatives(self, n: int, seed: int) -> npt.NDArray[np.uint32]: ...
    def huffman(self) -> Optional[Tuple[List[List[int]], List[List[int]]]]: ...
    def huffman_arrays(self) -> Tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(codes, points, lengths)``: the Huffman paths as (V, L) arrays, codes
        padded with 0 and points with -1 (L = the longest code), and each word's
        code length. ValueError if the vocabulary was built without hs."""

class JobQueue:
    """Bounded queue of sentence batches from a Python iterable to the Rust workers."""

    def __init__(self, vocab: Vocab, capacity: int = 8) -> None: ...
    def put(self, sentences: Iterable[Sequence[str]]) -> bool: ...
    def close(self) -> None: ...
    def cancel(self) -> None: ...

class IdCache:
    """Vocabulary ids of a plain-text corpus file kept between the epochs of
    one ``train()`` call (at most ``cap_bytes``); an epoch's schedule takes it
    as ``id_cache``."""

    def __init__(self, cap_bytes: int) -> None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def ranges(self) -> int: ...

# A model's named parameter arrays, and where an epoch reads its corpus.
Arrays = Dict[str, Optional[npt.NDArray[np.float32]]]
# Pieces of several files, read in order: (path, start, end) byte ranges of
# plain files, (path, 0, None) whole plain or gzip files.
Pieces = List[Tuple[Union[str, PathLike], int, Optional[int]]]
Source = Union[str, PathLike, Pieces, JobQueue]

class WorkerResume(TypedDict):
    pending: List[List[int]]  # [start, end) byte ranges still to read
    rng: int
    lr: float
    since_lr: int

class ResumeState(TypedDict):
    """Where a stopped epoch got to (attached to the exception as ``bidirmoe_resume``)."""

    gzip: bool
    file_len: int
    stream_offset: int
    blocks: int  # gzip blocks cut so far (how blocks are dealt to ranks)
    ended: bool  # gzip: the decoder reached the end of the stream
    workers: List[WorkerResume]  # with pieces: every piece's ranges together (a summary)
    pieces: List[PieceResume]  # only for a source of pieces: each piece's own state

class PieceResume(TypedDict):
    gzip: bool
    file_len: int
    stream_offset: int
    blocks: int
    ended: bool
    pending: List[List[List[int]]]  # per worker: [start, end) byte ranges of this piece still to read

class Schedule(TypedDict):
    alpha: float
    min_alpha: float
    total_words: int
    words_before: int
    seed: int
    epoch: int
    workers: int
    compute_loss: bool
    report_delay: float
    progress_cb: Optional[Callable[[int, int, float], None]]
    max_words: int
    lockf: Optional[npt.NDArray[np.float32]]  # vectors_lockf: length 1 or one per word
    resume: Optional[ResumeState]

class DistributedSchedule(Schedule, total=False):
    """Extra keys of a run in several processes (see bidirmoe.torch.distributed)."""

    shard: Tuple[int, int]  # (rank, world): this process's share of the corpus file
    sync: Callable[[int], int]  # sync(local_words) -> global words; called with the workers parked
    sync_words: int  # local corpus words between two sync calls

class BatchSettings(TypedDict, total=False):
    kind: str  # "window" or "sentence" (required)
    window: int  # window kind (required): context offsets -window..-1, 1..window
    shrink_windows: bool  # window kind: word2vec's reduced window (default True)
    negative: int  # K negatives per target, 0 = none (required)
    batch_targets: int  # targets per batch (default 4096); sentence kind: at most this many words
    max_len: int  # sentence kind (required): chunk length, >= 2
    prefetch: int  # finished batches the channel holds before the workers wait (default 8)

# One batch. Window kind: "targets" (B,), "context" (B, 2*window), "negatives" (B, K) if K > 0;
# sentence kind: "tokens" (B, max_len), "negatives" (B, max_len, K) if K > 0. Both: "lr", "raw_words".
Batch = Dict[str, Union[npt.NDArray[np.int64], float, int]]

class BatchStream:
    """One epoch of training examples as numpy batches, made by the Rust workers.

    The corpus (a file, or a ``JobQueue`` fed from an iterable) is read,
    subsampled and windowed on ``schedule["workers"]`` threads exactly as
    ``train_epoch`` does (same learning-rate schedule, resume and progress;
    ``lockf`` is ignored), on a background thread; iterating yields batches
    (dicts of int64 arrays, -1 = no word). Window and negative draws follow
    the Rust CBOW / skip-gram / CBOW-MoE models draw for draw, so one worker
    and a seed give the same examples as those models, run after run.

    * ``"window"``: ``targets`` (B,); ``context`` (B, 2*window): column j is
      offset -window..-1 then 1..window (MoE's offset index), -1 outside the
      drawn window or the sentence; only targets with a context word appear.
    * ``"sentence"``: ``tokens`` (B, max_len): chunks of at most max_len words
      (chunks of fewer than 2 dropped), -1 padded; every word is a target.
    * ``negatives``: K draws per target from unigram^ns_exponent ((B, K), or
      (B, max_len, K) with -1 at padding), only when K > 0. A draw equal to its
      target is kept: mask it, as the Rust output layer skips it.
    * ``lr``: the learning rate of the batch's first target (float32 value);
      ``raw_words``: corpus words of the sentences that ended in this batch
      (they sum to the epoch's words). A worker's last batch may hold no
      targets (B = 0), only words.

    ``__next__`` waits with the GIL released, checks for Ctrl-C and calls
    ``progress_cb(raw, effective, 0.0)`` every ``report_delay``; an exception
    there (KeyboardInterrupt included) propagates and cancels the stream. A
    worker's error is a RuntimeError.

    Exact resume: after ``cancel()`` or an exception from ``__next__``, every
    worker stops after its current sentence and sends its partial batch. Keep
    iterating until StopIteration and train every batch received: then
    ``resume_state()`` is where the next stream (``schedule["resume"]``)
    continues, and the two streams together hold one epoch's examples.

    Example::

        stream = BatchStream(vocab, "corpus.txt", {"kind": "window", "window": 5, "negative": 5}, schedule)
        for batch in stream:
            train(batch["targets"], batch["context"], batch["negatives"], batch["lr"])
        raw_words, effective_words, examples, _ = stream.finish()
    """

    def __init__(self, vocab: Vocab, source: Source, settings: BatchSettings,
                 schedule: Schedule) -> None: ...
    def __iter__(self) -> BatchStream: ...
    def __next__(self) -> Batch: ...
    def cancel(self) -> None:
        """Stop reading: workers end after their current sentence (drain the stream for an exact resume)."""
    def set_global_words(self, global_words: int) -> None:
        """Several processes: all together have read ``global_words`` of this epoch (the learning rate follows)."""
    @property
    def raw_words(self) -> int: ...
    def finish(self) -> Tuple[int, int, int, float]:
        """Wait for the run to end: (raw_words, effective_words, examples, 0.0). Called before
        StopIteration, it stops the run and discards the batches not taken."""
    def resume_state(self) -> Optional[ResumeState]:
        """Where the drained stream stopped (None for a JobQueue source); RuntimeError while it
        still runs, holds batches, failed, or discarded batches."""

def train_epoch(
    model: str,
    vocab: Vocab,
    syn0: npt.NDArray[np.float32],
    syn1neg: Optional[npt.NDArray[np.float32]],
    syn1: Optional[npt.NDArray[np.float32]],
    source: Source,
    *,
    window: int,
    shrink_windows: bool,
    cbow_mean: bool,
    negative: int,
    hs: bool,
    schedule: Schedule,
) -> Tuple[int, int, int, float]: ...
def train_epoch_moe(
    vocab: Vocab,
    arrays: Arrays,
    settings: Dict[str, object],
    source: Source,
    schedule: Schedule,
) -> Tuple[int, int, int, float]: ...
def moe_step(
    vocab: Vocab,
    arrays: Arrays,
    settings: Dict[str, object],
    words: Sequence[int],
    offsets: Sequence[int],
    target: int,
    lr: float,
    seed: int = 0,
    target_pos: Optional[int] = None,
) -> float: ...
def tabular_fit(
    arrays: Arrays,
    settings: Dict[str, object],
    data: npt.NDArray[np.uint32],
    starts: Sequence[int],
    *,
    epochs: int,
    alpha: float,
    min_alpha: float,
    seed: int,
    workers: int,
) -> List[float]: ...
def tabular_predict(
    arrays: Arrays,
    settings: Dict[str, object],
    data: npt.NDArray[np.uint32],
    starts: Sequence[int],
    column: int,
    gates: bool = False,
) -> Tuple[npt.NDArray[np.float32], Optional[npt.NDArray[np.float32]]]: ...
def tabular_step(
    arrays: Arrays,
    settings: Dict[str, object],
    row: npt.NDArray[np.uint32],
    starts: Sequence[int],
    column: int,
    lr: float,
) -> float: ...
def train_epoch_attention(
    vocab: Vocab,
    arrays: Arrays,
    settings: Dict[str, object],
    source: Source,
    schedule: Schedule,
) -> Tuple[int, int, int, float]: ...
def attention_step(
    vocab: Vocab,
    arrays: Arrays,
    settings: Dict[str, object],
    context: Sequence[Tuple[int, int]],
    target: int,
    self_row: int,
    lr: float,
    seed: int = 0,
) -> float: ...
def simd_level() -> str: ...
def force_simd(level: Optional[str] = None) -> bool: ...
def read_corpus_file(path: Union[str, PathLike]) -> List[List[str]]: ...
def _panic_in_worker() -> None: ...
