//! GEMM and column sums on the device against a naive loop. Skipped (with a message) when the
//! machine has no adapter; CI installs lavapipe so that they run.

use super::*;

fn ctx() -> Option<&'static Context> {
    match context() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn read(ctx: &Context, buf: &Buffer) -> Vec<f32> {
    let mut out = vec![f32::NAN; buf.len()];
    ctx.download(buf, &mut out).unwrap();
    out
}

#[test]
fn gemm_matches_naive_for_edge_shapes_transposes_bias_and_accumulate() {
    let Some(ctx) = ctx() else { return };
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 1), (17, 63, 65), (65, 1, 129), (64, 64, 16), (1, 130, 7)] {
        for (ta, tb, with_bias, accumulate) in [(false, false, false, false), (true, true, true, true), (true, false, true, false)] {
            let (av, bv, cv, biasv) = (values(m * k, 1), values(k * n, 2), values(m * n, 3), values(n, 4));
            let (a, b, c, bias) =
                (ctx.upload(&av).unwrap(), ctx.upload(&bv).unwrap(), ctx.upload(&cv).unwrap(), ctx.upload(&biasv).unwrap());
            // A stored (m, k) or, transposed, (k, m); likewise B.
            let a_op = if ta { Operand::row_major(&a, m).t() } else { Operand::row_major(&a, k) };
            let b_op = if tb { Operand::row_major(&b, k).t() } else { Operand::row_major(&b, n) };
            let op = GemmOp {
                a: a_op,
                b: b_op,
                c: Operand::row_major(&c, n),
                m,
                n,
                k,
                batch: 1,
                bias: with_bias.then_some((&bias, 0)),
                accumulate,
            };
            ctx.gemm(&op).unwrap();
            let got = read(ctx, &c);
            for i in 0..m {
                for j in 0..n {
                    let mut want = if accumulate { cv[i * n + j] as f64 } else { 0.0 };
                    if with_bias {
                        want += biasv[j] as f64;
                    }
                    for p in 0..k {
                        let x = if ta { av[p * m + i] } else { av[i * k + p] };
                        let y = if tb { bv[j * k + p] } else { bv[p * n + j] };
                        want += x as f64 * y as f64;
                    }
                    let tol = 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64;
                    assert!(
                        (got[i * n + j] as f64 - want).abs() <= tol,
                        "({m}, {n}, {k}) ta={ta} tb={tb} at ({i}, {j}): {} vs {want}",
                        got[i * n + j]
                    );
                }
            }
        }
    }
}

#[test]
fn batched_gemm_broadcasts_and_column_sums_add_rows() {
    let Some(ctx) = ctx() else { return };
    let (batch, m, n, k) = (3, 5, 7, 9);
    let (av, bv) = (values(batch * m * k, 5), values(k * n, 6));
    let (a, b, c) = (ctx.upload(&av).unwrap(), ctx.upload(&bv).unwrap(), ctx.zeros(batch * m * n).unwrap());
    let op = GemmOp {
        a: Operand { batch_stride: m * k, ..Operand::row_major(&a, k) },
        b: Operand::row_major(&b, n), // batch stride 0: one B for every batch
        c: Operand { batch_stride: m * n, ..Operand::row_major(&c, n) },
        m,
        n,
        k,
        batch,
        bias: None,
        accumulate: false,
    };
    ctx.gemm(&op).unwrap();
    let got = read(ctx, &c);
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| av[z * m * k + i * k + p] * bv[p * n + j]).sum();
                assert!((got[z * m * n + i * n + j] - want).abs() < 1e-5);
            }
        }
    }
    let sums = ctx.zeros(n).unwrap();
    ctx.column_sums(Operand::row_major(&c, n), batch * m, n, &sums, 0).unwrap();
    let got_sums = read(ctx, &sums);
    for j in 0..n {
        let want: f32 = (0..batch * m).map(|r| got[r * n + j]).sum();
        assert!((got_sums[j] - want).abs() < 1e-4);
    }
}

#[test]
fn operands_reaching_outside_their_buffers_are_refused() {
    let Some(ctx) = ctx() else { return };
    let a = ctx.zeros(6).unwrap();
    let c = ctx.zeros(4).unwrap();
    let op = GemmOp {
        a: Operand::row_major(&a, 3),
        b: Operand::row_major(&a, 2),
        c: Operand::row_major(&c, 2),
        m: 2,
        n: 2,
        k: 4, // A would need 8 elements
        batch: 1,
        bias: None,
        accumulate: false,
    };
    assert!(matches!(ctx.gemm(&op), Err(GpuError::Invalid(_))));
    let op = GemmOp { c: Operand::row_major(&a, 2), k: 3, ..op };
    assert!(matches!(ctx.gemm(&op), Err(GpuError::Invalid(_))), "output aliasing an input");
}

