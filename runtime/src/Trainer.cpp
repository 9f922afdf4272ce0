//===- Trainer.cpp - main() of every generated trainer --------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Reads the manifest and the command line, loads and splits the data, then
// either trains (the epoch loop, reports, the weights file) or runs the
// gradient check, or predicts, with the CPU code or, when the trainer has GPU
// code and --device lets it, on a GPU. Exit statuses: 0 success, 1 usage
// error or failed gradient check, 2 data, manifest or file error, 3 no usable
// GPU for --device cuda or a GPU failure, 4 loss or parameters not finite,
// 128 + the signal number when SIGINT or SIGTERM stopped training.
//
//===----------------------------------------------------------------------===//

#include "Checkpoint.h"
#include "Cluster.h"
#include "Csv.h"
#include "Dataset.h"
#include "Gpu.h"
#include "GradCheck.h"
#include "Idx.h"
#include "Interrupt.h"
#include "JsonLog.h"
#include "Manifest.h"
#include "Model.h"
#include "Numbers.h"
#include "Options.h"
#include "Plot.h"
#include "Predict.h"
#include "Progress.h"
#include "ThreadPool.h"
#include "Random.h"
#include "Synthetic.h"
#include "Text.h"
#include "Weights.h"

#include "nnc/runtime.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <utility>

using namespace nnc;

namespace {

enum ExitStatus {
  ExitSuccess = 0,
  ExitUsage = 1,
  ExitData = 2,
  ExitDevice = 3,
  ExitNonFinite = 4,
  ExitSignal = 128 ///< Plus the signal's number, as a shell reports it.
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

/// Where a training run is: what a checkpoint saves and --resume restores.
struct Position {
  int64_t Epoch = 1;   ///< The epoch under way.
  size_t Offset = 0;   ///< Rows of it trained (in the training order).
  int64_t Step = 0;    ///< Optimizer steps taken.
  double LossSum = 0;  ///< Its batch losses so far, weighted by their rows.
  size_t LossRows = 0; ///< Rows counted in LossSum (skipped batches are not).
};

/// The training run: everything after the data are ready.
class Trainer {
public:
  Trainer(const Manifest &M, const Options &O, const Table &T, const Split &S,
          const TextRows &Words, Model &Mod, size_t BatchRows)
      : M(M), O(O), T(T), S(S), Words(Words), Mod(Mod), BatchRows(BatchRows),
        Seed(O.Seed), Shuffler(O.Seed ^ ShuffleStream), Order(S.Train) {}

  int run();

private:
  /// On a device, a step is queued, and its loss read once the next one is:
  /// the host loads the next rows and queues their step while the device
  /// runs this one. Not with --on-nan skip-batch, which reads every loss
  /// before the next step.
  struct QueuedStep {
    int64_t Epoch, Step;
    size_t Rows;
  };

  const std::vector<size_t> &rowsOf(const Metric &Met) const {
    return Met.Split == Metric::SplitKind::Train ? S.Train : S.Test;
  }
  /// The epoch loop, from Pos to the last epoch.
  int train();
  /// Whether epoch \p Epoch's line is printed (but for --quiet): every
  /// `report every` epochs, and the last.
  bool reported(int64_t Epoch) const {
    return Epoch % M.ReportEvery == 0 || Epoch == O.Epochs;
  }
  /// After an epoch: its line (when it is reported), its JSON record and its
  /// checkpoint (when due).
  bool endEpoch(int64_t Epoch, double Loss, std::string &Err);
  /// --resume: the parameters, state, order and position of a checkpoint.
  bool resume(std::string &Err);
  bool saveCheckpoint(std::string &Err);
  /// "at epoch E, step S", where training is.
  std::string where() const { return where(Pos.Epoch, Pos.Step); }
  static std::string where(int64_t Epoch, int64_t Step);
  /// A non-finite loss or parameter after step \p Step of epoch \p Epoch:
  /// stops the run with a message (the status to return), or, with
  /// --on-nan skip-batch, undoes the step and returns 0.
  int nonFinite(double Loss, int BadParam, size_t Rows, int64_t Epoch,
                int64_t Step);
  /// On a device, where a step checks only the loss: the parameters, at the
  /// end of an epoch whose results are used and before a checkpoint. 0, or
  /// the status to stop with.
  int checkDeviceParams();
  /// The training steps' clock (--speed): it runs from the start of a step
  /// until the step's loss is read.
  void startStepClock();
  void stopStepClock();
  /// Counts the loss of \p Step toward its epoch's, or stops on it: 0, or
  /// the status to stop with.
  int countLoss(double Loss, const QueuedStep &Step);
  /// Waits for the step in flight, if any, and counts its loss.
  int settle();
  /// After an error that stops training: where the last good state is.
  void noteLastCheckpoint();
  /// SIGINT or SIGTERM: saves a checkpoint when asked to, says so, and
  /// returns the exit status.
  int interrupted();
  /// One metric's value for a line of output: "test accuracy 0.9000".
  std::string metricText(const Metric &Met, const EvalResult &R, bool Final);
  /// The number metricText shows first.
  double metricValue(const Metric &Met, const EvalResult &R) const;
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

