//! The core GEMM against a naive reference: many shapes (around MR, NR, KC, MC and NC), every
//! kind of stride, every kernel this CPU supports, C pre-filled with NaN.

use matgrad_core::gemm::{gemm_batched, Batch, BiasAxis, Blocking, CacheSizes, Gemm, HasKernels, Isa, MatMut, MatRef, Precision, VecRef};
use matgrad_core::threads;

/// Deterministic values in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with 3 elements of padding after each row.
    Padded,
    /// Row-major, both axes reversed (negative strides).
    Reversed,
    /// Every row is the same row (row stride 0); read-only operands only.
    Broadcast,
}

/// A matrix stored in a NaN-padded buffer with the given layout.
struct Stored<T> {
    buf: Vec<T>,
    base: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<T: HasKernels> Stored<T> {
    fn new(rows: usize, cols: usize, layout: Layout, rng: &mut Lcg) -> Self {
        let guard = 7; // elements of NaN on each side, to catch out-of-bounds writes
        let (rs, cs, len, base) = match layout {
            Layout::RowMajor => (cols as isize, 1, rows * cols, 0),
            Layout::ColMajor => (1, rows as isize, rows * cols, 0),
            Layout::Padded => ((cols + 3) as isize, 1, rows * (cols + 3), 0),
            Layout::Reversed => (-(cols as isize), -1, rows * cols, (rows * cols).saturating_sub(1)),
            Layout::Broadcast => (0, 1, cols, 0),
        };
        let mut buf = vec![T::from_f64(f64::NAN); len + 2 * guard];
        let base = base + guard;
        for i in 0..rows {
            for j in 0..cols {
                let at = (base as isize + i as isize * rs + j as isize * cs) as usize;
                buf[at] = T::from_f64(rng.next());
            }
        }
        Stored { buf, base, rows, cols, rs, cs }
    }

    fn get(&self, i: usize, j: usize) -> T {
        self.buf[(self.base as isize + i as isize * self.rs + j as isize * self.cs) as usize]
    }

    fn view(&self) -> MatRef<'_, T> {
        MatRef::from_slice(&self.buf, self.base, self.rows, self.cols, self.rs, self.cs)
    }

    fn view_mut(&mut self) -> MatMut<'_, T> {
        MatMut::from_slice(&mut self.buf, self.base, self.rows, self.cols, self.rs, self.cs)
    }

    fn is_inside(&self, at: usize) -> bool {
        (0..self.rows).any(|i| (0..self.cols).any(|j| (self.base as isize + i as isize * self.rs + j as isize * self.cs) as usize == at))
    }

    fn fill_nan(&mut self) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let at = (self.base as isize + i as isize * self.rs + j as isize * self.cs) as usize;
                self.buf[at] = T::from_f64(f64::NAN);
            }
        }
    }
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    beta: f64,
    bias: Option<BiasAxis>,
    relu: bool,
    sums: bool,
    /// A ReLU-gradient mask of C's shape (some entries NaN), in a layout of its own.
    mask: bool,
}

impl Case {
    fn plain(m: usize, n: usize, k: usize) -> Case {
        Case { m, n, k, alpha: 1.0, beta: 0.0, bias: None, relu: false, sums: false, mask: false }
    }
}

