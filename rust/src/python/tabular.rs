//! The tabular model (`models/tabular.rs`): fit and predict on a table of
//! token ids, with the CBOW-MoE arrays and settings (sentence mode, full softmax).

use super::moe::{with_moe, MoeArrays, MoeSettings};
use crate::models::moe::ABSENT;
use crate::models::tabular::{FitSettings, Tabular};
use crate::models::Model;
use crate::vocab::{Vocab, VocabSettings};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The table's vocabulary: only its size matters (full softmax, no sampling tables in use).
fn table_vocab(n: usize) -> Vocab {
    let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
    Vocab::from_sorted((0..n).map(|i| (i.to_string(), 1)).collect(), &s)
}

/// Check the column layout, the settings and the table; returns the table as a slice.
fn check_table<'a>(data: &'a PyReadonlyArray2<'_, u32>, starts: &[u32], st: &MoeSettings) -> PyResult<&'a [u32]> {
    let f = starts.len().saturating_sub(1);
    if f < 2 || starts[0] != 0 || starts.windows(2).any(|w| w[1] <= w[0]) {
        return Err(PyValueError::new_err("starts must begin at 0 and rise strictly, with at least 2 columns"));
    }
    if !st.absolute || st.full || !st.softmax || st.negative > 0 || st.hs || st.max_len != f {
        return Err(PyValueError::new_err(
            "the tabular model needs sentence mode (absolute, max_len = columns), head_values='slice' and loss='softmax' only",
        ));
    }
    if data.shape()[1] != f {
        return Err(PyValueError::new_err(format!("the table has {} columns, expected {f}", data.shape()[1])));
    }
    let slice = data.as_slice().map_err(|_| PyValueError::new_err("the table must be a C-contiguous uint32 array"))?;
    for (i, &t) in slice.iter().enumerate() {
        let c = i % f;
        if t != ABSENT && !(starts[c]..starts[c + 1]).contains(&t) {
            return Err(PyValueError::new_err(format!(
                "row {} column {c} holds token {t}, outside the column's ids {}..{}",
                i / f,
                starts[c],
                starts[c + 1]
            )));
        }
    }
    Ok(slice)
}

/// Check per-column loss weights: empty (all 1) or one finite weight >= 0 per column.
fn check_weights(weights: &[f32], f: usize) -> PyResult<()> {
    if !weights.is_empty() && (weights.len() != f || weights.iter().any(|w| !w.is_finite() || *w < 0.0)) {
        return Err(PyValueError::new_err(format!("weights must hold {f} finite numbers >= 0, one per column")));
    }
    Ok(())
}

/// Fit the tabular model in place: `epochs` passes over the rows of `data`
/// (rows x columns token ids, `ABSENT` = u32::MAX for a missing value),
/// one SGD step per row on the summed loss of its masked columns (column j
/// weighted by `weights[j]`, default 1). Returns the mean loss of each epoch.
/// `heads_step` trains with the head-by-head row step even where the
/// lane-block one applies (the same step; for benchmarks).
#[pyfunction]
#[pyo3(signature = (arrays, settings, data, starts, *, epochs, alpha, min_alpha, seed, workers, weights=vec![], heads_step=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tabular_fit(
    py: Python<'_>,
    arrays: MoeArrays<'_>,
    settings: MoeSettings,
    data: PyReadonlyArray2<'_, u32>,
    starts: Vec<u32>,
    epochs: usize,
    alpha: f32,
    min_alpha: f32,
    seed: u64,
    workers: usize,
    weights: Vec<f32>,
    heads_step: bool,
) -> PyResult<Vec<f64>> {
    let table = check_table(&data, &starts, &settings)?;
    check_weights(&weights, starts.len() - 1)?;
    let voc = table_vocab(starts[starts.len() - 1] as usize);
    let s = FitSettings { epochs, alpha, min_alpha, seed, workers, heads_step };
    with_moe(&voc, &arrays, settings, &[], |m| {
        let t = Tabular { moe: m, starts: &starts, weights: &weights };
        let mut interrupted = None;
        let losses = py.allow_threads(|| {
            t.fit(table, &s, |_| match Python::with_gil(|py| py.check_signals()) {
                Ok(()) => true,
                Err(e) => {
                    interrupted = Some(e);
                    false
                }
            })
        });
        interrupted.map_or(Ok(losses), Err)
    })
}

