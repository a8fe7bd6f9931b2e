#!/bin/sh
# test_cli.sh: bad flags and bad inputs of the programs give a message naming the flag or
# file and the right exit code, never a crash. The GPU trainer is run with no visible GPU.
data=${DATA_DIR:-data/cifar10}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

# expect CODE PATTERN COMMAND...: the command exits with CODE and its stderr matches PATTERN.
expect() {
    code=$1 pattern=$2
    shift 2
    "$@" > "$tmp/out" 2> "$tmp/err"
    rc=$?
    if [ "$rc" -eq "$code" ] && grep -q -- "$pattern" "$tmp/err"; then
        pass
    else
        fail "$* -> exit $rc (want $code), stderr:"
        sed 's/^/    /' "$tmp/err"
        echo "    (wanted a line matching '$pattern')"
    fi
}

ref=build/airbench-ref
expect 2 "unknown flag '--bogus'" $ref --bogus
expect 2 "for --widths" $ref --widths 16,32
expect 2 "for --widths" $ref --widths 16,0,32
expect 2 "for --widths" $ref --widths 4294967304,64,64
expect 2 "for --depth" $ref --depth 4
expect 2 "for --epochs" $ref --epochs -1
expect 2 "for --epochs" $ref --epochs 1e-300
expect 2 "for --tta" $ref --tta 3
expect 2 "for --seed" $ref --seed abc
expect 2 "for --batch" $ref --batch
expect 2 "for --translate-mode" $ref --translate-mode sideways
expect 2 "for --variant" $ref --variant 97
expect 2 "'learning_rate' is not a recipe field" $ref --set learning_rate=1
expect 2 "lr expects a number" $ref --set lr=fast
expect 2 "exceeds the 100 training images" $ref --train-subset 100 --batch 200
expect 2 "filter_keep 2000 exceeds batch_size 1024" $ref --variant 96-filter --set filter_keep=2000
expect 2 "not Muon" $ref --variant 94-muon --set filter_keep=1000
expect 2 "batch_mode expects one of epoch continuous" $ref --set batch_mode=endless
expect 1 "$tmp/nowhere/data_batch_1.bin" $ref --data "$tmp/nowhere"
head -c 1000 "$data/data_batch_1.bin" > "$tmp/data_batch_1.bin"
expect 1 "data_batch_1.bin has the wrong size" $ref --data "$tmp"
expect 1 "cannot write the run file $tmp/no/such/dir/run.json" $ref --data "$data" --widths 8,8,8 --train-subset 64 \
    --test-subset 10 --batch 32 --epochs 1 --json "$tmp/no/such/dir/run.json"
# The divergence guard: a far too large step makes the loss rise above its first epoch's.
expect 1 "training diverged: the training loss rose above its first-epoch level" $ref --data "$data" \
    --widths 8,8,8 --train-subset 256 --test-subset 10 --batch 32 --epochs 3 --set lr=1e4 --set momentum=0.99 \
    --json "$tmp/diverged.json"
if grep -q '"diverged":[[:space:]]*true' "$tmp/diverged.json" 2>/dev/null; then
    pass
else
    fail "the diverged run is not marked \"diverged\": true in its run file"
fi
if build/airbench-ref --help | grep -q "label_smoothing *0.2 "; then
    pass
else
    fail "airbench-ref --help does not list the recipe fields with their values"
fi

gpu=build/airbench94
if [ ! -x $gpu ]; then
    echo "skip: the GPU trainer's command line ($gpu was not built: no CUDA here)"
