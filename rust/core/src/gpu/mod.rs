//! The GPU path (feature `gpu`): f32 GEMM and column sums on a wgpu device.
//!
//! One [`Context`] per process — instance, adapter, device, queue and the compiled pipelines —
//! created on first use and kept in a `OnceLock`, so the cost of opening the device is paid once.
//! The adapter is chosen the way wgpu's own tools choose it: `WGPU_BACKEND` narrows the
//! backends, `WGPU_ADAPTER_NAME` picks an adapter by a substring of its name, and
//! `WGPU_POWER_PREF` steers the default choice. The device is opened with the adapter's own
//! limits rather than wgpu's conservative defaults, so big buffers are allowed where the
//! hardware allows them.
//!
//! Data lives in [`Buffer`]s of f32 elements; a matrix is a [`Operand`]: a buffer, an offset and
//! strides in elements, like the CPU path's `MatRef`. Every product of the linear layer and of
//! matmul's backward is one [`Context::gemm`] call on such views, transposes included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

mod adapter;
mod reuse;
pub use adapter::DRIVER_HINT;
use adapter::{backend_name, pick_adapter};
use reuse::{Kernel, Pool, Submit, MAX_BIND_GROUPS};

const GEMM_WGSL: &str = include_str!("gemm.wgsl");
const COLUMN_SUMS_WGSL: &str = include_str!("column_sums.wgsl");

/// The tile of C one GEMM workgroup computes (must match gemm.wgsl).
const GEMM_TILE: u32 = 128;
/// Invocations per column-sums workgroup (must match column_sums.wgsl).
const COLUMN_SUMS_GROUP: u32 = 64;

/// Why a GPU operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuError {
    /// No device could be opened (no adapter, or the device request failed).
    Unavailable(String),
    /// Arguments that do not fit together or do not fit the device (sizes beyond its limits).
    Invalid(String),
    /// The device reported an error while running (validation, out of memory, device lost).
    Device(String),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::Unavailable(s) | GpuError::Invalid(s) | GpuError::Device(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for GpuError {}

/// What the adapter says about itself.
#[derive(Clone, Debug)]
pub struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

/// The device, its queue and the compiled kernels.
pub struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    /// The largest buffer a kernel can bind, in bytes (the smaller of the buffer and binding
    /// limits: lavapipe, for one, binds at most 128 MiB).
    max_binding_bytes: u64,
    max_workgroups: u32,
    /// The uniform offset alignment: the parameter ring's slot size.
    param_stride: u64,
    /// gemm.wgsl specialised by which operands it fetches a vec4 at a time: index
    /// `vec_a as usize + 2 * vec_b as usize`.
    gemm: [wgpu::ComputePipeline; 4],
    gemm_layout: wgpu::BindGroupLayout,
    column_sums: wgpu::ComputePipeline,
    column_sums_layout: wgpu::BindGroupLayout,
    submit: Mutex<Submit>,
    pool: Mutex<Pool>,
    staging: Mutex<Option<wgpu::Buffer>>,
}

/// A device buffer of `len` f32 elements (its size rounded up to 16 bytes, so that the kernels
/// can bind it as vec4s too).
pub struct Buffer {
    raw: wgpu::Buffer,
    len: usize,
    /// Unique per buffer: the key of the bind groups that bind it.
    id: u64,
}

static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

impl Drop for Buffer {
    /// The bind groups over this buffer go; the memory is kept for the next buffer of its size.
    fn drop(&mut self) {
        if let Some(Ok(ctx)) = CONTEXT.get() {
            lock(&ctx.submit).forget(self.id);
            lock(&ctx.pool).give(self.raw.clone());
        }
    }
}

/// A lock that survives a panic in another holder (the caches stay consistent: each update is
/// one insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A strided matrix (or batch of matrices) in a buffer: element `(z, i, j)` is at
/// `offset + z*batch_stride + i*rs + j*cs`. A batch stride of 0 broadcasts one matrix.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub buf: &'a Buffer,
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
    pub batch_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major (rows × cols) matrix at the start of `buf`.
    pub fn row_major(buf: &'a Buffer, cols: usize) -> Self {
        Operand { buf, offset: 0, rs: cols, cs: 1, batch_stride: 0 }
    }
    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Operand { rs: self.cs, cs: self.rs, ..self }
    }
}

