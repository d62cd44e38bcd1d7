//! `matgrad.matmul_backward`'s common call (see the module above): grad_out, a and b of one
//! dtype, matrices or stacks of one batch shape. Broadcast batches (whose gradients are summed
//! back to an operand's shape) and 1-D operands take the Python path.

use matgrad_core::gemm::{self, Batch, Gemm, MatMut, MatRef, Precision};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::{new_array, RawArray, NPY_FLOAT};
use crate::compute::compute;
use crate::{precision, Float};

/// `(grad_a, grad_b)` of `a @ b` given `g` = ∂L/∂C, or None for the Python path.
pub(crate) fn matmul_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    wanted: (bool, bool),
    precision: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let (Some(rg), Some(ra), Some(rb)) = (RawArray::of(py, g), RawArray::of(py, a), RawArray::of(py, b)) else {
        return Ok(None);
    };
    if ra.type_num != rg.type_num || rb.type_num != rg.type_num {
        return Ok(None);
    }
    let precision = precision::resolve(precision, rg.type_num == NPY_FLOAT)?;
    match rg.type_num {
        NPY_FLOAT => typed::<f32>(py, [rg, ra, rb], wanted, precision),
        _ => typed::<f64>(py, [rg, ra, rb], wanted, precision),
    }
}

fn typed<T: Float>(py: Python<'_>, raw: [RawArray; 3], wanted: (bool, bool), precision: Precision) -> PyResult<Option<Py<PyAny>>> {
    let [rg, ra, rb] = raw;
    let nd = ra.nd;
    if nd < 2 || rb.nd != nd || rg.nd != nd {
        return Ok(None);
    }
    let mut shape_a = [0usize; 64];
    let shape_a = ra.shape(&mut shape_a);
    let batch_shape = &shape_a[..nd - 2];
    let same_batch = |r: &RawArray| r.dims()[..nd - 2].iter().zip(batch_shape).all(|(&d, &s)| d as usize == s);
    if !same_batch(&rb) || !same_batch(&rg) {
        return Ok(None); // broadcast batches: the Python path sums them back
    }
    // SAFETY: the views describe live arrays (borrowed for this call).
    let (Some(gm), Some(am), Some(bm)) =
        (unsafe { rg.matrix::<T>(true) }, unsafe { ra.matrix::<T>(true) }, unsafe { rb.matrix::<T>(true) })
    else {
        return Ok(None);
    };
    let (m, k, n) = (am.rows(), am.cols(), bm.cols());
    if bm.rows() != k || gm.rows() != m || gm.cols() != n {
        return Ok(None); // the Python path raises the error
    }
    // Each array's stride along each batch dimension (0 where the dimension is 1).
    let strides = |r: &RawArray| (0..nd - 2).map(|d| if r.dim(d) == 1 { Some(0) } else { r.stride(d) }).collect::<Option<Vec<isize>>>();
    let (Some(sg), Some(sa), Some(sb)) = (strides(&rg), strides(&ra), strides(&rb)) else { return Ok(None) };
    // A gradient asked for: a new array of its operand's shape, its view and batch strides.
    let gradient = |wanted: bool, shape: &[usize]| {
        if !wanted {
            return Some((None, None));
        }
        let array = new_array::<T>(py, shape);
        let r = RawArray::of(py, &array)?;
        // SAFETY: a new array, so it overlaps nothing.
        let view = unsafe { r.matrix_mut::<T>(true) }?;
        Some((Some(array), Some((view, strides(&r)?))))
    };
    let mut shape_b = [0usize; 64];
    let (Some((ga, ga_out)), Some((gb, gb_out))) = (gradient(wanted.0, shape_a), gradient(wanted.1, rb.shape(&mut shape_b))) else {
        return Ok(None);
    };
    let count: usize = batch_shape.iter().product();
    let work = m * n * k * count * (usize::from(wanted.0) + usize::from(wanted.1));
    let run = move || -> Result<(), String> {
        // ∂L/∂A = G Bᵀ and ∂L/∂B = Aᵀ G: transposes are views.
        let product = |x: MatRef<'_, T>, y: MatRef<'_, T>, out: MatMut<'_, T>, sx: &[isize], sy: &[isize], so: &[isize]| {
            if batch_shape.is_empty() {
                Gemm::new(x, y, out).map(|g| g.precision(precision).run())
            } else {
                let batch = Batch { shape: batch_shape, a_strides: sx, b_strides: sy, c_strides: so };
                // SAFETY: every batch index addresses matrices of the live arrays (all of one
                // batch shape), and the gradient's do not overlap (it is new).
                unsafe { gemm::gemm_batched(x, y, out, batch, precision) }
            }
        };
        if let Some((out, so)) = ga_out {
            product(gm, bm.t(), out, &sg, &sb, &so).map_err(|e| e.0)?;
        }
        if let Some((out, so)) = gb_out {
            product(am.t(), gm, out, &sa, &sg, &so).map_err(|e| e.0)?;
        }
        Ok(())
    };
    compute(py, work, run)?.map_err(pyo3::exceptions::PyValueError::new_err)?;
    let none = || py.None().into_bound(py);
    let tuple = PyTuple::new(py, [ga.unwrap_or_else(none), gb.unwrap_or_else(none)])?;
    Ok(Some(tuple.into_any().unbind()))
}
