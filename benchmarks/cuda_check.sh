#!/usr/bin/env bash
# The CUDA paths, on a machine with an NVIDIA GPU (CI has none): build the statistics kernels,
# run the CUDA tests and the tests of the PyTorch adapter, then the overhead benchmark on the device and
# the profile of a watched step there (host time per step, launches and copies: benchmarks/step_profile.py).
#
#     bash benchmarks/cuda_check.sh [OUTDIR]     # logs and the benchmark's JSON go to OUTDIR
#
# Wheels in .whl/ (packages the machine lacks, e.g. google-crc32c: without it TensorBoard's
# pure-Python CRC costs milliseconds per event) are installed first, into /tmp/site.
# NNHEALTH_CHECK_MEMORY=1 adds the benchmark's peak-memory part (a process per variant: minutes).
# Each part has its own time limit, so one that hangs does not hide the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-cuda-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"

# the C kernels: the package's own build, else the same flags by hand (an image without setuptools>=74)
if ! python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/build.log" 2>&1; then
  inc=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  suffix=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  gcc -O3 -ffp-contract=off -fno-strict-aliasing -shared -fPIC -I"$inc" nnhealth/stats/_kernels.c \
      -o "nnhealth/stats/_kernels$suffix" >>"$out/build.log" 2>&1
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "from nnhealth.stats.compiled import kernels; print('statistics kernels built:', kernels() is not None)"

timeout 300 python3 -m pytest -q -rs -n 4 -p no:cacheprovider tests/test_torch_cuda.py tests/test_torch_fused.py \
    tests/test_torch_hooks.py tests/test_overhead_mechanisms.py tests/test_stats_compiled.py \
    tests/test_stats_torch_device.py tests/test_inflight.py tests/test_torch_demo.py 2>&1 | tee "$out/tests.log"

parts=(--only timing)
[ "${NNHEALTH_CHECK_MEMORY:-0}" = 1 ] && parts+=(--only memory)
timeout 300 python3 benchmarks/overhead.py --device cuda "${parts[@]}" \
    --json "$out/overhead.json" 2>&1 | tee "$out/overhead.txt"
timeout 150 python3 benchmarks/step_profile.py --rounds 6 2>&1 | tee "$out/step_profile.txt"
