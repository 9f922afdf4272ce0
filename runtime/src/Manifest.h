//===- Manifest.h - The model description in a generated object -*- C++ -*-===//
//
// Part of nnc. See docs/abi.md for the format.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The parsed form of `nnc_manifest`: what the generated code needs from the
/// runtime (buffer sizes, parameter initialisation, input layout) and the
/// defaults of the spec's `data` and `train` blocks.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_MANIFEST_H
#define NNC_RUNTIME_MANIFEST_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nnc {

/// Element type of params, state, grads, float inputs and outputs.
enum class DType { F32, F64 };

inline size_t elementSize(DType T) { return T == DType::F32 ? 4 : 8; }
inline const char *dtypeName(DType T) {
  return T == DType::F32 ? "f32" : "f64";
}

/// Product of Dims; the parser guarantees it fits comfortably in int64_t.
int64_t product(const std::vector<int64_t> &Dims);

/// Dims written as in the manifest, e.g. "64x4".
std::string formatDims(const std::vector<int64_t> &Dims);

/// One `param` record: a tensor inside the contiguous parameter array.
struct ParamTensor {
  enum class InitKind { Uniform, Normal, Zeros, Ones };

  std::string Name;
  std::vector<int64_t> Dims;
  int64_t Offset = 0; ///< In elements, into `nnc_call::params`.
  InitKind Init = InitKind::Zeros;
  double InitArg = 0; ///< Bound b of U(-b, b) for Uniform; std for Normal.

  int64_t size() const { return product(Dims); }
};

/// One `input` or `label` record: one entry of `nnc_call::inputs`.
struct DataSlot {
  std::string Name;
  bool IsLabel = false;
  bool IsClass = false; ///< int32 class labels (-1: padding, not scored).
  bool IsIndex = false; ///< int32 indices of an input (0: padding).
  /// The number of classes, or the vocabulary size of indices.
  int64_t Classes = 0;
  /// Values per row: the features' shape, {T} for a sequence of integers,
  /// {1} for one integer.
  std::vector<int64_t> Dims;

  int64_t width() const { return product(Dims); }
  bool isInteger() const { return IsClass || IsIndex; }
};

/// One `layer` record: a row of `--summary`.
struct LayerRow {
  std::string Name;
  std::string Kind;
  std::vector<int64_t> Output; ///< Per row.
  int64_t Params = 0;
};

/// One `metric` record.
struct Metric {
  enum class SplitKind { Train, Test };
  /// Accuracy: of class labels, or of every non-padding position of a
  /// sequence of them. Mse: beside the mean-predicting baseline.
  enum class MetricKind { Accuracy, Mse };
  SplitKind Split = SplitKind::Test;
  MetricKind Kind = MetricKind::Accuracy;

  const char *splitName() const {
    return Split == SplitKind::Train ? "train" : "test";
  }
};

/// One `probe` record: a named value that nnc_probes[i] computes.
struct Probe {
  std::string Name;
  std::vector<int64_t> Dims; ///< Per row.

  int64_t width() const { return product(Dims); }
};

/// One `after` record: a step that runs once training is over.
struct AfterStep {
  std::string Kind; ///< "kmeans" or "predict"
  std::vector<std::pair<std::string, std::string>> Args;

  /// The value of an argument, or "" when it is absent.
  std::string arg(const std::string &Key) const {
    for (const auto &[K, V] : Args)
      if (K == Key)
        return V;
    return "";
  }
};

struct Manifest {
  std::string Text; ///< The manifest as compiled in, for the weights hash.

  std::string Model;
  DType Type = DType::F32;
  std::vector<ParamTensor> Params;
  int64_t ParamCount = 0;
  int64_t StateCount = 0;
  int64_t WorkspaceFixed = 0;
  int64_t WorkspacePerRow = 0;
  /// Inputs then labels, in manifest order: the layout of `nnc_call::inputs`.
  std::vector<DataSlot> Slots;
  std::string OutputName;
  std::vector<int64_t> OutputDims;
  std::vector<Probe> Probes; ///< In nnc_probes order.
  std::vector<LayerRow> Layers;
  std::string Loss;
  std::string Optimizer;
  std::vector<std::string> OptimizerArgs; ///< "key=value", as written.
  double Lr = 0;

  /// "csv", "idx" (a folder of MNIST files), a text corpus ("tagged",
  /// "polarity") or a generator ("linear", "blobs", "ratings").
  std::string SourceKind;
  /// The source's key=value fields, in manifest order.
  std::vector<std::pair<std::string, std::string>> SourceArgs;
  std::string SourcePath; ///< path=: a file, or for idx a folder
  std::vector<std::string> CsvLabels; ///< csv: label=, split at commas
  /// idx: low= and high=, the input values of pixel bytes 0 and 255 (the
  /// bytes between map linearly); PixelLow < PixelHigh.
  double PixelLow = 0;
  double PixelHigh = 1;
  double TrainFraction = 0;
  double TestFraction = 0;
  uint64_t SplitSeed = 0;
  bool Standardize = false;

  int64_t Epochs = 0;
  int64_t Batch = 0; ///< 0: the whole training split.
  bool Shuffle = false;
  uint64_t Seed = 0;
  int64_t ReportEvery = 1;
  bool PrintSummary = false; ///< Print --summary before training.
  bool PrintWeights = false; ///< Print the parameters after training.
  bool PrintTime = false;    ///< Print how long training took.
  std::vector<Metric> Metrics;
  std::vector<AfterStep> After;

  size_t numInputs() const;
  /// The value of a source field, or "" when it is absent.
  std::string sourceArg(const std::string &Key) const {
    for (const auto &[K, V] : SourceArgs)
      if (K == Key)
        return V;
    return "";
  }
  int64_t outputWidth() const { return product(OutputDims); }
  /// Values per row that the output buffer must hold: the output's or the
  /// widest probe's.
  int64_t outputCapacity() const {
    int64_t Width = outputWidth();
    for (const Probe &P : Probes)
      Width = std::max(Width, P.width());
    return Width;
  }
  /// Index of the probe named \p Name, or -1.
  int probeIndex(const std::string &Name) const {
    for (size_t I = 0; I < Probes.size(); ++I)
      if (Probes[I].Name == Name)
        return int(I);
    return -1;
  }
  /// Index into Slots of the slot named \p Name, or -1.
  int slotIndex(const std::string &Name) const {
    for (size_t I = 0; I < Slots.size(); ++I)
      if (Slots[I].Name == Name)
        return int(I);
    return -1;
  }
  /// Index into Slots of the label that accuracy is measured against (the
  /// first class label), or -1 when there is none.
  int classLabelSlot() const;
  /// Index into Slots of the first label of features, or -1.
  int featureLabelSlot() const;
};

/// Parses and validates \p Text. On failure returns false and sets \p Err to
/// a message that names the line and the record.
bool parseManifest(const char *Text, Manifest &M, std::string &Err);

} // namespace nnc

#endif // NNC_RUNTIME_MANIFEST_H
