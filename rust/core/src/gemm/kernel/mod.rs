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

use super::epilogue::Epilogue;
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
pub trait Simd: Copy {
    type T: Element;
    type V: Copy;
    const LANES: usize;
    /// Vector registers the ISA has (register blocks are sized to fit them).
    const REGISTERS: usize;

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
    /// A set of lanes for the masked loads and stores.
    type Mask: Copy;
    /// The first `count` lanes (`count <= LANES`).
    unsafe fn first_lanes(count: usize) -> Self::Mask;
    /// Loads the lanes in `m`, zero in the others, whose memory is not touched (so a load at
    /// the edge of an operand never reads past it).
    unsafe fn load_masked(p: *const Self::T, m: Self::Mask) -> Self::V;
    /// Stores the lanes in `m`, leaving the memory of the others untouched.
    unsafe fn store_masked(p: *mut Self::T, v: Self::V, m: Self::Mask);
    /// The scalar twin of [`Simd::fmadd`], for edge tiles: fused exactly when `fmadd` is.
    unsafe fn fmadd_scalar(a: Self::T, b: Self::T, c: Self::T) -> Self::T;
    /// A hint to bring the cache line holding `p` into L1 (never faults; may do nothing).
    #[inline(always)]
    unsafe fn prefetch(p: *const Self::T) {
        let _ = p;
    }
}

/// [`Simd::load_masked`] for ISAs without masked loads: the first `count` lanes copied
/// through a zeroed buffer.
#[inline(always)]
#[allow(dead_code)] // (used by the NEON and portable kernels only)
pub(crate) unsafe fn load_first_through_buffer<S: Simd>(p: *const S::T, count: usize) -> S::V {
    let mut lanes = [<S::T as Element>::ZERO; 16];
    core::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), count);
    S::load(lanes.as_ptr())
}

/// [`Simd::store_masked`] for ISAs without masked stores: the first `count` lanes copied out
/// of a buffer.
#[inline(always)]
#[allow(dead_code)] // (used by the NEON and portable kernels only)
pub(crate) unsafe fn store_first_through_buffer<S: Simd>(p: *mut S::T, v: S::V, count: usize) {
    let mut lanes = [<S::T as Element>::ZERO; 16];
    S::store(lanes.as_mut_ptr(), v);
    core::ptr::copy_nonoverlapping(lanes.as_ptr(), p, count);
}

/// Work on elements `T` written once against [`Simd`], run in the registers of the ISA in use
/// by [`SimdElement::run_on`] (vector, thin, few-row, outer and tiny products).
pub trait SimdWork<T> {
    /// SAFETY: `S`'s features are enabled.
    unsafe fn run<S: Simd<T = T>>(&self);
}

/// An element type with SIMD registers in every ISA: which [`Simd`] type holds it.
pub trait SimdElement: Element {
    /// Runs `work` with the [`Simd`] type of `isa` for this element type, inside a
    /// `#[target_feature]` function of that ISA, so that its intrinsics inline.
    ///
    /// SAFETY: `isa` is supported by this CPU.
    unsafe fn run_on<W: SimdWork<Self>>(isa: Isa, work: &W);
}

/// [`SimdElement`] for one element type and its [`Simd`] type in each ISA.
macro_rules! simd_element {
    ($t:ty, x86: $avx512:ident, $avx2:ident, neon: $neon:ident) => {
        impl SimdElement for $t {
            #[inline(always)]
            unsafe fn run_on<W: SimdWork<$t>>(isa: Isa, work: &W) {
                #[cfg(target_arch = "x86_64")]
                match isa {
                    Isa::Avx512 => return x86::$avx512(work),
                    Isa::Avx2 => return x86::$avx2(work),
                    _ => {}
                }
                #[cfg(target_arch = "aarch64")]
                if isa == Isa::Neon {
                    return work.run::<neon::$neon>();
                }
                let _ = isa;
                work.run::<generic::Scalar<$t>>()
            }
        }
    };
}

