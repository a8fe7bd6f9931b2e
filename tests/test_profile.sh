#!/bin/sh
# test_profile.sh: dev/profile.sh's table from a saved ncu per-kernel summary
# (tests/fixtures/ncu_summary_sample.txt, written by hand so every figure below can be
# worked out: 2 loss_kernel launches; conv_kernel 4 x 10 us + 2 x 0.5 ms = 1040 us;
# loss_kernel 2 x 3 us; bn_apply_kernel 2 x 500 ns; 1047 us over 2 steps), and its errors.
# Needs no GPU and no ncu. Ends with the RESULT line of tests/run.sh.
sample=tests/fixtures/ncu_summary_sample.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

dev/profile.sh --parse "$sample" > "$tmp/table" 2> "$tmp/err"
check "parse exits 0" [ $? -eq 0 ]
check "header: steps and time per step" grep -q '^2 training steps in the window, 523.5 us of kernel time per step$' "$tmp/table"
# rows most time first; two launch shapes of conv_kernel added into one row; units ms and ns
check "conv_kernel first, 3 launches 520 us 99.3%" \
    sh -c "sed -n 3p '$tmp/table' | grep -q '^conv_kernel  *3.00  *520.0  *99.3%$'"
check "loss_kernel second, 1 launch 3 us" \
    sh -c "sed -n 4p '$tmp/table' | grep -q '^loss_kernel  *1.00  *3.0  *0.6%$'"
check "void and the parameter list stripped, template kept, ns read" \
    sh -c "sed -n 5p '$tmp/table' | grep -q '^bn_apply_kernel<(Activation)1>  *1.00  *0.5  *0.1%$'"
check "one row per kernel" [ "$(wc -l < "$tmp/table")" -eq 5 ]

# a window with no training step: a message and exit 1
grep -v -e '^  loss_kernel' "$sample" > "$tmp/no_loss.txt"
dev/profile.sh --parse "$tmp/no_loss.txt" > "$tmp/out" 2> "$tmp/err"
check "no loss_kernel exits 1" [ $? -eq 1 ]
check "no loss_kernel says why" grep -q 'holds no training step' "$tmp/err"

# bad usage and missing programs: exit 2 with a message
dev/profile.sh --parse "$tmp/missing.txt" > /dev/null 2> "$tmp/err"
check "unreadable file exits 2" [ $? -eq 2 ]
dev/profile.sh > /dev/null 2> "$tmp/err"
check "no arguments exits 2" [ $? -eq 2 ]
check "no arguments prints usage" grep -q '^usage: dev/profile.sh' "$tmp/err"
dev/profile.sh no-such-variant > /dev/null 2> "$tmp/err"
check "unbuilt trainer exits 2" [ $? -eq 2 ]
check "unbuilt trainer named" grep -q 'build/airbenchno-such-variant is not built' "$tmp/err"

finish test_profile
