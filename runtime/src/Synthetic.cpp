//===- Synthetic.cpp - Data sets generated from a seed --------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Synthetic.h"

#include "Numbers.h"
#include "NumpyRandom.h"
#include "Random.h"

#include <algorithm>
#include <cmath>
#include <string_view>

using namespace nnc;

namespace {

/// "kind:a:b" split at the colons.
std::vector<std::string> splitColons(const std::string &S) {
  std::vector<std::string> Parts;
  size_t Start = 0;
  for (;;) {
    size_t Colon = S.find(':', Start);
    Parts.push_back(S.substr(Start, Colon - Start));
    if (Colon == std::string::npos)
      return Parts;
    Start = Colon + 1;
  }
}

/// A distribution or a grid of the `linear` source.
struct Draw {
  std::string Kind;
  double A = 0, B = 0;
};

bool parseDraw(const Manifest &M, const std::string &Key, Draw &D,
               std::string &Err) {
  std::vector<std::string> Parts = splitColons(M.sourceArg(Key));
  D.Kind = Parts[0];
  size_t Want = D.Kind == "none" ? 1 : D.Kind == "normal" ? 2 : 3;
  bool Known = D.Kind == "none" || D.Kind == "normal" || D.Kind == "uniform" ||
               D.Kind == "linspace";
  if (!Known || Parts.size() != Want ||
      (Want > 1 && !parseDouble(Parts[1], D.A)) ||
      (Want > 2 && !parseDouble(Parts[2], D.B))) {
    Err = "malformed source field " + Key + "=" + M.sourceArg(Key);
    return false;
  }
  return true;
}

} // namespace

bool nnc::generateLinear(const Manifest &M, Table &T, LoadError &Err) {
  Err.Where.clear();
  int64_t Rows = 0;
  double Slope = 0, Intercept = 0;
  uint64_t Seed = 0;
  Draw X, Noise;
  if (!parseInt64(M.sourceArg("rows"), Rows) || Rows < 1 ||
      !parseDouble(M.sourceArg("slope"), Slope) ||
      !parseDouble(M.sourceArg("intercept"), Intercept) ||
      !parseUInt64(M.sourceArg("seed"), Seed)) {
    Err.Message = "malformed linear source in the manifest";
    return false;
  }
  if (!parseDraw(M, "x", X, Err.Message) ||
      !parseDraw(M, "noise", Noise, Err.Message))
    return false;
  if (M.Slots.size() != 2 || M.Slots[0].IsLabel || M.Slots[0].width() != 1 ||
      !M.Slots[1].IsLabel || M.Slots[1].IsClass || M.Slots[1].width() != 1) {
    Err.Message = "a linear source feeds one input and one float label, "
                  "one value each";
    return false;
  }

  Rng R(Seed);
  T.Rows = size_t(Rows);
  T.Slots.assign(2, SlotData());
  for (SlotData &S : T.Slots) {
    S.Width = 1;
    S.Values.resize(T.Rows);
  }
  for (size_t I = 0; I < T.Rows; ++I) {
    double Fraction = T.Rows == 1 ? 0 : double(I) / double(T.Rows - 1);
    double XValue = X.Kind == "linspace" ? X.A + (X.B - X.A) * Fraction
                                         : X.A + (X.B - X.A) * R.uniform();
    double E = Noise.Kind == "normal"    ? Noise.A * R.normal()
               : Noise.Kind == "uniform" ? Noise.A + (Noise.B - Noise.A) * R.uniform()
                                         : 0.0;
    T.Slots[0].Values[I] = XValue;
    T.Slots[1].Values[I] = Slope * XValue + Intercept + E;
  }
  return true;
}

