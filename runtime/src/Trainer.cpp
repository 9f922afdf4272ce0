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

#include "Cluster.h"
#include "Csv.h"
#include "Dataset.h"
#include "GradCheck.h"
#include "Idx.h"
#include "Manifest.h"
#include "Model.h"
#include "Numbers.h"
#include "Options.h"
#include "Plot.h"
#include "ThreadPool.h"
#include "Random.h"
#include "Synthetic.h"
#include "Text.h"
#include "Weights.h"

#include "nnc/runtime.h"

#include <algorithm>
#include <chrono>
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
/// the call, small enough to keep the buffers small on big data sets: at
/// most 4096 rows, and no more than 32 MiB of workspace (a training batch
/// larger than that still gets its rows). The workspace is most of a
/// trainer's memory: an LSTM's needs about 100 KB a row.
constexpr size_t EvalChunkRows = 4096;
constexpr size_t EvalChunkWorkspace = size_t(32) << 20;

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

/// A model output value as printed by `predict`: six significant digits.
std::string formatValue(double V) {
  char Text[32];
  std::snprintf(Text, sizeof(Text), "%.6g", V);
  return Text;
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
          const TextRows &Words, Model &Mod, size_t BatchRows)
      : M(M), O(O), T(T), S(S), Words(Words), Mod(Mod), BatchRows(BatchRows) {}

  int run();

private:
  const std::vector<size_t> &rowsOf(const Metric &Met) const {
    return Met.Split == Metric::SplitKind::Train ? S.Train : S.Test;
  }
  void report(int64_t Epoch, double Loss);
  /// One metric's value for a line of output: "test accuracy 0.9000".
  std::string metricText(const Metric &Met, const EvalResult &R, bool Final);
  void runKMeans(const AfterStep &Step);
  void predictRows(const AfterStep &Step);
  void predictOne(const AfterStep &Step);
  void printWeights();
  /// --plot: the loss curve and, for a model of one input value and one
  /// output value, the training data and the fitted curve.
  bool writePlot(std::string &Err);

  const Manifest &M;
  const Options &O;
  const Table &T;
  const Split &S;
  const TextRows &Words; ///< Text sources: each row's words as read.
  Model &Mod;
  size_t BatchRows;
  PlotData Plot; ///< Loss points, gathered while training.
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
    std::printf("  %s", metricText(Met, Evaluate(Met.Split), false).c_str());
  }
  if (!S.Test.empty()) {
    double TestLoss = Evaluate(Metric::SplitKind::Test).Loss;
    std::printf("  test loss %.6f", TestLoss);
    Plot.TestLoss.push_back({double(Epoch), TestLoss});
  }
  out("\n");
}

std::string Trainer::metricText(const Metric &Met, const EvalResult &R,
                                bool Final) {
  char Text[160];
  if (Met.Kind == Metric::MetricKind::Accuracy) {
    double Accuracy = R.Total ? double(R.Correct) / double(R.Total) : 0;
    if (Final)
      std::snprintf(Text, sizeof(Text), "%s accuracy %.4f (%lld/%lld)",
                    Met.splitName(), Accuracy, (long long)R.Correct,
                    (long long)R.Total);
    else
      std::snprintf(Text, sizeof(Text), "%s accuracy %.4f", Met.splitName(),
                    Accuracy);
    return Text;
  }
  const std::vector<size_t> &Rows = rowsOf(Met);
  size_t Width = size_t(M.outputWidth());
  double Mse = R.SquaredError / double(Rows.size() * Width);
  if (!Final) {
    std::snprintf(Text, sizeof(Text), "%s mse %.6f", Met.splitName(), Mse);
    return Text;
  }
  // The baseline predicts every label column's mean over the training rows.
  const std::vector<double> &Y = T.Slots[size_t(M.featureLabelSlot())].Values;
  std::vector<double> Mean(Width, 0.0);
  for (size_t Row : S.Train)
    for (size_t J = 0; J < Width; ++J)
      Mean[J] += Y[Row * Width + J] / double(S.Train.size());
  double Baseline = 0;
  for (size_t Row : Rows)
    for (size_t J = 0; J < Width; ++J)
      Baseline += (Y[Row * Width + J] - Mean[J]) * (Y[Row * Width + J] - Mean[J]);
  Baseline /= double(Rows.size() * Width);
  std::snprintf(Text, sizeof(Text),
                "%s mse %.6f (predicting the training mean: %.6f)",
                Met.splitName(), Mse, Baseline);
  return Text;
}

