#!/usr/bin/env bash
# bench.sh: time many seeded training runs of one airbench.c variant on this machine's GPU,
# save them as a run file, and summarize them with build/benchstat.
#
#   ./bench.sh [VARIANT] [-n RUNS] [--seed S] [--data DIR] [--baseline FILE] [--check]
#              [--time-tolerance PCT] [--out FILE] [--plot] [-- TRAINER FLAGS...]
#
# Steps: check the arguments; check for a GPU (nvidia-smi); build the trainer and benchstat
# with make (CUDA_HOME, CUDNN_HOME, CJSON_HOME are passed through); fetch CIFAR-10 if it is
# missing; run build/airbenchVARIANT --runs N --seed S (seeds S..S+N-1, after the
# trainer's own warm-up run) with the GPU's name, driver and clocks, the git state, the
# host and this command line recorded as --env entries; move the run file into place
# without ever overwriting one; print build/benchstat's report on it.
#
# Exit status: 0 fine; 1 the trainer failed or --check failed; 2 bad arguments, no GPU,
# gnuplot missing for --plot, or the build or the data download failed (a trainer that
# itself exits 2, for bad trainer flags, also gives 2). Needs bash 4.4 or newer.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: ./bench.sh [VARIANT] [-n RUNS] [--seed S] [--data DIR] [--baseline FILE] [--check]
                  [--time-tolerance PCT] [--out FILE] [--plot] [-- TRAINER FLAGS...]
  VARIANT               94 (default), 95, 96 or 94-muon
  -n, --runs RUNS       timed runs, at least 2 (default 25); seeds S..S+RUNS-1
  --seed S              first seed (default 0)
  --data DIR            CIFAR-10 binary files (default data/cifar10; fetched if missing)
  --baseline FILE       an earlier run file to compare against (accuracy and time)
  --check               exit 1 if the accuracy is significantly below the target, or the
                        time is slower than the baseline by more than the tolerance
  --time-tolerance PCT  allowed slowdown for --check, in percent (default 3)
  --out FILE            where to save the run file (default
                        runs/<UTC date>-<gpu>-<variant>-<commit>.json); never overwritten
  --plot                also draw the accuracy and time distributions into a PNG next to
                        the run file (needs gnuplot)
  -- TRAINER FLAGS      passed to the trainer unchanged
Without a GPU, run `make test` for the CPU checks.
EOF
}

# die STATUS MESSAGE...: prints the message and exits with STATUS.
die() {
    local status=$1
    shift
    printf 'bench.sh: %s\n' "$*" >&2
    exit "$status"
}

die_usage() {
    printf 'bench.sh: %s\n' "$*" >&2
    usage >&2
    exit 2
}

absolute_path() { [[ $1 == /* ]] && printf '%s\n' "$1" || printf '%s\n' "$PWD/$1"; }

script_path=${BASH_SOURCE[0]}
[[ $script_path == */* ]] || script_path=./$script_path
ROOT=$(cd "${script_path%/*}" && pwd) || die 2 "cannot find the repository root"

variant=94 variant_given=0 runs=25 seed=0 data_dir="" baseline="" check=0 tolerance=""
out="" plot=0
trainer_flags=()
printf -v command_line '%q ' "$0" "$@"
command_line=${command_line% }

# An option's value must be present and must not look like another option.
need_value() {
    [[ $# -ge 2 && -n $2 && $2 != -* ]] || die_usage "$1 needs a value"
}

parse_args() {
    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            -n | --runs) need_value "$@"; runs=$2; shift 2 ;;
            --seed) need_value "$@"; seed=$2; shift 2 ;;
            --data) need_value "$@"; data_dir=$2; shift 2 ;;
            --baseline) need_value "$@"; baseline=$2; shift 2 ;;
            --time-tolerance) need_value "$@"; tolerance=$2; shift 2 ;;
            --out) need_value "$@"; out=$2; shift 2 ;;
            --check) check=1; shift ;;
            --plot) plot=1; shift ;;
            --) shift; trainer_flags=("$@"); return ;;
            -*) die_usage "unknown option: $1" ;;
            *)
                ((variant_given)) && die_usage "unexpected argument: $1 (give one VARIANT)"
                variant=${1#airbench} variant_given=1
                shift
                ;;
        esac
    done
}

