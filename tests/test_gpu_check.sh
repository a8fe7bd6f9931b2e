#!/usr/bin/env bash
# test_gpu_check.sh: dev/gpu_check.sh's phases without a GPU, so that a lent machine's few
# minutes are never lost to a broken script. The lease phase in detail below; every other
# phase but peer at the end (test_other_phases); then every command line the phases and the
# tests phase's scripts (gpu_test_repro.sh, gpu_sanitize.sh) gave a trainer or GPU program,
# replayed against the real one in build/ where CUDA is installed
# (test_real_programs_take_the_flags). In bench.sh's sandbox (tests/bench_sandbox.sh:
# make and nvidia-smi stubs, build/fake_trainer as every trainer, the real benchstat) with a
# baseline tree as dev/stage_rev.sh writes it and stubs for the GPU test, the kernel bench
# and the profiler: the whole phase runs, each side of each comparison comes from the right
# tree and build, the run files travel in OUT/lease.tgz, the verdict table lists every
# comparison; and a phase that reaches its deadline cuts the running step short and skips
# the rest. Ends with "RESULT <passed> <failed>"; exits 1 on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sandbox=$(mktemp -d)
trap 'rm -rf "$sandbox"' EXIT
# shellcheck source=tests/bench_sandbox.sh
source "$ROOT/tests/bench_sandbox.sh"
# shellcheck source=tests/check.sh
source "$ROOT/tests/check.sh"

export FAKE_TRAINER=$ROOT/build/fake_trainer FAKE_TRAINER_LOG=$sandbox/calls BENCHSTAT=$ROOT/build/benchstat
export FAKE_TRAINER_ARGV_DIR=$sandbox/argv
mkdir -p "$FAKE_TRAINER_ARGV_DIR"
export TMPDIR=$sandbox/tmp GPU_CHECK_DIR=$sandbox/gpu_check
mkdir -p "$TMPDIR"
repo=$sandbox/repo
tree_commit=1111111111111111111111111111111111111111
baseline_commit=790450ee0ca8b867a60b219e14308a391cb616bc

# write_program_stub NAME BODY: a stub of build/NAME that also saves its command line, as
# the fake trainer does, for test_real_programs_take_the_flags.
write_program_stub() {
    # shellcheck disable=SC2016 # expands when the stub runs
    write_stub "$repo/build" "$1" 'printf "%s\n" "$0" "$@" > "$FAKE_TRAINER_ARGV_DIR/$$.argv"
'"$2"
}

# The sandbox repository: bench.sh and gpu_check.sh, fake data, the baseline tree, and
# stubs for what `make all` would build and for dev/profile.sh.
make_lease_repo() {
    make_fake_repo "$repo"
    mkdir -p "$repo/dev" "$repo/.rev/790450e"
    cp "$ROOT/dev/gpu_check.sh" "$repo/dev/"
    touch "$repo/.rev/790450e/Makefile"
    mkdir -p "$repo/.rev/790450e/build" && touch "$repo/.rev/790450e/build/carried"  # from another machine
    echo "$baseline_commit" >"$repo/.rev/790450e/.git-commit"
    write_program_stub gpu_test_kernels 'echo "gpu_test_kernels: 223 passed, 0 failed"'
    write_program_stub kernel_bench 'echo "kernel_bench: every kernel checked"'
    # fusion_bench: a table, and the device properties where --save-device-json says
    write_program_stub fusion_bench 'while [ $# -gt 0 ]; do [ "$1" = --save-device-json ] && echo "{}" > "$2"; shift; done
        echo "2.1 3x3x256>256 fprop engine 62"'
    write_stub "$repo/dev" profile.sh 'echo "| kernel | launches/step | us/step | share |"'
}

# run_phase PHASE [ENV...]: a phase in the sandbox; sets out, status and seconds.
run_phase() {
    local phase=$1 start=$SECONDS
    shift
    rm -rf "$sandbox/calls" "$sandbox/out" "${GPU_CHECK_DIR:?}/$phase"  # not background/: the sanitizer run
    out=$(cd "$repo" && env PATH="$sandbox/gpu:$sandbox/system" DATA_DIR="$repo/data/cifar10" \
        GIT_COMMIT=$tree_commit GIT_DIRTY=0 "$@" timeout 120 dev/gpu_check.sh "$phase" "$sandbox/out" 2>&1)
    status=$?
    seconds=$((SECONDS - start))
}

