//! Glue for `matgrad.gpu` (feature `gpu`): device buffers as a Python class, and the GEMM and
//! column sums on them. Shapes, strides and NumPy semantics are worked out in
//! `python/matgrad/gpu.py`; the core checks that every view stays inside its buffer.

use matgrad_core::gpu::{self, Buffer, Context, GemmOp, GpuError, Operand};
use numpy::{PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

fn to_py(e: GpuError) -> PyErr {
    match e {
        GpuError::Invalid(s) => PyValueError::new_err(s),
        GpuError::Unavailable(s) | GpuError::Device(s) => PyRuntimeError::new_err(s),
    }
}

/// Opens the device on first use, without the GIL (it can take a while).
fn context(py: Python<'_>) -> PyResult<&'static Context> {
    py.detach(gpu::context).map_err(to_py)
}

/// A buffer of float32 elements on the device. Its shape lives in `matgrad.gpu.GpuArray`.
#[pyclass(frozen, module = "matgrad._matgrad")]
pub struct GpuBuffer(Buffer);

#[pymethods]
impl GpuBuffer {
    fn __len__(&self) -> usize {
        self.0.len()
    }
}

/// None if a device opens, else the reason it does not.
#[pyfunction]
fn gpu_unavailable_reason(py: Python<'_>) -> Option<String> {
    py.detach(gpu::context).err().map(|e| e.to_string())
}

#[pyfunction]
fn gpu_adapter_info<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let info = context(py)?.adapter_info();
    let dict = PyDict::new(py);
    dict.set_item("name", &info.name)?;
    dict.set_item("backend", &info.backend)?;
    dict.set_item("device_type", &info.device_type)?;
    dict.set_item("driver", &info.driver)?;
    dict.set_item("driver_info", &info.driver_info)?;
    Ok(dict)
}

/// Waits for the work queued on the device, without the GIL.
#[pyfunction]
fn gpu_synchronize(py: Python<'_>) -> PyResult<()> {
    let ctx = context(py)?;
    py.detach(|| ctx.synchronize()).map_err(to_py)
}

/// The largest buffer in bytes a kernel can bind on this device.
#[pyfunction]
fn gpu_max_buffer_bytes(py: Python<'_>) -> PyResult<u64> {
    Ok(context(py)?.max_buffer_bytes())
}

/// A device copy of a C-contiguous float32 array.
#[pyfunction]
fn gpu_upload(py: Python<'_>, array: PyReadonlyArrayDyn<'_, f32>) -> PyResult<GpuBuffer> {
    let ctx = context(py)?;
    let data = array.as_slice().map_err(|_| PyValueError::new_err("gpu_upload: expected a C-contiguous float32 array"))?;
    py.detach(|| ctx.upload(data)).map(GpuBuffer).map_err(to_py)
}

/// A device buffer of `len` zeros.
#[pyfunction]
fn gpu_zeros(py: Python<'_>, len: usize) -> PyResult<GpuBuffer> {
    let ctx = context(py)?;
    py.detach(|| ctx.zeros(len)).map(GpuBuffer).map_err(to_py)
}

/// Copies a device buffer into a C-contiguous float32 array of the same size.
#[pyfunction]
fn gpu_download(py: Python<'_>, buf: &Bound<'_, GpuBuffer>, mut out: PyReadwriteArrayDyn<'_, f32>) -> PyResult<()> {
    let ctx = context(py)?;
    if out.len() != buf.get().0.len() {
        return Err(PyValueError::new_err(format!("gpu_download: {} elements into an array of {}", buf.get().0.len(), out.len())));
    }
    let out = out.as_slice_mut().map_err(|_| PyValueError::new_err("gpu_download: expected a C-contiguous float32 array"))?;
    let buf = &buf.get().0;
    py.detach(|| ctx.download(buf, out)).map_err(to_py)
}

/// (offset, row stride, column stride, batch stride) in elements.
type Layout = (usize, usize, usize, usize);

fn operand<'a>(buf: &'a Bound<'_, GpuBuffer>, (offset, rs, cs, batch_stride): Layout) -> Operand<'a> {
    Operand { buf: &buf.get().0, offset, rs, cs, batch_stride }
}

/// `c[z] = a[z] @ b[z] (+ bias) (+ c[z] if accumulate)` for z < batch on strided views.
#[pyfunction]
#[pyo3(signature = (a, a_layout, b, b_layout, c, c_layout, m, n, k, batch, bias, bias_offset, accumulate))]
#[allow(clippy::too_many_arguments)]
fn gpu_gemm(
    py: Python<'_>,
    a: &Bound<'_, GpuBuffer>,
    a_layout: Layout,
    b: &Bound<'_, GpuBuffer>,
    b_layout: Layout,
    c: &Bound<'_, GpuBuffer>,
    c_layout: Layout,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    bias: Option<&Bound<'_, GpuBuffer>>,
    bias_offset: usize,
    accumulate: bool,
) -> PyResult<()> {
    let ctx = context(py)?;
    let op = GemmOp {
        a: operand(a, a_layout),
        b: operand(b, b_layout),
        c: operand(c, c_layout),
        m,
        n,
        k,
        batch,
        bias: bias.map(|bb| (&bb.get().0, bias_offset)),
        accumulate,
    };
    py.detach(|| ctx.gemm(&op)).map_err(to_py)
}

/// `sums[out_offset + j] = Σ_i g[i, j]` for the (rows × cols) view `g`.
#[pyfunction]
fn gpu_column_sums(
    py: Python<'_>,
    g: &Bound<'_, GpuBuffer>,
    g_layout: (usize, usize, usize),
    rows: usize,
    cols: usize,
    sums: &Bound<'_, GpuBuffer>,
    out_offset: usize,
) -> PyResult<()> {
    let ctx = context(py)?;
    let (offset, rs, cs) = g_layout;
    let g = Operand { buf: &g.get().0, offset, rs, cs, batch_stride: 0 };
    let sums = &sums.get().0;
    py.detach(|| ctx.column_sums(g, rows, cols, sums, out_offset)).map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GpuBuffer>()?;
    m.add_function(wrap_pyfunction!(gpu_unavailable_reason, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_adapter_info, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_max_buffer_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_synchronize, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_upload, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_zeros, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_download, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_gemm, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_column_sums, m)?)?;
    m.add("GPU_DRIVER_HINT", gpu::DRIVER_HINT)?;
    Ok(())
}
