//===- Ops.h - The op registry ----------------------------------*- C++ -*-===//
//
// One OpInfo per op of Ops.def: its printed name, its shape rule, its
// gradient rule and, for elementwise ops, its scalar formula. The parser's
// layers, autodiff, the printer, both code generator targets and the
// generated documentation all read this table.
//
//===----------------------------------------------------------------------===//
#ifndef NNC_IR_OPS_H
#define NNC_IR_OPS_H

#include "ir/Graph.h"

namespace nnc::ir {

enum class OpCategory {
  Leaf,
  Elementwise,
  MatMul,
  Reduce,
  Layout,
  Row,
  Window, ///< conv2d, max-pool and their gradients
  Random, ///< dropout
  Index,  ///< gather and scatter_add: rows of a table picked by indices
  Recurrent, ///< lstm and its gradients: loops over time steps
};

/// Builds scalar arithmetic for a target; elementwise ops describe their
/// math through it, so that the CPU and GPU lowerings share one formula.
/// Values are opaque handles owned by the implementation.
class ScalarBuilder {
public:
  using Value = void *;
  virtual ~ScalarBuilder() = default;
  virtual Value constant(double value) = 0;
  virtual Value add(Value a, Value b) = 0;
  virtual Value sub(Value a, Value b) = 0;
  virtual Value mul(Value a, Value b) = 0;
  virtual Value div(Value a, Value b) = 0;
  virtual Value max(Value a, Value b) = 0;
  /// max(a, 0) with NaN and -0 kept, as PyTorch's relu on the CPU.
  virtual Value relu(Value a) = 0;
  virtual Value neg(Value a) = 0;
  virtual Value exp(Value a) = 0;
  virtual Value log(Value a) = 0;
  virtual Value sqrt(Value a) = 0;
  virtual Value tanh(Value a) = 0;
  virtual Value pow(Value a, Value b) = 0;
  /// 1.0 where a > b, else 0.0.
  virtual Value greater(Value a, Value b) = 0;
  /// p - s * (a / d), an optimizer's step; a target may compute it another
  /// way that gives the same result.
  virtual Value quotientStep(Value p, Value s, Value a, Value d) {
    return sub(p, mul(s, div(a, d)));
  }
};

/// The adjoints of a node's operands, given the node and its adjoint `dOut`.
/// A null entry means "no gradient flows to this operand".
using GradRule = std::vector<Node *> (*)(Graph &g, Node *node, Node *dOut);
/// Shape rule: sets `out` or returns an error message.
using TypeRule = std::string (*)(const std::vector<Node *> &operands,
                                 const Attrs &attrs, Type &out);
using ScalarRule = ScalarBuilder::Value (*)(ScalarBuilder &b,
                                            const ScalarBuilder::Value *args);

struct OpInfo {
  const char *Name;
  int Arity;
  OpCategory Category;
  TypeRule InferType;
  GradRule Grad;     ///< Null: not differentiable (an error if reached).
  ScalarRule Scalar; ///< Elementwise ops only.
  const char *Doc;
};

const OpInfo &opInfo(OpCode op);

/// Numpy broadcasting of two shapes; false if they do not broadcast.
bool broadcastShapes(const std::vector<int64_t> &a,
                     const std::vector<int64_t> &b,
                     std::vector<int64_t> &out);

/// Sums `value` down to `target`'s shape: the adjoint of a broadcast.
Node *sumToShape(Graph &g, Node *value, const Type &target);

} // namespace nnc::ir

#endif // NNC_IR_OPS_H
