#!/bin/sh
# dev/profile.sh VARIANT [TRAINER FLAGS...]: where a training step's GPU time goes, per kernel.
#
# Runs build/airbench<VARIANT> under Nsight Compute (ncu, GPU time only: no cache flush, no
# clock control, so the kernels run as in a benchmark) over a window of its launches, then
# prints one row per kernel, most time first: launches per training step, microseconds per
# step, and the share of the window's kernel time. A training step is one launch of
# loss_kernel (the loss runs once per step and nowhere else), so the per-step numbers hold
# whatever the window holds; kernels of the per-epoch evaluations show as fractions.
#   PROFILE_SKIP    launches skipped first (default 3000: initialization and the first
#                   epochs' steps, with the warm-up run off)
#   PROFILE_COUNT   launches profiled (default 1500, some 20 steps of airbench94)
#   NCU             the ncu program (default: ncu on the PATH)
#   PROFILE_RAW     a file to keep ncu's own output in (default: not kept)
# dev/profile.sh --parse FILE reads a saved ncu per-kernel summary instead (what the table
# is made from; tests/test_profile.sh uses it). Exit status: 0 fine, 1 ncu or the trainer
# failed or the window held no training step, 2 bad usage.
set -u

usage() {
    echo "usage: dev/profile.sh VARIANT [TRAINER FLAGS...] | dev/profile.sh --parse NCU_OUTPUT" >&2
    exit 2
}

# The table from ncu's --print-summary per-kernel text on stdin. An entry is a line
#   "  NAME(ARGS) (GRID)x(BLOCK), Device 0, CC 9.0, Invocations N"
# followed by a metrics table whose gpu__time_duration.sum row ends in the average; the
# same kernel at several launch shapes is several entries, added up here.
per_kernel_table() {
    rows=$(awk '
    / Invocations [0-9]+$/ && /\)x\(/ {
        name = $0
        sub(/^ +/, "", name)
        sub(/ \([0-9]+, [0-9]+, [0-9]+\)x\(.*$/, "", name)  # launch shape and the rest
        sub(/\([^()]*\)$/, "", name)                          # the parameter list
        sub(/^void /, "", name)
        invocations = $NF
        next
    }
    /gpu__time_duration.sum/ && name != "" {
        scale = $2 == "ns" ? 0.001 : $2 == "ms" ? 1000 : $2 == "s" ? 1e6 : 1  # to microseconds
        us[name] += invocations * $NF * scale
        launches[name] += invocations
        total += invocations * $NF * scale
        name = ""
    }
    END {
        steps = launches["loss_kernel"]
        if (steps == 0) {
            print "dev/profile.sh: the profiled window holds no training step (no loss_kernel launch); " \
                  "change PROFILE_SKIP or PROFILE_COUNT" > "/dev/stderr"
            exit 1
        }
        # sort key (us per step; the header lines first), a tab, the line
        printf "9e99\t%d training steps in the window, %.1f us of kernel time per step\n", steps, total / steps
        printf "8e99\t%-60s %10s %10s %7s\n", "kernel", "per step", "us/step", "share"
        for (k in us)
            printf "%.6f\t%-60.60s %10.2f %10.1f %6.1f%%\n", us[k] / steps, k, launches[k] / steps, us[k] / steps,
                   100 * us[k] / total
    }') || return 1
    printf '%s\n' "$rows" | sort -g -r -k1,1 | cut -f2-
}

if [ "${1:-}" = "--parse" ]; then
    [ $# -eq 2 ] && [ -r "$2" ] || usage
    per_kernel_table < "$2"
    exit $?
fi
[ $# -ge 1 ] || usage
variant=${1#airbench}
shift
trainer=build/airbench$variant
[ -x "$trainer" ] || { echo "dev/profile.sh: $trainer is not built (make $trainer)" >&2; exit 2; }
ncu=${NCU:-ncu}
command -v "$ncu" > /dev/null || { echo "dev/profile.sh: no ncu (Nsight Compute) on the PATH; set NCU" >&2; exit 2; }
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT
"$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
    --launch-skip "${PROFILE_SKIP:-3000}" --launch-count "${PROFILE_COUNT:-1500}" --print-summary per-kernel \
    "$trainer" --runs 1 --quiet --no-warmup "$@" > "$log" 2>&1 ||
    { tail -n 20 "$log" >&2; echo "dev/profile.sh: ncu or the trainer failed (above)" >&2; exit 1; }
[ -z "${PROFILE_RAW:-}" ] || cp "$log" "$PROFILE_RAW" || exit 1
per_kernel_table < "$log"
