//! CBOW and skip-gram (gensim's Word2Vec arrays).

use super::arrays::{check_arrays, check_shape, hog, lock_slice, output_layer, rw, rw_opt, slice_of};
use super::input::make_source;
use super::schedule::{lockf_of, run_py_epoch, Schedule};
use super::vocab::PyVocab;
use crate::hogwild::Hogwild;
use crate::models::cbow::Cbow;
use crate::models::skipgram::SkipGram;
use crate::objective::OutputSpec;
use numpy::{PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Train one epoch of CBOW or skip-gram in place on the given arrays.
/// Returns (raw_words, effective_words, examples, loss).
#[pyfunction]
#[pyo3(signature = (model, vocab, syn0, syn1neg, syn1, source, *, window, shrink_windows, cbow_mean, negative, hs, schedule))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_epoch(
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
