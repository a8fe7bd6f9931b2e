#!/usr/bin/env bash
# test_bench.sh: bench.sh without a GPU. Its argument errors, its quick no-GPU exit (with a
# failing nvidia-smi stub, one that lists no GPU, and none at all), and its whole path with
# fakes: bench.sh is copied into a sandbox "repository" whose build/airbench94 is a fake
# trainer and whose make and nvidia-smi are stubs, so nothing real is built or trained.
# The PATH it runs under holds every system tool except nvidia-smi, make and gnuplot, plus
# the stubs each case names. Ends with "RESULT <passed> <failed>"; exits 1 on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=$ROOT/tests/fixtures/runs
passed=0 failed=0
sandbox=$(mktemp -d)
trap 'rm -rf "$sandbox"' EXIT

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$*"
}

# $sandbox/system: symlinks to the system's tools, minus the ones the cases control.
make_system_bin() {
    local dir
    mkdir -p "$sandbox/system"
    for dir in /usr/local/bin /usr/bin /bin; do
        [[ -d $dir ]] && ln -s "$dir"/* "$sandbox/system/" 2>/dev/null
    done
    rm -f "$sandbox/system/nvidia-smi" "$sandbox/system/make" "$sandbox/system/gnuplot"
}

# Stub directories: each holds what one kind of case puts in front of the system tools.
# Every stub appends its name and arguments to $sandbox/calls.
write_stub() {  # write_stub DIR NAME BODY
    mkdir -p "$1"
    printf '#!/usr/bin/env bash\necho "%s $*" >> "%s/calls"\n%s\n' "$2" "$sandbox" "$3" >"$1/$2"
    chmod +x "$1/$2"
}

make_stubs() {
    write_stub "$sandbox/nogpu" make 'exit 0'
    cp -r "$sandbox/nogpu" "$sandbox/smi_fails"
    write_stub "$sandbox/smi_fails" nvidia-smi \
        "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9"
    cp -r "$sandbox/nogpu" "$sandbox/smi_empty"
    write_stub "$sandbox/smi_empty" nvidia-smi 'echo "No devices were found"; exit 0'
    write_stub "$sandbox/gpu" make 'exit ${FAKE_MAKE_STATUS:-0}'
    write_stub "$sandbox/gpu" nvidia-smi '
if [[ "$*" == *--query-gpu* ]]; then
    echo "NVIDIA H100 80GB HBM3, 580.159.04, 1980, 2619, 1980, 2619, 1755, 2619, 700.00, Enabled, 34"
else
    echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
fi'
}

# A sandbox repository: bench.sh, the real build/benchstat, a fake trainer, fake data and a
# data/get_cifar10.sh stub.
make_fake_repo() {
    local repo=$sandbox/repo
    mkdir -p "$repo/build" "$repo/data/cifar10" "$repo/runs"
    cp "$ROOT/bench.sh" "$repo/"
    cp "$ROOT/build/benchstat" "$repo/build/" 2>/dev/null
    touch "$repo"/data/cifar10/{data_batch_{1..5},test_batch}.bin
    write_stub "$repo/data" get_cifar10.sh 'mkdir -p "$1" && touch "$1"/{data_batch_{1..5},test_batch}.bin'
    write_stub "$repo/build" airbench94 '
printf "%s\n" "$@" > "'"$sandbox"'/trainer_args"
[[ -n ${FAKE_TRAINER_FAIL:-} ]] && exit "$FAKE_TRAINER_FAIL"
while (($#)); do
    case $1 in --runs) runs=$2 ;; --seed) seed=$2 ;; --json) json=$2 ;; esac
    shift
done
accuracies=(0.9412 0.9398 0.9405 0.9391 0.9420)
{
    printf "{\"schema\": \"airbench.c/run-v1\", \"variant\": \"airbench94\", "
    printf "\"target_accuracy\": 0.94, \"gpu\": {\"name\": \"NVIDIA H100 80GB HBM3\"}, \"runs\": ["
    for ((i = 0; i < runs; i++)); do
        ((i)) && printf ", "
        printf "{\"seed\": %d, \"accuracy\": %s, \"time_s\": 2.9%d}" $((seed + i)) ${accuracies[i % 5]} $i
    done
    printf "]}\n"
} > "$json"'
}

# run_bench STUBS ARGS...: runs bench.sh (the real one, or the sandbox copy for STUBS=gpu)
# with PATH = the stub dir + the system tools; sets out, status and seconds.
run_bench() {
    local stubs=$1 bench=$ROOT/bench.sh
    shift
    [[ $stubs == gpu* ]] && bench=$sandbox/repo/bench.sh
    rm -f "$sandbox/calls"
    local start=$SECONDS
    out=$(cd "$sandbox" && PATH="$sandbox/$stubs:$sandbox/system" timeout 30 "$bench" "$@" 2>&1)
    status=$?
    seconds=$((SECONDS - start))
}

# expect NAME STATUS TEXT: the last run_bench exited with STATUS and printed TEXT.
expect() {
    if [[ $status -eq $2 && $out == *"$3"* ]]; then
        pass
    else
        fail "$1: exit $status (want $2), output should contain '$3':"$'\n'"$out"
    fi
}

# Nothing at all ran (no stub logged a call).
expect_no_calls() {
    if [[ -e $sandbox/calls ]]; then
        fail "$1: should have run nothing, but ran: $(cat "$sandbox/calls")"
    else
        pass
    fi
}

# Nothing was built or trained (only nvidia-smi may have been asked).
expect_nothing_built() {
    if grep -v '^nvidia-smi ' "$sandbox/calls" 2>/dev/null; then
        fail "$1: should have built and run nothing, but ran the above"
    else
        pass
    fi
}

test_argument_errors() {
    local case_args
    local -a cases=(
        "--frobnicate|unknown option: --frobnicate"
        "97|unknown variant '97'"
        "94 95|unexpected argument: 95"
        "-n 0|-n takes a whole number of runs"
        "-n abc|-n takes a whole number of runs"
        "-n 1|at least 2"
        "-n|-n needs a value"
        "--seed|--seed needs a value"
        "--seed -3|--seed needs a value"
        "--seed x|--seed takes a whole number"
        "--data|--data needs a value"
        "--time-tolerance 3%|--time-tolerance takes a percentage"
        "--baseline $sandbox/none.json|baseline run file not found"
        "--out $FIXTURES/a94.json|never overwrites"
        "--out $sandbox/missing/dir/x.json|does not exist"
        "-n 5 --check --out|--out needs a value"
    )
    for case_args in "${cases[@]}"; do
        local args=${case_args%%|*} want=${case_args#*|}
        # shellcheck disable=SC2086 # the arguments are meant to split on spaces
        run_bench smi_fails $args
        expect "bench.sh $args" 2 "$want"
        expect "bench.sh $args prints usage" 2 "usage: ./bench.sh"
        expect_no_calls "bench.sh $args"
    done
    run_bench smi_fails --help
    expect "--help" 0 "usage: ./bench.sh"
}

test_no_gpu() {
    local stubs
    for stubs in smi_fails smi_empty nogpu; do
        run_bench "$stubs" 94 -n 5
        expect "no GPU ($stubs)" 2 "no NVIDIA GPU found (nvidia-smi"
        expect "no GPU ($stubs) hint" 2 "run \`make test\` for the CPU checks"
        expect_nothing_built "no GPU ($stubs)"
        ((seconds <= 5)) && pass || fail "no GPU ($stubs) took ${seconds}s"
    done
    run_bench nogpu 94 --plot
    expect "--plot without gnuplot" 2 "--plot needs gnuplot"
    expect_no_calls "--plot without gnuplot"
}

runs_in_sandbox() { ls "$sandbox/repo/runs"; }

test_full_path() {
    CUDA_HOME=/opt/fake-cuda CUDNN_HOME="" CJSON_HOME=/opt/fake-cjson \
        run_bench gpu 94 -n 3 --seed 5 -- --trainer-flag x
    expect "fake run" 0 "airbench94, 3 runs on NVIDIA H100 80GB HBM3"
    local saved
    saved=$(runs_in_sandbox)
    [[ $saved =~ ^[0-9]{8}-[0-9]{6}-h100-airbench94-nocommit\.json$ ]] && pass ||
        fail "run file name: '$saved'"
    local args
    args=$(tr '\n' ' ' <"$sandbox/trainer_args")
    local want
    for want in "--runs 3 --seed 5 --data $sandbox/repo/data/cifar10 --json $sandbox/repo/runs/" \
        "--env gpu_name=NVIDIA H100 80GB HBM3 " "--env gpu_driver=580.159.04 " \
        "--env gpu_sm_clock_mhz=1980 " "--env gpu_max_mem_clock_mhz=2619 " \
        "--env gpu_persistence_mode=Enabled " "--env git_dirty_at_run=unknown " \
        "--env hostname=" "--env bench_command=" "--trainer-flag x "; do
        [[ $args == *"$want"* ]] && pass || fail "trainer arguments lack '$want': $args"
    done
    local make_call="make -C $sandbox/repo CUDA_HOME=/opt/fake-cuda CJSON_HOME=/opt/fake-cjson"
    [[ $(cat "$sandbox/calls") == *"$make_call build/airbench94 build/benchstat"* ]] &&
        pass || fail "make not called as expected: $(cat "$sandbox/calls")"

    # A taken name gets a suffix: occupy the names of the next few seconds.
    local now k
    now=$(date -u +%s)
    for k in 0 1 2 3 4 5; do
        touch "$sandbox/repo/runs/$(date -u -d "@$((now + k))" +%Y%m%d-%H%M%S)-h100-airbench94-nocommit.json"
    done
    run_bench gpu 94 -n 3
    expect "suffix run" 0 "-h100-airbench94-nocommit-2.json"
    [[ $(runs_in_sandbox) != *.tmp* ]] && pass || fail "temporary file left: $(runs_in_sandbox)"
    rm -f "$sandbox"/repo/runs/*

    run_bench gpu 94 -n 3 --out "$sandbox/mine.json"
    expect "--out" 0 "saved $sandbox/mine.json"
    [[ -s $sandbox/mine.json ]] && pass || fail "--out file missing"
    run_bench gpu 94 -n 3 --out "$sandbox/mine.json"
    expect "--out exists" 2 "never overwrites"

    run_bench gpu 94 -n 3 --check --baseline "$FIXTURES/b94.json"
    expect "--check vs slower baseline" 0 "check ok:   A/B time"
    run_bench gpu 94 -n 3 --check --baseline "$FIXTURES/muon.json"
    expect "--check vs faster baseline" 1 "check FAIL: A is slower than the baseline"
    run_bench gpu 94 -n 3 --check --time-tolerance 30 --baseline "$FIXTURES/muon.json"
    expect "--check --time-tolerance 30" 0 "within the +30% tolerance"
    rm -f "$sandbox"/repo/runs/*

    FAKE_TRAINER_FAIL=1 run_bench gpu 94 -n 3
    expect "trainer fails" 1 "the trainer failed (exit 1); no run file was saved"
    [[ -z $(runs_in_sandbox) ]] && pass || fail "files left after a failed run: $(runs_in_sandbox)"
    FAKE_MAKE_STATUS=2 run_bench gpu 94 -n 3
    expect "build fails" 2 "building build/airbench94 and build/benchstat failed"

    run_bench gpu 94 -n 3 --data "$sandbox/fresh_data"
    expect "data fetched" 0 "fetching it"
    [[ $(cat "$sandbox/calls") == *"get_cifar10.sh $sandbox/fresh_data"* ]] && pass ||
        fail "get_cifar10.sh not called: $(cat "$sandbox/calls")"
}

test_plot() {
    local gnuplot
    if ! gnuplot=$(command -v gnuplot); then
        echo "skip: --plot (gnuplot is not installed)"
        return
    fi
    mkdir -p "$sandbox/gpu_plot"
    cp "$sandbox"/gpu/* "$sandbox/gpu_plot/"
    ln -s "$gnuplot" "$sandbox/gpu_plot/gnuplot"
    run_bench gpu_plot 94 -n 5 --out "$sandbox/plotted.json" --plot
    expect "--plot" 0 "plotted $sandbox/plotted.png"
    [[ $(head -c 4 "$sandbox/plotted.png" 2>/dev/null | od -An -c | tr -d ' ') == 211PNG ]] &&
        pass || fail "--plot wrote no PNG"
}

make_system_bin
make_stubs
test_argument_errors
test_no_gpu
if [[ -x $ROOT/build/benchstat ]]; then
    make_fake_repo
    test_full_path
    test_plot
else
    fail "build/benchstat is missing: run \`make build/benchstat\` first"
fi
echo "test_bench: $passed passed, $failed failed"
echo "RESULT $passed $failed"
((failed == 0))
