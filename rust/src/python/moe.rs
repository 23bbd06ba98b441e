//! CBOW-MoE (SPEC Model 1): its arrays and settings, the epoch and the single-step call.

use super::arrays::{check_arrays, check_shape, hog, output_layer, rw, rw_opt, slice_of};
use super::schedule::{train_epoch_of, Binding, Schedule};
use super::vocab::PyVocab;
use crate::hogwild::Hogwild;
use crate::models::moe::{sc_set, Gates, Moe};
use crate::models::Model;
use crate::objective::OutputSpec;
use crate::sampling::Rng;
use crate::vocab::Vocab;
use numpy::PyArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The arrays of a CBOW-MoE model (SPEC Model 1, window mode).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct MoeArrays<'py> {
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
pub(crate) struct MoeSettings {
    pub(crate) heads: usize,
    pub(crate) full: bool,
    pub(crate) window: usize,
    pub(crate) shrink_windows: bool,
    pub(crate) negative: usize,
    pub(crate) hs: bool,
    pub(crate) softmax: bool,
    pub(crate) vector_size: usize,
    pub(crate) absolute: bool,
    pub(crate) max_len: usize,
    pub(crate) key_size: usize,
    /// Targets per mini-batch (absent: 1, the exact per-target update).
    #[pyo3(default = 1)]
    pub(crate) batch_targets: usize,
}

/// A CBOW-MoE model's arguments.
pub(crate) struct MoeBinding<'py> {
    pub(crate) arrays: MoeArrays<'py>,
    pub(crate) settings: MoeSettings,
}

impl Binding for MoeBinding<'_> {
    type Model<'a> = Moe<'a>;

    /// Check the arrays' shapes, borrow them and call `f` with the model.
    fn with<R>(&self, voc: &Vocab, lockf: &[f32], f: impl FnOnce(&Moe<'_>) -> PyResult<R>) -> PyResult<R> {
        with_moe(voc, &self.arrays, self.settings, lockf, f)
    }
}

/// Borrow the arrays, check their shapes and call `f` with the model.
pub(crate) fn with_moe<R>(
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
    super::word2vec::check_batch(st.batch_targets)?;
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
        batch: st.batch_targets,
    };
    f(&m)
}

/// Train one epoch of CBOW-MoE in place. Returns (raw, effective, examples, loss).
#[pyfunction]
pub(crate) fn train_epoch_moe(
    py: Python<'_>,
    vocab: &PyVocab,
    arrays: MoeArrays<'_>,
    settings: MoeSettings,
    source: &Bound<'_, PyAny>,
    schedule: Schedule,
) -> PyResult<(u64, u64, u64, f64)> {
    train_epoch_of(py, vocab, &MoeBinding { arrays, settings }, source, &schedule)
}

/// One CBOW-MoE SGD step on a single example (context words with their
/// offsets — or, in sentence mode, absolute positions and `target_pos` —
/// and one target), in place; returns the loss. For gradient tests.
#[pyfunction]
#[pyo3(signature = (vocab, arrays, settings, words, offsets, target, lr, seed=0, target_pos=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn moe_step(
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
    check_example(&settings, voc.len(), &words, &offsets, target, target_pos)?;
    with_moe(&voc, &arrays, settings, &[], |m| {
        let mut sc = m.scratch();
        sc_set(&mut sc, &words, &offsets, settings.window, target_pos);
        let loss = m.example(&mut sc, target, lr, &mut Rng::new(seed), true);
        m.finish(&mut sc);
        Ok(loss)
    })
}

/// One example's inputs, checked against the model's settings.
fn check_example(
    settings: &MoeSettings,
    v: usize,
    words: &[u32],
    offsets: &[isize],
    target: u32,
    target_pos: Option<usize>,
) -> PyResult<()> {
    let v = v as u32;
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
    Ok(())
}

/// One CBOW-MoE mini-batch (negative sampling alone): the examples
/// (words, offsets, target, target_pos) run their forward passes, share one
/// draw of negatives, then run their backward passes; in place. Returns the
/// negatives drawn, for tests against an independent reference.
#[pyfunction]
#[pyo3(signature = (vocab, arrays, settings, examples, lr, seed=0))]
pub(crate) fn moe_batch_step(
    vocab: &PyVocab,
    arrays: MoeArrays<'_>,
    settings: MoeSettings,
    examples: Vec<(Vec<u32>, Vec<isize>, u32, Option<usize>)>,
    lr: f32,
    seed: u64,
) -> PyResult<Vec<u32>> {
    let voc = vocab.inner.clone();
    if settings.negative == 0 || settings.hs || settings.softmax {
        return Err(PyValueError::new_err("a mini-batch needs negative sampling alone"));
    }
    if examples.len() < 2 || examples.len() > settings.batch_targets {
        return Err(PyValueError::new_err("a mini-batch holds 2..=batch_targets examples"));
    }
    for (w, o, t, tp) in &examples {
        check_example(&settings, voc.len(), w, o, *t, *tp)?;
    }
    with_moe(&voc, &arrays, settings, &[], |m| {
        let mut sc = m.scratch();
        sc.output().record = Some(Vec::new());
        let mut rng = Rng::new(seed);
        for (w, o, t, tp) in &examples {
            m.queue_example(&mut sc, w, o, *t, *tp, lr, &mut rng);
        }
        m.flush_batch_now(&mut sc, lr, &mut rng);
        m.finish(&mut sc);
        Ok(sc.output().record.take().unwrap_or_default())
    })
}
