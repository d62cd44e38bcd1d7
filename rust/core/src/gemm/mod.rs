//! The blocked GEMM: `C = relu?(alpha * A B + beta * C + bias)` on strided matrices.
//!
//! The BLIS structure, five loops around a register-blocked micro-kernel:
//!
//! ```text
//! LOOP 5  ic: rows of C in blocks of MC             A block (MC × KC) -> L3, shared
//! LOOP 4  pc: the k dimension in blocks of KC       pack A block into MR-tall panels
//! LOOP 3  jc: columns of C in blocks of NC          pack B block into NR-wide panels -> L2
//!                                                   (threads split the columns: each has
//!                                                   its own L2 and its own B block)
//! LOOP 2  ir: MR-tall panels of the A block         A micro-panel (MR × KC) -> L1
//! LOOP 1  jr: NR-wide panels of the B block         micro-kernel: MR × NR tile of C
//! ```
//!
//! The kernels hold vectors along C's rows (NR wide) and broadcast A (MR tall), so the
//! narrow A micro-panel is the one kept in L1 and the wide B block sits in L2: the mirror of
//! BLIS's column-major arrangement.
//!
//! K is never split between threads, and tiles always start at multiples of MR and NR, so every
//! element of C is computed by the same sequence of operations whatever the thread count.

mod blocking;
mod dispatch;
mod kernel;
mod pack;
mod small;

use blocking::even_block;
pub use blocking::{Blocking, CacheSizes};
pub use dispatch::{HasKernels, Isa};

use core::marker::PhantomData;

use crate::buffers::with_scratch;
use crate::threads::{self, Team};
use kernel::{MicroKernel, TileStore};
use pack::{pack_a, pack_b, Block};

/// A read-only strided matrix view: element `(i, j)` is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    ptr: *const T,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    _life: PhantomData<&'a T>,
}

