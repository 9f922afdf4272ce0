//===- Manifest.cpp - Parse and validate nnc_manifest ---------------------===//
//
// Part of nnc. See docs/abi.md for the format.
//
//===----------------------------------------------------------------------===//

#include "Manifest.h"
#include "Numbers.h"

#include "nnc/runtime.h"

#include <algorithm>
#include <string_view>

using namespace nnc;

namespace {

/// Every element count and byte size in a manifest stays below this, so
/// that products and sums of a few of them cannot overflow int64_t.
constexpr int64_t MaxCount = int64_t(1) << 40;

/// The records in the order they must appear; see the table in docs/abi.md.
struct RecordKind {
  const char *Name;
  bool Repeats; ///< Zero or more times; every other record exactly once.
};

const RecordKind Records[] = {
    {"nnc-manifest", false}, {"model", false},       {"dtype", false},
    {"param", true},         {"params", false},      {"state", false},
    {"workspace", false},    {"input", true},        {"label", true},
    {"output", false},       {"probe", true},        {"layer", true},
    {"loss", false},         {"optimizer", false},
    {"lr", false},           {"source", false},
    {"split", false},        {"standardize", false}, {"epochs", false},
    {"batch", false},        {"shuffle", false},     {"seed", false},
    {"report_every", false}, {"summary", false},     {"print", true},
    {"metric", true},
    {"after", true},
};
constexpr int NumRecords = sizeof(Records) / sizeof(Records[0]);

int findRecord(std::string_view Name) {
  for (int I = 0; I < NumRecords; ++I)
    if (Name == Records[I].Name)
      return I;
  return -1;
}

std::string quote(std::string_view S) { return "'" + std::string(S) + "'"; }

/// Parses one record at a time into a Manifest; every method returns false
/// after setting Err.
class Parser {
public:
  Parser(Manifest &M, std::string &Err) : M(M), Err(Err) {}

  bool parse(std::string_view Text);

private:
  bool record(int Kind, const std::vector<std::string_view> &F);
  bool validate();

  bool fail(const std::string &Msg) {
    Err = Line ? "line " + std::to_string(Line) + ": record " + quote(Current) +
                     ": " + Msg
               : Msg;
    return false;
  }
  bool expectFields(const std::vector<std::string_view> &F, size_t N);
  bool name(std::string_view S, std::string &Out);
  bool count(std::string_view S, int64_t &Out, int64_t Min = 0);
  bool seed(std::string_view S, uint64_t &Out);
  bool flag(std::string_view S, bool &Out);
  bool fraction(std::string_view S, double &Out);
  bool dims(std::string_view S, std::vector<int64_t> &Out);
  /// Fields F[First...] as key=value pairs.
  bool keyValues(const std::vector<std::string_view> &F, size_t First,
                 std::vector<std::pair<std::string, std::string>> &Out);

