#!/bin/sh
# dev/gpu_check.sh PHASE OUT: the GPU checks of a session on the lent machine, in phases that
# each fit one device call (10 minutes). Run each through dev/device.sh after the build
# (GIT_COMMIT=<sha> GIT_DIRTY=0 dev/device.sh make -j16 CUDA_ARCH=90 all) with CIFAR-10 in
# $DATA_DIR (default /tmp/cifar10). Each step is time-limited, logs to <step>.log in
# /tmp/gpu_check/PHASE and prints its exit status and last lines; a failing step does not
# stop the next. At the end OUT/PHASE.tgz holds that folder's logs and run files (the device
# tool brings back 8 files at most, so they travel as one).
#
#   tests     build/gpu_test_kernels (full and --small) and build/gpu_test_trainer, while
#             dev/gpu_sanitize.sh (compute-sanitizer's four tools over gpu_test_kernels
#             --small and a short airbench94 run) goes on in the background; waits for it
#             until 9 minutes after the phase began. The trainer run takes cuDNN's heuristic
#             algorithms (--conv-algo heuristic): under the sanitizer the default's timing
#             of every candidate had not finished after 150 s on an H100
#   sanitize  waits up to 9 more minutes for that run (it outlives the call: setsid); call
#             it again while it says the run goes on
#   variants  build/kernel_bench (every kernel checked and timed at airbench94's shapes),
#             ./bench.sh 96 -n 10, then airbench94 at batch 512 to 8192 with 10 runs each,
#             and build/benchstat --table over the sweep; refuses while the sanitizers run,
#             which would disturb the timings
#   profile   ncu's per-kernel GPU time over 1,000 kernel launches of airbench94's training
#             (after the warm-up run's), to see where a step's time goes; refuses while the
#             sanitizers run
set -u
phase=${1:?usage: dev/gpu_check.sh tests|sanitize|variants|profile OUT}
out=${2:?usage: dev/gpu_check.sh tests|sanitize|variants|profile OUT}
data=${DATA_DIR:-/tmp/cifar10}
logs=/tmp/gpu_check/$phase
sanitize_dir=/tmp/gpu_check/background  # the background sanitizer run outlives the call
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

sanitize_running() { [ -f "$sanitize_dir/pid" ] && [ ! -f "$sanitize_dir/rc" ]; }

# Timing phases refuse to run beside the sanitizers, which would disturb the timings.
refuse_while_sanitizing() {
    if sanitize_running; then
        echo "dev/gpu_check.sh: the sanitizers still run; wait for them (sanitize phase) first" >&2
        exit 2
    fi
}

start_sanitize() {
    rm -rf "$sanitize_dir" && mkdir -p "$sanitize_dir"
    setsid sh -c "echo \$\$ > $sanitize_dir/pid; DATA_DIR='$data' dev/gpu_sanitize.sh $sanitize_dir/logs \
        > $sanitize_dir/sanitize.log 2>&1; echo \$? > $sanitize_dir/rc" < /dev/null > /dev/null 2>&1 &
    sleep 1
    echo "== dev/gpu_sanitize.sh started in the background: $sanitize_dir/sanitize.log"
}

# wait_sanitize UNTIL: waits for the background sanitizer run until the epoch second UNTIL.
wait_sanitize() {
    while sanitize_running && [ "$(date +%s)" -lt "$1" ]; do sleep 5; done
    cp "$sanitize_dir/sanitize.log" "$logs/sanitize.log" 2>/dev/null
    cp -r "$sanitize_dir/logs" "$logs/sanitize" 2>/dev/null
    if [ ! -f "$sanitize_dir/pid" ]; then
        echo "== sanitize: none was started on this machine; the tests phase starts it"
    elif [ -f "$sanitize_dir/rc" ]; then
        echo "== sanitize: exit $(cat "$sanitize_dir/rc") (0 = all clean, 1 = reports or failures)"
        tail -n 12 "$logs/sanitize.log"
    else
        echo "== sanitize: still running; run the sanitize phase next"
        grep -E "^== |^   " "$logs/sanitize.log" | tail -n 12
    fi
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
        start_sanitize
        step kernels 120 build/gpu_test_kernels
        step kernels-small 60 build/gpu_test_kernels --small
        step trainer 180 build/gpu_test_trainer
        wait_sanitize $(( started + 540 ))
        ;;
    sanitize)
        wait_sanitize $(( started + 540 ))
        ;;
    variants)
        refuse_while_sanitizing
        step kernel-bench 180 build/kernel_bench
        step airbench96 300 ./bench.sh 96 -n 10 --data "$data" --out "$logs/airbench96.json"
        batch_sweep
        ;;
    profile)
        refuse_while_sanitizing
        step profile 540 ncu --clock-control none --metrics gpu__time_duration.sum \
            --launch-skip 6000 --launch-count 1000 --print-summary per-kernel \
            build/airbench94 --data "$data" --runs 1 --quiet
        ;;
    *)
        echo "dev/gpu_check.sh: unknown phase $phase (tests, sanitize, variants or profile)" >&2
        exit 2
        ;;
esac
tar czf "$out/$phase.tgz" -C "$logs" .
echo "== $phase done after $(( $(date +%s) - started )) s; logs in $out/$phase.tgz"
