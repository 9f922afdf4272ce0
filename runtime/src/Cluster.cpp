//===- Cluster.cpp - k-means and the adjusted Rand index ------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Cluster.h"

#include "Random.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

using namespace nnc;

namespace {

/// scikit-learn's defaults: max_iter and tol.
constexpr int MaxIterations = 300;
constexpr double RelativeTolerance = 1e-4;

/// Four partial sums rather than one: the additions of one sum wait on each
/// other, and k-means spends its time here. The order is fixed, so the
/// result is still the same on every run.
double squaredDistance(const double *A, const double *B, size_t Dims) {
  double S[4] = {0, 0, 0, 0};
  size_t D = 0;
  for (; D + 4 <= Dims; D += 4)
    for (size_t L = 0; L < 4; ++L)
      S[L] += (A[D + L] - B[D + L]) * (A[D + L] - B[D + L]);
  for (; D < Dims; ++D)
    S[0] += (A[D] - B[D]) * (A[D] - B[D]);
  return (S[0] + S[1]) + (S[2] + S[3]);
}

/// One k-means problem: the points and the number of clusters.
struct Problem {
  const double *X;
  size_t Rows, Dims, K;

  const double *row(size_t I) const { return X + I * Dims; }
};

/// Greedy k-means++ seeding, as scikit-learn's: the first centre is a row
/// drawn uniformly; each next one is the best, by the potential (the sum of
/// squared distances to the nearest centre) it leaves, of 2 + floor(ln K)
/// rows drawn with probability proportional to their squared distance to
/// the nearest centre so far.
std::vector<double> seedCentres(const Problem &P, Rng &Gen) {
  std::vector<double> Centres(P.K * P.Dims);
  auto SetCentre = [&](size_t C, size_t Row) {
    std::copy(P.row(Row), P.row(Row) + P.Dims, Centres.begin() + C * P.Dims);
  };
  size_t First = Gen.below(P.Rows);
  SetCentre(0, First);
  std::vector<double> Closest(P.Rows), Trial(P.Rows), Best(P.Rows), Cum(P.Rows);
  for (size_t I = 0; I < P.Rows; ++I)
    Closest[I] = squaredDistance(P.row(I), P.row(First), P.Dims);

  int Trials = 2 + int(std::log(double(P.K)));
  for (size_t C = 1; C < P.K; ++C) {
    std::partial_sum(Closest.begin(), Closest.end(), Cum.begin());
    double BestPotential = 0;
    size_t BestRow = 0;
    for (int T = 0; T < Trials; ++T) {
      // The first row whose cumulative weight exceeds the draw: a row with
      // weight 0 (already a centre) is never drawn unless all are (K larger
      // than the number of distinct points), and then the last one is.
      double Draw = Gen.uniform() * Cum.back();
      size_t Row =
          size_t(std::upper_bound(Cum.begin(), Cum.end(), Draw) - Cum.begin());
      Row = std::min(Row, P.Rows - 1);
      double Potential = 0;
      for (size_t I = 0; I < P.Rows; ++I) {
        Trial[I] =
            std::min(Closest[I], squaredDistance(P.row(I), P.row(Row), P.Dims));
        Potential += Trial[I];
      }
      if (T == 0 || Potential < BestPotential) {
        BestPotential = Potential;
        BestRow = Row;
        Best.swap(Trial);
      }
    }
    SetCentre(C, BestRow);
    Closest.swap(Best);
  }
  return Centres;
}

/// Assigns each row to its nearest centre, the lowest index on a tie, and
/// sets Dist to the squared distance to it.
void assignRows(const Problem &P, const std::vector<double> &Centres,
                std::vector<int32_t> &Assign, std::vector<double> &Dist) {
  for (size_t I = 0; I < P.Rows; ++I) {
    size_t Nearest = 0;
    double NearestDist = squaredDistance(P.row(I), Centres.data(), P.Dims);
    for (size_t C = 1; C < P.K; ++C) {
      double D = squaredDistance(P.row(I), &Centres[C * P.Dims], P.Dims);
      if (D < NearestDist) {
        NearestDist = D;
        Nearest = C;
      }
    }
    Assign[I] = int32_t(Nearest);
    Dist[I] = NearestDist;
  }
}

/// The update step: each centre becomes the mean of its rows. A cluster with
/// no row takes the row farthest from its own centre (as scikit-learn does),
/// among the rows whose cluster keeps at least one row; when there is none
/// (more clusters than rows) it keeps its centre.
void updateCentres(const Problem &P, const std::vector<int32_t> &Assign,
                   const std::vector<double> &Dist,
                   const std::vector<double> &Old, std::vector<double> &New) {
  std::vector<double> Sums(P.K * P.Dims, 0.0);
  std::vector<size_t> Counts(P.K, 0);
  for (size_t I = 0; I < P.Rows; ++I) {
    ++Counts[Assign[I]];
    double *Sum = &Sums[Assign[I] * P.Dims];
    for (size_t D = 0; D < P.Dims; ++D)
      Sum[D] += P.row(I)[D];
  }

  std::vector<size_t> Empty;
  for (size_t C = 0; C < P.K; ++C)
    if (Counts[C] == 0)
      Empty.push_back(C);
  if (!Empty.empty()) {
    std::vector<size_t> Farthest(P.Rows);
    std::iota(Farthest.begin(), Farthest.end(), size_t(0));
    std::stable_sort(Farthest.begin(), Farthest.end(),
                     [&](size_t L, size_t R) { return Dist[L] > Dist[R]; });
    size_t Next = 0;
    for (size_t C : Empty) {
      while (Next < P.Rows && Counts[Assign[Farthest[Next]]] <= 1)
        ++Next;
      if (Next == P.Rows)
        break;
      size_t Row = Farthest[Next++];
      size_t Donor = Assign[Row];
      --Counts[Donor];
      Counts[C] = 1;
      for (size_t D = 0; D < P.Dims; ++D) {
        Sums[Donor * P.Dims + D] -= P.row(Row)[D];
        Sums[C * P.Dims + D] = P.row(Row)[D];
      }
    }
  }

  for (size_t C = 0; C < P.K; ++C)
    for (size_t D = 0; D < P.Dims; ++D)
      New[C * P.Dims + D] = Counts[C] ? Sums[C * P.Dims + D] / double(Counts[C])
                                      : Old[C * P.Dims + D];
}

/// Lloyd's iterations from \p Centres, as scikit-learn's lloyd: stop when an
/// update leaves the assignments as they were, or moves the centres by at
/// most \p Tol in total squared distance; in the second case the rows are
/// assigned once more so that the labels match the final centres.
KMeansResult lloyd(const Problem &P, std::vector<double> Centres, double Tol) {
  KMeansResult R;
  std::vector<int32_t> Previous;
  std::vector<double> Dist(P.Rows), New(Centres.size());
  R.Assign.resize(P.Rows);
  bool Converged = false;
  while (R.Iterations < MaxIterations) {
    assignRows(P, Centres, R.Assign, Dist);
    updateCentres(P, R.Assign, Dist, Centres, New);
    ++R.Iterations;
    double Shift = 0;
    for (size_t C = 0; C < P.K; ++C)
      Shift += squaredDistance(&New[C * P.Dims], &Centres[C * P.Dims], P.Dims);
    Centres.swap(New);
    if (R.Assign == Previous) {
      Converged = true;
      break;
    }
    if (Shift <= Tol)
      break;
    Previous = R.Assign;
  }
  if (!Converged)
    assignRows(P, Centres, R.Assign, Dist);
  for (size_t I = 0; I < P.Rows; ++I)
    R.Inertia +=
        squaredDistance(P.row(I), &Centres[R.Assign[I] * P.Dims], P.Dims);
  R.Centres = std::move(Centres);
  return R;
}

/// scikit-learn's tolerance: RelativeTolerance times the mean over the
/// dimensions of the data's (population) variance.
double absoluteTolerance(const Problem &P) {
  double Total = 0;
  for (size_t D = 0; D < P.Dims; ++D) {
    double Mean = 0;
    for (size_t I = 0; I < P.Rows; ++I)
      Mean += P.row(I)[D];
    Mean /= double(P.Rows);
    double Var = 0;
    for (size_t I = 0; I < P.Rows; ++I)
      Var += (P.row(I)[D] - Mean) * (P.row(I)[D] - Mean);
    Total += Var / double(P.Rows);
  }
  return P.Dims ? RelativeTolerance * Total / double(P.Dims) : 0.0;
}

/// Sorts the centres lexicographically and relabels the rows to match.
void sortCentres(const Problem &P, KMeansResult &R) {
  std::vector<size_t> Order(P.K);
  std::iota(Order.begin(), Order.end(), size_t(0));
  auto Row = [&](size_t C) { return R.Centres.begin() + C * P.Dims; };
  std::stable_sort(Order.begin(), Order.end(), [&](size_t L, size_t Rt) {
    return std::lexicographical_compare(Row(L), Row(L) + P.Dims, Row(Rt),
                                        Row(Rt) + P.Dims);
  });
  std::vector<double> Sorted(R.Centres.size());
  std::vector<int32_t> NewLabel(P.K);
  for (size_t C = 0; C < P.K; ++C) {
    std::copy(Row(Order[C]), Row(Order[C]) + P.Dims,
              Sorted.begin() + C * P.Dims);
    NewLabel[Order[C]] = int32_t(C);
  }
  R.Centres = std::move(Sorted);
  for (int32_t &A : R.Assign)
    A = NewLabel[A];
}

/// The sum over the runs of equal values of sorted \p V of the squared run
/// lengths: the sum of squared counts of a contingency table's cells or
/// margins.
template <typename T> uint64_t sumSquaredRuns(const std::vector<T> &V) {
  uint64_t Sum = 0;
  for (size_t Start = 0, End; Start < V.size(); Start = End) {
    for (End = Start + 1; End < V.size() && V[End] == V[Start]; ++End)
      ;
    Sum += uint64_t(End - Start) * uint64_t(End - Start);
  }
  return Sum;
}

} // namespace

