#!/bin/sh
# test_host.sh: the GPU tests on the CPU. build/host_test_kernels and build/host_test_trainer
# are tests/gpu_test_kernels.c (at the GPU's shapes) and tests/gpu_test_trainer.c linked
# with tests/host/'s stand-ins for the CUDA runtime, cuBLAS and cuDNN and with the project's
# own kernels run on the CPU by tests/emu/: every kernel against the reference, then the
# trainer's own C code (airbench.c, trainer.c, muon.c, graph.c) step by step against the
# reference; build/host_kernel_bench checks every kernel of dev/kernel_bench (v2s included).
# Then the trainer program itself, build/host_airbench, trains each variant for a
# few steps at small widths and writes its run file; three of them with --graphs on, whose
# report must show one graph made per step shape and every other step only updating one;
# the filter gradients on a second stream must give the same numbers, whatever order the
# streams run in, and so must each Muon group on a stream of its own; --fused-bn on nearly
# the same, and its own to the bit with the second
# stream and graphs; --conv-graph always the same; and a 59-step run of airbench94 must
# learn (accuracy far above chance). Needs CIFAR-10 in $DATA_DIR; HOST_BUILD names the
# folder of the programs (default build; make host-sanitize passes build/asan).
cd "$(dirname "$0")/.." || exit 2
. tests/check.sh

data=${DATA_DIR:-data/cifar10}
bin=${HOST_BUILD:-build}
run_counted host_test_kernels "$bin/host_test_kernels"
run_counted host_test_trainer env DATA_DIR="$data" "$bin/host_test_trainer"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# kernel_bench's harnesses and every kernel (v1 and any v2 in dev/) checked at batch 32
"$bin/host_kernel_bench" --batch 32 --reps 1 --warmup 0 > "$tmp/kernel_bench.log" 2>&1
status=$?
CHECK_OUT=$tmp/kernel_bench.log check "host_kernel_bench --batch 32: a check failed" [ $status -eq 0 ]
CHECK_OUT=$tmp/kernel_bench.log check "host_kernel_bench --batch 32: no kernel checked" \
    grep -q ' PASS$' "$tmp/kernel_bench.log"
# the per-channel reductions with more blocks than the default cap (up to 720 here)
"$bin/host_kernel_bench" --batch 256 --reps 1 --warmup 0 --stats-blocks 1024 --kernel stats --kernel reduce \
    --kernel whiten_bias --kernel maxpool2 --kernel finalize > "$tmp/kernel_bench_1024.log" 2>&1
status=$?
CHECK_OUT=$tmp/kernel_bench_1024.log check "host_kernel_bench --stats-blocks 1024: a check failed" [ $status -eq 0 ]
for variant in 94 95 96 94-muon 94-record 96-filter; do
    set -- --set epochs=0.005  # 4 steps
    [ $variant = 96-filter ] && set -- "$@" --set filter_keep=32 --set proxy_widths=8,16,16
    [ $variant = 95 ] && set -- "$@" --stats-blocks 512  # recorded in the run file
    case $variant in 94 | 94-record | 96-filter) graphs=on ;; *) graphs=off ;; esac
    "$bin/host_airbench" --variant $variant --data "$data" --widths 16,32,32 --batch 64 --test-images 64 --runs 1 \
        --no-warmup --graphs $graphs --json "$tmp/$variant.json" "$@" > "$tmp/$variant.log" 2>&1
    status=$?
    CHECK_OUT=$tmp/$variant.log check "host_airbench --variant $variant --graphs $graphs" [ $status -eq 0 ]
    check "$variant: the run file holds no finished run with an accuracy" \
        grep -q '"accuracy":[[:space:]]*0\.[0-9]' "$tmp/$variant.json"
    blocks=256
    [ $variant = 95 ] && blocks=512
    check "$variant: the run file's config does not record stats_blocks $blocks" \
        grep -Eq "\"stats_blocks\":[[:space:]]*$blocks([,}]|\$)" "$tmp/$variant.json"
    if [ $graphs = on ]; then
        # 4 steps, each shape's first made: with the whitening bias training throughout
        # and lookahead at most at the last step, 1 or 2 made and the rest updated
        check "$variant: not 4 graphs made or updated in all: $(grep 'CUDA graphs' "$tmp/$variant.log")" \
            awk '/^CUDA graphs:/ { made = $3; updated = $5; found = 1 }
                 END { exit !(found && made >= 1 && made <= 2 && made + updated == 4) }' "$tmp/$variant.log"
    fi
