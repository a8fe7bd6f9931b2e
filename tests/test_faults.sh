#!/usr/bin/env bash
# test_faults.sh: bench.sh under faults, in the sandbox of tests/bench_sandbox.sh with the C
# fake trainer (build/fake_trainer) on the real run-file writer. SIGTERM and SIGINT sent at
# seeded random moments to bench.sh or to the trainer; `timeout`; a trainer that diverges;
# a full disk (a small tmpfs, where mounting one works); a signal during --against. After
# each: bench.sh's exit status is right, the pre-existing run files are unchanged, no
# temporary file or worktree is left, no trainer is left running, and the published file
# holds exactly the runs the trainer finished (none: no file). The stubs come first in PATH,
# before the system's tools. About 15 s.
# Ends with "RESULT <passed> <failed>"; exits 1 on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sandbox=$(mktemp -d)
full_disk=$sandbox/full
# Only in this shell: a background subshell killed before it resets its traps runs this too.
trap '((BASHPID == $$)) && { umount "$full_disk" 2>/dev/null; rm -rf "$sandbox"; }' EXIT
# shellcheck source=tests/bench_sandbox.sh
source "$ROOT/tests/bench_sandbox.sh"
# shellcheck source=tests/check.sh
source "$ROOT/tests/check.sh"

export FAKE_TRAINER=$ROOT/build/fake_trainer FAKE_TRAINER_LOG=$sandbox/calls
export BENCHSTAT=$ROOT/build/benchstat TMPDIR=$sandbox/tmp FAKE_TRAINER_RUN_MS=150
RUNS=6


# The run files that were there before: they must never change.
checksums() { (cd "$sandbox" && sha256sum repo/runs/keep-*.json gitrepo/runs/keep-*.json); }

setup() {
    mkdir -p "$TMPDIR"
    make_gpu_stubs
    make_stub_benchstat
    make_fake_repo "$sandbox/repo"
    make_git_repo "$sandbox/gitrepo" >/dev/null
    local name
    for name in a94 b94 muon; do
        cp "$ROOT/tests/fixtures/runs/$name.json" "$sandbox/repo/runs/keep-$name.json"
        cp "$ROOT/tests/fixtures/runs/$name.json" "$sandbox/gitrepo/runs/keep-$name.json"
    done
    checksums >"$sandbox/checksums"
}

# start_bench REPO ARGS...: bench.sh in the background (SIGINT restored: bash ignores it in
# background commands), output to $sandbox/out; sets bench_pid.
start_bench() {
    local repo=$1
    shift
    rm -f "$sandbox/calls"
    (trap - INT && cd "$sandbox" && PATH="$sandbox/gpu:$PATH" exec "$sandbox/$repo/bench.sh" "$@") \
        >"$sandbox/out" 2>&1 &
    bench_pid=$!
}

# Waits (at most 5 s) for the trainer to start; sets trainer_pid (empty if none did).
wait_for_trainer() {
    local i
    trainer_pid=""
    for ((i = 0; i < 100; i++)); do
        trainer_pid=$(grep -oE '^trainer pid=[0-9]+' "$sandbox/calls" 2>/dev/null | head -n 1 | cut -d= -f2)
        [[ -n $trainer_pid ]] && return
        sleep 0.05
    done
}

# Waits for bench.sh, killing it after 20 s (a hang); sets status.
finish_bench() {
    (sleep 20 && kill -KILL "$bench_pid") >/dev/null 2>&1 &
    local watchdog=$!
    wait "$bench_pid"
    status=$?
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    ((status == 137)) && fail "bench.sh hung (killed after 20 s): $(cat "$sandbox/out")"
}

new_run_files() { find "$sandbox/$1/runs" -maxdepth 1 -name '*.json' ! -name 'keep-*'; }

