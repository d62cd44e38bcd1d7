// C = A B (+ bias along columns) (+ C when accumulating), f32, batched, on strided operands.
//
// Element (i, j) of batch z of an operand X sits at x_off + z*x_bs + i*x_rs + j*x_cs, so a
// transposed operand is the same buffer with its two strides swapped, and a broadcast batch
// has x_bs = 0: the backward products G Bᵀ and Aᵀ G read their operands in place.
//
// Tiling: one workgroup computes a TM × TN = 128 × 128 tile of C with 16 × 16 invocations.
// Invocation (tx, ty) holds an 8 × 8 register block: rows ty*4 + {0..3} and 64 + ty*4 + {0..3},
// columns tx*4 + {0..3} and 64 + tx*4 + {0..3}. Split in two halves this way, the 32
// invocations of a warp read two A vec4s (broadcast to 16 lanes each) and 32 consecutive B
// vec4s per k step: 4 workgroup loads feed 64 FMAs.
//
// K advances in slices of BK = 8. Workgroup memory holds two slices of A (8 × 128) and of B
// (8 × 128), 4 KiB each, 16 KiB in all (WebGPU's guaranteed minimum): while the invocations
// multiply out of one buffer, the next slice, already fetched into registers before the
// multiply, is stored into the other, so one barrier per slice suffices and the global loads'
// latency hides behind the FMAs.
//
// Bank conflicts: slice row kk keeps 128 values as 32 vec4s, and vec4 v of row kk is stored at
// v ^ kk. Staging a row-major A (k fastest across invocations: 8 rows kk × 4 values of i per
// warp) then lands in 32 distinct banks, as does staging a transposed one (32 consecutive i of
// one kk); likewise B both ways, so every stride pattern the host passes (Aᵀ, Wᵀ, Gᵀ views
// included) stages without conflicts, and the reads above stay conflict-free.
//
// Global loads: scalar by default, each invocation fetching 4 values of A and 4 of B per slice
// along the operand's contiguous direction (coalesced either way). Where an operand's rows are
// contiguous and 16-byte aligned with a multiple-of-4 length (VEC_A: a_cs = 1, k % 4 = 0, the
// offsets and row strides multiples of 4; VEC_B likewise along n), the pipeline specialised with
// that override constant fetches one vec4 instead. The host picks the variant.
//
// Loads outside the matrices stage zeros and stores outside C are skipped, so any m, n, k
// (1, 0, primes) works. Each element's sum runs over k in ascending order with one fma per
// term, the order every earlier version of this kernel used.

