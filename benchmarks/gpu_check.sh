#!/usr/bin/env bash
# The one device run: versions, the GPU tests and the CuPy parity subset, then the GPU measurements.
# Results under $OUT (at most 8 files: gpu_check.log, bench_gpu.json/.txt, the plots). On a machine
# without a GPU it runs too: the GPU tests skip with the reason, the measurements check the harness.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        (device: PYTHONPATH=. python3, no install needed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export CUPY_TF32=0 HYPOTHESIS_PROFILE=ci
LOG="$OUT/gpu_check.log"
{
  echo "== versions ($(date -Is))"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not found"
  "$PY" - <<'PYEOF'
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    import cupy; print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion(),
                       "driver", cupy.cuda.runtime.driverGetVersion())
except Exception as e: print("cupy:", type(e).__name__, e)
try:
    import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
                        "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
except Exception as e: print("torch:", type(e).__name__, e)
from rnn_scratch.gpu_study import gpu_reason
print("GPU parts:", gpu_reason() or "will run")
PYEOF
  echo "== gpu-marked tests (fused kernels vs unfused vs graph, CuPy vs NumPy) and the NVRTC compile check"
  timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_gpu.py tests/test_fused.py -rs
  GPU_TESTS=$?
  echo "== CuPy-backend parity subset (RNN_SCRATCH_BACKEND=cupy: torch on CUDA, finite differences)"
  if "$PY" -c "import sys; from rnn_scratch.gpu_study import gpu_reason; sys.exit(gpu_reason() is not None)"; then
    RNN_SCRATCH_BACKEND=cupy timeout 200 "$PY" -m pytest -q -p no:cacheprovider -x -n 4 tests/test_parity.py \
      -k "L1 or L2-bi"
    PARITY=$?
    RNN_SCRATCH_BACKEND=cupy timeout 100 "$PY" -m pytest -q -p no:cacheprovider -x -n 4 tests/test_layers.py \
      tests/test_torch_habits.py tests/test_reliability.py || PARITY=1
  else
    echo "skipped: no usable GPU"
    PARITY=0
  fi
  echo "== measurements (fused kernels and graphs on only if the device tests passed: status $GPU_TESTS)"
  FUSED=""
  [ "$GPU_TESTS" = "0" ] && [ "$PARITY" = "0" ] && FUSED="--fused"
  timeout 330 "$PY" benchmarks/gpu_check.py --out "$OUT" $FUSED
  BENCH=$?
  echo "== done: gpu tests $GPU_TESTS, parity $PARITY, measurements $BENCH"
  [ "$GPU_TESTS" = "0" ] && [ "$PARITY" = "0" ] && [ "$BENCH" = "0" ]
} > "$LOG" 2>&1
STATUS=$?
tail -n 40 "$LOG"
exit $STATUS