  uint64_t Seed; ///< --seed, or the resumed run's.
  Rng Shuffler;  ///< The epoch shuffles.
  std::vector<size_t> Order; ///< The training rows in this epoch's order.
  Position Pos;
  Progress Live{false, 0};
  JsonLog Log;
  std::chrono::steady_clock::time_point Start;
  double StepSeconds = 0; ///< On the steps' clock: what --speed reports.
  std::optional<std::chrono::steady_clock::time_point> StepClock;
  std::optional<QueuedStep> InFlight;
  uint64_t RowsTrained = 0; ///< By this process.
  std::string LastCheckpoint; ///< "FILE (epoch E, step S)", or empty.
};

/// One "epoch" line: the training loss, then each metric, then the test
/// loss; and the same as a JSON object.
bool Trainer::endEpoch(int64_t Epoch, double Loss, std::string &Err) {
  bool Reported = reported(Epoch);
  bool Print = Reported && !O.Quiet;
  // Evaluation costs time; it is skipped when nothing shows its results.
  bool Evaluate = Reported && (Print || Log.isOpen() || !O.Plot.empty());
  std::string Line, Losses = "\"train\":" + jsonNumber(Loss), Metrics;
  if (Evaluate) {
    EvalResult Test, Train;
    bool HaveTest = false, HaveTrain = false;
    auto Results = [&](Metric::SplitKind K) -> const EvalResult & {
      bool IsTest = K == Metric::SplitKind::Test;
      bool &Have = IsTest ? HaveTest : HaveTrain;
      EvalResult &R = IsTest ? Test : Train;
      if (!Have)
        R = Mod.evaluate(T, IsTest ? S.Test : S.Train);
      Have = true;
      return R;
    };
    for (const Metric &Met : M.Metrics) {
      if (rowsOf(Met).empty())
        continue;
      const EvalResult &R = Results(Met.Split);
      Line += "  " + metricText(Met, R, false);
      Metrics += std::string(Metrics.empty() ? "" : ",") + "\"" +
                 Met.splitName() +
                 (Met.Kind == Metric::MetricKind::Accuracy ? "_accuracy\":"
                                                           : "_mse\":") +
                 jsonNumber(metricValue(Met, R));
    }
    if (!S.Test.empty()) {
      double TestLoss = Results(Metric::SplitKind::Test).Loss;
      char Text[64];
      std::snprintf(Text, sizeof(Text), "  test loss %.6f", TestLoss);
      Line += Text;
      Losses += ",\"test\":" + jsonNumber(TestLoss);
      Plot.TestLoss.push_back({double(Epoch), TestLoss});
    }
  }
  if (Print) {
    Live.clear();
    out("epoch %lld/%lld  loss %.6f%s\n", (long long)Epoch,
        (long long)O.Epochs, Loss, Line.c_str());
  }
  if (!Log.isOpen())
    return true;
  double Seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - Start)
                       .count();
  return Log.append("{\"model\":" + jsonString(M.Model) +
                        ",\"epoch\":" + std::to_string(Epoch) +
                        ",\"epochs\":" + std::to_string(O.Epochs) +
                        ",\"step\":" + std::to_string(Pos.Step) +
                        ",\"seconds\":" + jsonNumber(Seconds) +
                        ",\"losses\":{" + Losses + "},\"metrics\":{" +
                        Metrics + "}}",
                    Err);
}

double Trainer::metricValue(const Metric &Met, const EvalResult &R) const {
  if (Met.Kind == Metric::MetricKind::Accuracy)
    return R.Total ? double(R.Correct) / double(R.Total) : 0;
  return R.SquaredError / double(rowsOf(Met).size() * size_t(M.outputWidth()));
}

std::string Trainer::metricText(const Metric &Met, const EvalResult &R,
                                bool Final) {
  char Text[160];
  if (Met.Kind == Metric::MetricKind::Accuracy) {
    double Accuracy = metricValue(Met, R);
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
  double Mse = metricValue(Met, R);
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

bool Trainer::resume(std::string &Err) {
  std::string Bytes;
  Checkpoint C;
  if (!loadCheckpoint(O.Resume, M, Bytes, C, Err))
    return false;
  // The saved order must be this run's training rows: the same data, split
  // seed and split.
  std::vector<size_t> Mine = S.Train;
  std::vector<uint64_t> Saved = C.Order;
  std::sort(Mine.begin(), Mine.end());
  std::sort(Saved.begin(), Saved.end());
  if (!std::equal(Mine.begin(), Mine.end(), Saved.begin(), Saved.end())) {
    Err = "checkpoint '" + O.Resume + "' was made with other training rows (" +
          std::to_string(C.Order.size()) + " rows; this run has " +
          std::to_string(S.Train.size()) +
          "): give the data and --split-seed of the run it saves";
    return false;
  }
  if (C.Epochs >= uint64_t(INT64_MAX / 2) || C.Steps >= uint64_t(INT64_MAX / 2)) {
    Err = "checkpoint '" + O.Resume + "': inconsistent position (epoch " +
          std::to_string(C.Epochs) + ", step " + std::to_string(C.Steps) + ")";
    return false;
  }
  Seed = C.Seed;
  Mod.setSeed(Seed);
  std::memcpy(Mod.overwriteParams(), C.Params.data(), C.Params.size());
  std::memcpy(Mod.overwriteState(), C.State.data(), C.State.size());
  Shuffler.setState(C.Shuffler);
  Order.assign(C.Order.begin(), C.Order.end());
  Pos.Epoch = int64_t(C.Epochs) + 1;
  Pos.Offset = size_t(C.Offset);
  Pos.Step = int64_t(C.Steps);
  Pos.LossSum = C.LossSum;
  Pos.LossRows = size_t(C.LossRows);
  LastCheckpoint = O.Resume + " (epoch " + std::to_string(C.Epochs) +
                   ", step " + std::to_string(C.Steps) + ")";
  if (!O.Quiet) {
    if (Pos.Offset == 0)
      out("resumed from %s after epoch %lld, step %lld\n", O.Resume.c_str(),
          (long long)C.Epochs, (long long)Pos.Step);
    else
      out("resumed from %s in epoch %lld (%zu of %zu rows trained), step "
          "%lld\n",
          O.Resume.c_str(), (long long)Pos.Epoch, Pos.Offset, Order.size(),
          (long long)Pos.Step);
  }
  return true;
}

bool Trainer::saveCheckpoint(std::string &Err) {
  Checkpoint C;
  C.Seed = Seed;
  C.Epochs = uint64_t(Pos.Epoch - 1);
  C.Offset = Pos.Offset;
  C.Steps = uint64_t(Pos.Step);
  C.LossSum = Pos.LossSum;
  C.LossRows = Pos.LossRows;
  C.Shuffler = Shuffler.state();
  C.Order.assign(Order.begin(), Order.end());
  C.Params = std::string_view(static_cast<const char *>(Mod.readParams()),
                              Mod.paramBytes());
  C.State = std::string_view(static_cast<const char *>(Mod.readState()),
                             Mod.stateBytes());
  if (!writeCheckpoint(O.Checkpoint, M, C, Err))
    return false;
  LastCheckpoint = O.Checkpoint + " (epoch " + std::to_string(C.Epochs) +
                   ", step " + std::to_string(C.Steps) + ")";
  return true;
}

std::string Trainer::where(int64_t Epoch, int64_t Step) {
  return "at epoch " + std::to_string(Epoch) + ", step " + std::to_string(Step);
}

void Trainer::noteLastCheckpoint() {
  if (!LastCheckpoint.empty())
    std::fprintf(stderr, "%s: note: the last good checkpoint is %s\n", Prog,
                 LastCheckpoint.c_str());
}

int Trainer::nonFinite(double Loss, int BadParam, size_t Rows, int64_t Epoch,
                       int64_t Step) {
  bool OnDevice = Mod.device() != nullptr;
  std::string What;
  if (!std::isfinite(Loss)) {
    What = std::string("loss is ") + nonFiniteName(Loss) + " " +
           where(Epoch, Step);
    if (BadParam < 0)
      What += " (the parameters are finite)";
    else if (OnDevice) // The parameters before the step were not checked.
      What += " (the first non-finite parameter after it: " +
              M.Params[size_t(BadParam)].Name + ")";
    else
      What += " (the parameters were finite before the step; the first "
              "non-finite after it: " +
              M.Params[size_t(BadParam)].Name + ")";
  } else {
    What = "parameter " + M.Params[size_t(BadParam)].Name +
           " is not finite after the update " + where(Epoch, Step) +
           " (the loss, " + formatValue(Loss) + ", was finite)";
  }
  Live.clear();
  if (O.OnNan == Options::NanAction::SkipBatch) {
    Mod.restoreUndo();
    // On a device, the parameters that the step started from have not been
    // checked yet; when they are not finite, undoing the step is no help.
    int Before = OnDevice ? Mod.firstNonFiniteParam() : -1;
    if (Before < 0) {
      --Pos.Step; // The next batch takes the step's number.
      std::fprintf(stderr,
                   "%s: warning: %s: batch of %zu rows skipped, parameters "
                   "and optimizer state restored\n",
                   Prog, What.c_str(), Rows);
      return 0;
    }
    What += "; the parameters before the step are not finite either (" +
            M.Params[size_t(Before)].Name +
            "; on the GPU a step checks only the loss), so skipping the "
            "batch does not help";
  }
  error(ExitNonFinite, Prog, What);
  noteLastCheckpoint();
  return ExitNonFinite;
}

int Trainer::checkDeviceParams() {
  if (!Mod.device())
    return 0;
  int Bad = Mod.firstNonFiniteParam();
  if (Bad < 0)
    return 0;
  Live.clear();
  error(ExitNonFinite, Prog,
        "parameter " + M.Params[size_t(Bad)].Name + " is not finite " +
            where() +
            " (every loss was finite; on the GPU the parameters are checked "
            "at the end of an epoch that is reported, logged or saved, not "
            "after every step)");
  noteLastCheckpoint();
  return ExitNonFinite;
}

int Trainer::interrupted() {
  if (int Status = settle())
    return Status;
  Live.clear();
  int Signal = interruptSignal();
  char Where[160];
  std::snprintf(Where, sizeof(Where),
                "%s: stopped by %s at epoch %lld (%zu of %zu rows trained), "
                "step %lld",
                Prog, Signal == SIGINT ? "SIGINT" : "SIGTERM",
                (long long)Pos.Epoch, Pos.Offset, Order.size(),
                (long long)Pos.Step);
  if (O.Checkpoint.empty()) {
    std::fprintf(stderr, "%s; nothing saved (no --checkpoint)\n", Where);
    return ExitSignal + Signal;
  }
  if (int Status = checkDeviceParams()) {
    std::fprintf(stderr, "%s; nothing saved\n", Where);
    return Status;
  }
  std::string Err;
  if (!saveCheckpoint(Err)) {
    std::fprintf(stderr, "%s\n", Where);
    return error(ExitData, Prog, Err);
  }
  std::fprintf(stderr, "%s; checkpoint saved to %s (continue with --resume)\n",
               Where, O.Checkpoint.c_str());
  return ExitSignal + Signal;
}

void Trainer::startStepClock() {
  if (!StepClock)
    StepClock = std::chrono::steady_clock::now();
}

void Trainer::stopStepClock() {
  if (StepClock)
    StepSeconds += std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - *StepClock)
                       .count();
  StepClock.reset();
}

int Trainer::countLoss(double Loss, const QueuedStep &Step) {
  if (!std::isfinite(Loss))
    return nonFinite(Loss, Mod.firstNonFiniteParam(), Step.Rows, Step.Epoch,
                     Step.Step);
  // A step of an epoch that is over: nothing used that epoch's loss.
  if (Step.Epoch == Pos.Epoch) {
    Pos.LossSum += Loss * double(Step.Rows);
    Pos.LossRows += Step.Rows;
  }
  return 0;
}

int Trainer::settle() {
  std::optional<QueuedStep> Step = std::exchange(InFlight, std::nullopt);
  if (!Step)
    return 0;
  double Loss = *Mod.finishTrainStep();
  stopStepClock();
  return countLoss(Loss, *Step);
}

int Trainer::train() {
  // With one batch per epoch the order changes nothing but rounding: the
  // rows are not shuffled, and stay loaded until an evaluation replaces them.
  bool WholeBatch = BatchRows >= Order.size();
  uint64_t Resident = ~uint64_t(0); // Mod.loads() once the whole batch is loaded.
  bool Skip = O.OnNan == Options::NanAction::SkipBatch;
  bool Overlap = Mod.device() && !Skip;
  std::string Err;
  if (Skip && !Mod.allocateUndo(Err))
    return error(ExitData, Prog, Err);
  // The NaN guard checks the loss after every step, and on the CPU the
  // parameters too. On a device that pass would download them at every
  // step: they are checked there when the loss is not finite, at the end of
  // an epoch whose results are used, and before a checkpoint.
  bool ParamsEveryStep = !Mod.device();
  // On a device the data set goes there once, when it fits: a step then
  // uploads its rows' numbers and gathers the rows there, instead of the
  // host gathering them and uploading them all.
  bool TableOnDevice = Mod.placeTable(T);
  while (Pos.Epoch <= O.Epochs) {
    if (Pos.Offset == 0 && M.Shuffle && !WholeBatch)
      Shuffler.shuffle(Order.data(), Order.size());
    while (Pos.Offset < Order.size()) {
      size_t N = std::min(BatchRows, Order.size() - Pos.Offset);
      startStepClock();
      if (!WholeBatch || Mod.loads() != Resident) {
        if (TableOnDevice)
          Mod.selectRows(&Order[Pos.Offset], N);
        else
          Mod.loadRows(T, &Order[Pos.Offset], N);
        Resident = Mod.loads();
      }
      ++Pos.Step;
      if (Overlap) {
        std::optional<double> Before = Mod.queueTrainStep(O.Lr, Pos.Step);
        std::optional<QueuedStep> Done =
            std::exchange(InFlight, QueuedStep{Pos.Epoch, Pos.Step, N});
        if (Before)
          if (int Status = countLoss(*Before, *Done))
            return Status;
      } else {
        if (Skip)
          Mod.saveUndo();
        double Loss = Mod.trainStep(O.Lr, Pos.Step);
        int BadParam = ParamsEveryStep || !std::isfinite(Loss)
                           ? Mod.firstNonFiniteParam()
                           : -1;
        // The guard's pass over the parameters is part of a step's cost.
        stopStepClock();
        if (!std::isfinite(Loss) || BadParam >= 0) {
          if (int Status = nonFinite(Loss, BadParam, N, Pos.Epoch, Pos.Step))
            return Status;
        } else {
          Pos.LossSum += Loss * double(N);
          Pos.LossRows += N;
        }
      }
      Pos.Offset += N;
      RowsTrained += N;
      Live.step(Pos.Epoch, O.Epochs, Pos.Step, N,
                Pos.LossRows ? Pos.LossSum / double(Pos.LossRows) : 0);
      if (interruptSignal())
        return interrupted();
    }
    int64_t Epoch = Pos.Epoch;
    bool Reported = reported(Epoch);
    bool Due = !O.Checkpoint.empty() &&
               (Epoch % O.CheckpointEvery == 0 || Epoch == O.Epochs);
    if (Overlap && !Reported && !Due && !Log.isOpen() && O.Plot.empty()) {
      // Nothing uses this epoch's loss: its last step stays in flight while
      // the next epoch's first is queued (for a model trained on one batch,
      // every step is the last of its epoch).
      Pos = {Epoch + 1, 0, Pos.Step, 0, 0};
      if (interruptSignal())
        return interrupted();
      continue;
    }
    if (int Status = settle())
      return Status;
    if (Pos.LossRows == 0) {
      Live.clear();
      return error(ExitNonFinite, Prog,
                   "every batch of epoch " + std::to_string(Epoch) +
                       " was skipped (--on-nan skip-batch): the loss or "
                       "the parameters are not finite at any step");
    }
    if (int Status = checkDeviceParams())
      return Status;
    double Loss = Pos.LossSum / double(Pos.LossRows);
    Pos = {Epoch + 1, 0, Pos.Step, 0, 0};
    if (!O.Plot.empty()) // One point per epoch: millions for the small models.
      Plot.TrainLoss.push_back({double(Epoch), Loss});
    if (!endEpoch(Epoch, Loss, Err)) {
      Live.clear();
      return error(ExitData, Prog, Err);
    }
    if (Due && !saveCheckpoint(Err)) {
      Live.clear();
      return error(ExitData, Prog, Err);
    }
    if (interruptSignal())
      return interrupted();
  }
  Live.clear();
  return ExitSuccess;
}

int Trainer::run() {
  if (M.PrintSummary && !O.Quiet)
    printSummary(M);
  int Label = M.classLabelSlot();
  if (!O.Quiet) {
    out("%s: %zu training rows, %zu test rows", M.Model.c_str(),
        S.Train.size(), S.Test.size());
    if (Label >= 0)
      out(", %lld classes", (long long)M.Slots[Label].Classes);
    if (Mod.device())
      out(", %s", Mod.device()->name().c_str());
    out("\n");
  }
  for (const Metric &Met : M.Metrics)
    if (rowsOf(Met).empty())
      std::fprintf(stderr,
                   "%s: note: the %s split is empty; its %s is not "
                   "reported\n",
                   Prog, Met.splitName(),
                   Met.Kind == Metric::MetricKind::Mse ? "mse" : "accuracy");

  Mod.initParams(O.Seed);
  std::string Err;
  if (!O.Resume.empty() && !resume(Err))
    return error(ExitData, Prog, Err);
  if (!O.LogJson.empty() && !Log.open(O.LogJson, Err))
    return error(ExitData, Prog, Err);
  int64_t EpochsLeft = std::max<int64_t>(O.Epochs - Pos.Epoch + 1, 0);
  Live = Progress(!O.Quiet && progressWanted(),
                  uint64_t(EpochsLeft) * Order.size() -
                      std::min<uint64_t>(Pos.Offset, uint64_t(EpochsLeft) *
                                                         Order.size()));
  Start = std::chrono::steady_clock::now();
  catchInterrupts();
  int Status;
  try {
    Status = train();
  } catch (const DeviceError &) {
    Live.clear(); // main() says what failed.
    throw;
  }
  if (Status)
    return Status;
  releaseInterrupts();

  if (M.PrintTime)
    out("training took %.3f s\n",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - Start)
            .count());
  if (O.Speed && RowsTrained > 0) {
    std::string Where = Mod.device() ? Mod.device()->name()
                                     : std::to_string(threadCount()) +
                                           " threads";
    out("speed: %.0f rows/s, %.3f s in training steps (%llu epochs x %zu "
        "rows, %s)\n",
        double(RowsTrained) / StepSeconds, StepSeconds,
        (unsigned long long)(RowsTrained / Order.size()), Order.size(),
        Where.c_str());
  }
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

  if (!O.Plot.empty()) {
    if (!writePlot(Err))
      return error(ExitData, Prog, Err);
    out("plot written to %s\n", O.Plot.c_str());
  }
  if (!writeWeights(O.Save, M, Mod.readParams(), Err))
    return error(ExitData, Prog, Err);
  out("weights saved to %s\n", O.Save.c_str());
  return ExitSuccess;
}

/// --device: the device to run on, or null for the CPU code (Dev). With
/// --device auto, a GPU trainer that finds no usable GPU says so in a note
/// and runs its CPU code; with --device cuda that is an error. Returns 0 or
/// the status to exit with.
int selectDevice(const Options &O, std::unique_ptr<Device> &Dev) {
  if (O.Device == DeviceChoice::Cpu)
    return ExitSuccess;
  GpuProgram P = trainerGpuProgram();
  if (!P.hasGpuCode()) {
    if (O.Device == DeviceChoice::Auto)
      return ExitSuccess;
    return error(ExitDevice, Prog,
                 "--device cuda: this trainer was built without "
                 "--target=cuda; it has CPU code only");
  }
  std::string Why;
  Dev = openGpu(P, Why);
  if (Dev) {
    Dev->traceLaunches(O.GpuTrace);
    Dev->recordSchedules(O.CudaGraphs);
    Dev->profileLaunches(O.GpuProfile);
    return ExitSuccess;
  }
  // The reason's first line goes in the message; the PTX compiler's log, if
  // any, follows it.
  size_t LineEnd = std::min(Why.find('\n'), Why.size());
  std::string Log = Why.substr(LineEnd);
  Why.resize(LineEnd);
  int Status = ExitSuccess;
  if (O.Device == DeviceChoice::Cuda)
    Status = error(ExitDevice, Prog,
                   "--device cuda: no usable CUDA device (" + Why + ")");
  else
    std::fprintf(stderr,
                 "%s: note: no usable CUDA device (%s); %s on the CPU\n", Prog,
                 Why.c_str(),
                 O.Predict     ? "predicting"
                 : O.GradCheck ? "checking the gradients"
                               : "training");
  if (!Log.empty())
    std::fprintf(stderr, "%s\n", Log.c_str() + 1);
  return Status;
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
    (O.Predict ? printPredictUsage : printUsage)(stdout, Prog, M);
    return ExitSuccess;
  }
  if (O.Summary) {
    printSummary(M);
    return ExitSuccess;
  }
  // Before the data are loaded, so that a missing GPU is told at once. The
  // device outlives the model, whose buffers are on it.
  std::unique_ptr<Device> Dev;
  if (int Status = selectDevice(O, Dev))
    return Status;

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
  // predict: the new rows go after the data set's, before standardization
  // and the vocabulary, which they then share with the training rows.
  size_t FirstNew = T.Rows;
  if (O.Predict && !appendPredictRows(O.Input, M, T, Words, LE))
    return error(ExitData, LE.Where.empty() ? Prog : LE.Where.c_str(),
                 LE.Message);
  if (S.Train.empty())
    return error(ExitData, O.Data.c_str(),
                 "the training split is empty (" + std::to_string(T.Rows) +
                     " rows, train fraction " +
                     std::to_string(M.TrainFraction) + ")");
  if (M.Standardize)
    standardize(T, M, S.Train);
  if (!Words.empty()) {
    VocabularyInfo V = encodeWords(Words, M, S.Train, T);
    if (!O.Quiet && !O.Predict)
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
  if (O.Predict) // the data set's rows too, for the k-means of `after`
    MaxRows = std::min(ChunkRows, T.Rows);
  setThreadCount(int(O.Threads ? O.Threads : availableCores()));
  Model Mod(M);
  if (!Mod.allocate(MaxRows, Dev.get(), Err))
    return error(ExitData, Prog, Err);

  if (O.Predict) {
    if (!loadWeights(O.Weights, M, Mod.overwriteParams(), Err) ||
        !writePredictions(M, Mod, T, Words, FirstNew, O.Output, Err))
      return error(ExitData, Prog, Err);
    return ExitSuccess;
  }
  int Status = O.GradCheck ? runGradCheck(Prog, M, Mod, T, S.Train, O)
                           : Trainer(M, O, T, S, Words, Mod, BatchRows).run();
  if (O.GpuProfile)
    std::fputs(
        Dev ? Dev->profileReport().c_str()
            : "gpu profile: no kernel launched: the run was on the CPU\n",
        stderr);
  return Status;
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
  } catch (const DeviceError &E) {
    // A GPU that failed during the run: a kernel fault, its memory full.
    std::fprintf(stderr, "%s: error: GPU: %s\n", Prog, E.what());
    return ExitDevice;
  }
}
