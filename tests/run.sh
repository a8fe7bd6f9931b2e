#!/bin/sh
# run.sh TEST...: runs each test program, shows its output, and ends with the suite's
# total "N passed, N failed". A test that crashes or prints no RESULT line counts as one
# failure. Exits non-zero if anything failed.
passed=0
failed=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -v '^RESULT '
    result=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$result" ]; then
        echo "FAIL $t: exited with $rc and no RESULT line"
        failed=$((failed + 1))
        continue
    fi
    n_pass=$(echo "$result" | cut -d' ' -f2)
    n_fail=$(echo "$result" | cut -d' ' -f3)
    passed=$((passed + n_pass))
    failed=$((failed + n_fail))
    if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
        echo "FAIL $t: exited with $rc"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