done

# The filter gradients on a second stream (--wgrad-stream on) give the same numbers to the
# bit as without, also when the stand-in runs the two streams' calls in adversarial orders
# (HOST_STREAMS=late: the filter stream's as late as the events allow, early: as early), so
# that a missing event would change them; and with graphs on, whose capture must take the
# second stream in and join it back. airbench94, 94-record (Muon) and 96-filter (depth 3 and
# the residual; a proxy without the second stream), 8 steps each.
numbers() { grep -E '"(accuracy|train_loss|train_acc|test_acc)":' "$1"; }
for variant in 94 94-record 96-filter; do
    set -- --variant $variant --data "$data" --widths 16,32,32 --batch 64 --test-images 64 --runs 1 --no-warmup \
        --set epochs=0.01
    [ $variant = 96-filter ] && set -- "$@" --set filter_keep=32 --set proxy_widths=8,16,16
    "$bin/host_airbench" "$@" --json "$tmp/streams-$variant.json" > "$tmp/streams-$variant.log" 2>&1
    CHECK_OUT=$tmp/streams-$variant.log check "host_airbench --variant $variant (one stream)" [ $? -eq 0 ]
    numbers "$tmp/streams-$variant.json" > "$tmp/streams-$variant.numbers"
    for how in late:off early:off late:on now:on; do
        mode=${how%:*} graphs=${how#*:} name=streams-$variant-$mode-$graphs
        HOST_STREAMS=$mode "$bin/host_airbench" "$@" --wgrad-stream on --graphs $graphs --json "$tmp/$name.json" \
            > "$tmp/$name.log" 2>&1
        CHECK_OUT=$tmp/$name.log check "HOST_STREAMS=$mode host_airbench --variant $variant --wgrad-stream on" [ $? -eq 0 ]
        numbers "$tmp/$name.json" > "$tmp/$name.numbers"
        check "$variant --wgrad-stream on --graphs $graphs, HOST_STREAMS=$mode: the numbers differ from one stream's" \
            cmp -s "$tmp/streams-$variant.numbers" "$tmp/$name.numbers"
    done
    check "$variant: too few numbers to compare" [ "$(grep -c . "$tmp/streams-$variant.numbers")" -ge 4 ]
done

# Each Muon group's Newton-Schulz on a stream of its own (--muon-streams on): the same
# numbers to the bit as one stream, also with the group streams run as late as their events
# allow (a missing join would let the weights' step read unfinished products) or as early (a
# missing fork would let a group read updates not yet scaled), and with graphs, whose capture
# must take every group's stream in and join it back; with the filter stream beside them.
# airbench94-muon and 94-record: four groups each at widths 16/32/32. A recipe without Muon
# is refused.
for variant in 94-muon 94-record; do
    set -- --variant $variant --data "$data" --widths 16,32,32 --batch 64 --test-images 64 --runs 1 --no-warmup \
        --set epochs=0.01
    "$bin/host_airbench" "$@" --json "$tmp/muon-$variant.json" > "$tmp/muon-$variant.log" 2>&1
    CHECK_OUT=$tmp/muon-$variant.log check "host_airbench --variant $variant (one stream)" [ $? -eq 0 ]
    numbers "$tmp/muon-$variant.json" > "$tmp/muon-$variant.numbers"
    for how in now:off late:off early:off late:on; do
        mode=${how%:*} graphs=${how#*:} name=muon-$variant-$mode-$graphs
        HOST_STREAMS=$mode "$bin/host_airbench" "$@" --muon-streams on --wgrad-stream on --graphs $graphs \
            --json "$tmp/$name.json" > "$tmp/$name.log" 2>&1
        CHECK_OUT=$tmp/$name.log check "HOST_STREAMS=$mode host_airbench --variant $variant --muon-streams on" \
            [ $? -eq 0 ]
        numbers "$tmp/$name.json" > "$tmp/$name.numbers"
        check "$variant --muon-streams on --graphs $graphs, HOST_STREAMS=$mode: the numbers differ from one stream's" \
            cmp -s "$tmp/muon-$variant.numbers" "$tmp/$name.numbers"
    done
    check "$variant: too few numbers to compare" [ "$(grep -c . "$tmp/muon-$variant.numbers")" -ge 4 ]
    check "$variant: the run file's config does not record muon_streams" \
        grep -Eq '"muon_streams":[[:space:]]*true' "$tmp/muon-$variant-late-on.json"
done
"$bin/host_airbench" --variant 94 --data "$data" --widths 16,32,32 --batch 64 --test-images 64 --runs 1 \
    --no-warmup --set epochs=0.01 --muon-streams on > "$tmp/muon-94.log" 2>&1
CHECK_OUT=$tmp/muon-94.log check "--muon-streams on with airbench94 (no Muon) exits 2" [ $? -eq 2 ]
CHECK_OUT=$tmp/muon-94.log check "--muon-streams on with airbench94 says why" grep -q "for the Muon recipes" \
    "$tmp/muon-94.log"

# --fused-bn on (the BatchNorm backward's reduction inside the dgrad graphs, run here by
# tests/host/cudnn_graph_host.c): airbench94 trains 8 steps to nearly the unfused numbers
# (other rounding: first-epoch loss within 1e-5, measured 2e-7; host_test_trainer compares
# the gradients themselves); airbench94-record (Muon, SiLU) to the same bits with the filter
# stream (HOST_STREAMS=late) and graphs as without; a recipe it does not fit is refused.
loss() { sed -n 's/.*"train_loss":[[:space:]]*\([0-9.e+-]*\).*/\1/p' "$1" | head -n 1; }
set -- --data "$data" --widths 16,32,32 --batch 64 --test-images 64 --runs 1 --no-warmup --set epochs=0.01
"$bin/host_airbench" --variant 94 "$@" --fused-bn on --json "$tmp/fused-94.json" > "$tmp/fused-94.log" 2>&1
CHECK_OUT=$tmp/fused-94.log check "host_airbench --variant 94 --fused-bn on" [ $? -eq 0 ]
check "--fused-bn on: the first epoch's loss $(loss "$tmp/fused-94.json") not within 1e-5 of $(loss "$tmp/streams-94.json")" \
    awk -v a="$(loss "$tmp/fused-94.json")" -v b="$(loss "$tmp/streams-94.json")" \
    'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 1e-5 * b) }'
"$bin/host_airbench" --variant 94-record "$@" --fused-bn on --json "$tmp/fused.json" > "$tmp/fused.log" 2>&1
CHECK_OUT=$tmp/fused.log check "host_airbench --variant 94-record --fused-bn on" [ $? -eq 0 ]
HOST_STREAMS=late "$bin/host_airbench" --variant 94-record "$@" --fused-bn on --wgrad-stream on --graphs on \
    --json "$tmp/fused-late.json" > "$tmp/fused-late.log" 2>&1
CHECK_OUT=$tmp/fused-late.log check "HOST_STREAMS=late host_airbench --fused-bn on --wgrad-stream on --graphs on" [ $? -eq 0 ]
numbers "$tmp/fused.json" > "$tmp/fused.numbers"
numbers "$tmp/fused-late.json" > "$tmp/fused-late.numbers"
check "--fused-bn on: the filter stream and graphs change the numbers" cmp -s "$tmp/fused.numbers" "$tmp/fused-late.numbers"
check "--fused-bn on: too few numbers to compare" [ "$(grep -c . "$tmp/fused.numbers")" -ge 4 ]
"$bin/host_airbench" --variant 96 "$@" --fused-bn on > "$tmp/fused-96.log" 2>&1
CHECK_OUT=$tmp/fused-96.log check "--fused-bn on with airbench96 (depth 3) exits 2" [ $? -eq 2 ]
CHECK_OUT=$tmp/fused-96.log check "--fused-bn on with airbench96 says why" grep -q "for the depth-2 networks" "$tmp/fused-96.log"

# --conv-graph always: every conv direction at the training batch through a graph plan, chosen
# by conv_graph.c's timing and checks and run by tests/host/cudnn_graph_host.c, whose
# convolutions sum as conv_host.c's do: the same numbers to the bit here (on a GPU, other
# engines round otherwise). airbench94 with graphs and the filter stream (HOST_STREAMS=late),
# and 96-filter: depth 3, where the residual's accumulating input gradient keeps the legacy
# call, and the proxy's convs.
for variant in 94 96-filter; do
    set -- --variant $variant --data "$data" --widths 16,32,32 --batch 64 --test-images 64 --runs 1 --no-warmup \
        --set epochs=0.01
    directions=18
    [ $variant = 96-filter ] && set -- "$@" --set filter_keep=32 --set proxy_widths=8,16,16 && directions=27
    HOST_STREAMS=late "$bin/host_airbench" "$@" --conv-graph always --wgrad-stream on --graphs on \
        --json "$tmp/conv-graph-$variant.json" > "$tmp/conv-graph-$variant.log" 2>&1
    CHECK_OUT=$tmp/conv-graph-$variant.log check "host_airbench --variant $variant --conv-graph always" [ $? -eq 0 ]
    CHECK_OUT=$tmp/conv-graph-$variant.log check "$variant --conv-graph always: not all $directions directions" \
        grep -q "^--conv-graph always: $directions of the $directions conv directions" "$tmp/conv-graph-$variant.log"
    numbers "$tmp/conv-graph-$variant.json" > "$tmp/conv-graph-$variant.numbers"
    check "$variant --conv-graph always: the numbers differ from the legacy calls'" \
        cmp -s "$tmp/streams-$variant.numbers" "$tmp/conv-graph-$variant.numbers"
    check "$variant: the run file's config does not record conv_graph always" \
        grep -Eq '"conv_graph":[[:space:]]*"always"' "$tmp/conv-graph-$variant.json"
done
# An engine config that plans but refuses to run (the stand-in's fallback configs with
# HOST_CUDNN_EXECUTE=refuse-fallback) is left out of the choice, not fatal.
HOST_CUDNN_EXECUTE=refuse-fallback "$bin/host_airbench" --variant 94 --data "$data" --widths 16,32,32 --batch 64 \
    --test-images 64 --runs 1 --no-warmup --set epochs=0.005 --conv-graph always > "$tmp/conv-graph-refused.log" 2>&1
CHECK_OUT=$tmp/conv-graph-refused.log check "--conv-graph always with configs that refuse to run" [ $? -eq 0 ]
CHECK_OUT=$tmp/conv-graph-refused.log check "--conv-graph always: a config that refused to run was kept or not counted" \
    awk '/^conv .*: legacy/ { n++; if (!/1 more failed to run/ || !/kept engine 0 \(config 0\)/) bad = 1 }
         END { exit !(n == 18 && !bad) }' "$tmp/conv-graph-refused.log"

# The trainer learns: airbench94's recipe at widths 16,32,32 and batch 256 for 0.3 epochs (59
# steps, the whole schedule: warm-up, decay, the whitening bias's freeze, lookahead) with
# graphs on, to a TTA accuracy far above chance (10%) on 1,000 test images. Measured (2
# cores, seed 1): 0.415 in 61 s.
"$bin/host_airbench" --variant 94 --data "$data" --widths 16,32,32 --batch 256 --set epochs=0.3 --test-images 1000 \
    --runs 1 --no-warmup --seed 1 --graphs on --json "$tmp/learn.json" > "$tmp/learn.log" 2>&1
status=$?
CHECK_OUT=$tmp/learn.log check "host_airbench, 59 steps of airbench94 at widths 16,32,32" [ $status -eq 0 ]
CHECK_OUT=$tmp/learn.log check_accuracy "host_airbench, 59 steps of airbench94 at widths 16,32,32" "$tmp/learn.json" 0.30
finish test_host
