#!/usr/bin/env bash
# Check and time the GPU path of InjectCRAB on a machine with an NVIDIA GPU.
#
# Installs toast_crab (scripts/setup_env.sh), checks that TensorFlow finds a GPU,
# runs the device and generation tests, times the generator on CPU and GPU in
# float32 and mixed_float16 (with the GPU-vs-CPU comparison), then times InjectCRAB
# on the GPU against SimNoise on the same data. It takes a few minutes and prints
# every number; the JSON files go to benchmarks/results/.
#
# Usage: bash scripts/gpu_check.sh
# Environment: HOURS (default 24) and N_PIX (default 19) size the InjectCRAB data.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root" || exit 1
# shellcheck disable=SC1091
source scripts/setup_env.sh || exit 1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

echo "== GPUs visible to TensorFlow =="
if ! python - <<'EOF'
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}")
print("GPUs:", [gpu.name for gpu in gpus])
if gpus:
    print("details:", tf.config.experimental.get_device_details(gpus[0]))
sys.exit(0 if gpus else 1)
EOF
then
    echo "TensorFlow finds no GPU: check the driver (nvidia-smi) and that the tensorflow"
    echo "wheel is the CUDA build (pip install 'tensorflow[and-cuda]'). Stopping."
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

status=0
echo "== device and generation tests =="
python -m pytest -q -p no:cacheprovider tests/test_devices.py || status=1
python -m pytest -q -p no:cacheprovider tests/test_generation.py || status=1

echo "== generator throughput: CPU and GPU, float32 and mixed_float16 =="
python benchmarks/bench_generator.py --batch-sizes 256,1024,8192,32768 --repeats 3 || status=1

echo "== InjectCRAB on the GPU against SimNoise on the CPU, same data =="
for batch in 256 8192; do
    python benchmarks/bench_injection.py --device gpu --batch-size "$batch" \
        --ops inject_crab,sim_noise --hours "${HOURS:-24}" --n-pix "${N_PIX:-19}" \
        --repeats 3 --no-tracemalloc || status=1
done
python benchmarks/bench_injection.py --device gpu --mixed-precision --batch-size 8192 \
    --ops inject_crab,sim_noise --hours "${HOURS:-24}" --n-pix "${N_PIX:-19}" \
    --repeats 3 --no-tracemalloc || status=1
echo "== the same with the CRAB chunk model crab_default =="
python benchmarks/bench_injection.py --device gpu --batch-size 8192 \
    --model toast_crab/data/models/crab_default.keras \
    --ops inject_crab,sim_noise --hours "${HOURS:-24}" --n-pix "${N_PIX:-19}" \
    --repeats 3 --no-tracemalloc || status=1

echo
if [ "$status" -ne 0 ]; then
    echo "gpu_check: at least one step FAILED (see above)."
else
    echo "gpu_check: all steps passed."
fi
exit "$status"
