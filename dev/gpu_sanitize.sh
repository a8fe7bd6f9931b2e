#!/bin/sh
# dev/gpu_sanitize.sh [LOGS]: compute-sanitizer's memcheck, racecheck, initcheck and
# synccheck, each over build/gpu_test_kernels --small and over a short airbench94 run (a
# few steps, 1,000 test images, cuDNN's heuristic algorithms, no warm-up run). Fails on any
# report. `make gpu-sanitize` builds both programs and runs it (from the repository root);
# CIFAR-10 in $DATA_DIR (default data/cifar10).
#
# Each step (tool x program) has a time limit, writes LOGS/<tool>-<program>.log (LOGS
# default build/sanitize), and prints its exit status, seconds and summary line; a table of
# all steps ends the output. A step fails when its exit status is not 0 (compute-sanitizer
# exits 3 when it reported anything, --error-exitcode; 124 is the time limit), or when its
# log has no summary line, or one with a count above 0: "ERROR SUMMARY: N errors", or for
# racecheck "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)", where every
# hazard counts, warnings too. Exit status: 0 when every step is clean, 1 otherwise, 2 when
# a program or the data is missing.
#
# Environment: COMPUTE_SANITIZER (default: compute-sanitizer on the PATH, else in
# $CUDA_HOME/bin); SANITIZE_TOOLS, SANITIZE_PROGRAMS (subsets of the defaults "memcheck
# racecheck initcheck synccheck" and "kernels trainer"); SANITIZE_TIMEOUT (seconds per
# step, default 300); SANITIZE_OPTIONS (more compute-sanitizer options for every step).
#
# Choices, made without a GPU to try them on:
# - memcheck of gpu_test_kernels adds --leak-check full: the test frees everything it
#   allocates (free_all), so a leak is its bug. The trainer's run goes without it: cuDNN
#   and cuBLAS may hold device memory of their own past their handles.
# - racecheck reports with --racecheck-report all: each hazard with both accesses, as well
#   as the analysis.
# - racecheck and synccheck check only our kernels in the trainer's run (--kernel-name
#   regex= of every *_kernel in kernels/*.cu): the shared memory and barriers of cuDNN's and
#   cuBLAS's kernels are theirs to get right, and racecheck would slow their convolutions
#   down by orders of magnitude. memcheck and initcheck check every kernel: a library
#   kernel that reads outside a buffer or reads unwritten memory is reading ours.
# - initcheck runs without --track-unused-memory, which reports allocations that are never
#   wholly used: not a bug here (the trainer sizes cuDNN's workspace for the largest
#   algorithm) and it would fail every run. And without filters: an uninitialized read
#   inside a cuDNN or cuBLAS kernel most likely reads one of our buffers that nothing wrote
#   (the trainer's gpu_alloc does not clear memory), which is what initcheck is for. If a
#   GPU run shows reports inside library kernels that are the library's own (workspace read
#   before written, by design), exclude those kernels with SANITIZE_OPTIONS="--exclude
#   kns=SUBSTRING" and write down here which and why. gpu_test_kernels fills all its
#   memory with 0xff bytes first (NaN: its own check for unwritten outputs), so there
#   initcheck can only see reads outside allocations; the trainer is where it matters.
set -u
logs=${1:-build/sanitize}
data=${DATA_DIR:-data/cifar10}
tools=${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}
programs=${SANITIZE_PROGRAMS:-kernels trainer}
limit=${SANITIZE_TIMEOUT:-300}
sanitizer=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")}

for word in $tools $programs; do
    case $word in memcheck | racecheck | initcheck | synccheck | kernels | trainer) ;; *)
        echo "dev/gpu_sanitize.sh: unknown tool or program $word" >&2
        exit 2 ;;
    esac
done
for f in "$sanitizer" build/gpu_test_kernels build/airbench94; do
    [ -x "$f" ] || { echo "dev/gpu_sanitize.sh: $f not found (make gpu-sanitize builds the programs)" >&2; exit 2; }
done
case " $programs " in *" trainer "*)
    [ -f "$data/test_batch.bin" ] || { echo "dev/gpu_sanitize.sh: no CIFAR-10 in $data (set DATA_DIR)" >&2; exit 2; } ;;
esac
mkdir -p "$logs" || exit 2

# Our kernels (kernels/*.cu names every __global__ function *_kernel), as a regex.
our_kernels=$(grep -ho '[A-Za-z0-9_]*_kernel(' kernels/*.cu | tr -d '(' | sort -u | paste -sd '|' -)

# The options of one tool for one program (choices above).
tool_options() {
    case $1-$2 in
        memcheck-kernels) echo "--leak-check full" ;;
        racecheck-kernels) echo "--racecheck-report all" ;;
        racecheck-trainer) echo "--racecheck-report all --kernel-name regex=($our_kernels)" ;;
        synccheck-trainer) echo "--kernel-name regex=($our_kernels)" ;;
    esac
}

# The last summary line of a log (without the "=========" prefix), or nothing.
summary_of() { grep -E "(ERROR|RACECHECK) SUMMARY:" "$1" | tail -n 1 | sed 's/^=* *//'; }

# Whether a log is clean: it has a summary line and none with a count above 0 (memcheck's
# leak summary included).
clean_log() {
    [ -n "$(summary_of "$1")" ] && ! grep -Eq "(ERROR|RACECHECK|LEAK) SUMMARY: [1-9]" "$1"
}

failures=0
table=""
for tool in $tools; do
    for program in $programs; do
        case $program in
            kernels) set -- build/gpu_test_kernels --small ;;
            trainer) set -- build/airbench94 --runs 1 --no-warmup --set epochs=0.05 --test-images 1000 \
                         --conv-algo heuristic --quiet --data "$data" ;;
        esac
        log="$logs/$tool-$program.log"
        echo "== $tool $program: $*"
        start=$(date +%s)
        # shellcheck disable=SC2046,SC2086 # the options are meant to split into words
        timeout -k 10 "$limit" "$sanitizer" --tool "$tool" --error-exitcode 3 $(tool_options "$tool" "$program") \
            ${SANITIZE_OPTIONS:-} "$@" > "$log" 2>&1
        rc=$?
        seconds=$(($(date +%s) - start))
        summary=$(summary_of "$log")
        if [ "$rc" -eq 0 ] && clean_log "$log"; then
            verdict=clean
        else
            verdict=FAILED
            failures=$((failures + 1))
            tail -n 20 "$log"
        fi
        echo "   $verdict: exit $rc after $seconds s; ${summary:-no summary line}"
        table="$table$(printf '%-10s %-8s %-6s exit %3d %5d s  %s' "$tool" "$program" "$verdict" "$rc" "$seconds" \
            "${summary:-no summary line}")
"
    done
done
echo "== compute-sanitizer summary (logs in $logs)"
printf '%s' "$table"
if [ "$failures" -gt 0 ]; then
    echo "dev/gpu_sanitize.sh: $failures step(s) failed"
    exit 1
fi
echo "dev/gpu_sanitize.sh: all clean"
