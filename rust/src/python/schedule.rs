//! One training epoch from Python: the schedule dict, resume states, and the
//! epoch driver (GIL released, Ctrl-C and progress on the calling thread),
//! written once for every model.

use super::arrays::lock_slice;
use super::input::{make_source, PyIdCache, Src};
use super::vocab::PyVocab;
use crate::corpus::SplitState;
use crate::models::{HotSpec, Model};
use crate::trainer::{run_epoch_synced, Progress, Source, SyncGate, TrainConfig, WorkerState};
use crate::vocab::Vocab;
use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A model's arguments from Python (its arrays and settings): `with` checks
/// and borrows the arrays and lends the model to `f`.
pub(crate) trait Binding {
    type Model<'a>: Model;
    fn with<R>(&self, voc: &Vocab, lockf: &[f32], f: impl FnOnce(&Self::Model<'_>) -> PyResult<R>) -> PyResult<R>;
}

/// Train one epoch of a bound model in place. Returns (raw, effective, examples, loss).
pub(crate) fn train_epoch_of<B: Binding>(
    py: Python<'_>,
    vocab: &PyVocab,
    binding: &B,
    source: &Bound<'_, PyAny>,
    schedule: &Schedule,
) -> PyResult<(u64, u64, u64, f64)> {
    let voc = vocab.inner.clone();
    let lockf = lockf_of(py, schedule, voc.len())?;
    let src = make_source(source, schedule)?;
    binding.with(&voc, lock_slice(&lockf), |m| run_py_epoch(py, m, &voc, &src, schedule))
}

/// gensim's `vectors_lockf`, checked: one factor, or one per word.
pub(crate) fn lockf_of<'py>(py: Python<'py>, sch: &Schedule, v: usize) -> PyResult<Option<numpy::PyReadonlyArray1<'py, f32>>> {
    let Some(obj) = &sch.lockf else { return Ok(None) };
    let arr = obj.bind(py).downcast::<PyArray1<f32>>().map_err(|_| {
        PyValueError::new_err("vectors_lockf must be a 1-D float32 numpy array")
    })?;
    let n = arr.len();
    if n != 1 && n != v {
        return Err(PyValueError::new_err(format!("vectors_lockf has {n} entries: expected 1 or one per word ({v})")));
    }
    if !arr.is_c_contiguous() || arr.data() as usize % std::mem::align_of::<f32>() != 0 {
        return Err(PyValueError::new_err("vectors_lockf must be a contiguous, aligned float32 array"));
    }
    Ok(Some(arr.try_readonly().map_err(|e| PyValueError::new_err(format!("vectors_lockf is in use: {e}")))?))
}

/// The part of a reader's state that a whole file and each of its pieces share.
fn split_header<'py>(py: Python<'py>, s: &SplitState) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("gzip", s.gzip)?;
    d.set_item("file_len", s.file_len)?;
    d.set_item("stream_offset", s.stream_offset)?;
    d.set_item("blocks", s.blocks)?;
    d.set_item("ended", s.ended)?;
    Ok(d)
}

/// Where a stopped epoch got to, as a plain dict (JSON-safe) for checkpoints:
/// {"gzip", "file_len", "stream_offset", "blocks", "ended", "workers": [{"pending": [[start, end], ...],
/// "rng", "lr", "since_lr"}, ...]}, and for a source of pieces "pieces": [{"gzip", "file_len",
/// "stream_offset", "blocks", "ended", "pending": [per worker: [[start, end], ...]]}, ...].
pub(crate) fn resume_dict<'py>(py: Python<'py>, split: &SplitState, workers: &[WorkerState]) -> PyResult<Bound<'py, PyDict>> {
    let d = split_header(py, split)?;
    let list = PyList::empty(py);
    for (pending, st) in split.workers.iter().zip(workers) {
        let w = PyDict::new(py);
        w.set_item("pending", pending.iter().map(|&(s, e)| vec![s, e]).collect::<Vec<_>>())?;
        w.set_item("rng", st.rng)?;
        w.set_item("lr", st.lr)?;
        w.set_item("since_lr", st.since_lr)?;
        list.append(w)?;
    }
    d.set_item("workers", list)?;
    if !split.pieces.is_empty() {
        let pieces = PyList::empty(py);
        for p in &split.pieces {
            let e = split_header(py, p)?;
            let pending: Vec<Vec<Vec<u64>>> =
                p.workers.iter().map(|w| w.iter().map(|&(s, e)| vec![s, e]).collect()).collect();
            e.set_item("pending", pending)?;
            pieces.append(e)?;
        }
        d.set_item("pieces", pieces)?;
    }
    Ok(d)
}