/// A writable strided matrix view. Distinct `(i, j)` must address distinct elements.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
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
    ptr: *const T,
    len: usize,
    stride: isize,
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

    /// The same layout `offset` elements further on (for batches).
    fn shifted(&self, offset: isize) -> Self {
        MatRef { ptr: self.ptr.wrapping_offset(offset), ..*self }
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

    /// Element `(i, j)` (panics when out of range).
    pub fn get(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        assert!(i < self.rows && j < self.cols, "index ({i}, {j}) outside a ({}, {}) matrix", self.rows, self.cols);
        // SAFETY: in range, and the constructor guaranteed every in-range element is readable.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }

    fn block(&self) -> Block<T> {
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

    /// The same layout `offset` elements further on (for batches; the caller keeps them disjoint).
    fn shifted(&self, offset: isize) -> MatMut<'_, T> {
        MatMut { ptr: self.ptr.wrapping_offset(offset), rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs, _life: PhantomData }
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

/// Which dimension of C a bias vector runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAxis {
    /// `bias[j]` added to column j (the linear layer's Y = X W + b).
    Columns,
    /// `bias[i]` added to row i.
    Rows,
}

/// Shapes that do not fit together; the message names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl core::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

/// One GEMM, configured by its builder methods and then [`Gemm::run`].
///
/// ```
/// use matgrad_core::gemm::{Gemm, MatMut, MatRef};
/// let a = [1.0f64, 2.0, 3.0, 4.0]; // 2 × 2, row-major
/// let b = [5.0f64, 6.0, 7.0, 8.0];
/// let mut c = [f64::NAN; 4];
/// Gemm::new(MatRef::from_slice(&a, 0, 2, 2, 2, 1), MatRef::from_slice(&b, 0, 2, 2, 2, 1),
///           MatMut::from_slice(&mut c, 0, 2, 2, 2, 1)).unwrap().run();
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// ```
pub struct Gemm<'a, T: HasKernels> {
    a: MatRef<'a, T>,
    b: MatRef<'a, T>,
    c: MatMut<'a, T>,
    alpha: T,
    beta: T,
    bias: Option<(VecRef<'a, T>, BiasAxis)>,
    relu: bool,
    mask: Option<MatRef<'a, T>>,
    a_row_sums: Option<&'a mut [T]>,
    b_col_sums: Option<&'a mut [T]>,
    isa: Option<Isa>,
    parallel: bool,
}

impl<'a, T: HasKernels> Gemm<'a, T> {
    /// `C = A B` (alpha = 1, beta = 0: C is only written).
    pub fn new(a: MatRef<'a, T>, b: MatRef<'a, T>, c: MatMut<'a, T>) -> Result<Self, ShapeError> {
        if a.cols != b.rows || a.rows != c.rows || b.cols != c.cols {
            return Err(ShapeError(format!(
                "cannot multiply ({}, {}) by ({}, {}) into ({}, {})",
                a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
            )));
        }
        Ok(Gemm {
            a,
            b,
            c,
            alpha: T::ONE,
            beta: T::ZERO,
            bias: None,
            relu: false,
            mask: None,
            a_row_sums: None,
            b_col_sums: None,
            isa: None,
            parallel: true,
        })
    }

    pub fn alpha(mut self, alpha: T) -> Self {
        self.alpha = alpha;
        self
    }

    /// Scale of the old C; zero (the default) means C is never read.
    pub fn beta(mut self, beta: T) -> Self {
        self.beta = beta;
        self
    }

    /// Adds `bias` along `axis` in the micro-kernel's store, not in a second pass over C.
    pub fn bias(mut self, bias: VecRef<'a, T>, axis: BiasAxis) -> Result<Self, ShapeError> {
        let want = match axis {
            BiasAxis::Columns => self.c.cols,
            BiasAxis::Rows => self.c.rows,
        };
        if bias.len != want {
            return Err(ShapeError(format!(
                "bias of length {} does not fit a ({}, {}) result along its {:?}",
                bias.len, self.c.rows, self.c.cols, axis
            )));
        }
        self.bias = Some((bias, axis));
        Ok(self)
    }

    /// Applies `max(0, x)` to the result as it is stored.
    pub fn relu(mut self, relu: bool) -> Self {
        self.relu = relu;
        self
    }

    /// Keeps the result only where `mask > 0`, 0 elsewhere, as it is stored: the backward of
    /// a ReLU whose output `mask` is (∂L/∂Z = ∂L/∂H ⊙ relu′(Z), relu′(Z) = H > 0), without a
    /// pass of its own. `mask` has C's shape.
    pub fn relu_grad_mask(mut self, mask: MatRef<'a, T>) -> Result<Self, ShapeError> {
        if mask.rows != self.c.rows || mask.cols != self.c.cols {
            return Err(ShapeError(format!(
                "mask of shape ({}, {}) does not fit a ({}, {}) result",
                mask.rows, mask.cols, self.c.rows, self.c.cols
            )));
        }
        self.mask = Some(mask);
        Ok(self)
    }

    /// Also computes `sums[i] = Σ_p A[i, p]` while packing A (overwrites `sums`).
    pub fn a_row_sums(mut self, sums: &'a mut [T]) -> Result<Self, ShapeError> {
        if sums.len() != self.a.rows {
            return Err(ShapeError(format!("row sums of length {} for {} rows", sums.len(), self.a.rows)));
        }
        self.a_row_sums = Some(sums);
        Ok(self)
    }

    /// Also computes `sums[j] = Σ_p B[p, j]` while packing B (overwrites `sums`).
    pub fn b_col_sums(mut self, sums: &'a mut [T]) -> Result<Self, ShapeError> {
        if sums.len() != self.b.cols {
            return Err(ShapeError(format!("column sums of length {} for {} columns", sums.len(), self.b.cols)));
        }
        self.b_col_sums = Some(sums);
        Ok(self)
    }

    /// Uses this kernel instead of [`Isa::active`] (must be supported).
    pub fn isa(mut self, isa: Isa) -> Self {
        assert!(isa.is_supported(), "kernel {} is not supported by this CPU", isa.name());
        self.isa = Some(isa);
        self
    }

    /// Whether the library's threads may be used (default true; small problems stay serial).
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    pub fn run(self) {
        let isa = self.isa.unwrap_or_else(Isa::active);
        let mut problem = Problem::from(self);
        // The kernels store whole vectors along C's rows; a column-major C is the transposed
        // problem Cᵀ = Bᵀ Aᵀ with a row-major Cᵀ.
        if problem.c_cs != 1 && problem.c_rs == 1 {
            problem = problem.transposed();
        }
        // SAFETY: the views were validated by their constructors and Gemm::new's shape check.
        unsafe { problem.run(isa) }
    }
}

/// Raw form of a configured GEMM (all checks done).
struct Problem<T> {
    m: usize,
    n: usize,
    k: usize,
    a: Block<T>,
    b: Block<T>,
    c: *mut T,
    c_rs: isize,
    c_cs: isize,
    alpha: T,
    beta: T,
    bias: *const T,
    bias_rs: isize,
    bias_cs: isize,
    relu: bool,
    mask: *const T,
    mask_rs: isize,
    mask_cs: isize,
    a_row_sums: Option<*mut T>,
    b_col_sums: Option<*mut T>,
    parallel: bool,
}

/// Problems up to this many multiply-adds run without packing. Measured on the AVX-512
/// development machine: the unpacked loop wins only below about 8³; already at 16³ packing
/// into panels and running the register-blocked kernel is ~1.6x faster.
const DIRECT_MAX_WORK: usize = 8 * 8 * 8;
/// Problems up to this many multiply-adds (and k within one KC block, B's rows contiguous)
/// run the kernel on the operands in place when the ISA has a strided kernel: packing 32³
/// cost more than its arithmetic (measured on Zen 3, AVX2).
const UNPACKED_MAX_WORK: usize = 96 * 96 * 96;
/// C at most this many kernel tiles wide or tall is "skinny" (see `Problem::in_place_pays`).
const SKINNY_TILES: usize = 2;
/// The largest operand the kernel reads in place a line per row per k step, its rows far
/// apart (A with rows along memory's columns, B with long rows): every step then touches
/// another page, so the hardware prefetchers, which stop at page boundaries, do not help.
/// Measured on Zen 3 (two threads, f32): 1 and 4 MiB ran 1.3–1.8× faster in place than
/// packed, 8 and 16 MiB 1.5–3× slower (past the L2 TLB's 2048 × 4 KiB pages).
const FAR_ROWS_MAX_BYTES: usize = 4 << 20;
/// Problems below this many multiply-adds stay on one thread (thread wake-up and join cost
/// tens of microseconds; measured on the 2-core development machine).
const PARALLEL_MIN_WORK: usize = 96 * 96 * 96;

impl<'a, T: HasKernels> From<Gemm<'a, T>> for Problem<T> {
    fn from(g: Gemm<'a, T>) -> Self {
        let (bias, bias_rs, bias_cs) = match g.bias {
            None => (core::ptr::null(), 0, 0),
            Some((v, BiasAxis::Columns)) => (v.ptr, 0, v.stride),
            Some((v, BiasAxis::Rows)) => (v.ptr, v.stride, 0),
        };
        Problem {
            m: g.c.rows,
            n: g.c.cols,
            k: g.a.cols,
            a: g.a.block(),
            b: g.b.block(),
            c: g.c.ptr,
            c_rs: g.c.rs,
            c_cs: g.c.cs,
            alpha: g.alpha,
            beta: g.beta,
            bias,
            bias_rs,
            bias_cs,
            relu: g.relu,
            mask: g.mask.map_or(core::ptr::null(), |m| m.ptr),
            mask_rs: g.mask.map_or(0, |m| m.rs),
            mask_cs: g.mask.map_or(0, |m| m.cs),
            a_row_sums: g.a_row_sums.map(|s| s.as_mut_ptr()),
            b_col_sums: g.b_col_sums.map(|s| s.as_mut_ptr()),
            parallel: g.parallel,
        }
    }
}

/// A raw pointer that may cross to the team's threads; each use says why the access is disjoint.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only used for buffers whose parts are handed to distinct threads (see each use).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// A method, not `.0`, so closures capture the whole (Send) wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: a Problem is read by the threads of one GEMM, which write disjoint tiles of C and
// disjoint parts of the sums (see run_macro and run_blocked).
unsafe impl<T: Sync> Sync for Problem<T> {}

impl<T: HasKernels> Problem<T> {
    fn transposed(self) -> Self {
        Problem {
            m: self.n,
            n: self.m,
            a: Block { ptr: self.b.ptr, rs: self.b.cs, cs: self.b.rs },
            b: Block { ptr: self.a.ptr, rs: self.a.cs, cs: self.a.rs },
            c_rs: self.c_cs,
            c_cs: self.c_rs,
            bias_rs: self.bias_cs,
            bias_cs: self.bias_rs,
            mask_rs: self.mask_cs,
            mask_cs: self.mask_rs,
            a_row_sums: self.b_col_sums,
            b_col_sums: self.a_row_sums,
            ..self
        }
    }

    fn store(&self, i: usize, j: usize, rows: usize, cols: usize, first_k: bool, last_k: bool) -> TileStore<T> {
        let (i, j) = (i as isize, j as isize);
        // An optional operand of C's shape (null: none) at the tile's origin, when `on`.
        let at_tile = |m: *const T, on: bool, rs: isize, cs: isize| {
            if on && !m.is_null() {
                m.wrapping_offset(i * rs + j * cs)
            } else {
                core::ptr::null()
            }
        };
        TileStore {
            // SAFETY (offsets): i < m and j < n, so the tile origin lies inside C.
            c: unsafe { self.c.offset(i * self.c_rs + j * self.c_cs) },
            rs: self.c_rs,
            cs: self.c_cs,
            rows,
            cols,
            alpha: self.alpha,
            // Later k blocks accumulate onto what the first one stored.
            beta: if first_k { self.beta } else { T::ONE },
            bias: at_tile(self.bias, first_k, self.bias_rs, self.bias_cs),
            bias_rs: self.bias_rs,
            bias_cs: self.bias_cs,
            relu: self.relu && last_k,
            // The mask, like relu, applies to the finished sum.
            mask: at_tile(self.mask, last_k, self.mask_rs, self.mask_cs),
            mask_rs: self.mask_rs,
            mask_cs: self.mask_cs,
        }
    }

    unsafe fn run(&self, isa: Isa) {
        let (m, n, k) = (self.m, self.n, self.k);
        if k == 0 || m == 0 || n == 0 {
            return self.run_degenerate();
        }
        let work = m * n * k;
        if work <= DIRECT_MAX_WORK {
            return small::gemm_direct(self, isa);
        }
        let kern = T::microkernel_for(isa, n);
        let blocking = Blocking::new(kern.mr, kern.nr, core::mem::size_of::<T>(), CacheSizes::get());
        let (serial, shared);
        let team = if self.parallel && work >= PARALLEL_MIN_WORK {
            shared = threads::team();
            &*shared
        } else {
            serial = Team::SERIAL;
            &serial
        };
        match kern.run_strided {
            Some(run) if self.in_place_pays(&kern, blocking.kc) => small::gemm_unpacked(self, &kern, run, blocking.kc, team),
            _ => self.run_blocked(&kern, blocking, team),
        }
    }

    /// Whether the kernel should read the operands in place rather than packed: when B's
    /// lanes are contiguous and packing would not repay its copy. A small product (within one
    /// KC block) costs less than packing it (32³ measured on Zen 3); a skinny one, C at most
    /// [`SKINNY_TILES`] tiles wide or tall, would pack its big operand for that many tiles'
    /// use only (H1 W2 in an MLP step, 256×1024 by 1024×10: 42 → 75 GFLOP/s in place, two
    /// threads), as long as the kernel's reads stream (see [`FAR_ROWS_MAX_BYTES`]).
    fn in_place_pays(&self, kern: &MicroKernel<T>, kc: usize) -> bool {
        let (m, n, k) = (self.m, self.n, self.k);
        if self.b.cs != 1 {
            return false;
        }
        if m * n * k <= UNPACKED_MAX_WORK && k <= kc {
            return true;
        }
        let skinny = n.div_ceil(kern.nr) <= SKINNY_TILES || m.div_ceil(kern.mr) <= SKINNY_TILES;
        // Each k step reads one element of each of A's MR rows and NR lanes of one row of B.
        let size = core::mem::size_of::<T>();
        let a_streams = self.a.cs == 1 || m * k * size <= FAR_ROWS_MAX_BYTES;
        let b_streams = self.b.rs.unsigned_abs() <= 2 * kern.nr || k * n * size <= FAR_ROWS_MAX_BYTES;
        skinny && a_streams && b_streams
    }

    /// k = 0 (C = beta C + bias), or an empty C (only the requested sums to fill).
    unsafe fn run_degenerate(&self) {
        let (m, n, k) = (self.m, self.n, self.k);
        if let Some(sums) = self.a_row_sums {
            for i in 0..m {
                let mut s = T::ZERO;
                for p in 0..k {
                    s = s + *self.a.at(i, p);
                }
                *sums.add(i) = s;
            }
        }
        if let Some(sums) = self.b_col_sums {
            for j in 0..n {
                *sums.add(j) = T::ZERO;
            }
            for p in 0..k {
                for j in 0..n {
                    *sums.add(j) = *sums.add(j) + *self.b.at(p, j);
                }
            }
        }
        for i in 0..m {
            for j in 0..n {
                let st = self.store(i, j, 1, 1, true, true);
                let c = st.c;
                let mut x = if st.beta != T::ZERO { st.beta * *c } else { T::ZERO };
                if !st.bias.is_null() {
                    x = x + *st.bias;
                }
                if st.relu && T::ZERO > x {
                    x = T::ZERO;
                }
                if !st.mask.is_null() && !(*st.mask).is_positive() {
                    x = T::ZERO;
                }
                *c = x;
            }
        }
    }

    /// LOOP 5 and LOOP 4: the A block, packed once and shared by all threads.
    unsafe fn run_blocked(&self, kern: &MicroKernel<T>, blk: Blocking, team: &Team) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (isa, mr) = (kern.isa, kern.mr);
        if let Some(sums) = self.a_row_sums {
            core::ptr::write_bytes(sums, 0, m);
        }
        if let Some(sums) = self.b_col_sums {
            core::ptr::write_bytes(sums, 0, n);
        }
        // Equal blocks rather than full ones and a sliver: k = 2048 at KC = 680 would
        // otherwise end in a pass over all of C for 8 k steps. KC depends on k alone, so the
        // order of each sum still does not depend on the thread count.
        let blk = Blocking { mc: even_block(m, blk.mc, mr), kc: even_block(k, blk.kc, 8), ..blk };
        let mc_max = blk.mc.min(m.next_multiple_of(mr));
        let kc_max = blk.kc.min(k);
        with_scratch::<T, _>(mc_max * kc_max, |a_packed| {
            let a_packed = SendPtr(a_packed.as_mut_ptr());
            // LOOP 5: rows of C in blocks of MC.
            for ic in (0..m).step_by(blk.mc) {
                let mc = blk.mc.min(m - ic);
                // LOOP 4: k in blocks of KC.
                for pc in (0..k).step_by(blk.kc) {
                    let kc = blk.kc.min(k - pc);
                    let a_block = Block { ptr: self.a.at(ic, pc), ..self.a };
                    let row_sums = self.a_row_sums.map(|s| s.add(ic));
                    let panels = mc.div_ceil(mr);
                    let row_sums = row_sums.map(SendPtr);
                    // SAFETY: each task packs its own panels and sums its own rows.
                    team.run_ranges(panels, 1, |range| pack_a(isa, mr, mc, kc, a_block, a_packed.get(), row_sums.map(SendPtr::get), range));
                    let k_part = KPart { pc, kc, first: pc == 0, last: pc + kc == k, sum_cols: ic == 0 };
                    self.run_macro(kern, blk, team, ic, mc, k_part, a_packed.get());
                }
            }
        });
    }

    /// LOOP 3 (split into tasks across threads), then LOOP 2 and LOOP 1 inside each task.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_macro(&self, kern: &MicroKernel<T>, blk: Blocking, team: &Team, ic: usize, mc: usize, kp: KPart, a_packed: *mut T) {
        let (mr, nr) = (kern.mr, kern.nr);
        let threads = team.threads();
        let n_panels = self.n.div_ceil(nr);
        let m_panels = mc.div_ceil(mr);
        // Split the columns into one chunk of whole NR panels per thread; with few columns,
        // split the rows of the A block too.
        let n_chunks = if threads > 1 { threads.min(n_panels) } else { 1 };
        let m_chunks = if n_chunks < threads { threads.div_ceil(n_chunks).min(m_panels) } else { 1 };
        let a_packed = SendPtr(a_packed);
        let task = |t: usize| {
            let (ni, mi) = (t / m_chunks, t % m_chunks);
            let q0 = n_panels * ni / n_chunks;
            let q1 = n_panels * (ni + 1) / n_chunks;
            let p0 = m_panels * mi / m_chunks;
            let p1 = m_panels * (mi + 1) / m_chunks;
            // Columns may only be summed by one task of each column range.
            let kp = KPart { sum_cols: kp.sum_cols && mi == 0, ..kp };
            self.run_task(kern, blk, ic, mc, kp, a_packed.get(), p0..p1, q0 * nr..(q1 * nr).min(self.n));
        };
        // SAFETY: tasks write disjoint tiles of C and disjoint column sums; A is only read.
        team.run(m_chunks * n_chunks, task);
    }

    /// One thread's share: LOOP 3 over its columns in blocks of NC (B block packed into this
    /// thread's L2), LOOP 2 over A micro-panels (each stays in L1), LOOP 1 over B micro-panels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_task(
        &self,
        kern: &MicroKernel<T>,
        blk: Blocking,
        ic: usize,
        mc: usize,
        kp: KPart,
        a_packed: *const T,
        a_panels: core::ops::Range<usize>,
        cols: core::ops::Range<usize>,
    ) {
        let (isa, mr, nr) = (kern.isa, kern.mr, kern.nr);
        let kc = kp.kc;
        let nc_step = even_block(cols.len(), blk.nc, nr);
        let nc_max = nc_step.min(cols.len().next_multiple_of(nr));
        with_scratch::<T, _>(nc_max * kc, |b_packed| {
            let b_packed = b_packed.as_mut_ptr();
            // LOOP 3: columns in blocks of NC.
            for jc in cols.clone().step_by(nc_step) {
                let nc = nc_step.min(cols.end - jc);
                let b_block = Block { ptr: self.b.at(kp.pc, jc), ..self.b };
                let col_sums = if kp.sum_cols { self.b_col_sums.map(|s| s.add(jc)) } else { None };
                pack_b(isa, nr, nc, kc, b_block, b_packed, col_sums, 0..nc.div_ceil(nr));
                // LOOP 2: A micro-panels.
                for q in a_panels.clone() {
                    let i = q * mr;
                    let rows = mr.min(mc - i);
                    let a_panel = a_packed.add(q * mr * kc);
                    // LOOP 1: B micro-panels, one tile of C each.
                    for (r, j) in (0..nc).step_by(nr).enumerate() {
                        let st = self.store(ic + i, jc + j, rows, nr.min(nc - j), kp.first, kp.last);
                        (kern.run)(kc, a_panel, b_packed.add(r * nr * kc), &st);
                    }
                }
            }
        });
    }
}

