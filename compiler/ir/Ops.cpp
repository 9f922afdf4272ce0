//===- Ops.cpp - Shape, gradient and scalar rules of every op -------------===//

#include "ir/Ops.h"

namespace nnc::ir {

using Operands = std::vector<Node *>;
using SV = ScalarBuilder::Value;

bool broadcastShapes(const std::vector<int64_t> &a,
                     const std::vector<int64_t> &b,
                     std::vector<int64_t> &out) {
  size_t rank = std::max(a.size(), b.size());
  out.assign(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db || db == 1)
      out[i] = da;
    else if (da == 1)
      out[i] = db;
    else
      return false;
  }
  return true;
}

Node *sumToShape(Graph &g, Node *value, const Type &target) {
  const std::vector<int64_t> &want = target.Dims;
  while (value->Ty.Dims.size() > want.size()) {
    Attrs a;
    a.Axis = 0;
    value = g.create(OpCode::ReduceSum, {value}, a);
  }
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == 1 && value->Ty.Dims[i] != 1) {
      Attrs a;
      a.Axis = i;
      a.KeepDim = true;
      value = g.create(OpCode::ReduceSum, {value}, a);
    }
  }
  return value;
}

//===----------------------------------------------------------------------===//
// Shape rules
//===----------------------------------------------------------------------===//

static std::string leafType(const Operands &, const Attrs &attrs, Type &out) {
  out = attrs.Target;
  return "";
}

static std::string scalarFloat(const Operands &, const Attrs &attrs,
                               Type &out) {
  out = Type{attrs.Target.Elem, {}};
  return "";
}

static std::string elementwiseType(const Operands &ops, const Attrs &,
                                   Type &out) {
  out = ops[0]->Ty;
  for (size_t i = 1; i < ops.size(); ++i) {
    if (ops[i]->Ty.Elem != out.Elem)
      return "operands have different element types";
    std::vector<int64_t> dims;
    if (!broadcastShapes(out.Dims, ops[i]->Ty.Dims, dims))
      return "shapes " + toString(out) + " and " + toString(ops[i]->Ty) +
             " do not broadcast";
    out.Dims = dims;
  }
  if (out.Elem == DType::I32)
    return "arithmetic needs floating-point operands";
  return "";
}

/// A tensor of rank >= 2 seen as a matrix: every dimension but the last
/// makes the rows, so that a layer applies to each time step of a sequence.
static std::vector<int64_t> leading(const Type &t) {
  return std::vector<int64_t>(t.Dims.begin(), t.Dims.end() - 1);
}

static std::string matmulType(const Operands &ops, const Attrs &attrs,
                              Type &out) {
  const Type &a = ops[0]->Ty, &b = ops[1]->Ty;
  if (a.Dims.size() < 2 || b.Dims.size() < 2)
    return "matmul needs two matrices, got " + toString(a) + " and " +
           toString(b);
  if (a.Elem != b.Elem)
    return "operands have different element types";
  std::string mismatch =
      "inner dimensions differ: " + toString(a) + " and " + toString(b);
  if (attrs.TransA) {
    // A^T B sums over the rows of both: their leading dimensions must match.
    if (attrs.TransB ? a.Dims.size() != 2 || b.Dims.size() != 2
                     : leading(a) != leading(b))
      return mismatch;
    if (attrs.TransB && a.Dims[0] != b.Dims[1])
      return mismatch;
    out = Type{a.Elem, {a.Dims.back(), attrs.TransB ? b.Dims[0] : b.Dims.back()}};
    return "";
  }
  if (b.Dims.size() != 2)
    return "matmul's second operand must be a matrix, got " + toString(b);
  int64_t kb = b.Dims[attrs.TransB ? 1 : 0], n = b.Dims[attrs.TransB ? 0 : 1];
  if (a.Dims.back() != kb)
    return mismatch;
  out = Type{a.Elem, leading(a)};
  out.Dims.push_back(n);
  return "";
}

static std::string reduceSumType(const Operands &ops, const Attrs &attrs,
                                 Type &out) {
  out = ops[0]->Ty;
  if (attrs.Axis < 0 || attrs.Axis >= (int64_t)out.Dims.size())
    return "axis out of range";
  if (attrs.KeepDim)
    out.Dims[attrs.Axis] = 1;
  else
    out.Dims.erase(out.Dims.begin() + attrs.Axis);
  return "";
}

