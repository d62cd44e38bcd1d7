//! Micro-kernels: the innermost loop of the GEMM.
//!
//! # Kernel contract
//! A micro-kernel computes one MR×NR tile of C from two packed micro-panels:
//!
//! ```text
//!   a: MR-tall panel, kc columns   a[p*MR + i] = A[i, p]      (zero-padded past the last row)
//!   b: NR-wide panel, kc rows      b[p*NR + j] = B[p, j]      (zero-padded past the last column)
//!
//!   C[i, j] = relu?( alpha * Σ_p a[p*MR+i] b[p*NR+j]  +  beta * C[i, j]  +  bias[i, j] )
//!   C[i, j] = 0 where mask[i, j] > 0 is false, if a mask is given
//! ```
//!
//! only for the `rows × cols` part of the tile that lies inside C (edge tiles are partial), with
//! C addressed through arbitrary element strides. `beta == 0` means C is *not read* at all, so
//! a C full of NaN or garbage is overwritten, edge tiles included. The same scalar operations are
//! used for full and edge tiles, so an element's value never depends on where a tile boundary
//! falls (and hence not on the thread count either).
//!
//! Every ISA shares one kernel body, [`microkernel`], written against the small [`Simd`] trait;
//! each ISA file instantiates it inside a `#[target_feature]` function so the intrinsics inline.

use crate::element::Element;
use crate::gemm::Isa;

pub(crate) mod generic;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// An upper bound on any kernel's MR×NR tile, in elements (the largest, AVX-512 f32 8 × 48, is 384).
pub(crate) const MAX_TILE: usize = 16 * 32;

/// One SIMD register type and the handful of operations the kernel body needs.
///
/// Implementations are zero-sized markers; every method is a thin `#[inline(always)]` wrapper
/// over one intrinsic and is only sound to call where the marker's CPU features are enabled.
pub(crate) trait Simd: Copy {
    type T: Element;
    type V: Copy;
    const LANES: usize;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: Self::T) -> Self::V;
    /// Unaligned load of `LANES` elements.
    unsafe fn load(p: *const Self::T) -> Self::V;
    /// Unaligned store of `LANES` elements.
    unsafe fn store(p: *mut Self::T, v: Self::V);
    /// `a * b + c`, fused where the ISA has an FMA.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `if a > b { a } else { b }` (so `max(0, NaN)` is NaN, as in torch's relu).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `if mask > 0 { x } else { 0 }` (relu′ of the forward's output as a select,
    /// as torch's threshold_backward: a NaN or infinite `x` under a closed mask gives 0).
    /// The default spills both to memory; ISAs with a compare-and-mask override it.
    #[inline(always)]
    unsafe fn keep_where_positive(mask: Self::V, x: Self::V) -> Self::V {
        let zero = <Self::T as Element>::ZERO;
        let (mut m, mut v) = ([zero; 16], [zero; 16]);
        Self::store(m.as_mut_ptr(), mask);
        Self::store(v.as_mut_ptr(), x);
        for (v, m) in v.iter_mut().zip(m).take(Self::LANES) {
            if !m.is_positive() {
                *v = zero;
            }
        }
        Self::load(v.as_ptr())
    }
    /// The scalar twin of [`Simd::fmadd`], for edge tiles: fused exactly when `fmadd` is.
    unsafe fn fmadd_scalar(a: Self::T, b: Self::T, c: Self::T) -> Self::T;
    /// A hint to bring the cache line holding `p` into L1 (never faults; may do nothing).
    #[inline(always)]
    unsafe fn prefetch(p: *const Self::T) {
        let _ = p;
    }
}

