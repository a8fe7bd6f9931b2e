#!/bin/sh
# dev/gpu_check.sh PHASE OUT: the GPU checks of a session on the lent machine, in phases that
# each fit one device call (10 minutes), with CIFAR-10 in $DATA_DIR (default /tmp/cifar10).
# Run each through dev/device.sh after the build (the lease phase builds itself):
#   GIT_COMMIT=<sha> GIT_DIRTY=0 dev/device.sh make -j16 CUDA_ARCH=90 gpu build/benchstat
# (the GPU programs and benchstat; not `all`, whose CPU side also builds the sanitizer
# fuzzers and the kernels on the CPU, which the machine does not need and may lack tools
# for). Each step is time-limited, logs to <step>.log in /tmp/gpu_check/PHASE
# (GPU_CHECK_DIR replaces /tmp/gpu_check) and prints its exit status and last lines; a
# failing step does not stop the next. At the end OUT/PHASE.tgz holds that folder's logs and
# run files (the device tool brings back 8 files at most, so they travel as one).
#
# Every phase has a deadline, PHASE_SECONDS (default 560) after its start, so that it ends
# and packs its logs inside the call's 10 minutes: the step running then is cut short, and
# later steps are skipped. The phases that compare with the baseline commit 790450e build it
# from BASELINE_TREE (default .rev/790450e: dev/stage_rev.sh 790450e, then carry .rev) with
# ./bench.sh --against, so both sides run on the lease's GPU, whatever kind it is.
#
#   lease     a 15-minute lease's one main call (dev/README.md), made after the data is
#             staged; it builds (as above; GIT_COMMIT set) and runs, most important first:
#             gpu_test_kernels; ./bench.sh 94 and 94-muon -n 25 against the baseline tree;
#             airbench94 with --stats-blocks 1024, with --graphs on, with --wgrad-stream on,
#             with --fused-bn on and with --conv-graph on, 94-muon with --muon-streams on,
#             and 94-record, 15 runs each, each compared with the tree's own 94 or 94-muon
#             file; the kernel bench (each v2 of dev/*.cu beside its v1); the fusion bench
#             for fprop+genstats and dgrad+bn-reduce; the start-up; dev/profile.sh 94. A
#             verdict table ends the output. Early on it saves the GPU's properties
#             (device-props.json, for deviceless cuDNN plans here: dev/fusion/)
#   tests     build/gpu_test_kernels (full and --small), build/gpu_test_trainer and
#             tests/gpu_test_repro.sh, while dev/gpu_sanitize.sh (compute-sanitizer's four
#             tools over gpu_test_kernels --small and a short airbench94 run) goes on in the
#             background; waits for it until 9 minutes after the phase began. The trainer run
#             takes cuDNN's heuristic algorithms (--conv-algo heuristic): under the sanitizer
#             the default's timing of every candidate had not finished after 150 s on an H100
#   sanitize  waits up to 9 more minutes for that run (it outlives the call: setsid); call
#             it again while it says the run goes on
#   speed     the start-up of build/airbench94 --runs 1 (wall seconds, with a fresh and with
#             a filled algorithm cache), ./bench.sh 94 -n 50 and 94-muon -n 50, each against
#             the baseline tree (10 runs per chunk)
#   graphs    ./bench.sh 94 -n 50 and 94-muon -n 50, each without and with --graphs on (the
#             training steps as CUDA graphs), each pair compared
#   record    ./bench.sh 94-muon -n 50 and 94-record -n 50 in one session, compared
#   filter    ./bench.sh 96 -n 10, 96-filter -n 10 and 96-filter -n 10 with the whitening
#             bias frozen after 3 epochs as the script intends (--set whiten_bias_epochs=3),
#             each filtered set compared with the unfiltered one
#   sweep     airbench94 at batch 2048, 4096 and 8192, 10 runs each, with Goyal et al.'s
#             recipe (linear scaling, 5 warm-up epochs from the small-batch rate, BN over
#             groups of 1024, no decay on BN biases), and benchstat --table over them
#   kernels   build/kernel_bench (every kernel checked and timed at airbench94's shapes),
#             then the per-channel reductions again with 1024 blocks (--stats-blocks 1024)
#             instead of the default 256: whether more threads per SM make them faster; then
#             ./bench.sh 94 -n 30 with 256 and with 1024 blocks, compared
#   variants  airbench94 at batch 512 to 8192 with 10 runs each (today's rule), and
#             build/benchstat --table over the sweep (the filter phase measures airbench96)
#   peer      the PyTorch record script as a peer: dev/run_peer.py .peer/cifar10_speedrun.py
#             --runs 25 (carry the script in .peer/, an ignored folder; torch.compile takes
#             minutes before the first run)
#   fusion    build/fusion_bench: every conv + BatchNorm fusion of dev/fusion/ at every conv
#             of airbench94, its plan, error, determinism and time against the unfused
#             launches (minutes: each runtime-fusion graph compiles for seconds); then every
#             engine config cuDNN's graph API offers for the filter gradients of the first
#             three convs (--all-engines: the first conv's took 7% of a step at 790450e) against
#             the trainer's legacy choice; airbench94 with --conv-graph always (every conv
#             direction on its fastest graph engine; its log times each against the legacy
#             call), 3 runs; then the two statistics fusions with atomic
#             reductions; and the GPU's properties in device-props.json
#   profile   dev/profile.sh 94: ncu's GPU time per kernel and training step over 1,500
#             launches of airbench94's training, to see where a step's time goes
# Every timing phase refuses to run while the sanitizers do. On a machine whose runtime is
# gVisor (its kernel reports 4.4.0) ncu cannot read the hardware counters and
# compute-sanitizer refuses the device (seen there on 2026-11-04; on Firecracker both
# worked): there the lease skips its profile step, the tests phase its sanitizers, and the
# profile phase does nothing, each with a line saying so (GPU_CHECK_PROFILERS=1 tries them
# all the same).
set -u
usage="usage: dev/gpu_check.sh lease|tests|sanitize|speed|graphs|kernels|record|filter|sweep|variants|peer|fusion|profile OUT"
phase=${1:?$usage}
out=${2:?$usage}
data=${DATA_DIR:-/tmp/cifar10}
top=${GPU_CHECK_DIR:-/tmp/gpu_check}  # tests/test_gpu_check.sh sets another
logs=$top/$phase
sanitize_dir=$top/background  # the background sanitizer run outlives the call
started=$(date +%s)
rm -rf "$logs" && mkdir -p "$logs" "$out" || exit 2