/// `after predict train|test, rows = K`: the model's output for the first K
/// rows of a split. A text row shows its words; a sequence of classes, each
/// word with its predicted tag; one class, its name.
void Trainer::predictRows(const AfterStep &Step) {
  bool Test = Step.arg("split") == "test";
  int64_t Count = 0;
  parseInt64(Step.arg("rows"), Count);
  const std::vector<size_t> &Split = Test ? S.Test : S.Train;
  std::vector<size_t> Rows(Split.begin(),
                           Split.begin() + (Count > 0 ? std::min(size_t(Count), Split.size())
                                                      : Split.size()));
  std::vector<double> Output = Mod.predict(T, Rows);
  size_t Width = size_t(M.outputWidth());
  int Label = M.classLabelSlot();
  size_t Classes = Label >= 0 ? size_t(M.Slots[size_t(Label)].Classes) : 0;
  bool Scores = Label >= 0 && Width % Classes == 0;
  auto className = [&](size_t Class) {
    const std::vector<std::string> &Names = T.Slots[size_t(Label)].Names;
    return Class < Names.size() ? Names[Class] : std::to_string(Class);
  };
  auto argmax = [&](const double *Values) {
    return size_t(std::max_element(Values, Values + Classes) - Values);
  };
  out("predictions for %zu %s rows:\n", Rows.size(), Test ? "test" : "training");
  for (size_t I = 0; I < Rows.size(); ++I) {
    const double *Row = &Output[I * Width];
    std::string Line = " ";
    if (!Words.empty() && Scores && Width / Classes > 1) {
      // A tag for every word the model saw (the input's length at most).
      const std::vector<std::string> &Sentence = Words[Rows[I]];
      for (size_t P = 0; P < Sentence.size() && P < Width / Classes; ++P)
        Line += " " + Sentence[P] + "/" + className(argmax(Row + P * Classes));
    } else {
      if (Scores)
        Line += " " + className(argmax(Row));
      else
        for (size_t J = 0; J < Width; ++J)
          Line += " " + formatValue(Row[J]);
      if (!Words.empty()) {
        Line += "  <-";
        for (const std::string &W : Words[Rows[I]])
          Line += " " + W;
      }
    }
    out("%s\n", Line.c_str());
  }
}

/// `after predict NAME = VALUE, ...`: the output for one row of given inputs.
void Trainer::predictOne(const AfterStep &Step) {
  Table One;
  One.Rows = 1;
  One.Slots.assign(M.Slots.size(), SlotData());
  std::string Given;
  for (size_t I = 0; I < M.Slots.size(); ++I) {
    const DataSlot &D = M.Slots[I];
    SlotData &Slot = One.Slots[I];
    Slot.Width = size_t(D.width());
    Slot.IsClass = D.isInteger();
    double V = 0;
    if (!D.IsLabel) {
      parseDouble(Step.arg(D.Name), V); // checked by the manifest parser
      Given += (Given.empty() ? "" : ", ") + D.Name + " = " + Step.arg(D.Name);
    }
    if (Slot.IsClass)
      Slot.Classes.assign(Slot.Width, D.IsLabel ? -1 : int32_t(V));
    else
      Slot.Values.assign(Slot.Width, V);
  }
  std::vector<double> Output = Mod.predict(One, {0});
  std::string Values;
  for (double V : Output)
    Values += " " + formatValue(V);
  out("predict %s: %s%s\n", Given.c_str(), M.OutputName.c_str(), Values.c_str());
}

/// `report weights`: every parameter, up to a few values per tensor.
void Trainer::printWeights() {
  constexpr int64_t Shown = 16;
  for (const ParamTensor &P : M.Params) {
    std::printf("%s [%s]:", P.Name.c_str(), formatDims(P.Dims).c_str());
    for (int64_t I = 0; I < std::min(P.size(), Shown); ++I)
      std::printf(" %.6g", Mod.param(size_t(P.Offset + I)));
    out("%s\n", P.size() > Shown ? " ..." : "");
  }
}