/// Byte ranges `[[start, end], ...]` of a resume state, checked.
fn ranges_of(raw: Vec<Vec<u64>>) -> PyResult<Vec<(u64, u64)>> {
    if raw.iter().any(|r| r.len() != 2 || r[0] > r[1]) {
        return Err(PyValueError::new_err("malformed resume state: a range is not [start, end] with start <= end"));
    }
    Ok(raw.iter().map(|r| (r[0], r[1])).collect())
}

/// A `resume_dict`, parsed once when the schedule is read.
pub(crate) struct Resume {
    pub(crate) split: SplitState,
    workers: Vec<WorkerState>,
}

impl<'py> FromPyObject<'py> for Resume {
    fn extract_bound(d: &Bound<'py, PyAny>) -> PyResult<Self> {
        let (split, workers) = resume_of(d)?;
        Ok(Resume { split, workers })
    }
}

pub(crate) fn resume_of(d: &Bound<'_, PyAny>) -> PyResult<(SplitState, Vec<WorkerState>)> {
    let bad = |e: PyErr| PyValueError::new_err(format!("malformed resume state: {e}"));
    let get = |k: &str| d.get_item(k).map_err(bad);
    let mut split = SplitState {
        gzip: get("gzip")?.extract().map_err(bad)?,
        file_len: get("file_len")?.extract().map_err(bad)?,
        stream_offset: get("stream_offset")?.extract().map_err(bad)?,
        // Absent in checkpoints from before sharded training: one process, so unused.
        blocks: match d.get_item("blocks") {
            Ok(v) => v.extract().map_err(bad)?,
            Err(_) => 0,
        },
        workers: Vec::new(),
        ended: false,
        pieces: Vec::new(),
    };
    let mut states = Vec::new();
    for w in get("workers")?.try_iter().map_err(bad)? {
        let w = w?;
        let raw: Vec<Vec<u64>> = w.get_item("pending").map_err(bad)?.extract().map_err(bad)?;
        split.workers.push(ranges_of(raw)?);
        states.push(WorkerState {
            rng: w.get_item("rng").map_err(bad)?.extract().map_err(bad)?,
            lr: w.get_item("lr").map_err(bad)?.extract().map_err(bad)?,
            since_lr: w.get_item("since_lr").map_err(bad)?.extract().map_err(bad)?,
        });
    }
    if states.is_empty() {
        return Err(PyValueError::new_err("malformed resume state: no workers"));
    }
    // A corpus of several pieces (`FileSplit::Pieces`): each piece's state.
    if let Ok(pieces) = d.get_item("pieces") {
        for p in pieces.try_iter().map_err(bad)? {
            let p = p?;
            let get = |k: &str| p.get_item(k).map_err(bad);
            let raw: Vec<Vec<Vec<u64>>> = get("pending")?.extract().map_err(bad)?;
            if raw.len() != states.len() {
                return Err(PyValueError::new_err("malformed resume state: a piece's workers differ from the epoch's"));
            }
            split.pieces.push(SplitState {
                gzip: get("gzip")?.extract().map_err(bad)?,
                file_len: get("file_len")?.extract().map_err(bad)?,
                stream_offset: get("stream_offset")?.extract().map_err(bad)?,
                blocks: get("blocks")?.extract().map_err(bad)?,
                ended: get("ended")?.extract().map_err(bad)?,
                workers: raw.into_iter().map(ranges_of).collect::<PyResult<_>>()?,
                pieces: Vec::new(),
            });
        }
    }
    Ok((split, states))
}

