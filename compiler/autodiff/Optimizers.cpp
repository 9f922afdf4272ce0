//===- Optimizers.cpp - Optimizer updates as tensor IR --------------------===//
//
// Each optimizer's update is written as IR so that the same passes and code
// generators handle it as the rest of the training step. The formulas follow
// PyTorch's torch.optim implementations term for term, so that a spec trains
// like the reference framework.
//
//===----------------------------------------------------------------------===//

#include "autodiff/Autodiff.h"

#include <stdexcept>

namespace nnc {

using ir::Node;
using ir::OpCode;

namespace {

class UpdateBuilder {
public:
  UpdateBuilder(ir::Graph &g, ir::DType type) : G(g), Ty(type) {}

  Node *c(double value) { return G.constant(value, Ty); }
  Node *add(Node *a, Node *b) { return G.binary(OpCode::Add, a, b); }
  Node *sub(Node *a, Node *b) { return G.binary(OpCode::Sub, a, b); }
  Node *mul(Node *a, Node *b) { return G.binary(OpCode::Mul, a, b); }
  Node *div(Node *a, Node *b) { return G.binary(OpCode::Div, a, b); }
  Node *sqrt(Node *a) { return G.unary(OpCode::Sqrt, a); }
  /// p - s * (a / d), one op: its CPU code keeps subnormal a as fast.
  Node *quotientStep(Node *p, Node *s, Node *a, Node *d) {
    return G.create(OpCode::QuotientStep, {p, s, a, d});
  }
  Node *pow(Node *a, Node *b) { return G.binary(OpCode::Pow, a, b); }
  Node *scalar(OpCode op) {
    ir::Attrs attrs;
    attrs.Target.Elem = Ty;
    return G.create(op, {}, attrs);
  }

  /// A zero-initialised state tensor shaped like `param`, at the next offset.
  Node *state(const ParamSpec &param, const std::string &what) {
    ir::Attrs attrs;
    attrs.Name = param.Name + "." + what;
    attrs.Offset = StateElements;
    attrs.Target = param.Ty;
    StateElements += param.Ty.staticElements();
    return G.create(OpCode::State, {}, attrs);
  }
  void storeState(Node *stateNode, Node *value) {
    G.addStore(value, ir::Buffer::State, stateNode->A.Offset, stateNode->A.Name);
  }
  void storeParam(const ParamSpec &param, Node *value) {
    G.addStore(value, ir::Buffer::Params, param.Offset, param.Name);
  }

