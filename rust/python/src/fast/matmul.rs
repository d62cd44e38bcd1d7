//! `matgrad.matmul`'s common call (see the module above).

use matgrad_core::gemm::{self, Batch, Gemm, MatMut, Precision};
use numpy::npyffi::PY_ARRAY_API;
use pyo3::prelude::*;

use super::{new_array, ranges_meet, RawArray, NPY_FLOAT};
use crate::compute::compute;
use crate::{precision, Float};

/// `a @ b` for the shapes this path takes, or None for the Python path.
pub(crate) fn matmul(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: Option<&Bound<'_, PyAny>>,
    precision: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let (Some(ra), Some(rb)) = (RawArray::of(py, a), RawArray::of(py, b)) else { return Ok(None) };
    if ra.type_num != rb.type_num {
        return Ok(None);
    }
    let precision = precision::resolve(precision, ra.type_num == NPY_FLOAT)?;
    match ra.type_num {
        NPY_FLOAT => matmul_typed::<f32>(py, ra, rb, out, precision),
        _ => matmul_typed::<f64>(py, ra, rb, out, precision),
    }
}

fn matmul_typed<T: Float>(
    py: Python<'_>,
    ra: RawArray,
    rb: RawArray,
    out: Option<&Bound<'_, PyAny>>,
    precision: Precision,
) -> PyResult<Option<Py<PyAny>>> {
    let (nda, ndb) = (ra.nd, rb.nd);
    let batched = nda >= 3 || ndb >= 3;
    if nda == 0 || ndb == 0 || (batched && (nda < 2 || ndb < 2)) {
        return Ok(None); // 0-d operands, vectors against stacks: the Python path
    }
    // The batch dimensions, broadcast as NumPy does (aligned on the right).
    let bnd = nda.max(ndb).saturating_sub(2);
    let batch_dim = |r: &RawArray, d: usize| {
        let lead = bnd - (r.nd - 2);
        if d < lead {
            1
        } else {
            r.dim(d - lead)
        }
    };
    // SAFETY: the views describe live arrays (`a` and `b` are borrowed for this call).
    let (Some(am), Some(bm)) = (unsafe { ra.matrix::<T>(true) }, unsafe { rb.matrix::<T>(false) }) else {
        return Ok(None);
    };
    if am.cols() != bm.rows() {
        return Ok(None); // the Python path raises NumPy's error
    }
    let (m, k, n) = (am.rows(), am.cols(), bm.cols());
    // The result's shape, as np.matmul gives it: the axes of 1-D operands removed.
    let mut shape: [usize; 64] = [0; 64];
    let nd = if batched {
        for (d, s) in shape.iter_mut().enumerate().take(bnd) {
            let (da, db) = (batch_dim(&ra, d), batch_dim(&rb, d));
            if da != db && da != 1 && db != 1 {
                return Ok(None); // the Python path raises NumPy's error
            }
            *s = if da == 1 { db } else { da };
        }
        shape[bnd] = m;
        shape[bnd + 1] = n;
        bnd + 2
    } else {
        let mut nd = 0;
        if nda == 2 {
            shape[nd] = m;
            nd += 1;
        }
        if ndb == 2 {
            shape[nd] = n;
            nd += 1;
        }
        nd
    };
    let shape = &shape[..nd];
    let target = match out {
        None => new_array::<T>(py, shape),
        Some(o) => {
            let Some(ro) = RawArray::of(py, o) else { return Ok(None) };
            let fits = ro.type_num == ra.type_num
                && ro.writeable()
                && ro.dims().iter().map(|&d| d as usize).eq(shape.iter().copied())
                && !ro.may_overlap_itself()
                && !ranges_meet(&ro, &ra)
                && !ranges_meet(&ro, &rb);
            if !fits {
                return Ok(None);
            }
            o.clone()
        }
    };
    let Some(rc) = RawArray::of(py, &target) else { return Ok(None) };
    // C's view: the result with the axes of 1-D operands put back.
    let cm = {
        let ptr = rc.data.cast::<T>();
        let st = |d: usize| rc.stride(d);
        // SAFETY: `target` is a live, writable array of the result's shape that overlaps
        // neither operand nor itself (checked above, or new).
        unsafe {
            match (nda, ndb, rc.nd) {
                (_, _, 0) => MatMut::from_raw_parts(ptr, 1, 1, 0, 0),
                (1, _, 1) => match st(0) {
                    Some(s) => MatMut::from_raw_parts(ptr, 1, n, 0, s),
                    None => return Ok(None),
                },
                (_, 1, 1) => match st(0) {
                    Some(s) => MatMut::from_raw_parts(ptr, m, 1, s, 0),
                    None => return Ok(None),
                },
                _ => match (st(rc.nd - 2), st(rc.nd - 1)) {
                    (Some(rs), Some(cs)) => MatMut::from_raw_parts(ptr, m, n, rs, cs),
                    _ => return Ok(None),
                },
            }
        }
    };
    let count: usize = shape[..nd.saturating_sub(2)].iter().product();
    let work = m * n * k * if batched { count } else { 1 };
    if batched {
        // Each operand's stride along each batch dimension, 0 where it broadcasts.
        let strides = |r: &RawArray| {
            let lead = bnd - (r.nd - 2);
            (0..bnd).map(|d| if d < lead || r.dim(d - lead) == 1 { Some(0) } else { r.stride(d - lead) }).collect::<Option<Vec<isize>>>()
        };
        let (Some(sa), Some(sb), Some(sc)) = (strides(&ra), strides(&rb), strides(&rc)) else { return Ok(None) };
        let batch_shape = &shape[..bnd];
        let run = move || {
            let batch = Batch { shape: batch_shape, a_strides: &sa, b_strides: &sb, c_strides: &sc };
            // SAFETY: every batch index addresses matrices of the live arrays, and C's do not
            // overlap (C is new, or checked not to overlap itself).
            unsafe { gemm::gemm_batched(am, bm, cm, batch, precision) }.map_err(|e| e.0)
        };
        compute(py, work, run)?.map_err(pyo3::exceptions::PyValueError::new_err)?;
    } else {
        let run = move || Gemm::new(am, bm, cm).map(|g| g.precision(precision).run()).map_err(|e| e.0);
        compute(py, work, run)?.map_err(pyo3::exceptions::PyValueError::new_err)?;
    }
    if out.is_some() {
        return Ok(Some(target.unbind()));
    }
    if nd == 0 {
        // vector · vector: a NumPy scalar, as np.matmul returns.
        // SAFETY: PyArray_Return takes the (owned) 0-d array and returns a new reference.
        return unsafe {
            let scalar = PY_ARRAY_API.PyArray_Return(py, target.into_ptr().cast());
            Bound::from_owned_ptr_or_err(py, scalar).map(|s| Some(s.unbind()))
        };
    }
    Ok(Some(target.unbind()))
}
