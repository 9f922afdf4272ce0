//===- Dataset.cpp - Splits, standardization, batch gathering -------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Dataset.h"
#include "Random.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

using namespace nnc;

/// round(F * N) with halves away from zero, the same on every platform.
static size_t roundedShare(double F, size_t N) {
  double Share = std::floor(F * double(N) + 0.5);
  return std::min(N, size_t(std::max(0.0, Share)));
}

Split nnc::splitRows(size_t Rows, double TrainFraction, double TestFraction,
                     uint64_t Seed) {
  std::vector<size_t> Order(Rows);
  std::iota(Order.begin(), Order.end(), size_t(0));
  Rng R(Seed);
  R.shuffle(Order.data(), Order.size());

  size_t NumTrain = roundedShare(TrainFraction, Rows);
  size_t NumTest = std::min(roundedShare(TestFraction, Rows), Rows - NumTrain);
  Split S;
  S.Train.assign(Order.begin(), Order.begin() + NumTrain);
  S.Test.assign(Order.begin() + NumTrain, Order.begin() + NumTrain + NumTest);
  return S;
}

Split nnc::fixedSplit(const Table &T) {
  Split S;
  S.Train.resize(std::min(T.FixedTrainRows, T.Rows));
  std::iota(S.Train.begin(), S.Train.end(), size_t(0));
  S.Test.resize(T.Rows - S.Train.size());
  std::iota(S.Test.begin(), S.Test.end(), S.Train.size());
  return S;
}

void nnc::standardize(Table &T, const Manifest &M,
                      const std::vector<size_t> &TrainRows) {
  if (TrainRows.empty())
    return;
  for (size_t S = 0; S < T.Slots.size(); ++S) {
    if (M.Slots[S].IsLabel || M.Slots[S].isInteger())
      continue; // labels, and indices, which name rows of a table
    SlotData &D = T.Slots[S];
    D.decode(); // Standardized values are no longer few.
    size_t W = D.Width;
    // Two passes (mean, then squared deviations) rather than sums of squares,
    // which lose every digit on features with a large offset.
    std::vector<double> Mean(W, 0.0), Var(W, 0.0);
    for (size_t R : TrainRows)
      for (size_t J = 0; J < W; ++J)
        Mean[J] += D.Values[R * W + J];
    for (double &V : Mean)
      V /= double(TrainRows.size());
    for (size_t R : TrainRows)
      for (size_t J = 0; J < W; ++J) {
        double Dev = D.Values[R * W + J] - Mean[J];
        Var[J] += Dev * Dev;
      }
    std::vector<double> Scale(W);
    for (size_t J = 0; J < W; ++J) {
      double Std = std::sqrt(Var[J] / double(TrainRows.size()));
      Scale[J] = Std > 0 ? 1.0 / Std : 1.0;
    }
    for (size_t R = 0; R < T.Rows; ++R)
      for (size_t J = 0; J < W; ++J) {
        double &V = D.Values[R * W + J];
        V = (V - Mean[J]) * Scale[J];
      }
  }
}

void SlotData::decode() {
  if (Codes.empty())
    return;
  Values.resize(Codes.size());
  for (size_t I = 0; I < Codes.size(); ++I)
    Values[I] = CodeValues[Codes[I]];
  Codes = {};
}

template <typename T>
static void gatherValues(const SlotData &D, const size_t *Rows, size_t N,
                         T *Out) {
  size_t W = D.Width;
  if (!D.Codes.empty()) {
    T Decoded[256] = {};
    for (size_t C = 0; C < D.CodeValues.size() && C < 256; ++C)
      Decoded[C] = static_cast<T>(D.CodeValues[C]);
    for (size_t I = 0; I < N; ++I) {
      const uint8_t *Src = &D.Codes[Rows[I] * W];
      for (size_t J = 0; J < W; ++J)
        Out[I * W + J] = Decoded[Src[J]];
    }
    return;
  }
  for (size_t I = 0; I < N; ++I) {
    const double *Src = &D.Values[Rows[I] * W];
    for (size_t J = 0; J < W; ++J)
      Out[I * W + J] = static_cast<T>(Src[J]);
  }
}

void nnc::gatherRows(const Table &T, const size_t *Rows, size_t N, DType Type,
                     void *const *Dest) {
  for (size_t S = 0; S < T.Slots.size(); ++S) {
    const SlotData &D = T.Slots[S];
    if (D.IsClass) {
      auto *Out = static_cast<int32_t *>(Dest[S]);
      for (size_t I = 0; I < N; ++I)
        std::copy_n(&D.Classes[Rows[I] * D.Width], D.Width, &Out[I * D.Width]);
    } else if (Type == DType::F32) {
      gatherValues(D, Rows, N, static_cast<float *>(Dest[S]));
    } else {
      gatherValues(D, Rows, N, static_cast<double *>(Dest[S]));
    }
  }
}