  Manifest &M;
  std::string &Err;
  int Line = 0;
  std::string_view Current;
};

bool Parser::expectFields(const std::vector<std::string_view> &F, size_t N) {
  if (F.size() == N + 1)
    return true;
  return fail("expected " + std::to_string(N) + " field" + (N == 1 ? "" : "s") +
              ", found " + std::to_string(F.size() - 1));
}

bool Parser::name(std::string_view S, std::string &Out) {
  if (S.empty())
    return fail("empty name");
  Out = std::string(S);
  return true;
}

bool Parser::count(std::string_view S, int64_t &Out, int64_t Min) {
  if (!parseInt64(S, Out) || Out < Min || Out > MaxCount)
    return fail("expected an integer in [" + std::to_string(Min) +
                ", 2^40], found " + quote(S));
  return true;
}

bool Parser::seed(std::string_view S, uint64_t &Out) {
  if (!parseUInt64(S, Out))
    return fail("expected an unsigned 64-bit seed, found " + quote(S));
  return true;
}

bool Parser::flag(std::string_view S, bool &Out) {
  if (S != "0" && S != "1")
    return fail("expected 0 or 1, found " + quote(S));
  Out = S == "1";
  return true;
}

bool Parser::fraction(std::string_view S, double &Out) {
  if (!parseDouble(S, Out) || Out < 0 || Out > 1)
    return fail("expected a fraction in [0, 1], found " + quote(S));
  return true;
}

bool Parser::keyValues(const std::vector<std::string_view> &F, size_t First,
                       std::vector<std::pair<std::string, std::string>> &Out) {
  for (size_t I = First; I < F.size(); ++I) {
    size_t Eq = F[I].find('=');
    if (Eq == 0 || Eq == std::string_view::npos)
      return fail("expected key=value, found " + quote(F[I]));
    Out.emplace_back(F[I].substr(0, Eq), F[I].substr(Eq + 1));
  }
  return true;
}

bool Parser::dims(std::string_view Text, std::vector<int64_t> &Out) {
  Out.clear();
  int64_t Total = 1;
  std::string_view S = Text;
  for (;;) {
    size_t X = S.find('x');
    std::string_view D = S.substr(0, X);
    int64_t V;
    // Digits only: "+4" or " 4" would be a compiler bug worth reporting.
    if (D.empty() || D[0] < '0' || D[0] > '9' || !parseInt64(D, V) || V < 1 ||
        V > MaxCount || (Total *= V) > MaxCount)
      return fail("bad dims " + quote(Text) +
                  " (expected positive sizes joined by "
                  "'x', at most 2^40 elements)");
    Out.push_back(V);
    if (X == std::string_view::npos)
      return true;
    S.remove_prefix(X + 1);
  }
}

bool Parser::parse(std::string_view Text) {
  M.Text = std::string(Text);
  int Last = -1; // Index into Records of the previous record.
  size_t Pos = 0;
  while (Pos < Text.size()) {
    size_t End = Text.find('\n', Pos);
    if (End == std::string_view::npos)
      End = Text.size();
    std::string_view L = Text.substr(Pos, End - Pos);
    Pos = End + 1;
    ++Line;

    std::vector<std::string_view> F;
    for (size_t Start = 0;;) {
      size_t Tab = L.find('\t', Start);
      F.push_back(
          L.substr(Start, Tab == std::string_view::npos ? Tab : Tab - Start));
      if (Tab == std::string_view::npos)
        break;
      Start = Tab + 1;
    }
    Current = F[0];

    int Kind = findRecord(F[0]);
    if (Kind < 0)
      return fail("unknown record");
    if (Last < 0 && Kind != 0)
      return fail("the manifest must start with 'nnc-manifest'");
    if (Kind < Last)
      return fail(std::string("out of order (after '") + Records[Last].Name +
                  "')");
    if (Kind == Last && !Records[Kind].Repeats)
      return fail("appears twice");
    for (int Skipped = Last + 1; Skipped < Kind; ++Skipped)
      if (!Records[Skipped].Repeats)
        return fail(std::string("record '") + Records[Skipped].Name +
                    "' is missing before it");
    Last = Kind;
    if (!record(Kind, F))
      return false;
  }
  for (int Skipped = Last + 1; Skipped < NumRecords; ++Skipped)
    if (!Records[Skipped].Repeats) {
      Line = 0;
      return fail(std::string("record '") + Records[Skipped].Name +
                  "' is missing at the end");
    }
  Line = 0;
  return validate();
}

bool Parser::record(int Kind, const std::vector<std::string_view> &F) {
  std::string_view R = Records[Kind].Name;
  if (R == "nnc-manifest") {
    int64_t Version;
    if (!expectFields(F, 1) || !count(F[1], Version))
      return false;
    if (Version != NNC_ABI_VERSION)
      return fail("format version " + std::to_string(Version) +
                  ", this runtime reads version " +
                  std::to_string(NNC_ABI_VERSION));
    return true;
  }
  if (R == "model") {
    if (!expectFields(F, 1) || !name(F[1], M.Model))
      return false;
    if (M.Model.find('/') != std::string::npos)
      return fail("the model name must not contain '/'");
    return true;
  }
  if (R == "dtype") {
    if (!expectFields(F, 1))
      return false;
    if (F[1] == "f32")
      M.Type = DType::F32;
    else if (F[1] == "f64")
      M.Type = DType::F64;
    else
      return fail("expected 'f32' or 'f64', found " + quote(F[1]));
    return true;
  }
  if (R == "param") {
    ParamTensor P;
    if (!expectFields(F, 5) || !name(F[1], P.Name) || !dims(F[2], P.Dims) ||
        !count(F[3], P.Offset))
      return false;
    if (F[4] == "uniform")
      P.Init = ParamTensor::InitKind::Uniform;
    else if (F[4] == "normal")
      P.Init = ParamTensor::InitKind::Normal;
    else if (F[4] == "zeros")
      P.Init = ParamTensor::InitKind::Zeros;
    else if (F[4] == "ones")
      P.Init = ParamTensor::InitKind::Ones;
    else
      return fail("unknown init " + quote(F[4]) +
                  " (expected 'uniform', 'normal', 'zeros' or 'ones')");
    if (!parseDouble(F[5], P.InitArg) || P.InitArg < 0)
      return fail("bad init argument " + quote(F[5]));
    M.Params.push_back(std::move(P));
    return true;
  }
  if (R == "params")
    return expectFields(F, 1) && count(F[1], M.ParamCount);
  if (R == "state")
    return expectFields(F, 1) && count(F[1], M.StateCount);
  if (R == "workspace")
    return expectFields(F, 2) && count(F[1], M.WorkspaceFixed) &&
           count(F[2], M.WorkspacePerRow);
  if (R == "input" || R == "label") {
    // NAME features DIMS | NAME class K [T] | NAME index V [T]
    DataSlot S;
    S.IsLabel = R == "label";
    if (F.size() < 4 || !name(F[1], S.Name))
      return fail("expected a name, a kind and its shape");
    if (F[2] == "features") {
      if (!expectFields(F, 3) || !dims(F[3], S.Dims))
        return false;
    } else if ((F[2] == "class" && S.IsLabel) || (F[2] == "index" && !S.IsLabel)) {
      S.IsClass = F[2] == "class";
      S.IsIndex = !S.IsClass;
      S.Dims = {1};
      if (F.size() > 5)
        return fail("expected at most 4 fields, found " + std::to_string(F.size() - 1));
      if (!count(F[3], S.Classes, 1) || (F.size() == 5 && !count(F[4], S.Dims[0], 1)))
        return false;
      if (S.Classes > INT32_MAX)
        return fail(S.IsClass ? "too many classes" : "too many indices");
    } else {
      return fail("unknown kind " + quote(F[2]) +
                  (S.IsLabel ? " (expected 'features' or 'class')"
                             : " (expected 'features' or 'index')"));
    }
    M.Slots.push_back(std::move(S));
    return true;
  }
  if (R == "output")
    return expectFields(F, 2) && name(F[1], M.OutputName) &&
           dims(F[2], M.OutputDims);
  if (R == "layer") {
    LayerRow L;
    if (!expectFields(F, 4) || !name(F[1], L.Name) || !name(F[2], L.Kind) ||
        !dims(F[3], L.Output) || !count(F[4], L.Params))
      return false;
    M.Layers.push_back(std::move(L));
    return true;
  }
  // The loss and the optimizer are only displayed, so any name is accepted:
  // a new loss in the compiler needs no runtime change.
  if (R == "loss")
    return expectFields(F, 1) && name(F[1], M.Loss);
  if (R == "optimizer") {
    if (F.size() < 2 || !name(F[1], M.Optimizer))
      return fail("expected the optimizer's name");
    for (size_t I = 2; I < F.size(); ++I) {
      size_t Eq = F[I].find('=');
      if (Eq == 0 || Eq == std::string_view::npos || Eq + 1 == F[I].size())
        return fail("expected key=value, found " + quote(F[I]));
      M.OptimizerArgs.emplace_back(F[I]);
    }
    return true;
  }
  if (R == "lr") {
    if (!expectFields(F, 1))
      return false;
    if (!parseDouble(F[1], M.Lr) || M.Lr <= 0)
      return fail("expected a positive learning rate, found " + quote(F[1]));
    return true;
  }
  if (R == "source") {
    if (F.size() < 2 || !name(F[1], M.SourceKind))
      return fail("expected the source's kind");
    static const char *Kinds[] = {"csv",     "idx",    "tagged", "polarity",
                                  "linear",  "blobs",  "ratings"};
    if (std::find(std::begin(Kinds), std::end(Kinds), M.SourceKind) ==
        std::end(Kinds))
      return fail("unsupported data source " + quote(F[1]) +
                  " (expected 'csv', 'idx', 'tagged', 'polarity', 'linear', "
                  "'blobs' or 'ratings')");
    if (!keyValues(F, 2, M.SourceArgs))
      return false;
    if (M.SourceKind == "tagged" || M.SourceKind == "polarity") {
      M.SourcePath = M.sourceArg("path");
      if (M.SourcePath.empty())
        return fail("a " + M.SourceKind + " source needs path=");
      return true;
    }
    if (M.SourceKind == "idx") {
      M.SourcePath = M.sourceArg("path");
      if (M.SourcePath.empty())
        return fail("an idx source needs path=");
      if (!parseDouble(M.sourceArg("low"), M.PixelLow) ||
          !parseDouble(M.sourceArg("high"), M.PixelHigh))
        return fail("an idx source needs numbers low= and high=");
      if (!(M.PixelLow < M.PixelHigh))
        return fail("an idx source needs low= below high=");
      return true;
    }
    if (M.SourceKind != "csv")
      return true;
    M.SourcePath = M.sourceArg("path");
    if (M.SourcePath.empty())
      return fail("a csv source needs path=");
    std::string Labels = M.sourceArg("label");
    std::string_view Cols = Labels;
    while (!Cols.empty()) {
      size_t Comma = Cols.find(',');
      std::string Col;
      if (!name(Cols.substr(0, Comma), Col))
        return false;
      M.CsvLabels.push_back(std::move(Col));
      if (Comma == std::string_view::npos)
        break;
      Cols.remove_prefix(Comma + 1);
    }
    return true;
  }
  if (R == "split") {
    if (!expectFields(F, 3) || !fraction(F[1], M.TrainFraction) ||
        !fraction(F[2], M.TestFraction) || !seed(F[3], M.SplitSeed))
      return false;
    if (M.TrainFraction + M.TestFraction > 1 + 1e-9)
      return fail("the train and test fractions add up to more than 1");
    return true;
  }
  if (R == "standardize")
    return expectFields(F, 1) && flag(F[1], M.Standardize);
  if (R == "epochs")
    return expectFields(F, 1) && count(F[1], M.Epochs);
  if (R == "batch")
    return expectFields(F, 1) && count(F[1], M.Batch);
  if (R == "shuffle")
    return expectFields(F, 1) && flag(F[1], M.Shuffle);
  if (R == "seed")
    return expectFields(F, 1) && seed(F[1], M.Seed);
  if (R == "report_every")
    return expectFields(F, 1) && count(F[1], M.ReportEvery, 1);
  if (R == "summary")
    return expectFields(F, 1) && flag(F[1], M.PrintSummary);
  if (R == "metric") {
    if (!expectFields(F, 2))
      return false;
    Metric Met;
    if (F[1] == "accuracy")
      Met.Kind = Metric::MetricKind::Accuracy;
    else if (F[1] == "mse")
      Met.Kind = Metric::MetricKind::Mse;
    else
      return fail("unknown metric " + quote(F[1]) +
                  " (expected 'accuracy' or 'mse')");
    if (F[2] == "test")
      Met.Split = Metric::SplitKind::Test;
    else if (F[2] == "train")
      Met.Split = Metric::SplitKind::Train;
    else
      return fail("expected 'test' or 'train', found " + quote(F[2]));
    M.Metrics.push_back(Met);
    return true;
  }
  if (R == "print") {
    if (!expectFields(F, 1))
      return false;
    if (F[1] == "weights")
      M.PrintWeights = true;
    else if (F[1] == "time")
      M.PrintTime = true;
    else
      return fail("unknown item " + quote(F[1]) + " (expected 'weights' or 'time')");
    return true;
  }
  if (R == "probe") {
    Probe P;
    if (!expectFields(F, 2) || !name(F[1], P.Name) || !dims(F[2], P.Dims))
      return false;
    M.Probes.push_back(std::move(P));
    return true;
  }
  if (R == "after") {
    AfterStep S;
    if (F.size() < 2 || !name(F[1], S.Kind))
      return fail("expected the step's kind");
    if (!keyValues(F, 2, S.Args))
      return false;
    if (S.Kind == "predict") {
      // split= and rows=, or NAME=VALUE for each input (checked against
      // the slots in validate()).
      int64_t Rows;
      if (!S.arg("split").empty() &&
          ((S.arg("split") != "train" && S.arg("split") != "test") ||
           !count(S.arg("rows"), Rows)))
        return fail("predict: expected split=train|test and rows=COUNT");
      M.After.push_back(std::move(S));
      return true;
    }
    if (S.Kind != "kmeans")
      return fail("unknown after-training step " + quote(F[1]) +
                  " (expected 'kmeans' or 'predict')");
    int64_t K, Restarts;
    uint64_t Seed;
    if (!count(S.arg("k"), K, 1) || !count(S.arg("restarts"), Restarts, 1) ||
        !seed(S.arg("seed"), Seed))
      return false;
    if (M.probeIndex(S.arg("value")) < 0)
      return fail("kmeans value " + quote(S.arg("value")) + " is not a probe");
    M.After.push_back(std::move(S));
    return true;
  }
  return fail("unhandled record"); // Unreachable: every kind is handled.
}

/// Checks that need more than one record.
bool Parser::validate() {
  std::vector<const ParamTensor *> ByOffset;
  for (const ParamTensor &P : M.Params) {
    if (P.Offset + P.size() > M.ParamCount)
      return fail("param '" + P.Name + "' ends at element " +
                  std::to_string(P.Offset + P.size()) + ", past params " +
                  std::to_string(M.ParamCount));
    ByOffset.push_back(&P);
  }
  std::sort(ByOffset.begin(), ByOffset.end(),
            [](const ParamTensor *A, const ParamTensor *B) {
              return A->Offset < B->Offset;
            });
  for (size_t I = 1; I < ByOffset.size(); ++I)
    if (ByOffset[I - 1]->Offset + ByOffset[I - 1]->size() > ByOffset[I]->Offset)
      return fail("params '" + ByOffset[I - 1]->Name + "' and '" +
                  ByOffset[I]->Name + "' overlap");

  if (M.numInputs() == 0)
    return fail("the model has no input");

  int64_t LabelColumns = 0;
  for (const DataSlot &S : M.Slots)
    if (S.IsLabel)
      LabelColumns += S.width();
  if (M.SourceKind == "csv" && int64_t(M.CsvLabels.size()) != LabelColumns)
    return fail("the csv source names " + std::to_string(M.CsvLabels.size()) +
                " label column(s) but the labels need " +
                std::to_string(LabelColumns));

  for (const AfterStep &S : M.After) {
    if (S.Kind == "predict") {
      if (!S.arg("split").empty())
        continue;
      // One row of given input values: every input once, single values.
      if (S.Args.size() != M.numInputs())
        return fail("predict: expected a value for each of the " +
                    std::to_string(M.numInputs()) + " inputs");
      for (const auto &[Key, Value] : S.Args) {
        int Slot = M.slotIndex(Key);
        double V;
        if (Slot < 0 || M.Slots[size_t(Slot)].IsLabel ||
            M.Slots[size_t(Slot)].width() != 1 || !parseDouble(Value, V))
          return fail("predict: " + quote(Key) + " is not an input of one value");
      }
      continue;
    }
    std::string Truth = S.arg("truth");
    int Slot = Truth.empty() ? 0 : M.slotIndex(Truth);
    if (Slot < 0 || !M.Slots[size_t(Slot)].IsClass)
      return fail("kmeans truth '" + Truth + "' is not a class label");
  }

  for (const Metric &Met : M.Metrics) {
    if (Met.Kind == Metric::MetricKind::Mse) {
      int F = M.featureLabelSlot();
      if (F < 0 || M.Slots[F].width() != M.outputWidth())
        return fail("metric 'mse' needs a label of features as wide as the "
                    "output");
      continue;
    }
    int C = M.classLabelSlot();
    if (C < 0)
      return fail("metric 'accuracy' needs a class label");
    // The output scores every class at each position of the label.
    if (M.outputWidth() != M.Slots[C].Classes * M.Slots[C].width())
      return fail("metric 'accuracy': output '" + M.OutputName + "' has " +
                  std::to_string(M.outputWidth()) +
                  " values per row but label '" + M.Slots[C].Name + "' has " +
                  std::to_string(M.Slots[C].width()) + " x " +
                  std::to_string(M.Slots[C].Classes) + " classes");
  }
  return true;
}

} // namespace

int64_t nnc::product(const std::vector<int64_t> &Dims) {
  int64_t P = 1;
  for (int64_t D : Dims)
    P *= D;
  return P;
}

std::string nnc::formatDims(const std::vector<int64_t> &Dims) {
  std::string S;
  for (int64_t D : Dims)
    S += (S.empty() ? "" : "x") + std::to_string(D);
  return S;
}

size_t Manifest::numInputs() const {
  size_t N = 0;
  for (const DataSlot &S : Slots)
    N += !S.IsLabel;
  return N;
}

int Manifest::featureLabelSlot() const {
  for (size_t I = 0; I < Slots.size(); ++I)
    if (Slots[I].IsLabel && !Slots[I].isInteger())
      return int(I);
  return -1;
}

int Manifest::classLabelSlot() const {
  for (size_t I = 0; I < Slots.size(); ++I)
    if (Slots[I].IsClass)
      return int(I);
  return -1;
}

bool nnc::parseManifest(const char *Text, Manifest &M, std::string &Err) {
  M = Manifest();
  return Parser(M, Err).parse(Text);
}