deadline=$(( started + ${PHASE_SECONDS:-560} ))  # steps are cut short at it, and skipped after it
baseline_tree=${BASELINE_TREE:-.rev/790450e}

# step NAME SECONDS CMD...: runs CMD with a time limit, logging to NAME.log in the logs folder.
step() {
    name=$1 limit=$2
    shift 2
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -lt 15 ]; then
        echo "== $name: skipped (the phase's deadline has passed)"
        echo "skipped: the phase's deadline had passed" > "$logs/$name.log"
        return 1
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name: $*"
    step_start=$(date +%s)
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
    step_status=$?
    echo "   exit $step_status after $(( $(date +%s) - step_start )) s"
    tail -n 12 "$logs/$name.log"
    return $step_status
}

# Whether ncu and compute-sanitizer can work on this machine (see the header).
profilers_work() {
    [ "${GPU_CHECK_PROFILERS:-}" = 1 ] && return 0
    case $(uname -r) in
        4.4.0*)
            echo "== $1: skipped (kernel $(uname -r): gVisor, where ncu and compute-sanitizer cannot work;" \
                "GPU_CHECK_PROFILERS=1 tries)"
            return 1
            ;;
    esac
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

# bench VARIANT RUNS NAME [TRAINER FLAGS...]: ./bench.sh into NAME.json in the logs folder.
bench() {
    variant=$1 runs=$2 name=$3
    shift 3
    step "$name" 300 ./bench.sh "$variant" -n "$runs" --data "$data" --out "$logs/$name.json" -- "$@"
}

# compare NAME BASELINE: benchstat NAME.json against a baseline run file.
compare() {
    step "$1-vs-baseline" 20 build/benchstat "$logs/$1.json" "$2"
    cat "$logs/$1-vs-baseline.log"
}

