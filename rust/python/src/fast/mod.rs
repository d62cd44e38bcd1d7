//! The common call, end to end in the extension: exact ndarrays of float32 or float64 read
//! straight from NumPy's array struct (no borrow tracking, no heap allocation for one or two
//! dimensions), the results allocated by NumPy, the GIL kept for work too small to be worth
//! releasing it. Anything else returns `None` and takes the Python path, which holds the
//! NumPy semantics (array-likes, broadcasting, promotion, `out=` checks, errors).
//!
//! - [`matmul`]: matrices, vectors, stacks of one batch shape, `out=`;
//! - [`linear`]: the linear layer forward and backward, x of one or two dimensions;
//! - [`matmul_backward`]: matrices or stacks of one batch shape.

mod backward;
mod linear;
mod matmul;

pub(crate) use backward::matmul_backward;
pub(crate) use linear::{linear, linear_backward, Wanted};
pub(crate) use matmul::matmul;

use core::ffi::c_int;

use matgrad_core::gemm::{MatMut, MatRef, VecRef};
use numpy::npyffi::{self, flags, npy_intp, NPY_TYPES};
use numpy::PyArray;
use pyo3::prelude::*;

use crate::Float;

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

    /// The array's shape, written into `buffer` (NumPy allows at most 64 dimensions).
    pub fn shape<'b>(&self, buffer: &'b mut [usize; 64]) -> &'b [usize] {
        for (d, s) in buffer.iter_mut().enumerate().take(self.nd) {
            *s = self.dim(d);
        }
        &buffer[..self.nd]
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

pub(crate) fn ranges_meet(a: &RawArray, b: &RawArray) -> bool {
    match (a.byte_range(), b.byte_range()) {
        (Some((a0, a1)), Some((b0, b1))) => a0 < b1 && b0 < a1,
        _ => false,
    }
}

impl RawArray {
    /// The array as a matrix: its last two dimensions, or a 1-D array as a row (`as_row`) or
    /// a column; None for other ranks or strides that are not whole elements.
    /// SAFETY: the array is alive for `'a`.
    pub unsafe fn matrix<'a, T>(&self, as_row: bool) -> Option<MatRef<'a, T>> {
        let ptr = self.data.cast::<T>();
        Some(match self.nd {
            1 if as_row => MatRef::from_raw_parts(ptr, 1, self.dim(0), 0, self.stride(0)?),
            1 => MatRef::from_raw_parts(ptr, self.dim(0), 1, self.stride(0)?, 0),
            2.. => MatRef::from_raw_parts(
                ptr,
                self.dim(self.nd - 2),
                self.dim(self.nd - 1),
                self.stride(self.nd - 2)?,
                self.stride(self.nd - 1)?,
            ),
            _ => return None,
        })
    }

    /// [`RawArray::matrix`] for writing.
    /// SAFETY: the array is alive and not otherwise accessed for `'a`, and its elements do not
    /// overlap (checked by the caller, or a new array).
    pub unsafe fn matrix_mut<'a, T>(&self, as_row: bool) -> Option<MatMut<'a, T>> {
        let m = self.matrix::<T>(as_row)?;
        Some(MatMut::from_raw_parts(self.data.cast(), m.rows(), m.cols(), m.row_stride(), m.col_stride()))
    }

    /// A 1-D array as a vector.
    /// SAFETY: the array is alive for `'a`.
    pub unsafe fn vector<'a, T>(&self) -> Option<VecRef<'a, T>> {
        (self.nd == 1).then(|| self.stride(0).map(|s| VecRef::from_raw_parts(self.data.cast(), self.dim(0), s)))?
    }
}

/// A new, uninitialised C-ordered array of `shape`.
pub(crate) fn new_array<'py, T: Float>(py: Python<'py>, shape: &[usize]) -> Bound<'py, PyAny> {
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
