//! CBOW and skip-gram (gensim's Word2Vec arrays).

use super::arrays::{check_arrays, check_shape, hog, lock_slice, output_layer, rw, rw_opt, slice_of};
use super::input::make_source;
use super::schedule::{lockf_of, run_py_epoch, Schedule};
use super::vocab::PyVocab;
use crate::hogwild::Hogwild;
use crate::models::cbow::Cbow;
use crate::models::skipgram::SkipGram;
use crate::models::Model;
use crate::objective::OutputSpec;
use crate::sampling::Rng;
use numpy::{PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Train one epoch of CBOW or skip-gram in place on the given arrays.
/// Returns (raw_words, effective_words, examples, loss).
#[pyfunction]
#[pyo3(signature = (model, vocab, syn0, syn1neg, syn1, source, *, window, shrink_windows, cbow_mean, negative, hs, schedule, batch_targets=1))]
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
    batch_targets: usize,
) -> PyResult<(u64, u64, u64, f64)> {
    let voc = vocab.inner.clone();
    let (v, d) = (voc.len(), syn0.shape()[1]);
    check_shape(&syn0, "syn0", v, d)?;
    if window == 0 {
        return Err(PyValueError::new_err("window must be >= 1"));
    }
    check_batch(batch_targets)?;
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
        "cbow" => {
            let m = Cbow { syn0, out, window, shrink: shrink_windows, cbow_mean, batch: batch_targets };
            run_py_epoch(py, &m, &voc, &src, &schedule)
        }
        "skipgram" => {
            let m = SkipGram { syn0, out, window, shrink: shrink_windows, batch: batch_targets };
            run_py_epoch(py, &m, &voc, &src, &schedule)
        }
        other => Err(PyValueError::new_err(format!("unknown model {other:?}"))),
    }
}

/// Largest accepted `batch_targets` (scratch grows with it; beyond a few
/// dozen targets the shared negatives stop paying).
pub(crate) const MAX_BATCH_TARGETS: usize = 1024;

pub(crate) fn check_batch(b: usize) -> PyResult<()> {
    if b == 0 || b > MAX_BATCH_TARGETS {
        return Err(PyValueError::new_err(format!("batch_targets must be in 1..={MAX_BATCH_TARGETS}, got {b}")));
    }
    Ok(())
}

/// One sentence of CBOW or skip-gram with negative sampling, full windows
/// (no shrinking) and learning rate `lr`, in place on `syn0` / `syn1neg`.
/// Returns every negative drawn, in order, so that a test can replay the
/// same update in an independent reference.
#[pyfunction]
#[pyo3(signature = (model, vocab, syn0, syn1neg, sentence, *, window, cbow_mean, negative, batch_targets, lr, seed=0))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_sentence_ns(
    model: &str,
    vocab: &PyVocab,
    syn0: Bound<'_, PyArray2<f32>>,
    syn1neg: Bound<'_, PyArray2<f32>>,
    sentence: Vec<u32>,
    window: usize,
    cbow_mean: bool,
    negative: usize,
    batch_targets: usize,
    lr: f32,
    seed: u64,
) -> PyResult<Vec<u32>> {
    let voc = vocab.inner.clone();
    let (v, d) = (voc.len(), syn0.shape()[1]);
    check_shape(&syn0, "syn0", v, d)?;
    check_shape(&syn1neg, "syn1neg", v, d)?;
    check_batch(batch_targets)?;
    if window == 0 || negative == 0 || sentence.iter().any(|&w| w as usize >= v) {
        return Err(PyValueError::new_err("need window >= 1, negative >= 1 and word ids < len(vocab)"));
    }
    check_arrays(&[("syn0", Some(&syn0)), ("syn1neg", Some(&syn1neg))])?;
    let (mut a, mut b) = (rw(&syn0, "syn0")?, rw(&syn1neg, "syn1neg")?);
    let out = output_layer(&voc, Hogwild::new(slice_of(&mut b, "syn1neg")?, d), Hogwild::empty(),
                           OutputSpec { negative, hs: false, softmax: false })?;
    let syn0 = Hogwild::new(slice_of(&mut a, "syn0")?, d);
    let mut rng = Rng::new(seed);
    match model {
        "cbow" => {
            let m = Cbow { syn0, out, window, shrink: false, cbow_mean, batch: batch_targets };
            let mut sc = m.scratch();
            sc.output().record = Some(Vec::new());
            m.train_sentence(&mut sc, &sentence, lr, &mut rng, false);
            Ok(sc.output().record.take().unwrap_or_default())
        }
        "skipgram" => {
            let m = SkipGram { syn0, out, window, shrink: false, batch: batch_targets };
            let mut sc = m.scratch();
            sc.output().record = Some(Vec::new());
            m.train_sentence(&mut sc, &sentence, lr, &mut rng, false);
            Ok(sc.output().record.take().unwrap_or_default())
        }
        other => Err(PyValueError::new_err(format!("unknown model {other:?}"))),
    }
}