# against VARIANT RUNS [BENCH ARGS...]: ./bench.sh VARIANT --against the baseline tree,
# interleaved; moves the two run files (and a dirty tree's diff) from runs/ into the logs
# folder as VARIANT-A.json (this tree) and VARIANT-B.json (the baseline), keeping their
# names in a listing.
against() {
    variant=$1 runs=$2 name=against-$1
    shift 2
    touch "$logs/.mark" && sleep 1  # the run files bench.sh writes are newer
    step "$name" 500 ./bench.sh "$variant" -n "$runs" --data "$data" --against "$baseline_tree" "$@"
    find runs -maxdepth 1 -type f -newer "$logs/.mark" | while read -r file; do
        echo "${file#runs/}" >> "$logs/against-files.txt"
        case $file in
            *-A-tree.json) mv "$file" "$logs/$variant-A.json" ;;
            *-B-rev.json) mv "$file" "$logs/$variant-B.json" ;;
            *) mv "$file" "$logs/" ;;
        esac
    done
}

# verdicts: benchstat's verdict line of every comparison the phase made, as a table.
verdicts() {
    echo "== verdicts (A vs B; full reports in the logs)"
    for log in "$logs"/against-*.log "$logs"/*-vs-baseline.log; do
        [ -f "$log" ] || continue
        printf '%-38s %s\n' "$(basename "$log" .log)" "$(grep -m1 'verdict' "$log" | sed 's/^ *verdict *//')"
    done
}

require_baseline_tree() {
    if [ ! -f "$baseline_tree/.git-commit" ]; then
        echo "dev/gpu_check.sh: no baseline tree at $baseline_tree: run dev/stage_rev.sh 790450e here" \
            "and carry .rev" >&2
        exit 2
    fi
    export CUDA_ARCH=90  # bench.sh builds the baseline for this GPU alone, as the tree
    # A build carried from another machine would link that machine's libraries: build anew.
    rm -rf "$baseline_tree/build"
}

lease() {
    require_baseline_tree
    step build 240 make -j16 CUDA_ARCH=90 gpu build/benchstat || { echo "== no build: nothing else runs"; return; }
    step kernels 60 build/gpu_test_kernels
    # This GPU's properties, for deviceless plans on a machine without it (dev/fusion/)
    step device-props 60 build/fusion_bench --save-device-json "$logs/device-props.json" --only fprop \
        --conv 2.1 --reps 3
    against 94 25
    against 94-muon 25
    # 15 runs each: enough to see a time difference (the run-to-run spread of the time is
    # about 0.15% on an H100), not an accuracy difference of a tenth of a point
    bench 94 15 airbench94-stats1024 --stats-blocks 1024 && compare airbench94-stats1024 "$logs/94-A.json"
    bench 94 15 airbench94-graphs --graphs on && compare airbench94-graphs "$logs/94-A.json"
    bench 94 15 airbench94-wgrad-stream --wgrad-stream on && compare airbench94-wgrad-stream "$logs/94-A.json"
    bench 94 15 airbench94-fused-bn --fused-bn on && compare airbench94-fused-bn "$logs/94-A.json"
    # its log also holds each conv direction's legacy and graph-engine times
    bench 94 15 airbench94-conv-graph --conv-graph on && compare airbench94-conv-graph "$logs/94-A.json"
    bench 94-muon 15 airbench94-muon-streams --muon-streams on &&
        compare airbench94-muon-streams "$logs/94-muon-A.json"
    bench 94-record 15 airbench94-record && compare airbench94-record "$logs/94-muon-A.json"
    step kernel-bench 90 build/kernel_bench
    # the two fusions that would replace kernels (channel_stats; bn_gelu_backward_reduce)
    step fusion-bench 150 build/fusion_bench --only fprop+genstats,dgrad+bn-reduce --reps 10
    startup
    export PROFILE_RAW="$logs/ncu-airbench94.txt"
    profilers_work profile && step profile 120 dev/profile.sh 94 --data "$data" &&
        cp "$logs/profile.log" "$out/profile-airbench94.txt"
    verdicts
}

# The wall seconds of one airbench94 run from process start to run file, with the algorithm
# cache first empty, then filled by that run.
startup() {
    cache=$logs/conv_algos.txt
    for which in fresh-cache filled-cache; do
        begin=$(date +%s%N)
        step "startup-$which" 120 build/airbench94 --data "$data" --runs 1 --quiet --conv-cache "$cache" \
            --json "$logs/startup-$which.json"
        echo "   startup ($which): $(( ($(date +%s%N) - begin) / 1000000 )) ms from process start to run file"
    done
}

goyal_sweep() {
    for batch in 2048 4096 8192; do
        bench 94 10 "goyal-b$batch" --batch "$batch" --lr-scaling linear --warmup-epochs 5 \
            --set "warmup_start=$(awk "BEGIN { print 1024 / $batch }")" --bn-group 1024 --bn-wd 0
    done
    step goyal-table 10 build/benchstat --table "$logs"/goyal-b2048.json "$logs"/goyal-b4096.json \
        "$logs"/goyal-b8192.json
    cat "$logs/goyal-table.log"
}

