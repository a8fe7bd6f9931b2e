#!/bin/sh
# test_get_cifar10.sh: data/get_cifar10.sh without network, on small synthetic files: a fake
# mirror (first run, idempotent second run, repair of a damaged file, corrupt mirror), a fake
# official tarball given by path and by file:// URL (extraction, skipping from the recorded
# sums, wrong md5, failed download, incomplete tarball) and a PATH without xz.
# Ends with "RESULT <passed> <failed>"; exits non-zero if anything failed.
set -u
unset CIFAR10_MIRROR CIFAR10_URL CIFAR10_MD5

script=$(cd "$(dirname "$0")/.." && pwd)/data/get_cifar10.sh
sh_path=$(command -v sh)
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
BINS="data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"
FILES="$BINS batches.meta.txt"
. "$(dirname "$0")/check.sh"
CHECK_OUT=$tmp/out CHECK_ERR=$tmp/err  # a failed check shows the script's last output

# get DEST [VAR=VALUE...]: runs the script into DEST with those settings; sets $status.
get() {
    get_dest=$1
    shift
    env "$@" "$sh_path" "$script" "$get_dest" > "$tmp/out" 2> "$tmp/err"
    status=$?
}

# run_in_cwd ARG...: runs the script with those arguments from the empty folder $tmp/cwd
# (a fake mirror, so that a regression that starts fetching stays small); sets $status.
run_in_cwd() {
    mkdir -p "$tmp/cwd"
    (cd "$tmp/cwd" && CIFAR10_MIRROR="$tmp/mirror" "$sh_path" "$script" "$@") \
        > "$tmp/out" 2> "$tmp/err"
    status=$?
}

