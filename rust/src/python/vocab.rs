//! Vocabulary: the streaming counter and the finished, frequency-ordered vocabulary.

use super::input::{check_file, io_err, pieces_err, pieces_of, visit_sentences};
use crate::batches;
use crate::corpus::{self, token_str};
use crate::sampling::{expected_kept, Rng};
use crate::vocab::{Vocab, VocabSettings};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::path::PathBuf;
use std::sync::Arc;

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

impl VocabCounter {
    /// `add_file`'s count of a plain file (or process `shard.0`'s share
    /// of it) by `threads` threads, GIL
    /// released; Ctrl-C is checked about every million tokens of the first
    /// part and stops every thread (nothing is added then).
    fn add_file_parallel(&mut self, py: Python<'_>, path: &std::path::Path, shard: (u64, u64), threads: usize) -> PyResult<()> {
        let mut interrupted: Option<PyErr> = None;
        let counted = py.allow_threads(|| {
            crate::vocab::count_file_parallel(path, shard, threads, &mut || match Python::with_gil(|py| py.check_signals()) {
                Ok(()) => true,
                Err(e) => {
                    interrupted = Some(e);
                    false
                }
            })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        if let Some(c) = counted.map_err(|e| io_err(path, e))? {
            self.inner.absorb(c);
        }
        Ok(())
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
    ///
    /// With `shard=(rank, world)` only that process's share of the file is
    /// counted, cut exactly as training cuts it (`FileSplit::shard`): the
    /// shards' counts add up to the whole file's.
    ///
    /// `path` may also be a list of pieces of several files,
    /// `[(path, start, end or None), ...]` (`bidirmoe.corpora.shard_plan`),
    /// counted in order, each in place (then `shard` must be None).
    ///
    /// With `threads` > 1, a plain file or its shard (no pieces, no
    /// `max_vocab_size`) is counted by that many threads, each counting the
    /// whole lines of one part (`vocab::count_file_parallel`): the same
    /// counts and totals.
    #[pyo3(signature = (path, shard=None, threads=1))]
    fn add_file(&mut self, py: Python<'_>, path: &Bound<'_, PyAny>, shard: Option<(u64, u64)>, threads: usize) -> PyResult<()> {
        let pieces = if path.downcast::<PyList>().is_ok() {
            if shard.is_some() {
                return Err(PyValueError::new_err("corpus pieces are one process's part already: give no shard"));
            }
            Some(pieces_of(path)?)
        } else {
            None
        };
        let path: PathBuf = if pieces.is_some() { PathBuf::new() } else { path.extract()? };
        if pieces.is_none() {
            check_file(&path)?;
        }
        if threads > 1 && pieces.is_none() && self.inner.max_vocab_size().is_none() && !corpus::is_gzip(&path).map_err(|e| io_err(&path, e))? {
            return self.add_file_parallel(py, &path, shard.unwrap_or((0, 1)), threads);
        }
        let inner = &mut self.inner;
        let rule = &self.trim_rule;
        let mut interrupted: Option<PyErr> = None;
        let mut next_check = 1u64 << 20;
        let mut on_sentence = |it: &mut dyn Iterator<Item = &[u8]>| -> bool {
            let mut any = false;
            for t in it {
                inner.add_token(&token_str(t));
                any = true;
            }
            if any {
                Self::end_sentence(inner, rule, &mut interrupted);
            }
            if inner.total_words >= next_check {
                next_check = inner.total_words + (1 << 20);
                if let Err(e) = Python::with_gil(|py| py.check_signals()) {
                    interrupted = Some(e);
                }
            }
            interrupted.is_none()
        };
        let result = py.allow_threads(|| {
            if let Some(pieces) = &pieces {
                let split = corpus::FileSplit::pieces(pieces, 1)?;
                split.for_worker(0, &mut corpus::Cursor::default(), on_sentence)?;
                return Ok(());
            }
            match shard {
                None => {
                    let mut r = corpus::SentenceReader::whole(corpus::open_stream(&path)?);
                    let mut go = true;
                    while go && r.next_sentence(|it| go = on_sentence(it))? {}
                }
                Some((rank, world)) => {
                    let split = corpus::FileSplit::shard(&path, 1, rank, world)?;
                    split.for_worker(0, &mut corpus::Cursor::default(), on_sentence)?;
                }
            }
            Ok::<(), std::io::Error>(())
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        match &pieces {
            Some(pieces) => result.map_err(|e| pieces_err(pieces, e)),
            None => result.map_err(|e| io_err(&path, e)),
        }
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

    /// The raw counts as (words joined by "\n" as UTF-8 bytes, counts as
    /// uint64): a compact form to send to another process (tokens never hold
    /// whitespace, so "\n" cannot occur in a word).
    fn export_counts<'py>(&self, py: Python<'py>) -> (Bound<'py, pyo3::types::PyBytes>, Bound<'py, PyArray1<u64>>) {
        let (mut text, mut counts) = (Vec::new(), Vec::with_capacity(self.inner.len()));
        for (w, &c) in self.inner.raw_counts() {
            if !counts.is_empty() {
                text.push(b'\n');
            }
            text.extend_from_slice(w.as_bytes());
            counts.push(c);
        }
        (pyo3::types::PyBytes::new(py, &text), counts.into_pyarray(py))
    }

    /// Add counts from `export_counts` of another counter, and its token and sentence totals.
    fn merge_counts(&mut self, words: &[u8], counts: Vec<u64>, total_words: u64, sentences: u64) -> PyResult<()> {
        let text = std::str::from_utf8(words).map_err(|e| PyValueError::new_err(format!("words are not UTF-8: {e}")))?;
        let list: Vec<&str> = if counts.is_empty() { Vec::new() } else { text.split('\n').collect() };
        if list.len() != counts.len() {
            return Err(PyValueError::new_err(format!("{} words but {} counts", list.len(), counts.len())));
        }
        self.inner.merge(list.into_iter().map(str::to_owned).zip(counts), total_words, sentences);
        Ok(())
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
    pub(crate) inner: Arc<Vocab>,
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
