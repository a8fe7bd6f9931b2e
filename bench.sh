#!/usr/bin/env bash
# bench.sh: time many seeded training runs of one airbench.c variant on this machine's GPU,
# save them as a run file, and summarize them with build/benchstat. With --against REV|DIR,
# time the working tree against another revision or source tree, interleaved, and compare
# the two.
#
# Steps: check the arguments (before anything runs); check for a GPU (nvidia-smi); build the
# trainer and benchstat with make (CUDA_HOME, CUDNN_HOME, CJSON_HOME are passed through) and,
# with --against, REV's trainer in a temporary git worktree (or DIR's in DIR); fetch CIFAR-10
# if it is missing;
# run build/airbenchVARIANT --runs N --seed S --json TMP (seeds S..S+N-1, after the trainer's
# own warm-up run) with the GPU's name, driver and clocks, the git state, the host and this
# command line recorded as --env entries; move the run file into place without ever
# overwriting one; print build/benchstat's report on it. A dirty tree's changes are saved
# beside the run file as <run file>.diff.
#
# Faults: SIGINT, SIGTERM and SIGHUP are passed on to the program bench.sh is waiting for.
# The trainer then ends its run file as incomplete (it rewrites the file after every run),
# and bench.sh saves the completed runs it holds under the usual name, removes its
# temporary files and exits 128+signal. A trainer that fails after some runs (divergence,
# CUDA error) gets its completed runs saved the same way. Needs bash 4.4 or newer.
set -uo pipefail

usage() {
    cat <<'EOF'
usage: ./bench.sh [VARIANT] [-n RUNS] [--seed S] [--data DIR] [--out FILE] [--baseline FILE]
                  [--check] [--time-tolerance PCT] [--allow-other-gpu] [--plot]
                  [--against REV|DIR [--chunk K]] [-- TRAINER FLAGS...]
  VARIANT               94, 95, 96, 94-muon, 94-record or 96-filter (default 94)
  -n, --runs RUNS       timed runs, 2..100000 (default 25); seeds S..S+RUNS-1
  --seed S              first seed, 0..2000000000 (default 0)
  --data DIR            CIFAR-10 binary files (default data/cifar10; fetched if missing)
  --out FILE            where to save the run file, never overwritten (default
                        runs/<UTC date>-<gpu>-airbench<VARIANT>-<commit>.json)
  --baseline FILE       an earlier run file to compare against (default: none)
  --check               exit 1 if the accuracy is significantly below the target, or the
                        time is slower than the baseline (or REV) by more than the tolerance
                        (default: off)
  --time-tolerance PCT  allowed slowdown for --check, in percent (default 3)
  --allow-other-gpu     let --check compare run files from different GPU models (default:
                        --check fails on them)
  --plot                draw the accuracy and time distributions into <run file>.png with
                        build/benchstat --plot (needs gnuplot; default: off)
  --against REV         the tweak loop: build REV (any git revision) in a temporary git
                        worktree and time the working tree (A) against it (B), RUNS runs each,
                        the two trainers alternating chunk by chunk (A, B, A, B, ...) on the
                        same seeds, so that drifting clocks and temperature hit both alike;
                        saves runs/<...>-<commit>-A-tree.json and
                        runs/<...>-<REV commit>-B-rev.json, prints the comparison A vs B
                        (default: off)
  --against DIR         the same against the source tree in directory DIR, built there in
                        place (DIR/build): another checkout (its commit from git), or a tree
                        without .git whose DIR/.git-commit names its commit (dev/stage_rev.sh
                        REV writes one: how a GPU machine given a copy without .git compares
                        with an older commit)
  --chunk K             runs per trainer start with --against (default 5)
  -- TRAINER FLAGS      passed to the trainer unchanged (e.g. --set NAME=VALUE, --tta 1,
                        --batch B, --epochs E, --quiet, --no-warmup); --json, --runs, --seed,
                        --data and --variant are bench.sh's to set
  -h, --help            this text

Saved: the run file; for a tree with uncommitted changes also <run file>.diff (git diff HEAD
plus the untracked files outside runs/), named in the run file's environment.

How long: airbench94 takes about 1.3 s per run on an H100 plus about 5 s of start-up, so the
default 25 runs take about 40 s after the build. With --against each chunk starts both
trainers again (about 2 x 5 s per chunk) and REV is built from scratch first (minutes).
Builds run one make job per processor; CUDA_ARCH, like the library locations, is passed to
both builds (CUDA_ARCH=90: for an H100 or H200 alone, one architecture instead of two).

Exit status: 0 fine; 1 --check failed, or the trainer failed (its own status is passed on:
1 for an error or a divergence, 2 for bad trainer flags); 2 bad arguments, no GPU, gnuplot
missing for --plot, or the build or the data download failed; 128+N bench.sh or the trainer
was stopped by signal N (completed runs are saved all the same).
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

die_usage() { die 2 "$*; see ./bench.sh --help"; }

absolute_path() { [[ $1 == /* ]] && printf '%s\n' "$1" || printf '%s\n' "$PWD/$1"; }

script_path=${BASH_SOURCE[0]}
[[ $script_path == */* ]] || script_path=./$script_path
ROOT=$(cd "${script_path%/*}" && pwd) || die 2 "cannot find the repository root"

variant=94 variant_given=0 runs=25 seed=0 data_dir="" baseline="" check=0 tolerance=""
out="" plot=0 allow_other_gpu=0 against="" chunk="" against_tree="" against_is_checkout=0
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
            --against) need_value "$@"; against=$2; shift 2 ;;
            --chunk) need_value "$@"; chunk=$2; shift 2 ;;
            --check) check=1; shift ;;
            --plot) plot=1; shift ;;
            --allow-other-gpu) allow_other_gpu=1; shift ;;
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

