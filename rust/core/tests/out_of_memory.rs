//! A scratch allocation that fails unwinds with `OutOfMemory` (never an abort), on the calling
//! thread or a worker, and leaves the library working. Its own test binary: the injected
//! failure applies to the whole process.

use std::panic::{catch_unwind, AssertUnwindSafe};

use matgrad_core::gemm::{Gemm, MatMut, MatRef};
use matgrad_core::{fail_allocations_from, threads, OutOfMemory};

fn product(n: usize) -> Result<Vec<f64>, Box<dyn std::any::Any + Send>> {
    let a: Vec<f64> = (0..n * n).map(|i| (i % 7) as f64 - 3.0).collect();
    let mut c = vec![0.0; n * n];
    catch_unwind(AssertUnwindSafe(|| {
        let (am, bm) = (MatRef::from_slice(&a, 0, n, n, n as isize, 1), MatRef::from_slice(&a, 0, n, n, n as isize, 1));
        Gemm::new(am, bm, MatMut::from_slice(&mut c, 0, n, n, n as isize, 1)).unwrap().run();
    }))?;
    Ok(c)
}

#[test]
fn a_failed_allocation_unwinds_with_out_of_memory_and_leaves_the_library_working() {
    let n = 300;
    let want = product(n).expect("no failure injected yet");
    for count in [1, 2] {
        threads::set_num_threads(count).unwrap();
        fail_allocations_from(1 << 16);
        let payload = product(n).expect_err("the packing buffers are larger than 64 KiB");
        let oom = payload.downcast_ref::<OutOfMemory>().expect("the payload is OutOfMemory");
        assert!(oom.bytes >= 1 << 16, "{oom:?}");
        fail_allocations_from(usize::MAX);
        assert_eq!(product(n).expect("memory is back"), want, "{count} threads");
    }
}
