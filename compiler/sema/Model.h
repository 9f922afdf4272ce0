//===- Model.h - A checked model: forward graph and settings ----*- C++ -*-===//
//
// What sema produces from a spec: the forward graph in tensor IR (shapes all
// known but the batch size), the parameters with their initialisers, the loss,
// the optimizer and the data and train settings, every value checked.
//
//===----------------------------------------------------------------------===//
#ifndef NNC_SEMA_MODEL_H
#define NNC_SEMA_MODEL_H

#include "ir/Graph.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nnc {

enum class InitKind { Uniform, Normal, Zeros, Ones };

struct ParamSpec {
  std::string Name;
  ir::Type Ty;
  int64_t Offset = 0; ///< Element offset in the params buffer.
  InitKind Init = InitKind::Zeros;
  double InitArg = 0; ///< Uniform: the bound b of U(-b, b); Normal: the std.
  ir::Node *Node = nullptr;
};

/// An input or label of the model, as one row of data.
struct IoSpec {
  std::string Name;
  bool IsClass = false; ///< Integer class labels: class[K] or class[T, K].
  bool IsIndex = false; ///< Integer indices: index[V] or index[T, V].
  /// IsClass: the number of classes; IsIndex: the vocabulary size V.
  int64_t Classes = 0;
  /// Per row: the features' shape, or for integers the sequence length T
  /// (empty for one integer per row).
  std::vector<int64_t> Dims;
  ir::Node *Node = nullptr;

  bool isInteger() const { return IsClass || IsIndex; }
};

/// One row of the layer summary: a layer call and what it produces per row.
struct LayerInfo {
  std::string Name;
  std::string Kind;
  std::vector<int64_t> Output; ///< Dimensions per row.
  int64_t Params = 0;
};

enum class LossKind { CrossEntropy, MeanSquaredError, BinaryCrossEntropy };

struct OptimizerSpec {
  std::string Kind; ///< "sgd" or "adam".
  /// Every hyper-parameter of the kind, defaults filled in, in table order.
  std::vector<std::pair<std::string, double>> Hyper;
  double get(const std::string &name) const;
};

struct DataSpec {
  std::string SourceKind;                ///< "csv" or a generator ("linear")
  std::string SourcePath;                ///< csv: resolved against the spec's folder.
  std::vector<std::string> LabelColumns; ///< csv: header names or "#index".
  /// Generators: their parameters as the manifest writes them.
  std::vector<std::pair<std::string, std::string>> SourceArgs;
  double TrainFraction = 1, TestFraction = 0;
  int64_t SplitSeed = 0;
  bool Standardize = false;
};

struct TrainSpec {
  int64_t Epochs = 10;
  int64_t Batch = 32; ///< 0: the whole training split.
  bool Shuffle = true;
  int64_t Seed = 0;
  int64_t ReportEvery = 1;
  bool PrintSummary = false; ///< `report summary`
  bool PrintWeights = false; ///< `report weights`: the trained parameters
  bool PrintTime = false;    ///< `report time`: training's wall-clock time
  /// (metric, split) pairs: ("accuracy", "test"), ("mse", "test").
  std::vector<std::pair<std::string, std::string>> Metrics;
};

/// A named value that the trainer reads after training (an `after` step's
/// operand), computed in inference mode by its own entry point.
struct ProbeSpec {
  std::string Name;
  ir::Node *Node = nullptr;
};

/// One step of the `after` block, with its arguments as the manifest
/// writes them (key, value), defaults filled in.
struct AfterStep {
  std::string Kind; ///< "kmeans" or "predict"
  std::vector<std::pair<std::string, std::string>> Args;
};

struct Model {
  std::string Name;
  ir::DType FloatType = ir::DType::F32;
  std::vector<IoSpec> Inputs;
  std::vector<IoSpec> Labels;
  std::vector<ParamSpec> Params;
  int64_t ParamElements = 0;
  std::vector<LayerInfo> Layers; ///< In the order the spec applies them.
  /// Inputs, params and the forward computation; no stores.
  std::unique_ptr<ir::Graph> Forward;
  ir::Node *Prediction = nullptr; ///< What eval and predict output.
  std::string PredictionName;
  ir::Node *Loss = nullptr;       ///< Scalar mean loss of the batch.
  LossKind LossK = LossKind::CrossEntropy;
  OptimizerSpec Optimizer;
  DataSpec Data;
  TrainSpec Train;
  std::vector<ProbeSpec> Probes;
  std::vector<AfterStep> After;
};

} // namespace nnc

#endif // NNC_SEMA_MODEL_H