static std::string sumAllType(const Operands &ops, const Attrs &, Type &out) {
  out = Type{ops[0]->Ty.Elem, {}};
  return "";
}

static std::string broadcastType(const Operands &ops, const Attrs &attrs,
                                 Type &out) {
  std::vector<int64_t> dims;
  if (!broadcastShapes(ops[0]->Ty.Dims, attrs.Target.Dims, dims) ||
      dims != attrs.Target.Dims)
    return "cannot broadcast " + toString(ops[0]->Ty) + " to " +
           toString(attrs.Target);
  out = Type{ops[0]->Ty.Elem, attrs.Target.Dims};
  return "";
}

static std::string reshapeType(const Operands &ops, const Attrs &attrs,
                               Type &out) {
  const Type &in = ops[0]->Ty;
  if (in.isBatched() != attrs.Target.isBatched() ||
      in.staticElements() != attrs.Target.staticElements())
    return "cannot reshape " + toString(in) + " to " + toString(attrs.Target);
  out = Type{in.Elem, attrs.Target.Dims};
  return "";
}

static std::string transposeType(const Operands &ops, const Attrs &, Type &out) {
  const Type &in = ops[0]->Ty;
  if (in.Dims.size() != 2)
    return "cannot transpose " + toString(in) + ": not a matrix";
  out = Type{in.Elem, {in.Dims[1], in.Dims[0]}};
  return "";
}

static std::string rowType(const Operands &ops, const Attrs &, Type &out) {
  out = ops[0]->Ty;
  if (out.Dims.empty())
    return "needs at least one dimension";
  return "";
}

static std::string oneHotType(const Operands &ops, const Attrs &attrs,
                              Type &out) {
  if (ops[0]->Ty.Elem != DType::I32)
    return "one_hot needs integer labels";
  out = Type{attrs.Target.Elem, ops[0]->Ty.Dims};
  out.Dims.push_back(attrs.Axis);
  return "";
}

