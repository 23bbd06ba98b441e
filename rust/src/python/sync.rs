//! Bindings of `sync.rs`: the fused per-round arithmetic of distributed
//! training, on numpy arrays in place (zero-copy; the GIL is released meanwhile).

use super::arrays::rw;
use crate::sync;
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

type F32s<'py> = Bound<'py, PyArrayDyn<f32>>;

/// Borrow the four buffers of one call for writing (distinct, C-contiguous,
/// of equal size; the wire float32 or bfloat16 bits as uint16) and run `f`
/// on their slices without the GIL.
fn on_buffers<W: sync::WireValue + numpy::Element>(
    py: Python<'_>,
    floats: [&F32s<'_>; 3],
    wire: &Bound<'_, PyArrayDyn<W>>,
    f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32], &mut [W]) + Send,
) -> PyResult<()> {
    const NAMES: [&str; 3] = ["param", "consensus", "own"];
    let contiguous = |name: &str| PyValueError::new_err(format!("{name} must be a C-contiguous array"));
    let mut held = Vec::with_capacity(3);
    for (a, name) in floats.into_iter().zip(NAMES) {
        held.push(rw(a, name)?);
    }
    let mut w = wire.try_readwrite().map_err(|_| PyValueError::new_err("wire is read-only or shares memory with another buffer"))?;
    let w = w.as_slice_mut().map_err(|_| contiguous("wire"))?;
    let mut slices = Vec::with_capacity(3);
    for (h, name) in held.iter_mut().zip(NAMES) {
        slices.push(h.as_slice_mut().map_err(|_| contiguous(name))?);
    }
    let n: Vec<usize> = slices.iter().map(|s| s.len()).collect();
    if n.iter().any(|&k| k != w.len()) {
        return Err(PyValueError::new_err(format!(
            "sync buffers differ in size: param {}, consensus {}, own {}, wire {}",
            n[0],
            n[1],
            n[2],
            w.len()
        )));
    }
    let [p, c, o]: [&mut [f32]; 3] = slices.try_into().map_err(|_| PyValueError::new_err("three buffers expected"))?;
    py.allow_threads(|| f(p, c, o, w));
    Ok(())
}

/// `f` on the buffers, with the wire as float32 or as bfloat16 bits (uint16).
macro_rules! with_wire {
    ($py:expr, $floats:expr, $wire:expr, |$p:ident, $c:ident, $o:ident, $w:ident| $body:expr) => {
        if let Ok(w) = $wire.downcast::<PyArrayDyn<f32>>() {
            on_buffers($py, $floats, w, |$p, $c, $o, $w| $body)
        } else if let Ok(w) = $wire.downcast::<PyArrayDyn<u16>>() {
            on_buffers($py, $floats, w, |$p, $c, $o, $w| $body)
        } else {
            Err(PyValueError::new_err("wire must be a float32 array or a uint16 array of bfloat16 bits"))
        }
    };
}

/// One sync round over one piece of a parameter array (see `sync::exchange`):
/// new = param - consensus - own; if recv: consensus += scale * wire;
/// param = consensus + new; if send: own = wire = new (rounded to the wire's
/// type), else own = 0.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sync_exchange(
    py: Python<'_>,
    param: F32s<'_>,
    consensus: F32s<'_>,
    own: F32s<'_>,
    wire: Bound<'_, PyAny>,
    scale: f32,
    recv: bool,
    send: bool,
) -> PyResult<()> {
    with_wire!(py, [&param, &consensus, &own], wire, |p, c, o, w| sync::exchange(p, c, o, w, scale, recv, send))
}

/// The end of a blocking round (see `sync::adopt`): consensus += scale * wire;
/// param = consensus; own = 0.
#[pyfunction]
pub(crate) fn sync_adopt(
    py: Python<'_>,
    param: F32s<'_>,
    consensus: F32s<'_>,
    own: F32s<'_>,
    wire: Bound<'_, PyAny>,
    scale: f32,
) -> PyResult<()> {
    with_wire!(py, [&param, &consensus, &own], wire, |p, c, o, w| sync::adopt(p, c, o, w, scale))
}
