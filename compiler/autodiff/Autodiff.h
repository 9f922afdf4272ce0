//===- Autodiff.h - Reverse-mode differentiation of tensor IR ---*- C++ -*-===//
#ifndef NNC_AUTODIFF_AUTODIFF_H
#define NNC_AUTODIFF_AUTODIFF_H

#include "ir/Graph.h"
#include "sema/Model.h"

namespace nnc {

/// Appends to `g` the gradient of the scalar `loss` with respect to each node
/// of `wrt`, using each op's gradient rule once, in reverse order. A node
/// that `loss` does not depend on gets a zero gradient.
std::vector<ir::Node *> differentiate(ir::Graph &g, ir::Node *loss,
                                      const std::vector<ir::Node *> &wrt);

/// Appends the optimizer's update of every parameter to `g`, as stores into
/// the params and state buffers. `grads[i]` is the gradient of
/// `params[i]`. Returns the number of state elements the update uses.
int64_t addOptimizerUpdate(ir::Graph &g, const OptimizerSpec &optimizer,
                           const std::vector<ParamSpec> &params,
                           const std::vector<ir::Node *> &paramNodes,
                           const std::vector<ir::Node *> &grads);

/// The four entry points of a trainer (runtime.h), each one graph.
struct Program {
  std::unique_ptr<ir::Graph> TrainStep; ///< nnc_train_step
  std::unique_ptr<ir::Graph> LossGrad;  ///< nnc_loss_grad
  std::unique_ptr<ir::Graph> Eval;      ///< nnc_eval
  std::unique_ptr<ir::Graph> Predict;   ///< nnc_predict
  /// One per Model::Probes entry: nnc_probes[i].
  std::vector<std::unique_ptr<ir::Graph>> Probes;
  int64_t StateElements = 0;

  /// Every graph, entry points first, then the probes.
  std::vector<ir::Graph *> graphs() const;
};

/// Builds the four graphs from a model's forward graph.
Program buildProgram(const Model &model);

} // namespace nnc

#endif // NNC_AUTODIFF_AUTODIFF_H
