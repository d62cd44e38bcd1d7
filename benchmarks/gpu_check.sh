#!/usr/bin/env bash
# matgrad's GPU path on a machine with a GPU: first, in seconds, whether a Vulkan driver for it
# is there at all; then the GPU tests; then the bench's device-resident products against
# torch on CUDA (TF32 off) in the same run, and its other GPU rows, written as JSON.
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

echo "== device-resident products: matgrad.gpu against torch on CUDA (TF32 off), same run"
# matmul n = 1024-8192 and the linear layer's shapes, forward and backward; 'vs torch' is
# matgrad's share of cuBLAS FP32 (torch time / matgrad time).
python3 -m matgrad bench --device gpu --no-progress --filter device-resident --json "$out/resident.json" || exit $?
echo "== the GPU bench's other rows (host arrays in and out)"
python3 -m matgrad bench --device gpu --quick --no-progress --json "$out/bench_gpu_quick.json" || exit $?
