#!/bin/sh
# gpu_test_repro.sh: the reproducibility promise, on a GPU. The same trainer binary, GPU,
# driver, cuDNN and seed give bit-identical per-epoch losses and accuracies and final
# accuracy in two separate processes. The second process reads the cuDNN algorithms the
# first one timed from a fresh algorithm cache, as every later process does; that is what
# keeps cuDNN's timing noise out of the numbers. A third process runs with --graphs on: the
# CUDA graphs replay the same kernels with the same arguments, so its numbers must be the
# same bits too; so must a fourth's with --wgrad-stream on (the same convolutions on a second
# stream, ordered by events: a missing event would read a buffer too early or too late).
# With --fused-bn on (other rounding, so other numbers) a fifth and a sixth process, the
# sixth with graphs and the second stream, must agree with each other to the bit, for the
# recipes it fits. With --conv-graph on (graph-API engines where faster, other rounding) a
# seventh process times and records its choice under the cache's "/graph" key and an eighth,
# with graphs and the second stream, reads it: the same bits again. For the Muon recipes a
# ninth process runs with --muon-streams on and graphs (each group's Newton-Schulz on a
# stream and cuBLAS handle of its own: the same GEMMs) and must give the first one's bits.
# Checked for airbench94, airbench94-record (Muon's cuBLAS calls inside the graphs) and
# airbench96-filter (whose proxy network scores and selects on the GPU first);
# TRAINERS names others. Needs a GPU and CIFAR-10 in $DATA_DIR.
data=${DATA_DIR:-data/cifar10}
trainers=${TRAINERS:-build/airbench94 build/airbench94-record build/airbench96-filter}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

# Every number that training and evaluation produce (not times), one per line, in file order.
numbers() { grep -E '"(accuracy|train_loss|train_acc|test_acc)":' "$1"; }

# same_numbers K WHAT [BASE]: process K's numbers must be process BASE's (default 1), bit for bit.
same_numbers() {
    base=${3:-1}
    if cmp -s "$tmp/numbers$base" "$tmp/numbers$1"; then
        pass
        echo "$2: $(grep -c . "$tmp/numbers$base") numbers bit-identical"
    else
        fail "$2: the numbers differ:"
        diff "$tmp/numbers$base" "$tmp/numbers$1" | head -n 20
    fi
}

for trainer in $trainers; do
    rm -f "$tmp"/*
    processes="1 2 3 4"
    case $trainer in *airbench94 | *airbench94-muon | *airbench94-record) processes="$processes 5 6" ;; esac
    processes="$processes 7 8"
    case $trainer in *airbench94-muon | *airbench94-record) processes="$processes 9" ;; esac
    for k in $processes; do
        graphs=off wgrad_stream=off fused_bn=off conv_graph=off muon_streams=off
        case $k in
            3) graphs=on ;;
            4) wgrad_stream=on ;;
            5) fused_bn=on ;;
            6) fused_bn=on graphs=on wgrad_stream=on ;;
            7) conv_graph=on ;;
            8) conv_graph=on graphs=on wgrad_stream=on ;;
            9) muon_streams=on graphs=on ;;
        esac
        "$trainer" --data "$data" --runs 2 --seed 5 --set epochs=2 --quiet --conv-cache "$tmp/algos.txt" \
            --graphs $graphs --wgrad-stream $wgrad_stream --fused-bn $fused_bn --conv-graph $conv_graph \
            --muon-streams $muon_streams --json "$tmp/run$k.json" > "$tmp/log$k" 2>&1
        rc=$?
        check "process $k: $trainer exited with $rc ($(tail -n 3 "$tmp/log$k"))" [ "$rc" -eq 0 ]
    done
    check "the first process of $trainer recorded no algorithms in the cache $tmp/algos.txt" \
        [ "$(grep -c '|' "$tmp/algos.txt" 2>/dev/null)" -ge 1 ]
    for k in $processes; do numbers "$tmp/run$k.json" > "$tmp/numbers$k"; done
    check "the run file of $trainer holds too few numbers to compare" [ "$(grep -c . "$tmp/numbers1")" -ge 10 ]
    same_numbers 2 "$trainer, two processes, seeds 5 and 6"
    same_numbers 3 "$trainer with --graphs on against the run without graphs"
    same_numbers 4 "$trainer with --wgrad-stream on against the run without"
    [ -f "$tmp/numbers6" ] && same_numbers 6 "$trainer --fused-bn on, with and without graphs and the second stream" 5
    check "the --conv-graph on process of $trainer recorded no choice in the cache $tmp/algos.txt" \
        [ "$(grep -c '/graph|' "$tmp/algos.txt" 2>/dev/null)" -ge 1 ]
    same_numbers 8 "$trainer --conv-graph on, timed and then from the cache with graphs and the second stream" 7
    [ -f "$tmp/numbers9" ] && same_numbers 9 "$trainer with --muon-streams on and graphs against the run without"
    check "$trainer: cuDNN offered a nondeterministic algorithm only for some conv (conv_deterministic is false)" \
        grep -q '"conv_deterministic":[[:space:]]*true' "$tmp/run1.json"
done

finish gpu_test_repro