/// Schedule and bookkeeping shared by every model's epoch call.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Schedule {
    pub(crate) alpha: f32,
    pub(crate) min_alpha: f32,
    pub(crate) total_words: u64,
    pub(crate) words_before: u64,
    pub(crate) seed: u64,
    pub(crate) epoch: u64,
    pub(crate) workers: usize,
    pub(crate) compute_loss: bool,
    pub(crate) report_delay: f64,
    pub(crate) progress_cb: Option<PyObject>,
    pub(crate) max_words: u64,
    /// gensim's `vectors_lockf` (1-D float32, length 1 or V), or None.
    pub(crate) lockf: Option<PyObject>,
    /// A stopped epoch's state (`resume_dict`) to continue, or None.
    pub(crate) resume: Option<Resume>,
    /// Data-parallel training: this process's shard of the corpus, (rank, world)
    /// (a source of pieces is already this process's part: `shard` then only
    /// gives the world size).
    #[pyo3(default)]
    pub(crate) shard: Option<(u64, u64)>,
    /// Data-parallel training: `sync(local_words) -> global_words` is called
    /// every `sync_words` of this process's corpus words with the workers
    /// parked (it averages the parameters with the other processes).
    #[pyo3(default)]
    pub(crate) sync: Option<PyObject>,
    #[pyo3(default)]
    pub(crate) sync_words: u64,
    /// Data-parallel training: `sync_poll() -> bool`, called about every
    /// millisecond while the workers train; True parks them and calls
    /// `sync(local_words, False)` (e.g. to take in sums that arrived).
    #[pyo3(default)]
    pub(crate) sync_poll: Option<PyObject>,
    /// Vocabulary ids of the corpus file kept between the epochs of one
    /// `train()` call (`IdCache`), or None: read the file every epoch.
    #[pyo3(default)]
    pub(crate) id_cache: Option<Py<PyIdCache>>,
    /// Hot-row privatization with 2 or more workers (`models::HotSpec`):
    /// the rows of the `hot_rows` most frequent words are private to each
    /// worker and merged every `hot_every` trained examples (0: plain Hogwild).
    #[pyo3(default)]
    pub(crate) hot_rows: usize,
    #[pyo3(default)]
    pub(crate) hot_every: u64,
}

impl Schedule {
    /// How often progress is reported: `report_delay` seconds, at least
    /// 1 ms and at most an hour.
    pub(crate) fn report_interval(&self) -> Duration {
        Duration::from_secs_f64(self.report_delay.clamp(0.001, 3600.0))
    }

    /// The epoch's shared counters, with the sync gate when training in several processes.
    pub(crate) fn progress(&self) -> Progress {
        let world = self.shard.map_or(1, |(_, w)| w);
        let every = if self.sync.is_some() { self.sync_words } else { 0 };
        Progress { gate: SyncGate::new(every, world), ..Progress::default() }
    }
}

/// The trainer's configuration for one epoch of `sch`.
pub(crate) fn train_config(sch: &Schedule) -> TrainConfig {
    TrainConfig {
        workers: sch.workers,
        alpha: sch.alpha,
        min_alpha: sch.min_alpha,
        total_words: sch.total_words,
        words_before: sch.words_before,
        seed: sch.seed,
        epoch: sch.epoch,
        want_loss: sch.compute_loss,
        tick: sch.report_interval(),
        max_words: sch.max_words,
        resume: sch.resume.as_ref().map(|r| r.workers.clone()).unwrap_or_default(),
        hot: HotSpec { rows: sch.hot_rows, every: sch.hot_every },
    }
}