/// Where and how one micro-kernel call writes its tile (see the module's contract).
#[derive(Clone, Copy)]
pub(crate) struct TileStore<T> {
    pub c: *mut T,
    pub rs: isize,
    pub cs: isize,
    /// The part of the MR×NR tile inside C.
    pub rows: usize,
    pub cols: usize,
    pub alpha: T,
    /// Zero means "do not read C".
    pub beta: T,
    /// Null for no bias; else `bias[i*bias_rs + j*bias_cs]` is added (one stride is 0).
    pub bias: *const T,
    pub bias_rs: isize,
    pub bias_cs: isize,
    pub relu: bool,
    /// Null for none; else the result is kept only where `mask[i*mask_rs + j*mask_cs] > 0`
    /// (the backward of a ReLU whose output the mask is), 0 elsewhere. Applied last.
    pub mask: *const T,
    pub mask_rs: isize,
    pub mask_cs: isize,
}

/// A micro-kernel: `run(kc, a_panel, b_panel, store)`.
pub(crate) type KernelFn<T> = unsafe fn(usize, *const T, *const T, &TileStore<T>);

/// The most rows of any kernel's tile.
pub(crate) const MAX_MR: usize = 16;

/// Unpacked operands of one tile, for [`microkernel_strided`]: row `i` of A at k step `p` is
/// `rows[i][p * a_k]`; B's NR lanes at k step `p` are contiguous from `b + p * b_k`.
#[derive(Clone, Copy)]
// Only the AVX2 kernels have strided twins so far (the others could not be measured here).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Strided<T> {
    /// One pointer per row of the tile; rows past C's edge repeat the last real row (read,
    /// never stored), so nothing outside A is touched.
    pub rows: [*const T; MAX_MR],
    pub a_k: isize,
    pub b: *const T,
    pub b_k: isize,
}

/// A micro-kernel reading its operands in place: `run(kc, operands, store)`.
pub(crate) type StridedKernelFn<T> = unsafe fn(usize, &Strided<T>, &TileStore<T>);

/// A micro-kernel together with its register-block shape.
#[derive(Clone, Copy)]
pub struct MicroKernel<T> {
    /// The instruction set it is written in (packing may use it too).
    pub(crate) isa: Isa,
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    pub(crate) run: KernelFn<T>,
    /// The same kernel on unpacked operands, where the ISA has one (small and skinny products).
    pub(crate) run_strided: Option<StridedKernelFn<T>>,
}

impl<T> MicroKernel<T> {
    pub fn mr(&self) -> usize {
        self.mr
    }
    pub fn nr(&self) -> usize {
        self.nr
    }
}

/// The kernel body shared by every ISA: an MR × (NV·LANES) block of accumulators.
///
/// ```text
///            b: NV vectors of LANES  ->  j
///          +------+------+
///   a[0] * | acc  | acc  |   row 0    (MR·NV accumulator registers;
///   a[1] * | acc  | acc  |   row 1     each k step: NV vector loads of b,
///    ...   |      |      |             MR broadcasts of a, MR·NV FMAs)
///   a[MR-1]| acc  | acc  |
///          +------+------+
/// ```
#[inline(always)]
pub(crate) unsafe fn microkernel<S: Simd, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const S::T,
    b: *const S::T,
    st: &TileStore<S::T>,
) {
    let nr = NV * S::LANES;
    if st.beta != <S::T as Element>::ZERO {
        // C is read at the end: start fetching its rows now, while the FMAs run.
        for i in 0..MR {
            let row = st.c.wrapping_offset(i as isize * st.rs);
            S::prefetch(row);
            S::prefetch(row.wrapping_offset((nr as isize - 1) * st.cs));
        }
    }
    let mut acc = [[S::zero(); NV]; MR];
    let (mut a, mut b) = (a, b);
    // Unrolled by four: fewer loop branches per FMA and room for the scheduler.
    for _ in 0..kc / 4 {
        k_step::<S, MR, NV>(&mut acc, a, b);
        k_step::<S, MR, NV>(&mut acc, a.add(MR), b.add(nr));
        k_step::<S, MR, NV>(&mut acc, a.add(2 * MR), b.add(2 * nr));
        k_step::<S, MR, NV>(&mut acc, a.add(3 * MR), b.add(3 * nr));
        a = a.add(4 * MR);
        b = b.add(4 * nr);
    }
    for _ in 0..kc % 4 {
        k_step::<S, MR, NV>(&mut acc, a, b);
        a = a.add(MR);
        b = b.add(nr);
    }
    store_tile::<S, MR, NV>(acc, st);
}

