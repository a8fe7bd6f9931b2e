#!/bin/sh
# test_fusion.sh: build/fusion_bench without a GPU. Its command line and errors; the
# fusion graphs as cuDNN judges them for an H100 (dev/fusion/h100-sxm-handwritten.json,
# deviceless plans): the unfused graphs get plans, and the fusions the speed work counts on
# are accepted, their kernels compiled (loading them needs the GPU; cuDNN's runtime-fusion
# engines load libcuda.so.1 even to compile, so a machine without a driver gets the CUDA
# toolkit's stub), and --all-engines lists every engine config of the first conv's filter
# gradient; and the GPU way on the CPU (build/host_fusion_bench: the graphs run by
# tests/host/cudnn_graph_host.c, the unfused way by the project's kernels on tests/emu/):
# every fusion agrees with the kernels, and outputs a reduction adds to instead of writing
# are caught. Ends with the RESULT line of tests/run.sh.
bench=build/fusion_bench
device=dev/fusion/h100-sxm-handwritten.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/check.sh"

"$bench" --help > "$tmp/out" 2>&1
check "--help exits 0" [ $? -eq 0 ]
check "--help names the fusions" grep -q "dgrad+bn-reduce" "$tmp/out"

bad() {  # bad WHAT MESSAGE ARGS...: exit 2 and a message saying what is wrong
    what=$1 message=$2
    shift 2
    "$bench" "$@" > "$tmp/out" 2> "$tmp/err"
    check "$what exits 2" [ $? -eq 2 ]
    check "$what says so" grep -q -- "$message" "$tmp/err"
}
bad "unknown fusion" "no fusion named 'nope'" --only fprop,nope
bad "bad conv" "want G.J" --conv 3.1
bad "widths not multiples of 8" "three multiples of 8" --widths 63,256,256
bad "unknown flag" "unknown flag --frob" --frob 1
bad "missing device file" "cannot open the device-properties file" --device-json "$tmp/none.json"
echo '{"deviceName": "half a description"}' > "$tmp/bad.json"
bad "device file cuDNN refuses" "cuDNN refused the device properties" --device-json "$tmp/bad.json"
if ! nvidia-smi -L > /dev/null 2>&1; then
    "$bench" > "$tmp/out" 2> "$tmp/err"
    check "no GPU and no --device-json exits 2" [ $? -eq 2 ]
    check "no GPU: points to --device-json" grep -q -- "--device-json" "$tmp/err"
fi

# The stub driver, unless a real one is installed.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    cuda=${CUDA_HOME:-/usr/local/cuda}
    for stub in "$cuda/lib64/stubs/libcuda.so" "$cuda/targets/x86_64-linux/lib/stubs/libcuda.so"; do
        [ -f "$stub" ] && ln -s "$stub" "$tmp/libcuda.so.1" && break
    done
    LD_LIBRARY_PATH=$tmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
fi

# A line of the plans: conv G.J, its shape, the fusion, then "engine N/C, ..." (planned by
# engine N, the heuristics' config C) or "engine N (config C) (runtime fusion) compiled its
# kernel; ..." (accepted).
line() { awk -v conv="$1" -v fusion="$2" '$1 == conv && $3 == fusion' "$tmp/plans"; }
planned() { line "$1" "$2" | grep -E -q '^[^ ]+ +[^ ]+ +[^ ]+ +engine [0-9]+/[0-9]+( rtc)?( nondet)?,'; }
accepted() {
    planned "$1" "$2" || line "$1" "$2" | grep -q 'engine [0-9]* (config [0-9]*) (runtime fusion) compiled its kernel'
}

"$bench" --device-json "$device" --conv 2.1 --only fprop,dgrad,wgrad,fprop+genstats > "$tmp/plans" 2> "$tmp/err"
check "precompiled plans: exit 0" [ $? -eq 0 ]
check "the H100 description accepted" grep -q "plans only, for the GPU described by $device" "$tmp/plans"
check "unfused fprop planned" planned 2.1 "fprop"
check "unfused wgrad planned" planned 2.1 "wgrad"
check "unfused dgrad planned" planned 2.1 "dgrad"
check "fprop+genstats planned" planned 2.1 "fprop+genstats"