/// Runs one case and checks every element against an f64 reference with the bound
/// |c - ref| <= 2 (k + 2) eps (|alpha| Σ|a||b| + |beta c| + |bias|), and that nothing
/// outside C changed.
fn check<T: HasKernels>(case: &Case, la: Layout, lb: Layout, lc: Layout, isa: Isa, seed: u64) {
    let Case { m, n, k, alpha, beta, bias, relu, sums, mask } = *case;
    let mut rng = Lcg(seed);
    let a = Stored::<T>::new(m, k, la, &mut rng);
    let b = Stored::<T>::new(k, n, lb, &mut rng);
    let mut c = Stored::<T>::new(m, n, lc, &mut rng);
    let c0: Vec<Vec<f64>> = (0..m).map(|i| (0..n).map(|j| c.get(i, j).to_f64()).collect()).collect();
    if beta == 0.0 {
        c.fill_nan(); // beta = 0 must not read C
    }
    let bias_len = match bias {
        Some(BiasAxis::Columns) => n,
        Some(BiasAxis::Rows) => m,
        None => 0,
    };
    let bias_vals: Vec<T> = (0..bias_len).map(|_| T::from_f64(rng.next())).collect();
    let mut mask_m = Stored::<T>::new(m, n, [Layout::ColMajor, Layout::RowMajor, Layout::Padded][(m + 2 * n) % 3], &mut rng);
    for i in 0..m {
        for j in (0..n).filter(|j| (i + j) % 7 == 3) {
            let at = (mask_m.base as isize + i as isize * mask_m.rs + j as isize * mask_m.cs) as usize;
            mask_m.buf[at] = T::from_f64(f64::NAN); // NaN > 0 is false: masked
        }
    }
    let mut row_sums = vec![T::from_f64(f64::NAN); m];
    let mut col_sums = vec![T::from_f64(f64::NAN); n];
    let guard_before = c.buf.clone();
    {
        let mut g =
            Gemm::new(a.view(), b.view(), c.view_mut()).unwrap().alpha(T::from_f64(alpha)).beta(T::from_f64(beta)).relu(relu).isa(isa);
        if let Some(axis) = bias {
            g = g.bias(VecRef::from_slice(&bias_vals), axis).unwrap();
        }
        if sums {
            g = g.a_row_sums(&mut row_sums).unwrap().b_col_sums(&mut col_sums).unwrap();
        }
        if mask {
            g = g.relu_grad_mask(mask_m.view()).unwrap();
        }
        g.run();
    }
    let eps = T::EPSILON.to_f64();
    let tag = format!("{}x{}x{} {la:?}/{lb:?}/{lc:?} {} {}", m, n, k, isa.name(), core::any::type_name::<T>());
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0, 0.0);
            for p in 0..k {
                let x = a.get(i, p).to_f64() * b.get(p, j).to_f64();
                exact += x;
                mag += x.abs();
            }
            let mut want = alpha * exact;
            mag *= alpha.abs();
            if beta != 0.0 {
                want += beta * c0[i][j];
                mag += (beta * c0[i][j]).abs();
            }
            if let Some(axis) = bias {
                let v = bias_vals[if axis == BiasAxis::Columns { j } else { i }].to_f64();
                want += v;
                mag += v.abs();
            }
            if relu {
                want = want.max(0.0);
            }
            let got = c.get(i, j).to_f64();
            if mask && !mask_m.get(i, j).is_positive() {
                assert!(got.to_bits() == 0.0f64.to_bits(), "{tag}: C[{i},{j}] = {got} under a closed mask");
                continue;
            }
            let tol = 2.0 * (k as f64 + 2.0) * eps * mag + f64::MIN_POSITIVE;
            assert!((got - want).abs() <= tol, "{tag}: C[{i},{j}] = {got}, want {want} (tol {tol})");
            if relu {
                assert!(got >= 0.0, "{tag}: relu left {got}");
            }
        }
    }
    for (at, (&before, &after)) in guard_before.iter().zip(&c.buf).enumerate() {
        if !c.is_inside(at) {
            assert!(before.to_f64().to_bits() == after.to_f64().to_bits(), "{tag}: wrote outside C at {at}");
        }
    }
    if sums {
        for (i, got) in row_sums.iter().enumerate() {
            let want: f64 = (0..k).map(|p| a.get(i, p).to_f64()).sum();
            let mag: f64 = (0..k).map(|p| a.get(i, p).to_f64().abs()).sum();
            assert!((got.to_f64() - want).abs() <= 2.0 * (k as f64 + 1.0) * eps * mag + f64::MIN_POSITIVE, "{tag}: row sum {i}");
        }
        for (j, got) in col_sums.iter().enumerate() {
            let want: f64 = (0..k).map(|p| b.get(p, j).to_f64()).sum();
            let mag: f64 = (0..k).map(|p| b.get(p, j).to_f64().abs()).sum();
            assert!((got.to_f64() - want).abs() <= 2.0 * (k as f64 + 1.0) * eps * mag + f64::MIN_POSITIVE, "{tag}: col sum {j}");
        }
    }
}

/// C = A B with both sums, on `isa`, into a row-major C filled with NaN first: the bits of
/// C, of A's row sums and of B's column sums.
fn product_with_sums<T: HasKernels>(a: MatRef<'_, T>, b: MatRef<'_, T>, isa: Isa) -> [Vec<u64>; 3] {
    let (m, n) = (a.rows(), b.cols());
    let nan = T::from_f64(f64::NAN);
    let mut c = vec![nan; m * n];
    let (mut row_sums, mut col_sums) = (vec![nan; m], vec![nan; n]);
    Gemm::new(a, b, MatMut::from_slice(&mut c, 0, m, n, n as isize, 1))
        .unwrap()
        .a_row_sums(&mut row_sums)
        .unwrap()
        .b_col_sums(&mut col_sums)
        .unwrap()
        .isa(isa)
        .run();
    [c, row_sums, col_sums].map(|v| v.iter().map(|x| x.to_f64().to_bits()).collect())
}

const LAYOUTS: [Layout; 4] = [Layout::RowMajor, Layout::ColMajor, Layout::Padded, Layout::Reversed];

fn shapes_around_tiles() -> Vec<(usize, usize, usize)> {
    let mut shapes = vec![(0, 0, 0), (0, 5, 3), (4, 0, 3), (3, 4, 0), (1, 1, 1), (2, 3, 1)];
    for &m in &[1, 5, 6, 7, 8, 9, 11, 12, 13, 15, 25] {
        for &n in &[1, 8, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49, 97] {
            shapes.push((m, n, 1 + (m * 7 + n * 3) % 40));
        }
    }
    shapes
}

#[test]
fn every_kernel_small_shapes_all_layouts() {
    for isa in Isa::supported() {
        for &(m, n, k) in &shapes_around_tiles() {
            for (t, &la) in LAYOUTS.iter().enumerate() {
                let lb = LAYOUTS[(t + 1) % 4];
                let lc = [Layout::RowMajor, Layout::Padded, Layout::ColMajor, Layout::Reversed][(m + n) % 4];
                check::<f32>(&Case::plain(m, n, k), la, lb, lc, isa, (m * 1000 + n * 10 + k) as u64);
                check::<f64>(&Case::plain(m, n, k), lb, la, lc, isa, (m * 1000 + n * 10 + k + 1) as u64);
            }
        }
    }
}