simd_element!(f32, x86: with_avx512_f32, with_avx2_f32, neon: NeonF32);
simd_element!(f64, x86: with_avx512_f64, with_avx2_f64, neon: NeonF64);

/// Where and how one micro-kernel call writes its tile (see the module's contract).
#[derive(Clone, Copy)]
pub(crate) struct TileStore<T> {
    pub c: *mut T,
    pub rs: isize,
    pub cs: isize,
    /// The part of the MR×NR tile inside C.
    pub rows: usize,
    pub cols: usize,
    /// The epilogue for this block of k, its operands at the tile's origin.
    pub ep: Epilogue<T>,
}

/// A micro-kernel: `run(kc, a_panel, b_panel, store)`.
pub(crate) type KernelFn<T> = unsafe fn(usize, *const T, *const T, &TileStore<T>);

/// The most lanes of any ISA's vector (AVX-512 f32).
pub(crate) const MAX_LANES: usize = 16;

/// The most rows of any kernel's tile.
pub(crate) const MAX_MR: usize = 16;

/// Unpacked operands of a column of `panels` tiles, one below the other, for
/// [`microkernel_in_place`]: in the first tile, row `i` of A at k step `p` is
/// `rows[i][p * a_k]`, and each tile's rows are `a_panel` elements past the previous tile's;
/// B's `b_lanes` (<= NR) lanes at k step `p` are contiguous from `b + p * b_k` (lanes past them
/// are read as zero, with masked loads), the same for every tile.
#[derive(Clone, Copy)]
pub(crate) struct InPlaceOperands<T> {
    /// One pointer per row of the first tile; rows past C's edge repeat the last real row
    /// (read, never stored), so nothing outside A is touched.
    pub rows: [*const T; MAX_MR],
    pub a_k: isize,
    pub b: *const T,
    pub b_k: isize,
    pub b_lanes: usize,
    /// Tiles in the column (at least 1; all but a lone one have MR rows).
    pub panels: usize,
    /// Elements from one tile's rows of A to the next tile's (MR rows down).
    pub a_panel: isize,
}

/// A micro-kernel reading its operands in place: `run(kc, operands, store)`.
pub(crate) type InPlaceKernelFn<T> = unsafe fn(usize, &InPlaceOperands<T>, &TileStore<T>);

