//! `matgrad.linear` and `matgrad.linear_backward`: their common call (see the module above),
//! x of one dimension (one sample) or two (a batch).

use matgrad_core::gemm::Precision;
use matgrad_core::linear::{self, LinearGrads, WeightLayout};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{new_array, RawArray, NPY_FLOAT};
use crate::compute::compute;
use crate::{precision, Float};

fn layout(out_in: bool) -> WeightLayout {
    if out_in {
        WeightLayout::OutIn
    } else {
        WeightLayout::InOut
    }
}

/// (in, out) of a weight of this layout.
fn weight_dims(w: &RawArray, out_in: bool) -> (usize, usize) {
    if out_in {
        (w.dim(1), w.dim(0))
    } else {
        (w.dim(0), w.dim(1))
    }
}

/// x as the layer sees it (one or two dimensions) and the weight (two), all of one dtype.
fn operands(py: Python<'_>, arrays: &[&Bound<'_, PyAny>]) -> Option<Vec<RawArray>> {
    let raw: Vec<RawArray> = arrays.iter().map(|a| RawArray::of(py, a)).collect::<Option<_>>()?;
    raw.iter().all(|r| r.type_num == raw[0].type_num).then_some(raw)
}

/// `y = x W + b` (or `x Wᵀ + b`), or None for the Python path.
pub(crate) fn linear(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    w: &Bound<'_, PyAny>,
    bias: Option<&Bound<'_, PyAny>>,
    out_in: bool,
    precision: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let mut arrays = vec![x, w];
    arrays.extend(bias);
    let Some(raw) = operands(py, &arrays) else { return Ok(None) };
    let precision = precision::resolve(precision, raw[0].type_num == NPY_FLOAT)?;
    match raw[0].type_num {
        NPY_FLOAT => linear_typed::<f32>(py, &raw, out_in, precision),
        _ => linear_typed::<f64>(py, &raw, out_in, precision),
    }
}

fn linear_typed<T: Float>(py: Python<'_>, raw: &[RawArray], out_in: bool, precision: Precision) -> PyResult<Option<Py<PyAny>>> {
    let (rx, rw, rb) = (raw[0], raw[1], raw.get(2).copied());
    if !matches!(rx.nd, 1 | 2) || rw.nd != 2 {
        return Ok(None);
    }
    let (n_in, n_out) = weight_dims(&rw, out_in);
    if rx.dim(rx.nd - 1) != n_in || rb.is_some_and(|b| b.nd != 1 || b.dim(0) != n_out) {
        return Ok(None); // the Python path raises the error
    }
    let rows = if rx.nd == 2 { rx.dim(0) } else { 1 };
    let y = if rx.nd == 2 { new_array::<T>(py, &[rows, n_out]) } else { new_array::<T>(py, &[n_out]) };
    let Some(ry) = RawArray::of(py, &y) else { return Ok(None) };
    // SAFETY: live arrays for this call; y is new (so it overlaps nothing).
    let views = unsafe { (rx.matrix::<T>(true), rw.matrix::<T>(true), rb.map(|b| b.vector::<T>()), ry.matrix_mut::<T>(true)) };
    let (Some(xm), Some(wm), bias, Some(ym)) = views else { return Ok(None) };
    let bias = match bias {
        None => None,
        Some(Some(b)) => Some(b),
        Some(None) => return Ok(None),
    };
    compute(py, rows * n_in * n_out, move || linear::forward(xm, wm, layout(out_in), bias, false, ym, precision))?
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.0))?;
    Ok(Some(y.unbind()))
}

/// Which gradients `linear_backward` is asked for.
#[derive(Clone, Copy)]
pub(crate) struct Wanted {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

/// `(grad_x, grad_weight, grad_bias)` of the linear layer, or None for the Python path.
pub(crate) fn linear_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    w: &Bound<'_, PyAny>,
    out_in: bool,
    wanted: Wanted,
    precision: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let Some(raw) = operands(py, &[g, x, w]) else { return Ok(None) };
    let precision = precision::resolve(precision, raw[0].type_num == NPY_FLOAT)?;
    match raw[0].type_num {
        NPY_FLOAT => backward_typed::<f32>(py, &raw, out_in, wanted, precision),
        _ => backward_typed::<f64>(py, &raw, out_in, wanted, precision),
    }
}

fn backward_typed<T: Float>(
    py: Python<'_>,
    raw: &[RawArray],
    out_in: bool,
    wanted: Wanted,
    precision: Precision,
) -> PyResult<Option<Py<PyAny>>> {
    let (rg, rx, rw) = (raw[0], raw[1], raw[2]);
    if !matches!(rx.nd, 1 | 2) || rg.nd != rx.nd || rw.nd != 2 {
        return Ok(None);
    }
    let (n_in, n_out) = weight_dims(&rw, out_in);
    let rows = if rx.nd == 2 { rx.dim(0) } else { 1 };
    if rx.dim(rx.nd - 1) != n_in || rg.dim(rg.nd - 1) != n_out || (rx.nd == 2 && rg.dim(0) != rows) {
        return Ok(None);
    }
    let new = |want: bool, shape: &[usize]| want.then(|| new_array::<T>(py, shape));
    let x_shape = if rx.nd == 2 { vec![rows, n_in] } else { vec![n_in] };
    let (gx, gw, gb) = (new(wanted.x, &x_shape), new(wanted.weight, &[rw.dim(0), rw.dim(1)]), new(wanted.bias, &[n_out]));
    let raw_of = |a: &Option<Bound<'_, PyAny>>| a.as_ref().and_then(|a| RawArray::of(py, a));
    let (rgx, rgw, rgb) = (raw_of(&gx), raw_of(&gw), raw_of(&gb));
    if rgx.is_some() != wanted.x || rgw.is_some() != wanted.weight || rgb.is_some() != wanted.bias {
        return Ok(None);
    }
    // SAFETY: live arrays for this call; the gradients are new (so they overlap nothing).
    let views = unsafe {
        (
            rg.matrix::<T>(true),
            rx.matrix::<T>(true),
            rw.matrix::<T>(true),
            rgx.map(|r| r.matrix_mut::<T>(true)),
            rgw.map(|r| r.matrix_mut::<T>(true)),
            rgb.map(|r| core::slice::from_raw_parts_mut(r.data.cast::<T>(), n_out)),
        )
    };
    let (Some(gm), Some(xm), Some(wm), gxm, gwm, gbs) = views else { return Ok(None) };
    let (Some(gxm), Some(gwm)) = (gxm.map_or(Some(None), |v| v.map(Some)), gwm.map_or(Some(None), |v| v.map(Some))) else {
        return Ok(None);
    };
    let size = rows * n_in * n_out * (usize::from(wanted.x) + usize::from(wanted.weight));
    compute(py, size, move || {
        let grads = LinearGrads { x: gxm, x_relu_mask: None, weight: gwm, bias: gbs, accumulate_weight: false, precision };
        linear::backward(gm, xm, wm, layout(out_in), grads)
    })?
    .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.0))?;
    let none = || py.None().into_bound(py);
    let tuple = PyTuple::new(py, [gx.unwrap_or_else(none), gw.unwrap_or_else(none), gb.unwrap_or_else(none)])?;
    Ok(Some(tuple.into_any().unbind()))
}
