#!/usr/bin/env bash
# test_bench.sh: bench.sh without a GPU. Its argument errors (each caught before anything
# runs), its help, its quick no-GPU exit (with a failing nvidia-smi stub, one that lists no
# GPU, and none at all), and its whole path with fakes (tests/bench_sandbox.sh): a sandbox
# "repository" whose make stub "builds" build/fake_trainer, the C fake trainer on the real
# run-file writer, so nothing real is built or trained. The cases cover saving, naming,
# failing trainers, the diff of a dirty tree, --plot, and the tweak loop --against REV on a
# sandbox git repository (interleaving, chunks, seeds, merging, cleanup, failures) and
# --against DIR (a tree without .git, another checkout).
# The PATH bench.sh runs under holds every system tool except nvidia-smi, make and gnuplot,
# plus the stubs each case names. Ends with "RESULT <passed> <failed>"; exits 1 on any
# failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURES=$ROOT/tests/fixtures/runs
sandbox=$(mktemp -d)
trap 'rm -rf "$sandbox"' EXIT
# shellcheck source=tests/bench_sandbox.sh
source "$ROOT/tests/bench_sandbox.sh"
# shellcheck source=tests/check.sh
source "$ROOT/tests/check.sh"

export FAKE_TRAINER=$ROOT/build/fake_trainer FAKE_TRAINER_LOG=$sandbox/calls
export BENCHSTAT=$ROOT/build/benchstat TMPDIR=$sandbox/tmp
mkdir -p "$TMPDIR"


make_stubs() {
    write_stub "$sandbox/nogpu" make 'exit 0'
    cp -r "$sandbox/nogpu" "$sandbox/smi_fails"
    write_stub "$sandbox/smi_fails" nvidia-smi \
        "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9"
    cp -r "$sandbox/nogpu" "$sandbox/smi_empty"
    write_stub "$sandbox/smi_empty" nvidia-smi 'echo "No devices were found"; exit 0'
    make_gpu_stubs
    make_stub_benchstat
}