/// `after kmeans`: clusters a probed value over every row of the data set
/// and, given the true classes, scores the clusters against them.
void Trainer::runKMeans(const AfterStep &Step) {
  int Index = M.probeIndex(Step.arg("value"));
  const Probe &P = M.Probes[size_t(Index)];
  int64_t K = 0, Restarts = 0;
  uint64_t Seed = 0;
  // The manifest parser has checked these fields.
  parseInt64(Step.arg("k"), K);
  parseInt64(Step.arg("restarts"), Restarts);
  parseUInt64(Step.arg("seed"), Seed);
  std::vector<size_t> Rows(T.Rows);
  for (size_t I = 0; I < Rows.size(); ++I)
    Rows[I] = I;
  std::vector<double> X = Mod.probe(Index, T, Rows);
  size_t Dims = size_t(P.width());
  KMeansResult R = kmeans(X.data(), Rows.size(), Dims, int(K), int(Restarts), Seed);
  out("kmeans on %s: %zu rows, %zu values each, k = %lld, %lld restarts; "
      "inertia %.6g\n",
      P.Name.c_str(), Rows.size(), Dims, (long long)K, (long long)Restarts,
      R.Inertia);
  std::vector<int64_t> Sizes(static_cast<size_t>(K));
  for (int32_t A : R.Assign)
    ++Sizes[size_t(A)];
  for (size_t C = 0; C < size_t(K); ++C) {
    std::printf("  centre %zu (%lld rows):", C + 1, (long long)Sizes[C]);
    for (size_t J = 0; J < Dims; ++J)
      std::printf(" %.4f", R.Centres[C * Dims + J]);
    out("\n");
  }
  std::string Truth = Step.arg("truth");
  if (Truth.empty())
    return;
  const SlotData &Labels = T.Slots[size_t(M.slotIndex(Truth))];
  out("adjusted Rand index against %s: %.4f\n", Truth.c_str(),
      adjustedRandIndex(R.Assign.data(), Labels.Classes.data(), T.Rows));
}