/// One block of the k dimension, and what happens in it.
#[derive(Clone, Copy)]
struct KPart {
    pc: usize,
    kc: usize,
    /// The first block stores with the caller's beta and the bias.
    first: bool,
    /// The last block applies relu.
    last: bool,
    /// Whether this pass over B also sums its columns (only the first row block does).
    sum_cols: bool,
}

/// The batch loop around [`Gemm`]: `C[idx] = A[idx] B[idx]` for every index of `shape`, each
/// operand's matrices `strides[d]` elements apart along batch dimension `d` (0 to broadcast).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'s> {
    pub shape: &'s [usize],
    pub a_strides: &'s [isize],
    pub b_strides: &'s [isize],
    pub c_strides: &'s [isize],
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element offsets of the `flat`-th matrix of A, B and C (row-major order over `shape`).
    fn offsets(&self, mut flat: usize) -> (isize, isize, isize) {
        let (mut a, mut b, mut c) = (0, 0, 0);
        for d in (0..self.shape.len()).rev() {
            let i = (flat % self.shape[d]) as isize;
            flat /= self.shape[d];
            a += i * self.a_strides[d];
            b += i * self.b_strides[d];
            c += i * self.c_strides[d];
        }
        (a, b, c)
    }
}

/// Batched `C = A B` (alpha = 1, beta = 0). Small products run one per thread; large ones one
/// after another, each using all threads.
///
/// # Safety
/// For every batch index the offset views are valid as for [`MatRef::from_raw_parts`]
/// and [`MatMut::from_raw_parts`], and no two batch indices share an element of C.
pub unsafe fn gemm_batched<T: HasKernels>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    mut c: MatMut<'_, T>,
    batch: Batch<'_>,
) -> Result<(), ShapeError> {
    let nd = batch.shape.len();
    if batch.a_strides.len() != nd || batch.b_strides.len() != nd || batch.c_strides.len() != nd {
        return Err(ShapeError("batch strides must have one entry per batch dimension".into()));
    }
    // Validate the shapes once, on the first product.
    Gemm::new(a, b, c.reborrow())?;
    let count = batch.len();
    let one = |t: usize, parallel: bool| {
        let (oa, ob, oc) = batch.offsets(t);
        Gemm::new(a.shifted(oa), b.shifted(ob), c.shifted(oc)).expect("shapes checked above").parallel(parallel).run();
    };
    let work = c.rows * c.cols * a.cols;
    if count > 1 && work < PARALLEL_MIN_WORK {
        // Distinct batch indices write distinct matrices of C (the caller's promise).
        threads::team().run_ranges(count, 4, |range| range.for_each(|t| one(t, false)));
    } else {
        (0..count).for_each(|t| one(t, true));
    }
    Ok(())
}