bool nnc::generateBlobs(const Manifest &M, Table &T, LoadError &Err) {
  Err.Where.clear();
  int64_t Rows = 0, Features = 0, Centers = 0;
  double Std = 0, Low = 0, High = 0;
  uint64_t Seed = 0;
  if (!parseInt64(M.sourceArg("rows"), Rows) || Rows < 1 ||
      !parseInt64(M.sourceArg("features"), Features) || Features < 1 ||
      !parseInt64(M.sourceArg("centers"), Centers) || Centers < 1 ||
      Centers > Rows || !parseDouble(M.sourceArg("std"), Std) || Std < 0 ||
      !parseDouble(M.sourceArg("low"), Low) ||
      !parseDouble(M.sourceArg("high"), High) || Low > High ||
      !parseUInt64(M.sourceArg("seed"), Seed)) {
    Err.Message = "malformed blobs source in the manifest";
    return false;
  }
  bool HasLabel = M.Slots.size() == 2;
  if (M.Slots.empty() || M.Slots.size() > 2 || M.Slots[0].IsLabel ||
      M.Slots[0].width() != Features ||
      (HasLabel && (!M.Slots[1].IsClass || M.Slots[1].Classes != Centers))) {
    Err.Message = "a blobs source feeds one input of its features and, "
                  "optionally, one class label of its centers";
    return false;
  }

  // scikit-learn's make_blobs(rows, features, centers, std, box, seed),
  // draw for draw through NumPy's legacy generator, so that the points are
  // the textbook's: centres uniform in the box; rows shared out evenly (the
  // first rows % centers blobs get one more), each its centre plus
  // N(0, std^2) noise, blob after blob; then the rows shuffled.
  NumpyRandomState R(Seed);
  std::vector<double> CentreAt(static_cast<size_t>(Centers * Features));
  for (double &C : CentreAt)
    C = R.uniform(Low, High);
  std::vector<double> Points(static_cast<size_t>(Rows * Features));
  std::vector<int32_t> Blobs(static_cast<size_t>(Rows));
  size_t Row = 0;
  for (int64_t C = 0; C < Centers; ++C) {
    int64_t Count = Rows / Centers + (C < Rows % Centers ? 1 : 0);
    for (int64_t I = 0; I < Count; ++I, ++Row) {
      Blobs[Row] = int32_t(C);
      for (int64_t J = 0; J < Features; ++J)
        Points[Row * size_t(Features) + size_t(J)] =
            R.normal(CentreAt[size_t(C * Features + J)], Std);
    }
  }
  std::vector<size_t> Order(static_cast<size_t>(Rows));
  for (size_t I = 0; I < Order.size(); ++I)
    Order[I] = I;
  R.shuffle(Order.data(), Order.size());

  T.Rows = size_t(Rows);
  T.Slots.assign(M.Slots.size(), SlotData());
  SlotData &X = T.Slots[0];
  X.Width = size_t(Features);
  X.Values.resize(T.Rows * X.Width);
  for (size_t I = 0; I < T.Rows; ++I)
    std::copy_n(&Points[Order[I] * X.Width], X.Width, &X.Values[I * X.Width]);
  if (HasLabel) {
    SlotData &Y = T.Slots[1];
    Y.Width = 1;
    Y.IsClass = true;
    for (size_t I = 0; I < T.Rows; ++I)
      Y.Classes.push_back(Blobs[Order[I]]);
  }
  return true;
}

bool nnc::generateRatings(const Manifest &M, Table &T, LoadError &Err) {
  Err.Where.clear();
  int64_t Users = 0, Items = 0, Rank = 0;
  double Noise = 0;
  uint64_t Seed = 0;
  if (!parseInt64(M.sourceArg("users"), Users) || Users < 1 ||
      !parseInt64(M.sourceArg("items"), Items) || Items < 1 ||
      !parseInt64(M.sourceArg("rank"), Rank) || Rank < 1 ||
      !parseDouble(M.sourceArg("noise"), Noise) || Noise < 0 ||
      !parseUInt64(M.sourceArg("seed"), Seed)) {
    Err.Message = "malformed ratings source in the manifest";
    return false;
  }
  auto Indices = [&](size_t S, int64_t Range) {
    return !M.Slots[S].IsLabel && M.Slots[S].IsIndex &&
           M.Slots[S].width() == 1 && M.Slots[S].Classes == Range;
  };
  if (M.Slots.size() != 3 || !Indices(0, Users) || !Indices(1, Items) ||
      !M.Slots[2].IsLabel || M.Slots[2].isInteger() || M.Slots[2].width() != 1) {
    Err.Message = "a ratings source feeds two index inputs (user, item) and "
                  "one float label";
    return false;
  }

  Rng R(Seed);
  double Scale = 1.0 / std::sqrt(double(Rank));
  std::vector<double> U(size_t(Users * Rank)), V(size_t(Items * Rank));
  for (double &X : U)
    X = R.normal() * Scale;
  for (double &X : V)
    X = R.normal() * Scale;
  T.Rows = size_t(Users * Items);
  T.Slots.assign(3, SlotData());
  for (SlotData &S : T.Slots)
    S.Width = 1;
  T.Slots[0].IsClass = T.Slots[1].IsClass = true;
  T.Slots[0].Classes.reserve(T.Rows);
  T.Slots[1].Classes.reserve(T.Rows);
  T.Slots[2].Values.reserve(T.Rows);
  for (int64_t User = 0; User < Users; ++User)
    for (int64_t Item = 0; Item < Items; ++Item) {
      double Dot = 0;
      for (int64_t K = 0; K < Rank; ++K)
        Dot += U[size_t(User * Rank + K)] * V[size_t(Item * Rank + K)];
      T.Slots[0].Classes.push_back(int32_t(User));
      T.Slots[1].Classes.push_back(int32_t(Item));
      T.Slots[2].Values.push_back(1 / (1 + std::exp(-Dot)) + Noise * R.normal());
    }
  return true;
}
