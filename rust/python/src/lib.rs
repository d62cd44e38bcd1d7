//! `matgrad._matgrad`: thin PyO3 glue between NumPy arrays and matgrad-core.
//!
//! Each function borrows the arrays it is given, checks that they are what the core needs
//! (dtype, shapes, aligned element strides, a writable output), releases the GIL, and hands raw
//! pointers and strides to the core. No arithmetic happens here; the NumPy semantics (1-D
//! operands, broadcasting, promotion, `out=` checks) live in `python/matgrad/__init__.py`.

use matgrad_core::gemm::{self, Batch, HasKernels, Isa, Precision};
use matgrad_core::linear::{self, LinearGrads, WeightLayout};
use matgrad_core::mlp::{Mlp2, Mlp2Grads};
use matgrad_core::threads;
use numpy::{Element as NpElement, PyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

mod compute;
mod fast;
#[cfg(feature = "gpu")]
mod gpu;
mod precision;
mod views;
use compute::compute_detached;
use views::{ArrayView, Unchecked};

/// An element type both the core and NumPy know.
trait Float: HasKernels + NpElement {}
impl Float for f32 {}
impl Float for f64 {}

/// Dispatches `$body` on the dtype of `$out`, binding `$t` to f32 or f64.
macro_rules! with_float_dtype {
    ($out:expr, $name:literal, |$t:ident| $body:expr) => {{
        let out: &Bound<'_, PyAny> = $out;
        if out.cast::<PyArrayDyn<f32>>().is_ok() {
            type $t = f32;
            $body
        } else if out.cast::<PyArrayDyn<f64>>().is_ok() {
            type $t = f64;
            $body
        } else {
            Err(PyTypeError::new_err(format!("{}: expected a float32 or float64 ndarray, got {}", $name, describe(out))))
        }
    }};
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyUntypedArray>() {
        Ok(arr) => format!("an array of dtype {}", arr.dtype()),
        Err(_) => format!("an object of type {}", obj.get_type()),
    }
}

/// Matrix product of two arrays, exactly as numpy.matmul.
///
/// ``a`` (..., m, k) and ``b`` (..., k, n) give (..., m, n), batch dimensions broadcast.
/// A 1-D ``a`` is a row vector and a 1-D ``b`` a column vector, and the added axis is removed
/// from the result (vector @ vector is a NumPy scalar). Transposed, sliced, reversed and
/// broadcast views are read in place, never copied.
///
/// ``out`` (positional or keyword) receives the result and is returned; it may be a
/// non-contiguous view, may overlap ``a``, ``b`` or itself, and must have the result's shape
/// and a dtype the result casts to under ``same_kind``.
///
/// ``precision`` ("highest", "high" or "medium"; None: matgrad.get_matmul_precision()) is how
/// float32 products are computed: float32 multiply-adds, bfloat16x3, or bfloat16 operands
/// (on the CPU's matrix engine where it has one). float64 is always computed in float64.
///
/// >>> import numpy as np, matgrad
/// >>> matgrad.matmul(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 1.0]))
/// array([3., 7.])
#[pyfunction]
#[pyo3(signature = (a, b, /, out=None, *, precision=None))]
fn matmul(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: Option<&Bound<'_, PyAny>>,
    precision: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    if let Some(result) = fast::matmul(py, a, b, out, precision)? {
        return Ok(result);
    }
    static GENERAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    general(py, &GENERAL, "matgrad._matmul", "matmul_general")?.call1(py, (a, b, out, precision))
}

/// The Python function that takes the calls the compiled path does not (imported once).
fn general<'a>(py: Python<'_>, cell: &'a PyOnceLock<Py<PyAny>>, module: &str, name: &str) -> PyResult<&'a Py<PyAny>> {
    cell.get_or_try_init(py, || py.import(module)?.getattr(name).map(Bound::unbind))
}

/// The keyword arguments of the linear functions: `weight_layout` (`"in_out"` unless given)
/// as `out_in`, and the gradient flags (`True` unless given); None when anything else is
/// there or a value is not one the compiled path takes (the Python path then decides).
struct LinearOptions<'py> {
    out_in: bool,
    wanted: fast::Wanted,
    precision: Option<Bound<'py, PyAny>>,
}

