# check.sh: the counting the shell tests of tests/run.sh share; source it.
#   pass, fail MESSAGE          count one check (fail prints "FAIL MESSAGE")
#   check DESCRIPTION CMD...    passes when CMD succeeds; on failure also prints the last
#                               exit status where the test keeps it in $status, and the
#                               files $CHECK_OUT and $CHECK_ERR where it sets them (the last
#                               command's output), 40 lines of each at most
#   finish NAME                 the summary line, run.sh's "RESULT <passed> <failed>", and
#                               the exit status: 0 when nothing failed
#   check_accuracy NAME FILE MIN  passes when the accuracy of the first run in run file FILE
#                               is above MIN (printed either way; a missing one fails)
#   run_counted NAME CMD...     runs a test program, shows its output and adds its RESULT
#                               line's counts; no RESULT line, or a non-zero exit with no
#                               failure counted, counts as one failure
passed=0
failed=0

pass() { passed=$((passed + 1)); }

fail() {
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$*"
}

check() {
    check_description=$1
    shift
    if "$@"; then
        pass
        return 0
    fi
    fail "$check_description${status:+ (exit status $status)}"
    [ -z "${CHECK_OUT:-}" ] || sed 's/^/    stdout: /' "$CHECK_OUT" 2>/dev/null | head -n 40
    [ -z "${CHECK_ERR:-}" ] || sed 's/^/    stderr: /' "$CHECK_ERR" 2>/dev/null | head -n 40
    return 1
}

check_accuracy() {
    accuracy=$(grep -o '"accuracy":[[:space:]]*[0-9.e-]*' "$2" 2>/dev/null | head -n 1 | sed 's/.*:[[:space:]]*//')
    echo "$1: TTA accuracy ${accuracy:-missing} (must exceed $3)"
    check "$1: TTA accuracy '${accuracy:-missing}' is not above $3" \
        awk -v a="${accuracy:-0}" -v t="$3" 'BEGIN { exit !(a > t) }'
}

finish() {
    echo "$1: $passed passed, $failed failed"
    echo "RESULT $passed $failed"
    [ "$failed" -eq 0 ]
}

run_counted() {
    run_name=$1
    shift
    run_out=$("$@" 2>&1)
    run_rc=$?
    printf '%s\n' "$run_out" | grep -v '^RESULT '
    run_result=$(printf '%s\n' "$run_out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$run_result" ]; then
        fail "$run_name: exited with $run_rc and no RESULT line"
        return
    fi
    run_failed=$(echo "$run_result" | cut -d' ' -f3)
    passed=$((passed + $(echo "$run_result" | cut -d' ' -f2)))
    failed=$((failed + run_failed))
    [ "$run_rc" -eq 0 ] || [ "$run_failed" -ne 0 ] || fail "$run_name: exited with $run_rc"
}
