#!/bin/sh
# dev/gpu_check.sh PHASE OUT: the GPU checks of a session on the lent machine, in phases that
# each fit one device call (10 minutes). Run each through dev/device.sh after the build
# (GIT_COMMIT=<sha> GIT_DIRTY=0 dev/device.sh make -j16 CUDA_ARCH=90 all) with CIFAR-10 in
# $DATA_DIR (default /tmp/cifar10). Each step is time-limited, logs to <step>.log in
# /tmp/gpu_check/PHASE and prints its exit status and last lines; a failing step does not
# stop the next. At the end OUT/PHASE.tgz holds that folder's logs and run files (the device
# tool brings back 8 files at most, so they travel as one).
#
#   tests     build/gpu_test_kernels and build/gpu_test_trainer, while a compute-sanitizer
#             memcheck of a one-epoch airbench94 run goes on in the background; waits for it
#             until 9 minutes after the phase began. The run takes cuDNN's heuristic
#             algorithms (--conv-algo heuristic): under the sanitizer the default's timing
#             of every candidate had not finished after 150 s on an H100
#   memcheck  waits up to 9 more minutes for that memcheck (it outlives the call: setsid)
#   variants  ./bench.sh 96 -n 10, then airbench94 at batch 512 to 8192 with 10 runs each,
#             and build/benchstat --table over the sweep; refuses while the memcheck runs,
#             which would disturb the timings
#   profile   ncu's per-kernel GPU time over 1,000 kernel launches of airbench94's training
#             (after the warm-up run's), to see where a step's time goes
set -u
phase=${1:?usage: dev/gpu_check.sh tests|memcheck|variants|profile OUT}
out=${2:?usage: dev/gpu_check.sh tests|memcheck|variants|profile OUT}
data=${DATA_DIR:-/tmp/cifar10}
logs=/tmp/gpu_check/$phase
memcheck_dir=/tmp/gpu_check/background  # the background memcheck outlives the call
started=$(date +%s)
rm -rf "$logs" && mkdir -p "$logs" "$out" || exit 2

# step NAME SECONDS CMD...: runs CMD with a time limit, logging to NAME.log in the logs folder.
step() {
    name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    step_start=$(date +%s)
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
    echo "   exit $? after $(( $(date +%s) - step_start )) s"
    tail -n 12 "$logs/$name.log"
}

memcheck_running() { [ -f "$memcheck_dir/pid" ] && [ ! -f "$memcheck_dir/rc" ]; }

start_memcheck() {
    rm -rf "$memcheck_dir" && mkdir -p "$memcheck_dir"
    setsid sh -c "echo \$\$ > $memcheck_dir/pid; compute-sanitizer --tool memcheck --print-limit 20 \
        --error-exitcode 3 build/airbench94 --data '$data' --epochs 1 --runs 1 --quiet --conv-algo heuristic \
        > $memcheck_dir/memcheck.log 2>&1; echo \$? > $memcheck_dir/rc" < /dev/null > /dev/null 2>&1 &
    sleep 1
    echo "== memcheck started in the background: $memcheck_dir/memcheck.log"
}

# wait_memcheck UNTIL: waits for the background memcheck until the epoch second UNTIL.
wait_memcheck() {
    while memcheck_running && [ "$(date +%s)" -lt "$1" ]; do sleep 5; done
    cp "$memcheck_dir/memcheck.log" "$logs/memcheck.log" 2>/dev/null
    if [ ! -f "$memcheck_dir/pid" ]; then
        echo "== memcheck: none was started on this machine; the tests phase starts it"
    elif [ -f "$memcheck_dir/rc" ]; then
        echo "== memcheck: exit $(cat "$memcheck_dir/rc") (3 = errors found)"
    else
        echo "== memcheck: still running; run the memcheck phase next"
    fi
    tail -n 8 "$logs/memcheck.log" 2>/dev/null
}

batch_sweep() {
    for batch in 512 1024 2048 4096 8192; do
        step "airbench94-b$batch" 150 ./bench.sh 94 -n 10 --data "$data" \
            --out "$logs/airbench94-b$batch.json" -- --batch "$batch"
    done
    step sweep-table 10 build/benchstat --table "$logs"/airbench94-b512.json \
        "$logs"/airbench94-b1024.json "$logs"/airbench94-b2048.json "$logs"/airbench94-b4096.json \
        "$logs"/airbench94-b8192.json
    cat "$logs/sweep-table.log"
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv \
    > "$logs/gpu.txt" 2>&1
cat "$logs/gpu.txt"
case $phase in
    tests)
        start_memcheck
        step kernels 120 build/gpu_test_kernels
        step trainer 180 build/gpu_test_trainer
        wait_memcheck $(( started + 540 ))
        ;;
    memcheck)
        wait_memcheck $(( started + 540 ))
        ;;
    variants)
        if memcheck_running; then
            echo "dev/gpu_check.sh: the memcheck still runs; wait for it (memcheck phase) first" >&2
            exit 2
        fi
        step airbench96 300 ./bench.sh 96 -n 10 --data "$data" --out "$logs/airbench96.json"
        batch_sweep
        ;;
    profile)
        step profile 540 ncu --clock-control none --metrics gpu__time_duration.sum \
            --launch-skip 6000 --launch-count 1000 --print-summary per-kernel \
            build/airbench94 --data "$data" --runs 1 --quiet
        ;;
    *)
        echo "dev/gpu_check.sh: unknown phase $phase (tests, memcheck, variants or profile)" >&2
        exit 2
        ;;
esac
tar czf "$out/$phase.tgz" -C "$logs" .
echo "== $phase done after $(( $(date +%s) - started )) s; logs in $out/$phase.tgz"
