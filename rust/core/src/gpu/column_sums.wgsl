// sums[j] = Σ_i g[i, j] for a strided (rows × cols) matrix: the bias gradient.
//
// One invocation per column adds the rows in order, as the CPU path does, so the result
// does not depend on the device's workgroup size. Neighbouring invocations read neighbouring
// columns, which are contiguous in a row-major grad_y.

struct Params {
    rows: u32, cols: u32, off: u32, rs: u32,
    cs: u32, out_off: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        s += g[p.off + i * p.rs + j * p.cs];
    }
    sums[p.out_off + j] = s;
}
