#!/usr/bin/env bash
# Download the wheels of hack/gpu-wheels.txt for the GPU machine (Python 3.12,
# manylinux x86_64), at requirements/constraints.txt's pins, without resolving
# dependencies (the list is complete; torch is already there).
#
#   bash hack/gpu-wheels.sh [DEST]            # default DEST: hack/wheels
#   bash hack/gpu-wheels.sh --check NAME...   # resolve only these (a quick proof the list resolves)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIP=${PIP:-"$ROOT/.venv/bin/pip"}
DEST="$ROOT/hack/wheels"
ONLY=()
if [ "${1:-}" = "--check" ]; then
  shift
  ONLY=("$@")
  DEST=$(mktemp -d)
  trap 'rm -rf "$DEST"' EXIT
elif [ $# -gt 0 ]; then
  DEST=$1
fi

pin() {  # the exact version requirements/constraints.txt pins for distribution $1 (names compared as PEP 503 does)
  local want
  want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
  awk -F'==' -v want="$want" '{ name = tolower($1); gsub(/[_.]/, "-", name); if (name == want) { print $2; exit } }' "$ROOT/requirements/constraints.txt"
}

specs=()
while read -r name when; do
  case "$name" in ''|'#'*) continue ;; esac
  [ "$when" = present ] && continue  # the GPU machine has it
  if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " == *" $name "* ]]; then continue; fi
  version=$(pin "$name")
  if [ -z "$version" ]; then
    echo "gpu-wheels: $name is not pinned in requirements/constraints.txt" >&2
    exit 1
  fi
  specs+=("$name==$version")
done < "$ROOT/hack/gpu-wheels.txt"
if [ ${#specs[@]} -eq 0 ]; then
  echo "gpu-wheels: nothing to download (unknown names: ${ONLY[*]})" >&2
  exit 1
fi

mkdir -p "$DEST"
# The GPU machine's glibc is a recent one: accept the newer manylinux tags too.
"$PIP" download --quiet --only-binary=:all: --no-deps --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  --dest "$DEST" "${specs[@]}"
echo "gpu-wheels: ${#specs[@]} wheels in $DEST"
ls "$DEST"