bool Trainer::writePlot(std::string &Err) {
  Plot.Model = M.Model;
  Plot.LossName = M.Loss;
  bool OneToOne = M.Slots.size() == 2 && !M.Slots[0].IsLabel &&
                  M.Slots[0].width() == 1 && !M.Slots[1].IsClass &&
                  M.Slots[1].width() == 1 && M.outputWidth() == 1;
  if (OneToOne) {
    // The data, then the model's output at 200 evenly spaced points of the
    // data's range (rows of a small table of their own).
    const std::vector<double> &X = T.Slots[0].Values, &Y = T.Slots[1].Values;
    double Low = X[S.Train[0]], High = Low;
    for (size_t R : S.Train) {
      Plot.FitData.push_back({X[R], Y[R]});
      Low = std::min(Low, X[R]);
      High = std::max(High, X[R]);
    }
    Table Grid;
    Grid.Rows = 200;
    Grid.Slots.assign(2, SlotData());
    std::vector<size_t> Rows(Grid.Rows);
    for (size_t I = 0; I < Grid.Rows; ++I) {
      Rows[I] = I;
      Grid.Slots[0].Values.push_back(Low + (High - Low) * double(I) /
                                               double(Grid.Rows - 1));
      Grid.Slots[1].Values.push_back(0);
    }
    for (SlotData &Slot : Grid.Slots)
      Slot.Width = 1;
    std::vector<double> Fit = Mod.predict(Grid, Rows);
    for (size_t I = 0; I < Grid.Rows; ++I)
      Plot.FitCurve.push_back({Grid.Slots[0].Values[I], Fit[I]});
    Plot.XLabel = M.Slots[0].Name;
    Plot.YLabel = M.Slots[1].Name;
  }
  return writeTrainingPlot(O.Plot, Plot, Err);
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
                   "%s: note: the %s split is empty; its %s is not "
                   "reported\n",
                   Prog, Met.splitName(),
                   Met.Kind == Metric::MetricKind::Mse ? "mse" : "accuracy");

  Mod.initParams(O.Seed);
  Rng Shuffler(O.Seed ^ ShuffleStream);
  auto TrainingStart = std::chrono::steady_clock::now();
  std::vector<size_t> Order = S.Train;
  int64_t Step = 0;
  double StepSeconds = 0; // In loadRows and trainStep: what --speed reports.
  // With one batch per epoch the order changes nothing but rounding: the
  // rows are not shuffled, and stay loaded until an evaluation replaces them.
  bool WholeBatch = BatchRows >= Order.size();
  uint64_t Resident = ~uint64_t(0); // Mod.loads() once the whole batch is loaded.
  for (int64_t Epoch = 1; Epoch <= O.Epochs; ++Epoch) {
    if (M.Shuffle && !WholeBatch)
      Shuffler.shuffle(Order.data(), Order.size());
    double LossSum = 0;
    for (size_t Start = 0; Start < Order.size(); Start += BatchRows) {
      size_t N = std::min(BatchRows, Order.size() - Start);
      auto StepStart = std::chrono::steady_clock::now();
      if (!WholeBatch || Mod.loads() != Resident) {
        Mod.loadRows(T, &Order[Start], N);
        Resident = Mod.loads();
      }
      double Loss = Mod.trainStep(O.Lr, ++Step);
      StepSeconds += std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - StepStart)
                         .count();
      if (!std::isfinite(Loss)) {
        char Msg[128];
        std::snprintf(Msg, sizeof(Msg), "loss is %s at epoch %lld, step %lld",
                      nonFiniteName(Loss), (long long)Epoch, (long long)Step);
        return error(ExitNonFinite, Prog, Msg);
      }
      LossSum += Loss * double(N);
    }
    if (!O.Plot.empty()) // One point per epoch: millions for the small models.
      Plot.TrainLoss.push_back({double(Epoch), LossSum / double(Order.size())});
    if (Epoch % M.ReportEvery == 0 || Epoch == O.Epochs)
      report(Epoch, LossSum / double(Order.size()));
  }

  if (M.PrintTime)
    out("training took %.3f s\n",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - TrainingStart)
            .count());
  if (O.Speed && O.Epochs > 0)
    out("speed: %.0f rows/s, %.3f s in training steps (%lld epochs x %zu "
        "rows, %d threads)\n",
        double(O.Epochs) * double(Order.size()) / StepSeconds, StepSeconds,
        (long long)O.Epochs, Order.size(), threadCount());
  if (M.PrintWeights)
    printWeights();

  for (const Metric &Met : M.Metrics) {
    if (rowsOf(Met).empty())
      continue;
    out("%s\n", metricText(Met, Mod.evaluate(T, rowsOf(Met)), true).c_str());
  }

  for (const AfterStep &Step : M.After) {
    if (Step.Kind == "kmeans")
      runKMeans(Step);
    else if (!Step.arg("split").empty())
      predictRows(Step);
    else
      predictOne(Step);
  }

  std::string Err;
  if (!O.Plot.empty()) {
    if (!writePlot(Err))
      return error(ExitData, Prog, Err);
    out("plot written to %s\n", O.Plot.c_str());
  }
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
  TextRows Words;
  LoadError LE;
  bool Loaded;
  if (M.SourceKind == "csv") {
    Loaded = loadCsv(O.Data, M, T, LE);
  } else if (M.SourceKind == "idx") {
    Loaded = loadIdx(O.Data, M, T, LE);
  } else if (M.SourceKind == "tagged" || M.SourceKind == "polarity") {
    Loaded = loadText(O.Data, M, T, Words, LE);
  } else {
    if (O.Data != M.SourcePath)
      return error(ExitUsage, Prog,
                   "--data: the data of this trainer are generated (source " +
                       M.SourceKind + "), not read from a file");
    Loaded = M.SourceKind == "blobs"     ? generateBlobs(M, T, LE)
             : M.SourceKind == "ratings" ? generateRatings(M, T, LE)
                                         : generateLinear(M, T, LE);
  }
  if (!Loaded)
    return error(ExitData, LE.Where.empty() ? Prog : LE.Where.c_str(),
                 LE.Message);

  Split S = T.FixedSplit ? fixedSplit(T)
                         : splitRows(T.Rows, M.TrainFraction, M.TestFraction,
                                     O.SplitSeed);
  if (S.Train.empty())
    return error(ExitData, O.Data.c_str(),
                 "the training split is empty (" + std::to_string(T.Rows) +
                     " rows, train fraction " +
                     std::to_string(M.TrainFraction) + ")");
  if (M.Standardize)
    standardize(T, M, S.Train);
  if (!Words.empty()) {
    VocabularyInfo V = encodeWords(Words, M, S.Train, T);
    out("vocabulary: %zu distinct words in the training rows, %zu indices "
        "used of %lld (0 padding, 1 unknown); %zu of %zu rows cut to %lld "
        "words\n",
        V.Seen, V.Kept, (long long)M.Slots[0].Classes, V.Cut, T.Rows,
        (long long)M.Slots[0].width());
  }

  // Every call's rows fit in buffers allocated once, here.
  size_t BatchRows =
      O.Batch == 0 ? S.Train.size() : std::min(size_t(O.Batch), S.Train.size());
  size_t ChunkRows = std::max<size_t>(
      1, std::min(EvalChunkRows,
                  EvalChunkWorkspace / size_t(std::max<int64_t>(M.WorkspacePerRow, 1))));
  size_t MaxRows = std::max(
      BatchRows, std::min(ChunkRows, std::max(S.Train.size(), S.Test.size())));
  if (O.GradCheck)
    MaxRows =
        std::max(MaxRows, std::min(size_t(O.GradCheckRows), S.Train.size()));
  setThreadCount(int(O.Threads ? O.Threads : availableCores()));
  Model Mod(M);
  if (!Mod.allocate(MaxRows, Err))
    return error(ExitData, Prog, Err);

  if (O.GradCheck)
    return runGradCheck(Prog, M, Mod, T, S.Train, O);
  return Trainer(M, O, T, S, Words, Mod, BatchRows).run();
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
