#!/bin/sh
# test_cli.sh: bad flags and bad inputs of the programs give a message naming the flag or
# file and the right exit code, never a crash. The GPU trainer is run with no visible GPU.
data=${DATA_DIR:-data/cifar10}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

# expect CODE PATTERN COMMAND...: the command exits with CODE and its stderr matches PATTERN.
expect() {
    code=$1 pattern=$2
    shift 2
    "$@" > "$tmp/out" 2> "$tmp/err"
    rc=$?
    if [ "$rc" -eq "$code" ] && grep -q -- "$pattern" "$tmp/err"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $* -> exit $rc (want $code), stderr:"
        sed 's/^/    /' "$tmp/err"
        echo "    (wanted a line matching '$pattern')"
    fi
}

ref=build/airbench-ref
expect 2 "unknown flag '--bogus'" $ref --bogus
expect 2 "for --widths" $ref --widths 16,32
expect 2 "for --widths" $ref --widths 16,0,32
expect 2 "for --depth" $ref --depth 4
expect 2 "for --epochs" $ref --epochs -1
expect 2 "for --tta" $ref --tta 3
expect 2 "for --seed" $ref --seed abc
expect 2 "for --batch" $ref --batch
expect 2 "for --translate-mode" $ref --translate-mode sideways
expect 2 "for --variant" $ref --variant 97
expect 2 "larger than the 100 training images" $ref --train-subset 100 --batch 200
expect 1 "$tmp/nowhere/data_batch_1.bin" $ref --data "$tmp/nowhere"
head -c 1000 "$data/data_batch_1.bin" > "$tmp/data_batch_1.bin"
expect 1 "data_batch_1.bin has the wrong size" $ref --data "$tmp"
expect 1 "cannot write $tmp/no/such/dir/run.json" $ref --data "$data" --widths 8,8,8 --train-subset 64 \
    --test-subset 10 --batch 32 --epochs 1 --json "$tmp/no/such/dir/run.json"

gpu=build/airbench94
expect 2 "unknown flag '--bogus'" $gpu --bogus
expect 2 "for --runs" $gpu --runs 0
expect 2 "for --batch" $gpu --batch 100x
expect 2 "for --widths" $gpu --widths 16,32,30
expect 2 "for --env" $gpu --env novalue
expect 2 "for --tta" $gpu --tta 3
expect 2 "for --translate-mode" $gpu --translate-mode sideways
expect 2 "for --epochs" $gpu --epochs 0
expect 2 "for --seed" $gpu --seed abc
expect 2 "for --batch" $gpu --batch 1020
expect 2 "for --conv-algo" $gpu --conv-algo fastest
expect 2 "cannot write the run file $tmp/no/such/dir/run.json" $gpu --json "$tmp/no/such/dir/run.json"
expect 2 "no CUDA GPU found" env CUDA_VISIBLE_DEVICES= $gpu --runs 1
expect 2 "no CUDA GPU found" env CUDA_VISIBLE_DEVICES= $gpu --conv-algo heuristic --translate-mode derandomized \
    --tta 1 --epochs 0.5 --batch 512

echo "test_cli: $passed passed, $failed failed"
echo "RESULT $passed $failed"
[ "$failed" -eq 0 ]