impl<'py> LinearOptions<'py> {
    fn parse(kwargs: Option<&Bound<'py, PyDict>>, flags: bool) -> PyResult<Option<LinearOptions<'py>>> {
        let mut options = LinearOptions { out_in: false, wanted: fast::Wanted { x: true, weight: true, bias: true }, precision: None };
        let Some(kwargs) = kwargs else { return Ok(Some(options)) };
        for (key, value) in kwargs.iter() {
            let Ok(key) = key.extract::<&str>() else { return Ok(None) };
            match (key, value.extract::<&str>()) {
                ("weight_layout", Ok("in_out")) => options.out_in = false,
                ("weight_layout", Ok("out_in")) => options.out_in = true,
                ("grad_x", _) if flags => options.wanted.x = value.is_truthy()?,
                ("grad_weight", _) if flags => options.wanted.weight = value.is_truthy()?,
                ("grad_bias", _) if flags => options.wanted.bias = value.is_truthy()?,
                ("precision", _) => options.precision = Some(value),
                _ => return Ok(None),
            }
        }
        Ok(Some(options))
    }
}

/// The linear layer: ``x @ W + bias`` (``weight_layout="in_out"``, W of shape (in, out)) or
/// torch's ``x @ W.T + bias`` (``"out_in"``, W of shape (out, in)).
///
/// ``linear(x, weight, bias=None, /, *, weight_layout="in_out", precision=None)``: ``x`` has any number of
/// leading dimensions (..., in); the result is (..., out). The bias is added as the GEMM stores
/// each tile of the result, not in a second pass.
#[pyfunction(name = "linear")]
#[pyo3(signature = (x, weight, bias=None, /, **kwargs))]
fn linear_layer(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    if let Some(options) = LinearOptions::parse(kwargs, false)? {
        if let Some(y) = fast::linear(py, x, weight, bias, options.out_in, options.precision.as_ref())? {
            return Ok(y);
        }
    }
    static GENERAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    general(py, &GENERAL, "matgrad._grad", "linear_general")?.call(py, (x, weight, bias), kwargs)
}

/// Gradients of :func:`linear` given ``grad_y`` = ∂L/∂y.
///
/// ``linear_backward(grad_y, x, weight, /, *, weight_layout="in_out", grad_x=True,
/// grad_weight=True, grad_bias=True, precision=None)`` returns ``(grad_x, grad_weight, grad_bias)``, ``None``
/// for those not asked for: grad_x = G Wᵀ (..., in); grad_weight in the weight's own layout
/// (Xᵀ G, or Gᵀ X for ``"out_in"``); grad_bias = the column sums of G, summed while G is
/// packed for the grad_weight GEMM. Leading dimensions of ``x`` and ``grad_y`` are flattened.
#[pyfunction]
#[pyo3(signature = (grad_y, x, weight, /, **kwargs))]
fn linear_backward(
    py: Python<'_>,
    grad_y: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    if let Some(options) = LinearOptions::parse(kwargs, true)? {
        if let Some(grads) = fast::linear_backward(py, grad_y, x, weight, options.out_in, options.wanted, options.precision.as_ref())? {
            return Ok(grads);
        }
    }
    static GENERAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    general(py, &GENERAL, "matgrad._grad", "linear_backward_general")?.call(py, (grad_y, x, weight), kwargs)
}

/// Gradients of ``matmul(a, b)`` given ``grad_out`` = ∂L/∂C.
///
/// ``matmul_backward(grad_out, a, b, /, *, grad_a=True, grad_b=True, precision=None)`` returns
/// ``(grad_a, grad_b)`` with the shapes of ``a`` and ``b`` (``None`` for one not asked for):
/// ∂L/∂A = G Bᵀ and ∂L/∂B = Aᵀ G, each one GEMM on transposed views, with 1-D operands and
/// broadcast batch dimensions handled as torch's autograd of ``torch.matmul`` handles them
/// (the gradient of a broadcast operand summed over the batches it was broadcast to).
/// ``precision`` as for :func:`matgrad.matmul`.
#[pyfunction]
#[pyo3(signature = (grad_out, a, b, /, **kwargs))]
fn matmul_backward(
    py: Python<'_>,
    grad_out: &Bound<'_, PyAny>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    if let Some((wanted, precision)) = matmul_backward_options(kwargs)? {
        if let Some(grads) = fast::matmul_backward(py, grad_out, a, b, wanted, precision.as_ref())? {
            return Ok(grads);
        }
    }
    static GENERAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    general(py, &GENERAL, "matgrad._grad", "matmul_backward_general")?.call(py, (grad_out, a, b), kwargs)
}

