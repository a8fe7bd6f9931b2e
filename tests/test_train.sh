#!/bin/sh
# test_train.sh: end to end on real data. The CPU reference trains a small network
# (widths 16,32,32) on the first 5,000 training images for 3 epochs at batch 250 and must
# reach a TTA test accuracy far above chance (10%) on the first 1,000 test images.
# Measured (2 cores, seed 1): 0.404 in 40 to 100 s; the threshold leaves room for rounding
# changes.
THRESHOLD=0.30
data=${DATA_DIR:-data/cifar10}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0
failed=0
if build/airbench-ref --data "$data" --widths 16,32,32 --train-subset 5000 --test-subset 1000 \
        --epochs 3 --batch 250 --seed 1 --json "$out/run.json" > "$out/log" 2>&1; then
    passed=$((passed + 1))
else
    echo "FAIL airbench-ref exited with $?"; cat "$out/log"; failed=$((failed + 1))
fi
cat "$out/log"
acc=$(grep -o '"accuracy":[[:space:]]*[0-9.e-]*' "$out/run.json" 2>/dev/null | head -n 1 | sed 's/.*:[[:space:]]*//')
if [ -n "$acc" ] && awk -v a="$acc" -v t="$THRESHOLD" 'BEGIN { exit !(a > t) }'; then
    echo "TTA accuracy $acc > $THRESHOLD"
    passed=$((passed + 1))
else
    echo "FAIL TTA accuracy '${acc:-missing}' is not above $THRESHOLD"
    failed=$((failed + 1))
fi
echo "RESULT $passed $failed"
[ "$failed" -eq 0 ]