/// Shapes that cross the cache blocks of the active kernel (KC, MC and NC boundaries), so the
/// beta = 1 accumulation of later k blocks and several row and column blocks are exercised.
#[test]
fn every_kernel_block_boundaries() {
    for isa in Isa::supported() {
        let kern32 = <f32 as HasKernels>::microkernel(isa);
        let blk = Blocking::new(kern32.mr(), kern32.nr(), 4, CacheSizes::get());
        let shapes = [
            // (Blocks are evened out and may run 1/8 over: 5/4 of a block always takes two.)
            (kern32.mr() + 1, kern32.nr() * 2 + 3, blk.kc * 5 / 4 + 1),
            (blk.mc * 5 / 4 + 5, kern32.nr() + 1, 2 * blk.kc + 7),
            (3, blk.nc * 5 / 4 + 40, 17),
            (130, 70, blk.kc - 1),
        ];
        for &(m, n, k) in &shapes {
            check::<f32>(&Case::plain(m, n, k), Layout::RowMajor, Layout::RowMajor, Layout::RowMajor, isa, 7);
            check::<f64>(&Case::plain(m, n, k), Layout::ColMajor, Layout::Padded, Layout::Padded, isa, 8);
        }
        // Each narrower kernel: the widest C that selects it (past its NC if any width there
        // does), with k crossing its KC.
        for narrow in &<f32 as HasKernels>::microkernels(isa)[1..] {
            let blk = Blocking::new(narrow.mr(), narrow.nr(), 4, CacheSizes::get());
            let n = (1..2 * blk.nc).rev().find(|&n| <f32 as HasKernels>::microkernel_for(isa, n).nr() == narrow.nr()).unwrap();
            check::<f32>(
                &Case::plain(narrow.mr() + 3, n, blk.kc * 5 / 4 + 5),
                Layout::RowMajor,
                Layout::ColMajor,
                Layout::RowMajor,
                isa,
                9,
            );
            check::<f32>(&Case::plain(narrow.mr() + 3, n, 40), Layout::RowMajor, Layout::RowMajor, Layout::RowMajor, isa, 19);
        }
        for narrow in &<f64 as HasKernels>::microkernels(isa)[1..] {
            let blk = Blocking::new(narrow.mr(), narrow.nr(), 8, CacheSizes::get());
            let n = (1..2 * blk.nc).rev().find(|&n| <f64 as HasKernels>::microkernel_for(isa, n).nr() == narrow.nr()).unwrap();
            check::<f64>(
                &Case::plain(narrow.mr() + 3, n, blk.kc * 5 / 4 + 5),
                Layout::ColMajor,
                Layout::RowMajor,
                Layout::RowMajor,
                isa,
                10,
            );
            check::<f64>(&Case::plain(narrow.mr() + 3, n, 40), Layout::RowMajor, Layout::RowMajor, Layout::Padded, isa, 20);
        }
    }
}

/// Which register block a product uses depends on C's width, but all blocks of an ISA share
/// MR and so KC: every element is summed in the same order, and a column of C comes out the
/// same bits whether it is computed in a thin, a narrow or a wide product.
#[test]
fn narrow_and_wide_kernels_give_the_same_bits() {
    for isa in Isa::supported() {
        let (m, k) = (37, 700);
        let mut rng = Lcg(5);
        let a = Stored::<f32>::new(m, k, Layout::RowMajor, &mut rng);
        let b = Stored::<f32>::new(k, 500, Layout::RowMajor, &mut rng);
        let product = |n: usize| {
            let mut c = vec![0f32; m * n];
            Gemm::new(a.view(), MatRef::from_slice(&b.buf, b.base, k, n, 500, 1), MatMut::from_slice(&mut c, 0, m, n, n as isize, 1))
                .unwrap()
                .isa(isa)
                .run();
            c
        };
        let wide_n = 500;
        let wide = product(wide_n);
        let nr = |n| <f32 as HasKernels>::microkernel_for(isa, n).nr();
        let kernels = <f32 as HasKernels>::microkernels(isa);
        // One width per kernel (the widest that selects it), each checked against the wide product.
        let widths: Vec<usize> = kernels.iter().map(|kern| (1..wide_n).rev().find(|&n| nr(n) == kern.nr()).unwrap()).collect();
        assert!(kernels.len() == 1 || widths.windows(2).all(|w| nr(w[0]) != nr(w[1])), "{}: widths {widths:?}", isa.name());
        for narrow_n in widths {
            let narrow = product(narrow_n);
            for i in 0..m {
                for j in 0..narrow_n {
                    let (x, y) = (narrow[i * narrow_n + j], wide[i * wide_n + j]);
                    assert!(x.to_bits() == y.to_bits(), "{}: n = {narrow_n}, C[{i}, {j}] differs", isa.name());
                }
            }
        }
    }
}

/// The ReLU-gradient mask on every path: tiny (direct), small (in place), packed, edge tiles,
/// several k blocks (it applies to the finished sum only), C and the mask in any layout.
#[test]
fn relu_grad_mask_keeps_only_positive_entries() {
    for isa in Isa::supported() {
        let kc =
            Blocking::new(<f32 as HasKernels>::microkernel(isa).mr(), <f32 as HasKernels>::microkernel(isa).nr(), 4, CacheSizes::get()).kc;
        for &(m, n, k) in &[(3, 4, 5), (7, 17, 9), (25, 33, 40), (64, 64, 64), (61, 130, 150), (20, 50, kc * 5 / 4 + 3)] {
            let case = Case { mask: true, ..Case::plain(m, n, k) };
            for (t, &lc) in LAYOUTS.iter().enumerate() {
                check::<f32>(&case, Layout::RowMajor, LAYOUTS[(t + 2) % 4], lc, isa, (m + n + t) as u64);
                check::<f64>(&case, LAYOUTS[(t + 1) % 4], Layout::RowMajor, lc, isa, (m * n + t) as u64);
            }
        }
    }
}