/// `C[z] = A[z] B[z] (+ bias along C's columns) (+ C[z] if accumulate)` for `z < batch`,
/// A (m × k), B (k × n), C (m × n).
pub struct GemmOp<'a> {
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub c: Operand<'a>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    /// `bias[offset + j]` is added to column j.
    pub bias: Option<(&'a Buffer, usize)>,
    pub accumulate: bool,
}

/// The uniform block of gemm.wgsl, field for field.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    a: [u32; 4],
    b: [u32; 4],
    c: [u32; 4],
    bias_off: u32,
    _pad: [u32; 3],
}

/// The uniform block of column_sums.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnSumsParams {
    rows: u32,
    cols: u32,
    off: u32,
    rs: u32,
    cs: u32,
    out_off: u32,
    _pad: [u32; 2],
}

const FLAG_BIAS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;

static CONTEXT: OnceLock<Result<Context, GpuError>> = OnceLock::new();

/// The process's GPU context, opened on first call (the error, if any, is kept too: a
/// machine without an adapter does not retry on every call).
pub fn context() -> Result<&'static Context, GpuError> {
    CONTEXT.get_or_init(|| pollster::block_on(Context::open())).as_ref().map_err(Clone::clone)
}

impl Context {
    async fn open() -> Result<Context, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pick_adapter(&instance).await?;
        let wgpu_info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("matgrad"),
                required_features: wgpu::Features::empty(),
                // The adapter's limits, not wgpu's defaults: those cap storage bindings at
                // 128 MiB and buffers at 256 MiB whatever the hardware can do.
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Unavailable(format!("the adapter {:?} refused a device: {e}", wgpu_info.name)))?;
        let info = AdapterInfo {
            name: wgpu_info.name.clone(),
            backend: backend_name(wgpu_info.backend),
            device_type: format!("{:?}", wgpu_info.device_type).to_lowercase(),
            driver: wgpu_info.driver.clone(),
            driver_info: wgpu_info.driver_info.clone(),
        };
        // SAFETY: the kernels index only what the host has bounded: every load and store is
        // guarded by the matrix sizes, and `check_reach` has checked that every element of
        // those sizes lies inside its buffer; workgroup arrays are indexed by constants'
        // ranges. So the bounds clamps naga would add inside the loops are dead weight.
        let module = |label: &str, source: &str| unsafe {
            device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(source.into()) },
                wgpu::ShaderRuntimeChecks::unchecked(),
            )
        };
        let pipeline = |label: &str, module: &wgpu::ShaderModule, layout: &wgpu::BindGroupLayout, constants: &[(&str, f64)]| {
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(&layout),
                module,
                entry_point: Some("main"),
                // Every workgroup element is written before it is read (the staging fills
                // whole tiles, zeros included), so zero-filling it first is wasted work.
                compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
                cache: None,
            })
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Binding 0: the parameters, at a dynamic offset into the ring; then the arrays, the
        // output the only one written. gemm binds A and B twice (as f32s and as vec4s).
        let gemm_layout = bind_group_layout(&device, "matgrad gemm", &[true, true, false, true, true, true]);
        let column_sums_layout = bind_group_layout(&device, "matgrad column_sums", &[true, false]);
        let gemm_module = module("matgrad gemm", GEMM_WGSL);
        let gemm = [(false, false), (true, false), (false, true), (true, true)].map(|(vec_a, vec_b)| {
            let constants = [("VEC_A", f64::from(u8::from(vec_a))), ("VEC_B", f64::from(u8::from(vec_b)))];
            pipeline("matgrad gemm", &gemm_module, &gemm_layout, &constants)
        });
        let column_sums = pipeline("matgrad column_sums", &module("matgrad column_sums", COLUMN_SUMS_WGSL), &column_sums_layout, &[]);
        if let Some(e) = scope.pop().await {
            return Err(GpuError::Unavailable(format!("the kernels did not compile on {:?}: {e}", info.name)));
        }
        Ok(Context {
            max_binding_bytes: limits.max_buffer_size.min(limits.max_storage_buffer_binding_size as u64),
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            param_stride: u64::from(limits.min_uniform_buffer_offset_alignment).max(std::mem::size_of::<GemmParams>() as u64),
            device,
            queue,
            info,
            gemm,
            gemm_layout,
            column_sums,
            column_sums_layout,
            submit: Mutex::new(Submit::new()),
            pool: Mutex::new(Pool::new()),
            staging: Mutex::new(None),
        })
    }

    pub fn adapter_info(&self) -> &AdapterInfo {
        &self.info
    }

    /// The largest buffer, in bytes, a kernel can read or write.
    pub fn max_buffer_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    fn check_len(&self, len: usize) -> Result<u64, GpuError> {
        let bytes = (len as u64).saturating_mul(4);
        if bytes > self.max_binding_bytes {
            return Err(GpuError::Invalid(format!(
                "{len} float32 elements ({bytes} bytes) exceed the adapter's largest storage buffer of {} bytes \
                 (min of max_buffer_size and max_storage_buffer_binding_size of {:?})",
                self.max_binding_bytes, self.info.name
            )));
        }
        // Indices in the kernels are u32.
        if len > u32::MAX as usize {
            return Err(GpuError::Invalid(format!("{len} elements exceed the kernels' u32 indexing")));
        }
        // Bindings may not be empty, and a vec4 binding needs whole vec4s: 16-byte multiples.
        Ok(bytes.max(16).next_multiple_of(16))
    }

    const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

    /// A buffer of `size` bytes, a freed one of that size when there is one (its contents
    /// stale: the caller writes or clears it).
    fn buffer(&self, size: u64, len: usize) -> (Buffer, bool) {
        let id = NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed);
        if let Some(raw) = lock(&self.pool).take(size) {
            return (Buffer { raw, len, id }, true);
        }
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("matgrad array"),
            size,
            usage: Self::USAGE,
            mapped_at_creation: false,
        });
        (Buffer { raw, len, id }, false)
    }

    /// A buffer holding a copy of `data`.
    pub fn upload(&self, data: &[f32]) -> Result<Buffer, GpuError> {
        let size = self.check_len(data.len())?;
        let (buf, _) = self.buffer(size, data.len());
        if !data.is_empty() {
            // Staged now, copied on the queue before the next submission's work.
            self.queue.write_buffer(&buf.raw, 0, bytemuck::cast_slice(data));
        }
        Ok(buf)
    }

    /// A buffer of `len` zeros (wgpu zero-fills new buffers; a reused one is cleared on the
    /// queue).
    pub fn zeros(&self, len: usize) -> Result<Buffer, GpuError> {
        let size = self.check_len(len)?;
        let (buf, reused) = self.buffer(size, len);
        if reused {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            encoder.clear_buffer(&buf.raw, 0, None);
            self.queue.submit([encoder.finish()]);
        }
        Ok(buf)
    }

    /// Copies `buf` into `out` (same length), waiting for the work queued before.
    pub fn download(&self, buf: &Buffer, out: &mut [f32]) -> Result<(), GpuError> {
        if out.len() != buf.len {
            return Err(GpuError::Invalid(format!("download: {} elements into {}", buf.len, out.len())));
        }
        if out.is_empty() {
            return Ok(());
        }
        let bytes = buf.len as u64 * 4;
        // One staging buffer, grown to the largest read-back so far (held for the whole
        // read-back: it is mapped until the copy out is done).
        let mut staging = lock(&self.staging);
        if staging.as_ref().is_none_or(|s| s.size() < bytes) {
            *staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matgrad readback"),
                size: bytes.next_power_of_two().max(1 << 16),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = staging.as_ref().expect("set above");
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&buf.raw, 0, staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..bytes);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.synchronize()?;
        receiver
            .recv()
            .map_err(|_| GpuError::Device("the read-back was dropped".into()))?
            .map_err(|e| GpuError::Device(format!("reading back: {e}")))?;
        {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Device(format!("reading back: {e}")))?;
            out.copy_from_slice(bytemuck::cast_slice(&view));
        }
        staging.unmap();
        Ok(())
    }

    /// Waits until the work queued so far has run (for timing device-resident work).
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Device(format!("waiting for the device: {e}")))
    }

    /// Queues `op` (returns once it is submitted; [`Context::download`] waits for it).
    pub fn gemm(&self, op: &GemmOp<'_>) -> Result<(), GpuError> {
        let GemmOp { a, b, c, m, n, k, batch, bias, accumulate } = *op;
        if std::ptr::eq(c.buf, a.buf) || std::ptr::eq(c.buf, b.buf) || bias.is_some_and(|(bb, _)| std::ptr::eq(c.buf, bb)) {
            return Err(GpuError::Invalid("gemm: the output must not share a buffer with an input".into()));
        }
        check_reach("a", a, batch, m, k)?;
        check_reach("b", b, batch, k, n)?;
        check_reach("c", c, batch, m, n)?;
        if let Some((bb, off)) = bias {
            if n > 0 && off + n > bb.len {
                return Err(GpuError::Invalid(format!("gemm: bias of {} elements from {off} is short of n={n}", bb.len)));
            }
        }
        if m == 0 || n == 0 || batch == 0 {
            return Ok(());
        }
        let flags = if bias.is_some() { FLAG_BIAS } else { 0 } | if accumulate { FLAG_ACCUMULATE } else { 0 };
        // Without a bias, binding 4 gets A (a dummy read of C would alias its read_write binding).
        let bias_buf = bias.map_or(a.buf, |(bb, _)| bb);
        // vec4 fetches where the operand's contiguous rows start on 16-byte boundaries and
        // end on them too (then a vec4 lies wholly inside or wholly outside the matrix).
        let vec_a = a.cs == 1 && k % 4 == 0 && [a.offset, a.rs, a.batch_stride].iter().all(|x| x % 4 == 0);
        let vec_b = b.cs == 1 && n % 4 == 0 && [b.offset, b.rs, b.batch_stride].iter().all(|x| x % 4 == 0);
        let pipeline = &self.gemm[usize::from(vec_a) + 2 * usize::from(vec_b)];

        // Dispatches are limited per dimension: big problems go in chunks of rows, columns
        // and batches, each with its own offsets (multiples of the tile, so vec4 alignment holds).
        let max = self.max_workgroups as usize;
        let rows_per = max * GEMM_TILE as usize;
        let mut chunks = Vec::new();
        for z0 in (0..batch).step_by(max) {
            for i0 in (0..m).step_by(rows_per) {
                for j0 in (0..n).step_by(rows_per) {
                    let (zc, ic, jc) = ((batch - z0).min(max), (m - i0).min(rows_per), (n - j0).min(rows_per));
                    let at = |o: Operand<'_>, r: usize, col: usize| {
                        [(o.offset + z0 * o.batch_stride + r * o.rs + col * o.cs) as u32, o.rs as u32, o.cs as u32, o.batch_stride as u32]
                    };
                    let params = GemmParams {
                        m: ic as u32,
                        n: jc as u32,
                        k: k as u32,
                        flags,
                        a: at(a, i0, 0),
                        b: at(b, 0, j0),
                        c: at(c, i0, j0),
                        bias_off: bias.map_or(0, |(_, off)| (off + j0) as u32),
                        _pad: [0; 3],
                    };
                    chunks.push((params, [(jc as u32).div_ceil(GEMM_TILE), (ic as u32).div_ceil(GEMM_TILE), zc as u32]));
                }
            }
        }
        let entries = [a.buf, b.buf, c.buf, bias_buf, a.buf, b.buf];
        self.dispatch(Kernel::Gemm, pipeline, &entries, std::mem::size_of::<GemmParams>() as u64, &chunks)
    }

    /// Queues `sums[out_off + j] = Σ_i g[i, j]` for the (rows × cols) operand `g`.
    pub fn column_sums(&self, g: Operand<'_>, rows: usize, cols: usize, sums: &Buffer, out_off: usize) -> Result<(), GpuError> {
        if std::ptr::eq(g.buf, sums) {
            return Err(GpuError::Invalid("column_sums: the output must not share a buffer with the input".into()));
        }
        check_reach("g", g, 1, rows, cols)?;
        if out_off + cols > sums.len {
            return Err(GpuError::Invalid(format!("column_sums: {cols} sums do not fit {} elements from {out_off}", sums.len)));
        }
        if cols == 0 {
            return Ok(());
        }
        let cols_per = self.max_workgroups as usize * COLUMN_SUMS_GROUP as usize;
        let chunks: Vec<_> = (0..cols)
            .step_by(cols_per)
            .map(|j0| {
                let jc = (cols - j0).min(cols_per);
                let params = ColumnSumsParams {
                    rows: rows as u32,
                    cols: jc as u32,
                    off: (g.offset + j0 * g.cs) as u32,
                    rs: g.rs as u32,
                    cs: g.cs as u32,
                    out_off: (out_off + j0) as u32,
                    _pad: [0; 2],
                };
                (params, [(jc as u32).div_ceil(COLUMN_SUMS_GROUP), 1, 1])
            })
            .collect();
        let size = std::mem::size_of::<ColumnSumsParams>() as u64;
        self.dispatch(Kernel::ColumnSums, &self.column_sums, &[g.buf, sums], size, &chunks)
    }

    /// Writes each chunk's parameters into a slot of the ring and queues its dispatch with
    /// the (cached) bind group over `entries` (bindings 1…, after the parameters; the first
    /// four identify it).
    fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        pipeline: &wgpu::ComputePipeline,
        entries: &[&Buffer],
        params_size: u64,
        chunks: &[(P, [u32; 3])],
    ) -> Result<(), GpuError> {
        let mut key = [0u64; 4];
        for (slot, b) in key.iter_mut().zip(entries.iter().take(4)) {
            *slot = b.id;
        }
        let layout = match kernel {
            Kernel::Gemm => &self.gemm_layout,
            Kernel::ColumnSums => &self.column_sums_layout,
        };
        let mut submit = lock(&self.submit);
        let ring = submit.ring(&self.device, chunks.len() as u64, self.param_stride);
        let (ring_buffer, stride) = (ring.buffer.clone(), ring.stride);
        for (slot, (params, _)) in chunks.iter().enumerate() {
            self.queue.write_buffer(&ring_buffer, slot as u64 * stride, bytemuck::bytes_of(params));
        }
        if submit.bind_groups.len() >= MAX_BIND_GROUPS {
            submit.bind_groups.clear();
        }
        let group = submit.bind_groups.entry((kernel, key)).or_insert_with(|| {
            let mut list = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &ring_buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(params_size),
                }),
            }];
            list.extend(
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.raw.as_entire_binding() }),
            );
            self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &list })
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            for (slot, (_, [x, y, z])) in chunks.iter().enumerate() {
                pass.set_bind_group(0, &*group, &[(slot as u64 * stride) as u32]);
                pass.dispatch_workgroups(*x, *y, *z);
            }
        }
        self.queue.submit([encoder.finish()]);
        drop(submit);
        self.pop_scopes(oom, scope)
    }

    /// Turns errors the device caught during an operation into a `GpuError` (scopes are
    /// popped innermost first).
    fn pop_scopes(&self, oom: wgpu::ErrorScopeGuard, validation: wgpu::ErrorScopeGuard) -> Result<(), GpuError> {
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::Device(format!("out of device memory: {e}")));
        }
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(GpuError::Device(format!("the device rejected the work: {e}")));
        }
        Ok(())
    }
}