/// Output extent of a window sliding over `in` values.
static int64_t windowExtent(int64_t in, int64_t kernel, int64_t stride,
                            int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

static std::string checkWindow(const Type &x, const Attrs &attrs,
                               const char *op) {
  if (x.Dims.size() != 4)
    return std::string(op) + " needs images [N, channels, height, width], got " +
           toString(x);
  if (attrs.KernelH < 1 || attrs.KernelW < 1 || attrs.Stride < 1 ||
      attrs.Pad < 0)
    return "invalid window";
  if (x.Dims[2] + 2 * attrs.Pad < attrs.KernelH ||
      x.Dims[3] + 2 * attrs.Pad < attrs.KernelW)
    return "the kernel (" + std::to_string(attrs.KernelH) + "x" +
           std::to_string(attrs.KernelW) + ") is larger than the input (" +
           std::to_string(x.Dims[2]) + "x" + std::to_string(x.Dims[3]) +
           (attrs.Pad ? " padded by " + std::to_string(attrs.Pad) : "") + ")";
  return "";
}

static std::string conv2dType(const Operands &ops, const Attrs &attrs,
                              Type &out) {
  const Type &x = ops[0]->Ty, &w = ops[1]->Ty;
  if (std::string error = checkWindow(x, attrs, "conv2d"); !error.empty())
    return error;
  if (w.Dims.size() != 4 || w.Dims[1] != x.Dims[1] ||
      w.Dims[2] != attrs.KernelH || w.Dims[3] != attrs.KernelW)
    return "filter " + toString(w) + " does not fit input " + toString(x);
  out = Type{x.Elem,
             {x.Dims[0], w.Dims[0],
              windowExtent(x.Dims[2], attrs.KernelH, attrs.Stride, attrs.Pad),
              windowExtent(x.Dims[3], attrs.KernelW, attrs.Stride, attrs.Pad)}};
  return "";
}

/// The gradient ops produce the type of the forward operand they are the
/// gradient of, given in attrs.Target.
static std::string windowGradType(const Operands &, const Attrs &attrs,
                                  Type &out) {
  out = attrs.Target;
  return "";
}

static std::string maxPoolType(const Operands &ops, const Attrs &attrs,
                               Type &out) {
  const Type &x = ops[0]->Ty;
  if (std::string error = checkWindow(x, attrs, "max_pool2d"); !error.empty())
    return error;
  out = Type{x.Elem,
             {x.Dims[0], x.Dims[1],
              windowExtent(x.Dims[2], attrs.KernelH, attrs.Stride, attrs.Pad),
              windowExtent(x.Dims[3], attrs.KernelW, attrs.Stride, attrs.Pad)}};
  return "";
}

static std::string dropoutType(const Operands &ops, const Attrs &attrs,
                               Type &out) {
  if (!(attrs.Value >= 0 && attrs.Value < 1))
    return "dropout probability must be in [0, 1)";
  out = ops[0]->Ty;
  return "";
}

static std::string toFloatType(const Operands &ops, const Attrs &attrs,
                               Type &out) {
  if (ops[0]->Ty.Elem != DType::I32)
    return "to_float needs integers";
  out = Type{attrs.Target.Elem, ops[0]->Ty.Dims};
  return "";
}

static std::string gatherType(const Operands &ops, const Attrs &, Type &out) {
  const Type &table = ops[0]->Ty, &indices = ops[1]->Ty;
  if (table.Dims.size() != 2 || table.Elem == DType::I32)
    return "gather needs a float table [rows, width], got " + toString(table);
  if (indices.Elem != DType::I32)
    return "gather needs integer indices, got " + toString(indices);
  out = Type{table.Elem, indices.Dims};
  out.Dims.push_back(table.Dims[1]);
  return "";
}

static std::string scatterAddType(const Operands &ops, const Attrs &attrs,
                                  Type &out) {
  const Type &indices = ops[0]->Ty, &values = ops[1]->Ty;
  std::vector<int64_t> rows = indices.Dims;
  rows.push_back(attrs.Target.Dims.size() == 2 ? attrs.Target.Dims[1] : -2);
  if (indices.Elem != DType::I32 || values.Dims != rows)
    return "scatter_add: values " + toString(values) + " do not fit indices " +
           toString(indices) + " and table " + toString(attrs.Target);
  out = attrs.Target;
  return "";
}

static std::string concatType(const Operands &ops, const Attrs &, Type &out) {
  const Type &a = ops[0]->Ty, &b = ops[1]->Ty;
  if (a.Dims.empty() || a.Elem != b.Elem || leading(a) != leading(b))
    return "cannot concatenate " + toString(a) + " and " + toString(b) +
           " along their last axis";
  out = a;
  out.Dims.back() += b.Dims.back();
  return "";
}

/// Whether `part` fits in the last axis of `whole` at `offset`.
static bool fitsAt(const Type &part, const Type &whole, int64_t offset) {
  return !part.Dims.empty() && part.Elem == whole.Elem &&
         part.Dims.size() == whole.Dims.size() && leading(part) == leading(whole) &&
         offset >= 0 && offset + part.Dims.back() <= whole.Dims.back();
}

static std::string sliceType(const Operands &ops, const Attrs &attrs,
                             Type &out) {
  Type want{ops[0]->Ty.Elem, attrs.Target.Dims};
  if (!fitsAt(want, ops[0]->Ty, attrs.Offset))
    return "cannot slice " + toString(want) + " at " +
           std::to_string(attrs.Offset) + " out of " + toString(ops[0]->Ty);
  out = want;
  return "";
}

/// unslice places its operand at attrs.Offset of a zero tensor of type
/// attrs.Target: the adjoint of slice.
static std::string unsliceType(const Operands &ops, const Attrs &attrs,
                               Type &out) {
  if (!fitsAt(ops[0]->Ty, attrs.Target, attrs.Offset))
    return "cannot place " + toString(ops[0]->Ty) + " at " +
           std::to_string(attrs.Offset) + " of " + toString(attrs.Target);
  out = attrs.Target;
  return "";
}

/// lstm(xg [N, T, 4H], w_hh [4H, H]) -> [N, T, 6H]: per time step the hidden
/// state h, the cell c and the gates i, f, g, o (activated), in that order,
/// so that the gradient need not recompute them.
static std::string lstmType(const Operands &ops, const Attrs &, Type &out) {
  const Type &xg = ops[0]->Ty, &w = ops[1]->Ty;
  if (xg.Dims.size() != 3 || w.Dims.size() != 2 || w.Dims[0] != 4 * w.Dims[1] ||
      xg.Dims[2] != w.Dims[0] || xg.Elem != w.Elem)
    return "lstm needs input gates [N, T, 4H] and weights [4H, H], got " +
           toString(xg) + " and " + toString(w);
  out = Type{xg.Elem, {xg.Dims[0], xg.Dims[1], 6 * w.Dims[1]}};
  return "";
}

/// lstm_grad(state, d_state, w_hh) -> the adjoint of the input gates.
static std::string lstmGradType(const Operands &ops, const Attrs &, Type &out) {
  const Type &state = ops[0]->Ty, &w = ops[2]->Ty;
  if (ops[1]->Ty != state || w.Dims.size() != 2 || state.Dims.size() != 3 ||
      state.Dims[2] != 6 * w.Dims[1])
    return "lstm_grad: inconsistent operands";
  out = Type{state.Elem, {state.Dims[0], state.Dims[1], w.Dims[0]}};
  return "";
}

/// lstm_grad_weight(state, d_gates) -> the adjoint of w_hh.
static std::string lstmGradWeightType(const Operands &ops, const Attrs &,
                                      Type &out) {
  const Type &state = ops[0]->Ty, &dz = ops[1]->Ty;
  if (state.Dims.size() != 3 || dz.Dims.size() != 3 ||
      state.Dims[2] % 6 != 0 || dz.Dims[2] != state.Dims[2] / 6 * 4)
    return "lstm_grad_weight: inconsistent operands";
  int64_t h = state.Dims[2] / 6;
  out = Type{state.Elem, {4 * h, h}};
  return "";
}

//===----------------------------------------------------------------------===//
// Gradient rules
//===----------------------------------------------------------------------===//

static Node *operandGrad(Graph &g, Node *grad, Node *operand) {
  return sumToShape(g, grad, operand->Ty);
}

static Node *one(Graph &g, Node *like) { return g.constant(1, like->Ty.Elem); }

static Operands gradNeg(Graph &g, Node *, Node *d) {
  return {g.unary(OpCode::Neg, d)};
}
static Operands gradExp(Graph &g, Node *n, Node *d) {
  return {g.binary(OpCode::Mul, d, n)};
}
static Operands gradLog(Graph &g, Node *n, Node *d) {
  return {g.binary(OpCode::Div, d, n->Operands[0])};
}
static Operands gradSqrt(Graph &g, Node *n, Node *d) {
  Node *twice = g.binary(OpCode::Mul, g.constant(2, n->Ty.Elem), n);
  return {g.binary(OpCode::Div, d, twice)};
}
static Operands gradTanh(Graph &g, Node *n, Node *d) {
  Node *square = g.binary(OpCode::Mul, n, n);
  return {g.binary(OpCode::Mul, d, g.binary(OpCode::Sub, one(g, n), square))};
}
static Operands gradSigmoid(Graph &g, Node *n, Node *d) {
  Node *slope = g.binary(OpCode::Mul, n, g.binary(OpCode::Sub, one(g, n), n));
  return {g.binary(OpCode::Mul, d, slope)};
}
static Operands gradRelu(Graph &g, Node *n, Node *d) {
  // relu(x) > 0 exactly where x > 0 (NaN and -0 included). Reading the
  // relu rather than x leaves x to the relu alone, so a dense layer's relu
  // can run in its product's epilogue.
  Node *positive = g.binary(OpCode::Greater, n, g.constant(0, n->Ty.Elem));
  return {g.binary(OpCode::Mul, d, positive)};
}
static Operands gradAdd(Graph &g, Node *n, Node *d) {
  return {operandGrad(g, d, n->Operands[0]), operandGrad(g, d, n->Operands[1])};
}
static Operands gradSub(Graph &g, Node *n, Node *d) {
  return {operandGrad(g, d, n->Operands[0]),
          operandGrad(g, g.unary(OpCode::Neg, d), n->Operands[1])};
}
static Operands gradMul(Graph &g, Node *n, Node *d) {
  Node *a = n->Operands[0], *b = n->Operands[1];
  return {operandGrad(g, g.binary(OpCode::Mul, d, b), a),
          operandGrad(g, g.binary(OpCode::Mul, d, a), b)};
}
static Operands gradDiv(Graph &g, Node *n, Node *d) {
  Node *b = n->Operands[1];
  Node *da = g.binary(OpCode::Div, d, b);
  // d(a/b)/db = -(a/b)/b
  Node *db = g.unary(OpCode::Neg, g.binary(OpCode::Div, g.binary(OpCode::Mul, d, n), b));
  return {operandGrad(g, da, n->Operands[0]), operandGrad(g, db, b)};
}
static Operands gradMax(Graph &g, Node *n, Node *d) {
  Node *a = n->Operands[0], *b = n->Operands[1];
  Node *aWins = g.binary(OpCode::Greater, a, b);
  Node *bWins = g.binary(OpCode::Sub, one(g, a), aWins);
  return {operandGrad(g, g.binary(OpCode::Mul, d, aWins), a),
          operandGrad(g, g.binary(OpCode::Mul, d, bWins), b)};
}
static Operands gradPow(Graph &g, Node *n, Node *d) {
  Node *a = n->Operands[0], *b = n->Operands[1];
  Node *da = g.binary(OpCode::Mul, d,
                      g.binary(OpCode::Mul, b,
                               g.binary(OpCode::Pow, a,
                                        g.binary(OpCode::Sub, b, one(g, b)))));
  Node *db = g.binary(OpCode::Mul, d,
                      g.binary(OpCode::Mul, n, g.unary(OpCode::Log, a)));
  return {operandGrad(g, da, a), operandGrad(g, db, b)};
}
static Operands gradGreater(Graph &, Node *, Node *) {
  return {nullptr, nullptr}; // A step function: zero almost everywhere.
}

static Node *matmul(Graph &g, Node *a, Node *b, bool transA, bool transB) {
  Attrs attrs;
  attrs.TransA = transA;
  attrs.TransB = transB;
  return g.create(OpCode::MatMul, {a, b}, attrs);
}

static Operands gradMatMul(Graph &g, Node *n, Node *d) {
  Node *a = n->Operands[0], *b = n->Operands[1];
  bool tA = n->A.TransA, tB = n->A.TransB;
  // C = op(A) op(B): dA = d op(B)^T (transposed back if A was), likewise dB.
  Node *da = tA ? matmul(g, b, d, tB, true) : matmul(g, d, b, false, !tB);
  Node *db = tB ? matmul(g, d, a, true, tA) : matmul(g, a, d, !tA, false);
  return {da, db};
}

static Operands gradReduceSum(Graph &g, Node *n, Node *d) {
  Node *x = n->Operands[0];
  if (!n->A.KeepDim) {
    Attrs keep;
    keep.Target = x->Ty;
    keep.Target.Dims[n->A.Axis] = 1;
    d = g.create(OpCode::Reshape, {d}, keep);
  }
  Attrs to;
  to.Target = x->Ty;
  return {g.create(OpCode::Broadcast, {d}, to)};
}
static Operands gradSumAll(Graph &g, Node *n, Node *d) {
  Attrs to;
  to.Target = n->Operands[0]->Ty;
  return {g.create(OpCode::Broadcast, {d}, to)};
}
static Operands gradBroadcast(Graph &g, Node *n, Node *d) {
  return {sumToShape(g, d, n->Operands[0]->Ty)};
}
static Operands gradReshape(Graph &g, Node *n, Node *d) {
  Attrs to;
  to.Target = n->Operands[0]->Ty;
  return {g.create(OpCode::Reshape, {d}, to)};
}

/// Sum over the last axis, keeping it as size 1.
static Node *rowSum(Graph &g, Node *x) {
  Attrs attrs;
  attrs.Axis = x->Ty.Dims.size() - 1;
  attrs.KeepDim = true;
  return g.create(OpCode::ReduceSum, {x}, attrs);
}

static Operands gradSoftmax(Graph &g, Node *n, Node *d) {
  // dx = y * (d - sum(d * y))
  Node *inner = rowSum(g, g.binary(OpCode::Mul, d, n));
  return {g.binary(OpCode::Mul, n, g.binary(OpCode::Sub, d, inner))};
}
static Operands gradLogSoftmax(Graph &g, Node *n, Node *d) {
  // dx = d - softmax(x) * sum(d)
  Node *softmax = g.unary(OpCode::Exp, n);
  return {g.binary(OpCode::Sub, d, g.binary(OpCode::Mul, softmax, rowSum(g, d)))};
}

static Operands gradConv2D(Graph &g, Node *n, Node *d) {
  Node *x = n->Operands[0], *w = n->Operands[1];
  Attrs input = n->A, filter = n->A;
  input.Target = x->Ty;
  filter.Target = w->Ty;
  return {g.create(OpCode::Conv2DGradInput, {d, w}, input),
          g.create(OpCode::Conv2DGradFilter, {x, d}, filter)};
}
static Operands gradMaxPool2D(Graph &g, Node *n, Node *d) {
  Attrs attrs = n->A;
  attrs.Target = n->Operands[0]->Ty;
  return {g.create(OpCode::MaxPool2DGrad, {n->Operands[0], d}, attrs)};
}
static Operands gradDropout(Graph &g, Node *n, Node *d) {
  // The mask is a function of (seed, stream, step, element), so the same
  // op applied to the adjoint multiplies it by the same mask.
  return {g.create(OpCode::Dropout, {d}, n->A)};
}

static Operands gradGather(Graph &g, Node *n, Node *d) {
  Attrs attrs;
  attrs.Target = n->Operands[0]->Ty;
  return {g.create(OpCode::ScatterAdd, {n->Operands[1], d}, attrs), nullptr};
}
static Operands gradScatterAdd(Graph &g, Node *n, Node *d) {
  return {nullptr, g.create(OpCode::Gather, {d, n->Operands[0]})};
}

static Node *slice(Graph &g, Node *x, int64_t offset, int64_t width) {
  Attrs attrs;
  attrs.Offset = offset;
  attrs.Target = x->Ty;
  attrs.Target.Dims.back() = width;
  return g.create(OpCode::Slice, {x}, attrs);
}
static Operands gradConcat(Graph &g, Node *n, Node *d) {
  int64_t split = n->Operands[0]->Ty.Dims.back();
  return {slice(g, d, 0, split),
          slice(g, d, split, n->Operands[1]->Ty.Dims.back())};
}
static Operands gradSlice(Graph &g, Node *n, Node *d) {
  Attrs attrs;
  attrs.Offset = n->A.Offset;
  attrs.Target = n->Operands[0]->Ty;
  return {g.create(OpCode::Unslice, {d}, attrs)};
}
static Operands gradUnslice(Graph &g, Node *n, Node *d) {
  return {slice(g, d, n->A.Offset, n->Operands[0]->Ty.Dims.back())};
}

static Operands gradLstm(Graph &g, Node *n, Node *d) {
  Node *w = n->Operands[1];
  Node *dGates = g.create(OpCode::LstmGrad, {n, d, w});
  return {dGates, g.create(OpCode::LstmGradWeight, {n, dGates})};
}

//===----------------------------------------------------------------------===//
// Scalar formulas of the elementwise ops
//===----------------------------------------------------------------------===//

static SV scalarNeg(ScalarBuilder &b, const SV *x) { return b.neg(x[0]); }
static SV scalarExp(ScalarBuilder &b, const SV *x) { return b.exp(x[0]); }
static SV scalarLog(ScalarBuilder &b, const SV *x) { return b.log(x[0]); }
static SV scalarSqrt(ScalarBuilder &b, const SV *x) { return b.sqrt(x[0]); }
static SV scalarTanh(ScalarBuilder &b, const SV *x) { return b.tanh(x[0]); }
static SV scalarSigmoid(ScalarBuilder &b, const SV *x) {
  // 1 / (1 + exp(-x)): exp overflows to inf for very negative x, giving 0.
  return b.div(b.constant(1), b.add(b.constant(1), b.exp(b.neg(x[0]))));
}
static SV scalarRelu(ScalarBuilder &b, const SV *x) { return b.relu(x[0]); }
static SV scalarAdd(ScalarBuilder &b, const SV *x) { return b.add(x[0], x[1]); }
static SV scalarSub(ScalarBuilder &b, const SV *x) { return b.sub(x[0], x[1]); }
static SV scalarMul(ScalarBuilder &b, const SV *x) { return b.mul(x[0], x[1]); }
static SV scalarDiv(ScalarBuilder &b, const SV *x) { return b.div(x[0], x[1]); }
static SV scalarMax(ScalarBuilder &b, const SV *x) { return b.max(x[0], x[1]); }
static SV scalarPow(ScalarBuilder &b, const SV *x) { return b.pow(x[0], x[1]); }
static SV scalarGreater(ScalarBuilder &b, const SV *x) {
  return b.greater(x[0], x[1]);
}
static SV scalarQuotientStep(ScalarBuilder &b, const SV *x) {
  return b.quotientStep(x[0], x[1], x[2], x[3]);
}

//===----------------------------------------------------------------------===//
// The table
//===----------------------------------------------------------------------===//

static const OpInfo Table[] = {
    {"input", 0, OpCategory::Leaf, leafType, nullptr, nullptr,
     "An input or label of the call (attribute: index, name)."},
    {"param", 0, OpCategory::Leaf, leafType, nullptr, nullptr,
     "A trainable parameter (attribute: element offset, name)."},
    {"state", 0, OpCategory::Leaf, leafType, nullptr, nullptr,
     "An optimizer state tensor (attribute: element offset, name)."},
    {"constant", 0, OpCategory::Leaf, scalarFloat, nullptr, nullptr,
     "A scalar constant (attribute: value)."},
    {"batch_size", 0, OpCategory::Leaf, scalarFloat, nullptr, nullptr,
     "The number of rows of the call, as a float scalar."},
    {"learning_rate", 0, OpCategory::Leaf, scalarFloat, nullptr, nullptr,
     "The call's learning rate."},
    {"step", 0, OpCategory::Leaf, scalarFloat, nullptr, nullptr,
     "The call's 1-based optimizer step, as a float scalar."},
    {"neg", 1, OpCategory::Elementwise, elementwiseType, gradNeg, scalarNeg,
     "-x"},
    {"exp", 1, OpCategory::Elementwise, elementwiseType, gradExp, scalarExp,
     "e^x"},
    {"log", 1, OpCategory::Elementwise, elementwiseType, gradLog, scalarLog,
     "natural logarithm"},
    {"sqrt", 1, OpCategory::Elementwise, elementwiseType, gradSqrt, scalarSqrt,
     "square root"},
    {"tanh", 1, OpCategory::Elementwise, elementwiseType, gradTanh, scalarTanh,
     "hyperbolic tangent"},
    {"sigmoid", 1, OpCategory::Elementwise, elementwiseType, gradSigmoid,
     scalarSigmoid, "1 / (1 + e^-x)"},
    {"relu", 1, OpCategory::Elementwise, elementwiseType, gradRelu, scalarRelu,
     "max(x, 0), NaN and -0 kept"},
    {"add", 2, OpCategory::Elementwise, elementwiseType, gradAdd, scalarAdd,
     "a + b"},
    {"sub", 2, OpCategory::Elementwise, elementwiseType, gradSub, scalarSub,
     "a - b"},
    {"mul", 2, OpCategory::Elementwise, elementwiseType, gradMul, scalarMul,
     "a * b"},
    {"div", 2, OpCategory::Elementwise, elementwiseType, gradDiv, scalarDiv,
     "a / b"},
    {"max", 2, OpCategory::Elementwise, elementwiseType, gradMax, scalarMax,
     "the larger of a and b (the gradient goes to b on ties)"},
    {"pow", 2, OpCategory::Elementwise, elementwiseType, gradPow, scalarPow,
     "a^b"},
    {"greater", 2, OpCategory::Elementwise, elementwiseType, gradGreater,
     scalarGreater, "1 where a > b, else 0"},
    {"quotient_step", 4, OpCategory::Elementwise, elementwiseType, nullptr,
     scalarQuotientStep,
     "p - s * (a / b): an optimizer's step of parameter p (operands p, s, a, b)"},
    {"matmul", 2, OpCategory::MatMul, matmulType, gradMatMul, nullptr,
     "matrix product op(A) op(B) (attributes: transA, transB)"},
    {"reduce_sum", 1, OpCategory::Reduce, reduceSumType, gradReduceSum, nullptr,
     "sum over one axis (attributes: axis, keepdim)"},
    {"sum_all", 1, OpCategory::Reduce, sumAllType, gradSumAll, nullptr,
     "sum of every element, a scalar"},
    {"broadcast", 1, OpCategory::Layout, broadcastType, gradBroadcast, nullptr,
     "numpy broadcast to a larger shape"},
    {"reshape", 1, OpCategory::Layout, reshapeType, gradReshape, nullptr,
     "the same elements in another shape"},
    {"transpose", 1, OpCategory::Layout, transposeType, nullptr, nullptr,
     "a matrix's rows as columns (added after differentiation, by the layout pass)"},
    {"softmax", 1, OpCategory::Row, rowType, gradSoftmax, nullptr,
     "softmax over the last axis"},
    {"log_softmax", 1, OpCategory::Row, rowType, gradLogSoftmax, nullptr,
     "log(softmax(x)) over the last axis, computed stably"},
    {"one_hot", 1, OpCategory::Layout, oneHotType, nullptr, nullptr,
     "integer labels to one-hot rows (attribute: classes in axis)"},
    {"conv2d", 2, OpCategory::Window, conv2dType, gradConv2D, nullptr,
     "2-d cross-correlation of images [N, C, H, W] with filters [O, C, KH, KW] "
     "(attributes: kernel, stride, pad)"},
    {"conv2d_grad_input", 2, OpCategory::Window, windowGradType, nullptr,
     nullptr, "the adjoint of conv2d's input, from the output's and the filters"},
    {"conv2d_grad_filter", 2, OpCategory::Window, windowGradType, nullptr,
     nullptr, "the adjoint of conv2d's filters, from the input and the output's"},
    {"max_pool2d", 1, OpCategory::Window, maxPoolType, gradMaxPool2D, nullptr,
     "maximum over each window of images [N, C, H, W] (attributes: kernel, "
     "stride, pad)"},
    {"max_pool2d_grad", 2, OpCategory::Window, windowGradType, nullptr, nullptr,
     "routes the output's adjoint to the first maximum of each window"},
    {"dropout", 1, OpCategory::Random, dropoutType, gradDropout, nullptr,
     "zeroes each element with probability p and scales the rest by 1/(1-p); "
     "the mask depends on the call's seed and step (attributes: p, stream)"},
    {"to_float", 1, OpCategory::Layout, toFloatType, nullptr, nullptr,
     "integers to floating point"},
    {"gather", 2, OpCategory::Index, gatherType, gradGather, nullptr,
     "rows of a table [V, D] picked by integer indices [N, ...]: [N, ..., D]; "
     "an index outside [0, V) gives a zero row"},
    {"scatter_add", 2, OpCategory::Index, scatterAddType, gradScatterAdd,
     nullptr,
     "the adjoint of gather: sums rows [N, ..., D] into a zero table at their "
     "indices"},
    {"concat", 2, OpCategory::Layout, concatType, gradConcat, nullptr,
     "joins two tensors along their last axis"},
    {"slice", 1, OpCategory::Layout, sliceType, gradSlice, nullptr,
     "a range of the last axis (attribute: offset; the width is the result's)"},
    {"unslice", 1, OpCategory::Layout, unsliceType, gradUnslice, nullptr,
     "places a tensor at an offset of the last axis of a zero tensor: the "
     "adjoint of slice"},
    {"lstm", 2, OpCategory::Recurrent, lstmType, gradLstm, nullptr,
     "an LSTM over time steps, from the input gates [N, T, 4H] (x W_ih^T + "
     "biases) and W_hh [4H, H]: per step h, c and the gates i, f, g, o "
     "[N, T, 6H], from a zero state"},
    {"lstm_grad", 3, OpCategory::Recurrent, lstmGradType, nullptr, nullptr,
     "the adjoint of lstm's input gates, a loop backwards in time"},
    {"lstm_grad_weight", 2, OpCategory::Recurrent, lstmGradWeightType, nullptr,
     nullptr, "the adjoint of lstm's W_hh, from the gates' adjoints"},
};

constexpr size_t NumOps = 0
#define NNC_OP(Enum, Name, Arity, Category) +1
#include "ir/Ops.def"
    ;
static_assert(sizeof(Table) / sizeof(Table[0]) == NumOps,
              "Ops.def and the table of Ops.cpp must list the same ops");

const OpInfo &opInfo(OpCode op) { return Table[static_cast<size_t>(op)]; }

} // namespace nnc::ir