/// `grad_a`, `grad_b` (`True` unless given) and `precision` of `matmul_backward`; None when
/// anything else is there (the Python path then raises the error).
#[allow(clippy::type_complexity)]
fn matmul_backward_options<'py>(kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Option<((bool, bool), Option<Bound<'py, PyAny>>)>> {
    let (mut wanted, mut precision) = ((true, true), None);
    for (key, value) in kwargs.into_iter().flat_map(|k| k.iter()) {
        match key.extract::<&str>() {
            Ok("grad_a") => wanted.0 = value.is_truthy()?,
            Ok("grad_b") => wanted.1 = value.is_truthy()?,
            Ok("precision") => precision = Some(value),
            _ => return Ok(None),
        }
    }
    Ok(Some((wanted, precision)))
}

/// `out[...] = a @ b` (or `out[...] += a @ b` with `accumulate`, in the product's own pass
/// over `out`) over batch dimensions. All three have the same number of dimensions (>= 2); a
/// batch dimension of `a` or `b` may be 1 (broadcast) where `out`'s is larger.
#[pyfunction]
#[pyo3(signature = (a, b, out, precision="highest", accumulate=false))]
fn matmul_into(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    precision: &str,
    accumulate: bool,
) -> PyResult<()> {
    let precision = precision::from_name(precision)?;
    with_float_dtype!(out, "matmul", |T| matmul_typed::<T>(py, a, b, out, precision, accumulate))
}

fn matmul_typed<T: Float>(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    precision: Precision,
    accumulate: bool,
) -> PyResult<()> {
    let a = ArrayView::<T>::borrow(a, "a")?;
    let b = ArrayView::<T>::borrow(b, "b")?;
    let c = ArrayView::<T>::borrow_mut(out, "out")?;
    let nd = c.ndim();
    if nd < 2 || a.ndim() != nd || b.ndim() != nd {
        return Err(PyValueError::new_err(format!(
            "matmul: expected operands of equal rank >= 2, got shapes {:?}, {:?} and out {:?}",
            a.shape, b.shape, c.shape
        )));
    }
    let (m, k, n) = (a.shape[nd - 2], a.shape[nd - 1], b.shape[nd - 1]);
    let batch = c.shape[..nd - 2].to_vec();
    let batch = batch.as_slice();
    let fits = |x: &ArrayView<T>| x.shape[..nd - 2].iter().zip(batch).all(|(&d, &want)| d == want || d == 1);
    if b.shape[nd - 2] != k || c.shape[nd - 2] != m || c.shape[nd - 1] != n || !fits(&a) || !fits(&b) {
        return Err(PyValueError::new_err(format!("matmul: shapes {:?} and {:?} do not fit out {:?}", a.shape, b.shape, c.shape)));
    }
    let a_strides = a.batch_strides(batch);
    let b_strides = b.batch_strides(batch);
    let c_strides = c.batch_strides(batch);
    let work = Unchecked((a, b, c));
    compute_detached(py, move || {
        let (a, b, c) = work.into_inner();
        // SAFETY: the views come from live NumPy arrays whose shapes and strides were just
        // checked against each other; `out` is writable and its batch matrices are disjoint
        // (ArrayView::borrow_mut rejects zero strides on dimensions longer than 1).
        unsafe {
            let (am, bm, cm) = (a.matrix(), b.matrix(), c.matrix_mut());
            let batch = Batch { shape: batch, a_strides: &a_strides, b_strides: &b_strides, c_strides: &c_strides };
            let beta = if accumulate { T::ONE } else { T::ZERO };
            gemm::gemm_batched_beta(am, bm, cm, batch, precision, beta).map_err(|e| e.0)
        }
    })?
    .map_err(PyValueError::new_err)
}

fn layout(out_in: bool) -> WeightLayout {
    if out_in {
        WeightLayout::OutIn
    } else {
        WeightLayout::InOut
    }
}