{
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv
    echo "kernel $(uname -r)"
} > "$logs/gpu.txt" 2>&1
cat "$logs/gpu.txt"
case $phase in
    lease)
        refuse_while_sanitizing
        lease
        ;;
    tests)
        sanitizers=0
        profilers_work sanitize && start_sanitize && sanitizers=1
        step kernels 120 build/gpu_test_kernels
        step kernels-small 60 build/gpu_test_kernels --small
        step trainer 180 build/gpu_test_trainer
        step repro 240 tests/gpu_test_repro.sh
        [ "$sanitizers" = 0 ] || wait_sanitize $(( started + 540 ))
        ;;
    sanitize)
        wait_sanitize $(( started + 540 ))
        ;;
    speed)
        refuse_while_sanitizing
        require_baseline_tree
        startup
        against 94 50 --chunk 10
        against 94-muon 50 --chunk 10
        verdicts
        ;;
    graphs)
        refuse_while_sanitizing
        for variant in 94 94-muon; do
            bench "$variant" 50 "airbench$variant-eager"
            bench "$variant" 50 "airbench$variant-graphs" --graphs on
            compare "airbench$variant-graphs" "$logs/airbench$variant-eager.json"
        done
        ;;
    record)
        refuse_while_sanitizing
        bench 94-muon 50 airbench94-muon
        bench 94-record 50 airbench94-record
        compare airbench94-record "$logs/airbench94-muon.json"
        ;;
    filter)
        refuse_while_sanitizing
        bench 96 10 airbench96
        bench 96-filter 10 airbench96-filter
        compare airbench96-filter "$logs/airbench96.json"
        bench 96-filter 10 airbench96-filter-freeze --set whiten_bias_epochs=3
        compare airbench96-filter-freeze "$logs/airbench96.json"
        ;;
    sweep)
        refuse_while_sanitizing
        goyal_sweep
        ;;
    peer)
        refuse_while_sanitizing
        step peer 560 python3 dev/run_peer.py .peer/cifar10_speedrun.py --data "$data" --runs 25 --quiet \
            --out "$logs/pytorch-cifar10_speedrun.json"
        ;;
    kernels)
        refuse_while_sanitizing
        step kernel-bench 150 build/kernel_bench
        step stats-blocks-1024 60 build/kernel_bench --stats-blocks 1024 --kernel stats --kernel reduce \
            --kernel whiten_bias --kernel maxpool2 --kernel finalize
        bench 94 30 airbench94-stats256
        bench 94 30 airbench94-stats1024 --stats-blocks 1024
        compare airbench94-stats1024 "$logs/airbench94-stats256.json"
        ;;
    variants)
        refuse_while_sanitizing
        batch_sweep
        ;;
    fusion)
        refuse_while_sanitizing
        step fusion-bench 300 build/fusion_bench --save-device-json "$logs/device-props.json"
        # every wgrad engine where the 790450e profile saw small grids (conv 0.0: 155 TFLOP/s)
        step wgrad-engines 180 build/fusion_bench --only wgrad --all-engines --conv 0.0,0.1,1.0 --reps 10
        # the trainer's own choice: each conv direction's legacy time against its graph engines'
        step conv-graph-always 150 build/airbench94 --data "$data" --runs 3 --conv-algo find --conv-graph always \
            --json "$logs/airbench94-conv-graph-always.json"
        # the reductions with atomics: faster? (then the trainer's bit-reproducibility is the price)
        step fusion-bench-atomic 120 build/fusion_bench --atomic --only "dgrad+bn-reduce,fprop+reduce"
        ;;
    profile)
        refuse_while_sanitizing
        export PROFILE_RAW="$logs/ncu-airbench94.txt"
        profilers_work profile && step profile 540 dev/profile.sh 94 --data "$data" &&
            cp "$logs/profile.log" "$out/profile-airbench94.txt"
        ;;
    *)
        echo "dev/gpu_check.sh: unknown phase $phase; $usage" >&2
        exit 2
        ;;
esac
tar czf "$out/$phase.tgz" -C "$logs" .
echo "== $phase done after $(( $(date +%s) - started )) s; logs in $out/$phase.tgz"
