#!/bin/sh
# dev/gpu_check.sh OUT [RUNS]: the checks of a GPU session in one go (run it through
# dev/device.sh on the lent machine): the GPU tests, a compute-sanitizer memcheck of a
# short run, then RUNS timed airbench94 runs (default 10) whose run file lands in OUT.
# Each step is time-limited and logs to OUT/<step>.log; a failing step does not stop the
# next. The build is expected to be done (make all CUDA_ARCH=90).
out=${1:?usage: dev/gpu_check.sh OUT [RUNS]}
runs=${2:-10}
data=${DATA_DIR:-/tmp/cifar10}
mkdir -p "$out"
step() {
    name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    start=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    rc=$?
    echo "   exit $rc after $(( $(date +%s) - start )) s"
    tail -n 12 "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
step kernels 120 build/gpu_test_kernels
step trainer 180 build/gpu_test_trainer
step memcheck 240 compute-sanitizer --tool memcheck --print-limit 20 build/airbench94 --data "$data" --epochs 0.05 --runs 1 --quiet
step airbench94 400 build/airbench94 --data "$data" --runs "$runs" --json "$out/airbench94.json"