/// Run one epoch of `model` with the GIL released; the calling thread
/// checks for Ctrl-C and reports progress. Returns (raw, effective, examples, loss).
pub(crate) fn run_py_epoch<M: crate::models::Model>(
    py: Python<'_>,
    model: &M,
    voc: &Arc<Vocab>,
    src: &Src,
    sch: &Schedule,
) -> PyResult<(u64, u64, u64, f64)> {
    let cfg = train_config(sch);
    let progress = sch.progress();
    let mut interrupted: Option<PyErr> = None;
    let mut sync_failed: Option<PyErr> = None;
    let mut poll_failed: Option<PyErr> = None;
    let progress_cb = &sch.progress_cb;
    let sync_cb = &sch.sync;
    let cache = sch.id_cache.as_ref().map(|c| &c.get().inner);
    let result = py.allow_threads(|| {
        let source = match (src, cache) {
            (Src::File(f), Some(cache)) => {
                cache.check(voc, &f.paths());
                Source::Cached(f, cache)
            }
            (Src::File(f), None) => Source::File(f),
            (Src::Queue(r), _) => Source::Queue(r),
        };
        let mut last = Instant::now();
        let on_tick = |p: &Progress| -> bool {
            Python::with_gil(|py| {
                if let Err(e) = py.check_signals() {
                    interrupted.get_or_insert(e);
                    return false;
                }
                if let Some(cb) = progress_cb {
                    if last.elapsed() >= cfg.tick {
                        last = Instant::now();
                        let args =
                            (p.raw_words.load(Ordering::Relaxed), p.effective_words.load(Ordering::Relaxed), p.loss());
                        if let Err(e) = cb.call1(py, args) {
                            interrupted.get_or_insert(e);
                            return false;
                        }
                    }
                }
                true
            })
        };
        let on_sync = |p: &Progress| -> bool {
            let Some(cb) = sync_cb else { return true };
            let local = p.raw_words.load(Ordering::Relaxed);
            let by_words = p.gate.due_by_words();
            Python::with_gil(|py| match cb.call1(py, (local, by_words)).and_then(|g| g.extract::<u64>(py)) {
                Ok(global) => {
                    p.gate.set_global_words(global, local);
                    true
                }
                Err(e) => {
                    sync_failed.get_or_insert(e);
                    false
                }
            })
        };
        let poll_cb = &sch.sync_poll;
        let on_poll = || -> bool {
            let Some(cb) = poll_cb else { return false };
            Python::with_gil(|py| match cb.call0(py).and_then(|r| r.extract::<bool>(py)) {
                Ok(yes) => yes,
                Err(e) => {
                    poll_failed.get_or_insert(e);
                    progress.cancel.store(true, Ordering::Relaxed);
                    false
                }
            })
        };
        run_epoch_synced(model, voc, source, &cfg, &progress, on_tick, on_sync, on_poll)
    });
    // A failed or stopping sync ends the epoch on every process at the same point.
    let interrupted = sync_failed.or(poll_failed).or(interrupted);
    if let Some(e) = interrupted {
        // Tell the caller how far the epoch got (for exact checkpoints).
        let _ = e.value(py).setattr("bidirmoe_epoch_words", progress.raw_words.load(Ordering::Relaxed));
        if let (Src::File(split), Ok(())) = (src, &result) {
            let workers = progress.workers.lock().unwrap_or_else(|p| p.into_inner());
            let cursors: Vec<_> = workers.iter().map(|(c, _)| c.clone()).collect();
            let states: Vec<_> = workers.iter().map(|(_, s)| *s).collect();
            let _ = e.value(py).setattr("bidirmoe_resume", resume_dict(py, &split.state(&cursors), &states)?);
        }
        return Err(e);
    }
    result.map_err(PyRuntimeError::new_err)?;
    Ok((
        progress.raw_words.load(Ordering::Relaxed),
        progress.effective_words.load(Ordering::Relaxed),
        progress.examples.load(Ordering::Relaxed),
        progress.loss(),
    ))
}