  int64_t StateElements = 0;

private:
  ir::Graph &G;
  ir::DType Ty;
};

} // namespace

int64_t addOptimizerUpdate(ir::Graph &g, const OptimizerSpec &optimizer,
                           const std::vector<ParamSpec> &params,
                           const std::vector<Node *> &paramNodes,
                           const std::vector<Node *> &grads) {
  if (params.empty())
    return 0;
  UpdateBuilder b(g, params[0].Ty.Elem);
  Node *lr = b.scalar(OpCode::LearningRate);
  // Every optimizer takes PyTorch's L2 weight decay the same way: g += wd * p.
  std::vector<Node *> decayed = grads;
  if (double weightDecay = optimizer.get("weight_decay"); weightDecay != 0)
    for (size_t i = 0; i < params.size(); ++i)
      decayed[i] = b.add(grads[i], b.mul(b.c(weightDecay), paramNodes[i]));

  if (optimizer.Kind == "sgd") {
    double momentum = optimizer.get("momentum");
    bool nesterov = optimizer.get("nesterov") != 0;
    for (size_t i = 0; i < params.size(); ++i) {
      Node *p = paramNodes[i], *grad = decayed[i];
      if (momentum != 0) {
        // torch.optim.SGD, dampening 0: buf = momentum * buf + g (a zero
        // buffer makes the first step buf = g, as in PyTorch).
        Node *buf = b.state(params[i], "momentum");
        Node *newBuf = b.add(b.mul(b.c(momentum), buf), grad);
        b.storeState(buf, newBuf);
        grad = nesterov ? b.add(grad, b.mul(b.c(momentum), newBuf)) : newBuf;
      }
      b.storeParam(params[i], b.sub(p, b.mul(lr, grad)));
    }
    return b.StateElements;
  }

  if (optimizer.Kind == "adam") {
    double beta1 = optimizer.get("beta1"), beta2 = optimizer.get("beta2");
    double eps = optimizer.get("eps");
    Node *step = b.scalar(OpCode::Step);
    // step_size = lr / (1 - beta1^t); denom = sqrt(v) / sqrt(1 - beta2^t) + eps,
    // the division by the scalar as a multiplication by its reciprocal: one
    // rounding more than PyTorch's formula, one vector division less of
    // the two the update has (a division costs as much as a dozen
    // multiplications on the CPUs nnc targets).
    Node *correction1 = b.sub(b.c(1), b.pow(b.c(beta1), step));
    Node *inverseCorrection2 =
        b.div(b.c(1), b.sqrt(b.sub(b.c(1), b.pow(b.c(beta2), step))));
    Node *stepSize = b.div(lr, correction1);
    for (size_t i = 0; i < params.size(); ++i) {
      Node *p = paramNodes[i], *grad = decayed[i];
      Node *m = b.state(params[i], "exp_avg");
      Node *v = b.state(params[i], "exp_avg_sq");
      Node *newM = b.add(b.mul(b.c(beta1), m), b.mul(b.c(1 - beta1), grad));
      Node *newV = b.add(b.mul(b.c(beta2), v),
                         b.mul(b.c(1 - beta2), b.mul(grad, grad)));
      Node *denom = b.add(b.mul(b.sqrt(newV), inverseCorrection2), b.c(eps));
      b.storeState(m, newM);
      b.storeState(v, newV);
      b.storeParam(params[i], b.quotientStep(p, stepSize, newM, denom));
    }
    return b.StateElements;
  }
  if (optimizer.Kind == "rmsprop") {
    double alpha = optimizer.get("alpha"), eps = optimizer.get("eps");
    double momentum = optimizer.get("momentum");
    bool centered = optimizer.get("centered") != 0;
    for (size_t i = 0; i < params.size(); ++i) {
      Node *p = paramNodes[i], *grad = decayed[i];
      Node *v = b.state(params[i], "square_avg");
      Node *newV = b.add(b.mul(b.c(alpha), v),
                         b.mul(b.c(1 - alpha), b.mul(grad, grad)));
      b.storeState(v, newV);
      Node *variance = newV;
      if (centered) {
        Node *avg = b.state(params[i], "grad_avg");
        Node *newAvg = b.add(b.mul(b.c(alpha), avg), b.mul(b.c(1 - alpha), grad));
        b.storeState(avg, newAvg);
        variance = b.sub(newV, b.mul(newAvg, newAvg));
      }
      Node *denom = b.add(b.sqrt(variance), b.c(eps));
      if (momentum == 0) {
        b.storeParam(params[i], b.quotientStep(p, lr, grad, denom));
        continue;
      }
      Node *buf = b.state(params[i], "momentum_buffer");
      Node *scaled = b.add(b.mul(b.c(momentum), buf), b.div(grad, denom));
      b.storeState(buf, scaled);
      b.storeParam(params[i], b.sub(p, b.mul(lr, scaled)));
    }
    return b.StateElements;
  }

  if (optimizer.Kind == "adadelta") {
    double rho = optimizer.get("rho"), eps = optimizer.get("eps");
    for (size_t i = 0; i < params.size(); ++i) {
      Node *p = paramNodes[i], *grad = decayed[i];
      Node *v = b.state(params[i], "square_avg");
      Node *u = b.state(params[i], "acc_delta");
      Node *newV = b.add(b.mul(b.c(rho), v), b.mul(b.c(1 - rho), b.mul(grad, grad)));
      // delta = sqrt(u + eps) / sqrt(v + eps) * g
      Node *delta = b.mul(b.div(b.sqrt(b.add(u, b.c(eps))),
                                b.sqrt(b.add(newV, b.c(eps)))),
                          grad);
      Node *newU = b.add(b.mul(b.c(rho), u), b.mul(b.c(1 - rho), b.mul(delta, delta)));
      b.storeState(v, newV);
      b.storeState(u, newU);
      b.storeParam(params[i], b.sub(p, b.mul(lr, delta)));
    }
    return b.StateElements;
  }
  throw std::logic_error("internal error: unknown optimizer " + optimizer.Kind);
}

} // namespace nnc
