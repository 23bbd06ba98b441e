//! Corpus input: files (checked, then split by byte range in `corpus.rs`) and
//! Python iterables of sentences (converted into jobs on a bounded queue).

use super::schedule::Schedule;
use super::vocab::PyVocab;
use crate::corpus::{self, token_str, FileSplit, Piece};
use crate::idcache::IdCache;
use crate::trainer::Job;
use crate::vocab::Vocab;
use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> PyErr {
    match e.kind() {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(format!("corpus file not found: {}", path.display())),
        _ => PyRuntimeError::new_err(format!("cannot read corpus file {}: {e}", path.display())),
    }
}

pub(crate) fn check_file(path: &Path) -> PyResult<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => match corpus::unsupported_compression(path) {
            Ok(Some(kind)) => Err(PyValueError::new_err(format!(
                "corpus_file {} is {kind}-compressed; corpus_file reads plain or gzip text: decompress it, \
                 or pass bidirmoe.LineSentence(path) as the corpus",
                path.display()
            ))),
            Ok(None) => Ok(()),
            Err(e) => Err(io_err(path, e)),
        },
        Ok(_) => Err(PyValueError::new_err(format!("corpus_file is not a regular file: {}", path.display()))),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The tokens of a non-empty list of str joined by NUL, if none contains one.
pub(crate) fn joined(sep: &Bound<'_, PyString>, list: &Bound<'_, PyList>) -> Option<String> {
    let n = list.len();
    if n == 0 {
        return None;
    }
    let s = sep.call_method1("join", (list,)).ok()?;
    let text = s.downcast::<PyString>().ok()?.to_string_lossy().into_owned();
    (text.bytes().filter(|&b| b == 0).count() == n - 1).then_some(text)
}

/// Walk a Python iterable of sentences (each an iterable of str tokens),
/// calling `on_token` per token and `on_end` per sentence. Strings as
/// sentences and non-str tokens raise TypeError naming what to pass.
pub(crate) fn visit_sentences(
    sentences: &Bound<'_, PyAny>,
    mut on_token: impl FnMut(&str),
    mut on_end: impl FnMut(),
) -> PyResult<()> {
    let sep = &PyString::new(sentences.py(), "\0");
    for (n, sent) in sentences.try_iter()?.enumerate() {
        let sent = sent?;
        if sent.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!(
                "sentence {n} is a str, but each sentence must be a list of str tokens: pass e.g. \
                 [['hello', 'world'], ['second', 'sentence']], or text.split() per line (see bidirmoe.LineSentence)"
            )));
        }
        let mut tok = |t: &Bound<'_, PyAny>| -> PyResult<()> {
            let s = t.downcast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "sentence {n} contains a token of type {}, but tokens must be str",
                    t.get_type().name().map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
                ))
            })?;
            on_token(&s.to_string_lossy());
            Ok(())
        };
        if let Ok(list) = sent.downcast::<PyList>() {
            // One conversion per sentence, not per token: join the tokens
            // with NUL in C and split the text here (the stable ABI of
            // Python 3.9 can only copy a str out, which per token costs
            // more than training). Tokens that are not str, or that hold
            // a NUL themselves, take the per-token path.
            if let Some(text) = joined(sep, list) {
                for t in text.split('\0') {
                    on_token(t);
                }
                on_end();
                continue;
            }
            for t in list.iter() {
                tok(&t)?;
            }
        } else if let Ok(tuple) = sent.downcast::<PyTuple>() {
            for t in tuple.iter() {
                tok(&t)?;
            }
        } else {
            let it = sent.try_iter().map_err(|_| {
                PyTypeError::new_err(format!(
                    "sentence {n} is a {}, but each sentence must be a list of str tokens",
                    sent.get_type().name().map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
                ))
            })?;
            for t in it {
                tok(&t?)?;
            }
        }
        on_end();
    }
    Ok(())
}

/// Bounded queue of jobs from a Python iterable to the workers.
#[pyclass(module = "bidirmoe._core", frozen)]
pub struct JobQueue {
    vocab: Arc<Vocab>,
    tx: Mutex<Option<Sender<Job>>>,
    rx: Receiver<Job>,
    closed: AtomicBool,
}

#[pymethods]
impl JobQueue {
    #[new]
    #[pyo3(signature = (vocab, capacity=8))]
    fn new(vocab: &PyVocab, capacity: usize) -> Self {
        let (tx, rx) = bounded(capacity.max(1));
        JobQueue { vocab: vocab.inner.clone(), tx: Mutex::new(Some(tx)), rx, closed: AtomicBool::new(false) }
    }

    /// Convert a batch of sentences and queue it, waiting (GIL released)
    /// while the queue is full. Returns False once the queue is closed.
    fn put(&self, py: Python<'_>, sentences: &Bound<'_, PyAny>) -> PyResult<bool> {
        let job = std::cell::RefCell::new(Job::default());
        let vocab = &self.vocab;
        visit_sentences(sentences, |t| job.borrow_mut().push_token(vocab, t), || job.borrow_mut().end_sentence())?;
        let mut job = job.into_inner();
        job.end_sentence();
        let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return Ok(false) };
        py.allow_threads(|| loop {
            if self.closed.load(Ordering::Relaxed) {
                return Ok(false);
            }
            match tx.send_timeout(job, Duration::from_millis(50)) {
                Ok(()) => return Ok(true),
                Err(SendTimeoutError::Timeout(j)) => job = j,
                Err(SendTimeoutError::Disconnected(_)) => return Ok(false),
            }
        })
    }

    /// No more jobs: workers finish what is queued and stop.
    fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Stop now: producers' `put` returns False, queued jobs are dropped.
    fn cancel(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.close();
        while self.rx.try_recv().is_ok() {}
    }
}

