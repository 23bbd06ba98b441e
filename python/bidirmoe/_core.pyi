"""Type stubs for the compiled Rust core ``bidirmoe._core``."""

from os import PathLike
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

MAX_SENTENCE_LEN: int

class VocabCounter:
    """Streaming word counter with gensim's max_vocab_size pruning."""

    def __init__(self, max_vocab_size: Optional[int] = None) -> None: ...
    def add_sentences(self, sentences: Iterable[Sequence[str]]) -> None: ...
    def add_file(self, path: Union[str, PathLike]) -> None: ...
    @property
    def total_words(self) -> int: ...
    @property
    def sentences(self) -> int: ...
    @property
    def prunes(self) -> int: ...
    def __len__(self) -> int: ...
    def raw_counts(self) -> Dict[str, int]: ...
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

class JobQueue:
    """Bounded queue of sentence batches from a Python iterable to the Rust workers."""

    def __init__(self, vocab: Vocab, capacity: int = 8) -> None: ...
    def put(self, sentences: Iterable[Sequence[str]]) -> bool: ...
    def close(self) -> None: ...
    def cancel(self) -> None: ...

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
    workers: List[WorkerResume]

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

def train_epoch(
    model: str,
    vocab: Vocab,
    syn0: npt.NDArray[np.float32],
    syn1neg: Optional[npt.NDArray[np.float32]],
    syn1: Optional[npt.NDArray[np.float32]],
    source: Union[str, PathLike, JobQueue],
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
    arrays: Dict[str, Optional[npt.NDArray[np.float32]]],
    settings: Dict[str, object],
    source: Union[str, PathLike, JobQueue],
    schedule: Schedule,
) -> Tuple[int, int, int, float]: ...
def moe_step(
    vocab: Vocab,
    arrays: Dict[str, Optional[npt.NDArray[np.float32]]],
    settings: Dict[str, object],
    words: Sequence[int],
    offsets: Sequence[int],
    target: int,
    lr: float,
    seed: int = 0,
    target_pos: Optional[int] = None,
) -> float: ...
def train_epoch_attention(
    vocab: Vocab,
    arrays: Dict[str, Optional[npt.NDArray[np.float32]]],
    settings: Dict[str, object],
    source: Union[str, PathLike, JobQueue],
    schedule: Schedule,
) -> Tuple[int, int, int, float]: ...
def attention_step(
    vocab: Vocab,
    arrays: Dict[str, Optional[npt.NDArray[np.float32]]],
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