/// Borrows an optional 2-D output.
fn optional_mut<T: Float>(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<ArrayView<T>>> {
    obj.map(|o| ArrayView::<T>::borrow_mut(o, name)).transpose()
}

fn require_ndim<T: Float>(view: &ArrayView<T>, nd: usize, name: &str) -> PyResult<()> {
    if view.ndim() != nd {
        return Err(PyValueError::new_err(format!("{name}: expected {nd} dimensions, got shape {:?}", view.shape)));
    }
    Ok(())
}

/// `y[...] = relu?(x @ W + bias)`: x (batch, in), W (in, out) or, with `out_in`, (out, in).
#[pyfunction]
#[pyo3(signature = (x, weight, bias, out_in, relu, y, precision="highest"))]
#[allow(clippy::too_many_arguments)]
fn linear_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: Option<&Bound<'_, PyAny>>,
    out_in: bool,
    relu: bool,
    y: &Bound<'_, PyAny>,
    precision: &str,
) -> PyResult<()> {
    let precision = precision::from_name(precision)?;
    with_float_dtype!(y, "linear", |T| {
        let x = ArrayView::<T>::borrow(x, "x")?;
        let w = ArrayView::<T>::borrow(weight, "weight")?;
        let bias = bias.map(|b| ArrayView::<T>::borrow(b, "bias")).transpose()?;
        let y = ArrayView::<T>::borrow_mut(y, "y")?;
        require_ndim(&x, 2, "x")?;
        require_ndim(&w, 2, "weight")?;
        require_ndim(&y, 2, "y")?;
        if let Some(b) = &bias {
            require_ndim(b, 1, "bias")?;
        }
        let work = Unchecked((x, w, bias, y));
        compute_detached(py, move || {
            let (x, w, bias, y) = work.into_inner();
            // SAFETY: live arrays, dtypes and ranks checked above; the core checks the shapes.
            unsafe { linear::forward(x.matrix(), w.matrix(), layout(out_in), bias.map(|b| b.vector()), relu, y.matrix_mut(), precision) }
        })?
        .map_err(|e| PyValueError::new_err(e.0))
    })
}

/// The linear layer's gradients into the given outputs (None: not wanted).
#[pyfunction]
#[pyo3(signature = (grad_y, x, weight, out_in, grad_x, grad_weight, grad_bias, accumulate_weight = false, grad_x_relu_mask = None, precision = "highest"))]
#[allow(clippy::too_many_arguments)]
fn linear_backward_into(
    py: Python<'_>,
    grad_y: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    out_in: bool,
    grad_x: Option<&Bound<'_, PyAny>>,
    grad_weight: Option<&Bound<'_, PyAny>>,
    grad_bias: Option<&Bound<'_, PyAny>>,
    accumulate_weight: bool,
    grad_x_relu_mask: Option<&Bound<'_, PyAny>>,
    precision: &str,
) -> PyResult<()> {
    let precision = precision::from_name(precision)?;
    with_float_dtype!(grad_y, "linear_backward", |T| {
        let g = ArrayView::<T>::borrow(grad_y, "grad_y")?;
        let x = ArrayView::<T>::borrow(x, "x")?;
        let w = ArrayView::<T>::borrow(weight, "weight")?;
        let gx = optional_mut::<T>(grad_x, "grad_x")?;
        let gw = optional_mut::<T>(grad_weight, "grad_weight")?;
        let gb = optional_mut::<T>(grad_bias, "grad_bias")?;
        let mask = grad_x_relu_mask.map(|m| ArrayView::<T>::borrow(m, "grad_x_relu_mask")).transpose()?;
        if let Some(v) = &mask {
            require_ndim(v, 2, "grad_x_relu_mask")?;
        }
        for (view, name) in [(&g, "grad_y"), (&x, "x"), (&w, "weight")] {
            require_ndim(view, 2, name)?;
        }
        if let Some(v) = &gx {
            require_ndim(v, 2, "grad_x")?;
        }
        if let Some(v) = &gw {
            require_ndim(v, 2, "grad_weight")?;
            if v.shape != w.shape {
                return Err(PyValueError::new_err(format!("grad_weight has shape {:?}, weight {:?}", v.shape, w.shape)));
            }
        }
        // SAFETY: grad_bias is a live array that nothing else touches during this call.
        let gb = gb.map(|v| unsafe { v.contiguous_vector_mut("grad_bias") }).transpose()?;
        let work = Unchecked((g, x, w, gx, gw, gb, mask));
        compute_detached(py, move || {
            let (g, x, w, gx, gw, gb, mask) = work.into_inner();
            // SAFETY: live arrays, dtypes and ranks checked above (grad_bias contiguous); the
            // core checks that the shapes fit together.
            unsafe {
                let grads = LinearGrads {
                    x: gx.map(|v| v.matrix_mut()),
                    x_relu_mask: mask.as_ref().map(|v| v.matrix()),
                    weight: gw.map(|v| v.matrix_mut()),
                    bias: gb,
                    accumulate_weight,
                    precision,
                };
                linear::backward(g.matrix(), x.matrix(), w.matrix(), layout(out_in), grads)
            }
        })?
        .map_err(|e| PyValueError::new_err(e.0))
    })
}

