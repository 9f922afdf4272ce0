#!/usr/bin/env bash
# Fetches two English text corpora into specs/data/pattern/ (gitignored):
#   tagged-en-oanc.txt         20 000 sentences of the OANC, word/TAG tokens
#                              with Penn Treebank tags (the POS tagger's data)
#   polarity-en-pang-lee2.csv  4000 movie-review sentences labelled 1 or -1
#                              (the sentence-polarity classifier's data)
# Run by scripts/fetch-data.sh; never at build or run time. Safe to run again:
# it does nothing when the files are there and verified.
#
# Both come from Debian 12's package python3-pattern (the test corpora of the
# Pattern library, under /usr/share/doc/python3-pattern/test/corpora/; the
# second is named polarity-en-pang&lee2.csv there). Nothing is installed:
# `apt-get download` fetches the .deb into a temporary folder as any user, and
# `dpkg-deb -x` unpacks it there. Where apt-get cannot (no apt, or no package
# lists), the pinned .deb is fetched from the Debian pool with curl and checked
# against specs/data/SHA256SUMS. Either way the two files are checked against
# SHA256SUMS. See specs/data/NOTICE for where they come from and their terms.
#
# Exit status: 0 when the data are in place, 1 (with a warning) when they
# could not be fetched or verified; the test suite does not need them.
set -euo pipefail
cd "$(dirname "$0")/.."

package=python3-pattern
deb=python3-pattern_2.6+git20180818-4_all.deb
url=https://deb.debian.org/debian/pool/main/p/python-pattern/$deb
corpora=usr/share/doc/python3-pattern/test/corpora
sums=specs/data/SHA256SUMS
dest=specs/data/pattern
# Name in the package, name in $dest (the same content).
sources=("tagged-en-oanc.txt" "polarity-en-pang&lee2.csv")
files=(tagged-en-oanc.txt polarity-en-pang-lee2.csv)

warn() {
  echo "fetch-pattern: warning: $*" >&2
  echo "fetch-pattern: warning: the text specs will not have their full data" \
       "(the tests use the slices in specs/data/)" >&2
  exit 1
}

# The expected sha256 of a file named in SHA256SUMS.
expected() { awk -v f="$1" '$2 == f { print $1 }' "$sums"; }

# Whether the file $1 has the content SHA256SUMS lists for the name $2.
verify() {
  [ -f "$1" ] && [ "$(sha256sum < "$1" | cut -d' ' -f1)" = "$(expected "$2")" ]
}

all_verified() {
  for f in "${files[@]}"; do verify "$dest/$f" "$f" || return 1; done
}

if all_verified; then
  echo "fetch-pattern: corpora already in $dest"
  exit 0
fi

command -v dpkg-deb >/dev/null || warn "dpkg-deb is not installed (a Debian system is needed)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# apt-get download writes into the current folder; its output goes to a log
# that is shown only when both ways fail (as root it warns that the _apt user
# cannot write to the private temporary folder, which is harmless).
echo "fetch-pattern: downloading $package (apt-get download)"
if command -v apt-get >/dev/null &&
   (cd "$tmp" && apt-get download -q "$package") >"$tmp/apt.log" 2>&1; then
  debfile=$(find "$tmp" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
else
  command -v curl >/dev/null ||
    { cat "$tmp/apt.log" >&2; warn "apt-get download failed and curl is not installed"; }
  echo "fetch-pattern: apt-get download failed; downloading $url"
  debfile=$tmp/$deb
  curl -fsSL --retry 2 --connect-timeout 20 -o "$debfile" "$url" ||
    { cat "$tmp/apt.log" >&2; warn "could not download $package (offline?)"; }
  verify "$debfile" "$deb" || warn "$deb does not have the sha256 listed in $sums"
fi
[ -f "$debfile" ] || warn "apt-get download left no $package .deb"

mkdir -p "$tmp/root"
dpkg-deb -x "$debfile" "$tmp/root" || warn "could not unpack $(basename "$debfile")"
mkdir -p "$dest"
for i in "${!files[@]}"; do
  src=$tmp/root/$corpora/${sources[$i]}
  f=${files[$i]}
  # Debian may compress files under /usr/share/doc; this version does not.
  if [ -f "$src" ]; then
    cp "$src" "$tmp/$f"
  elif [ -f "$src.gz" ]; then
    gzip -dc "$src.gz" > "$tmp/$f"
  else
    warn "$(basename "$debfile") does not hold /$corpora/${sources[$i]}"
  fi
  verify "$tmp/$f" "$f" ||
    warn "${sources[$i]} in $(basename "$debfile") does not have the sha256 listed in $sums"
  mv "$tmp/$f" "$dest/$f"
done
all_verified || warn "the files written to $dest do not verify"
echo "fetch-pattern: corpora in $dest"