KMeansResult nnc::kmeans(const double *X, size_t Rows, size_t Dims, int K,
                         int Restarts, uint64_t Seed) {
  if (K < 1 || Rows == 0)
    return KMeansResult();
  Problem P{X, Rows, Dims, size_t(K)};
  double Tol = absoluteTolerance(P);
  KMeansResult Best;
  for (int R = 0; R < std::max(Restarts, 1); ++R) {
    Rng Gen(Seed + uint64_t(R));
    KMeansResult Run = lloyd(P, seedCentres(P, Gen), Tol);
    if (R == 0 || Run.Inertia < Best.Inertia)
      Best = std::move(Run);
  }
  sortCentres(P, Best);
  return Best;
}

double nnc::adjustedRandIndex(const int32_t *A, const int32_t *B, size_t N) {
  // The contingency table's sums of squares come from sorted copies of the
  // labels, so no table of (classes of A) x (classes of B) is built.
  std::vector<int32_t> SortedA(A, A + N), SortedB(B, B + N);
  std::vector<std::pair<int32_t, int32_t>> Cells(N);
  for (size_t I = 0; I < N; ++I)
    Cells[I] = {A[I], B[I]};
  std::sort(SortedA.begin(), SortedA.end());
  std::sort(SortedB.begin(), SortedB.end());
  std::sort(Cells.begin(), Cells.end());
  int64_t CellSq = int64_t(sumSquaredRuns(Cells));
  int64_t ASq = int64_t(sumSquaredRuns(SortedA));
  int64_t BSq = int64_t(sumSquaredRuns(SortedB));

  // Ordered pairs of points (scikit-learn's pair_confusion_matrix), exact in
  // 64 bits for N < 3e9: together in both labelings, together in A only,
  // in B only, and apart in both.
  int64_t Both = CellSq - int64_t(N);
  int64_t AOnly = ASq - CellSq;
  int64_t BOnly = BSq - CellSq;
  int64_t Neither = int64_t(N) * int64_t(N) - AOnly - BOnly - CellSq;
  if (AOnly == 0 && BOnly == 0)
    return 1.0;
  // The products are exact in 128 bits (N < 1e9); each is then rounded once
  // to double, as Python's int-to-float conversions in scikit-learn do, so
  // that the result is the same double as adjusted_rand_score's.
  using Int128 = __int128;
  Int128 Num = Int128(Both) * Neither - Int128(AOnly) * BOnly;
  Int128 Den = Int128(Both + AOnly) * (AOnly + Neither) +
               Int128(Both + BOnly) * (BOnly + Neither);
  return 2.0 * double(Num) / double(Den);
}
