#!/bin/sh
# get_cifar10.sh [DEST]: puts the CIFAR-10 binary files into DEST; usage() below says from
# where and how it is configured (or run it with --help).
#
# Idempotent: files in DEST that match the sums are skipped, and DEST/SHA256SUMS records the
# sums of what is installed, so later runs can verify without the source. Atomic: new files
# are written into a temporary folder inside DEST and renamed into place, so a failure never
# leaves a half-written final file.
set -u

BINS="data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"
META=batches.meta.txt
OFFICIAL_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
OFFICIAL_MD5=c32a1d4ab5d03f1284b67883e8d87530
TARBALL_FOLDER=cifar-10-batches-bin

case $0 in */*) script_dir=${0%/*} ;; *) script_dir=. ;; esac
repo_root=$(cd "$script_dir/.." && pwd) || exit 1
url=${CIFAR10_URL:-$OFFICIAL_URL}
want_md5=${CIFAR10_MD5:-$OFFICIAL_MD5}
use_mirror_instead="or set CIFAR10_MIRROR to a local mirror folder, or CIFAR10_URL to a local copy of cifar-10-binary.tar.gz"

usage() {
    cat <<EOF
Usage: data/get_cifar10.sh [DEST]
Puts the CIFAR-10 binary files (data_batch_1..5.bin, test_batch.bin, batches.meta.txt) into
DEST, by default data/cifar10 in this repository ($repo_root/data/cifar10),
and verifies their checksums. Files already there and verified are kept; DEST/SHA256SUMS
records the sums of what is installed.

The source is the first that applies:
  CIFAR10_MIRROR  a local mirror folder holding *.bin.xz, SHA256SUMS (sums of the
                  decompressed files) and batches.meta.txt; by default ../shared/cifar10
                  beside the checkout, when it exists. Set it empty to skip the mirror.
  CIFAR10_URL     the official tarball: an https:// or file:// URL or a plain path;
                  by default $OFFICIAL_URL
  CIFAR10_MD5     the tarball's md5; by default $OFFICIAL_MD5

Exit status: 0 the files are ready; 1 a failure (the message says what to do);
2 a bad command line; 130 interrupted.
EOF
}

# usage_error WHAT: a bad command line, in one line with a hint, on stderr; exits 2.
usage_error() {
    printf 'get_cifar10.sh: error: %s; see data/get_cifar10.sh --help\n' "$1" >&2
    exit 2
}

# parse_arguments ARG...: sets $dest, or prints the usage and exits.
parse_arguments() {
    for arg in "$@"; do
        case $arg in
            -h | --help) usage; exit ;;  # 0, unless the usage could not be written
            -*) usage_error "unknown option $arg (write a DEST that starts with - as ./$arg)" ;;
        esac
    done
    [ $# -le 1 ] || usage_error "one DEST at most, got $#: $*"
    dest=${1:-$repo_root/data/cifar10}
}

# die WHAT [HINT...]: the error and what to do about it, on stderr; exits 1.
die() {
    printf 'get_cifar10.sh: error: %s\n' "$1" >&2
    shift
    for hint in "$@"; do
        printf '  %s\n' "$hint" >&2
    done
    exit 1
}

# need TOOL PURPOSE: fails unless TOOL is on the PATH.
need() {
    command -v "$1" >/dev/null 2>&1 ||
        die "missing tool: $1 (needed to $2)" "install $1 and run again"
}

# sha256_of FILE: prints the file's sha256 (call as $(sha256_of F) || exit 1).
sha256_of() {
    sha_line=$(sha256sum < "$1") || die "sha256sum failed on $1" "check that the file is readable"
    printf '%s\n' "${sha_line%% *}"
}

# lookup_sum SUMS_FILE NAME: prints NAME's sum from a sha256sum-style list; fails if absent.
lookup_sum() {
    while read -r entry_sum entry_name; do
        if [ "${entry_name#\*}" = "$2" ]; then
            printf '%s\n' "$entry_sum"
            return 0
        fi
    done < "$1"
    return 1
}

# is_verified FILE SUM: true when FILE exists and has that sha256.
is_verified() {
    [ -f "$1" ] || return 1
    actual_sum=$(sha256_of "$1") || exit 1
    [ "$actual_sum" = "$2" ]
}

# install_file TMP NAME: renames TMP (inside DEST) to DEST/NAME in one step.
install_file() {
    mv -f "$1" "$dest/$2" ||
        die "cannot move $1 to $dest/$2" "check the permissions of $dest and run again"
}

# check_destinations: fails if a name the script installs exists in DEST but is not a regular
# file (or a link to one). mv would move the new file into a folder of that name, or replace a
# pipe or device, and the data would not be where the readers look.
check_destinations() {
    for name in $BINS $META SHA256SUMS; do
        [ ! -e "$dest/$name" ] || [ -f "$dest/$name" ] ||
            die "$dest/$name exists but is not a regular file ($(kind_of "$dest/$name"))" \
                "move it away or delete it, then run again"
    done
}

# kind_of PATH: a word for what PATH is, for messages.
kind_of() {
    if [ -d "$1" ]; then echo "a folder"
    elif [ -p "$1" ]; then echo "a named pipe"
    elif [ -c "$1" ] || [ -b "$1" ]; then echo "a device"
    else echo "a special file"
    fi
}

# add_sum SUM NAME: appends a line to the SHA256SUMS being built for DEST.
add_sum() {
    printf '%s  %s\n' "$1" "$2" >> "$work/SHA256SUMS" ||
        die "cannot write $work/SHA256SUMS" "check free space in $dest and run again"
}

mirror_decompress() {
    need xz "decompress $mirror/$1.xz"
    [ -r "$mirror/$1.xz" ] ||
        die "missing or unreadable: $mirror/$1.xz" "the mirror is incomplete: restore it, or set CIFAR10_MIRROR= to download the official tarball"
    xz -dc "$mirror/$1.xz" > "$work/$1" ||
        die "decompressing $mirror/$1.xz into $dest failed" "if the disk is full, free space in $dest and run again; otherwise the mirror copy is corrupt: restore it, or set CIFAR10_MIRROR= to download the official tarball"
    got_sum=$(sha256_of "$work/$1") || exit 1
    [ "$got_sum" = "$2" ] ||
        die "checksum mismatch for $1 decompressed from $mirror/$1.xz: sha256 $got_sum, but $mirror/SHA256SUMS says $2" "the mirror copy is corrupt: restore it, or set CIFAR10_MIRROR= to download the official tarball"
    install_file "$work/$1" "$1"
}

from_mirror() {
    echo "source: mirror $mirror"
    need sha256sum "verify the files"
    mirror_sums=$mirror/SHA256SUMS
    [ -r "$mirror_sums" ] ||
        die "missing or unreadable: $mirror_sums" "the mirror is incomplete: restore it, or set CIFAR10_MIRROR= to download the official tarball"
    for name in $BINS; do
        want_sum=$(lookup_sum "$mirror_sums" "$name") ||
            die "$mirror_sums has no entry for $name" "the mirror is incomplete: restore it, or set CIFAR10_MIRROR= to download the official tarball"
        if is_verified "$dest/$name" "$want_sum"; then
            echo "$name: already present and verified, skipped"
        else
            mirror_decompress "$name" "$want_sum"
            echo "$name: decompressed and verified"
        fi
        add_sum "$want_sum" "$name"
    done
    [ -r "$mirror/$META" ] ||
        die "missing or unreadable: $mirror/$META" "the mirror is incomplete: restore it, or set CIFAR10_MIRROR= to download the official tarball"
    meta_sum=$(sha256_of "$mirror/$META") || exit 1
    if is_verified "$dest/$META" "$meta_sum"; then
        echo "$META: already present, skipped"
    else
        cat "$mirror/$META" > "$work/$META" ||
            die "cannot copy $mirror/$META into $dest" "check free space and permissions in $dest and run again"
        install_file "$work/$META" "$META"
        echo "$META: copied"
    fi
    add_sum "$meta_sum" "$META"
    install_file "$work/SHA256SUMS" SHA256SUMS
}

# all_recorded_verified: true when DEST/SHA256SUMS lists every file and each one matches.
all_recorded_verified() {
    [ -r "$dest/SHA256SUMS" ] || return 1
    for name in $BINS $META; do
        recorded_sum=$(lookup_sum "$dest/SHA256SUMS" "$name") || return 1
        is_verified "$dest/$name" "$recorded_sum" || return 1
    done
}

# download URL FILE: fetches URL with curl or wget.
download() {
    echo "downloading $1"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 2 -# -o "$2" "$1" ||
            die "download failed (curl exit $?): $1" "check the network connection (and proxy settings) and run again;" "$use_mirror_instead"
    elif command -v wget >/dev/null 2>&1; then
        wget -nv -O "$2" "$1" ||
            die "download failed (wget exit $?): $1" "check the network connection (and proxy settings) and run again;" "$use_mirror_instead"
    else
        die "missing tool: curl or wget (needed to download $1)" "install curl or wget and run again;" "$use_mirror_instead"
    fi
}

# fetch_tarball: sets $tarball to a local copy of $url whose md5 is verified.
fetch_tarball() {
    case $url in
        file://*) tarball=${url#file://} ;;
        *://*) tarball=$work/cifar-10-binary.tar.gz && download "$url" "$tarball" ;;
        *) tarball=$url ;;
    esac
    [ -r "$tarball" ] ||
        die "cannot read the tarball $tarball (from $url)" "check CIFAR10_URL, or unset it to download the official tarball"
    need md5sum "verify the tarball"
    md5_line=$(md5sum < "$tarball") || die "md5sum failed on $tarball" "check that the file is readable"
    got_md5=${md5_line%% *}
    [ "$got_md5" = "$want_md5" ] ||
        die "md5 mismatch for $url: got $got_md5, expected $want_md5" "the download is corrupt or incomplete: run again; if it persists, check CIFAR10_URL and CIFAR10_MD5"
    echo "${tarball##*/}: md5 verified"
}

