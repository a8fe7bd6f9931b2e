#!/bin/sh
# test_run_peer.sh: dev/run_peer.py's own tests (its parser of the PyTorch scripts' tables,
# names, run files), through python3's unittest; skipped, with a line saying so, where there
# is no python3. Ends with the RESULT line of tests/run.sh.
if ! command -v python3 > /dev/null; then
    echo "skip: dev/test_run_peer.py (no python3)"
    echo "RESULT 0 0"
    exit 0
fi
out=$(python3 dev/test_run_peer.py 2>&1)
status=$?
printf '%s\n' "$out" | tail -n 5
tests=$(printf '%s\n' "$out" | sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p')
if [ "$status" -eq 0 ] && [ -n "$tests" ]; then
    echo "RESULT $tests 0"
else
    echo "RESULT 0 1"
fi
[ "$status" -eq 0 ]