else
    expect 2 "unknown flag '--bogus'" $gpu --bogus
    expect 2 "for --runs" $gpu --runs 0
    expect 2 "for --batch" $gpu --batch 100x
    expect 2 "bad widths 16,32,30" $gpu --widths 16,32,30
    expect 2 "for --widths" $gpu --widths 4294967304,64,64
    expect 2 "bad widths 8,16,4" $gpu --set widths=8,16,4
    expect 2 "for --env" $gpu --env novalue
    expect 2 "for --tta" $gpu --tta 3
    expect 2 "for --translate-mode" $gpu --translate-mode sideways
    expect 2 "for --epochs" $gpu --epochs 0
    expect 2 "for --epochs" $gpu --epochs 1e-300
    expect 2 "for --seed" $gpu --seed abc
    expect 2 "bad batch size 1020" $gpu --batch 1020
    expect 2 "bad filter_keep 500" $gpu --variant 96-filter --set filter_keep=500
    expect 2 "bad proxy_widths 32,64,60" $gpu --variant 96-filter --set proxy_widths=32,64,60
    expect 2 "for --conv-algo" $gpu --conv-algo fastest
    expect 2 "for --graphs" $gpu --graphs yes
    expect 2 "for --wgrad-stream" $gpu --wgrad-stream 2
    expect 2 "for --muon-streams" $gpu --muon-streams yes
    expect 2 "for --fused-bn" $gpu --fused-bn yes
    expect 2 "for --conv-graph" $gpu --conv-graph yes
    expect 2 "conv-algo heuristic times nothing" $gpu --conv-graph on --conv-algo heuristic
    # combinations refused before the GPU's start-up
    expect 2 "for the Muon recipes (94-muon, 94-record); airbench94 has no Muon step" $gpu --muon-streams on
    expect 2 "airbench96 as set has depth 3, bn_group 0" $gpu --variant 96 --fused-bn on
    expect 2 "airbench94 as set has depth 2, bn_group 256 of a batch of 1024" $gpu --fused-bn on --bn-group 256
    expect 2 "airbench96-filter as set has depth 2, bn_group 0 of a batch of 1024, filter_keep 512" $gpu \
        --variant 96-filter --fused-bn on --set depth=2
    expect 2 "for --stats-blocks" $gpu --stats-blocks 0
    expect 2 "for --stats-blocks" $gpu --stats-blocks 2049
    expect 2 "for --test-images" $gpu --test-images 0
    expect 2 "for --variant" $gpu --variant 97
    expect 2 "for --set" $gpu --set
    expect 2 "'learning_rate' is not a recipe field" $gpu --set learning_rate=1
    expect 2 "label_smoothing expects a number in" $gpu --set label_smoothing=1.5
    expect 2 "cannot write the run file $tmp/no/such/dir/run.json" $gpu --json "$tmp/no/such/dir/run.json"
    expect 2 "no CUDA GPU found" env CUDA_VISIBLE_DEVICES= $gpu --runs 1
    # every kind of valid flag gets through parsing to the GPU check
    expect 2 "no CUDA GPU found" env CUDA_VISIBLE_DEVICES= $gpu --conv-algo heuristic --translate-mode derandomized \
        --tta 1 --epochs 0.5 --batch 512 --set lr=11.0 --set label_smoothing=0.15 --variant 95 --no-warmup \
        --test-images 1000 --conv-cache "$tmp/cache.txt" --graphs on --wgrad-stream on --fused-bn on --stats-blocks 1024
    expect 2 "no CUDA GPU found" env CUDA_VISIBLE_DEVICES= $gpu --variant 94-record --muon-streams on --fused-bn on \
        --bn-group 1536
    expect 2 "no CUDA GPU found" env CUDA_VISIBLE_DEVICES= $gpu --conv-algo find --conv-graph always
    for program in airbench airbench94 airbench95 airbench96 airbench94-muon airbench94-record airbench96-filter; do
        want=$program
        [ $program = airbench ] && want=airbench94
        if build/$program --help | grep -q "Recipe fields of $want "; then
            pass
        else
            fail "build/$program --help does not describe the $want recipe"
        fi
    done
    if build/airbench --variant 96 --set lr=4 --help | grep -q "^  lr  *4  "; then
        pass
    else
        fail "--help does not show the recipe after --variant 96 --set lr=4"
    fi
fi

finish test_cli
