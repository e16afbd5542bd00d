#!/usr/bin/env bash
# One device-tool call on a GPU machine: build fastlearn with CUDA for the GPU that is there,
# run the test suite on it (cuda and triton tests run for real), then the GPU benchmarks.
# Logs and JSON go to $OUT (the device tool brings them back); copy what matters into
# bench/results/ with the device name.  Usage: bash bench/gpu/session.sh [pytest args...]
# STAGES (default build,test,bench) may add 'sweep': the tuning sweeps named in SWEEPS.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 PIP_DISABLE_PIP_VERSION_CHECK=1
OUT=${OUT:-/tmp/fastlearn-gpu}; mkdir -p "$OUT"
STAGES=${STAGES:-build,test,bench}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
python3 -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, triton.__version__)"
arch=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')")

if [[ $STAGES == *build* ]]; then
  t=$(date +%s)
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) FASTLEARN_CUDA=ON python3 -m pip install -q --no-deps \
    --no-build-isolation . -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$arch" >"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
  echo "build: $(( $(date +%s) - t )) s (sm_$arch)"
fi
cd /tmp  # import the installed package, not python/ in the checkout
fastlearn info
cd - >/dev/null

if [[ $STAGES == *test* ]]; then
  t=$(date +%s)
  timeout ${TEST_TIMEOUT:-420} python3 -m pytest tests -q -p no:cacheprovider -n ${WORKERS:-8} \
    -m "${MARK:-cuda or triton}" "$@" >"$OUT/tests.log" 2>&1
  echo "tests: rc=$? in $(( $(date +%s) - t )) s"; grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
  grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -40
fi

if [[ $STAGES == *sweep* ]]; then
  # tuning sweeps (bench/gpu/sweep.py), the ones queued for the next GPU session by default;
  # 500 s leave the build room in one 600 s device call (what runs past it is cut, not lost)
  t=$(date +%s)
  timeout ${SWEEP_TIMEOUT:-500} python3 bench/gpu/sweep.py ${SWEEPS:-estep_split kmeans estep_programs} >"$OUT/sweep.log" 2>&1
  echo "sweep: rc=$? in $(( $(date +%s) - t )) s"; grep -E "^(estep|kmeans)|best|fused| us" "$OUT/sweep.log" | tail -70
fi

if [[ $STAGES == *bench* ]]; then
  # One run per group, each with its own time limit, so one slow group cannot starve the rest;
  # with --no-progress every finished case is logged at once.
  for f in ${BENCH_FILTERS:-softmax attention diffusion mixture cluster}; do
    t=$(date +%s)
    timeout ${BENCH_TIMEOUT:-120} fastlearn bench --device cuda --no-progress --filter "$f" ${BENCH_ARGS:-} \
      --json "$OUT/bench-cuda-$f.json" >"$OUT/bench-$f.log" 2>&1
    echo "bench $f: rc=$? in $(( $(date +%s) - t )) s"; grep -v "Warning\|warn" "$OUT/bench-$f.log" | tail -25
  done
fi