/// Small products, short ones (C a few tiles tall, B smaller than L2) and skinny ones (C one or
/// two tiles wide or tall), these two over several k blocks, with a row-major B run the kernel
/// on the operands in place, others pack them: the same
/// operations in the same order, so the same bits, sums included, on any number of threads.
#[test]
fn unpacked_and_packed_paths_give_the_same_bits() {
    for isa in Isa::supported() {
        let kern = <f64 as HasKernels>::microkernel(isa);
        let kc = Blocking::new(kern.mr(), kern.nr(), 8, CacheSizes::get()).kc;
        let skinny = [(300, 2 * kern.nr() - 3, kc * 5 / 4 + 3), (2 * kern.mr() - 1, 150, 2 * kc + 5), (257, 10, 96)];
        let short = (8 * kern.mr() - 3, 3 * kern.nr() + 5, kc + 37);
        assert!(short.1 * short.2 * 8 < CacheSizes::get().l2, "the short case's B fits L2");
        for &(m, n, k) in [(13, 33, 20), (64, 64, 64), (50, 20, 40), (7, 100, 9)].iter().chain(&skinny).chain([&short]) {
            let mut rng = Lcg(11);
            let a = Stored::<f64>::new(m, k, Layout::RowMajor, &mut rng);
            let b_rows = Stored::<f64>::new(k, n, Layout::RowMajor, &mut rng);
            // The same B with every other element (column stride 2, rows 2n apart), which
            // packing reads, or, for products small enough for one thread, a copy of it in
            // contiguous rows (column-major B would take the thin path's dot products instead).
            let mut b_cols = vec![0f64; 2 * k * n];
            for p in 0..k {
                for j in 0..n {
                    b_cols[p * 2 * n + 2 * j] = b_rows.get(p, j);
                }
            }
            let product = |b: MatRef<'_, f64>, threads_n: usize| {
                threads::set_num_threads(threads_n).unwrap();
                product_with_sums(a.view(), b, isa)
            };
            let packed = product(MatRef::from_slice(&b_cols, 0, k, n, 2 * n as isize, 2), 1);
            for threads_n in [1, 2, 3] {
                let in_place = product(b_rows.view(), threads_n);
                for (what, (x, y)) in ["C", "row sums", "column sums"].iter().zip(in_place.iter().zip(&packed)) {
                    let at = x.iter().zip(y).position(|(x, y)| x != y);
                    assert!(at.is_none(), "{} ({m}, {n}, {k}), {threads_n} threads: {what} differ at {at:?}", isa.name());
                }
            }
        }
    }
    threads::set_num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).unwrap();
}

#[test]
fn broadcast_operands_with_zero_strides() {
    for isa in Isa::supported() {
        for &(m, n, k) in &[(20, 40, 30), (3, 3, 3), (70, 50, 90)] {
            check::<f32>(&Case::plain(m, n, k), Layout::Broadcast, Layout::RowMajor, Layout::RowMajor, isa, 3);
            check::<f64>(&Case::plain(m, n, k), Layout::RowMajor, Layout::Broadcast, Layout::ColMajor, isa, 4);
        }
    }
}

#[test]
fn alpha_beta_bias_relu_and_sums() {
    for isa in Isa::supported() {
        // (150, 9, 700) and (7, 150, 700) are skinny, (61, 40, 800) short: with a row-major B,
        // in place over k blocks.
        for &(m, n, k) in
            &[(0, 3, 2), (3, 2, 0), (5, 7, 3), (13, 33, 20), (40, 70, 300), (100, 36, 64), (150, 9, 700), (7, 150, 700), (61, 40, 800)]
        {
            for (t, &bias) in [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)].iter().enumerate() {
                // Without sums, small products with row-major B take the unpacked path.
                for sums in [true, false] {
                    let case = Case { m, n, k, alpha: -1.5, beta: if t == 1 { 0.0 } else { 0.75 }, bias, relu: t != 0, sums, mask: t != 1 };
                    for &lc in &[Layout::RowMajor, Layout::ColMajor, Layout::Padded] {
                        check::<f32>(&case, Layout::RowMajor, Layout::ColMajor, lc, isa, (m + n + k + t) as u64);
                        check::<f64>(&case, Layout::Reversed, Layout::RowMajor, lc, isa, (m * n + k + t) as u64);
                        check::<f32>(&case, Layout::ColMajor, Layout::Padded, lc, isa, (m + 2 * n + k + t) as u64);
                    }
                }
            }
        }
    }
}

/// The row and column sums are added in k order lane by lane on every path (scalar packing,
/// the AVX copy and the AVX transposition), so they agree bit for bit between kernels.
#[test]
fn fused_sums_are_bitwise_identical_on_every_kernel() {
    fn sums<T: HasKernels>(a: &Stored<T>, b: &Stored<T>, isa: Isa) -> (Vec<u64>, Vec<u64>) {
        let [_, row_sums, col_sums] = product_with_sums(a.view(), b.view(), isa);
        (row_sums, col_sums)
    }
    let mut rng = Lcg(17);
    for &(m, n, k) in &[(13, 50, 13), (9, 7, 300), (70, 100, 1030)] {
        for (la, lb) in [(Layout::RowMajor, Layout::RowMajor), (Layout::ColMajor, Layout::ColMajor), (Layout::Padded, Layout::ColMajor)] {
            let (a32, b32) = (Stored::<f32>::new(m, k, la, &mut rng), Stored::<f32>::new(k, n, lb, &mut rng));
            let (a64, b64) = (Stored::<f64>::new(m, k, la, &mut rng), Stored::<f64>::new(k, n, lb, &mut rng));
            let (want32, want64) = (sums(&a32, &b32, Isa::Generic), sums(&a64, &b64, Isa::Generic));
            for isa in Isa::supported() {
                assert!(sums(&a32, &b32, isa) == want32, "f32 sums differ: {} vs generic, {m}x{n}x{k} {la:?}/{lb:?}", isa.name());
                assert!(sums(&a64, &b64, isa) == want64, "f64 sums differ: {} vs generic, {m}x{n}x{k} {la:?}/{lb:?}", isa.name());
            }
        }
    }
}