run_lease() { run_phase lease "$@"; }

in_tgz() { tar -tzf "$sandbox/out/lease.tgz" 2>/dev/null | grep -x "./$1" >/dev/null; }
calls_matching() { grep -c -- "$1" "$sandbox/calls"; }
calls_contain() { grep -F -- "$1" "$sandbox/calls" >/dev/null; }

test_whole_lease() {
    run_lease
    check "the lease phase exits 0" [ "$status" = 0 ] || echo "$out"
    local file
    for file in 94-A.json 94-B.json 94-muon-A.json 94-muon-B.json airbench94-stats1024.json \
        airbench94-graphs.json airbench94-wgrad-stream.json airbench94-fused-bn.json airbench94-conv-graph.json \
        airbench94-muon-streams.json airbench94-record.json build.log kernels.log profile.log kernel-bench.log \
        startup-fresh-cache.json startup-filled-cache.json device-props.json fusion-bench.log; do
        check "lease.tgz holds $file" in_tgz "$file"
    done
    check "the profile's table comes back on its own" [ -s "$sandbox/out/profile-airbench94.txt" ]
    local comparison
    for comparison in against-94 against-94-muon airbench94-stats1024-vs-baseline \
        airbench94-graphs-vs-baseline airbench94-wgrad-stream-vs-baseline airbench94-fused-bn-vs-baseline \
        airbench94-conv-graph-vs-baseline airbench94-muon-streams-vs-baseline airbench94-record-vs-baseline; do
        [[ $out =~ $comparison\ +(faster|slower|no\ detectable|time\ unchanged)[^$'\n']* ]] && pass ||
            fail "the verdict table has no verdict for $comparison:"$'\n'"$out"
    done
    [[ $(calls_matching "^make -j16 CUDA_ARCH=90 gpu build/benchstat$") == 1 ]] && pass || fail "the tree is not built once: $(cat "$sandbox/calls")"
    [[ $(calls_matching "^make -C $repo/.rev/790450e .*CUDA_ARCH=90 build/airbench94$") == 1 &&
        $(calls_matching "^make -C $repo/.rev/790450e .*CUDA_ARCH=90 build/airbench94-muon$") == 1 ]] && pass ||
        fail "the baseline is not built for sm_90 once per variant: $(grep '^make' "$sandbox/calls")"
    calls_contain "build env GIT_COMMIT=$baseline_commit GIT_DIRTY=0" && pass ||
        fail "the baseline is not built with its commit"
    [[ $(calls_matching "^trainer .*$repo/.rev/790450e/build/airbench94 ") == 5 &&
        $(calls_matching "^trainer .*$repo/build/airbench94 .*bench_side=A") == 5 ]] && pass ||
        fail "airbench94's 25 runs are not 5 chunks on each side: $(grep '^trainer' "$sandbox/calls")"
    calls_contain "--stats-blocks 1024" && calls_contain "--graphs on" && calls_contain "--wgrad-stream on" &&
        calls_contain "--fused-bn on" && calls_contain "--conv-graph on" && pass ||
        fail "the stats-blocks, graphs, wgrad-stream, fused-bn and conv-graph runs do not get their flags"
    grep -q "^trainer .*build/airbench94-muon .*--muon-streams on" "$sandbox/calls" && pass ||
        fail "94-muon is not run with --muon-streams on"
    grep -q "^trainer .*build/airbench94-record .*--runs 15" "$sandbox/calls" && pass || fail "94-record is not run"
    calls_contain "fusion_bench --only fprop+genstats,dgrad+bn-reduce" && pass ||
        fail "the fusion bench does not run the two fusions: $(grep '^fusion_bench' "$sandbox/calls")"
    local side
    side=$(tar -xzOf "$sandbox/out/lease.tgz" ./94-B.json | grep '"bench_side"')
    [[ $side == *"B: .rev/790450e ($baseline_commit)"* ]] && pass ||
        fail "94-B.json does not name the baseline tree and its commit: $side"
    check "no run file is left in runs/" [ -z "$(ls "$repo/runs")" ]
    check "the baseline's carried build is not used" [ ! -e "$repo/.rev/790450e/build/carried" ]
    printf '%s\n' "$out" | sed -n '/^== verdicts/,$p'  # what a lease's reply ends with
}

