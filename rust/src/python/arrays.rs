//! Parameter arrays from numpy: shape, layout and aliasing checks, borrows,
//! and the shared output layer built from them. Every model's binding uses these.

use crate::hogwild::Hogwild;
use crate::objective::{OutputLayer, OutputSpec};
use crate::simd::SigmoidTable;
use crate::vocab::Vocab;
use numpy::{PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub(crate) fn slice_of<'a>(arr: &'a mut numpy::PyReadwriteArray2<'_, f32>, name: &str) -> PyResult<&'a mut [f32]> {
    arr.as_slice_mut().map_err(|_| PyValueError::new_err(format!("{name} must be a C-contiguous float32 array")))
}

/// Check the parameter arrays of one call before any is borrowed: each
/// must be C-contiguous and float-aligned (a misaligned view would make
/// its slice undefined behaviour), and no two may share memory (the
/// model writes them independently).
pub(crate) fn check_arrays(arrays: &[(&str, Option<&Bound<'_, PyArray2<f32>>>)]) -> PyResult<()> {
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
pub(crate) fn rw<'py, D: numpy::ndarray::Dimension>(
    a: &Bound<'py, numpy::PyArray<f32, D>>,
    name: &str,
) -> PyResult<numpy::PyReadwriteArray<'py, f32, D>> {
    a.try_readwrite().map_err(|e| {
        let why = if e.to_string().contains("writeable") {
            "is read-only"
        } else {
            "is in use by another call (is the model training in another thread?) or shares memory with another array of this call"
        };
        PyValueError::new_err(format!("{name} {why}"))
    })
}


pub(crate) fn lock_slice<'a>(l: &'a Option<numpy::PyReadonlyArray1<'_, f32>>) -> &'a [f32] {
    l.as_ref().and_then(|a| a.as_slice().ok()).unwrap_or(&[])
}

pub(crate) fn check_shape(arr: &Bound<'_, PyArray2<f32>>, name: &str, rows: usize, cols: usize) -> PyResult<()> {
    let s = arr.shape();
    if s[0] != rows || s[1] != cols {
        return Err(PyValueError::new_err(format!("{name} has shape {:?}, expected ({rows}, {cols})", s)));
    }
    Ok(())
}

/// A writable view of an optional float32 matrix with `rows` rows, checked.
pub(crate) fn rw_opt<'py>(
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

pub(crate) fn hog<'a>(arr: &'a mut Option<numpy::PyReadwriteArray2<'_, f32>>, name: &str, cols: usize) -> PyResult<Hogwild<'a>> {
    match arr.as_mut() {
        Some(a) => Ok(Hogwild::new(slice_of(a, name)?, cols)),
        None => Ok(Hogwild::empty()),
    }
}

pub(crate) fn output_layer<'a>(
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