extract_tarball() {
    need tar "extract $tarball"
    need gzip "extract $tarball"
    extracted=$work/extract
    members=""
    for name in $BINS $META; do
        members="$members $TARBALL_FOLDER/$name"
    done
    mkdir "$extracted" || die "cannot create $extracted" "check free space and permissions in $dest"
    # shellcheck disable=SC2086 # $members is a list of names without spaces
    tar -xzf "$tarball" -C "$extracted" $members ||
        die "extracting $tarball into $dest failed" "if the disk is full, free space in $dest and run again; otherwise check that the tarball holds $TARBALL_FOLDER/"
}

from_tarball() {
    echo "source: $url"
    need sha256sum "verify the files"
    if all_recorded_verified; then
        for name in $BINS $META; do
            echo "$name: already present and verified, skipped"
        done
        return
    fi
    fetch_tarball
    extract_tarball
    for name in $BINS $META; do
        new_file=$extracted/$TARBALL_FOLDER/$name
        new_sum=$(sha256_of "$new_file") || exit 1
        if is_verified "$dest/$name" "$new_sum"; then
            echo "$name: already present and verified, skipped"
        else
            install_file "$new_file" "$name"
            echo "$name: extracted"
        fi
        add_sum "$new_sum" "$name"
    done
    install_file "$work/SHA256SUMS" SHA256SUMS
}

parse_arguments "$@"
if [ -n "${CIFAR10_MIRROR+set}" ]; then
    mirror=$CIFAR10_MIRROR
    [ -z "$mirror" ] || [ -d "$mirror" ] ||
        die "CIFAR10_MIRROR=$mirror is not a folder" "point it at a mirror folder, or set CIFAR10_MIRROR= to download the official tarball"
else
    mirror=$(cd "$repo_root/../shared/cifar10" 2>/dev/null && pwd) || mirror=""
fi

mkdir -p "$dest" || die "cannot create the folder $dest" "check the path and its permissions"
check_destinations
need mktemp "create temporary files"
work=$(mktemp -d "$dest/.get_cifar10.XXXXXX") ||
    die "cannot create a temporary folder in $dest" "check free space and permissions in $dest"
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

if [ -n "$mirror" ]; then
    from_mirror
else
    from_tarball
fi
echo "CIFAR-10 is ready in $dest"