/// Vocabulary ids of a corpus file kept between the epochs of one
/// `train()` call, at most `cap_bytes` of them (see `crate::idcache`);
/// passed to each epoch as the schedule's `id_cache`.
#[pyclass(module = "bidirmoe._core", name = "IdCache", frozen)]
pub struct PyIdCache {
    pub(crate) inner: IdCache,
}

#[pymethods]
impl PyIdCache {
    #[new]
    fn new(cap_bytes: usize) -> Self {
        PyIdCache { inner: IdCache::new(cap_bytes) }
    }

    /// Bytes of ids and sentence offsets held.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.bytes()
    }

    /// Byte ranges of the corpus recorded (one per worker and file piece).
    #[getter]
    fn ranges(&self) -> usize {
        self.inner.len()
    }
}

pub(crate) enum Src {
    File(FileSplit),
    Queue(Receiver<Job>),
}

pub(crate) fn make_source(source: &Bound<'_, PyAny>, sch: &Schedule) -> PyResult<Src> {
    if let Ok(q) = source.downcast::<JobQueue>() {
        if sch.resume.is_some() {
            return Err(PyValueError::new_err("only a corpus_file epoch can be resumed at a position"));
        }
        return Ok(Src::Queue(q.get().rx.clone()));
    }
    let (rank, world) = sch.shard.unwrap_or((0, 1));
    if world == 0 || rank >= world {
        return Err(PyValueError::new_err(format!("shard must be (rank, world) with rank < world, got ({rank}, {world})")));
    }
    if let Some(pieces) = piece_list(source)? {
        let split = match &sch.resume {
            None => FileSplit::pieces(&pieces, sch.workers),
            Some(r) => FileSplit::resume_pieces(&pieces, sch.workers, &r.split),
        };
        return split.map(|s| Src::File(s.balanced())).map_err(|e| pieces_err(&pieces, e));
    }
    let path: PathBuf = source.extract()?;
    check_file(&path)?;
    let split = match &sch.resume {
        None => FileSplit::shard(&path, sch.workers, rank, world),
        Some(r) => FileSplit::resume_shard(&path, sch.workers, &r.split, (rank, world)),
    };
    // Balanced: with several workers, one that finishes its share early
    // takes over unread chunks instead of waiting for the others.
    split.map(|s| Src::File(s.balanced())).map_err(|e| match e.kind() {
        // A checkpoint that does not fit this file (another or a changed corpus).
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            PyValueError::new_err(format!("cannot resume on {}: {e}", path.display()))
        }
        _ => io_err(&path, e),
    })
}

/// A list of pieces of a corpus, `[(path, start, end), ...]`: a plain
/// file's byte range `[start, end)`, or with `end` None the whole file
/// (plain or gzip; then `start` must be 0). Every file is checked.
pub(crate) fn pieces_of(list: &Bound<'_, PyAny>) -> PyResult<Vec<Piece>> {
    let raw: Vec<(PathBuf, u64, Option<u64>)> = list.extract().map_err(|e| {
        PyTypeError::new_err(format!("corpus pieces must be a list of (path, start, end or None) tuples: {e}"))
    })?;
    raw.into_iter()
        .map(|(path, start, end)| {
            check_file(&path)?;
            match end {
                Some(end) => Ok(Piece::Range(path, start, end)),
                None if start == 0 => Ok(Piece::Whole(path)),
                None => Err(PyValueError::new_err(format!(
                    "piece of {}: a whole file (end None) starts at 0, got {start}",
                    path.display()
                ))),
            }
        })
        .collect()
}

/// The pieces of a source given as a list (`pieces_of`); None for a path.
fn piece_list(source: &Bound<'_, PyAny>) -> PyResult<Option<Vec<Piece>>> {
    if source.downcast::<PyList>().is_ok() {
        return pieces_of(source).map(Some);
    }
    Ok(None)
}

/// An error reading `pieces` as a Python exception (naming the first file).
pub(crate) fn pieces_err(pieces: &[Piece], e: std::io::Error) -> PyErr {
    let path = pieces.first().map(|p| p.path().to_path_buf()).unwrap_or_default();
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            PyValueError::new_err(format!("cannot resume on the corpus pieces ({} ...): {e}", path.display()))
        }
        std::io::ErrorKind::InvalidInput => PyValueError::new_err(format!("bad corpus piece: {e}")),
        _ => PyRuntimeError::new_err(format!("cannot read the corpus pieces: {e}")),
    }
}

/// Sentences of a corpus file as the trainer sees them (lists of str,
/// lines cut into 10,000-token chunks, invalid UTF-8 replaced); or of a
/// list of pieces of several files (`pieces_of`), in order.
#[pyfunction]
pub(crate) fn read_corpus_file(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<String>>> {
    let mut out = Vec::new();
    let mut push = |it: &mut dyn Iterator<Item = &[u8]>| {
        let s: Vec<String> = it.map(|t| token_str(t).into_owned()).collect();
        if !s.is_empty() {
            out.push(s);
        }
        true
    };
    if let Some(pieces) = piece_list(path)? {
        let split = FileSplit::pieces(&pieces, 1).map_err(|e| pieces_err(&pieces, e))?;
        py.allow_threads(|| split.for_worker(0, &mut corpus::Cursor::default(), &mut push))
            .map_err(|e| pieces_err(&pieces, e))?;
        return Ok(out);
    }
    let path: PathBuf = path.extract()?;
    check_file(&path)?;
    py.allow_threads(|| {
        corpus::for_each_sentence(&path, |it| {
            push(it);
        })
    })
    .map_err(|e| io_err(&path, e))?;
    Ok(out)
}
