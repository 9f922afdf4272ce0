//===- Trainer.cpp - main() of every generated trainer --------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Reads the manifest and the command line, loads and splits the data, then
// either trains (the epoch loop, reports, the weights file) or runs the
// gradient check. Exit statuses: 0 success, 1 usage error or failed gradient
// check, 2 data, manifest or file error, 4 loss not finite.
//
//===----------------------------------------------------------------------===//

#include "Csv.h"
#include "Dataset.h"
#include "GradCheck.h"
#include "Manifest.h"
#include "Model.h"
#include "Options.h"
#include "Random.h"
#include "Synthetic.h"
#include "Weights.h"

#include "nnc/runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>

using namespace nnc;

namespace {

enum ExitStatus {
  ExitSuccess = 0,
  ExitUsage = 1,
  ExitData = 2,
  ExitNonFinite = 4
};

/// Rows per nnc_eval call when evaluating a split: large enough to amortize
/// the call, small enough to keep the buffers small on big data sets.
constexpr size_t EvalChunkRows = 4096;

/// The epoch shuffles draw from their own generator, so that the data order
/// does not depend on how many parameters the model initialised.
constexpr uint64_t ShuffleStream = 0x53485546464c45ULL; // "SHUFFLE"

const char *Prog = "trainer";

/// printf to stdout, flushed, so that progress shows when piped.
void out(const char *Fmt, ...) __attribute__((format(printf, 1, 2)));
void out(const char *Fmt, ...) {
  va_list Args;
  va_start(Args, Fmt);
  std::vprintf(Fmt, Args);
  va_end(Args);
  std::fflush(stdout);
}

int error(int Status, const char *Where, const std::string &Msg) {
  std::fprintf(stderr, "%s: error: %s\n", Where, Msg.c_str());
  return Status;
}

const char *nonFiniteName(double V) {
  return std::isnan(V) ? "nan" : V > 0 ? "inf" : "-inf";
}

/// A per-row shape with the batch dimension in front: "[N, 64]".
std::string batchShape(const std::vector<int64_t> &Dims) {
  std::string S = "[N";
  for (int64_t D : Dims)
    S += ", " + std::to_string(D);
  return S + "]";
}

/// The model layer by layer, with per-row shapes and parameter counts.
void printSummary(const Manifest &M) {
  out("model %s (%s)\n", M.Model.c_str(), dtypeName(M.Type));
  out("  %-24s %-10s %-14s %12s\n", "layer", "kind", "output", "parameters");
  for (const DataSlot &S : M.Slots)
    if (!S.IsLabel)
      out("  %-24s %-10s %-14s %12s\n", S.Name.c_str(), "input",
          batchShape(S.Dims).c_str(), "");
  for (const LayerRow &L : M.Layers)
    out("  %-24s %-10s %-14s %12lld\n", L.Name.c_str(), L.Kind.c_str(),
        batchShape(L.Output).c_str(), (long long)L.Params);
  out("  %-24s %-10s %-14s %12lld\n", "total", "", "", (long long)M.ParamCount);
  out("loss %s; optimizer %s", M.Loss.c_str(), M.Optimizer.c_str());
  for (const std::string &Arg : M.OptimizerArgs)
    out(" %s", Arg.c_str());
  out("\n");
}

/// The training run: everything after the data are ready.
class Trainer {
public:
  Trainer(const Manifest &M, const Options &O, const Table &T, const Split &S,
          Model &Mod, size_t BatchRows)
      : M(M), O(O), T(T), S(S), Mod(Mod), BatchRows(BatchRows) {}

  int run();

private:
  const std::vector<size_t> &rowsOf(const Metric &Met) const {
    return Met.Split == Metric::SplitKind::Train ? S.Train : S.Test;
  }
  void report(int64_t Epoch, double Loss);