# after NAME REPO WANT_STATUS WANTED: the checks after every fault (which always comes
# before the WANTED runs can have finished).
after() {
    local name=$1 repo=$2 want=$3 wanted=$4 finished files
    finished=$(grep -c '^finished ' "$sandbox/calls" 2>/dev/null)
    [[ $status == "$want" ]] && pass || fail "$name: exit $status (want $want):"$'\n'"$(cat "$sandbox/out")"
    checksums | cmp -s - "$sandbox/checksums" && pass || fail "$name: a pre-existing run file changed"
    [[ -z $(find "$sandbox/$repo/runs" -name '*.tmp*') && -z $(ls -A "$TMPDIR") ]] && pass ||
        fail "$name: temporary files left: $(find "$sandbox/$repo/runs" "$TMPDIR" -mindepth 1)"
    [[ $(git -C "$sandbox/gitrepo" worktree list | wc -l) == 1 ]] && pass || fail "$name: a worktree is left"
    local pid alive=""
    for pid in $(grep -oE '^trainer pid=[0-9]+' "$sandbox/calls" 2>/dev/null | cut -d= -f2); do
        kill -0 "$pid" 2>/dev/null && alive+=" $pid"
    done
    [[ -z $alive ]] && pass || fail "$name: trainer(s) still running:$alive"
    mapfile -t files < <(new_run_files "$repo")
    if ((finished == 0)); then
        ((${#files[@]} == 0)) && pass || fail "$name: no run finished, but ${files[*]} was saved"
    else
        ((${#files[@]} == 1)) && [[ $(summary_n "${files[0]}") == "$finished" ]] && pass ||
            fail "$name: $finished runs finished, saved: ${files[*]:-nothing} $(cat "${files[@]}" 2>/dev/null)"
    fi
    if ((finished > 0 && finished < wanted)); then
        grep -q "INCOMPLETE: $finished of the $wanted runs" "$sandbox/out" && pass ||
            fail "$name: bench.sh does not say the file is incomplete:"$'\n'"$(cat "$sandbox/out")"
    fi
    rm -f "${files[@]}"
}

# A signal's number, for the expected status 128+N.
signal_number() { kill -l "$1"; }

# Signals at seeded random moments: to bench.sh (sometimes while it builds) or to the
# trainer once it runs, always before the end (the sleeps are minimum durations).
test_random_signals() {
    local signals=(TERM INT) iteration
    if (($(awk '/^SigIgn/ {print $2}' /proc/$$/status | sed 's/^/16#/') & 2)); then
        echo "skip: SIGINT cases (this test was started with SIGINT ignored, which bash cannot undo)"
        signals=(TERM)
    fi
    RANDOM=2024
    for iteration in 1 2 3 4 5 6 7 8; do
        local signal=${signals[RANDOM % ${#signals[@]}]} ms=$((RANDOM % 1000)) delay
        delay=$(printf '0.%03d' "$ms")
        if ((iteration % 2)); then  # bench.sh takes 1.35 s: 0.3 s building, 7 x 0.15 s training
            FAKE_MAKE_SLEEP=0.3 start_bench repo 94 -n "$RUNS"
            sleep "$delay"
            kill -s "$signal" "$bench_pid"
            finish_bench
            after "SIG$signal to bench.sh after ${delay}s" repo $((128 + $(signal_number "$signal"))) "$RUNS"
        else
            start_bench repo 94 -n "$RUNS"
            wait_for_trainer
            sleep "$delay"
            [[ -n $trainer_pid ]] && kill -s "$signal" "$trainer_pid"
            finish_bench
            after "SIG$signal to the trainer after ${delay}s" repo $((128 + $(signal_number "$signal"))) "$RUNS"
            grep -q "interrupted by SIG$signal after" "$sandbox/out" && pass ||
                fail "SIG$signal to the trainer: the reason is not reported:"$'\n'"$(cat "$sandbox/out")"
        fi
    done
}

# `timeout` signals bench.sh's whole process group; the trainer must not outlive bench.sh.
test_timeout() {
    rm -f "$sandbox/calls"
    (cd "$sandbox" && PATH="$sandbox/gpu:$PATH" exec timeout 0.7 "$sandbox/repo/bench.sh" 94 -n "$RUNS") \
        >"$sandbox/out" 2>&1 &
    bench_pid=$!
    finish_bench
    after "timeout" repo 124 "$RUNS"
}

test_divergence() {
    FAKE_TRAINER_DIVERGE_AT=3 start_bench repo 94 -n "$RUNS"
    finish_bench
    after "divergence" repo 1 "$RUNS"
    grep -q "training diverged in run 3" "$sandbox/out" && pass || fail "divergence: reason not reported"
}

# A full disk: the writer fails on some run; the runs written before it are saved.
test_full_disk() {
    mkdir -p "$full_disk"
    if ! mount -t tmpfs -o size=48k tmpfs "$full_disk" 2>/dev/null; then
        echo "skip: full disk (cannot mount a tmpfs here; it needs root)"
        return
    fi
    # 8 of the 12 pages taken: the run file, written beside its previous version, runs out
    # of room after a few runs of about 1 KB each.
    head -c 32768 /dev/zero >"$full_disk/filler"
    FAKE_TRAINER_RUN_MS=0 start_bench repo 94 -n 40 --out "$full_disk/run.json"
    finish_bench
    local finished
    finished=$(grep -c '^finished ' "$sandbox/calls")
    [[ $status == 1 ]] && ((finished > 0 && finished < 40)) && pass ||
        fail "full disk: exit $status after $finished runs (want 1, after some runs):"$'\n'"$(cat "$sandbox/out")"
    [[ $(summary_n "$full_disk/run.json") == "$finished" ]] && pass ||
        fail "full disk: the saved file should hold the $finished runs written"
    [[ -z $(find "$full_disk" -name '*.tmp*') ]] && pass || fail "full disk: temporary files left"
    checksums | cmp -s - "$sandbox/checksums" && pass || fail "full disk: a pre-existing run file changed"
    umount "$full_disk"
}

# A signal during --against: both sides' finished runs saved, REV's worktree removed.
test_against_signal() {
    local delay
    delay=$(printf '1.%02d' $((RANDOM % 100)))
    BENCHSTAT=$sandbox/stub_benchstat start_bench gitrepo 94 -n 4 --chunk 2 --against HEAD~1
    sleep "$delay"
    kill -s TERM "$bench_pid"
    finish_bench
    [[ $status == 143 ]] && pass || fail "--against, SIGTERM after ${delay}s: exit $status:"$'\n'"$(cat "$sandbox/out")"
    checksums | cmp -s - "$sandbox/checksums" && pass || fail "--against: a pre-existing run file changed"
    [[ $(git -C "$sandbox/gitrepo" worktree list | wc -l) == 1 && -z $(ls -A "$TMPDIR") ]] && pass ||
        fail "--against: REV's worktree is left"
    [[ -z $(find "$sandbox/gitrepo/runs" -name '*.tmp*') ]] && pass || fail "--against: temporary files left"
    local side finished saved
    for side in A B; do
        finished=$(side_finished "$side")
        saved=$(summary_n "$(find "$sandbox/gitrepo/runs" -name "*-$side-*.json")")
        [[ ${saved:-0} == "$finished" ]] && pass ||
            fail "--against: $side finished $finished runs, its saved file holds ${saved:-none}"
    done
    find "$sandbox/gitrepo/runs" -maxdepth 1 -name '*.json' ! -name 'keep-*' -delete
}

# side_finished SIDE: the runs finished by the trainers of one side of --against (A: the
# sandbox repository's, B: REV's worktree's).
side_finished() {
    local side=$1 line words pid count=0
    local -A side_of
    while read -r line; do
        read -r -a words <<<"$line"
        pid=${words[1]#pid=}
        case ${words[0]} in
            trainer) [[ ${words[2]} == "$sandbox/gitrepo/"* ]] && side_of[$pid]=A || side_of[$pid]=B ;;
            finished) [[ ${side_of[$pid]:-} == "$side" ]] && count=$((count + 1)) ;;
        esac
    done <"$sandbox/calls"
    echo "$count"
}

if [[ -x $ROOT/build/fake_trainer && -x $ROOT/build/benchstat ]]; then
    setup
    test_random_signals
    test_timeout
    test_divergence
    test_full_disk
    test_against_signal
else
    fail "build/fake_trainer or build/benchstat is missing: run \`make cpu\` first"
fi
finish test_faults