/// GFLOP/s of a register-only FMA loop on `threads` threads for about `seconds`, on the
/// widest kernel path of this CPU, in float64 or float32.
#[pyfunction]
#[pyo3(signature = (float64, threads, seconds))]
fn fma_peak(py: Python<'_>, float64: bool, threads: usize, seconds: f64) -> PyResult<f64> {
    if threads < 1 || !(seconds > 0.0 && seconds < 60.0) {
        return Err(PyValueError::new_err(format!("fma_peak: need threads >= 1 and 0 < seconds < 60, got {threads} and {seconds}")));
    }
    let kind = if float64 { matgrad_core::ElementKind::F64 } else { matgrad_core::ElementKind::F32 };
    compute_detached(py, || matgrad_core::peak::fma_peak(kind, threads, std::time::Duration::from_secs_f64(seconds)))
}

/// Sets the number of threads of matgrad's pool (>= 1).
#[pyfunction]
fn set_num_threads(n: i64) -> PyResult<()> {
    if n < 1 {
        return Err(PyValueError::new_err(format!("set_num_threads: need at least 1 thread, got {n}")));
    }
    threads::set_num_threads(n as usize).map_err(PyValueError::new_err)
}

#[pyfunction]
fn get_num_threads() -> usize {
    threads::num_threads()
}

/// Makes matgrad compute on its own threads (`"matgrad"`) or on those of the GNU OpenMP
/// runtime loaded in this process (`"openmp"`; `library`: part of its path, to pick one).
#[pyfunction]
#[pyo3(signature = (pool, library=None))]
fn set_thread_pool(pool: &str, library: Option<&str>) -> PyResult<()> {
    let pool = match pool {
        "matgrad" => threads::Pool::Own,
        "openmp" => {
            threads::Pool::OpenMp(threads::OpenMp::loaded(library).map_err(|e| PyRuntimeError::new_err(format!("set_thread_pool: {e}")))?)
        }
        other => return Err(PyValueError::new_err(format!("set_thread_pool: pool must be 'matgrad' or 'openmp', got '{other}'"))),
    };
    threads::set_pool(pool).map_err(PyValueError::new_err)
}

/// `("matgrad", None)` or `("openmp", path of the libgomp)`.
#[pyfunction]
fn get_thread_pool() -> (&'static str, Option<String>) {
    match threads::pool() {
        threads::Pool::Own => ("matgrad", None),
        threads::Pool::OpenMp(omp) => ("openmp", Some(omp.library)),
    }
}

/// The name of the SIMD kernel in use ("avx512", "avx2", "neon" or "generic").
#[pyfunction]
fn simd_kernel() -> &'static str {
    Isa::active().name()
}

/// The kernels this CPU can run, fastest first.
#[pyfunction]
fn available_kernels() -> Vec<&'static str> {
    Isa::supported().into_iter().map(Isa::name).collect()
}

/// Makes every later call use the named kernel.
#[pyfunction]
fn force_kernel(name: &str) -> PyResult<()> {
    let isa = Isa::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Isa::ALL.iter().map(|isa| isa.name()).collect();
        PyValueError::new_err(format!("unknown kernel {name:?}; known kernels: {}", names.join(", ")))
    })?;
    isa.force().map_err(PyValueError::new_err)
}

