# shellcheck shell=bash disable=SC2154,SC2034 # sandbox comes from, and the commits go to, the test
# bench_sandbox.sh: sourced by test_bench.sh and test_faults.sh. Builds a sandbox in which
# bench.sh runs without a GPU: a "repository" holding a copy of bench.sh, fake CIFAR-10
# files and a data/get_cifar10.sh stub; a make stub that "builds" by copying
# build/fake_trainer (the C fake trainer on the real run-file writer) and a benchstat into
# the folder it is given (-C DIR, so REV's worktree too); an nvidia-smi stub listing an H100.
# Every stub, and the fake trainer, appends a line to $sandbox/calls. Needs ROOT and sandbox.

# $sandbox/system: symlinks to the system's tools, minus the ones the cases control.
make_system_bin() {
    local dir
    mkdir -p "$sandbox/system"
    for dir in /usr/local/bin /usr/bin /bin; do
        [[ -d $dir ]] && ln -s "$dir"/* "$sandbox/system/" 2>/dev/null
    done
    rm -f "$sandbox/system/nvidia-smi" "$sandbox/system/make" "$sandbox/system/gnuplot"
}

# write_stub DIR NAME BODY: an executable that logs "NAME ARGS" to $sandbox/calls, then runs BODY.
write_stub() {
    mkdir -p "$1"
    printf '#!/usr/bin/env bash\necho "%s $*" >> "%s/calls"\n%s\n' "$2" "$sandbox" "$3" >"$1/$2"
    chmod +x "$1/$2"
}

# $sandbox/gpu: the stubs of a machine with a GPU. The make stub copies $FAKE_TRAINER and
# $BENCHSTAT into DIR/build; FAKE_MAKE_STATUS makes it fail, FAKE_MAKE_FAIL_IN fails it
# only when DIR contains that text, FAKE_MAKE_SLEEP makes it slow. It logs the commit it
# builds ("built DIR at COMMIT", git's answer in DIR) and the GIT_* variables it got.
make_gpu_stubs() {
    # shellcheck disable=SC2016 # the bodies expand when the stubs run
    write_stub "$sandbox/gpu" make '
dir=.
[[ $1 == -C ]] && dir=$2
[[ -n ${FAKE_MAKE_FAIL_IN:-} && $dir == *"$FAKE_MAKE_FAIL_IN"* ]] && exit 2
sleep "${FAKE_MAKE_SLEEP:-0}"
echo "built $dir at $(git -C "$dir" rev-parse HEAD 2>/dev/null || echo none)" >> "'"$sandbox"'/calls"
echo "build env GIT_COMMIT=${GIT_COMMIT-unset} GIT_DIRTY=${GIT_DIRTY-unset} GIT_CHANGED_FILES=${GIT_CHANGED_FILES-unset}" >> "'"$sandbox"'/calls"
for target; do
    case $target in
        build/airbench*) mkdir -p "$dir/build" && cp "$FAKE_TRAINER" "$dir/$target" ;;
        build/benchstat) mkdir -p "$dir/build" && cp "$BENCHSTAT" "$dir/build/benchstat" ;;
    esac
done
exit "${FAKE_MAKE_STATUS:-0}"'
    write_stub "$sandbox/gpu" nvidia-smi '
if [[ "$*" == *--query-gpu* ]]; then
    echo "NVIDIA H100 80GB HBM3, 580.159.04, 1980, 2619, 1980, 2619, 1755, 2619, 700.00, Enabled, 34"
else
    echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
fi'
}

# $sandbox/stub_benchstat: logs its calls; --merge writes OUT with a summary whose n is the
# sum of the inputs' (what bench.sh reads), or fails with FAKE_MERGE_FAIL set; --plot writes
# a PNG signature; else a line of report. For the tests of bench.sh's side of --merge, --plot and the options it passes on.
make_stub_benchstat() {
    # shellcheck disable=SC2016
    write_stub "$sandbox/stub" benchstat '
case $1 in
    --merge)
        [[ -n ${FAKE_MERGE_FAIL:-} ]] && { echo "benchstat: cannot merge (FAKE_MERGE_FAIL)"; exit 2; }
        out=$2 total=0
        shift 2
        for file; do
            n=$(grep -oE "\"n\":[[:space:]]*[0-9]+" "$file" | head -n 1 | grep -oE "[0-9]+$")
            total=$((total + n))
        done
        printf "{\"merged\": true, \"summary\": {\"n\": %d}}\n" "$total" > "$out" ;;
    --plot) printf "\x89PNG" > "$2" ;;
    *) echo "stub benchstat report: $*" ;;
esac'
    mv "$sandbox/stub/benchstat" "$sandbox/stub_benchstat"
}

# make_fake_repo DIR: bench.sh, fake data, a get_cifar10.sh stub, an empty runs/.
make_fake_repo() {
    local repo=$1
    mkdir -p "$repo/data/cifar10" "$repo/runs"
    cp "$ROOT/bench.sh" "$ROOT/.gitignore" "$repo/"
    touch "$repo"/data/cifar10/{data_batch_{1..5},test_batch}.bin
    # shellcheck disable=SC2016
    write_stub "$repo/data" get_cifar10.sh 'mkdir -p "$1" && touch "$1"/{data_batch_{1..5},test_batch}.bin'
}

# make_git_repo DIR: a fake repo with two commits ("first" and "second", which changes
# recipe.txt); sets first_commit and second_commit.
make_git_repo() {
    local repo=$1
    make_fake_repo "$repo"
    echo "lr 1.0" >"$repo/recipe.txt"
    git -C "$repo" init -q
    git -C "$repo" add -A
    git -C "$repo" -c user.name=test -c user.email=test@example.com commit -q -m first
    first_commit=$(git -C "$repo" rev-parse HEAD)
    echo "lr 2.0" >"$repo/recipe.txt"
    git -C "$repo" -c user.name=test -c user.email=test@example.com commit -q -am second
    second_commit=$(git -C "$repo" rev-parse HEAD)
}

# The trainer lines of $sandbox/calls as "SIDE RUNS SEED", SIDE A for a trainer in REPO
# ($1), B for one elsewhere (REV's worktree).
trainer_calls() {
    local repo=$1 line words i side runs seed
    while read -r line; do
        read -r -a words <<<"$line"
        [[ ${words[0]} == trainer ]] || continue
        side=B runs="" seed=""
        [[ ${words[2]} == "$repo"/* ]] && side=A
        for ((i = 3; i < ${#words[@]}; i++)); do  # the first ones: --env bench_command= has more
            case ${words[i]} in
                --runs) runs=${runs:-${words[i + 1]}} ;;
                --seed) seed=${seed:-${words[i + 1]}} ;;
            esac
        done
        echo "$side $runs $seed"
    done <"$sandbox/calls"
}

# summary_n FILE: the run file's summary "n" (its completed runs).
summary_n() {
    grep -oE '"n":[[:space:]]*[0-9]+' "$1" 2>/dev/null | head -n 1 | grep -oE '[0-9]+$'
}
