#!/bin/sh
# run.sh TEST...: runs each test program, shows its output and how long it took, and ends
# with the suite's total "N passed, N failed". A test that crashes or prints no RESULT line
# counts as one failure. Exits non-zero if anything failed.
. "$(dirname "$0")/check.sh"
for t in "$@"; do
    echo "== $t"
    start=$(date +%s)
    run_counted "$t" "$t"
    echo "== $t took $(($(date +%s) - start)) s"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