/// A micro-kernel together with its register-block shape.
#[derive(Clone, Copy)]
pub struct MicroKernel<T> {
    /// The instruction set it is written in (packing may use it too).
    pub(crate) isa: Isa,
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    pub(crate) run: KernelFn<T>,
    /// The same kernel on operands read in place (small and skinny products).
    pub(crate) run_in_place: InPlaceKernelFn<T>,
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
    if st.ep.beta != <S::T as Element>::ZERO {
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

/// [`microkernel`] on operands read in place ([`InPlaceOperands`]): for products whose packing
/// would cost more than it saves (small ones, and skinny ones whose big operand would be packed
/// for one or two tiles). The same operations in the same order, so a product gives the same
/// bits either way. A tile narrower than NR loads B with masks, so nothing past B is read.
#[inline(always)]
pub(crate) unsafe fn microkernel_in_place<S: Simd, const MR: usize, const NV: usize>(
    kc: usize,
    src: &InPlaceOperands<S::T>,
    st: &TileStore<S::T>,
) {
    // Each branch stores its own accumulators: chosen between two k loops and stored after
    // the join, they went through the stack (a 1 KiB copy per tile).
    if src.b_lanes >= NV * S::LANES {
        in_place_tiles::<S, MR, NV, false>(kc, src, st)
    } else {
        in_place_tiles::<S, MR, NV, true>(kc, src, st)
    }
}

/// The tiles of [`microkernel_in_place`], one below the other: a call per column of tiles
/// rather than per tile, since with a short k the call and its set-up cost about as much as
/// the FMAs (Xeon, 2 threads, against a call per tile: (64,32,32) @ (32,32) f32 1.3×, f64
/// 1.1×; n = 96 f32 1.3×; docs/measurements.md). `EDGE`: B's lanes end inside the tile.
#[inline(always)]
unsafe fn in_place_tiles<S: Simd, const MR: usize, const NV: usize, const EDGE: bool>(
    kc: usize,
    src: &InPlaceOperands<S::T>,
    st: &TileStore<S::T>,
) {
    let InPlaceOperands { mut rows, a_k, b, b_k, b_lanes, panels, a_panel } = *src;
    debug_assert!(panels >= 1 && (panels == 1 || st.rows == MR));
    let mut masks = [S::first_lanes(0); NV];
    if EDGE {
        for (v, m) in masks.iter_mut().enumerate() {
            *m = S::first_lanes(b_lanes.saturating_sub(v * S::LANES).min(S::LANES));
        }
    }
    let mut st = *st;
    for tile in 0..panels {
        // (Moving on at the end of each tile instead, the last one's included, measured 5–10 %
        // slower on (64,32,32) @ (32,32).)
        if tile > 0 {
            for row in rows.iter_mut().take(MR) {
                *row = row.wrapping_offset(a_panel);
            }
            st.c = st.c.wrapping_offset(MR as isize * st.rs);
            st.ep = st.ep.from(MR, 0);
        }
        let acc = in_place_k_loop::<S, MR, NV, EDGE>(kc, &rows, a_k, b, b_k, &masks);
        store_tile::<S, MR, NV>(acc, &st);
    }
}

/// The k loop of one tile of [`in_place_tiles`].
#[inline(always)]
unsafe fn in_place_k_loop<S: Simd, const MR: usize, const NV: usize, const EDGE: bool>(
    kc: usize,
    rows: &[*const S::T; MAX_MR],
    a_k: isize,
    b: *const S::T,
    b_k: isize,
    masks: &[S::Mask; NV],
) -> [[S::V; NV]; MR] {
    let mut acc = [[S::zero(); NV]; MR];
    for p in 0..kc as isize {
        let mut bv = [S::zero(); NV];
        let b_row = b.offset(p * b_k);
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = if EDGE { S::load_masked(b_row.add(v * S::LANES), masks[v]) } else { S::load(b_row.add(v * S::LANES)) };
        }
        for (acc_row, row) in acc.iter_mut().zip(rows) {
            let ai = S::splat(*row.offset(p * a_k));
            for v in 0..NV {
                acc_row[v] = S::fmadd(ai, bv[v], acc_row[v]);
            }
        }
    }
    acc
}

/// One k step: NV loads of b, MR broadcasts of a, MR·NV FMAs.
///
/// A function marked `inline(always)`, not a closure: a closure is a function of its own that
/// the compiler may decline to inline, and compiled outside the kernel's `#[target_feature]`
/// it cannot inline the intrinsics either (docs/measurements.md, "Kernels").
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

/// [`Epilogue`] in vector form: what [`store_tile`] applies to each vector of a row-major
/// tile, read out of the epilogue once (stores through C could otherwise make the compiler
/// re-read it).
pub(crate) struct VectorEpilogue<S: Simd> {
    /// `Some(splat(alpha))` unless alpha is 1.
    alpha: Option<S::V>,
    /// `Some(splat(beta))` unless beta is 0 (C is then not read).
    beta: Option<S::V>,
    bias: bool,
    relu: bool,
    mask: bool,
}

impl<S: Simd> VectorEpilogue<S> {
    #[inline(always)]
    pub(crate) unsafe fn new(ep: &Epilogue<S::T>) -> Self {
        let one = <S::T as Element>::ONE;
        let zero = <S::T as Element>::ZERO;
        VectorEpilogue {
            alpha: (ep.alpha != one).then(|| S::splat(ep.alpha)),
            beta: (ep.beta != zero).then(|| S::splat(ep.beta)),
            bias: ep.bias.is_some(),
            relu: ep.relu,
            mask: ep.mask.is_some(),
        }
    }