/// [`microkernel`] on operands read in place ([`Strided`]): for products whose packing would
/// cost more than it saves (small ones, and skinny ones whose big operand would be packed
/// for one or two tiles). The same operations in the same order, so a product gives the same
/// bits either way.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) unsafe fn microkernel_strided<S: Simd, const MR: usize, const NV: usize>(kc: usize, src: &Strided<S::T>, st: &TileStore<S::T>) {
    let mut acc = [[S::zero(); NV]; MR];
    let Strided { rows, a_k, b, b_k } = *src;
    for p in 0..kc as isize {
        let mut bv = [S::zero(); NV];
        let b_row = b.offset(p * b_k);
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = S::load(b_row.add(v * S::LANES));
        }
        for (acc_row, row) in acc.iter_mut().zip(rows) {
            let ai = S::splat(*row.offset(p * a_k));
            for v in 0..NV {
                acc_row[v] = S::fmadd(ai, bv[v], acc_row[v]);
            }
        }
    }
    store_tile::<S, MR, NV>(acc, st);
}

/// One k step: NV loads of b, MR broadcasts of a, MR·NV FMAs.
///
/// A function marked `inline(always)`, not a closure: a closure is a function of its own that
/// the compiler may decline to inline, and compiled outside the kernel's `#[target_feature]`
/// it cannot inline the intrinsics either (measured: the AVX2 kernels, whose closure was not
/// inlined, ran at ~1.4 GFLOP/s f32 instead of ~80).
#[inline(always)]
unsafe fn k_step<S: Simd, const MR: usize, const NV: usize>(acc: &mut [[S::V; NV]; MR], a: *const S::T, b: *const S::T) {
    let mut bv = [S::zero(); NV];
    for (v, bv) in bv.iter_mut().enumerate() {
        *bv = S::load(b.add(v * S::LANES));
    }
    for (i, acc_row) in acc.iter_mut().enumerate() {
        let ai = S::splat(*a.add(i));
        for v in 0..NV {
            acc_row[v] = S::fmadd(ai, bv[v], acc_row[v]);
        }
    }
}

/// What [`store_tile`] applies to each vector of a row-major tile, read out of the
/// [`TileStore`] once (stores through C could otherwise make the compiler re-read it).
struct VectorEpilogue<S: Simd> {
    /// `Some(splat(alpha))` unless alpha is 1.
    alpha: Option<S::V>,
    /// `Some(splat(beta))` unless beta is 0 (C is then not read).
    beta: Option<S::V>,
    bias: bool,
    relu: bool,
    mask: bool,
}

impl<S: Simd> VectorEpilogue<S> {
    /// `x` (LANES accumulators of one tile row) finished and stored at `c`; `bias` and `mask`
    /// point at the same columns (read only if given). A function, not a closure, so that it
    /// inlines into the kernel's `#[target_feature]` body (see [`k_step`]).
    #[inline(always)]
    unsafe fn store(&self, x: S::V, c: *mut S::T, bias: *const S::T, mask: *const S::T) {
        let mut x = x;
        if let Some(alpha) = self.alpha {
            x = S::mul(alpha, x);
        }
        if let Some(beta) = self.beta {
            x = S::fmadd(beta, S::load(c), x);
        }
        if self.bias {
            x = S::add(x, S::load(bias));
        }
        if self.relu {
            x = S::max(S::zero(), x);
        }
        if self.mask {
            x = S::keep_where_positive(S::load(mask), x);
        }
        S::store(c, x);
    }
}

