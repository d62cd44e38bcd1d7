//! `precision=`: how float32 products are computed (matgrad_core's `Precision`), with a
//! process-wide default (`matgrad.set_matmul_precision`), in torch's vocabulary.

use core::sync::atomic::{AtomicU8, Ordering};

use matgrad_core::gemm::Precision;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

const ALL: [Precision; 3] = [Precision::Highest, Precision::High, Precision::Medium];
static DEFAULT: AtomicU8 = AtomicU8::new(0);

fn default() -> Precision {
    ALL[DEFAULT.load(Ordering::Relaxed) as usize]
}

/// The precision named by `value`; ValueError naming the allowed ones otherwise.
fn parse(value: &Bound<'_, PyAny>) -> PyResult<Precision> {
    value.extract::<&str>().ok().and_then(Precision::from_name).ok_or_else(|| {
        let repr = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into());
        PyValueError::new_err(format!("precision must be 'highest', 'high' or 'medium', got {repr}"))
    })
}

/// The precision a product uses: the argument, or the default when it is None. float64
/// products are always float64: the default does not apply to them, and asking for "high" or
/// "medium" on them explicitly is a TypeError.
pub(crate) fn resolve(arg: Option<&Bound<'_, PyAny>>, float32: bool) -> PyResult<Precision> {
    match arg.filter(|a| !a.is_none()) {
        None => Ok(if float32 { default() } else { Precision::Highest }),
        Some(a) => {
            let p = parse(a)?;
            if !float32 && p != Precision::Highest {
                return Err(PyTypeError::new_err(format!(
                    "precision={:?} applies to float32 operands only (bfloat16 products); float64 is always \
                     computed in float64 (convert with .astype(np.float32), or use precision='highest')",
                    p.name()
                )));
            }
            Ok(p)
        }
    }
}

/// The name a Python path passes back to the `*_into` functions.
pub(crate) fn from_name(name: &str) -> PyResult<Precision> {
    Precision::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown precision {name:?}")))
}

/// Sets the default precision of float32 products: "highest" (float32 multiply-adds, the
/// initial default), "high" (bfloat16x3: about 16 bits of each operand) or "medium"
/// (operands rounded to bfloat16), as torch.set_float32_matmul_precision.
#[pyfunction]
pub(crate) fn set_matmul_precision(precision: &Bound<'_, PyAny>) -> PyResult<()> {
    let p = parse(precision)?;
    DEFAULT.store(ALL.iter().position(|&q| q == p).unwrap_or(0) as u8, Ordering::Relaxed);
    Ok(())
}

/// The default precision of float32 products.
#[pyfunction]
pub(crate) fn get_matmul_precision() -> &'static str {
    default().name()
}

/// `resolve` for the Python paths: the name of the precision a product uses.
#[pyfunction]
#[pyo3(signature = (precision, float32))]
pub(crate) fn resolve_precision(precision: Option<&Bound<'_, PyAny>>, float32: bool) -> PyResult<&'static str> {
    resolve(precision, float32).map(Precision::name)
}

/// Whether float32 products at "high" and "medium" can run on this CPU's matrix engine (AMX).
#[pyfunction]
pub(crate) fn amx_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return matgrad_core::gemm::amx_supported();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Lets (or stops) those products use AMX; without it they run on the FMA kernels with the
/// operands rounded while packing (for tests and benchmarks of both on one machine).
#[pyfunction]
pub(crate) fn use_amx(enabled: bool) {
    #[cfg(target_arch = "x86_64")]
    matgrad_core::gemm::set_amx_enabled(enabled);
    let _ = enabled;
}

/// Whether those products run on AMX now.
#[pyfunction]
pub(crate) fn amx_in_use() -> bool {
    #[cfg(target_arch = "x86_64")]
    return matgrad_core::gemm::amx_in_use();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}
