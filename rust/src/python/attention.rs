//! Bidirectional attention (SPEC Model 2): its arrays and settings, the epoch and the single-step call.

use super::arrays::{check_arrays, check_shape, hog, output_layer, rw, rw_opt, slice_of};
use super::schedule::{train_epoch_of, Binding, Schedule};
use super::vocab::PyVocab;
use crate::hogwild::Hogwild;
use crate::models::attention::Attention;
use crate::models::Model;
use crate::objective::OutputSpec;
use crate::sampling::Rng;
use crate::vocab::Vocab;
use numpy::PyArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Mutex;

/// The arrays of a single-layer bidirectional attention model (SPEC Model 2).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct AttArrays<'py> {
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
pub(crate) struct AttSettings {
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

/// An attention model's arguments.
pub(crate) struct AttBinding<'py> {
    pub(crate) arrays: AttArrays<'py>,
    pub(crate) settings: AttSettings,
}

impl Binding for AttBinding<'_> {
    type Model<'a> = Attention<'a>;

    /// Check the arrays' shapes, borrow them and call `f` with the model.
    fn with<R>(&self, voc: &Vocab, lockf: &[f32], f: impl FnOnce(&Attention<'_>) -> PyResult<R>) -> PyResult<R> {
        with_attention(voc, &self.arrays, self.settings, lockf, f)
    }
}

pub(crate) fn with_attention<R>(
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
pub(crate) fn train_epoch_attention(
    py: Python<'_>,
    vocab: &PyVocab,
    arrays: AttArrays<'_>,
    settings: AttSettings,
    source: &Bound<'_, PyAny>,
    schedule: Schedule,
) -> PyResult<(u64, u64, u64, f64)> {
    train_epoch_of(py, vocab, &AttBinding { arrays, settings }, source, &schedule)
}

/// One exact SGD step of the attention model on a single example:
/// `context` = (word id, encoding row) pairs, the target word and its
/// encoding row. In place; returns the loss. For gradient tests.
#[pyfunction]
#[pyo3(signature = (vocab, arrays, settings, context, target, self_row, lr, seed=0))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_step(
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