#[test]
fn results_are_bitwise_identical_for_any_thread_count() {
    // A block taller than C is wide (threads split its rows), and a wide C (its columns).
    for (m, n, k) in [(301, 257, 513), (97, 301, 513)] {
        bitwise_identical_for_any_thread_count(m, n, k);
    }
    threads::set_num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).unwrap();
}

fn bitwise_identical_for_any_thread_count(m: usize, n: usize, k: usize) {
    let mut rng = Lcg(42);
    let a: Vec<f32> = (0..m * k).map(|_| rng.next() as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.next() as f32).collect();
    let run = |threads_n: usize| {
        threads::set_num_threads(threads_n).unwrap();
        let mut c = vec![f32::NAN; m * n];
        let mut sums = vec![0f32; n];
        Gemm::new(
            MatRef::from_slice(&a, 0, m, k, k as isize, 1),
            MatRef::from_slice(&b, 0, k, n, n as isize, 1),
            MatMut::from_slice(&mut c, 0, m, n, n as isize, 1),
        )
        .unwrap()
        .b_col_sums(&mut sums)
        .unwrap()
        .run();
        (c.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), sums.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    };
    let one = run(1);
    for t in [2, 3, 4] {
        assert!(run(t) == one, "{m}×{n}×{k}: results differ between 1 and {t} threads");
    }
}

/// Matrix·vector, vector·matrix and vector·vector products (C a column or a row): the dots
/// form, the columns form and the plain loop (by the layouts), k around the vector widths,
/// with every epilogue and both sums.
#[test]
fn vector_products() {
    for isa in Isa::supported() {
        for &(m, n) in &[(1, 1), (1, 37), (37, 1), (1, 300), (600, 1), (5, 1), (1, 3)] {
            for &k in &[1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257] {
                let seed = (m * 1000 + n * 10 + k) as u64;
                for (t, &la) in LAYOUTS.iter().enumerate() {
                    let (lb, lc) = (LAYOUTS[(t + 1) % 4], LAYOUTS[(t + k) % 4]);
                    check::<f32>(&Case::plain(m, n, k), la, lb, lc, isa, seed);
                    check::<f64>(&Case::plain(m, n, k), lb, la, lc, isa, seed + 1);
                }
                for (t, &bias) in [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)].iter().enumerate() {
                    let case =
                        Case { m, n, k, alpha: -1.5, beta: if t == 1 { 0.0 } else { 0.75 }, bias, relu: t != 0, sums: true, mask: t != 1 };
                    check::<f32>(&case, Layout::RowMajor, Layout::RowMajor, LAYOUTS[t], isa, seed + 2);
                    check::<f64>(&case, Layout::ColMajor, Layout::Reversed, LAYOUTS[t + 1], isa, seed + 3);
                }
            }
        }
    }
}

/// Vector products split their outputs among the threads, never k: the same bits on any
/// number of threads, in both forms.
#[test]
fn vector_products_are_bitwise_identical_for_any_thread_count() {
    let (m, k) = (3001, 777);
    let mut rng = Lcg(43);
    let a: Vec<f32> = (0..m * k).map(|_| rng.next() as f32).collect();
    let x: Vec<f32> = (0..k).map(|_| rng.next() as f32).collect();
    let run = |threads_n: usize, a_layout: (isize, isize)| {
        threads::set_num_threads(threads_n).unwrap();
        let mut y = vec![f32::NAN; m];
        Gemm::new(
            MatRef::from_slice(&a, 0, m, k, a_layout.0, a_layout.1),
            MatRef::from_slice(&x, 0, k, 1, 1, 1),
            MatMut::from_slice(&mut y, 0, m, 1, 1, 1),
        )
        .unwrap()
        .run();
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    // Rows contiguous (the dots form), then columns contiguous (the columns form).
    for layout in [(k as isize, 1), (1, m as isize)] {
        let one = run(1, layout);
        for t in [2, 3, 4] {
            assert!(run(t, layout) == one, "{layout:?}: results differ between 1 and {t} threads");
        }
    }
    threads::set_num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).unwrap();
}

#[test]
fn batched_with_broadcast_batch_dimensions() {
    // A: (2, 1, m, k), B: (1, 3, k, n) -> C: (2, 3, m, n)
    let (m, n, k) = (9, 21, 14);
    let mut rng = Lcg(9);
    let a: Vec<f64> = (0..2 * m * k).map(|_| rng.next()).collect();
    let b: Vec<f64> = (0..3 * k * n).map(|_| rng.next()).collect();
    let mut c = vec![f64::NAN; 6 * m * n];
    let shape = [2usize, 3];
    let (sa, sb, sc) = ([(m * k) as isize, 0], [0, (k * n) as isize], [(3 * m * n) as isize, (m * n) as isize]);
    // SAFETY: every batch offset stays inside the three buffers, and C's matrices are disjoint.
    unsafe {
        gemm_batched(
            MatRef::from_slice(&a, 0, m, k, k as isize, 1),
            MatRef::from_slice(&b, 0, k, n, n as isize, 1),
            MatMut::from_raw_parts(c.as_mut_ptr(), m, n, n as isize, 1),
            Batch { shape: &shape, a_strides: &sa, b_strides: &sb, c_strides: &sc },
            Precision::Highest,
        )
        .unwrap();
    }
    for x in 0..2 {
        for y in 0..3 {
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| a[x * m * k + i * k + p] * b[y * k * n + p * n + j]).sum();
                    let got = c[(x * 3 + y) * m * n + i * n + j];
                    assert!((got - want).abs() < 1e-12, "batch ({x},{y}) C[{i},{j}] = {got}, want {want}");
                }
            }
        }
    }
}

