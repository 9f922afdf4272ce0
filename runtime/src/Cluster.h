//===- Cluster.h - k-means and the adjusted Rand index ----------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// What the textbooks do with an encoder's output after training: cluster it
/// with scikit-learn's KMeans and compare the clusters with the labels by
/// adjusted_rand_score. Both are reimplemented here after scikit-learn, with
/// the runtime's generator, so that a trainer's result is bit for bit the
/// same on every run with the same seed.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CLUSTER_H
#define NNC_RUNTIME_CLUSTER_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nnc {

struct KMeansResult {
  std::vector<double> Centres; ///< K x Dims, row-major, rows sorted
                               ///< lexicographically.
  std::vector<int32_t> Assign; ///< Per row of X, its centre's index.
  double Inertia = 0;          ///< Sum of squared distances to the centres.
  int Iterations = 0;          ///< Lloyd iterations of the winning restart.
};

/// Clusters the \p Rows x \p Dims row-major points \p X into \p K clusters:
/// greedy k-means++ seeding, then Lloyd's iterations (at most 300) until the
/// assignments no longer change or the centres move by less than 1e-4 times
/// the data's mean per-dimension variance (scikit-learn's `tol`). A cluster
/// that empties is given the point farthest from its centre. This is run
/// \p Restarts times (at least once), restart R drawing from Rng(Seed + R),
/// and the run with the lowest inertia is returned (the first on a tie), its
/// centres sorted so that the labels do not depend on which run won.
/// K larger than the number of distinct points gives duplicate centres, some
/// of them with no point. K < 1 or Rows == 0 gives an empty result.
KMeansResult kmeans(const double *X, size_t Rows, size_t Dims, int K,
                    int Restarts, uint64_t Seed);

/// Hubert and Arabie's adjusted Rand index of the labelings \p A and \p B of
/// \p N points, as sklearn.metrics.adjusted_rand_score computes it: 1 for
/// identical partitions whatever the label values, about 0 for independent
/// ones, and exactly 1 when there is nothing to disagree on (N < 2, or both
/// labelings put every point in one cluster, or every point on its own).
double adjustedRandIndex(const int32_t *A, const int32_t *B, size_t N);

} // namespace nnc

#endif // NNC_RUNTIME_CLUSTER_H