# run_bench STUBS ARGS...: runs bench.sh (the real one, or the copy in $sandbox/$repo for
# STUBS=gpu*) with PATH = the stub dir + the system tools; sets out, status and seconds.
repo=repo
run_bench() {
    local stubs=$1 bench=$ROOT/bench.sh
    shift
    [[ $stubs == gpu* ]] && bench=$sandbox/$repo/bench.sh
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

calls_contain() { [[ $(cat "$sandbox/calls" 2>/dev/null) == *"$1"* ]]; }
trainer_args() { grep '^trainer ' "$sandbox/calls" | head -n 1; }
runs_in() { ls "$sandbox/$repo/runs"; }
# No bench-XXXXXX.tmp folder or writer's PATH.tmp in runs/, nothing left in TMPDIR (REV's worktree).
no_temporaries() { [[ -z $(find "$sandbox/$repo/runs" -name '*.tmp*') && -z $(ls -A "$TMPDIR") ]]; }

test_argument_errors() {
    local case_args
    ln -s "$sandbox/nowhere.json" "$sandbox/dangling.json"
    local -a cases=(
        "--frobnicate|unknown option: --frobnicate"
        "97|unknown variant '97'"
        "94 95|unexpected argument: 95"
        "-n 0|-n takes a whole number of runs in 2..100000"
        "-n abc|-n takes a whole number of runs"
        "-n 1|-n takes a whole number of runs in 2..100000"
        "-n 100001|-n takes a whole number of runs in 2..100000 (benchstat"
        "-n 99999999999999999999|not '99999999999999999999'"
        "-n 18446744073709551618|not '18446744073709551618'"
        "-n|-n needs a value"
        "--seed|--seed needs a value"
        "--seed -3|--seed needs a value"
        "--seed x|--seed takes a whole number"
        "--seed 2000000001|--seed takes a whole number in 0..2000000000"
        "--seed 99999999999999999999|--seed takes a whole number in 0..2000000000"
        "--data|--data needs a value"
        "--time-tolerance 3%|--time-tolerance takes a percentage"
        "--baseline $sandbox/none.json|baseline run file not found"
        "--baseline $sandbox|is not a regular file"
        "--baseline /dev/null|is not a regular file"
        "--out $FIXTURES/a94.json|never overwrites"
        "--out $sandbox/dangling.json|is a symbolic link"
        "--out $sandbox/missing/dir/x.json|does not exist"
        "-n 5 --check --out|--out needs a value"
        "-- --json $FIXTURES/a94.json|use bench.sh's --out FILE"
        "-n 3 -- --tta 1 --runs 7|use bench.sh's -n RUNS"
        "-- --seed 4|use bench.sh's --seed S"
        "-- --data /tmp|use bench.sh's --data DIR"
        "-- --variant 95|as bench.sh's VARIANT argument"
        "--chunk 3|--chunk goes with --against"
        "--against HEAD --out $sandbox/x.json|--against saves two"
        "--against HEAD --baseline $FIXTURES/a94.json|--baseline does not go with --against"
        "--against HEAD --chunk 0|--chunk takes a whole number of runs in 1..100000"
        "--against HEAD --seed 1999999999 -n 5|must stay within 0..2000000000"
    )
    for case_args in "${cases[@]}"; do
        local args=${case_args%%|*} want=${case_args#*|}
        # shellcheck disable=SC2086 # the arguments are meant to split on spaces
        run_bench smi_fails $args
        expect "bench.sh $args" 2 "$want"
        expect "bench.sh $args points to --help" 2 "; see ./bench.sh --help"
        [[ $out != *$'\n'* ]] && pass || fail "bench.sh $args: more than one line:"$'\n'"$out"
        expect_no_calls "bench.sh $args"
    done
}

test_help() {
    run_bench smi_fails --help
    expect "--help" 0 "usage: ./bench.sh"
    local option
    for option in VARIANT -n --runs --seed --data --out --baseline --check --time-tolerance \
        --allow-other-gpu --plot --against --chunk "-- TRAINER FLAGS" --help "Exit status" \
        "128+N" "about 1.3 s per run on an H100" "about 5 s of start-up"; do
        [[ $out == *"$option"* ]] && pass || fail "--help does not mention '$option'"
    done
    local defaults
    defaults=$(grep -c 'default' <<<"$out")
    ((defaults >= 11)) && pass || fail "--help names only $defaults defaults"
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

test_full_path() {
    repo=repo
    CUDA_HOME=/opt/fake-cuda CUDNN_HOME="" CJSON_HOME=/opt/fake-cjson \
        run_bench gpu 94 -n 3 --seed 5 -- --set lr=0.5 --tta 1
    expect "fake run" 0 "airbench94, 3 runs from seed 5 on NVIDIA H100 80GB HBM3"
    local saved
    saved=$(runs_in)
    [[ $saved =~ ^[0-9]{8}-[0-9]{6}-h100-airbench94-nocommit\.json$ ]] && pass ||
        fail "run file name: '$saved'"
    expect "fake run saved" 0 "saved $sandbox/repo/runs/$saved"
    check "the saved file holds the 3 runs" [ "$(summary_n "$sandbox/repo/runs/$saved")" = 3 ]
    local args want
    args=$(trainer_args)
    for want in "$sandbox/repo/build/airbench94 --runs 3 --seed 5 --data $sandbox/repo/data/cifar10 --json $sandbox/repo/runs/bench-" \
        "--env gpu_name=NVIDIA H100 80GB HBM3 " "--env gpu_driver=580.159.04 " \
        "--env gpu_sm_clock_mhz=1980 " "--env gpu_max_mem_clock_mhz=2619 " \
        "--env gpu_persistence_mode=Enabled " "--env git_dirty_at_run=unknown " \
        "--env hostname=" "--env bench_command=" "--set lr=0.5 --tta 1"; do
        [[ $args == *"$want"* ]] && pass || fail "trainer arguments lack '$want': $args"
    done
    check "a clean or gitless tree passes no git_diff_file" [ "${args/git_diff_file/}" = "$args" ]
    local jobs make_call
    jobs=$(nproc)
    make_call="make -C $sandbox/repo -j $jobs CUDA_HOME=/opt/fake-cuda CJSON_HOME=/opt/fake-cjson"
    calls_contain "$make_call build/airbench94 build/benchstat" && pass ||
        fail "make not called as expected: $(cat "$sandbox/calls")"

    # A taken name gets a suffix: occupy the names of the next few seconds.
    local now k
    now=$(date -u +%s)
    for k in 0 1 2 3 4 5; do
        touch "$sandbox/repo/runs/$(date -u -d "@$((now + k))" +%Y%m%d-%H%M%S)-h100-airbench94-nocommit.json"
    done
    run_bench gpu 94 -n 3
    expect "suffix run" 0 "-h100-airbench94-nocommit-2.json"
    check "no temporary file left after a run" no_temporaries
    rm -f "$sandbox"/repo/runs/*

    run_bench gpu 94 -n 3 --out "$sandbox/mine.json"
    expect "--out" 0 "saved $sandbox/mine.json"
    check "--out file written" [ "$(summary_n "$sandbox/mine.json")" = 3 ]
    run_bench gpu 94 -n 3 --out "$sandbox/mine.json"
    expect "--out exists" 2 "never overwrites"

    run_bench gpu 94 -n 3 --check --baseline "$FIXTURES/b94.json"
    expect "--check vs slower baseline" 0 "check ok:   A/B time"
    run_bench gpu 94 -n 3 --check --baseline "$FIXTURES/muon.json"
    expect "--check vs faster baseline" 1 "check FAIL: A is slower than the baseline"
    run_bench gpu 94 -n 3 --check --time-tolerance 30 --baseline "$FIXTURES/muon.json"
    expect "--check --time-tolerance 30" 0 "within the +30% tolerance"
    rm -f "$sandbox"/repo/runs/*

    FAKE_MAKE_STATUS=2 run_bench gpu 94 -n 3
    expect "build fails" 2 "building build/airbench94 and build/benchstat failed"
    run_bench gpu 94 -n 3 --data "$sandbox/fresh_data"
    expect "data fetched" 0 "fetching it"
    calls_contain "get_cifar10.sh $sandbox/fresh_data" && pass ||
        fail "get_cifar10.sh not called: $(cat "$sandbox/calls")"
    rm -f "$sandbox"/repo/runs/*
}

# A trainer that fails: its completed runs are saved, marked incomplete, its status passed on.
test_failing_trainer() {
    repo=repo
    FAKE_TRAINER_FAIL=1 run_bench gpu 94 -n 3
    expect "trainer fails at once" 1 "no run completed (the trainer exited with status 1); nothing was saved"
    check "nothing saved after a failed start" [ -z "$(runs_in)" ]

    FAKE_TRAINER_DIVERGE_AT=3 run_bench gpu 94 -n 5 --out "$sandbox/diverged.json"
    expect "divergence" 1 "saved $sandbox/diverged.json, INCOMPLETE: 2 of the 5 runs (training diverged in run 3 (seed 2))"
    check "the diverged file holds the 2 completed runs" [ "$(summary_n "$sandbox/diverged.json")" = 2 ]
    grep -q '"complete":[[:space:]]*false' "$sandbox/diverged.json" && pass ||
        fail "the diverged run file should say complete: false"
    FAKE_TRAINER_DIVERGE_AT=1 run_bench gpu 94 -n 5
    expect "divergence in run 1" 1 "no run completed (training diverged in run 1 (seed 0)); nothing was saved"

    FAKE_TRAINER_FAIL_WRITE_AT=3 run_bench gpu 94 -n 5
    expect "write fails" 1 "INCOMPLETE: 2 of the 5 runs (the trainer exited with status 1)"
    check "the file written before the failure is saved" [ "$(summary_n "$sandbox/repo/runs/$(runs_in)")" = 2 ]
    check "no temporary file left after a failed write" no_temporaries
    rm -f "$sandbox"/repo/runs/*
    rm -f "$sandbox"/*.json
}

# benchstat's options that bench.sh passes on, and --plot, against a stub benchstat.
test_benchstat_calls() {
    repo=repo
    mkdir -p "$sandbox/gpu_plot"
    cp "$sandbox"/gpu/* "$sandbox/gpu_plot/"
    write_stub "$sandbox/gpu_plot" gnuplot 'exit 0'
    BENCHSTAT=$sandbox/stub_benchstat run_bench gpu_plot 94 -n 3 --check --allow-other-gpu \
        --time-tolerance 5 --baseline "$FIXTURES/b94.json" --out "$sandbox/p.json" --plot
    expect "stub benchstat" 0 "plotted $sandbox/p.png"
    calls_contain "benchstat --check --allow-other-gpu --time-tolerance 5 $sandbox/p.json $FIXTURES/b94.json" &&
        pass || fail "benchstat's report not called as expected: $(cat "$sandbox/calls")"
    calls_contain "benchstat --plot $sandbox/p.png $sandbox/p.json" && pass ||
        fail "benchstat --plot not called as expected: $(cat "$sandbox/calls")"
    rm -f "$sandbox"/p.*
}

# The real plot, once benchstat draws it and gnuplot is there.
test_real_plot() {
    local gnuplot
    if ! gnuplot=$(command -v gnuplot); then
        echo "skip: --plot (gnuplot is not installed)"
        return
    fi
    if ! "$ROOT/build/benchstat" --help 2>&1 | grep -q -- --plot; then
        echo "skip: --plot (this build/benchstat has no --plot yet)"
        return
    fi
    repo=repo
    mkdir -p "$sandbox/gpu_gnuplot"
    cp "$sandbox"/gpu/* "$sandbox/gpu_gnuplot/"
    ln -s "$gnuplot" "$sandbox/gpu_gnuplot/gnuplot"
    run_bench gpu_gnuplot 94 -n 5 --out "$sandbox/plotted.json" --plot
    expect "--plot" 0 "plotted $sandbox/plotted.png"
    [[ $(head -c 4 "$sandbox/plotted.png" 2>/dev/null | od -An -c | tr -d ' ') == 211PNG ]] &&
        pass || fail "--plot wrote no PNG"
}

# A dirty tree's diff is saved beside the run file and named in it; a clean tree has none.
test_tree_diff() {
    repo=gitrepo
    local git_repo=$sandbox/gitrepo short
    short=$(git -C "$git_repo" rev-parse --short=7 HEAD)
    run_bench gpu 94 -n 2
    expect "clean git tree" 0 "-h100-airbench94-$short.json"
    check "a clean tree saves no diff" [ -z "$(find "$git_repo/runs" -name '*.diff')" ]
    [[ $(trainer_args) == *"--env git_dirty_at_run=false "* && $(trainer_args) != *git_diff_file* ]] &&
        pass || fail "clean tree: trainer arguments $(trainer_args)"
    rm -f "$git_repo"/runs/*

    echo "lr 3.0" >"$git_repo/recipe.txt"
    echo "a new kernel" >"$git_repo/new_kernel.cu"
    echo "an unsaved result" >"$git_repo/runs/other.json"
    head -c 1100000 /dev/zero >"$git_repo/core"
    run_bench gpu 94 -n 2
    local run_file diff_file
    run_file=$(find "$git_repo/runs" -name "*-$short.json")
    diff_file=${run_file%.json}.diff
    expect "dirty git tree" 0 "saved $run_file"
    check "the diff is saved beside the run file" [ -s "$diff_file" ]
    [[ $(trainer_args) == *"--env git_diff_file=${diff_file##*/}" ]] && pass ||
        fail "the trainer is not told the diff's name: $(trainer_args)"
    grep -q '^+lr 3.0' "$diff_file" && pass || fail "the diff lacks the tracked change"
    grep -q '^+a new kernel' "$diff_file" && pass || fail "the diff lacks the untracked file"
    grep -q '^# untracked, not included (1100000 bytes): core' "$diff_file" && pass ||
        fail "the diff should name the large untracked file"
    grep -q 'unsaved result' "$diff_file" && fail "the diff should leave runs/ out" || pass
    rm -f "$git_repo/core"
    git clone -q "$git_repo" "$sandbox/clone"
    git -C "$sandbox/clone" apply "$diff_file" && [[ $(cat "$sandbox/clone/recipe.txt") == "lr 3.0" &&
        -f $sandbox/clone/new_kernel.cu ]] && pass || fail "the diff does not apply to HEAD"
    rm -rf "$sandbox/clone"

    run_bench gpu 94 -n 2 --out "$sandbox/dirty.json"
    expect "dirty tree with --out" 0 "saved $sandbox/dirty.json"
    check "--out's diff is <out>.diff" [ -s "$sandbox/dirty.diff" ]
    run_bench gpu 94 -n 2 --out "$sandbox/dirty2.json"
    rm -f "$sandbox/dirty2.json"
    run_bench gpu 94 -n 2 --out "$sandbox/dirty2.json"
    expect "an existing diff is not overwritten" 2 "dirty2.diff, where this dirty tree's diff would go, already exists"
    expect_no_calls "an existing diff"
    rm -f "$sandbox"/dirty*

    local before
    before=$(ls "$git_repo/runs")
    FAKE_TRAINER_FAIL=1 run_bench gpu 94 -n 2
    check "a failed run leaves no diff behind" [ "$(ls "$git_repo/runs")" = "$before" ]
    rm -f "$git_repo"/runs/* "$git_repo/new_kernel.cu"
    git -C "$git_repo" checkout -q recipe.txt
}

against_files() { find "$sandbox/gitrepo/runs" -name "*-$1.json"; }
worktrees() { git -C "$sandbox/gitrepo" worktree list | wc -l; }

# The tweak loop: REV built in a worktree, the two trainers interleaved chunk by chunk.
test_against() {
    repo=gitrepo
    local git_repo=$sandbox/gitrepo a_name b_name
    BENCHSTAT=$sandbox/stub_benchstat run_bench gpu 94 -n 7 --chunk 3 --seed 10 --against HEAD~1 \
        --check --time-tolerance 5 -- --set lr=2
    a_name=$(against_files "${second_commit:0:7}-A-tree")
    b_name=$(against_files "${first_commit:0:7}-B-rev")
    expect "--against" 0 "saved $a_name"
    expect "--against saves B" 0 "saved $b_name"
    check "A and B are named by their commits" [ -n "$a_name" -a -n "$b_name" ]
    local order
    order=$(trainer_calls "$git_repo" | tr '\n' ,)
    [[ $order == "A 3 10,B 3 10,A 3 13,B 3 13,A 1 16,B 1 16," ]] && pass ||
        fail "--against order, chunks and seeds: $order"
    local built
    built=$(grep '^built ' "$sandbox/calls" | tr '\n' ,)
    [[ $built == "built $git_repo at $second_commit,built $TMPDIR/bench-against-"*"/tree at $first_commit," ]] &&
        pass || fail "the working tree and REV are not built as expected: $built"
    local work="$git_repo/runs/bench-"
    grep -E "^benchstat --merge ${work}[A-Za-z0-9]{6}\.tmp/A\.json ${work}[A-Za-z0-9]{6}\.tmp/A-00001\.json .*A-00002\.json .*A-00003\.json$" \
        "$sandbox/calls" >/dev/null && pass || fail "A's chunks not merged as expected: $(cat "$sandbox/calls")"
    grep -qE "^benchstat --merge .*/B\.json .*/B-00001\.json .*/B-00002\.json .*/B-00003\.json$" "$sandbox/calls" &&
        pass || fail "B's chunks not merged as expected"
    calls_contain "benchstat --check --time-tolerance 5 $a_name $b_name" && pass ||
        fail "the comparison A vs B is not asked for: $(cat "$sandbox/calls")"
    grep -c -- '--set lr=2' "$sandbox/calls" | grep -qx 6 && pass || fail "trainer flags not passed to every chunk"
    grep -q -- "--env bench_side=B: HEAD~1 ($first_commit)" "$sandbox/calls" && pass ||
        fail "B's run file does not record REV"
    check "A's merged file holds 7 runs" [ "$(summary_n "$a_name")" = 7 ]
    check "REV's worktree is removed" [ "$(worktrees)" = 1 ]
    check "no temporary file left after --against" no_temporaries
    rm -f "$git_repo"/runs/*

    run_bench gpu 94 -n 4 --against no-such-rev
    expect "bad REV" 2 "--against 'no-such-rev' is not a commit of this repository"
    expect_no_calls "bad REV"

    FAKE_MAKE_FAIL_IN=bench-against run_bench gpu 94 -n 4 --against HEAD~1
    expect "REV does not build" 2 "building build/airbench94 of HEAD~1 failed"
    check "no trainer ran when REV does not build" [ -z "$(trainer_calls "$git_repo")" ]
    check "REV's worktree is removed after a failed build" [ "$(worktrees)" = 1 ]
    check "no temporary file left after a failed build" no_temporaries

    FAKE_TRAINER_ONLY=bench-against FAKE_TRAINER_FAIL=1 BENCHSTAT=$sandbox/stub_benchstat \
        run_bench gpu 94 -n 4 --chunk 2 --against HEAD~1
    a_name=$(against_files "${second_commit:0:7}-A-tree")
    expect "REV's trainer fails" 1 "saved $a_name, INCOMPLETE: 2 of the 4 runs (the trainer exited with status 1)"
    expect "REV's trainer fails: B not saved" 1 "B: no run completed"
    check "after REV's trainer fails, only A's file is saved" [ "$(runs_in)" = "${a_name##*/}" ]
    check "REV's worktree is removed after a failed run" [ "$(worktrees)" = 1 ]
    check "no temporary file left after a failed run" no_temporaries
    rm -f "$git_repo"/runs/*

    FAKE_MERGE_FAIL=1 BENCHSTAT=$sandbox/stub_benchstat run_bench gpu 94 -n 2 --against HEAD~1
    local kept
    kept=$(find "$git_repo/runs" -name 'bench-*-unmerged')
    expect "merge fails" 1 "benchstat --merge failed for A (see above); its chunk files are kept in $kept"
    check "the chunks are kept when they cannot be merged" [ -s "$kept/A-00001.json" -a -s "$kept/B-00001.json" ]
    check "no temporary file left when the merge fails" no_temporaries
    rm -rf "${git_repo:?}"/runs/*
}

# --against DIR: a tree without .git named by its .git-commit (as dev/stage_rev.sh writes it),
# built in place with that commit; another checkout, built with git's own answer; the errors.
test_against_tree() {
    repo=repo
    local tree=$sandbox/revtree a_name b_name
    mkdir -p "$tree" && touch "$tree/Makefile" && echo "$first_commit" >"$tree/.git-commit"
    CUDA_ARCH=90 GIT_COMMIT=$second_commit GIT_DIRTY=0 BENCHSTAT=$sandbox/stub_benchstat \
        run_bench gpu 94 -n 3 --chunk 2 --seed 4 --against revtree
    a_name=$(find "$sandbox/repo/runs" -name "*-${second_commit:0:7}-A-tree.json")
    b_name=$(find "$sandbox/repo/runs" -name "*-${first_commit:0:7}-B-rev.json")
    expect "--against DIR" 0 "saved $b_name"
    check "--against DIR: A and B are named by their commits" [ -n "$a_name" -a -n "$b_name" ]
    local order
    order=$(trainer_calls "$sandbox/repo" | tr '\n' ,)
    [[ $order == "A 2 4,B 2 4,A 1 6,B 1 6," ]] && pass || fail "--against DIR order, chunks and seeds: $order"
    calls_contain "built $tree at none" && pass || fail "DIR is not built in place: $(cat "$sandbox/calls")"
    calls_contain "build env GIT_COMMIT=$first_commit GIT_DIRTY=0 GIT_CHANGED_FILES=" && pass ||
        fail "DIR is not built with its .git-commit: $(cat "$sandbox/calls")"
    [[ $(grep -c "^make .*CUDA_ARCH=90" "$sandbox/calls") == 2 ]] && pass ||
        fail "CUDA_ARCH is not passed to both builds: $(cat "$sandbox/calls")"
    grep -q -- "--env bench_side=B: revtree ($first_commit)" "$sandbox/calls" && pass ||
        fail "B's run file does not record DIR"
    check "DIR and its build stay" [ -x "$tree/build/airbench94" ]
    check "no temporary file left after --against DIR" no_temporaries
    rm -f "$sandbox"/repo/runs/*

    local clone=$sandbox/clone
    git clone -q "$sandbox/gitrepo" "$clone" && git -C "$clone" checkout -q "$first_commit" && touch "$clone/Makefile"
    repo=gitrepo
    GIT_COMMIT=$second_commit GIT_DIRTY=0 BENCHSTAT=$sandbox/stub_benchstat \
        run_bench gpu 94 -n 2 --against "$clone"
    b_name=$(against_files "${first_commit:0:7}-B-rev")
    expect "--against a checkout" 0 "saved $b_name"
    calls_contain "built $clone at $first_commit" && pass || fail "the checkout is not built in place"
    calls_contain "build env GIT_COMMIT=unset GIT_DIRTY=unset GIT_CHANGED_FILES=unset" && pass ||
        fail "the checkout's build is given the working tree's GIT_COMMIT: $(cat "$sandbox/calls")"
    rm -f "$sandbox"/gitrepo/runs/*

    rm "$tree/.git-commit"
    run_bench gpu 94 -n 2 --against revtree
    expect "DIR without .git-commit" 2 "nor a tree whose .git-commit names its commit"
    echo "not-a-hash" >"$tree/.git-commit"
    run_bench gpu 94 -n 2 --against revtree
    expect "DIR with a bad .git-commit" 2 ".git-commit should hold a 40-digit commit hash, not 'not-a-hash'"
    rm "$tree/Makefile"
    run_bench gpu 94 -n 2 --against revtree
    expect "DIR without a Makefile" 2 "holds no Makefile: not a source tree"
    run_bench gpu 94 -n 2 --against gitrepo
    expect "DIR is the working tree" 2 "--against gitrepo is this working tree itself"
    expect_no_calls "--against DIR errors"
    rm -rf "$tree" "$clone"
}

# dev/stage_rev.sh: REV's files and its .git-commit, what --against DIR reads.
test_stage_rev() {
    if ! git -C "$ROOT" rev-parse --verify --quiet HEAD >/dev/null; then
        echo "skip: dev/stage_rev.sh (this copy is not a git checkout)"
        return
    fi
    local dest=$sandbox/staged head
    head=$(git -C "$ROOT" rev-parse HEAD)
    out=$("$ROOT/dev/stage_rev.sh" HEAD "$dest" 2>&1) status=$?
    expect "stage_rev.sh HEAD" 0 "$dest"
    check "stage_rev.sh writes the commit" [ "$(cat "$dest/.git-commit")" = "$head" ]
    check "stage_rev.sh writes the files" cmp -s <(git -C "$ROOT" show HEAD:bench.sh) "$dest/bench.sh"
    out=$("$ROOT/dev/stage_rev.sh" HEAD "$dest" 2>&1) status=$?
    expect "stage_rev.sh into an existing folder" 2 "already exists"
    out=$("$ROOT/dev/stage_rev.sh" no-such-rev "$sandbox/other" 2>&1) status=$?
    expect "stage_rev.sh, bad REV" 2 "'no-such-rev' is not a commit"
    check "stage_rev.sh writes nothing for a bad REV" [ ! -e "$sandbox/other" ]
    rm -rf "$dest"
}

# --against with the real benchstat --merge: the merged files hold every chunk's runs.
test_against_merged() {
    if ! "$ROOT/build/benchstat" --help 2>&1 | grep -q -- --merge; then
        echo "skip: --against with the real merge (this build/benchstat has no --merge yet)"
        return
    fi
    repo=gitrepo
    run_bench gpu 94 -n 5 --chunk 2 --seed 3 --against HEAD~1
    expect "--against, merged" 0 "saved"
    local side file
    for side in A-tree B-rev; do
        file=$(find "$sandbox/gitrepo/runs" -name "*-$side.json")
        [[ $("$ROOT/build/benchstat" --tsv "$file" | tail -n +2 | cut -f1 | tr '\n' ,) == "3,4,5,6,7," ]] &&
            pass || fail "$side's merged file should hold seeds 3..7: $(cat "$file")"
    done
    rm -f "$sandbox"/gitrepo/runs/*
}

make_system_bin
make_stubs
test_argument_errors
test_help
test_no_gpu
test_stage_rev
if [[ -x $ROOT/build/benchstat && -x $ROOT/build/fake_trainer ]]; then
    make_fake_repo "$sandbox/repo"
    make_git_repo "$sandbox/gitrepo"
    test_full_path
    test_failing_trainer
    test_benchstat_calls
    test_real_plot
    test_tree_diff
    test_against
    test_against_tree
    test_against_merged
else
    fail "build/benchstat or build/fake_trainer is missing: run \`make cpu\` first"
fi
finish test_bench