/// A bind group layout: binding 0 the parameters (uniform, dynamic offset), then one storage
/// buffer per entry of `read_only`.
fn bind_group_layout(device: &wgpu::Device, label: &str, read_only: &[bool]) -> wgpu::BindGroupLayout {
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: true, min_binding_size: None },
        count: None,
    }];
    entries.extend(read_only.iter().enumerate().map(|(i, &read_only)| wgpu::BindGroupLayoutEntry {
        binding: i as u32 + 1,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }));
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries })
}

/// Checks that every element of a (batch × rows × cols) operand lies inside its buffer, so
/// the kernels never rely on the device's bounds clamping for correctness.
fn check_reach(name: &str, o: Operand<'_>, batch: usize, rows: usize, cols: usize) -> Result<(), GpuError> {
    if batch == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (batch - 1)
        .checked_mul(o.batch_stride)
        .and_then(|z| Some(z + (rows - 1).checked_mul(o.rs)? + (cols - 1).checked_mul(o.cs)?))
        .and_then(|x| x.checked_add(o.offset));
    match last {
        Some(last) if last < o.buf.len => Ok(()),
        _ => Err(GpuError::Invalid(format!(
            "gemm: operand {name} ({batch} × {rows} × {cols}, offset {}, strides {}/{}/{}) reaches outside its buffer of {} elements",
            o.offset, o.batch_stride, o.rs, o.cs, o.buf.len
        ))),
    }
}

#[cfg(test)]
mod tests;