succeeded() { [ "$status" -eq 0 ]; }
exited_with() { [ "$status" -eq "$1" ]; }
failed_with() { [ "$status" -ne 0 ] && grep -q -- "$1" "$tmp/err"; }
said() { grep -q -- "$1" "$tmp/out"; }
cwd_untouched() { empty_folder "$tmp/cwd"; }
one_line_error() { [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q -- "$1" "$tmp/err"; }
printed() { [ "$(grep -c -- "$1" "$tmp/out")" -eq "$2" ]; }

# same_files DEST: every file in DEST equals the synthetic source.
same_files() {
    for name in $FILES; do
        cmp -s "$tmp/src/$name" "$1/$name" || return 1
    done
}

empty_folder() { [ -d "$1" ] && [ -z "$(ls -A "$1")" ]; }

# only_final_files DEST: DEST holds the seven files and SHA256SUMS, no temporaries.
# shellcheck disable=SC2012 # the names are the script's own, all plain
only_final_files() { [ "$(ls -A "$1" | wc -l)" -eq 8 ]; }

# no_file DEST NAME: NAME is absent and no temporary folder was left behind.
no_file() {
    [ ! -e "$1/$2" ] || return 1
    for leftover in "$1"/.get_cifar10.*; do
        [ ! -e "$leftover" ] || return 1
    done
}

make_sources() {
    mkdir "$tmp/src" "$tmp/mirror" "$tmp/tar" "$tmp/tar/cifar-10-batches-bin"
    for name in $BINS; do
        head -c 6146 /dev/urandom > "$tmp/src/$name"
        xz -c "$tmp/src/$name" > "$tmp/mirror/$name.xz"
    done
    printf 'airplane\nautomobile\n' > "$tmp/src/batches.meta.txt"
    cp "$tmp/src/batches.meta.txt" "$tmp/mirror/"
    # shellcheck disable=SC2086 # a list of plain names
    (cd "$tmp/src" && sha256sum $BINS) > "$tmp/mirror/SHA256SUMS"
    for name in $FILES; do
        cp "$tmp/src/$name" "$tmp/tar/cifar-10-batches-bin/"
    done
    echo '<html></html>' > "$tmp/tar/cifar-10-batches-bin/readme.html"
    tar -czf "$tmp/fake.tar.gz" -C "$tmp/tar" cifar-10-batches-bin
    tar_md5=$(md5sum < "$tmp/fake.tar.gz" | cut -d' ' -f1)
    rm "$tmp/tar/cifar-10-batches-bin/test_batch.bin"
    tar -czf "$tmp/incomplete.tar.gz" -C "$tmp/tar" cifar-10-batches-bin
    incomplete_md5=$(md5sum < "$tmp/incomplete.tar.gz" | cut -d' ' -f1)
}

test_mirror() {
    get "$tmp/m1" CIFAR10_MIRROR="$tmp/mirror"
    check "mirror: first run succeeds" succeeded
    check "mirror: first run decompresses six files" printed ': decompressed and verified' 6
    check "mirror: files equal the sources" same_files "$tmp/m1"
    check "mirror: no temporaries left" only_final_files "$tmp/m1"

    get "$tmp/m1" CIFAR10_MIRROR="$tmp/mirror"
    check "mirror: second run succeeds" succeeded
    check "mirror: second run skips all seven files" printed 'skipped' 7
    check "mirror: second run decompresses nothing" printed 'decompressed' 0

    echo x >> "$tmp/m1/data_batch_2.bin"
    get "$tmp/m1" CIFAR10_MIRROR="$tmp/mirror"
    check "mirror: a damaged file is replaced" printed 'data_batch_2.bin: decompressed' 1
    check "mirror: files equal the sources after repair" same_files "$tmp/m1"
}

test_corrupt_mirror() {
    cp -R "$tmp/mirror" "$tmp/bad_mirror"
    echo "not the data" | xz -c > "$tmp/bad_mirror/data_batch_3.bin.xz"
    get "$tmp/m2" CIFAR10_MIRROR="$tmp/bad_mirror"
    check "corrupt mirror: checksum mismatch reported" failed_with 'checksum mismatch for data_batch_3.bin'
    check "corrupt mirror: no data_batch_3.bin left" no_file "$tmp/m2" data_batch_3.bin

    head -c 100 "$tmp/mirror/data_batch_1.bin.xz" > "$tmp/bad_mirror/data_batch_1.bin.xz"
    get "$tmp/m3" CIFAR10_MIRROR="$tmp/bad_mirror"
    check "truncated .xz: failure names the file" failed_with 'decompressing .*data_batch_1.bin.xz'
    check "truncated .xz: no data_batch_1.bin left" no_file "$tmp/m3" data_batch_1.bin

    get "$tmp/m4" CIFAR10_MIRROR="$tmp/no_such_mirror"
    check "missing mirror folder: reported" failed_with 'CIFAR10_MIRROR=.*is not a folder'
}

test_missing_xz() {
    mkdir "$tmp/bin"
    for tool in mkdir mktemp mv rm cat sha256sum; do
        ln -s "$(command -v "$tool")" "$tmp/bin/$tool"
    done
    get "$tmp/m5" CIFAR10_MIRROR="$tmp/mirror" PATH="$tmp/bin"
    check "no xz: missing tool reported" failed_with 'missing tool: xz'
    check "no xz: no data_batch_1.bin left" no_file "$tmp/m5" data_batch_1.bin
}

test_tarball() {
    get "$tmp/t1" CIFAR10_MIRROR= CIFAR10_URL="$tmp/fake.tar.gz" CIFAR10_MD5="$tar_md5"
    check "tarball path: succeeds" succeeded
    check "tarball path: extracts seven files" printed ': extracted' 7
    check "tarball path: files equal the sources" same_files "$tmp/t1"
    check "tarball path: no temporaries or extra files" only_final_files "$tmp/t1"
    # shellcheck disable=SC2016 # $1 is expanded by the inner shell
    check "tarball path: SHA256SUMS verifies" sh -c 'cd "$1" && sha256sum -c --quiet SHA256SUMS' sh "$tmp/t1"

    get "$tmp/t1" CIFAR10_MIRROR= CIFAR10_URL="$tmp/gone.tar.gz" CIFAR10_MD5="$tar_md5"
    check "tarball rerun: verified from SHA256SUMS without the tarball" succeeded
    check "tarball rerun: skips all seven files" printed 'skipped' 7

    get "$tmp/t2" CIFAR10_MIRROR= CIFAR10_URL="file://$tmp/fake.tar.gz" CIFAR10_MD5="$tar_md5"
    check "tarball file:// URL: succeeds" succeeded
    check "tarball file:// URL: files equal the sources" same_files "$tmp/t2"
}

test_tarball_failures() {
    get "$tmp/t3" CIFAR10_MIRROR= CIFAR10_URL="$tmp/fake.tar.gz" CIFAR10_MD5=0123456789abcdef0123456789abcdef
    check "wrong md5: mismatch reported" failed_with 'md5 mismatch'
    check "wrong md5: no final file" no_file "$tmp/t3" data_batch_1.bin

    get "$tmp/t4" CIFAR10_MIRROR= CIFAR10_URL=http://127.0.0.1:9/cifar-10-binary.tar.gz \
        http_proxy= HTTP_PROXY= https_proxy= HTTPS_PROXY= all_proxy= ALL_PROXY= no_proxy='*'
    check "unreachable URL: download failure reported" failed_with 'download failed'
    check "unreachable URL: no final file" no_file "$tmp/t4" data_batch_1.bin

    get "$tmp/t5" CIFAR10_MIRROR= CIFAR10_URL="$tmp/incomplete.tar.gz" CIFAR10_MD5="$incomplete_md5"
    check "tarball without test_batch.bin: extraction failure reported" failed_with 'extracting'
    check "tarball without test_batch.bin: no final file" no_file "$tmp/t5" data_batch_1.bin
}

# expect_not_a_file_error DEST NAME WHAT: the last run refused DEST/NAME, which is in the way,
# with exit 1, reported nothing ready and left that name as it was.
expect_not_a_file_error() {
    check "$3: exit status 1" exited_with 1
    check "$3: the error names the path" failed_with "$1/$2 exists but is not a regular file"
    check "$3: the error says what to do" failed_with 'move it away or delete it'
    check "$3: nothing reported ready" printed 'is ready' 0
    check "$3: the folder is still there, empty" empty_folder "$1/$2"
}

test_destination_not_a_file() {
    mkdir -p "$tmp/d1/data_batch_4.bin"
    get "$tmp/d1" CIFAR10_MIRROR="$tmp/mirror"
    expect_not_a_file_error "$tmp/d1" data_batch_4.bin "mirror, folder named data_batch_4.bin"

    mkdir -p "$tmp/d2/batches.meta.txt"
    get "$tmp/d2" CIFAR10_MIRROR= CIFAR10_URL="$tmp/fake.tar.gz" CIFAR10_MD5="$tar_md5"
    expect_not_a_file_error "$tmp/d2" batches.meta.txt "tarball, folder named batches.meta.txt"

    mkdir -p "$tmp/d3/SHA256SUMS"
    get "$tmp/d3" CIFAR10_MIRROR= CIFAR10_URL="$tmp/fake.tar.gz" CIFAR10_MD5="$tar_md5"
    expect_not_a_file_error "$tmp/d3" SHA256SUMS "tarball, folder named SHA256SUMS"
}

test_help() {
    for flag in -h --help; do
        run_in_cwd "$flag"
        check "$flag: exit status 0" succeeded
        check "$flag: usage line" said 'Usage: data/get_cifar10.sh \[DEST\]'
        check "$flag: the default DEST" said 'by default data/cifar10'
        for variable in CIFAR10_MIRROR CIFAR10_URL CIFAR10_MD5; do
            check "$flag: documents $variable" said "$variable"
        done
        check "$flag: documents exit status 0" said 'Exit status: 0 the files are ready'
        check "$flag: documents exit status 1" said '1 a failure'
        check "$flag: documents exit status 2" said '2 a bad command line'
        check "$flag: creates and fetches nothing" cwd_untouched
    done
}

test_bad_arguments() {
    for flag in --bogus -x -; do
        run_in_cwd "$flag"
        check "$flag: exit status 2" exited_with 2
        check "$flag: one-line error naming it" one_line_error "unknown option $flag"
        check "$flag: the hint" failed_with 'see data/get_cifar10.sh --help'
        check "$flag: creates and fetches nothing" cwd_untouched
    done
    run_in_cwd dest --help
    check "--help after DEST: still the usage" said 'Usage:'
    run_in_cwd dest -q
    check "an option after DEST: exit status 2" exited_with 2
    check "an option after DEST: error" one_line_error 'unknown option -q'
    run_in_cwd one two
    check "two DESTs: exit status 2" exited_with 2
    check "two DESTs: one-line error" one_line_error 'one DEST at most, got 2'
    check "two DESTs: creates and fetches nothing" cwd_untouched
}

make_sources
test_help
test_bad_arguments
test_mirror
test_corrupt_mirror
test_missing_xz
test_tarball
test_tarball_failures
test_destination_not_a_file
finish test_get_cifar10