    /// [`VectorEpilogue::store`] for the lanes in `m` only: C, the bias and the mask are read
    /// and C written in those lanes alone.
    #[inline(always)]
    pub(crate) unsafe fn store_masked(&self, x: S::V, c: *mut S::T, bias: *const S::T, mask: *const S::T, m: S::Mask) {
        let mut x = x;
        if let Some(alpha) = self.alpha {
            x = S::mul(alpha, x);
        }
        if let Some(beta) = self.beta {
            x = S::fmadd(beta, S::load_masked(c, m), x);
        }
        if self.bias {
            x = S::add(x, S::load_masked(bias, m));
        }
        if self.relu {
            x = S::max(S::zero(), x);
        }
        if self.mask {
            x = S::keep_where_positive(S::load_masked(mask, m), x);
        }
        S::store_masked(c, x, m);
    }

    /// Whether the store is all there is (alpha 1, beta 0, no bias, ReLU or mask).
    #[inline(always)]
    fn is_plain(&self) -> bool {
        self.alpha.is_none() && self.beta.is_none() && !self.bias && !self.relu && !self.mask
    }

    /// `x` (LANES accumulators of one tile row) finished and stored at `c`; `bias` and `mask`
    /// point at the same columns (read only if given): [`Epilogue::store_scalar`]'s operations
    /// in its order. A function, not a closure, so that it inlines into the kernel's
    /// `#[target_feature]` body (see [`k_step`]).
    #[inline(always)]
    pub(crate) unsafe fn store(&self, x: S::V, c: *mut S::T, bias: *const S::T, mask: *const S::T) {
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

/// Applies the epilogue to the accumulators and writes the tile to C.
///
/// Rows of C with unit column stride are stored a vector at a time (the tail of a partial
/// tile element by element); any other C goes through a spilled copy of the tile. Both use
/// the same operations in the same order, so the result does not depend on the path.
#[inline(always)]
pub(crate) unsafe fn store_tile<S: Simd, const MR: usize, const NV: usize>(acc: [[S::V; NV]; MR], st: &TileStore<S::T>) {
    let nr = NV * S::LANES;
    // Locals, so that stores through C cannot force these to be re-read.
    let TileStore { c, rs, cs, rows, cols, ep } = *st;
    let Epilogue { bias, mask, .. } = ep;
    let fma = |a, b, c| S::fmadd_scalar(a, b, c);
    if cs == 1 && ep.rows_contiguous() {
        let vep = VectorEpilogue::<S>::new(&ep);
        if rows == MR && cols == nr {
            // A whole tile: loops over the constant tile shape unroll and keep the accumulators
            // in registers (the loop over `rows` below spilled them to the stack). The plain
            // store (C = A B, the common case) is tested for once per tile: tested per vector,
            // the compiler kept some of the epilogue's tests inside the stores.
            let plain = vep.is_plain();
            for (i, acc_row) in acc.iter().enumerate() {
                for (v, &x) in acc_row.iter().enumerate() {
                    let (row, col) = (i as isize, (v * S::LANES) as isize);
                    let to = c.offset(row * rs + col);
                    if plain {
                        S::store(to, x);
                    } else {
                        vep.store(x, to, bias.at_in_row(row, col), mask.at_in_row(row, col));
                    }
                }
            }
            return;
        }
        for (i, acc_row) in acc.iter().enumerate().take(rows) {
            let row = i as isize;
            for (v, &x) in acc_row.iter().enumerate() {
                let j = v * S::LANES;
                if j + S::LANES <= cols {
                    let col = j as isize;
                    vep.store(x, c.offset(row * rs + col), bias.at_in_row(row, col), mask.at_in_row(row, col));
                } else if j < cols {
                    let col = j as isize;
                    let m = S::first_lanes(cols - j);
                    vep.store_masked(x, c.offset(row * rs + col), bias.at_in_row(row, col), mask.at_in_row(row, col), m);
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
            ep.store_at(*tile.add(i * nr + j), c.offset(i as isize * rs + j as isize * cs), i, j, fma);
        }
    }
}