#[test]
fn mismatched_shapes_are_errors_not_panics() {
    let a = [0f32; 6];
    let b = [0f32; 6];
    let mut c = [0f32; 4];
    let err =
        Gemm::new(MatRef::from_slice(&a, 0, 2, 3, 3, 1), MatRef::from_slice(&b, 0, 2, 3, 3, 1), MatMut::from_slice(&mut c, 0, 2, 2, 2, 1))
            .err()
            .unwrap();
    assert!(err.0.contains("(2, 3)"), "{}", err.0);
    let g =
        Gemm::new(MatRef::from_slice(&a, 0, 2, 3, 3, 1), MatRef::from_slice(&b, 0, 3, 2, 2, 1), MatMut::from_slice(&mut c, 0, 2, 2, 2, 1))
            .unwrap();
    assert!(g.bias(VecRef::from_slice(&[1.0f32; 3]), BiasAxis::Columns).is_err());
}

#[test]
#[should_panic(expected = "outside its slice")]
fn views_reaching_outside_their_slice_are_refused() {
    let a = [0f32; 6];
    let _ = MatRef::from_slice(&a, 0, 3, 3, 3, 1);
}

/// One batched product of `count` matrices: A (count, m, k) row-major, or with a gap of 3
/// elements after each matrix (so its matrices do not stack); B (k, n) shared by all (batch
/// stride 0); C (count, m, n) row-major or each matrix column-major. Returns C's bits after
/// checking every element against an f64 reference.
fn batched_shared_b(count: usize, (m, n, k): (usize, usize, usize), gap: usize, c_col_major: bool, threads_n: usize) -> Vec<u64> {
    threads::set_num_threads(threads_n).unwrap();
    let mut rng = Lcg((count * 31 + m * 7 + n * 3 + k) as u64);
    let a_stride = m * k + gap;
    let a: Vec<f64> = (0..count * a_stride).map(|_| rng.next()).collect();
    let b: Vec<f64> = (0..k * n).map(|_| rng.next()).collect();
    let mut c = vec![f64::NAN; count * m * n];
    let (c_rs, c_cs) = if c_col_major { (1, m as isize) } else { (n as isize, 1) };
    let shape = [count];
    let (sa, sb, sc) = ([a_stride as isize], [0isize], [(m * n) as isize]);
    // SAFETY: every batch offset stays inside the three buffers, and C's matrices are disjoint.
    unsafe {
        gemm_batched(
            MatRef::from_slice(&a, 0, m, k, k as isize, 1),
            MatRef::from_slice(&b, 0, k, n, n as isize, 1),
            MatMut::from_raw_parts(c.as_mut_ptr(), m, n, c_rs, c_cs),
            Batch { shape: &shape, a_strides: &sa, b_strides: &sb, c_strides: &sc },
            Precision::Highest,
        )
        .unwrap();
    }
    for t in 0..count {
        for i in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|p| a[t * a_stride + i * k + p] * b[p * n + j]);
                let (want, mag): (f64, f64) = terms.fold((0.0, 0.0), |(s, g), x| (s + x, g + x.abs()));
                let got = c[t * m * n + (i as isize * c_rs + j as isize * c_cs) as usize];
                let tol = 2.0 * (k as f64 + 2.0) * f64::EPSILON * mag + f64::MIN_POSITIVE;
                assert!((got - want).abs() <= tol, "{count} x ({m}, {n}, {k}) gap {gap}: C[{t}][{i},{j}] = {got}, want {want}");
            }
        }
    }
    c.iter().map(|x| x.to_bits()).collect()
}

/// Batches with a shared B: stacked A and C (one product of all their rows), A with gaps
/// between its matrices (a product per matrix, planned once, on the threads), a column-major
/// C (the transposed problem per matrix), tiny to parallel sizes; the same bits on any number
/// of threads.
#[test]
fn batched_products_with_a_shared_operand() {
    for &(count, shape) in
        &[(1000, (4, 4, 4)), (64, (32, 32, 32)), (7, (33, 17, 20)), (3, (130, 70, 90)), (5, (1, 40, 30)), (9, (20, 1, 30))]
    {
        for gap in [0, 3] {
            for c_col_major in [false, true] {
                let one = batched_shared_b(count, shape, gap, c_col_major, 1);
                assert!(batched_shared_b(count, shape, gap, c_col_major, 2) == one, "{count} x {shape:?}: 1 and 2 threads differ");
            }
        }
    }
    threads::set_num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).unwrap();
}

