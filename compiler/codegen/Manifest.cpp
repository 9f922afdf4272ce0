//===- Manifest.cpp - The model description a trainer carries -------------===//
//
// The runtime has no model-specific code: everything it needs to know about
// the model, its data and its schedule is in this text (docs/abi.md).
//
//===----------------------------------------------------------------------===//

#include "codegen/Codegen.h"
#include "support/Format.h"

#include <sstream>

namespace nnc {

static std::string dimsText(const std::vector<int64_t> &dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i)
    s += (i ? "x" : "") + std::to_string(dims[i]);
  return s.empty() ? "1" : s;
}

std::string buildManifest(const Model &model, const Program &program,
                          WorkspaceSize workspace) {
  std::ostringstream os;
  os << "nnc-manifest\t1\n";
  os << "model\t" << model.Name << '\n';
  os << "dtype\t" << ir::toString(model.FloatType) << '\n';
  for (const ParamSpec &p : model.Params) {
    os << "param\t" << p.Name << '\t' << dimsText(p.Ty.Dims) << '\t' << p.Offset
       << '\t';
    switch (p.Init) {
    case InitKind::Uniform: os << "uniform\t" << formatExact(p.InitArg); break;
    case InitKind::Normal: os << "normal\t" << formatExact(p.InitArg); break;
    case InitKind::Zeros: os << "zeros\t0"; break;
    case InitKind::Ones: os << "ones\t0"; break;
    }
    os << '\n';
  }
  os << "params\t" << model.ParamElements << '\n';
  os << "state\t" << program.StateElements << '\n';
  os << "workspace\t" << workspace.Fixed << '\t' << workspace.PerRow << '\n';
  // Integers: their kind and range, then the sequence length if any.
  auto slot = [&](const char *record, const IoSpec &io) {
    os << record << '\t' << io.Name;
    if (io.isInteger()) {
      os << '\t' << (io.IsClass ? "class" : "index") << '\t' << io.Classes;
      if (!io.Dims.empty())
        os << '\t' << io.Dims[0];
    } else {
      os << "\tfeatures\t" << dimsText(io.Dims);
    }
    os << '\n';
  };
  for (const IoSpec &io : model.Inputs)
    slot("input", io);
  for (const IoSpec &io : model.Labels)
    slot("label", io);
  std::vector<int64_t> outDims(model.Prediction->Ty.Dims.begin() + 1,
                               model.Prediction->Ty.Dims.end());
  os << "output\t" << model.PredictionName << '\t' << dimsText(outDims) << '\n';
  for (const ProbeSpec &probe : model.Probes) {
    std::vector<int64_t> dims(probe.Node->Ty.Dims.begin() + 1,
                              probe.Node->Ty.Dims.end());
    os << "probe\t" << probe.Name << '\t' << dimsText(dims) << '\n';
  }
  for (const LayerInfo &layer : model.Layers)
    os << "layer\t" << layer.Name << '\t' << layer.Kind << '\t'
       << dimsText(layer.Output) << '\t' << layer.Params << '\n';
  static const char *lossNames[] = {"cross_entropy", "mse", "binary_cross_entropy"};
  os << "loss\t" << lossNames[static_cast<int>(model.LossK)] << '\n';
  os << "optimizer\t" << model.Optimizer.Kind;
  for (const auto &[name, value] : model.Optimizer.Hyper)
    os << '\t' << name << '=' << formatExact(value);
  os << '\n';
  os << "lr\t" << formatExact(model.Optimizer.get("lr")) << '\n';
  const DataSpec &data = model.Data;
  os << "source\t" << data.SourceKind;
  if (!data.SourcePath.empty())
    os << "\tpath=" << data.SourcePath;
  if (data.SourceKind == "csv") {
    os << "\tlabel=";
    for (size_t i = 0; i < data.LabelColumns.size(); ++i)
      os << (i ? "," : "") << data.LabelColumns[i];
  }
  for (const auto &[key, value] : data.SourceArgs)
    os << '\t' << key << '=' << value;
  os << '\n';
  os << "split\t" << formatExact(data.TrainFraction) << '\t'
     << formatExact(data.TestFraction) << '\t' << data.SplitSeed << '\n';
  os << "standardize\t" << data.Standardize << '\n';
  const TrainSpec &train = model.Train;
  os << "epochs\t" << train.Epochs << '\n';
  os << "batch\t" << train.Batch << '\n';
  os << "shuffle\t" << train.Shuffle << '\n';
  os << "seed\t" << train.Seed << '\n';
  os << "report_every\t" << train.ReportEvery << '\n';
  os << "summary\t" << train.PrintSummary << '\n';
  if (train.PrintWeights)
    os << "print\tweights\n";
  if (train.PrintTime)
    os << "print\ttime\n";
  for (const auto &[metric, split] : train.Metrics)
    os << "metric\t" << metric << '\t' << split << '\n';
  for (const AfterStep &step : model.After) {
    os << "after\t" << step.Kind;
    for (const auto &[key, value] : step.Args)
      os << '\t' << key << '=' << value;
    os << '\n';
  }
  return os.str();
}

} // namespace nnc
