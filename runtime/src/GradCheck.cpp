//===- GradCheck.cpp - Gradients against finite differences ---------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "GradCheck.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

using namespace nnc;

namespace {

/// Models up to this many parameter elements are checked element by element;
/// larger ones on an evenly spaced sample of each tensor.
constexpr int64_t CheckAllLimit = 20000;
constexpr int64_t SamplePerTensor = 500;

/// "[i,j]": the row-major multi-index of flat index \p Flat in \p Dims.
std::string formatIndex(int64_t Flat, const std::vector<int64_t> &Dims) {
  std::string S;
  for (size_t I = Dims.size(); I-- > 0;) {
    S = std::to_string(Flat % Dims[I]) + (S.empty() ? "" : ",") + S;
    Flat /= Dims[I];
  }
  return "[" + S + "]";
}

double relativeError(double Analytic, double Numeric) {
  double E = std::fabs(Analytic - Numeric) /
             std::max({std::fabs(Analytic), std::fabs(Numeric), 1e-3});
  return std::isnan(E) ? INFINITY : E;
}

struct Worst {
  double Error = -1;
  int64_t Index = 0;
  double Analytic = 0, Numeric = 0;
};

} // namespace

int nnc::runGradCheck(const char *Prog, const Manifest &M, Model &Mod,
                      const Table &T, const std::vector<size_t> &TrainRows,
                      const Options &O) {
  if (M.Type == DType::F32)
    std::fprintf(stderr,
                 "%s: note: f32 gradient check is coarse; compile with "
                 "--dtype=f64\n",
                 Prog);
  size_t Rows = std::min(TrainRows.size(), size_t(O.GradCheckRows));
  Mod.initParams(O.Seed);
  Mod.loadRows(T, TrainRows.data(), Rows);

  double Loss = Mod.lossGrad();
  std::vector<double> Analytic(size_t(M.ParamCount));
  for (size_t I = 0; I < Analytic.size(); ++I)
    Analytic[I] = Mod.grad(I);
  // Both entry points compute the same loss, perhaps along different paths,
  // so they may differ by rounding but not by more; unless the model has
  // layers such as dropout that evaluation leaves out.
  bool TrainOnlyLayers = std::any_of(M.Layers.begin(), M.Layers.end(),
                                     [](const LayerRow &L) { return L.Kind == "dropout"; });
  double EvalLoss = Mod.eval();
  double Agree = M.Type == DType::F64 ? 1e-9 : 1e-4;
  if (!TrainOnlyLayers &&
      !(std::fabs(Loss - EvalLoss) <= Agree * std::max(1.0, std::fabs(Loss))))
    std::fprintf(stderr,
                 "%s: warning: nnc_loss_grad and nnc_eval disagree on the loss "
                 "(%.9e and %.9e)\n",
                 Prog, Loss, EvalLoss);

  // The step balances truncation error (h^2) against rounding error
  // (epsilon / h) for each type.
  double H = M.Type == DType::F64 ? 1e-6 : 1e-3;
  bool CheckAll = M.ParamCount <= CheckAllLimit;
  int64_t Checked = 0;
  Worst Overall;
  std::string OverallName;
  for (const ParamTensor &P : M.Params) {
    int64_t Size = P.size();
    int64_t Count = CheckAll ? Size : std::min(Size, SamplePerTensor);
    Worst W;
    for (int64_t K = 0; K < Count; ++K) {
      int64_t Index = Count == Size ? K : K * Size / Count;
      size_t Flat = size_t(P.Offset + Index);
      double Theta = Mod.param(Flat);
      // Divide by the step actually taken: in f32, theta +- h rounds.
      // The loss in training mode (the same dropout masks as the analytic
      // gradient's: they depend on the seed and step only).
      Mod.setParam(Flat, Theta + H);
      double Plus = Mod.param(Flat);
      double LossPlus = Mod.lossGrad();
      Mod.setParam(Flat, Theta - H);
      double Minus = Mod.param(Flat);
      double LossMinus = Mod.lossGrad();
      Mod.setParam(Flat, Theta);

      double Numeric = (LossPlus - LossMinus) / (Plus - Minus);
      double E = relativeError(Analytic[Flat], Numeric);
      if (E > W.Error)
        W = {E, Index, Analytic[Flat], Numeric};
      ++Checked;
    }
    std::printf("gradcheck %s: worst relative error %.3e at %s (analytic %.9e, "
                "numeric %.9e)\n",
                P.Name.c_str(), W.Error, formatIndex(W.Index, P.Dims).c_str(),
                W.Analytic, W.Numeric);
    std::fflush(stdout);
    if (W.Error > Overall.Error) {
      Overall = W;
      OverallName = P.Name + formatIndex(W.Index, P.Dims);
    }
  }

  double WorstError = std::max(Overall.Error, 0.0);
  std::printf("gradcheck: %lld elements, worst relative error %.3e (%s)\n",
              (long long)Checked, WorstError,
              OverallName.empty() ? "none" : OverallName.c_str());
  bool Pass = WorstError <= O.GradCheckTolerance;
  if (Pass)
    std::printf("gradcheck: PASS\n");
  else
    std::printf("gradcheck: FAIL (tolerance %g)\n", O.GradCheckTolerance);
  std::fflush(stdout);
  return Pass ? 0 : 1;
}
