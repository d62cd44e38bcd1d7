//! Borrowing NumPy arrays as raw strided views for the core.

use core::marker::PhantomData;

use matgrad_core::gemm::{MatMut, MatRef, VecRef};
use numpy::npyffi::_PyArray_GET_ITEM_DATA;
use numpy::npyffi::flags::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::Float;

/// A NumPy array's data pointer, shape and strides in elements (not bytes).
///
/// Valid while the array it came from is alive and not resized: the caller keeps the
/// `Bound` array for the duration of the computation (NumPy refuses to resize an array
/// that has other references).
pub(crate) struct ArrayView<T> {
    ptr: *mut T,
    pub shape: Vec<usize>,
    pub strides: Vec<isize>,
    _t: PhantomData<T>,
}

/// Moves raw views into the closure that runs without the GIL.
pub(crate) struct Unchecked<V>(pub V);
// SAFETY: the views point into arrays the calling frame keeps alive; the numerics only read
// inputs and write the output, which NumPy's own threading model leaves to the caller.
unsafe impl<V> Send for Unchecked<V> {}

impl<V> Unchecked<V> {
    /// A method, not `.0`, so the closure captures the whole (Send) wrapper.
    pub fn into_inner(self) -> V {
        self.0
    }
}

impl<T: Float> ArrayView<T> {
    /// Borrows `obj` (an ndarray of dtype T) for reading.
    pub fn borrow(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Self> {
        let arr = obj.cast::<PyArrayDyn<T>>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{name}: expected an ndarray of dtype {}, got {}",
                core::any::type_name::<T>(),
                crate::describe(obj)
            ))
        })?;
        if !arr.is_aligned() {
            return Err(PyValueError::new_err(format!("{name}: array data is not aligned")));
        }
        let size = core::mem::size_of::<T>() as isize;
        let strides = arr
            .strides()
            .iter()
            .map(|&s| {
                if s % size == 0 {
                    Ok(s / size)
                } else {
                    Err(PyValueError::new_err(format!("{name}: stride {s} bytes is not a multiple of the item size")))
                }
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(ArrayView { ptr: arr.data(), shape: arr.shape().to_vec(), strides, _t: PhantomData })
    }

    /// Borrows `obj` for writing: it must be writable and must not broadcast.
    pub fn borrow_mut(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Self> {
        let view = Self::borrow(obj, name)?;
        let arr = obj.cast::<PyArrayDyn<T>>()?;
        // SAFETY: reading the flags field of a live array object.
        let flags = unsafe { (*_PyArray_GET_ITEM_DATA(arr.as_array_ptr())).flags };
        if flags & NPY_ARRAY_WRITEABLE == 0 {
            return Err(PyValueError::new_err(format!("{name}: output array is read-only")));
        }
        let empty = view.shape.contains(&0);
        if !empty && view.shape.iter().zip(&view.strides).any(|(&n, &s)| n > 1 && s == 0) {
            return Err(PyValueError::new_err(format!("{name}: output array has a zero stride (a broadcast view)")));
        }
        Ok(view)
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Strides of the leading (batch) dimensions, 0 where this operand broadcasts.
    pub fn batch_strides(&self, batch: &[usize]) -> Vec<isize> {
        batch.iter().enumerate().map(|(d, &n)| if self.shape[d] == n { self.strides[d] } else { 0 }).collect()
    }

    /// The first matrix (last two dimensions) for reading.
    /// SAFETY: the array is alive for `'a`.
    pub unsafe fn matrix<'a>(&self) -> MatRef<'a, T> {
        let nd = self.ndim();
        MatRef::from_raw_parts(self.ptr, self.shape[nd - 2], self.shape[nd - 1], self.strides[nd - 2], self.strides[nd - 1])
    }

    /// The first matrix (last two dimensions) for writing.
    /// SAFETY: the array is alive and not otherwise accessed for `'a`.
    pub unsafe fn matrix_mut<'a>(&self) -> MatMut<'a, T> {
        let nd = self.ndim();
        MatMut::from_raw_parts(self.ptr, self.shape[nd - 2], self.shape[nd - 1], self.strides[nd - 2], self.strides[nd - 1])
    }

    /// A 1-D array as a vector.
    /// SAFETY: the array is alive for `'a`.
    pub unsafe fn vector<'a>(&self) -> VecRef<'a, T> {
        VecRef::from_raw_parts(self.ptr, self.shape[0], self.strides[0])
    }

    /// A 1-D output as a slice; ValueError unless its elements are contiguous.
    /// SAFETY: the array is alive and not otherwise accessed for `'a`.
    pub unsafe fn contiguous_vector_mut<'a>(&self, name: &str) -> PyResult<&'a mut [T]> {
        if self.ndim() != 1 || (self.strides[0] != 1 && self.shape[0] > 1) {
            return Err(PyValueError::new_err(format!("{name} must be a contiguous 1-D array, got shape {:?}", self.shape)));
        }
        Ok(core::slice::from_raw_parts_mut(self.ptr, self.shape[0]))
    }
}
