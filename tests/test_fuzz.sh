#!/bin/sh
# test_fuzz.sh: the fuzz engine (tests/fuzz.c) through build/fuzz_selftest, a target with
# planted faults, and build/fuzz_cifar10: the sanitizers stop a buffer overflow and a signed
# overflow, --timeout stops a hang, a fault the mutations reach is found and its input kept for
# --replay, a clean budget removes the crash file, the inputs depend on --seed, the CIFAR-10
# seeds reach each outcome of the reader, and bad command lines and corpora exit 2.
# Ends with "RESULT <passed> <failed>"; exits non-zero if anything failed.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1  # the default corpora are relative to the repository root
selftest=$repo/build/fuzz_selftest
cifar10=$repo/build/fuzz_cifar10
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$repo/tests/check.sh"
CHECK_OUT=$tmp/out CHECK_ERR=$tmp/err  # a failed check shows the program's last output

# fuzz PROGRAM ARG...: runs it with the crash file in $tmp (a later --crash-file wins), at most
# 60 s so that a regression that hangs fails instead; sets $status.
fuzz() {
    program=$1
    shift
    timeout 60 "$program" --crash-file "$tmp/crash.bin" "$@" > "$tmp/out" 2> "$tmp/err"
    status=$?
}

succeeded() { [ "$status" -eq 0 ]; }
exited_with() { [ "$status" -eq "$1" ]; }
stopped() { [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; }  # 124: killed by timeout 60
said() { cat "$tmp/out" "$tmp/err" | grep -q -- "$1"; }
crash_file_kept() { [ -f "$tmp/crash.bin" ]; }
no_crash_file() { [ ! -e "$tmp/crash.bin" ]; }
starts_with_two_ff() { [ "$(head -c 2 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = ffff ]; }
inputs_hash() { sed -n 's/.*(inputs hash \([0-9a-f]*\)).*/\1/p' "$tmp/out"; }
same_hash() { [ -n "$1" ] && [ "$(inputs_hash)" = "$1" ]; }
other_hash() { [ -n "$(inputs_hash)" ] && [ "$(inputs_hash)" != "$1" ]; }

# replay_planted NAME CONTENT: replays an input that sets off one of the selftest's faults.
replay_planted() {
    printf '%s' "$2" > "$tmp/$1"
    fuzz "$selftest" --replay "$tmp/$1" --timeout 1
}

test_planted_faults() {
    replay_planted overflow overflow
    check "read past the end: stopped" stopped
    check "read past the end: by the address sanitizer" \
        said 'AddressSanitizer: heap-buffer-overflow'
    replay_planted signed signed
    check "signed overflow: stopped" stopped
    check "signed overflow: by the UB sanitizer" said 'runtime error: signed integer overflow'
    replay_planted hang hang
    check "hang: exit status 1" exited_with 1
    check "hang: --timeout reported with the replay hint" said 'ran longer than 1 s.*--replay'
    replay_planted fail fail
    check "non-zero return: exit status 1" exited_with 1
    check "non-zero return: reported" said 'the target returned 1, not 0'
    replay_planted fine fine
    check "a fine input replays cleanly" succeeded
    check "a fine input: reported" said "replayed $tmp/fine (4 bytes): no failure"
}

test_finds_planted_fault() {
    fuzz "$selftest"
    check "planted fault: the run stops" stopped
    check "planted fault: the broken contract is reported" \
        said 'contract broken.*the planted fault'
    check "planted fault: the input is kept" crash_file_kept
    check "planted fault: the kept input is the fault" starts_with_two_ff "$tmp/crash.bin"
    mv "$tmp/crash.bin" "$tmp/found.bin" 2>/dev/null
    fuzz "$selftest" --replay "$tmp/found.bin"
    check "planted fault: the replay fails again" said 'contract broken.*the planted fault'
}

test_clean_budget() {
    fuzz "$selftest" --runs 1
    check "one clean input: exit status 0" succeeded
    check "one clean input: the RESULT line" said '^RESULT 1 0$'
    check "one clean input: the crash file is removed" no_crash_file
    fuzz "$cifar10" --runs 6
    check "cifar10 seeds: clean" succeeded
    check "cifar10 seeds: the crash file is removed" no_crash_file
    check "cifar10 seeds: each outcome reached" \
        said 'files loaded 1, refused for the size 3, refused for a label 2 '
    check "cifar10 seeds: a bad label past the first record" said '(the deepest in record 1)'
}

test_seed_decides() {
    fuzz "$cifar10" --runs 8 --seed 5
    first=$(inputs_hash)
    fuzz "$cifar10" --runs 8 --seed 5
    check "same seed: same inputs" same_hash "$first"
    fuzz "$cifar10" --runs 8 --seed 6
    check "another seed: other inputs" other_hash "$first"
}

# bad_usage DESCRIPTION MESSAGE ARG...: the selftest with those arguments exits 2 with MESSAGE.
bad_usage() {
    description=$1
    message=$2
    shift 2
    fuzz "$selftest" "$@"
    check "$description: exit status 2" exited_with 2
    check "$description: says why" said "$message"
}

test_bad_usage() {
    bad_usage "unknown flag" "unknown flag '--bogus'" --bogus 1
    bad_usage "missing value" "--runs needs a value" --runs
    bad_usage "negative --runs" "bad value '-3' for --runs" --runs -3
    bad_usage "negative --seed" "bad value '-1' for --seed" --seed -1
    bad_usage "text for --seconds" "bad value 'x' for --seconds" --seconds x
    bad_usage "no limit at all" "would never end" --runs 0 --seconds 0
    bad_usage "missing corpus" "cannot open the corpus folder" --corpus "$tmp/none"
    mkdir "$tmp/empty"
    bad_usage "empty corpus" "holds no seed files" --corpus "$tmp/empty"
    mkdir "$tmp/big"
    head -c 65 /dev/zero > "$tmp/big/seed"
    bad_usage "seed over max_size" "is 65 bytes, over the target's limit of 64" --corpus "$tmp/big"
    mkdir "$tmp/pipe"
    mkfifo "$tmp/pipe/seed"
    bad_usage "named pipe in the corpus" "is not a regular file" --corpus "$tmp/pipe"
    bad_usage "crash file folder missing" "cannot create the crash file" \
        --crash-file "$tmp/none/crash.bin"
    bad_usage "missing replay file" "cannot read the input" --replay "$tmp/none.bin"
    fuzz "$selftest" --help
    check "--help: exit status 0" succeeded
    check "--help: usage" said '^usage: .*fuzz_selftest \[--corpus DIR\]'
}

test_planted_faults
test_finds_planted_fault
test_clean_budget
test_seed_decides
test_bad_usage
finish test_fuzz