# A deadline inside the first comparison: it is cut short (its completed runs saved all the
# same), every later step is skipped, and the phase still packs its logs and exits 0.
test_deadline() {
    run_lease PHASE_SECONDS=20 FAKE_TRAINER_RUN_MS=500
    check "the lease phase exits 0 at its deadline" [ "$status" = 0 ] || echo "$out"
    check "the phase ends near its deadline (took $seconds s)" [ "$seconds" -lt 40 ]
    [[ $out == *"== against-94-muon: skipped (the phase's deadline has passed)"* &&
        $out == *"== startup-filled-cache: skipped"* ]] && pass ||
        fail "the steps after the deadline are not skipped:"$'\n'"$out"
    [[ $out =~ exit\ 1(24|43)\ after ]] && pass || fail "the step running at the deadline is not cut short:"$'\n'"$out"
    check "lease.tgz is written after the deadline" in_tgz against-94.log
}

# Every other phase but peer (which needs PyTorch; tests/test_run_peer.sh covers its
# script), after the build that dev/gpu_check.sh's header asks for: each exits 0, every step
# in it exits 0, and its logs travel in OUT/PHASE.tgz. The tests phase runs stubs of the GPU
# tests and of the background sanitizer run, and waits for it.
test_other_phases() {
    local phase
    mkdir -p "$repo/build" "$repo/tests"
    cp "$FAKE_TRAINER" "$repo/build/airbench94" && cp "$BENCHSTAT" "$repo/build/benchstat"
    write_program_stub gpu_test_trainer 'echo "gpu_test_trainer: 52 passed, 0 failed"'
    write_stub "$repo/tests" gpu_test_repro.sh 'echo "gpu_test_repro: 9 passed, 0 failed"'
    # shellcheck disable=SC2016 # expands when the stub runs
    write_stub "$repo/dev" gpu_sanitize.sh 'mkdir -p "$1" && echo "memcheck: 0 errors" > "$1/memcheck.log"'
    for phase in speed graphs record filter sweep kernels variants fusion profile tests; do
        run_phase "$phase"
        check "the $phase phase exits 0" [ "$status" = 0 ] || echo "$out"
        [[ $out == *"   exit 0 after"* && $out != *"   exit "[1-9]* ]] && pass ||
            fail "the $phase phase: a step failed, or none ran:"$'\n'"$out"
        check "$phase.tgz holds the $phase phase's logs" [ -s "$sandbox/out/$phase.tgz" ]
        [[ $phase != sweep ]] || check "the sweep's warm-up starts at 1024 / batch" \
            calls_contain "--set warmup_start=0.25"
    done
    # $out is the last phase's, the tests phase's
    [[ $out == *"== sanitize: exit 0"* ]] && pass || fail "the tests phase does not wait for the sanitizers:"$'\n'"$out"
    run_phase sanitize
    [[ $status == 0 && $out == *"== sanitize: exit 0"* ]] && pass ||
        fail "the sanitize phase does not report the finished run:"$'\n'"$out"
}

# On gVisor (a uname stub saying kernel 4.4.0) the tests phase starts no sanitizers and the
# profile phase runs no ncu, each saying why; both still exit 0 with their logs.
test_gvisor() {
    # shellcheck disable=SC2016 # expands when the stub runs
    write_stub "$sandbox/gvisor" uname '[[ $1 == -r ]] && echo 4.4.0 || echo Linux'
    local phase
    for phase in tests profile; do
        run_phase "$phase" PATH="$sandbox/gvisor:$sandbox/gpu:$sandbox/system"
        check "the $phase phase on gVisor exits 0" [ "$status" = 0 ] || echo "$out"
        check "$phase.tgz is written on gVisor" [ -s "$sandbox/out/$phase.tgz" ]
        case $phase in
            tests) [[ $out == *"== sanitize: skipped (kernel 4.4.0: gVisor"* && $out != *"gpu_sanitize.sh started"* &&
                $out == *"== repro: "* ]] ;;
            profile) [[ $out == *"== profile: skipped (kernel 4.4.0"* && $out != *"== profile: dev/profile.sh"* ]] ;;
        esac && pass || fail "the $phase phase on gVisor runs a profiler anyway, or nothing else:"$'\n'"$out"
    done
}

