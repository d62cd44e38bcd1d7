#!/usr/bin/env bash
# matgrad's GPU path on a machine with a GPU: first, in seconds, whether a Vulkan driver for it
# is there at all; then the GPU tests; then the GPU bench and torch.matmul on CUDA (TF32 off)
# in the same run, written as JSON.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default OUT_DIR: ./gpu-check)
#
# Expects matgrad installed with its test extras (python3 -m pip install '.[test]').
# Exit status: 0 all ran; 3 no Vulkan driver for a GPU (nothing else run); else the failing step's.
set -u
out=${1:-gpu-check}
mkdir -p "$out"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}

echo "== Vulkan driver"
icds=$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json 2>/dev/null)
echo "ICD files: ${icds:-none}"
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
    echo "no libvulkan.so.1 (the Vulkan loader): apt-get install libvulkan1" >&2
    exit 3
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    if ! echo "$icds" | grep -qi nvidia; then
        cat >&2 <<'EOF'
An NVIDIA GPU is present but no NVIDIA Vulkan ICD (nvidia_icd.json) is installed. In a CUDA
container this usually means the 'graphics' driver capability is missing: run the container
with NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics (or 'all'). wgpu would only find a
software adapter (lavapipe) here, so nothing is measured.
EOF
        exit 3
    fi
fi
python3 - <<'EOF' || exit 3
import sys
from matgrad import gpu
if not gpu.is_available():
    sys.exit("matgrad.gpu: no usable adapter")
info = gpu.adapter_info()
print("adapter:", info)
if info["device_type"] == "cpu":
    sys.exit("the adapter is a software one (%s): no GPU driver for Vulkan" % info["name"])
EOF

echo "== GPU tests"
python3 -m pytest -q tests/test_gpu.py -p no:cacheprovider || exit $?

echo "== GPU bench (matgrad.gpu, operands on the device) and torch on CUDA, TF32 off"
python3 - "$out/gpu_vs_cuda.json" <<'EOF'
import json, sys, time
import numpy as np
from matgrad import gpu

def per_call(fn, sync, n_calls):
    fn(); sync()
    t = time.perf_counter()
    for _ in range(n_calls):
        fn()
    sync()
    return (time.perf_counter() - t) / n_calls

rows = []
try:
    import torch
    cuda = torch.cuda.is_available()
except ImportError:
    torch, cuda = None, False
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
for n in (1024, 2048, 4096, 8192):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    da, db = gpu.asarray(a), gpu.asarray(b)
    calls = max(3, int(2e12 / (2 * n**3)))
    rec = {"n": n, "calls": calls}
    # Device-resident: `calls` products queued, one wait at the end (no read-back timed).
    rec["matgrad_gpu_s"] = per_call(lambda: gpu.matmul(da, db), gpu.synchronize, calls)
    ref = a[:64].astype(np.float64) @ b.astype(np.float64)
    rec["max_rel_err_first_rows"] = float(np.abs(gpu.matmul(da, db).numpy()[:64] - ref).max() / np.abs(ref).max())
    if cuda:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        rec["torch_cuda_s"] = per_call(lambda: ta @ tb, torch.cuda.synchronize, calls)
    for key in ("matgrad_gpu_s", "torch_cuda_s"):
        if key in rec:
            rec[key.replace("_s", "_gflops")] = 2 * n**3 / rec[key] / 1e9
    if cuda:
        rec["share_of_cublas"] = rec["matgrad_gpu_gflops"] / rec["torch_cuda_gflops"]
    print(rec, flush=True)
    rows.append(rec)
meta = {"adapter": gpu.adapter_info(), "torch": torch.__version__ if torch else None,
        "cuda_device": torch.cuda.get_device_name() if cuda else None, "tf32": False,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
json.dump({"meta": meta, "rows": rows}, open(sys.argv[1], "w"), indent=1)
print("wrote", sys.argv[1])
EOF
status=$?
[ $status -eq 0 ] || exit $status

python3 -m matgrad bench --device gpu --no-progress --json "$out/bench_gpu.json" || exit $?
