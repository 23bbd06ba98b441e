//! Bindings of `sync.rs`: the fused per-round arithmetic of distributed
//! training, on numpy arrays in place (zero-copy; the GIL is released meanwhile).

use super::arrays::rw;
use crate::sync;
use numpy::PyArrayDyn;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

type F32s<'py> = Bound<'py, PyArrayDyn<f32>>;

/// Borrow the four buffers of one call for writing (distinct, C-contiguous,
/// of equal size) and run `f` on their slices without the GIL.
fn on_buffers(
    py: Python<'_>,
    arrays: [&F32s<'_>; 4],
    f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32], &mut [f32]) + Send,
) -> PyResult<()> {
    const NAMES: [&str; 4] = ["param", "consensus", "own", "wire"];
    let mut held = Vec::with_capacity(4);
    for (a, name) in arrays.into_iter().zip(NAMES) {
        held.push(rw(a, name)?);
    }
    let mut slices = Vec::with_capacity(4);
    for (h, name) in held.iter_mut().zip(NAMES) {
        slices.push(
            h.as_slice_mut().map_err(|_| PyValueError::new_err(format!("{name} must be a C-contiguous float32 array")))?,
        );
    }
    let n: Vec<usize> = slices.iter().map(|s| s.len()).collect();
    if n.iter().any(|&k| k != n[0]) {
        return Err(PyValueError::new_err(format!(
            "sync buffers differ in size: param {}, consensus {}, own {}, wire {}",
            n[0], n[1], n[2], n[3]
        )));
    }
    let [p, c, o, w]: [&mut [f32]; 4] = slices.try_into().map_err(|_| PyValueError::new_err("four buffers expected"))?;
    py.allow_threads(|| f(p, c, o, w));
    Ok(())
}

/// One sync round over one piece of a parameter array (see `sync::exchange`):
/// new = param - consensus - own; if recv: consensus += scale * wire;
/// param = consensus + new; if send: own = wire = new, else own = 0.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sync_exchange(
    py: Python<'_>,
    param: F32s<'_>,
    consensus: F32s<'_>,
    own: F32s<'_>,
    wire: F32s<'_>,
    scale: f32,
    recv: bool,
    send: bool,
) -> PyResult<()> {
    on_buffers(py, [&param, &consensus, &own, &wire], |p, c, o, w| sync::exchange(p, c, o, w, scale, recv, send))
}

/// The end of a blocking round (see `sync::adopt`): consensus += scale * wire;
/// param = consensus; own = 0.
#[pyfunction]
pub(crate) fn sync_adopt(
    py: Python<'_>,
    param: F32s<'_>,
    consensus: F32s<'_>,
    own: F32s<'_>,
    wire: F32s<'_>,
    scale: f32,
) -> PyResult<()> {
    on_buffers(py, [&param, &consensus, &own, &wire], |p, c, o, w| sync::adopt(p, c, o, w, scale))
}
