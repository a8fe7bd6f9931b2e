#!/bin/sh
# test_racecheck.sh: the kernels run on the CPU (tests/emu/) under ThreadSanitizer, as make
# host-racecheck builds them: every CUDA thread a ThreadSanitizer fiber, ordered only by what
# orders CUDA threads (emu.cc), so that two threads' conflicting accesses with no barrier
# between are reported as a data race, as compute-sanitizer's racecheck would. First the
# detector must report the race test_emu --race provokes; then test_emu and the kernel tests
# (tests/gpu_test_kernels.c at its small shapes) and kernel_bench's checks (with any v2 kernel
# of dev/) must pass with no report. HOST_BUILD names the folder of the programs (default
# build/tsan).
cd "$(dirname "$0")/.." || exit 2
. tests/check.sh

bin=${HOST_BUILD:-build/tsan}
export OMP_NUM_THREADS=1  # the tests' OpenMP loops: libgomp's own threads are not instrumented
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$bin/test_emu" --race > "$tmp" 2>&1
status=$?
CHECK_OUT=$tmp check "test_emu --race: ThreadSanitizer reports its shared-memory race" \
    sh -c "[ $status -ne 0 ] && grep -q 'WARNING: ThreadSanitizer: data race' '$tmp'"
status=
run_counted test_emu "$bin/test_emu"
run_counted host_test_kernels "$bin/host_test_kernels" --small
"$bin/host_kernel_bench" --batch 32 --reps 1 --warmup 0 > "$tmp" 2>&1  # dev/'s v2 kernels too
status=$?
CHECK_OUT=$tmp check "host_kernel_bench --batch 32 under ThreadSanitizer" [ $status -eq 0 ]
finish test_racecheck