/// One training step of the two-layer ReLU network (`matgrad_core::mlp`): writes the
/// gradients into `grad_*` (contiguous biases; the weight gradients added to with
/// `accumulate_weights`) and returns the mean cross-entropy. Labels are an intp array.
#[pyfunction]
#[pyo3(signature = (x, w1, b1, w2, b2, labels, grad_w1, grad_b1, grad_w2, grad_b2, accumulate_weights, precision = "highest"))]
#[allow(clippy::too_many_arguments)]
fn mlp2_loss_and_grads(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    w1: &Bound<'_, PyAny>,
    b1: &Bound<'_, PyAny>,
    w2: &Bound<'_, PyAny>,
    b2: &Bound<'_, PyAny>,
    labels: numpy::PyReadonlyArray1<'_, isize>,
    grad_w1: &Bound<'_, PyAny>,
    grad_b1: &Bound<'_, PyAny>,
    grad_w2: &Bound<'_, PyAny>,
    grad_b2: &Bound<'_, PyAny>,
    accumulate_weights: bool,
    precision: &str,
) -> PyResult<f64> {
    let precision = precision::from_name(precision)?;
    let labels = labels
        .as_array()
        .iter()
        .map(|&y| usize::try_from(y).map_err(|_| PyValueError::new_err(format!("mlp2: label {y} is negative"))))
        .collect::<PyResult<Vec<usize>>>()?;
    with_float_dtype!(x, "mlp2_loss_and_grads", |T| {
        let inputs = [(x, "x", 2), (w1, "W1", 2), (b1, "b1", 1), (w2, "W2", 2), (b2, "b2", 1)];
        let [x, w1, b1, w2, b2] =
            inputs.map(|(obj, name, nd)| ArrayView::<T>::borrow(obj, name).and_then(|v| require_ndim(&v, nd, name).map(|()| v)));
        let (x, w1, b1, w2, b2) = (x?, w1?, b1?, w2?, b2?);
        let outputs = [(grad_w1, "grad_W1", 2), (grad_b1, "grad_b1", 1), (grad_w2, "grad_W2", 2), (grad_b2, "grad_b2", 1)];
        let [gw1, gb1, gw2, gb2] =
            outputs.map(|(obj, name, nd)| ArrayView::<T>::borrow_mut(obj, name).and_then(|v| require_ndim(&v, nd, name).map(|()| v)));
        let (gw1, gw2) = (gw1?, gw2?);
        // SAFETY: live arrays that nothing else touches during this call.
        let (gb1, gb2) = unsafe { (gb1?.contiguous_vector_mut("grad_b1")?, gb2?.contiguous_vector_mut("grad_b2")?) };
        let work = Unchecked((x, w1, b1, w2, b2, gw1, gb1, gw2, gb2));
        compute_detached(py, move || {
            let (x, w1, b1, w2, b2, gw1, gb1, gw2, gb2) = work.into_inner();
            // SAFETY: live arrays, dtypes and ranks checked above, the gradients writable and
            // their biases contiguous; the core checks that the shapes fit together.
            unsafe {
                let net = Mlp2 { w1: w1.matrix(), b1: b1.vector(), w2: w2.matrix(), b2: b2.vector() };
                let grads = Mlp2Grads { w1: gw1.matrix_mut(), b1: gb1, w2: gw2.matrix_mut(), b2: gb2, accumulate_weights };
                net.loss_and_grads(x.matrix(), &labels, grads, precision)
            }
        })?
        .map_err(|e| PyValueError::new_err(e.0))
    })
}

/// Makes every later scratch allocation of `bytes` or more fail as if memory were exhausted
/// (None: none do). For the tests of the MemoryError path.
#[pyfunction]
#[pyo3(signature = (bytes))]
fn _fail_allocations_from(bytes: Option<usize>) {
    matgrad_core::fail_allocations_from(bytes.unwrap_or(usize::MAX));
}

#[pymodule]
fn _matgrad(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(matmul, m)?)?;
    m.add_function(wrap_pyfunction!(matmul_into, m)?)?;
    m.add_function(wrap_pyfunction!(linear_layer, m)?)?;
    m.add_function(wrap_pyfunction!(linear_forward, m)?)?;
    m.add_function(wrap_pyfunction!(linear_backward, m)?)?;
    m.add_function(wrap_pyfunction!(matmul_backward, m)?)?;
    m.add_function(wrap_pyfunction!(_fail_allocations_from, m)?)?;
    m.add_function(wrap_pyfunction!(linear_backward_into, m)?)?;
    m.add_function(wrap_pyfunction!(mlp2_loss_and_grads, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_thread_pool, m)?)?;
    m.add_function(wrap_pyfunction!(get_thread_pool, m)?)?;
    m.add_function(wrap_pyfunction!(simd_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(available_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(force_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(fma_peak, m)?)?;
    m.add_function(wrap_pyfunction!(precision::set_matmul_precision, m)?)?;
    m.add_function(wrap_pyfunction!(precision::get_matmul_precision, m)?)?;
    m.add_function(wrap_pyfunction!(precision::resolve_precision, m)?)?;
    m.add_function(wrap_pyfunction!(precision::amx_supported, m)?)?;
    m.add_function(wrap_pyfunction!(precision::use_amx, m)?)?;
    m.add_function(wrap_pyfunction!(precision::amx_in_use, m)?)?;
    #[cfg(feature = "gpu")]
    gpu::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