validate_args() {
    case $variant in
        94 | 95 | 96 | 94-muon) ;;
        *) die_usage "unknown variant '$variant' (choose 94, 95, 96 or 94-muon)" ;;
    esac
    [[ $runs =~ ^[0-9]+$ ]] && ((10#$runs >= 2)) ||
        die_usage "-n takes a whole number of runs, at least 2 (benchstat needs two for a" \
            "standard deviation), not '$runs'"
    runs=$((10#$runs))
    [[ $seed =~ ^[0-9]{1,18}$ ]] || die_usage "--seed takes a whole number >= 0, not '$seed'"
    [[ -z $tolerance || $tolerance =~ ^[0-9]+([.][0-9]+)?$ ]] ||
        die_usage "--time-tolerance takes a percentage such as 3, not '$tolerance'"
    [[ -z $baseline || -r $baseline ]] || die_usage "baseline run file not found: $baseline"
    if [[ -n $out ]]; then
        out=$(absolute_path "$out")
        [[ -e $out ]] && die_usage "--out $out already exists; bench.sh never overwrites a run file"
        [[ -d ${out%/*} ]] || die_usage "--out: directory ${out%/*} does not exist"
    fi
    if ((plot)) && ! command -v gnuplot >/dev/null; then
        die 2 "--plot needs gnuplot, which is not installed (Debian/Ubuntu:" \
            "apt-get install gnuplot-nox); nothing was run"
    fi
}

require_gpu() {
    local hint="bench.sh times GPU training; run \`make test\` for the CPU checks"
    command -v nvidia-smi >/dev/null ||
        die 2 "no NVIDIA GPU found (nvidia-smi is not installed or not on PATH): $hint"
    local listing
    listing=$(timeout 60 nvidia-smi -L 2>&1) ||
        die 2 "no NVIDIA GPU found (nvidia-smi -L failed: ${listing%%$'\n'*}): $hint"
    [[ $listing =~ (^|$'\n')GPU\ [0-9]+: ]] ||
        die 2 "no NVIDIA GPU found (nvidia-smi -L lists none): $hint"
}

build_programs() {
    local make_vars=() name
    for name in CUDA_HOME CUDNN_HOME CJSON_HOME; do
        [[ -n ${!name:-} ]] && make_vars+=("$name=${!name}")
    done
    make -C "$ROOT" "${make_vars[@]}" "build/airbench$variant" build/benchstat ||
        die 2 "building build/airbench$variant and build/benchstat failed (see above; set" \
            "CUDA_HOME, CUDNN_HOME, CJSON_HOME if the libraries live elsewhere)"
}

have_cifar10() {
    local file
    for file in data_batch_{1..5}.bin test_batch.bin; do
        [[ -f $1/$file ]] || return 1
    done
}

fetch_data() {
    data_dir=$(absolute_path "${data_dir:-$ROOT/data/cifar10}")
    have_cifar10 "$data_dir" && return
    echo "bench.sh: CIFAR-10 is not in $data_dir; fetching it"
    "$ROOT/data/get_cifar10.sh" "$data_dir" && have_cifar10 "$data_dir" ||
        die 2 "could not fetch CIFAR-10 into $data_dir (or pass --data DIR)"
}

# The GPU the trainer will use: the first of CUDA_VISIBLE_DEVICES (an index or a UUID).
gpu_id() {
    local first=${CUDA_VISIBLE_DEVICES:-0}
    first=${first%%,*}
    printf '%s\n' "${first:-0}"
}

# Fills gpu_env (KEY=VALUE strings) and gpu_name from one nvidia-smi query.
declare -a gpu_env
gpu_name=unknown
query_gpu() {
    local keys=(gpu_name gpu_driver gpu_sm_clock_mhz gpu_mem_clock_mhz gpu_max_sm_clock_mhz
        gpu_max_mem_clock_mhz gpu_app_sm_clock_mhz gpu_app_mem_clock_mhz gpu_power_limit_w
        gpu_persistence_mode gpu_temperature_c)
    local fields=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem
    fields+=,clocks.applications.graphics,clocks.applications.memory,power.limit
    fields+=,persistence_mode,temperature.gpu
    local line values i
    if ! line=$(timeout 60 nvidia-smi -i "$(gpu_id)" --query-gpu="$fields" \
        --format=csv,noheader,nounits 2>&1); then
        echo "bench.sh: warning: nvidia-smi --query-gpu failed ($line); GPU details not recorded" >&2
        return
    fi
    IFS=, read -r -a values <<<"${line%%$'\n'*}"
    for i in "${!keys[@]}"; do
        local value=${values[i]:-unknown}
        value=${value#"${value%%[! ]*}"}  # trim leading spaces
        gpu_env+=("${keys[i]}=$value")
    done
    gpu_name=${values[0]#"${values[0]%%[! ]*}"}
}

# "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA GeForce RTX 4090" -> rtx4090.
gpu_slug() {
    local name=${1,,} words
    name=${name//nvidia/}
    name=${name//geforce/}
    name=${name//tesla/}
    read -r -a words <<<"${name//[-_]/ }"
    local slug=${words[0]:-gpu}
    [[ $slug =~ ^(rtx|gtx|titan|quadro)$ && -n ${words[1]:-} ]] && slug+=${words[1]}
    slug=${slug//[^a-z0-9]/}
    printf '%s\n' "${slug:-gpu}"
}

# The commit and dirty state; GIT_COMMIT / GIT_DIRTY (0 or 1) from the environment win, as
# in the Makefile, for copies of the tree without .git (the lent GPU machine).
git_state() {
    if [[ -n ${GIT_COMMIT:-} ]]; then
        short_commit=${GIT_COMMIT:0:7}
        case ${GIT_DIRTY:-} in 0) tree_dirty=false ;; 1) tree_dirty=true ;; *) tree_dirty=unknown ;; esac
        return
    fi
    short_commit=$(git -C "$ROOT" rev-parse --short=7 HEAD 2>/dev/null) || short_commit=nocommit
    local changes
    if changes=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null); then
        [[ -n $changes ]] && tree_dirty=true || tree_dirty=false
    else
        tree_dirty=unknown
    fi
}

# The trainer's --env arguments: what describes this measurement beyond the trainer's own
# fields.
environment_args() {
    local entries=("${gpu_env[@]}" "git_dirty_at_run=$tree_dirty" "bench_command=$command_line"
        "hostname=${HOSTNAME:-$(uname -n)}" "started_utc=$started_utc")
    [[ -n ${CUDA_VISIBLE_DEVICES:-} ]] && entries+=("cuda_visible_devices=$CUDA_VISIBLE_DEVICES")
    env_args=()
    local entry
    for entry in "${entries[@]}"; do
        env_args+=(--env "$entry")
    done
}

run_file=""
tmp_file=""
cleanup() { [[ -n $tmp_file ]] && rm -f "$tmp_file"; }
trap cleanup EXIT

run_trainer() {
    local dest_dir=$ROOT/runs
    [[ -n $out ]] && dest_dir=${out%/*}
    mkdir -p "$dest_dir" || die 2 "cannot create $dest_dir"
    tmp_file=$(mktemp "$dest_dir/bench-XXXXXX.tmp") || die 2 "cannot create a file in $dest_dir"
    echo "bench.sh: airbench$variant, $runs runs from seed $seed on $gpu_name"
    "$ROOT/build/airbench$variant" --runs "$runs" --seed "$seed" --data "$data_dir" \
        --json "$tmp_file" "${env_args[@]}" "${trainer_flags[@]}"
    local status=$?
    ((status == 0)) || die "$status" "the trainer failed (exit $status); no run file was saved"
    [[ -s $tmp_file ]] || die 1 "the trainer exited 0 but wrote no run file"
}

# Moves the finished run file into place under its final name. A hard link publishes the
# whole file at once and fails if the name exists, so nothing is ever overwritten: the
# default name then gets a -2, -3, ... suffix; --out fails instead.
publish_run_file() {
    if [[ -n $out ]]; then
        ln "$tmp_file" "$out" 2>/dev/null || {
            local kept=$tmp_file
            tmp_file=""
            die 1 "could not create $out (did it appear meanwhile?); the run is kept in $kept"
        }
        run_file=$out
    else
        local base
        base=$ROOT/runs/$started_utc-$(gpu_slug "$gpu_name")-airbench$variant-$short_commit
        local candidate=$base.json suffix=1
        until ln "$tmp_file" "$candidate" 2>/dev/null; do
            [[ -e $candidate ]] || die 1 "could not create $candidate (the run is in $tmp_file)"
            candidate=$base-$((++suffix)).json
        done
        run_file=$candidate
    fi
    rm -f "$tmp_file"
    tmp_file=""
    echo "bench.sh: saved $run_file"
}

# Two histograms, accuracy and time, from benchstat --tsv, into <run file>.png.
plot_run_file() {
    local png=${run_file%.json}.png table target=${variant%-muon} terminal=png
    table=$(mktemp) || return 1
    "$ROOT/build/benchstat" --tsv "$run_file" | tail -n +2 >"$table" || {
        rm -f "$table"
        return 1
    }
    gnuplot -e 'set terminal pngcairo' 2>/dev/null && terminal=pngcairo
    gnuplot <<EOF
set terminal $terminal size 1200,500
set output "$png"
set datafile separator "\t"
set key off
set style fill solid 0.5 border
stats "$table" using (100*\$2) name "ACC" nooutput
stats "$table" using 3 name "TIME" nooutput
acc_bin = (ACC_max - ACC_min) / 12 > 0.01 ? (ACC_max - ACC_min) / 12 : 0.01
time_bin = (TIME_max - TIME_min) / 12 > 1e-4 ? (TIME_max - TIME_min) / 12 : 1e-4
bin(x, width) = width * (floor(x / width) + 0.5)
set multiplot layout 1,2 title "airbench$variant, $runs runs on $gpu_name: ${run_file##*/}"
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
if (ACC_records <= 40) { set ytics 1 }
set ylabel "runs"
set title sprintf("accuracy: mean %.3f%%, std %.3f pts (dashed: target $target%%)", ACC_mean, ACC_ssd)
set xlabel "test accuracy (%)"
set boxwidth acc_bin * 0.9
set arrow 1 from $target, graph 0 to $target, graph 1 nohead front dashtype 2 linecolor "red"
set arrow 2 from ACC_mean, graph 0 to ACC_mean, graph 1 nohead front linewidth 2
plot "$table" using (bin(100*\$2, acc_bin)):(1.0) smooth frequency with boxes
unset arrow
set title sprintf("time: mean %.4f s (line), median %.4f s", TIME_mean, TIME_median)
set xlabel "GPU time per run (s)"
set boxwidth time_bin * 0.9
set arrow 2 from TIME_mean, graph 0 to TIME_mean, graph 1 nohead front linewidth 2
plot "$table" using (bin(\$3, time_bin)):(1.0) smooth frequency with boxes
unset multiplot
EOF
    local status=$?
    rm -f "$table"
    ((status == 0)) && echo "bench.sh: plotted $png"
    return "$status"
}

main() {
    parse_args "$@"
    validate_args
    require_gpu
    build_programs
    fetch_data
    started_utc=$(date -u +%Y%m%d-%H%M%S)
    query_gpu
    git_state
    environment_args
    run_trainer
    publish_run_file
    local stat_args=() status
    ((check)) && stat_args+=(--check)
    [[ -n $tolerance ]] && stat_args+=(--time-tolerance "$tolerance")
    "$ROOT/build/benchstat" "${stat_args[@]}" "$run_file" ${baseline:+"$baseline"}
    status=$?
    if ((plot)) && ! plot_run_file; then
        echo "bench.sh: warning: the plot failed; the run file is saved all the same" >&2
    fi
    exit "$status"
}

main "$@"
