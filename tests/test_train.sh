#!/bin/sh
# test_train.sh: end to end on real data. The CPU reference trains small networks on the
# first training images and must reach a TTA test accuracy far above chance (10%) on the
# first test images:
# - airbench94's recipe at widths 16,32,32 on 5,000 images for 3 epochs at batch 250.
#   Measured (2 cores, seed 1): 0.404 in 40 to 100 s;
# - 96-filter's (data filtering: a proxy of widths 8,16,16 scores each batch of 200 and the
#   depth-3 network trains on the 100 it finds hardest; continuous batches) at widths
#   16,32,32 on 3,000 images for 4 epochs. Measured (2 cores, seed 1): 0.278 in 38 s (the
#   96 recipe unfiltered on 5,000 images for 3 epochs: 0.345; filtering pays off late).
# The thresholds leave room for rounding changes.
data=${DATA_DIR:-data/cifar10}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
. "$(dirname "$0")/check.sh"

# train NAME THRESHOLD FLAGS...: airbench-ref with FLAGS must succeed and its run file's
# accuracy exceed THRESHOLD.
train() {
    name=$1 threshold=$2
    shift 2
    if build/airbench-ref --data "$data" --seed 1 --json "$out/$name.json" "$@" > "$out/$name.log" 2>&1; then
        pass
    else
        fail "airbench-ref ($name) exited with $?"
    fi
    cat "$out/$name.log"
    check_accuracy "$name" "$out/$name.json" "$threshold"
}

train 94 0.30 --widths 16,32,32 --train-subset 5000 --test-subset 1000 --epochs 3 --batch 250
train 96-filter 0.18 --variant 96-filter --widths 16,32,32 --set proxy_widths=8,16,16 --train-subset 3000 \
    --test-subset 500 --epochs 4 --batch 200 --set filter_keep=100
finish test_train