/// Thin products with both operands along k (A row-major, B column-major: torch's X Wᵀ at a
/// small batch): the short side 2…8 rows or columns, k around the vector widths, every
/// epilogue and both sums; the same bits on any number of threads.
#[test]
fn thin_products_along_k() {
    for isa in Isa::supported() {
        for short in 2..=8 {
            for &(long, k) in &[(9, 8), (70, 33), (300, 100), (130, 17)] {
                let seed = (short * 100 + long + k) as u64;
                for (t, &bias) in [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)].iter().enumerate() {
                    let epilogue = |m, n| Case {
                        m,
                        n,
                        k,
                        alpha: 0.5,
                        beta: if t == 1 { 0.0 } else { -0.25 },
                        bias,
                        relu: t == 2,
                        sums: t != 1,
                        mask: t == 0,
                    };
                    check::<f32>(&Case::plain(short, long, k), Layout::RowMajor, Layout::ColMajor, LAYOUTS[t], isa, seed);
                    check::<f64>(&Case::plain(long, short, k), Layout::RowMajor, Layout::ColMajor, LAYOUTS[t + 1], isa, seed);
                    check::<f32>(&epilogue(short, long), Layout::RowMajor, Layout::ColMajor, LAYOUTS[t + 1], isa, seed + 1);
                    check::<f64>(&epilogue(long, short), Layout::Padded, Layout::ColMajor, LAYOUTS[t], isa, seed + 2);
                }
            }
        }
    }
    same_bits_on_any_thread_count::<f32>("thin", (6, 1000, 301), Layout::ColMajor, 44);
}

/// Thin products whose short operand does not run along k (a row-major B a few columns wide,
/// or a column-major A a few rows tall), copied so that it does: short sides 2…5 around the
/// copy's limit of 4, k and the long side around theirs, the short operand in every layout
/// (broadcast too), every epilogue and both sums; the same bits on any number of threads.
#[test]
fn thin_products_with_the_short_operand_copied() {
    let short_layouts = [Layout::RowMajor, Layout::Padded, Layout::Reversed, Layout::Broadcast, Layout::ColMajor];
    for isa in Isa::supported() {
        for short in 2..=5 {
            for (u, &(long, k)) in [(64, 128), (63, 200), (130, 131), (300, 127), (257, 300)].iter().enumerate() {
                let seed = (short * 1000 + long + k) as u64;
                let lb = short_layouts[(short + u) % short_layouts.len()];
                // B's short side as the columns: a broadcast B is rows of one row, not columns.
                let la = if lb == Layout::Broadcast { Layout::ColMajor } else { short_layouts[(short + u + 1) % 4] };
                for (t, &bias) in [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)].iter().enumerate() {
                    let epilogue = |m, n| Case {
                        m,
                        n,
                        k,
                        alpha: -0.5,
                        beta: if t == 1 { 0.0 } else { 0.75 },
                        bias,
                        relu: t == 2,
                        sums: t != 1,
                        mask: t == 0,
                    };
                    // C = A B with B (k × short): A row-major or padded (its rows along k).
                    let la_long = [Layout::RowMajor, Layout::Padded][t % 2];
                    check::<f32>(&Case::plain(long, short, k), la_long, lb, LAYOUTS[t], isa, seed);
                    check::<f64>(&epilogue(long, short), la_long, lb, LAYOUTS[t + 1], isa, seed + 1);
                    // C = A B with A (short × k) in any layout and B column-major (its columns along k).
                    check::<f64>(&Case::plain(short, long, k), la, Layout::ColMajor, LAYOUTS[t], isa, seed + 2);
                    check::<f32>(&epilogue(short, long), la, Layout::ColMajor, LAYOUTS[t + 1], isa, seed + 3);
                }
            }
        }
    }
    same_bits_on_any_thread_count::<f64>("thin, B copied", (1000, 3, 301), Layout::RowMajor, 45);
}

/// A few rows of C (2…4; 5 takes the kernels) against a B with contiguous rows too big for
/// L2, whose rows the kernel streams (gemm/few_rows.rs): n around the tasks' 64 columns and
/// the buffer's blocks (256, 512 and 1024 columns), A in every layout, every epilogue and both
/// sums; and 5…17 rows against a B past 4 MiB (up to 16 on AVX-512, in passes of at most 8
/// rows; up to 8 on AVX2 but 6, in passes of 4: 4 + 1, 4 + 3, 4 + 4); the same bits on any
/// number of threads.
#[test]
fn few_rows_against_a_big_b() {
    let l2 = CacheSizes::get().l2;
    for isa in Isa::supported() {
        for m in [5, 7, 8, 9, 16, 17] {
            for (t, &n) in [300, 1030].iter().enumerate() {
                let k_past = |size: usize| (4 << 20) / (n * size) + 5;
                let la = [Layout::RowMajor, Layout::ColMajor][t];
                let case = |k| Case { bias: Some(BiasAxis::Columns), relu: true, sums: true, ..Case::plain(m, n, k) };
                check::<f32>(&case(k_past(4)), la, Layout::RowMajor, LAYOUTS[m % 4], isa, (m + n) as u64);
                check::<f64>(&Case::plain(m, n, k_past(8)), la, Layout::Padded, LAYOUTS[t], isa, (m * n) as u64);
            }
        }
        for m in 2..=5 {
            for (u, &n) in [64, 130, 513, 1030].iter().enumerate() {
                let k_for = |size: usize| l2 / (n * size) + 1 + u;
                let seed = (m * 10_000 + n) as u64;
                let la = [Layout::RowMajor, Layout::ColMajor, Layout::Reversed, Layout::Broadcast, Layout::Padded][(m + u) % 5];
                let lb = [Layout::RowMajor, Layout::Padded][u % 2];
                for (t, &bias) in [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)].iter().enumerate() {
                    let case = |k| Case {
                        m,
                        n,
                        k,
                        alpha: 1.5,
                        beta: if t == 1 { 0.0 } else { -1.0 },
                        bias,
                        relu: t == 0,
                        sums: t != 2,
                        mask: t == 1,
                    };
                    check::<f32>(&Case::plain(m, n, k_for(4)), la, lb, LAYOUTS[t], isa, seed);
                    check::<f64>(&case(k_for(8)), la, lb, LAYOUTS[t + 1], isa, seed + 1);
                }
            }
        }
    }
    // (B of 4.2 MiB: the passes of 8 rows on AVX-512.)
    same_bits_on_any_thread_count::<f32>("few rows", (11, 1100, 1000), Layout::RowMajor, 46);
}