/// Applies alpha, beta, bias and relu to the accumulators and writes the tile to C.
///
/// Rows of C with unit column stride are stored a vector at a time (the tail of a partial
/// tile element by element); any other C goes through a spilled copy of the tile. Both use
/// the same operations in the same order, so the result does not depend on the path.
#[inline(always)]
unsafe fn store_tile<S: Simd, const MR: usize, const NV: usize>(acc: [[S::V; NV]; MR], st: &TileStore<S::T>) {
    let nr = NV * S::LANES;
    let one = <S::T as Element>::ONE;
    let zero = <S::T as Element>::ZERO;
    // Locals, so that stores through C cannot force these to be re-read.
    let TileStore { c, rs, cs, rows, cols, alpha, beta, bias, bias_rs, bias_cs, relu, mask, mask_rs, mask_cs } = *st;
    let has_bias = !bias.is_null();
    let has_mask = !mask.is_null();
    let scalar = |x: S::T, c: *mut S::T, bias: *const S::T, mask: *const S::T| {
        let mut x = x;
        if alpha != one {
            x = alpha * x;
        }
        if beta != zero {
            x = S::fmadd_scalar(beta, *c, x);
        }
        if has_bias {
            x = x + *bias;
        }
        // Mirrors `max(0, x)` lane for lane: NaN and -0.0 pass through unchanged.
        if relu && zero > x {
            x = zero;
        }
        if has_mask && !(*mask).is_positive() {
            x = zero;
        }
        *c = x;
    };
    if cs == 1 && (!has_bias || bias_cs == 1) && (!has_mask || mask_cs == 1) {
        let ep = VectorEpilogue::<S> {
            alpha: (alpha != one).then(|| S::splat(alpha)),
            beta: (beta != zero).then(|| S::splat(beta)),
            bias: has_bias,
            relu,
            mask: has_mask,
        };
        if rows == MR && cols == nr {
            // A whole tile: loops over the constant tile shape unroll and keep the accumulators
            // in registers (the loop over `rows` below spilled them to the stack).
            for (i, acc_row) in acc.iter().enumerate() {
                for (v, &x) in acc_row.iter().enumerate() {
                    let (row, col) = (i as isize, (v * S::LANES) as isize);
                    ep.store(
                        x,
                        c.offset(row * rs + col),
                        bias.wrapping_offset(row * bias_rs + col),
                        mask.wrapping_offset(row * mask_rs + col),
                    );
                }
            }
            return;
        }
        for (i, acc_row) in acc.iter().enumerate().take(rows) {
            let c_row = c.offset(i as isize * rs);
            let bias_row = bias.wrapping_offset(i as isize * bias_rs);
            let mask_row = mask.wrapping_offset(i as isize * mask_rs);
            for (v, &x) in acc_row.iter().enumerate() {
                let j = v * S::LANES;
                if j + S::LANES <= cols {
                    ep.store(x, c_row.add(j), bias_row.wrapping_add(j), mask_row.wrapping_add(j));
                } else if j < cols {
                    let mut lanes = [zero; 16];
                    S::store(lanes.as_mut_ptr(), x);
                    for (l, &x) in lanes.iter().enumerate().take(cols - j) {
                        scalar(x, c_row.add(j + l), bias_row.wrapping_add(j + l), mask_row.wrapping_add(j + l));
                    }
                }
            }
        }
        return;
    }
    // Strided C: spill the accumulators, then the same operations one by one.
    let mut tile = core::mem::MaybeUninit::<[S::T; MAX_TILE]>::uninit();
    let tile = tile.as_mut_ptr().cast::<S::T>();
    debug_assert!(MR * nr <= MAX_TILE && S::LANES <= 16);
    for (i, acc_row) in acc.iter().enumerate() {
        for (v, &x) in acc_row.iter().enumerate() {
            S::store(tile.add(i * nr + v * S::LANES), x);
        }
    }
    for i in 0..rows {
        for j in 0..cols {
            let at = i as isize * bias_rs + j as isize * bias_cs;
            let mask_at = mask.wrapping_offset(i as isize * mask_rs + j as isize * mask_cs);
            scalar(*tile.add(i * nr + j), c.offset(i as isize * rs + j as isize * cs), bias.wrapping_offset(at), mask_at);
        }
    }
}
