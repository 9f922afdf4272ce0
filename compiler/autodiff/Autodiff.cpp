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

Program buildProgram(const Model &model) {
  Program program;
  using NodeMap = std::unordered_map<const Node *, Node *>;

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
  program.Eval = model.Forward->clone("eval", evalMap);
  program.Eval->addStore(evalMap.at(model.Prediction), ir::Buffer::Output, 0,
                         model.PredictionName);
  program.Eval->addStore(evalMap.at(model.Loss), ir::Buffer::Loss, 0, "loss");
  program.Predict = model.Forward->clone("predict", predictMap);
  program.Predict->addStore(predictMap.at(model.Prediction), ir::Buffer::Output,
                            0, model.PredictionName);
  return program;
}

} // namespace nnc