struct Params {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs: u32,
    b_off: u32, b_rs: u32, b_cs: u32, b_bs: u32,
    c_off: u32, c_rs: u32, c_cs: u32, c_bs: u32,
    bias_off: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;

const TM: u32 = 128u;
const TN: u32 = 128u;
const BK: u32 = 8u;
const THREADS: u32 = 256u;
// vec4s per slice row, and per slice buffer.
const ROW_V: u32 = 32u;
const SLICE_V: u32 = 256u;

override VEC_A: bool = false;
override VEC_B: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// The same buffers as a and b, read a vec4 at a time by the VEC_A / VEC_B variants.
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;

// [2 buffers][BK rows kk][32 vec4s], vec4 v of row kk at v ^ kk.
var<workgroup> a_s: array<vec4<f32>, 512>;
var<workgroup> b_s: array<vec4<f32>, 512>;

fn slot(buf: u32, kk: u32, idx: u32) -> u32 {
    return buf * SLICE_V + kk * ROW_V + ((idx / 4u) ^ kk);
}

// Element s (0..4) of invocation tid's share of a slice of 8 × 128: (index along m or n, kk).
// Neighbouring invocations take neighbouring addresses: along k when the operand's k is its
// contiguous direction, across the 128 otherwise (TM = TN, so one rule serves A and B).
fn share(tid: u32, s: u32, k_fastest: bool) -> vec2<u32> {
    let idx = tid + s * THREADS;
    if (k_fastest) {
        return vec2<u32>(idx / BK, idx % BK);
    }
    return vec2<u32>(idx % TM, idx / TM);
}

// A slice's worth of A for invocation tid, in registers: four scalars, or one vec4 (VEC_A).
fn fetch_a(k0: u32, row0: u32, base: u32, tid: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (VEC_A) {
        // 2 vec4s per row of the slice: invocation tid takes row tid / 2, k's quarter tid % 2.
        let i = row0 + tid / 2u;
        let ka = k0 + (tid % 2u) * 4u;
        if (i < p.m && ka < p.k) {
            v = a4[(base + i * p.a_rs + ka) / 4u];
        }
        return v;
    }
    for (var s = 0u; s < 4u; s++) {
        let e = share(tid, s, p.a_cs == 1u);
        let i = row0 + e.x;
        let ka = k0 + e.y;
        if (i < p.m && ka < p.k) {
            v[s] = a[base + i * p.a_rs + ka * p.a_cs];
        }
    }
    return v;
}

fn stage_a(v: vec4<f32>, buf: u32, tid: u32) {
    if (VEC_A) {
        let ii = tid / 2u;
        let kq = (tid % 2u) * 4u;
        for (var q = 0u; q < 4u; q++) {
            a_s[slot(buf, kq + q, ii)][ii % 4u] = v[q];
        }
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        let e = share(tid, s, p.a_cs == 1u);
        a_s[slot(buf, e.y, e.x)][e.x % 4u] = v[s];
    }
}

// Likewise for B: four scalars, or one vec4 (VEC_B).
fn fetch_b(k0: u32, col0: u32, base: u32, tid: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (VEC_B) {
        // 32 vec4s per row of the slice: invocation tid takes row tid / 32, vec4 tid % 32.
        let j = col0 + (tid % ROW_V) * 4u;
        let kb = k0 + tid / ROW_V;
        if (j < p.n && kb < p.k) {
            v = b4[(base + kb * p.b_rs + j) / 4u];
        }
        return v;
    }
    for (var s = 0u; s < 4u; s++) {
        let e = share(tid, s, p.b_cs != 1u);
        let j = col0 + e.x;
        let kb = k0 + e.y;
        if (j < p.n && kb < p.k) {
            v[s] = b[base + kb * p.b_rs + j * p.b_cs];
        }
    }
    return v;
}

fn stage_b(v: vec4<f32>, buf: u32, tid: u32) {
    if (VEC_B) {
        let jj = (tid % ROW_V) * 4u;
        b_s[slot(buf, tid / ROW_V, jj)] = v;
        return;
    }
    for (var s = 0u; s < 4u; s++) {
        let e = share(tid, s, p.b_cs != 1u);
        b_s[slot(buf, e.y, e.x)][e.x % 4u] = v[s];
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let tid = lid.y * 16u + lid.x;
    let a_base = p.a_off + wid.z * p.a_bs;
    let b_base = p.b_off + wid.z * p.b_bs;

    // acc[r * 2 + h]: row r of the block (r < 4: ty*4 + r, else 64 + ty*4 + r - 4), columns
    // of half h (h = 0: tx*4 + 0..3, h = 1: 64 + tx*4 + 0..3).
    var acc: array<vec4<f32>, 16>;
    for (var r = 0u; r < 16u; r++) {
        acc[r] = vec4<f32>(0.0);
    }

    let slices = (p.k + BK - 1u) / BK;
    if (slices > 0u) {
        stage_a(fetch_a(0u, row0, a_base, tid), 0u, tid);
        stage_b(fetch_b(0u, col0, b_base, tid), 0u, tid);
    }
    workgroupBarrier();

    for (var t = 0u; t < slices; t++) {
        let cur = t % 2u;
        let more = t + 1u < slices;
        var fa: vec4<f32>;
        var fb: vec4<f32>;
        if (more) {
            fa = fetch_a((t + 1u) * BK, row0, a_base, tid);
            fb = fetch_b((t + 1u) * BK, col0, b_base, tid);
        }

        for (var kk = 0u; kk < BK; kk++) {
            let a0 = a_s[slot(cur, kk, lid.y * 4u)];
            let a1 = a_s[slot(cur, kk, 64u + lid.y * 4u)];
            let b0 = b_s[slot(cur, kk, lid.x * 4u)];
            let b1 = b_s[slot(cur, kk, 64u + lid.x * 4u)];
            for (var r = 0u; r < 4u; r++) {
                let x0 = vec4<f32>(a0[r]);
                let x1 = vec4<f32>(a1[r]);
                acc[r * 2u] = fma(x0, b0, acc[r * 2u]);
                acc[r * 2u + 1u] = fma(x0, b1, acc[r * 2u + 1u]);
                acc[8u + r * 2u] = fma(x1, b0, acc[8u + r * 2u]);
                acc[8u + r * 2u + 1u] = fma(x1, b1, acc[8u + r * 2u + 1u]);
            }
        }

        if (more) {
            stage_a(fa, 1u - cur, tid);
            stage_b(fb, 1u - cur, tid);
        }
        workgroupBarrier();
    }

    let c_base = p.c_off + wid.z * p.c_bs;
    for (var r = 0u; r < 8u; r++) {
        let i = row0 + (r / 4u) * 64u + lid.y * 4u + r % 4u;
        if (i >= p.m) {
            continue;
        }
        for (var h = 0u; h < 2u; h++) {
            for (var q = 0u; q < 4u; q++) {
                let j = col0 + h * 64u + lid.x * 4u + q;
                if (j >= p.n) {
                    break;
                }
                var v = acc[r * 2u + h][q];
                if ((p.flags & FLAG_BIAS) != 0u) {
                    v += bias[p.bias_off + j];
                }
                let at = c_base + i * p.c_rs + j * p.c_cs;
                if ((p.flags & FLAG_ACCUMULATE) != 0u) {
                    v += c[at];
                }
                c[at] = v;
            }
        }
    }
}
