//! Strided views of matrices and vectors: what the GEMM's callers hand it. Any element
//! strides, negative and zero included (reversed and broadcast views), so nothing is copied
//! before the GEMM; safe constructors check that a view stays inside its slice.

use core::marker::PhantomData;

use super::pack::Block;

/// A read-only strided matrix view: element `(i, j)` is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub(super) ptr: *const T,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rs: isize,
    pub(super) cs: isize,
    _life: PhantomData<&'a T>,
}

/// A writable strided matrix view. Distinct `(i, j)` must address distinct elements.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    pub(super) ptr: *mut T,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rs: isize,
    pub(super) cs: isize,
    _life: PhantomData<&'a mut T>,
}

// SAFETY: the views behave like `&[T]` / `&mut [T]` over their elements, which are Send and
// Sync for f32/f64; sharing a MatMut across threads is only done for disjoint parts of it.
unsafe impl<T: Sync> Send for MatRef<'_, T> {}
unsafe impl<T: Sync> Sync for MatRef<'_, T> {}
unsafe impl<T: Send> Send for MatMut<'_, T> {}
unsafe impl<T: Sync> Sync for MatMut<'_, T> {}
unsafe impl<T: Sync> Send for VecRef<'_, T> {}
unsafe impl<T: Sync> Sync for VecRef<'_, T> {}

/// A strided vector view: element `i` is at `ptr + i*stride`.
#[derive(Clone, Copy, Debug)]
pub struct VecRef<'a, T> {
    pub(super) ptr: *const T,
    pub(super) len: usize,
    pub(super) stride: isize,
    _life: PhantomData<&'a T>,
}

/// The offsets of the first and last element a strided view touches (None if it is empty).
fn offset_range(dims: &[(usize, isize)]) -> Option<(isize, isize)> {
    if dims.iter().any(|&(n, _)| n == 0) {
        return None;
    }
    let (mut lo, mut hi) = (0isize, 0isize);
    for &(n, s) in dims {
        let far = (n as isize - 1) * s;
        if far < 0 {
            lo += far;
        } else {
            hi += far;
        }
    }
    Some((lo, hi))
}

fn check_in_bounds(len: usize, base: usize, dims: &[(usize, isize)]) {
    if let Some((lo, hi)) = offset_range(dims) {
        assert!(base as isize + lo >= 0 && base as isize + hi < len as isize, "strided view reaches outside its slice");
    }
}

impl<'a, T> MatRef<'a, T> {
    /// # Safety
    /// Every `ptr + i*rs + j*cs` for `i < rows, j < cols` is readable for `'a`.
    pub unsafe fn from_raw_parts(ptr: *const T, rows: usize, cols: usize, rs: isize, cs: isize) -> Self {
        MatRef { ptr, rows, cols, rs, cs, _life: PhantomData }
    }

    /// A view of `data` starting at `base` (panics if it would reach outside `data`).
    pub fn from_slice(data: &'a [T], base: usize, rows: usize, cols: usize, rs: isize, cs: isize) -> Self {
        check_in_bounds(data.len(), base, &[(rows, rs), (cols, cs)]);
        // SAFETY: bounds checked just above (base is only offset into data if it is non-empty).
        unsafe { Self::from_raw_parts(data.as_ptr().wrapping_add(base), rows, cols, rs, cs) }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The distance between rows, in elements.
    pub fn row_stride(&self) -> isize {
        self.rs
    }
    /// The distance between columns, in elements.
    pub fn col_stride(&self) -> isize {
        self.cs
    }

    /// Element `(i, j)` (panics when out of range).
    pub fn get(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        assert!(i < self.rows && j < self.cols, "index ({i}, {j}) outside a ({}, {}) matrix", self.rows, self.cols);
        // SAFETY: in range, and the constructor guaranteed every in-range element is readable.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }

    pub(super) fn block(&self) -> Block<T> {
        Block { ptr: self.ptr, rs: self.rs, cs: self.cs }
    }
}

impl<'a, T> MatMut<'a, T> {
    /// # Safety
    /// Every `ptr + i*rs + j*cs` for `i < rows, j < cols` is writable for `'a`, nothing
    /// else accesses them meanwhile, and distinct `(i, j)` address distinct elements.
    pub unsafe fn from_raw_parts(ptr: *mut T, rows: usize, cols: usize, rs: isize, cs: isize) -> Self {
        MatMut { ptr, rows, cols, rs, cs, _life: PhantomData }
    }

    /// A view of `data` starting at `base` (panics if it would reach outside `data`, or if two
    /// elements could alias through a zero stride).
    pub fn from_slice(data: &'a mut [T], base: usize, rows: usize, cols: usize, rs: isize, cs: isize) -> Self {
        check_in_bounds(data.len(), base, &[(rows, rs), (cols, cs)]);
        let empty = rows == 0 || cols == 0;
        assert!(empty || ((rows <= 1 || rs != 0) && (cols <= 1 || cs != 0)), "a writable view cannot broadcast");
        // SAFETY: bounds checked above; the caller's &mut borrow excludes other access.
        unsafe { Self::from_raw_parts(data.as_mut_ptr().wrapping_add(base), rows, cols, rs, cs) }
    }

    /// A second handle on the same elements, for the duration of the borrow.
    pub fn reborrow(&mut self) -> MatMut<'_, T> {
        MatMut { ptr: self.ptr, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs, _life: PhantomData }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatMut { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
}

impl<'a, T> VecRef<'a, T> {
    /// # Safety
    /// Every `ptr + i*stride` for `i < len` is readable for `'a`.
    pub unsafe fn from_raw_parts(ptr: *const T, len: usize, stride: isize) -> Self {
        VecRef { ptr, len, stride, _life: PhantomData }
    }
    pub fn from_slice(data: &'a [T]) -> Self {
        // SAFETY: a contiguous slice.
        unsafe { Self::from_raw_parts(data.as_ptr(), data.len(), 1) }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