  const Manifest &M;
  const Options &O;
  const Table &T;
  const Split &S;
  Model &Mod;
  size_t BatchRows;
};

/// One "epoch" line: the training loss, then each metric, then the test loss.
void Trainer::report(int64_t Epoch, double Loss) {
  EvalResult Test, Train;
  bool HaveTest = false, HaveTrain = false;
  auto Evaluate = [&](Metric::SplitKind K) -> const EvalResult & {
    bool IsTest = K == Metric::SplitKind::Test;
    bool &Have = IsTest ? HaveTest : HaveTrain;
    EvalResult &R = IsTest ? Test : Train;
    if (!Have)
      R = Mod.evaluate(T, IsTest ? S.Test : S.Train);
    Have = true;
    return R;
  };

  // Pieces of one line, flushed at its end; nothing here allocates.
  std::printf("epoch %lld/%lld  loss %.6f", (long long)Epoch,
              (long long)O.Epochs, Loss);
  for (const Metric &Met : M.Metrics) {
    if (rowsOf(Met).empty())
      continue;
    const EvalResult &R = Evaluate(Met.Split);
    std::printf("  %s accuracy %.4f", Met.splitName(),
                double(R.Correct) / double(R.Total));
  }
  if (!S.Test.empty())
    std::printf("  test loss %.6f", Evaluate(Metric::SplitKind::Test).Loss);
  out("\n");
}

int Trainer::run() {
  if (M.PrintSummary)
    printSummary(M);
  int Label = M.classLabelSlot();
  out("%s: %zu training rows, %zu test rows", M.Model.c_str(), S.Train.size(),
      S.Test.size());
  if (Label >= 0)
    out(", %lld classes", (long long)M.Slots[Label].Classes);
  out("\n");
  for (const Metric &Met : M.Metrics)
    if (rowsOf(Met).empty())
      std::fprintf(stderr,
                   "%s: note: the %s split is empty; its accuracy is not "
                   "reported\n",
                   Prog, Met.splitName());

  Mod.initParams(O.Seed);
  Rng Shuffler(O.Seed ^ ShuffleStream);
  std::vector<size_t> Order = S.Train;
  int64_t Step = 0;
  for (int64_t Epoch = 1; Epoch <= O.Epochs; ++Epoch) {
    // With one batch per epoch the order changes nothing but rounding.
    if (M.Shuffle && BatchRows < Order.size())
      Shuffler.shuffle(Order.data(), Order.size());
    double LossSum = 0;
    for (size_t Start = 0; Start < Order.size(); Start += BatchRows) {
      size_t N = std::min(BatchRows, Order.size() - Start);
      Mod.loadRows(T, &Order[Start], N);
      double Loss = Mod.trainStep(O.Lr, ++Step);
      if (!std::isfinite(Loss)) {
        char Msg[128];
        std::snprintf(Msg, sizeof(Msg), "loss is %s at epoch %lld, step %lld",
                      nonFiniteName(Loss), (long long)Epoch, (long long)Step);
        return error(ExitNonFinite, Prog, Msg);
      }
      LossSum += Loss * double(N);
    }
    if (Epoch % M.ReportEvery == 0 || Epoch == O.Epochs)
      report(Epoch, LossSum / double(Order.size()));
  }

  for (const Metric &Met : M.Metrics) {
    if (rowsOf(Met).empty())
      continue;
    EvalResult R = Mod.evaluate(T, rowsOf(Met));
    out("%s accuracy %.4f (%lld/%lld)\n", Met.splitName(),
        double(R.Correct) / double(R.Total), (long long)R.Correct,
        (long long)R.Total);
  }

  std::string Err;
  if (!writeWeights(O.Save, M, Mod.paramData(), Err))
    return error(ExitData, Prog, Err);
  out("weights saved to %s\n", O.Save.c_str());
  return ExitSuccess;
}

int runMain(int Argc, char **Argv) {
  if (Argc > 0 && Argv[0]) {
    const char *Slash = std::strrchr(Argv[0], '/');
    Prog = Slash ? Slash + 1 : Argv[0];
  }

  Manifest M;
  std::string Err;
  if (!parseManifest(nnc_manifest, M, Err)) {
    std::fprintf(stderr, "%s: internal error: malformed manifest: %s\n", Prog,
                 Err.c_str());
    return ExitData;
  }

  Options O = defaultOptions(M);
  if (!parseOptions(Argc, Argv, O, Err))
    return error(ExitUsage, Prog, Err);
  if (O.Help) {
    printUsage(stdout, Prog, M);
    return ExitSuccess;
  }
  if (O.Summary) {
    printSummary(M);
    return ExitSuccess;
  }

  Table T;
  LoadError LE;
  bool Loaded;
  if (M.SourceKind == "csv") {
    Loaded = loadCsv(O.Data, M, T, LE);
  } else {
    if (O.Data != M.SourcePath)
      return error(ExitUsage, Prog,
                   "--data: the data of this trainer are generated (source " +
                       M.SourceKind + "), not read from a file");
    Loaded = generateLinear(M, T, LE);
  }
  if (!Loaded)
    return error(ExitData, LE.Where.empty() ? Prog : LE.Where.c_str(),
                 LE.Message);

  Split S = splitRows(T.Rows, M.TrainFraction, M.TestFraction, M.SplitSeed);
  if (S.Train.empty())
    return error(ExitData, O.Data.c_str(),
                 "the training split is empty (" + std::to_string(T.Rows) +
                     " rows, train fraction " +
                     std::to_string(M.TrainFraction) + ")");
  if (M.Standardize)
    standardize(T, M, S.Train);

  // Every call's rows fit in buffers allocated once, here.
  size_t BatchRows =
      O.Batch == 0 ? S.Train.size() : std::min(size_t(O.Batch), S.Train.size());
  size_t MaxRows =
      std::max(BatchRows, std::min(EvalChunkRows,
                                   std::max(S.Train.size(), S.Test.size())));
  if (O.GradCheck)
    MaxRows =
        std::max(MaxRows, std::min(size_t(O.GradCheckRows), S.Train.size()));
  Model Mod(M);
  if (!Mod.allocate(MaxRows, Err))
    return error(ExitData, Prog, Err);

  if (O.GradCheck)
    return runGradCheck(Prog, M, Mod, T, S.Train, O);
  return Trainer(M, O, T, S, Mod, BatchRows).run();
}

} // namespace

int main(int Argc, char **Argv) {
  // Data sets are loaded whole; a file too large for memory is a data error
  // with a message, not an abort.
  try {
    return runMain(Argc, Argv);
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "%s: error: out of memory\n", Prog);
    return ExitData;
  }
}
