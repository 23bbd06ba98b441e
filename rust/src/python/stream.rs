//! Training examples as numpy batches for the torch backend (`batches.rs`).

use super::input::{make_source, Src};
use super::schedule::{resume_dict, train_config, Schedule};
use super::vocab::PyVocab;
use crate::batches::{Batch, BatchSettings, BatchStream, Layout, Next, StreamSource};
use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A batch stream's settings dict (see `BatchStream` in _core.pyi); unknown keys are refused.
pub(crate) fn batch_settings(d: &Bound<'_, PyDict>) -> PyResult<BatchSettings> {
    const KEYS: [&str; 7] = ["kind", "window", "shrink_windows", "negative", "batch_targets", "max_len", "prefetch"];
    for k in d.keys() {
        let k: String = k.extract()?;
        if !KEYS.contains(&k.as_str()) {
            return Err(PyValueError::new_err(format!("unknown batch setting {k:?} (expected one of {KEYS:?})")));
        }
    }
    let int = |k: &str, default: Option<usize>| -> PyResult<usize> {
        match d.get_item(k)? {
            Some(v) => v.extract().map_err(|_| PyValueError::new_err(format!("batch setting {k:?} must be an int >= 0"))),
            None => default.ok_or_else(|| PyValueError::new_err(format!("batch setting {k:?} is required"))),
        }
    };
    let kind: String = match d.get_item("kind")? {
        Some(v) => v.extract()?,
        None => return Err(PyValueError::new_err("batch setting \"kind\" is required ('window' or 'sentence')")),
    };
    let layout = match kind.as_str() {
        "window" => Layout::Window {
            window: int("window", None)?,
            shrink: match d.get_item("shrink_windows")? {
                Some(v) => v.extract()?,
                None => true,
            },
        },
        "sentence" => Layout::Sentence { max_len: int("max_len", None)? },
        other => return Err(PyValueError::new_err(format!("batch kind must be 'window' or 'sentence', not {other:?}"))),
    };
    Ok(BatchSettings {
        layout,
        negative: int("negative", None)?,
        batch_targets: int("batch_targets", Some(4096))?,
        prefetch: int("prefetch", Some(8))?,
    })
}

/// A batch as a dict of numpy arrays (reshaped views of the Rust vectors, no copy).
pub(crate) fn batch_dict<'py>(py: Python<'py>, b: Batch, s: &BatchSettings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let (rows, k) = (b.rows, s.negative);
    match s.layout {
        Layout::Window { window, .. } => {
            d.set_item("targets", b.targets.into_pyarray(py))?;
            d.set_item("context", b.ids.into_pyarray(py).reshape([rows, 2 * window])?)?;
            if k > 0 {
                d.set_item("negatives", b.negatives.into_pyarray(py).reshape([rows, k])?)?;
            }
        }
        Layout::Sentence { max_len } => {
            d.set_item("tokens", b.ids.into_pyarray(py).reshape([rows, max_len])?)?;
            if k > 0 {
                d.set_item("negatives", b.negatives.into_pyarray(py).reshape([rows, max_len, k])?)?;
            }
        }
    }
    d.set_item("lr", b.lr)?;
    d.set_item("raw_words", b.raw_words)?;
    Ok(d)
}

/// One epoch of training examples as numpy batches, produced by the Rust
/// workers on a background thread (`batches.rs`).
#[pyclass(module = "bidirmoe._core", name = "BatchStream", frozen)]
pub struct PyBatchStream {
    inner: BatchStream,
    settings: BatchSettings,
    progress_cb: Option<PyObject>,
    report_every: Duration,
    last_report: Mutex<Instant>,
}

impl PyBatchStream {
    /// Ctrl-C and the progress callback, between batches; an error
    /// (KeyboardInterrupt, or raised by the callback) cancels the stream.
    /// A cancelled stream is being drained: neither runs again.
    fn tick(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.progress().cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = py.check_signals().and_then(|()| {
            let Some(cb) = &self.progress_cb else { return Ok(()) };
            {
                let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() < self.report_every {
                    return Ok(());
                }
                *last = Instant::now();
            }
            let p = self.inner.progress();
            cb.call1(py, (p.raw_words.load(Ordering::Relaxed), p.effective_words.load(Ordering::Relaxed), p.loss()))
                .map(|_| ())
        });
        if r.is_err() {
            self.inner.cancel();
        }
        r
    }
}

#[pymethods]
impl PyBatchStream {
    #[new]
    fn new(
        vocab: &PyVocab,
        source: &Bound<'_, PyAny>,
        settings: &Bound<'_, PyDict>,
        schedule: Schedule,
    ) -> PyResult<Self> {
        let settings = batch_settings(settings)?;
        settings.check(&vocab.inner).map_err(PyValueError::new_err)?;
        let cfg = train_config(&schedule);
        let src = match make_source(source, &schedule)? {
            Src::File(split) => StreamSource::File(split),
            Src::Queue(rx) => StreamSource::Queue(rx),
        };
        let inner = BatchStream::start_with(vocab.inner.clone(), src, settings, cfg, schedule.progress())
            .map_err(PyRuntimeError::new_err)?;
        Ok(PyBatchStream {
            inner,
            settings,
            report_every: schedule.report_interval(),
            progress_cb: schedule.progress_cb,
            last_report: Mutex::new(Instant::now()),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next batch; waits with the GIL released, checking for Ctrl-C
    /// and reporting progress about every 20 ms.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let mut wait = Duration::ZERO;
        loop {
            self.tick(py)?;
            let inner = &self.inner;
            let next = if wait.is_zero() { inner.next(wait) } else { py.allow_threads(|| inner.next(wait)) };
            match next {
                Next::Batch(b) => return batch_dict(py, b, &self.settings).map(Some),
                Next::End => return Ok(None),
                Next::Failed(e) => return Err(PyRuntimeError::new_err(e)),
                Next::Waiting => wait = Duration::from_millis(20),
            }
        }
    }

    /// In a run of several processes: all of them together have read
    /// `global` corpus words of this epoch (the learning rate follows that
    /// count; between syncs it extrapolates from this stream's own words).
    fn set_global_words(&self, global: u64) {
        let p = self.inner.progress();
        p.gate.set_global_words(global, p.raw_words.load(Ordering::Relaxed));
    }

    /// Corpus words this stream's workers have read so far.
    #[getter]
    fn raw_words(&self) -> u64 {
        self.inner.progress().raw_words.load(Ordering::Relaxed)
    }

    /// Stop reading the corpus: every worker ends after its current
    /// sentence and sends its partial batch.
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Wait for the run to end; (raw_words, effective_words, examples, loss=0).
    fn finish(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, f64)> {
        let (raw, eff, ex) = py.allow_threads(|| self.inner.finish()).map_err(PyRuntimeError::new_err)?;
        Ok((raw, eff, ex, 0.0))
    }

    /// Where a drained stream stopped, as train_epoch's resume state (None for a JobQueue source).
    fn resume_state<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.inner.resume_state().map_err(PyRuntimeError::new_err)? {
            Some((split, states)) => resume_dict(py, &split, &states).map(Some),
            None => Ok(None),
        }
    }
}
