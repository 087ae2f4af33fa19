#!/usr/bin/env bash
# Run ON THE GPU MACHINE (the device tool), from the repository root, after benchmarks/gpu/prepare.sh
# here; carry .whl, .deb and data/t10k-images-idx3-ubyte. Writes everything under $OUT:
#   bash benchmarks/gpu/run.sh            # environment, GPU tests, the API-server curve
#   bash benchmarks/gpu/run.sh serving    # then also serving.py (GPU server vs the CPU baselines;
#                                         # not Triton: it is downloaded, and that machine is offline)
# Budget: about 5 minutes for the default, 4 more with "serving" (a device session has 15 in all).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
PYTHON=${PYTHON:-python3}  # and SERVER_ARGS: for a dry run on a CPU machine, without .whl
# --queue-limit: at c = 1024, requests a finished wrk run left in flight would otherwise be shed (503)
# in the next run; the curve is about throughput, not shedding.
SERVER_ARGS=${SERVER_ARGS:---backend torchscript --device cuda --queue-limit 4096}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true  # wrk at c = 1024

if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/wrk
for deb in .deb/*.deb; do dpkg -x "$deb" /tmp/wrk; done
export PATH=/tmp/wrk/usr/bin:$PATH
export LD_LIBRARY_PATH=/tmp/wrk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

{
  nvidia-smi -L || echo "no nvidia-smi"
  echo "cores: $(nproc)"
  "$PYTHON" -c "import sys, torch, onnxruntime; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
  "$PYTHON" -c "import litserve, fastapi, uvicorn, httptools, orjson; print('litserve', litserve.__version__)"
  wrk --version 2>&1 | head -1
} 2>&1 | tee "$OUT/environment.txt"

# model.pt was written by torch 2.14.1 and the GPU image may carry an older torch. If it cannot load
# it, the curve is still worth its device time on ONNX Runtime (CPU there), so fall back rather than fail.
if [[ "$SERVER_ARGS" == *torchscript* ]] && ! "$PYTHON" - <<'PY' 2>&1 | tee "$OUT/torchscript-load.txt"
import glob, sys, warnings
import torch
warnings.simplefilter("ignore")
model = torch.jit.load(sorted(glob.glob("models/mnist/*/model.pt"))[-1])
print("torch", torch.__version__, "loads model.pt:", type(model).__name__)
PY
then
  SERVER_ARGS="${SERVER_ARGS//--backend torchscript/--backend onnx}"
  SERVER_ARGS="${SERVER_ARGS//--device cuda/--device cpu}"  # its ONNX Runtime is CPU-only
  echo "TorchScript did not load; the server runs with: $SERVER_ARGS" | tee -a "$OUT/torchscript-load.txt"
fi

# The GPU paths: TorchScript on CUDA against the CPU, ONNX Runtime's real provider.
"$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rs tests/service/test_backends.py 2>&1 | tee "$OUT/gpu-tests.txt"

# Single-image req/s against the number of API processes, and the batch sizes under load.
timeout 330 "$PYTHON" benchmarks/scaling.py --api-servers 1,2,4,8 --concurrency 64,256,1024 --runs 3 \
  --seconds 3 --wrk-threads 4 --server-args "$SERVER_ARGS" 2>&1 | tee "$OUT/scaling.txt"

if [ "${1:-}" = serving ]; then
  timeout 240 "$PYTHON" benchmarks/serving.py --runs 3 --seconds 3 --concurrency 64,256 \
    --bodies json-pixels,v2-binary-64-images --no-triton --server-args "$SERVER_ARGS --api-servers 8" \
    2>&1 | tee "$OUT/serving.txt"
fi