# The tests phase's two scripts, which test_other_phases stubs, on fakes for their command
# lines: gpu_test_repro.sh over fake trainers (its checks of the algorithm cache fail, as the
# fakes keep none; only what it runs matters here), and gpu_sanitize.sh through a
# compute-sanitizer stub that runs the program it is given.
run_test_scripts_on_fakes() {
    local fake
    for fake in airbench94-record airbench96-filter; do cp "$FAKE_TRAINER" "$repo/build/$fake"; done
    (cd "$repo" && TRAINERS="build/airbench94 build/airbench94-record build/airbench96-filter" \
        DATA_DIR=data/cifar10 "$ROOT/tests/gpu_test_repro.sh") >"$sandbox/repro.log" 2>&1
    CHECK_OUT=$sandbox/repro.log check "gpu_test_repro.sh ran its ninth process" \
        grep -q "airbench94-record with --muon-streams on and graphs against the run without: .* bit-identical" \
        "$sandbox/repro.log"
    # shellcheck disable=SC2016 # expands when the stub runs
    write_stub "$sandbox/bin" compute-sanitizer 'while [[ $# -gt 0 && $1 != build/* ]]; do shift; done
"$@"
echo "========= ERROR SUMMARY: 0 errors"'
    (cd "$repo" && COMPUTE_SANITIZER=$sandbox/bin/compute-sanitizer DATA_DIR=data/cifar10 \
        "$ROOT/dev/gpu_sanitize.sh" "$sandbox/sanitize") >"$sandbox/sanitize.log" 2>&1
    CHECK_OUT=$sandbox/sanitize.log check "gpu_sanitize.sh runs its programs through the stub" \
        grep -q "all clean" "$sandbox/sanitize.log"
}

# Every command line the phases gave this tree's trainers and GPU programs (the baseline
# tree's are its own), replayed against the real programs in build/ on this machine without
# a GPU: each must get as far as looking for the GPU ("no CUDA GPU"), so that no flag or
# combination a phase passes is refused on the lent machine. Command lines that differ only
# in paths, seeds, run counts and --env values are replayed once.
test_real_programs_take_the_flags() {
    if nvidia-smi -L >/dev/null 2>&1; then
        echo "test_gpu_check: this machine has a GPU; the real programs are not replayed"
        return
    fi
    if [[ ! -x $ROOT/build/airbench94 ]]; then
        echo "test_gpu_check: the GPU programs are not built (no CUDA here); the phases' command lines are not replayed"
        return
    fi
    local file args name i key reply replayed=0
    local -A seen=()
    for file in "$FAKE_TRAINER_ARGV_DIR"/*.argv; do
        mapfile -t args <"$file"
        [[ ${args[0]} == */.rev/* ]] && continue
        name=${args[0]##*/} key=${args[0]##*/}
        for ((i = 1; i < ${#args[@]}; i++)); do
            case ${args[i - 1]} in
                --json | --seed | --runs | --env | --data | --conv-cache | --save-device-json) key+=" _" ;;
                *) key+=" ${args[i]}" ;;
            esac
        done
        [[ -n ${seen[$key]:-} ]] && continue
        seen[$key]=1
        for ((i = 1; i < ${#args[@]}; i++)); do  # the run file's folder is gone by now
            [[ ${args[i - 1]} != --json ]] || args[i]=$sandbox/replay.json
        done
        replayed=$((replayed + 1))
        check "build/$name is built (make test builds it where CUDA is installed)" [ -x "$ROOT/build/$name" ] ||
            continue
        reply=$(cd "$sandbox" && timeout 60 "$ROOT/build/$name" "${args[@]:1}" 2>&1 </dev/null)
        [[ $reply == *"no CUDA GPU"* ]] && pass || fail "build/$key: refused before looking for a GPU: $reply"
    done
    echo "test_gpu_check: replayed $replayed of the phases' command lines against the real programs"
    check "the phases' command lines were replayed" [ "$replayed" -gt 10 ]
}

make_system_bin
make_gpu_stubs
if [[ -x $ROOT/build/benchstat && -x $ROOT/build/fake_trainer ]]; then
    make_lease_repo
    test_whole_lease
    test_deadline
    test_other_phases
    test_gvisor
    run_test_scripts_on_fakes
    test_real_programs_take_the_flags
else
    fail "build/benchstat or build/fake_trainer is missing: run \`make cpu\` first"
fi
finish test_gpu_check