/// p(column = c | the other present columns of each row) for the column's
/// categories c (rows x K float32) and, with `gates`, every head's MoE
/// weight of each column (rows x H x (F + 1) float32; index F is the mask
/// expert, 0 for the masked column and absent values).
#[pyfunction]
#[pyo3(signature = (arrays, settings, data, starts, column, gates=false))]
#[allow(clippy::type_complexity)]
pub(crate) fn tabular_predict<'py>(
    py: Python<'py>,
    arrays: MoeArrays<'_>,
    settings: MoeSettings,
    data: PyReadonlyArray2<'_, u32>,
    starts: Vec<u32>,
    column: usize,
    gates: bool,
) -> PyResult<(Bound<'py, PyArray2<f32>>, Option<Bound<'py, PyArray3<f32>>>)> {
    let table = check_table(&data, &starts, &settings)?;
    let f = starts.len() - 1;
    if column >= f {
        return Err(PyValueError::new_err(format!("column {column} out of range (the table has {f} columns)")));
    }
    let voc = table_vocab(starts[f] as usize);
    let rows = table.len() / f;
    let (k, h) = ((starts[column + 1] - starts[column]) as usize, settings.heads);
    let (probs, weights) = with_moe(&voc, &arrays, settings, &[], |m| {
        let t = Tabular { moe: m, starts: &starts, weights: &[] };
        Ok(py.allow_threads(|| {
            let mut sc = m.scratch();
            let mut probs = vec![0f32; rows * k];
            let mut weights = vec![0f32; if gates { rows * h * (f + 1) } else { 0 }];
            let mut theta = vec![0f32; h * (f + 1)];
            for r in 0..rows {
                let row = &table[r * f..(r + 1) * f];
                let p = &mut probs[r * k..(r + 1) * k];
                if !gates {
                    t.predict(&mut sc, row, column, p, None);
                    continue;
                }
                t.predict(&mut sc, row, column, p, Some(&mut theta));
                let n = sc.theta(0).len();
                let w = &mut weights[r * h * (f + 1)..(r + 1) * h * (f + 1)];
                for hh in 0..h {
                    let th = &theta[hh * n..(hh + 1) * n];
                    for (e, &pos) in sc.expert_rows().iter().enumerate() {
                        w[hh * (f + 1) + pos as usize] = th[e];
                    }
                    if n > sc.expert_rows().len() {
                        w[hh * (f + 1) + f] = th[n - 1];
                    }
                }
            }
            (probs, weights)
        }))
    })?;
    let probs = probs.into_pyarray(py).reshape([rows, k])?;
    let weights = if gates { Some(weights.into_pyarray(py).reshape([rows, h, f + 1])?) } else { None };
    Ok((probs, weights))
}

/// One exact SGD step on one row (1 x columns), in place: column `column`
/// masked and predicted from the row's other present columns, or, with
/// `column=None`, every present column masked in turn and the gradient of
/// their summed (weighted) loss applied once, as a fit does. Returns the
/// summed loss. For gradient tests.
#[pyfunction]
#[pyo3(signature = (arrays, settings, row, starts, column, lr, weights=vec![]))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tabular_step(
    arrays: MoeArrays<'_>,
    settings: MoeSettings,
    row: PyReadonlyArray2<'_, u32>,
    starts: Vec<u32>,
    column: Option<usize>,
    lr: f32,
    weights: Vec<f32>,
) -> PyResult<f64> {
    let table = check_table(&row, &starts, &settings)?;
    let f = starts.len() - 1;
    check_weights(&weights, f)?;
    if table.len() != f || column.is_some_and(|c| c >= f || table[c] == ABSENT) {
        return Err(PyValueError::new_err("tabular_step takes one row (1 x columns) and a present column to mask"));
    }
    let voc = table_vocab(starts[f] as usize);
    with_moe(&voc, &arrays, settings, &[], |m| {
        let t = Tabular { moe: m, starts: &starts, weights: &weights };
        Ok(t.step_row(table, lr, column))
    })
}