/// Element (z, i, j) of a strided operand in `data`.
fn at(data: &[f32], o: Operand<'_>, z: usize, i: usize, j: usize) -> f32 {
    data[o.offset + z * o.batch_stride + i * o.rs + j * o.cs]
}

/// An (rows × cols) operand, batch of 2, laid out as `layout` says: "vec" (rows padded to a
/// multiple of 4, 16-byte aligned: the vec4 fetch), "odd" (offset 1: the scalar fetch along
/// rows) or "t" (column-major: the scalar fetch across rows). Returns the data and the view's
/// offset and strides.
fn laid_out(layout: &str, rows: usize, cols: usize, seed: u32) -> (Vec<f32>, [usize; 4]) {
    let (offset, rs, cs, bs) = match layout {
        "vec" => (4, cols.next_multiple_of(4) + 4, 1, 0),
        "odd" => (1, cols, 1, 0),
        "t" => (0, 1, rows, 0),
        _ => unreachable!(),
    };
    let one = (rows - 1) * rs + (cols - 1) * cs + 1;
    let bs = if bs == 0 { one.next_multiple_of(4) } else { bs };
    (values(offset + bs + one, seed), [offset, rs, cs, bs])
}

#[test]
fn every_fetch_variant_matches_naive_across_the_tile_edges() {
    let Some(ctx) = ctx() else { return };
    let batch = 2;
    // k and n multiples of 4 where the vec4 variants apply; 129/131/7 where they do not.
    for &(m, n, k) in &[(129, 132, 20), (128, 128, 8), (3, 260, 68), (257, 4, 12), (130, 131, 7)] {
        for (la, lb) in [("vec", "vec"), ("vec", "t"), ("t", "vec"), ("odd", "odd"), ("t", "t"), ("odd", "vec")] {
            let (av, [ao, ars, acs, abs]) = laid_out(la, m, k, 7);
            let (bv, [bo, brs, bcs, bbs]) = laid_out(lb, k, n, 8);
            let (a, b) = (ctx.upload(&av).unwrap(), ctx.upload(&bv).unwrap());
            // C pre-filled with NaN: every element must be written.
            let c = ctx.upload(&vec![f32::NAN; batch * m * n]).unwrap();
            let a_op = Operand { buf: &a, offset: ao, rs: ars, cs: acs, batch_stride: abs };
            let b_op = Operand { buf: &b, offset: bo, rs: brs, cs: bcs, batch_stride: bbs };
            let c_op = Operand { batch_stride: m * n, ..Operand::row_major(&c, n) };
            ctx.gemm(&GemmOp { a: a_op, b: b_op, c: c_op, m, n, k, batch, bias: None, accumulate: false }).unwrap();
            let got = read(ctx, &c);
            for z in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|p| at(&av, a_op, z, i, p) as f64 * at(&bv, b_op, z, p, j) as f64).sum();
                        let g = got[z * m * n + i * n + j] as f64;
                        assert!(
                            (g - want).abs() <= 4.0 * k as f64 * f32::EPSILON as f64,
                            "({m}, {n}, {k}) A {la} B {lb} at ({z}, {i}, {j}): {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn freed_buffers_come_back_as_zeros_and_bind_groups_follow_new_buffers() {
    let Some(ctx) = ctx() else { return };
    let (m, n, k) = (6, 8, 4);
    let (av, bv) = (values(m * k, 9), values(k * n, 10));
    let (a, b) = (ctx.upload(&av).unwrap(), ctx.upload(&bv).unwrap());
    for round in 0..3 {
        // The same size each round: the freed buffer of the round before is reused.
        let c = ctx.zeros(m * n).unwrap();
        assert!(read(ctx, &c).iter().all(|&x| x == 0.0), "round {round}: a reused buffer is not cleared");
        let op = GemmOp {
            a: Operand::row_major(&a, k),
            b: Operand::row_major(&b, n),
            c: Operand::row_major(&c, n),
            m,
            n,
            k,
            batch: 1,
            bias: None,
            accumulate: true,
        };
        ctx.gemm(&op).unwrap();
        let got = read(ctx, &c);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
                assert!((got[i * n + j] - want).abs() < 1e-5, "round {round} at ({i}, {j})");
            }
        }
    }
}