/// The few-row and in-place paths align their loads to B's cache lines: the same product with
/// B starting at each element of a line gives the same bits, and the right ones, on every
/// path and kernel; with an infinity in A too (a lane of B beyond a vector's own, times it,
/// would be NaN).
#[test]
fn the_same_bits_wherever_b_starts() {
    fn case<T: HasKernels>((m, n, k): (usize, usize, usize), isa: Isa) {
        let mut rng = Lcg((m * 1000 + n) as u64);
        let mut a: Vec<T> = (0..m * k).map(|_| T::from_f64(rng.next())).collect();
        let b: Vec<T> = (0..k * n).map(|_| T::from_f64(rng.next())).collect();
        let line = 64 / core::mem::size_of::<T>();
        let run = |a: &[T], offset: usize| {
            let mut stored = vec![T::from_f64(f64::NAN); b.len() + line];
            stored[offset..offset + b.len()].copy_from_slice(&b);
            let bv = MatRef::from_slice(&stored, offset, k, n, n as isize, 1);
            let av = MatRef::from_slice(a, 0, m, k, k as isize, 1);
            let mut c = vec![T::from_f64(f64::NAN); m * n];
            Gemm::new(av, bv, MatMut::from_slice(&mut c, 0, m, n, n as isize, 1)).unwrap().isa(isa).run();
            c
        };
        let bits = |c: &[T]| c.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
        let c = run(&a, 0);
        for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
            let want: f64 = (0..k).map(|p| a[i * k + p].to_f64() * b[p * n + j].to_f64()).sum();
            let got = c[i * n + j].to_f64();
            let tol = 4.0 * k as f64 * T::EPSILON.to_f64();
            assert!((got - want).abs() <= tol, "{isa:?} {m}x{n}x{k} ({i}, {j}): {got} against {want}");
        }
        for infinite in [false, true] {
            if infinite {
                a[(m - 1) * k + k / 2] = T::from_f64(f64::INFINITY);
            }
            let first = bits(&run(&a, 0));
            for offset in 1..=line {
                assert!(bits(&run(&a, offset)) == first, "{isa:?} {m}x{n}x{k}: B at element {offset} of a line changes the bits");
            }
        }
    }
    let l2 = CacheSizes::get().l2;
    for isa in Isa::supported() {
        // Few rows against a B past L2; in place (a wide C, and one too narrow to shift its
        // strips); small; packed; thin; vector.
        for (m, n) in [(2, 300), (4, 1030), (3, 64)] {
            case::<f32>((m, n, l2 / (n * 4) + 3), isa);
            case::<f64>((m, n, l2 / (n * 8) + 3), isa);
        }
        for shape in [(8, 1030, 64), (16, 200, 100), (20, 64, 64), (13, 16, 16), (200, 300, 200), (3, 500, 300), (1, 500, 300)] {
            case::<f32>(shape, isa);
            case::<f64>(shape, isa);
        }
    }
}

/// C = A B for a row-major A (m × k) and B (k × n) stored as `lb`, on 1, 2 and 3 threads:
/// the same bits each time (`what` names the path).
fn same_bits_on_any_thread_count<T: HasKernels>(what: &str, (m, n, k): (usize, usize, usize), lb: Layout, seed: u64) {
    let mut rng = Lcg(seed);
    let a = Stored::<T>::new(m, k, Layout::RowMajor, &mut rng);
    let b = Stored::<T>::new(k, n, lb, &mut rng);
    let run = |threads_n: usize| {
        threads::set_num_threads(threads_n).unwrap();
        let mut c = vec![T::from_f64(f64::NAN); m * n];
        Gemm::new(a.view(), b.view(), MatMut::from_slice(&mut c, 0, m, n, n as isize, 1)).unwrap().run();
        c.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>()
    };
    let one = run(1);
    for t in [2, 3] {
        assert!(run(t) == one, "{what}: results differ between 1 and {t} threads");
    }
    threads::set_num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).unwrap();
}

/// Outer products (k = 1): C a row at a time (row-major C and B) and the other paths (other
/// layouts), around the vector widths, with every epilogue and both sums.
#[test]
fn outer_products() {
    for isa in Isa::supported() {
        for &(m, n) in &[(2, 2), (7, 15), (33, 17), (64, 100), (300, 49), (5, 300)] {
            let seed = (m * 1000 + n) as u64;
            for (t, &bias) in [None, Some(BiasAxis::Columns), Some(BiasAxis::Rows)].iter().enumerate() {
                let case =
                    Case { m, n, k: 1, alpha: -0.5, beta: if t == 1 { 0.0 } else { 2.0 }, bias, relu: t != 1, sums: t != 0, mask: t == 2 };
                check::<f32>(&Case::plain(m, n, 1), LAYOUTS[t], Layout::RowMajor, Layout::RowMajor, isa, seed);
                check::<f32>(&case, Layout::RowMajor, Layout::RowMajor, Layout::RowMajor, isa, seed + 1);
                check::<f64>(&case, LAYOUTS[t + 1], Layout::RowMajor, Layout::Padded, isa, seed + 2);
                check::<f64>(&case, Layout::RowMajor, LAYOUTS[t], LAYOUTS[t + 1], isa, seed + 3);
            }
        }
    }
}
