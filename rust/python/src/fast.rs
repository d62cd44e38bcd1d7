//! The common call, end to end in the extension: exact ndarrays of float32 or float64 read
//! straight from NumPy's array struct (no borrow tracking, no heap allocation for one or two
//! dimensions), the result allocated by NumPy, the GIL kept for work too small to be worth
//! releasing it. Anything else returns `None` and takes the Python path, which holds the
//! NumPy semantics (array-likes, broadcasting, promotion, `out=` checks, errors).

use core::ffi::c_int;

use matgrad_core::gemm::{self, Batch, Gemm, MatMut, MatRef};
use numpy::npyffi::{self, flags, npy_intp, NPY_TYPES, PY_ARRAY_API};
use numpy::PyArray;
use pyo3::prelude::*;

use crate::Float;

/// Products of at least this many multiply-adds release the GIL while they compute (below it,
/// releasing and taking it back costs more than other threads could gain).
const RELEASE_GIL_WORK: usize = 64 * 64 * 64;

/// The fields of one ndarray that the products need, read from its struct.
#[derive(Clone, Copy)]
pub(crate) struct RawArray {
    pub data: *mut u8,
    pub nd: usize,
    dims: *const npy_intp,
    strides: *const npy_intp,
    pub type_num: c_int,
    flags: c_int,
    /// Bytes per element.
    pub itemsize: usize,
}

/// NumPy's type numbers for the two dtypes matgrad computes.
pub(crate) const NPY_FLOAT: c_int = NPY_TYPES::NPY_FLOAT as c_int;
pub(crate) const NPY_DOUBLE: c_int = NPY_TYPES::NPY_DOUBLE as c_int;

impl RawArray {
    /// `obj` if it is exactly an ndarray (not a subclass) of native float32 or float64, aligned.
    pub fn of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<RawArray> {
        let ptr = obj.as_ptr();
        // SAFETY: the type check reads the object's type; the fields are read only once it is
        // known to be an ndarray, whose struct layout NumPy keeps stable.
        unsafe {
            if npyffi::PyArray_CheckExact(py, ptr) == 0 {
                return None;
            }
            let fields = &*npyffi::objects::_PyArray_GET_ITEM_DATA(ptr.cast());
            let descr = &(*fields.descr).fields;
            let type_num = descr.type_num;
            let itemsize = match type_num {
                NPY_FLOAT => 4,
                NPY_DOUBLE => 8,
                _ => return None,
            };
            // '=' native or '|' not applicable; '<' / '>' only when it matches this machine.
            let native = match descr.byteorder as u8 {
                b'=' | b'|' => true,
                b'<' => cfg!(target_endian = "little"),
                b'>' => cfg!(target_endian = "big"),
                _ => false,
            };
            if !native || fields.flags & flags::NPY_ARRAY_ALIGNED == 0 {
                return None;
            }
            Some(RawArray {
                data: fields.data.cast(),
                nd: fields.nd as usize,
                dims: fields.dimensions,
                strides: fields.strides,
                type_num,
                flags: fields.flags,
                itemsize,
            })
        }
    }

    pub fn dim(&self, d: usize) -> usize {
        // SAFETY: d < nd, and the array (kept alive by the caller) owns `dims[0..nd]`.
        unsafe { *self.dims.add(d) as usize }
    }

    pub fn dims(&self) -> &[npy_intp] {
        // SAFETY: as for dim.
        unsafe { core::slice::from_raw_parts(self.dims, self.nd) }
    }

    /// The stride of dimension `d` in elements, if it is a whole number of them.
    pub fn stride(&self, d: usize) -> Option<isize> {
        // SAFETY: as for dim.
        let bytes = unsafe { *self.strides.add(d) };
        (bytes % self.itemsize as isize == 0).then(|| bytes / self.itemsize as isize)
    }

    pub fn writeable(&self) -> bool {
        self.flags & flags::NPY_ARRAY_WRITEABLE != 0
    }

    /// The first and one-past-last byte the array's elements occupy (None when it is empty).
    pub fn byte_range(&self) -> Option<(usize, usize)> {
        let (mut lo, mut hi) = (self.data as isize, self.data as isize);
        for d in 0..self.nd {
            let n = self.dim(d) as isize;
            if n == 0 {
                return None;
            }
            // SAFETY: as for dim.
            let far = (n - 1) * unsafe { *self.strides.add(d) };
            if far < 0 {
                lo += far;
            } else {
                hi += far;
            }
        }
        Some((lo as usize, hi as usize + self.itemsize))
    }

    /// Whether two distinct index tuples could address the same element (checked as a
    /// sufficient condition: dimensions sorted by stride each step past all smaller ones).
    pub fn may_overlap_itself(&self) -> bool {
        let mut dims: [(usize, usize); 64] = [(0, 0); 64];
        let mut count = 0;
        for d in 0..self.nd.min(64) {
            let n = self.dim(d);
            if n > 1 {
                // SAFETY: as for dim.
                dims[count] = (unsafe { *self.strides.add(d) }.unsigned_abs(), n);
                count += 1;
            }
        }
        let dims = &mut dims[..count];
        dims.sort_unstable();
        let mut reach = self.itemsize - 1;
        for &(stride, n) in dims.iter() {
            if stride <= reach {
                return true;
            }
            reach += stride * (n - 1);
        }
        false
    }
}