# Runtime fusion: each compile takes seconds, so one conv and the fusions that count.
"$bench" --device-json "$device" --conv 1.0 --only "dgrad+bn-reduce,bnact+fprop" > "$tmp/plans" 2> "$tmp/err"
check "runtime-fusion plans: exit 0" [ $? -eq 0 ]
check "dgrad + GELU' + both BatchNorm sums, deterministic: accepted" accepted 1.0 "dgrad+bn-reduce"
check "BatchNorm + GELU prologue before fprop: accepted" accepted 1.0 "bnact+fprop"
check "no fusion fell back to atomics" sh -c "! grep -q atomic '$tmp/plans'"

# Every engine config of the first conv's filter gradient (7% of a step at 790450e): one
# line each, the configs in the heuristics' order, more than one engine among them.
"$bench" --device-json "$device" --conv 0.0 --only wgrad --all-engines > "$tmp/plans" 2> "$tmp/err"
check "--all-engines: exit 0" [ $? -eq 0 ]
check "--all-engines: several wgrad configs planned" [ "$(line 0.0 wgrad | grep -c ' engine ')" -gt 5 ]
configs_in_order() {
    line 0.0 wgrad | awk '{ split($5, e, "/"); c = e[2] + 0; if (seen && c <= last) bad = 1; seen = 1; last = c }
                          END { exit bad }'
}
check "--all-engines: configs in order, none twice" configs_in_order
check "--all-engines: more than one engine" [ "$(line 0.0 wgrad | awk '{ split($5, e, "/"); print e[1] }' | sort -u | wc -l)" -gt 1 ]

# The GPU way on the CPU, at a small batch and widths.
small="--batch 8 --widths 16,32,32 --reps 1"
# shellcheck disable=SC2086 # $small is a list of flags
build/host_fusion_bench $small > "$tmp/run" 2> "$tmp/err"
check "on the CPU: exit 0" [ $? -eq 0 ]
# 49 = fprop and wgrad at 0.0; 11 at each second conv (0.1, 1.1, 2.1: fprop, its three
# statistics fusions, the two prologues, the four dgrads, wgrad); 7 at 1.0 and 2.0 (no
# statistics after a pool)
check "on the CPU: every fusion at every conv where it fits ran and repeats its bits (49)" \
    [ "$(grep -c ' yes$' "$tmp/run")" -eq 49 ]
check "on the CPU: no result beyond its bound" sh -c "! grep -q WRONG '$tmp/run'"
# --all-engines runs each config the heuristics offer: the stand-in's two (mode A's and the
# fallback's), each checked
# shellcheck disable=SC2086
build/host_fusion_bench $small --conv 1.0 --only wgrad --all-engines > "$tmp/run" 2> "$tmp/err"
check "on the CPU, --all-engines: exit 0" [ $? -eq 0 ]
check "on the CPU, --all-engines: configs 0 and 1 ran and agree" \
    [ "$(grep -cE '^1\.0 .* wgrad +engine 0/[01], .* yes$' "$tmp/run")" -eq 2 ]
# shellcheck disable=SC2086
HOST_CUDNN_REDUCE=accumulate build/host_fusion_bench $small --conv 2.1 > "$tmp/run" 2> "$tmp/err"
check "reductions that accumulate: exit 1" [ $? -eq 1 ]
check "reductions that accumulate: said" grep -q "differs from the unfused one" "$tmp/err"
check "reductions that accumulate: every fusion with statistics WRONG (6)" [ "$(grep -c 'WRONG$' "$tmp/run")" -eq 6 ]
check "reductions that accumulate: the others right" grep -q "^2.1 .* dgrad+act' .* yes$" "$tmp/run"

finish test_fusion
