//! bidirmoe's Rust core: word2vec-style streaming SGD.
//!
//! The modules hold the logic and know nothing about Python. With the
//! `python` feature (what maturin builds) this file also defines the
//! `bidirmoe._core` extension module: it only converts types, releases the
//! GIL around heavy work and maps errors to Python exceptions.

pub mod batches;
pub mod corpus;
pub mod hogwild;
pub mod models;
pub mod objective;
pub mod sampling;
pub mod simd;
pub mod trainer;
pub mod vocab;

#[cfg(feature = "python")]
mod python {
    use crate::batches::{self, Batch, BatchSettings, BatchStream, Layout, Next, StreamSource};
    use crate::corpus::{self, token_str, FileSplit, SplitState};
    use crate::hogwild::Hogwild;
    use crate::models::attention::Attention;
    use crate::models::cbow::Cbow;
    use crate::models::moe::{sc_set, Gates, Moe};
    use crate::models::Model;
    use crate::models::skipgram::SkipGram;
    use crate::objective::{OutputLayer, OutputSpec};
    use crate::sampling::{expected_kept, Rng};
    use crate::simd::{self, SigmoidTable};
    use crate::trainer::{run_epoch, Job, Progress, Source, TrainConfig, WorkerState};
    use crate::vocab::{Vocab, VocabSettings};
    use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
    use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
    use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyTypeError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyList, PyString, PyTuple};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    fn io_err(path: &Path, e: std::io::Error) -> PyErr {
        match e.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(format!("corpus file not found: {}", path.display())),
            _ => PyRuntimeError::new_err(format!("cannot read corpus file {}: {e}", path.display())),
        }
    }

    fn check_file(path: &Path) -> PyResult<()> {
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
    fn joined(sep: &Bound<'_, PyString>, list: &Bound<'_, PyList>) -> Option<String> {
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
    fn visit_sentences(
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

    /// Streaming word counter (the corpus is never stored).
    #[pyclass(module = "bidirmoe._core")]
    pub struct VocabCounter {
        inner: crate::vocab::VocabCounter,
        /// gensim-style trim_rule(word, count, min_count) -> 0 default / 1 discard / 2 keep,
        /// applied when max_vocab_size forces a prune.
        trim_rule: Option<PyObject>,
    }

    impl VocabCounter {
        /// End a sentence, pruning with the trim rule if there is one.
        fn end_sentence(inner: &mut crate::vocab::VocabCounter, rule: &Option<PyObject>, err: &mut Option<PyErr>) {
            match rule {
                None => inner.end_sentence(),
                Some(rule) => Python::with_gil(|py| {
                    inner.end_sentence_with(&mut |w, c, m| {
                        if err.is_some() {
                            return true;
                        }
                        // As gensim: 1 discards, 2 keeps, anything else (0, None,
                        // a non-integer) means the default min_count rule.
                        match rule.call1(py, (w, c, m)).map(|r| r.extract::<i64>(py).ok()) {
                            Ok(Some(1)) => false,
                            Ok(Some(2)) => true,
                            Ok(_) => c >= m,
                            Err(e) => {
                                *err = Some(e);
                                true
                            }
                        }
                    })
                }),
            }
        }
    }

    #[pymethods]
    impl VocabCounter {
        #[new]
        #[pyo3(signature = (max_vocab_size=None, trim_rule=None))]
        fn new(max_vocab_size: Option<usize>, trim_rule: Option<PyObject>) -> Self {
            VocabCounter { inner: crate::vocab::VocabCounter::new(max_vocab_size), trim_rule }
        }

        /// Count an iterable of sentences (lists of str).
        fn add_sentences(&mut self, sentences: &Bound<'_, PyAny>) -> PyResult<()> {
            let c = std::cell::RefCell::new(&mut self.inner);
            let mut err = None;
            let rule = &self.trim_rule;
            visit_sentences(sentences, |t| c.borrow_mut().add_token(t), || {
                Self::end_sentence(&mut c.borrow_mut(), rule, &mut err)
            })?;
            err.map_or(Ok(()), Err)
        }

        /// Count a plain or gzip file (lines cut into 10,000-token chunks),
        /// GIL released; Ctrl-C is checked about every million tokens.
        fn add_file(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
            check_file(&path)?;
            let inner = &mut self.inner;
            let rule = &self.trim_rule;
            let mut interrupted: Option<PyErr> = None;
            let mut next_check = 1u64 << 20;
            let result = py.allow_threads(|| {
                let mut r = corpus::SentenceReader::whole(corpus::open_stream(&path)?);
                while interrupted.is_none()
                    && r.next_sentence(|it| {
                        let mut any = false;
                        for t in it {
                            inner.add_token(&token_str(t));
                            any = true;
                        }
                        if any {
                            Self::end_sentence(inner, rule, &mut interrupted);
                        }
                    })?
                {
                    if inner.total_words >= next_check {
                        next_check = inner.total_words + (1 << 20);
                        if let Err(e) = Python::with_gil(|py| py.check_signals()) {
                            interrupted = Some(e);
                        }
                    }
                }
                Ok::<(), std::io::Error>(())
            });
            if let Some(e) = interrupted {
                return Err(e);
            }
            result.map_err(|e| io_err(&path, e))
        }

        #[getter]
        fn total_words(&self) -> u64 {
            self.inner.total_words
        }
        #[getter]
        fn sentences(&self) -> u64 {
            self.inner.sentences
        }
        #[getter]
        fn prunes(&self) -> u64 {
            self.inner.prunes
        }
        fn __len__(&self) -> usize {
            self.inner.len()
        }

        /// The raw counts as a dict (for inspection and tests).
        fn raw_counts(&self) -> std::collections::HashMap<String, u64> {
            self.inner.raw_counts().iter().map(|(k, v)| (k.clone(), *v)).collect()
        }

        /// Apply min_count / max_final_vocab and build the sampling tables.
        #[pyo3(signature = (min_count, max_final_vocab, sample, ns_exponent, hs))]
        fn finish(&self, min_count: u64, max_final_vocab: Option<usize>, sample: f64, ns_exponent: f64, hs: bool) -> PyVocab {
            let s = VocabSettings { min_count, max_final_vocab, sample, ns_exponent, hs };
            PyVocab { inner: Arc::new(Vocab::from_counter(&self.inner, &s)) }
        }
    }

    /// A finished vocabulary (frequency order) with its sampling tables.
    #[pyclass(module = "bidirmoe._core", name = "Vocab", frozen)]
    pub struct PyVocab {
        inner: Arc<Vocab>,
    }

    #[pymethods]
    impl PyVocab {
        /// Rebuild from saved words and counts (already in final order).
        #[staticmethod]
        #[pyo3(signature = (words, counts, sample, ns_exponent, hs, total_words=0, sentences=0, effective_min_count=1))]
        #[allow(clippy::too_many_arguments)]
        fn from_words(
            words: Vec<String>,
            counts: Vec<u64>,
            sample: f64,
            ns_exponent: f64,
            hs: bool,
            total_words: u64,
            sentences: u64,
            effective_min_count: u64,
        ) -> PyResult<Self> {
            if words.len() != counts.len() {
                return Err(PyValueError::new_err("words and counts differ in length"));
            }
            let s = VocabSettings { min_count: effective_min_count, max_final_vocab: None, sample, ns_exponent, hs };
            let mut v = Vocab::from_sorted(words.into_iter().zip(counts).collect(), &s);
            if v.index.len() != v.words.len() {
                return Err(PyValueError::new_err("duplicate words in vocabulary"));
            }
            v.total_words = total_words;
            v.sentences = sentences;
            Ok(PyVocab { inner: Arc::new(v) })
        }

        fn __len__(&self) -> usize {
            self.inner.len()
        }
        #[getter]
        fn words(&self) -> Vec<String> {
            self.inner.words.clone()
        }
        #[getter]
        fn counts<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
            self.inner.counts.clone().into_pyarray(py)
        }
        #[getter]
        fn total_words(&self) -> u64 {
            self.inner.total_words
        }
        #[getter]
        fn sentences(&self) -> u64 {
            self.inner.sentences
        }
        #[getter]
        fn effective_min_count(&self) -> u64 {
            self.inner.effective_min_count
        }
        #[getter]
        fn retained_words(&self) -> u64 {
            self.inner.retained_words()
        }
        /// Expected corpus words kept after subsampling (gensim's downsample total).
        #[getter]
        fn expected_kept_words(&self) -> f64 {
            expected_kept(&self.inner.counts, &self.inner.keep)
        }
        /// Probability that one occurrence of each word survives subsampling.
        #[getter]
        fn keep_probability<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
            self.inner.keep.iter().map(|&k| k as f64 / u32::MAX as f64).collect::<Vec<_>>().into_pyarray(py)
        }
        /// `n` draws from the negative-sampling distribution (for inspection and tests).
        fn sample_negatives<'py>(&self, py: Python<'py>, n: usize, seed: u64) -> Bound<'py, PyArray1<u32>> {
            let mut rng = Rng::new(seed);
            let t = &self.inner.negatives;
            if t.is_empty() {
                return Vec::<u32>::new().into_pyarray(py);
            }
            (0..n).map(|_| t.sample(&mut rng)).collect::<Vec<_>>().into_pyarray(py)
        }
        /// Huffman (codes, points) per word, or None without hierarchical softmax.
        fn huffman(&self) -> Option<(Vec<Vec<u8>>, Vec<Vec<u32>>)> {
            self.inner.huffman.as_ref().map(|h| (h.codes.clone(), h.points.clone()))
        }
        /// The Huffman paths as padded arrays: codes (int8, V x L, padded
        /// with 0), points (int64, V x L, padded with -1) and each word's code
        /// length (int64, V); L is the longest code.
        #[allow(clippy::type_complexity)]
        fn huffman_arrays<'py>(
            &self,
            py: Python<'py>,
        ) -> PyResult<(Bound<'py, PyArray2<i8>>, Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<i64>>)> {
            let h = self.inner.huffman.as_ref().ok_or_else(|| {
                PyValueError::new_err("this vocabulary has no Huffman tree: build it with hs=True")
            })?;
            let a = batches::huffman_arrays(h);
            let v = a.lengths.len();
            Ok((
                a.codes.into_pyarray(py).reshape([v, a.depth])?,
                a.points.into_pyarray(py).reshape([v, a.depth])?,
                a.lengths.into_pyarray(py),
            ))
        }
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

    fn slice_of<'a>(arr: &'a mut numpy::PyReadwriteArray2<'_, f32>, name: &str) -> PyResult<&'a mut [f32]> {
        arr.as_slice_mut().map_err(|_| PyValueError::new_err(format!("{name} must be a C-contiguous float32 array")))
    }

    /// Check the parameter arrays of one call before any is borrowed: each
    /// must be C-contiguous and float-aligned (a misaligned view would make
    /// its slice undefined behaviour), and no two may share memory (the
    /// model writes them independently).
    fn check_arrays(arrays: &[(&str, Option<&Bound<'_, PyArray2<f32>>>)]) -> PyResult<()> {
        let mut spans: Vec<(&str, usize, usize)> = Vec::with_capacity(arrays.len());
        for &(name, arr) in arrays {
            let Some(a) = arr else { continue };
            if !a.is_c_contiguous() {
                return Err(PyValueError::new_err(format!("{name} must be a C-contiguous float32 array")));
            }
            let start = a.data() as usize;
            if start % std::mem::align_of::<f32>() != 0 {
                return Err(PyValueError::new_err(format!(
                    "{name} is not aligned to 4 bytes (a view at an odd byte offset?): pass a copy, e.g. np.ascontiguousarray({name}).copy()"
                )));
            }
            let end = start + a.len() * std::mem::size_of::<f32>();
            if let Some(&(other, _, _)) = spans.iter().find(|&&(_, s, e)| start < e && s < end) {
                return Err(PyValueError::new_err(format!(
                    "{name} and {other} share memory: each parameter needs its own array (e.g. {name} = {name}.copy())"
                )));
            }
            if start < end {
                spans.push((name, start, end));
            }
        }
        Ok(())
    }

    /// Borrow a checked array for writing; a clear error if it is read-only
    /// or already borrowed (e.g. by a training call running in another thread).
    fn rw<'py>(a: &Bound<'py, PyArray2<f32>>, name: &str) -> PyResult<numpy::PyReadwriteArray2<'py, f32>> {
        a.try_readwrite().map_err(|e| {
            let why = if e.to_string().contains("writeable") {
                "is read-only"
            } else {
                "is in use by another call (is the model training in another thread?)"
            };
            PyValueError::new_err(format!("{name} {why}"))
        })
    }

    /// gensim's `vectors_lockf`, checked: one factor, or one per word.
    fn lockf_of<'py>(py: Python<'py>, sch: &Schedule, v: usize) -> PyResult<Option<numpy::PyReadonlyArray1<'py, f32>>> {
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

    fn lock_slice<'a>(l: &'a Option<numpy::PyReadonlyArray1<'_, f32>>) -> &'a [f32] {
        l.as_ref().and_then(|a| a.as_slice().ok()).unwrap_or(&[])
    }

    fn check_shape(arr: &Bound<'_, PyArray2<f32>>, name: &str, rows: usize, cols: usize) -> PyResult<()> {
        let s = arr.shape();
        if s[0] != rows || s[1] != cols {
            return Err(PyValueError::new_err(format!("{name} has shape {:?}, expected ({rows}, {cols})", s)));
        }
        Ok(())
    }

    enum Src {
        File(FileSplit),
        Queue(Receiver<Job>),
    }

    fn make_source(source: &Bound<'_, PyAny>, sch: &Schedule) -> PyResult<Src> {
        if let Ok(q) = source.downcast::<JobQueue>() {
            if sch.resume.is_some() {
                return Err(PyValueError::new_err("only a corpus_file epoch can be resumed at a position"));
            }
            return Ok(Src::Queue(q.get().rx.clone()));
        }
        let path: PathBuf = source.extract()?;
        check_file(&path)?;
        let split = match &sch.resume {
            None => FileSplit::new(&path, sch.workers),
            Some(r) => FileSplit::resume(&path, sch.workers, &r.split),
        };
        split.map(Src::File).map_err(|e| match e.kind() {
            // A checkpoint that does not fit this file (another or a changed corpus).
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                PyValueError::new_err(format!("cannot resume on {}: {e}", path.display()))
            }
            _ => io_err(&path, e),
        })
    }

    /// Where a stopped epoch got to, as a plain dict (JSON-safe) for checkpoints:
    /// {"gzip", "file_len", "stream_offset", "workers": [{"pending": [[start, end], ...],
    /// "rng", "lr", "since_lr"}, ...]}.
    fn resume_dict<'py>(py: Python<'py>, split: &SplitState, workers: &[WorkerState]) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("gzip", split.gzip)?;
        d.set_item("file_len", split.file_len)?;
        d.set_item("stream_offset", split.stream_offset)?;
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
        Ok(d)
    }

    /// A `resume_dict`, parsed once when the schedule is read.
    struct Resume {
        split: SplitState,
        workers: Vec<WorkerState>,
    }

    impl<'py> FromPyObject<'py> for Resume {
        fn extract_bound(d: &Bound<'py, PyAny>) -> PyResult<Self> {
            let (split, workers) = resume_of(d)?;
            Ok(Resume { split, workers })
        }
    }

    fn resume_of(d: &Bound<'_, PyAny>) -> PyResult<(SplitState, Vec<WorkerState>)> {
        let bad = |e: PyErr| PyValueError::new_err(format!("malformed resume state: {e}"));
        let get = |k: &str| d.get_item(k).map_err(bad);
        let mut split = SplitState {
            gzip: get("gzip")?.extract().map_err(bad)?,
            file_len: get("file_len")?.extract().map_err(bad)?,
            stream_offset: get("stream_offset")?.extract().map_err(bad)?,
            workers: Vec::new(),
        };
        let mut states = Vec::new();
        for w in get("workers")?.try_iter().map_err(bad)? {
            let w = w?;
            let raw: Vec<Vec<u64>> = w.get_item("pending").map_err(bad)?.extract().map_err(bad)?;
            if raw.iter().any(|r| r.len() != 2 || r[0] > r[1]) {
                return Err(PyValueError::new_err("malformed resume state: a range is not [start, end] with start <= end"));
            }
            let pending: Vec<(u64, u64)> = raw.iter().map(|r| (r[0], r[1])).collect();
            split.workers.push(pending);
            states.push(WorkerState {
                rng: w.get_item("rng").map_err(bad)?.extract().map_err(bad)?,
                lr: w.get_item("lr").map_err(bad)?.extract().map_err(bad)?,
                since_lr: w.get_item("since_lr").map_err(bad)?.extract().map_err(bad)?,
            });
        }
        if states.is_empty() {
            return Err(PyValueError::new_err("malformed resume state: no workers"));
        }
        Ok((split, states))
    }

    /// Schedule and bookkeeping shared by every model's epoch call.
    #[derive(FromPyObject)]
    #[pyo3(from_item_all)]
    struct Schedule {
        alpha: f32,
        min_alpha: f32,
        total_words: u64,
        words_before: u64,
        seed: u64,
        epoch: u64,
        workers: usize,
        compute_loss: bool,
        report_delay: f64,
        progress_cb: Option<PyObject>,
        max_words: u64,
        /// gensim's `vectors_lockf` (1-D float32, length 1 or V), or None.
        lockf: Option<PyObject>,
        /// A stopped epoch's state (`resume_dict`) to continue, or None.
        resume: Option<Resume>,
    }

    /// The trainer's configuration for one epoch of `sch`.
    fn train_config(sch: &Schedule) -> TrainConfig {
        TrainConfig {
            workers: sch.workers,
            alpha: sch.alpha,
            min_alpha: sch.min_alpha,
            total_words: sch.total_words,
            words_before: sch.words_before,
            seed: sch.seed,
            epoch: sch.epoch,
            want_loss: sch.compute_loss,
            tick: Duration::from_secs_f64(sch.report_delay.clamp(0.01, 3600.0)),
            max_words: sch.max_words,
            resume: sch.resume.as_ref().map(|r| r.workers.clone()).unwrap_or_default(),
        }
    }

    /// Run one epoch of `model` with the GIL released; the calling thread
    /// checks for Ctrl-C and reports progress. Returns (raw, effective, examples, loss).
    fn run_py_epoch<M: crate::models::Model>(
        py: Python<'_>,
        model: &M,
        voc: &Vocab,
        src: &Src,
        sch: &Schedule,
    ) -> PyResult<(u64, u64, u64, f64)> {
        let cfg = train_config(sch);
        let progress = Progress::default();
        let mut interrupted: Option<PyErr> = None;
        let progress_cb = &sch.progress_cb;
        let result = py.allow_threads(|| {
            let source = match src {
                Src::File(f) => Source::File(f),
                Src::Queue(r) => Source::Queue(r),
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
            run_epoch(model, voc, source, &cfg, &progress, on_tick)
        });
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

    /// A writable view of an optional float32 matrix with `rows` rows, checked.
    fn rw_opt<'py>(
        arr: &'py Option<Bound<'py, PyArray2<f32>>>,
        name: &str,
        rows: usize,
        cols: usize,
        needed: bool,
    ) -> PyResult<Option<numpy::PyReadwriteArray2<'py, f32>>> {
        match (arr, needed) {
            (Some(a), true) => {
                check_shape(a, name, rows, cols)?;
                Ok(Some(rw(a, name)?))
            }
            (None, true) => Err(PyValueError::new_err(format!("{name} is required here"))),
            _ => Ok(None),
        }
    }

    fn hog<'a>(arr: &'a mut Option<numpy::PyReadwriteArray2<'_, f32>>, name: &str, cols: usize) -> PyResult<Hogwild<'a>> {
        match arr.as_mut() {
            Some(a) => Ok(Hogwild::new(slice_of(a, name)?, cols)),
            None => Ok(Hogwild::empty()),
        }
    }

    fn output_layer<'a>(
        voc: &'a Vocab,
        beta: Hogwild<'a>,
        syn1: Hogwild<'a>,
        spec: OutputSpec,
    ) -> PyResult<OutputLayer<'a>> {
        if spec.negative == 0 && !spec.hs && !spec.softmax {
            return Err(PyValueError::new_err("no training objective: set negative > 0, hs=1 or loss='softmax'"));
        }
        if spec.hs && voc.huffman.is_none() {
            return Err(PyValueError::new_err("hierarchical softmax needs a vocabulary built with hs=True"));
        }
        Ok(OutputLayer { beta, syn1, bias: None, spec, vocab: voc, sig: SigmoidTable::new() })
    }

    /// Train one epoch of CBOW or skip-gram in place on the given arrays.
    /// Returns (raw_words, effective_words, examples, loss).
    #[pyfunction]
    #[pyo3(signature = (model, vocab, syn0, syn1neg, syn1, source, *, window, shrink_windows, cbow_mean, negative, hs, schedule))]
    #[allow(clippy::too_many_arguments)]
    fn train_epoch(
        py: Python<'_>,
        model: &str,
        vocab: &PyVocab,
        syn0: Bound<'_, PyArray2<f32>>,
        syn1neg: Option<Bound<'_, PyArray2<f32>>>,
        syn1: Option<Bound<'_, PyArray2<f32>>>,
        source: &Bound<'_, PyAny>,
        window: usize,
        shrink_windows: bool,
        cbow_mean: bool,
        negative: usize,
        hs: bool,
        schedule: Schedule,
    ) -> PyResult<(u64, u64, u64, f64)> {
        let voc = vocab.inner.clone();
        let (v, d) = (voc.len(), syn0.shape()[1]);
        check_shape(&syn0, "syn0", v, d)?;
        if window == 0 {
            return Err(PyValueError::new_err("window must be >= 1"));
        }
        check_arrays(&[
            ("syn0", Some(&syn0)),
            ("syn1neg", syn1neg.as_ref().filter(|_| negative > 0)),
            ("syn1", syn1.as_ref().filter(|_| hs)),
        ])?;
        let lockf = lockf_of(py, &schedule, v)?;
        let mut syn0_rw = rw(&syn0, "syn0")?;
        let mut neg_rw = rw_opt(&syn1neg, "syn1neg", v, d, negative > 0)?;
        let mut hs_rw = rw_opt(&syn1, "syn1", v, d, hs)?;
        let out = output_layer(&voc, hog(&mut neg_rw, "syn1neg", d)?, hog(&mut hs_rw, "syn1", d)?,
                               OutputSpec { negative, hs, softmax: false })?;
        let syn0 = Hogwild::new(slice_of(&mut syn0_rw, "syn0")?, d).with_factor(lock_slice(&lockf));
        let src = make_source(source, &schedule)?;
        match model {
            "cbow" => run_py_epoch(py, &Cbow { syn0, out, window, shrink: shrink_windows, cbow_mean }, &voc, &src, &schedule),
            "skipgram" => run_py_epoch(py, &SkipGram { syn0, out, window, shrink: shrink_windows }, &voc, &src, &schedule),
            other => Err(PyValueError::new_err(format!("unknown model {other:?}"))),
        }
    }

    /// The arrays of a CBOW-MoE model (SPEC Model 1, window mode).
    #[derive(FromPyObject)]
    #[pyo3(from_item_all)]
    struct MoeArrays<'py> {
        values: Bound<'py, PyArray2<f32>>,
        beta: Option<Bound<'py, PyArray2<f32>>>,
        syn1: Option<Bound<'py, PyArray2<f32>>>,
        salience: Option<Bound<'py, PyArray2<f32>>>,
        offset_gate: Option<Bound<'py, PyArray2<f32>>>,
        /// Window mode: offset values (R x D_in); sentence mode: pos_value (max_len x D_in).
        offset_value: Bound<'py, PyArray2<f32>>,
        query: Option<Bound<'py, PyArray2<f32>>>,
        key: Option<Bound<'py, PyArray2<f32>>>,
        pos_key: Option<Bound<'py, PyArray2<f32>>>,
        mask_gate: Option<Bound<'py, PyArray2<f32>>>,
        mask_value: Option<Bound<'py, PyArray2<f32>>>,
        /// Output bias (V x 1), full softmax only.
        bias: Option<Bound<'py, PyArray2<f32>>>,
    }

    /// Settings of a CBOW-MoE model.
    #[derive(FromPyObject, Clone, Copy)]
    #[pyo3(from_item_all)]
    struct MoeSettings {
        heads: usize,
        full: bool,
        window: usize,
        shrink_windows: bool,
        negative: usize,
        hs: bool,
        softmax: bool,
        vector_size: usize,
        absolute: bool,
        max_len: usize,
        key_size: usize,
    }

    /// Borrow the arrays, check their shapes and call `f` with the model.
    fn with_moe<R>(
        voc: &Vocab,
        a: &MoeArrays<'_>,
        st: MoeSettings,
        lockf: &[f32],
        f: impl FnOnce(&Moe<'_>) -> PyResult<R>,
    ) -> PyResult<R> {
        let (v, d, h) = (voc.len(), st.vector_size, st.heads);
        if h == 0 || (!st.full && d % h != 0) {
            return Err(PyValueError::new_err(format!("vector_size {d} must be a multiple of heads {h} with head_values='slice'")));
        }
        if st.window == 0 {
            return Err(PyValueError::new_err("window must be >= 1"));
        }
        let d_in = if st.full { h * d } else { d };
        if st.absolute && (st.max_len < 2 || st.key_size == 0) {
            return Err(PyValueError::new_err("sentence mode needs max_len >= 2 and key_size >= 1"));
        }
        let (r, dk) = if st.absolute { (st.max_len, st.key_size) } else { (2 * st.window, 0) };
        check_shape(&a.values, "values", v, d_in)?;
        check_shape(&a.offset_value, if st.absolute { "pos_value" } else { "offset_value" }, r, d_in)?;
        let w = !st.absolute;
        let mask = a.mask_gate.is_some();
        check_arrays(&[
            ("values", Some(&a.values)),
            (if st.absolute { "pos_value" } else { "offset_value" }, Some(&a.offset_value)),
            ("salience", a.salience.as_ref().filter(|_| w)),
            ("offset_gate", a.offset_gate.as_ref().filter(|_| w)),
            ("query", a.query.as_ref().filter(|_| !w)),
            ("key", a.key.as_ref().filter(|_| !w)),
            ("pos_key", a.pos_key.as_ref().filter(|_| !w)),
            ("mask_gate", a.mask_gate.as_ref()),
            ("mask_value", a.mask_value.as_ref().filter(|_| mask)),
            ("beta", a.beta.as_ref().filter(|_| st.negative > 0 || st.softmax)),
            ("syn1", a.syn1.as_ref().filter(|_| st.hs)),
            ("bias", a.bias.as_ref()),
        ])?;
        let mut salience = rw_opt(&a.salience, "salience", h, v, w)?;
        let mut og = rw_opt(&a.offset_gate, "offset_gate", h, r, w)?;
        let mut query = rw_opt(&a.query, "query", h * r, dk, !w)?;
        let mut key = rw_opt(&a.key, "key", h * v, dk, !w)?;
        let mut pos_key = rw_opt(&a.pos_key, "pos_key", h * r, dk, !w)?;
        let mut values = rw(&a.values, "values")?;
        let mut ov = rw(&a.offset_value, "offset_value")?;
        // Mask expert gate: H scores (window) or H keys of size d_k (sentence mode: mask_key).
        let mut mg = rw_opt(&a.mask_gate, "mask_gate", 1, if st.absolute { h * dk } else { h }, mask)?;
        let mut mv = rw_opt(&a.mask_value, "mask_value", 1, d_in, mask)?;
        let mut beta = rw_opt(&a.beta, "beta", v, d, st.negative > 0 || st.softmax)?;
        let mut syn1 = rw_opt(&a.syn1, "syn1", v, d, st.hs)?;
        if a.bias.is_some() && !st.softmax {
            return Err(PyValueError::new_err("an output bias is only used with loss='softmax'"));
        }
        let mut bias = rw_opt(&a.bias, "bias", v, 1, a.bias.is_some())?;
        let mut out = output_layer(voc, hog(&mut beta, "beta", d)?, hog(&mut syn1, "syn1", d)?,
                                   OutputSpec { negative: st.negative, hs: st.hs, softmax: st.softmax })?;
        if bias.is_some() {
            out.bias = Some(hog(&mut bias, "bias", 1)?);
        }
        let m = Moe {
            alpha: Hogwild::new(slice_of(&mut values, "values")?, d_in).with_factor(lockf),
            gates: if st.absolute {
                Gates::Absolute {
                    query: hog(&mut query, "query", dk)?,
                    // key rows are (head, word): row % V is the word, as the factor wants
                    key: hog(&mut key, "key", dk)?.with_factor(lockf),
                    pos_key: hog(&mut pos_key, "pos_key", dk)?,
                    max_len: st.max_len,
                }
            } else {
                Gates::Window { salience: hog(&mut salience, "salience", v)?, offset_gate: hog(&mut og, "offset_gate", r)? }
            },
            offset_value: Hogwild::new(slice_of(&mut ov, "offset_value")?, d_in),
            mask_gate: hog(&mut mg, "mask_gate", if st.absolute { h * dk } else { h })?,
            mask_value: hog(&mut mv, "mask_value", d_in)?,
            out,
            heads: h,
            full: st.full,
            window: st.window,
            shrink: st.shrink_windows,
        };
        f(&m)
    }

    /// Train one epoch of CBOW-MoE in place. Returns (raw, effective, examples, loss).
    #[pyfunction]
    fn train_epoch_moe(
        py: Python<'_>,
        vocab: &PyVocab,
        arrays: MoeArrays<'_>,
        settings: MoeSettings,
        source: &Bound<'_, PyAny>,
        schedule: Schedule,
    ) -> PyResult<(u64, u64, u64, f64)> {
        let voc = vocab.inner.clone();
        let lockf = lockf_of(py, &schedule, voc.len())?;
        let src = make_source(source, &schedule)?;
        with_moe(&voc, &arrays, settings, lock_slice(&lockf), |m| run_py_epoch(py, m, &voc, &src, &schedule))
    }

    /// One CBOW-MoE SGD step on a single example (context words with their
    /// offsets — or, in sentence mode, absolute positions and `target_pos` —
    /// and one target), in place; returns the loss. For gradient tests.
    #[pyfunction]
    #[pyo3(signature = (vocab, arrays, settings, words, offsets, target, lr, seed=0, target_pos=None))]
    #[allow(clippy::too_many_arguments)]
    fn moe_step(
        vocab: &PyVocab,
        arrays: MoeArrays<'_>,
        settings: MoeSettings,
        words: Vec<u32>,
        offsets: Vec<isize>,
        target: u32,
        lr: f32,
        seed: u64,
        target_pos: Option<usize>,
    ) -> PyResult<f32> {
        let voc = vocab.inner.clone();
        let v = voc.len() as u32;
        let n_max = if settings.absolute { settings.max_len.saturating_sub(1) } else { 2 * settings.window };
        if words.len() != offsets.len() || words.is_empty() || words.len() > n_max {
            return Err(PyValueError::new_err("words and offsets must have the same length, at most the context size"));
        }
        let bad_offset = |r: isize| {
            if settings.absolute {
                r < 0 || r as usize >= settings.max_len
            } else {
                r == 0 || r.unsigned_abs() > settings.window
            }
        };
        if words.iter().chain([&target]).any(|&x| x >= v) || offsets.iter().any(|&r| bad_offset(r)) {
            return Err(PyValueError::new_err("word id or offset out of range"));
        }
        if settings.absolute != target_pos.is_some() || target_pos.is_some_and(|t| t >= settings.max_len) {
            return Err(PyValueError::new_err("target_pos (< max_len) is required in sentence mode only"));
        }
        with_moe(&voc, &arrays, settings, &[], |m| {
            let mut sc = m.scratch();
            sc_set(&mut sc, &words, &offsets, settings.window, target_pos);
            let loss = m.example(&mut sc, target, lr, &mut Rng::new(seed), true);
            m.finish(&mut sc);
            Ok(loss)
        })
    }

    /// The arrays of a single-layer bidirectional attention model (SPEC Model 2).
    #[derive(FromPyObject)]
    #[pyo3(from_item_all)]
    struct AttArrays<'py> {
        rho: Bound<'py, PyArray2<f32>>,
        pos: Bound<'py, PyArray2<f32>>,
        mask: Bound<'py, PyArray2<f32>>,
        wq: Bound<'py, PyArray2<f32>>,
        wk: Bound<'py, PyArray2<f32>>,
        wv: Bound<'py, PyArray2<f32>>,
        wo: Bound<'py, PyArray2<f32>>,
        beta: Option<Bound<'py, PyArray2<f32>>>,
        syn1: Option<Bound<'py, PyArray2<f32>>>,
        bias: Option<Bound<'py, PyArray2<f32>>>,
    }

    #[derive(FromPyObject, Clone, Copy)]
    #[pyo3(from_item_all)]
    struct AttSettings {
        heads: usize,
        key_size: usize,
        value_size: usize,
        window: usize,
        shrink_windows: bool,
        absolute: bool,
        max_len: usize,
        negative: usize,
        hs: bool,
        softmax: bool,
        vector_size: usize,
        tie_output: bool,
    }

    fn with_attention<R>(
        voc: &Vocab,
        a: &AttArrays<'_>,
        st: AttSettings,
        lockf: &[f32],
        f: impl FnOnce(&Attention<'_>) -> PyResult<R>,
    ) -> PyResult<R> {
        let (v, d, h, dk, dv) = (voc.len(), st.vector_size, st.heads, st.key_size, st.value_size);
        if h == 0 || dk == 0 || dv == 0 || st.window == 0 {
            return Err(PyValueError::new_err("heads, key_size, value_size and window must be >= 1"));
        }
        if st.absolute && st.max_len < 2 {
            return Err(PyValueError::new_err("sentence mode needs max_len >= 2"));
        }
        let p = if st.absolute { st.max_len } else { 2 * st.window + 1 };
        check_shape(&a.rho, "rho", v, d)?;
        check_shape(&a.pos, "pos", p, d)?;
        check_shape(&a.mask, "mask", 1, d)?;
        check_shape(&a.wq, "wq", h * dk, d)?;
        check_shape(&a.wk, "wk", h * dk, d)?;
        check_shape(&a.wv, "wv", h * dv, d)?;
        check_shape(&a.wo, "wo", d, h * dv)?;
        check_arrays(&[
            ("rho", Some(&a.rho)),
            ("pos", Some(&a.pos)),
            ("mask", Some(&a.mask)),
            ("wq", Some(&a.wq)),
            ("wk", Some(&a.wk)),
            ("wv", Some(&a.wv)),
            ("wo", Some(&a.wo)),
            ("beta", a.beta.as_ref().filter(|_| (st.negative > 0 || st.softmax) && !st.tie_output)),
            ("syn1", a.syn1.as_ref().filter(|_| st.hs)),
            ("bias", a.bias.as_ref()),
        ])?;
        let (mut rho, mut pos, mut mask) = (rw(&a.rho, "rho")?, rw(&a.pos, "pos")?, rw(&a.mask, "mask")?);
        let (mut wq, mut wk, mut wv, mut wo) = (rw(&a.wq, "wq")?, rw(&a.wk, "wk")?, rw(&a.wv, "wv")?, rw(&a.wo, "wo")?);
        if st.tie_output && (st.hs || a.beta.is_some()) {
            return Err(PyValueError::new_err("tie_output uses rho as beta: pass no beta, and not with hs"));
        }
        let mut beta = rw_opt(&a.beta, "beta", v, d, (st.negative > 0 || st.softmax) && !st.tie_output)?;
        let mut syn1 = rw_opt(&a.syn1, "syn1", v, d, st.hs)?;
        if a.bias.is_some() && !st.softmax {
            return Err(PyValueError::new_err("an output bias is only used with loss='softmax'"));
        }
        let mut bias = rw_opt(&a.bias, "bias", v, 1, a.bias.is_some())?;
        let rho_h = Hogwild::new(slice_of(&mut rho, "rho")?, d).with_factor(lockf);
        let beta_h = if st.tie_output { rho_h.alias() } else { hog(&mut beta, "beta", d)? };
        let mut out = output_layer(voc, beta_h, hog(&mut syn1, "syn1", d)?,
                                   OutputSpec { negative: st.negative, hs: st.hs, softmax: st.softmax })?;
        if bias.is_some() {
            out.bias = Some(hog(&mut bias, "bias", 1)?);
        }
        let m = Attention {
            rho: rho_h,
            pos: Hogwild::new(slice_of(&mut pos, "pos")?, d),
            mask: Hogwild::new(slice_of(&mut mask, "mask")?, d),
            wq: Hogwild::new(slice_of(&mut wq, "wq")?, d),
            wk: Hogwild::new(slice_of(&mut wk, "wk")?, d),
            wv: Hogwild::new(slice_of(&mut wv, "wv")?, d),
            wo: Hogwild::new(slice_of(&mut wo, "wo")?, h * dv),
            out,
            heads: h,
            dk,
            dv,
            window: st.window,
            shrink: st.shrink_windows,
            max_len: if st.absolute { Some(st.max_len) } else { None },
            dense_lock: Mutex::new(()),
        };
        f(&m)
    }

    /// Train one epoch of the attention model in place. Returns (raw, effective, examples, loss).
    #[pyfunction]
    fn train_epoch_attention(
        py: Python<'_>,
        vocab: &PyVocab,
        arrays: AttArrays<'_>,
        settings: AttSettings,
        source: &Bound<'_, PyAny>,
        schedule: Schedule,
    ) -> PyResult<(u64, u64, u64, f64)> {
        let voc = vocab.inner.clone();
        let lockf = lockf_of(py, &schedule, voc.len())?;
        let src = make_source(source, &schedule)?;
        with_attention(&voc, &arrays, settings, lock_slice(&lockf), |m| run_py_epoch(py, m, &voc, &src, &schedule))
    }

    /// One exact SGD step of the attention model on a single example:
    /// `context` = (word id, encoding row) pairs, the target word and its
    /// encoding row. In place; returns the loss. For gradient tests.
    #[pyfunction]
    #[pyo3(signature = (vocab, arrays, settings, context, target, self_row, lr, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn attention_step(
        vocab: &PyVocab,
        arrays: AttArrays<'_>,
        settings: AttSettings,
        context: Vec<(u32, usize)>,
        target: u32,
        self_row: usize,
        lr: f32,
        seed: u64,
    ) -> PyResult<f32> {
        let voc = vocab.inner.clone();
        let v = voc.len() as u32;
        let p = if settings.absolute { settings.max_len } else { 2 * settings.window + 1 };
        let n_max = if settings.absolute { settings.max_len - 1 } else { 2 * settings.window };
        if context.is_empty() || context.len() > n_max {
            return Err(PyValueError::new_err(format!("context must have 1..={n_max} entries")));
        }
        if target >= v || self_row >= p || context.iter().any(|&(w, r)| w >= v || r >= p) {
            return Err(PyValueError::new_err("word id or encoding row out of range"));
        }
        with_attention(&voc, &arrays, settings, &[], |m| {
            let mut sc = m.scratch();
            Attention::load_example(&mut sc, &context, target, self_row);
            Ok(m.run_block(&mut sc, lr, &mut Rng::new(seed), true) as f32)
        })
    }

    /// The SIMD kernel level in use ("avx512f", "avx2+fma", "neon" or "scalar").
    #[pyfunction]
    fn simd_level() -> &'static str {
        simd::level_name()
    }

    /// Force a SIMD level ("scalar", "avx2+fma", "avx512f", "neon") or None for
    /// automatic; returns False if the CPU lacks it.
    #[pyfunction]
    #[pyo3(signature = (level=None))]
    fn force_simd(level: Option<&str>) -> PyResult<bool> {
        let l = match level {
            None => None,
            Some("scalar") => Some(simd::Level::Scalar),
            Some("avx2+fma") => Some(simd::Level::Avx2Fma),
            Some("avx512f") => Some(simd::Level::Avx512),
            Some("neon") => Some(simd::Level::Neon),
            Some(o) => return Err(PyValueError::new_err(format!("unknown SIMD level {o:?}"))),
        };
        Ok(simd::force_level(l))
    }

    /// A batch stream's settings dict (see `BatchStream` in _core.pyi); unknown keys are refused.
    fn batch_settings(d: &Bound<'_, PyDict>) -> PyResult<BatchSettings> {
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
    fn batch_dict<'py>(py: Python<'py>, b: Batch, s: &BatchSettings) -> PyResult<Bound<'py, PyDict>> {
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
            let inner = BatchStream::start(vocab.inner.clone(), src, settings, cfg).map_err(PyRuntimeError::new_err)?;
            Ok(PyBatchStream {
                inner,
                settings,
                progress_cb: schedule.progress_cb,
                report_every: Duration::from_secs_f64(schedule.report_delay.clamp(0.01, 3600.0)),
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

    /// Sentences of a corpus file as the trainer sees them (lists of str,
    /// lines cut into 10,000-token chunks, invalid UTF-8 replaced).
    #[pyfunction]
    fn read_corpus_file(py: Python<'_>, path: PathBuf) -> PyResult<Vec<Vec<String>>> {
        check_file(&path)?;
        py.allow_threads(|| {
            let mut out = Vec::new();
            corpus::for_each_sentence(&path, |it| {
                let s: Vec<String> = it.map(|t| token_str(t).into_owned()).collect();
                if !s.is_empty() {
                    out.push(s);
                }
            })
            .map(|_| out)
        })
        .map_err(|e| io_err(&path, e))
    }

    /// Test hook: run a training epoch whose model panics inside a worker
    /// thread, to show the panic surfaces as a RuntimeError (never an abort).
    #[pyfunction]
    fn _panic_in_worker(py: Python<'_>) -> PyResult<()> {
        struct Boom;
        impl crate::models::Model for Boom {
            type Scratch = ();
            fn scratch(&self) {}
            fn train_sentence(&self, _: &mut (), _: &[u32], _: f32, _: &mut Rng, _: bool) -> (f64, u64) {
                panic!("deliberate test panic")
            }
        }
        let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
        let voc = Vocab::from_sorted(vec![("a".into(), 3), ("b".into(), 2)], &s);
        let (tx, rx) = bounded(2);
        let mut job = Job::default();
        for t in ["a", "b", "a"] {
            job.push_token(&voc, t);
        }
        job.end_sentence();
        tx.send(job).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        drop(tx);
        let cfg = TrainConfig {
            workers: 2, alpha: 0.025, min_alpha: 0.0001, total_words: 3, words_before: 0, seed: 1, epoch: 0,
            want_loss: false, tick: Duration::from_millis(10), max_words: 0, resume: Vec::new(),
        };
        let progress = Progress::default();
        py.allow_threads(|| run_epoch(&Boom, &voc, Source::Queue(&rx), &cfg, &progress, |_| true))
            .map_err(PyRuntimeError::new_err)
    }

    #[pymodule]
    fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<VocabCounter>()?;
        m.add_class::<PyVocab>()?;
        m.add_class::<JobQueue>()?;
        m.add_class::<PyBatchStream>()?;
        m.add_function(wrap_pyfunction!(train_epoch, m)?)?;
        m.add_function(wrap_pyfunction!(train_epoch_moe, m)?)?;
        m.add_function(wrap_pyfunction!(moe_step, m)?)?;
        m.add_function(wrap_pyfunction!(train_epoch_attention, m)?)?;
        m.add_function(wrap_pyfunction!(attention_step, m)?)?;
        m.add_function(wrap_pyfunction!(simd_level, m)?)?;
        m.add_function(wrap_pyfunction!(force_simd, m)?)?;
        m.add_function(wrap_pyfunction!(read_corpus_file, m)?)?;
        m.add_function(wrap_pyfunction!(_panic_in_worker, m)?)?;
        m.add("MAX_SENTENCE_LEN", corpus::MAX_SENTENCE_LEN)?;
        Ok(())
    }
}