fn ranges_meet(a: &RawArray, b: &RawArray) -> bool {
    match (a.byte_range(), b.byte_range()) {
        (Some((a0, a1)), Some((b0, b1))) => a0 < b1 && b0 < a1,
        _ => false,
    }
}

/// `a @ b` for the shapes this path takes, or None for the Python path.
pub(crate) fn matmul(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let (Some(ra), Some(rb)) = (RawArray::of(py, a), RawArray::of(py, b)) else { return Ok(None) };
    if ra.type_num != rb.type_num {
        return Ok(None);
    }
    match ra.type_num {
        NPY_FLOAT => matmul_typed::<f32>(py, ra, rb, out),
        _ => matmul_typed::<f64>(py, ra, rb, out),
    }
}

/// A 1-D or 2-D operand as a matrix view: a vector is a row (`as_row`) or a column.
/// SAFETY: `r` describes a live array; `strides` are whole elements (checked by the caller).
unsafe fn as_matrix<'a, T>(r: &RawArray, as_row: bool) -> Option<MatRef<'a, T>> {
    let ptr = r.data.cast::<T>();
    Some(match r.nd {
        1 if as_row => MatRef::from_raw_parts(ptr, 1, r.dim(0), 0, r.stride(0)?),
        1 => MatRef::from_raw_parts(ptr, r.dim(0), 1, r.stride(0)?, 0),
        _ => MatRef::from_raw_parts(ptr, r.dim(r.nd - 2), r.dim(r.nd - 1), r.stride(r.nd - 2)?, r.stride(r.nd - 1)?),
    })
}

fn matmul_typed<T: Float>(py: Python<'_>, ra: RawArray, rb: RawArray, out: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    let (nda, ndb) = (ra.nd, rb.nd);
    let batched = nda >= 3 || ndb >= 3;
    if nda == 0 || ndb == 0 || (batched && (nda != ndb || ra.dims()[..nda - 2] != rb.dims()[..ndb - 2])) {
        return Ok(None); // 0-d operands, broadcast batches: the Python path
    }
    // SAFETY: the views describe live arrays (`a` and `b` are borrowed for this call).
    let (Some(am), Some(bm)) = (unsafe { as_matrix::<T>(&ra, true) }, unsafe { as_matrix::<T>(&rb, false) }) else {
        return Ok(None);
    };
    if am.cols() != bm.rows() {
        return Ok(None); // the Python path raises NumPy's error
    }
    let (m, k, n) = (am.rows(), am.cols(), bm.cols());
    // The result's shape, as np.matmul gives it: the axes of 1-D operands removed.
    let mut shape: [usize; 64] = [0; 64];
    let nd = if batched {
        for (d, s) in shape.iter_mut().zip(ra.dims()).take(nda - 2) {
            *d = *s as usize;
        }
        shape[nda - 2] = m;
        shape[nda - 1] = n;
        nda
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
        let strides =
            |r: &RawArray| (0..nda - 2).map(|d| if r.dim(d) == 1 { Some(0) } else { r.stride(d) }).collect::<Option<Vec<isize>>>();
        let (Some(sa), Some(sb), Some(sc)) = (strides(&ra), strides(&rb), strides(&rc)) else { return Ok(None) };
        let batch_shape = &shape[..nda - 2];
        let run = move || {
            let batch = Batch { shape: batch_shape, a_strides: &sa, b_strides: &sb, c_strides: &sc };
            // SAFETY: every batch index addresses matrices of the live arrays, and C's do not
            // overlap (C is new, or checked not to overlap itself).
            unsafe { gemm::gemm_batched(am, bm, cm, batch) }.map_err(|e| e.0)
        };
        let done = if work >= RELEASE_GIL_WORK { py.detach(run) } else { run() };
        done.map_err(pyo3::exceptions::PyValueError::new_err)?;
    } else {
        let run = move || Gemm::new(am, bm, cm).map(Gemm::run).map_err(|e| e.0);
        let done = if work >= RELEASE_GIL_WORK { py.detach(run) } else { run() };
        done.map_err(pyo3::exceptions::PyValueError::new_err)?;
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

/// A new, uninitialised C-ordered array of `shape`.
fn new_array<'py, T: Float>(py: Python<'py>, shape: &[usize]) -> Bound<'py, PyAny> {
    // SAFETY: the GEMM writes every element before the array is handed out.
    unsafe {
        match *shape {
            [] => PyArray::<T, _>::new(py, [0usize; 0], false).into_any(),
            [n] => PyArray::<T, _>::new(py, [n], false).into_any(),
            [m, n] => PyArray::<T, _>::new(py, [m, n], false).into_any(),
            _ => PyArray::<T, _>::new(py, shape, false).into_any(),
        }
    }
}
