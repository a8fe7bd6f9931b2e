#!/bin/sh
# test_host.sh: the GPU tests on the CPU. build/host_test_kernels and build/host_test_trainer
# are tests/gpu_test_kernels.c (at its small shapes) and tests/gpu_test_trainer.c linked with
# the CPU stand-ins of tests/host/ in place of the GPU (host.h): every kernel's stand-in
# against the reference, then the trainer's own C code (airbench.c, trainer.c, muon.c,
# graph.c) step by step against the reference, with every buffer it hands to the GPU side
# checked to lie inside an allocation. Needs CIFAR-10 in $DATA_DIR.
cd "$(dirname "$0")/.." || exit 2
. tests/check.sh

# run NAME CMD...: CMD's output, with its RESULT line's counts added to ours.
run() {
    name=$1
    shift
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -v '^RESULT '
    result=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$result" ]; then
        fail "$name exited with $rc and no RESULT line"
        return
    fi
    passed=$((passed + $(echo "$result" | cut -d' ' -f2)))
    failed=$((failed + $(echo "$result" | cut -d' ' -f3)))
    [ "$rc" -eq 0 ] || [ "$(echo "$result" | cut -d' ' -f3)" -ne 0 ] || fail "$name exited with $rc"
}

run host_test_kernels build/host_test_kernels --small
run host_test_trainer env DATA_DIR="${DATA_DIR:-data/cifar10}" build/host_test_trainer
finish test_host
