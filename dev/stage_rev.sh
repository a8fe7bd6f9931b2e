#!/bin/sh
# dev/stage_rev.sh REV [DEST]: writes the source tree of git revision REV into DEST (default
# .rev/<7-digit commit>, ignored by git) with DEST/.git-commit holding its full commit hash,
# so that `./bench.sh VARIANT --against DEST` can build and time it where there is no .git:
# on a lent GPU machine, which gets a copy of the files only. Carry the .rev folder along
# with the call (the device tool's carry: [".rev"]). Prints DEST. Exit status: 0 written;
# 2 bad arguments, REV not a commit, or DEST already there.
set -eu
usage="usage: dev/stage_rev.sh REV [DEST]"
case ${1:-} in
    -h | --help) echo "$usage"; sed -n '2,7p' "$0" | cut -c3-; exit 0 ;;
    "") echo "$usage" >&2; exit 2 ;;
esac
[ $# -le 2 ] || { echo "$usage" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$root" rev-parse --verify --quiet "$1^{commit}") ||
    { echo "dev/stage_rev.sh: '$1' is not a commit of this repository" >&2; exit 2; }
dest=${2:-$root/.rev/$(echo "$commit" | cut -c1-7)}
[ ! -e "$dest" ] || { echo "dev/stage_rev.sh: $dest already exists; remove it or name another" >&2; exit 2; }
mkdir -p "$dest"
git -C "$root" archive "$commit" | tar -x -C "$dest"
echo "$commit" > "$dest/.git-commit"
echo "$dest"
