//===- Autodiff.cpp - Reverse-mode differentiation of tensor IR -----------===//

#include "autodiff/Autodiff.h"
#include "ir/Ops.h"

#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace nnc {

using ir::Node;
using ir::OpCode;

std::vector<Node *> differentiate(ir::Graph &g, Node *loss,
                                  const std::vector<Node *> &wrt) {
  // Only nodes that depend on some `wrt` need an adjoint.
  std::unordered_set<const Node *> needed(wrt.begin(), wrt.end());
  size_t forwardCount = g.nodes().size();
  std::vector<Node *> forward;
  for (size_t i = 0; i < forwardCount; ++i) {
    Node *node = g.nodes()[i].get();
    forward.push_back(node);
    for (Node *operand : node->Operands)
      if (needed.count(operand))
        needed.insert(node);
  }

  std::unordered_map<const Node *, Node *> adjoint;
  adjoint[loss] = g.constant(1, loss->Ty.Elem);
  for (auto it = forward.rbegin(); it != forward.rend(); ++it) {
    Node *node = *it;
    auto found = adjoint.find(node);
    if (found == adjoint.end() || node->Operands.empty())
      continue;
    bool anyNeeded = false;
    for (Node *operand : node->Operands)
      anyNeeded |= needed.count(operand) != 0;
    if (!anyNeeded)
      continue;
    const ir::OpInfo &info = ir::opInfo(node->Op);
    if (!info.Grad)
      throw std::logic_error(std::string("internal error: op '") + info.Name +
                             "' has no gradient rule");
    std::vector<Node *> grads = info.Grad(g, node, found->second);
    for (size_t i = 0; i < node->Operands.size(); ++i) {
      Node *operand = node->Operands[i];
      if (!grads[i] || !needed.count(operand))
        continue;
      auto &slot = adjoint[operand];
      slot = slot ? g.binary(OpCode::Add, slot, grads[i]) : grads[i];
    }
  }

  std::vector<Node *> result;
  for (Node *node : wrt) {
    auto found = adjoint.find(node);
    if (found != adjoint.end()) {
      result.push_back(found->second);
      continue;
    }
    ir::Attrs to;
    to.Target = node->Ty;
    result.push_back(
        g.create(OpCode::Broadcast, {g.constant(0, node->Ty.Elem)}, to));
  }
  return result;
}

std::vector<ir::Graph *> Program::graphs() const {
  std::vector<ir::Graph *> all = {TrainStep.get(), LossGrad.get(), Eval.get(),
                                  Predict.get()};
  for (const auto &probe : Probes)
    all.push_back(probe.get());
  return all;
}

using NodeMap = std::unordered_map<const Node *, Node *>;

/// A copy of the forward graph in inference mode: dropout is the identity.
/// `map` takes forward nodes to their values in the copy.
static std::unique_ptr<ir::Graph> inferenceClone(const ir::Graph &forward,
                                                 const std::string &name,
                                                 NodeMap &map) {
  std::unique_ptr<ir::Graph> g = forward.clone(name, map);
  std::unordered_map<const Node *, Node *> bypass;
  for (const auto &node : g->nodes()) {
    for (Node *&operand : node->Operands) {
      auto it = bypass.find(operand);
      if (it != bypass.end())
        operand = it->second;
    }
    if (node->Op == OpCode::Dropout)
      bypass[node.get()] = node->Operands[0];
  }
  for (auto &[from, to] : map) {
    auto it = bypass.find(to);
    if (it != bypass.end())
      to = it->second;
  }
  return g; // the bypassed dropouts are dead code now
}

Program buildProgram(const Model &model) {
  Program program;

  // A copy of the forward graph with the loss stored and its gradients with
  // respect to every parameter appended; returns the gradients.
  auto withGradients = [&](std::unique_ptr<ir::Graph> &slot, const char *name,
                           std::vector<Node *> &paramNodes) {
    NodeMap map;
    slot = model.Forward->clone(name, map);
    for (const ParamSpec &p : model.Params)
      paramNodes.push_back(map.at(p.Node));
    Node *loss = map.at(model.Loss);
    slot->addStore(loss, ir::Buffer::Loss, 0, "loss");
    return differentiate(*slot, loss, paramNodes);
  };

  std::vector<Node *> trainParams, gradParams;
  std::vector<Node *> grads = withGradients(program.TrainStep, "train_step", trainParams);
  program.StateElements = addOptimizerUpdate(*program.TrainStep, model.Optimizer,
                                             model.Params, trainParams, grads);

  grads = withGradients(program.LossGrad, "loss_grad", gradParams);
  for (size_t i = 0; i < grads.size(); ++i)
    program.LossGrad->addStore(grads[i], ir::Buffer::Grads,
                               model.Params[i].Offset, model.Params[i].Name);

  NodeMap evalMap, predictMap;
  program.Eval = inferenceClone(*model.Forward, "eval", evalMap);
  program.Eval->addStore(evalMap.at(model.Prediction), ir::Buffer::Output, 0,
                         model.PredictionName);
  program.Eval->addStore(evalMap.at(model.Loss), ir::Buffer::Loss, 0, "loss");
  program.Predict = inferenceClone(*model.Forward, "predict", predictMap);
  program.Predict->addStore(predictMap.at(model.Prediction), ir::Buffer::Output,
                            0, model.PredictionName);
  for (const ProbeSpec &probe : model.Probes) {
    NodeMap map;
    auto g = inferenceClone(*model.Forward, "probe_" + probe.Name, map);
    g->addStore(map.at(probe.Node), ir::Buffer::Output, 0, probe.Name);
    program.Probes.push_back(std::move(g));
  }
  return program;
}

} // namespace nnc