# whole_number TEXT LO HI: prints TEXT as a plain decimal if it is a whole number in LO..HI.
# Long digit strings are refused before any arithmetic, which would wrap around.
whole_number() {
    [[ $1 =~ ^0*([0-9]+)$ ]] || return 1
    local digits=${BASH_REMATCH[1]}
    ((${#digits} <= 10 && 10#$digits >= $2 && 10#$digits <= $3)) || return 1
    printf '%s\n' "$((10#$digits))"
}

validate_numbers() {
    local value
    value=$(whole_number "$runs" 2 100000) ||
        die_usage "-n takes a whole number of runs in 2..100000 (benchstat needs two for a" \
            "standard deviation), not '$runs'"
    runs=$value
    value=$(whole_number "$seed" 0 2000000000) ||
        die_usage "--seed takes a whole number in 0..2000000000 (as the trainer does), not '$seed'"
    seed=$value
    [[ -z $tolerance || $tolerance =~ ^[0-9]{1,6}([.][0-9]{1,6})?$ ]] ||
        die_usage "--time-tolerance takes a percentage such as 3, not '$tolerance'"
}

validate_baseline() {
    [[ -z $baseline ]] && return
    [[ -e $baseline ]] || die_usage "baseline run file not found: $baseline"
    [[ -f $baseline ]] || die_usage "--baseline $baseline is not a regular file (give a run file)"
    [[ -r $baseline ]] || die_usage "--baseline $baseline cannot be read (check its permissions)"
}

validate_out() {
    [[ -z $out ]] && return
    out=$(absolute_path "$out")
    [[ -L $out ]] &&
        die_usage "--out $out is a symbolic link; bench.sh never writes through or over one"
    [[ -e $out ]] && die_usage "--out $out already exists; bench.sh never overwrites a run file"
    [[ -d ${out%/*} ]] || die_usage "--out: directory ${out%/*} does not exist"
    if tree_has_changes && [[ -e ${out%.json}.diff || -L ${out%.json}.diff ]]; then
        die_usage "--out: ${out%.json}.diff, where this dirty tree's diff would go, already exists"
    fi
}

# Flags after -- that would undo bench.sh's own: a second --json, for one, would make the
# trainer write over another file instead of bench.sh's temporary one.
validate_trainer_flags() {
    local flag
    for flag in "${trainer_flags[@]}"; do
        case $flag in
            --json) die_usage "-- --json: bench.sh names the run file; use bench.sh's --out FILE" ;;
            --runs) die_usage "-- --runs: bench.sh sets the runs; use bench.sh's -n RUNS" ;;
            --seed) die_usage "-- --seed: bench.sh sets the seeds; use bench.sh's --seed S" ;;
            --data) die_usage "-- --data: bench.sh sets the data; use bench.sh's --data DIR" ;;
            --variant) die_usage "-- --variant: give the variant as bench.sh's VARIANT argument" ;;
        esac
    done
}

# --against DIR: the source tree DIR, and its commit: DIR's own HEAD when DIR is the top of
# a git checkout, else the hash in DIR/.git-commit.
validate_against_tree() {
    against_tree=$(cd "$against" && pwd) || die_usage "--against: cannot enter $against"
    [[ $against_tree != "$ROOT" ]] || die_usage "--against $against is this working tree itself"
    [[ -f $against_tree/Makefile ]] || die_usage "--against $against holds no Makefile: not a source tree"
    local top
    top=$(git -C "$against_tree" rev-parse --show-toplevel 2>/dev/null)
    if [[ $top == "$against_tree" ]]; then
        against_is_checkout=1
        against_commit=$(git -C "$against_tree" rev-parse --verify --quiet "HEAD^{commit}") ||
            die_usage "--against $against is a git checkout without a commit"
        return
    fi
    [[ -f $against_tree/.git-commit ]] ||
        die_usage "--against $against is neither the top of a git checkout nor a tree whose" \
            ".git-commit names its commit (dev/stage_rev.sh REV writes such a tree)"
    against_commit=$(head -n 1 "$against_tree/.git-commit")
    [[ $against_commit =~ ^[0-9a-f]{40}$ ]] ||
        die_usage "$against/.git-commit should hold a 40-digit commit hash, not '$against_commit'"
}

validate_against() {
    if [[ -z $against ]]; then
        [[ -z $chunk ]] || die_usage "--chunk goes with --against"
        return
    fi
    [[ -z $out ]] || die_usage "--out names one run file, but --against saves two (under runs/)"
    [[ -z $baseline ]] || die_usage "--baseline does not go with --against, which compares with REV"
    local value
    value=$(whole_number "${chunk:-5}" 1 100000) ||
        die_usage "--chunk takes a whole number of runs in 1..100000, not '$chunk'"
    chunk=$value
    # Every chunk passes its first seed to the trainer, which takes 0..2000000000.
    ((seed + runs - 1 <= 2000000000)) ||
        die_usage "with --against the seeds S..S+RUNS-1 must stay within 0..2000000000"
    if [[ -d $against ]]; then
        validate_against_tree
        return
    fi
    git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
        die_usage "--against REV needs a git checkout, and $ROOT is not one (--against DIR" \
            "takes a source tree)"
    against_commit=$(git -C "$ROOT" rev-parse --verify --quiet "$against^{commit}") ||
        die_usage "--against '$against' is not a commit of this repository (give a branch," \
            "tag or hash)"
}

validate_args() {
    case $variant in
        94 | 95 | 96 | 94-muon | 94-record | 96-filter) ;;
        *) die_usage "unknown variant '$variant' (choose 94, 95, 96, 94-muon, 94-record or 96-filter)" ;;
    esac
    validate_numbers
    validate_baseline
    validate_out
    validate_trainer_flags
    validate_against
    if ((plot)) && ! command -v gnuplot >/dev/null; then
        die 2 "--plot needs gnuplot, which is not installed (Debian/Ubuntu:" \
            "apt-get install gnuplot-nox); nothing was run"
    fi
}

# ---- signals and child programs -----------------------------------------------------------
caught_signal="" signal_count=0 child_pid=""

# shellcheck disable=SC2317 # called by the traps
on_signal() {
    [[ -n $caught_signal ]] || caught_signal=$1
    signal_count=$((signal_count + 1))
    [[ -n $child_pid ]] && kill -s "$1" "$child_pid" 2>/dev/null
}

watch_signals() {
    local name
    for name in INT TERM HUP; do
        # shellcheck disable=SC2064 # the name is meant to be fixed now
        trap "on_signal $name" "$name"
    done
}

# run_child COMMAND...: runs COMMAND and returns its status. It runs in the background
# because bash defers a trap until a foreground command ends; `wait` returns at once when a
# signal comes, and is repeated until the child has exited. Bash starts background commands
# with SIGINT ignored (and stdin from /dev/null); the subshell gives SIGINT back.
run_child() {
    [[ -n $caught_signal ]] && return 1
    (trap - INT; exec "$@") &
    child_pid=$!
    [[ -n $caught_signal ]] && kill -s "$caught_signal" "$child_pid" 2>/dev/null
    local status seen
    while true; do
        seen=$signal_count
        wait "$child_pid"
        status=$?
        ((signal_count == seen)) && break
    done
    child_pid=""
    return "$status"
}

# After a signal: the temporary files go (EXIT trap), then bench.sh dies of the same signal,
# so that its caller sees the usual status 128+N.
stop_if_signalled() {
    [[ -z $caught_signal ]] && return
    echo "bench.sh: stopped by SIG$caught_signal" >&2
    cleanup
    trap - "$caught_signal"
    kill -s "$caught_signal" "$$"
    exit $((128 + $(kill -l "$caught_signal")))  # not reached unless the signal is ignored
}

# ---- temporary files ------------------------------------------------------------------------
work_dir="" rev_dir="" rev_tree="" reserved_diff=""

# Removes everything temporary: the work folder (the trainer's run files and the writer's
# PATH.tmp siblings), REV's worktree, and a reserved diff file that no run file came to use.
# Only in bench.sh itself: a subshell of run_child that a signal kills right after its fork
# may run the EXIT trap too, and must not remove the chunk files of the runs before it.
cleanup() {
    ((BASHPID == $$)) || return 0
    [[ -n $work_dir ]] && rm -rf "$work_dir"
    work_dir=""
    if [[ -n $rev_dir ]]; then
        git -C "$ROOT" worktree remove --force "$rev_dir/tree" 2>/dev/null
        rm -rf "$rev_dir"
        git -C "$ROOT" worktree prune 2>/dev/null
    fi
    rev_dir=""
    [[ -n $reserved_diff ]] && rm -f "$reserved_diff"
    reserved_diff=""
}
trap cleanup EXIT

# The trainers write into a temporary folder beside the run file's final place, so that the
# finished file can be hard-linked into place.
make_work_dir() {
    mkdir -p "$1" || die 2 "cannot create $1"
    work_dir=$(mktemp -d "$1/bench-XXXXXX.tmp") || die 2 "cannot create a folder in $1"
}

# ---- GPU, build, data ----------------------------------------------------------------------
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

make_vars() {
    local name
    for name in CUDA_HOME CUDNN_HOME CJSON_HOME CUDA_ARCH; do
        [[ -n ${!name:-} ]] && printf '%s\n' "$name=${!name}"
    done
}

# Parallel builds: as many jobs as processors.
make_jobs() { nproc 2>/dev/null || echo 4; }

build_programs() {
    local vars
    mapfile -t vars < <(make_vars)
    run_child make -C "$ROOT" -j "$(make_jobs)" "${vars[@]}" "build/airbench$variant" build/benchstat
    local status=$?
    stop_if_signalled
    ((status == 0)) ||
        die 2 "building build/airbench$variant and build/benchstat failed (see above; set" \
            "CUDA_HOME, CUDNN_HOME, CJSON_HOME if the libraries live elsewhere)"
}

# REV's trainer, built in a temporary worktree with the same libraries, or DIR's in DIR.
# GIT_COMMIT and GIT_DIRTY, when set for a tree copy without .git, describe the working
# tree, not REV: the build of REV or of a checkout asks git; a tree without .git gets its
# .git-commit's hash, clean (never git's answer for a checkout it may lie in).
build_revision() {
    local commit_env=(-u GIT_COMMIT -u GIT_DIRTY -u GIT_DIFF_SHA256 -u GIT_CHANGED_FILES)
    if [[ -n $against_tree ]]; then
        rev_tree=$against_tree
        ((against_is_checkout)) ||
            commit_env=("GIT_COMMIT=$against_commit" GIT_DIRTY=0 GIT_DIFF_SHA256= GIT_CHANGED_FILES=)
    else
        rev_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-against-XXXXXX") ||
            die 2 "cannot create a temporary folder in ${TMPDIR:-/tmp}"
        git -C "$ROOT" worktree add --quiet --detach "$rev_dir/tree" "$against_commit" ||
            die 2 "could not check out $against in a temporary worktree (see above)"
        rev_tree=$rev_dir/tree
    fi
    local vars
    mapfile -t vars < <(make_vars)
    echo "bench.sh: building $against (${against_commit:0:7}) in $rev_tree"
    run_child env "${commit_env[@]}" \
        make -C "$rev_tree" -j "$(make_jobs)" "${vars[@]}" "build/airbench$variant"
    local status=$?
    stop_if_signalled
    ((status == 0)) || die 2 "building build/airbench$variant of $against failed (see above)"
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
    run_child "$ROOT/data/get_cifar10.sh" "$data_dir"
    local status=$?
    stop_if_signalled
    ((status == 0)) && have_cifar10 "$data_dir" ||
        die 2 "could not fetch CIFAR-10 into $data_dir (or pass --data DIR)"
}

# ---- what is measured ----------------------------------------------------------------------
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

# The untracked, not ignored files that could change a build: everything but runs/.
untracked_files() {
    git -C "$ROOT" ls-files -z --others --exclude-standard -- ':!runs'
}

# Whether the working tree differs from HEAD (tracked changes or untracked files), so that
# the run file alone does not say what was measured. False without git or without a HEAD,
# and for a tree copy whose state comes from GIT_COMMIT.
tree_has_changes() {
    [[ -z ${GIT_COMMIT:-} ]] || return 1
    git -C "$ROOT" rev-parse --verify --quiet HEAD >/dev/null 2>&1 || return 1
    ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || [[ -n $(untracked_files) ]]
}

# The working tree's changes as one patch that `git apply` takes on HEAD: tracked changes
# (binary ones too), then each untracked file as a new file. Files over 1 MiB (a core dump,
# a stray data set) are only named, in the lines above the first patch, which git apply skips.
write_tree_diff() {
    local files file size
    mapfile -d '' -t files < <(untracked_files)
    for file in "${files[@]}"; do
        size=$(stat -c %s "$ROOT/$file" 2>/dev/null) || continue
        ((size <= 1048576)) || printf '# untracked, not included (%s bytes): %s\n' "$size" "$file"
    done
    git -C "$ROOT" diff HEAD --binary
    for file in "${files[@]}"; do
        size=$(stat -c %s "$ROOT/$file" 2>/dev/null) || continue
        # --no-index exits 1 when the files differ, which they always do here.
        ((size <= 1048576)) && git -C "$ROOT" diff --no-index --binary /dev/null "$file"
    done
    return 0
}

# reserve_diff BASE FIXED: creates an empty BASE.diff, unless it exists or (FIXED=0) a
# BASE.json does. noclobber makes the redirection create the file or fail, never overwrite.
reserve_diff() {
    { (($2)) || [[ ! -e $1.json ]]; } && (set -o noclobber; : >"$1.diff") 2>/dev/null
}

# save_tree_diff BASE FIXED: when the tree has changes, writes them to a new BASE.diff (or,
# unless FIXED (--out), BASE-2.diff, ... where a run file or diff of that name exists) and
# sets run_base to the chosen name without extension and diff_name; else run_base=BASE. The
# diff is written before the run because the run file names it (--env git_diff_file).
save_tree_diff() {
    local base=$1 fixed=$2 candidate=$1 suffix=1
    run_base=$base diff_name=""
    tree_has_changes || return 0
    until reserve_diff "$candidate" "$fixed"; do
        ((fixed)) && die 2 "$candidate.diff already exists; bench.sh never overwrites a file"
        candidate=$base-$((++suffix))
    done
    reserved_diff=$candidate.diff
    write_tree_diff >"$reserved_diff" || die 2 "could not write the tree's diff to $reserved_diff"
    run_base=$candidate diff_name=${reserved_diff##*/}
}

# The trainer's --env arguments: what describes this measurement beyond the trainer's own
# fields. Arguments: extra KEY=VALUE entries.
environment_args() {
    local entries=("${gpu_env[@]}" "git_dirty_at_run=$tree_dirty" "bench_command=$command_line"
        "hostname=${HOSTNAME:-$(uname -n)}" "started_utc=$started_utc" "$@")
    [[ -n ${CUDA_VISIBLE_DEVICES:-} ]] && entries+=("cuda_visible_devices=$CUDA_VISIBLE_DEVICES")
    env_args=()
    local entry
    for entry in "${entries[@]}"; do
        env_args+=(--env "$entry")
    done
}

# ---- run files -----------------------------------------------------------------------------
# completed_runs FILE: the number of runs that finished (not diverged) in a run file, from
# its "summary": {"n": ...} (both the writer and older trainers write it; 0 when unreadable).
completed_runs() {
    local n
    n=$(grep -oE '"n":[[:space:]]*[0-9]+' "$1" 2>/dev/null | head -n 1 | grep -oE '[0-9]+$')
    printf '%s\n' "${n:-0}"
}

# incomplete_reason FILE: the file's "incomplete_reason", if any.
incomplete_reason() {
    local pattern='s/^[[:space:]]*"incomplete_reason":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p'
    sed -n "$pattern" "$1" 2>/dev/null | head -n 1
}

# keep_work_dir SUFFIX: when a run file cannot be published, renames the work folder to
# kept_dir, out of cleanup's way (and keeps the diff beside it).
keep_work_dir() {
    kept_dir=${work_dir%.tmp}-$1
    mv "$work_dir" "$kept_dir" && work_dir="" reserved_diff=""
}

# link_run_file SOURCE NAME FIXED: hard-links SOURCE to NAME (FIXED=1, --out) or NAME.json,
# which publishes the whole file at once and fails if the name exists, so nothing is ever
# overwritten: unless FIXED, a taken name gets a -2, -3, ... suffix. Sets run_file.
link_run_file() {
    local source=$1 name=$2 fixed=$3 candidate=$2 suffix=1
    ((fixed)) || candidate=$name.json
    until ln "$source" "$candidate" 2>/dev/null; do
        if ((fixed)) || [[ ! -e $candidate ]]; then
            keep_work_dir kept
            die 1 "could not create $candidate (did it appear meanwhile?); the runs are kept" \
                "in $kept_dir"
        fi
        candidate=$name-$((++suffix)).json
    done
    run_file=$candidate
}

# publish SOURCE NAME FIXED WANTED REASON: saves SOURCE's completed runs as NAME (see
# link_run_file) and says whether they are all WANTED runs; with none, saves nothing and
# returns 1. REASON says why the runs stopped early.
publish() {
    local source=$1 name=$2 fixed=$3 wanted=$4 reason=$5 count
    count=$(completed_runs "$source")
    if ((count == 0)); then
        echo "bench.sh: no run completed (${reason:-the run file has none}); nothing was saved" >&2
        return 1
    fi
    link_run_file "$source" "$name" "$fixed"
    if ((count == wanted)); then
        echo "bench.sh: saved $run_file"
    else
        echo "bench.sh: saved $run_file, INCOMPLETE: $count of the $wanted runs ($reason)" >&2
    fi
}

# Why the trainer stopped early, from its status and its run file.
stop_reason() {
    local status=$1 file=$2 reason
    reason=$(incomplete_reason "$file")
    [[ -n $caught_signal ]] && reason="bench.sh got SIG$caught_signal${reason:+; $reason}"
    ((status > 128)) && [[ -z $reason ]] &&
        reason="the trainer was killed by SIG$(kill -l "$status" 2>/dev/null)"
    printf '%s\n' "${reason:-the trainer exited with status $status}"
}

# ---- one trainer ---------------------------------------------------------------------------
run_single() {
    local dest_dir=$ROOT/runs fixed=0
    [[ -n $out ]] && dest_dir=${out%/*} fixed=1
    make_work_dir "$dest_dir"
    local base
    base=$dest_dir/$started_utc-$(gpu_slug "$gpu_name")-airbench$variant-$short_commit
    [[ -n $out ]] && base=${out%.json}
    save_tree_diff "$base" "$fixed"
    environment_args ${diff_name:+"git_diff_file=$diff_name"}
    local file=$work_dir/run.json name=$run_base
    ((fixed)) && name=$out
    echo "bench.sh: airbench$variant, $runs runs from seed $seed on $gpu_name"
    run_child "$ROOT/build/airbench$variant" --runs "$runs" --seed "$seed" --data "$data_dir" \
        --json "$file" "${env_args[@]}" "${trainer_flags[@]}"
    local status=$? stopped=0
    ((status != 0)) || [[ -n $caught_signal ]] && stopped=1
    ((stopped)) || [[ -s $file ]] || die 1 "the trainer exited 0 but wrote no run file"
    local reason=""
    ((stopped)) && reason=$(stop_reason "$status" "$file")
    if publish "$file" "$name" "$fixed" "$runs" "$reason"; then
        reserved_diff=""  # the diff now belongs to a run file
    else
        ((stopped)) || die 1 "the trainer exited 0, but its run file holds no completed run"
    fi
    cleanup
    stop_if_signalled
    ((status == 0)) || exit "$status"
    report "$run_file" ${baseline:+"$baseline"}
}

# report FILE [BASELINE]: benchstat's report (and --check), then the plot of FILE (with
# --against, of both files); exits.
report() {
    local stat_args=() status
    ((check)) && stat_args+=(--check)
    ((allow_other_gpu)) && stat_args+=(--allow-other-gpu)
    [[ -n $tolerance ]] && stat_args+=(--time-tolerance "$tolerance")
    "$ROOT/build/benchstat" "${stat_args[@]}" "$@"
    status=$?
    if ((plot)); then
        local png=${1%.json}.png files=("$1")
        [[ -n $against ]] && png=${1%.json}-vs-B.png files=("$@")
        if "$ROOT/build/benchstat" --plot "$png" "${files[@]}"; then
            echo "bench.sh: plotted $png"
        else
            echo "bench.sh: warning: the plot failed; the run file is saved all the same" >&2
        fi
    fi
    stop_if_signalled
    exit "$status"
}

# ---- the working tree against REV ------------------------------------------------------------
chunk_file() { printf '%s/%s-%05d.json\n' "$work_dir" "$1" "$2"; }

# run_chunk SIDE INDEX COUNT FIRST_SEED: one trainer start of side A (the working tree) or B
# (REV) into its own chunk file; returns the trainer's status.
run_chunk() {
    local side=$1 index=$2 count=$3 first=$4 file
    local trainer=$ROOT/build/airbench$variant label="the working tree" side_env=("${env_A[@]}")
    if [[ $side == B ]]; then
        trainer=$rev_tree/build/airbench$variant label=$against side_env=("${env_B[@]}")
    fi
    file=$(chunk_file "$side" "$index")
    echo "bench.sh: chunk $index, $side ($label): seeds $first..$((first + count - 1))"
    run_child "$trainer" --runs "$count" --seed "$first" --data "$data_dir" --json "$file" \
        "${side_env[@]}" "${trainer_flags[@]}"
}

# merge_side SIDE BASE WANTED REASON: merges the side's chunk files that hold runs into one
# run file with benchstat --merge and publishes it; sets the side's run file name.
merge_side() {
    local side=$1 base=$2 wanted=$3 reason=$4 files=() file
    for file in "$work_dir/$side"-*.json; do
        [[ -e $file ]] && (($(completed_runs "$file") > 0)) && files+=("$file")
    done
    if ((${#files[@]} == 0)); then
        echo "bench.sh: $side: no run completed ($reason); nothing was saved" >&2
        return 1
    fi
    if ! "$ROOT/build/benchstat" --merge "$work_dir/$side.json" "${files[@]}"; then
        keep_work_dir unmerged
        die 1 "benchstat --merge failed for $side (see above); its chunk files are kept" \
            "in $kept_dir"
    fi
    publish "$work_dir/$side.json" "$base" 0 "$wanted" "$reason"
}

run_against() {
    make_work_dir "$ROOT/runs"
    local prefix
    prefix=$ROOT/runs/$started_utc-$(gpu_slug "$gpu_name")-airbench$variant
    save_tree_diff "$prefix-$short_commit-A-tree" 0
    local base_a=$run_base
    environment_args "bench_side=A: the working tree" ${diff_name:+"git_diff_file=$diff_name"}
    env_A=("${env_args[@]}")
    environment_args "bench_side=B: $against ($against_commit)"
    env_B=("${env_args[@]}")
    echo "bench.sh: airbench$variant, $runs runs each of the working tree (A) and $against (B)" \
        "from seed $seed on $gpu_name, $chunk per chunk"
    local finished=0 index=0 status=0 side=A count reason=""
    while ((finished < runs && status == 0)) && [[ -z $caught_signal ]]; do
        count=$((runs - finished < chunk ? runs - finished : chunk))
        index=$((index + 1))
        for side in A B; do
            run_chunk "$side" "$index" "$count" $((seed + finished))
            status=$?
            ((status == 0)) && [[ -z $caught_signal ]] || break
        done
        finished=$((finished + count))
    done
    if ((status != 0)) || [[ -n $caught_signal ]]; then
        reason=$(stop_reason "$status" "$(chunk_file "$side" "$index")")
    fi
    local file_a="" file_b=""
    merge_side A "$base_a" "$runs" "$reason" && file_a=$run_file reserved_diff=""
    merge_side B "$prefix-${against_commit:0:7}-B-rev" "$runs" "$reason" && file_b=$run_file
    cleanup
    stop_if_signalled
    ((status == 0)) || exit "$status"
    [[ -n $file_a && -n $file_b ]] || die 1 "the trainers exited 0, but a side has no completed run"
    report "$file_a" "$file_b"
}

main() {
    parse_args "$@"
    validate_args
    watch_signals
    require_gpu
    build_programs
    [[ -n $against ]] && build_revision
    fetch_data
    started_utc=$(date -u +%Y%m%d-%H%M%S)
    query_gpu
    git_state
    if [[ -n $against ]]; then
        run_against
    else
        run_single
    fi
}

main "$@"
