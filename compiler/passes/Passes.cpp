//===- Passes.cpp - Graph-level optimizations -----------------------------===//

#include "passes/Passes.h"
#include "ir/Ops.h"

#include <array>
#include <cmath>
#include <map>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace nnc {

using ir::Node;
using ir::OpCode;

namespace {

bool isConstant(const Node *n, double value) {
  return n->Op == OpCode::Constant && n->A.Value == value;
}

/// The node `n` can be replaced by, or null. Only identities that keep the
/// node's type are applied.
Node *identity(Node *n) {
  auto same = [&](Node *x) { return x->Ty == n->Ty ? x : nullptr; };
  const auto &ops = n->Operands;
  switch (n->Op) {
  case OpCode::Mul:
    if (isConstant(ops[1], 1))
      return same(ops[0]);
    if (isConstant(ops[0], 1))
      return same(ops[1]);
    return nullptr;
  case OpCode::Add:
    if (isConstant(ops[1], 0))
      return same(ops[0]);
    if (isConstant(ops[0], 0))
      return same(ops[1]);
    return nullptr;
  case OpCode::Sub:
  case OpCode::Div:
    if (isConstant(ops[1], n->Op == OpCode::Sub ? 0 : 1))
      return same(ops[0]);
    return nullptr;
  case OpCode::Neg:
    if (ops[0]->Op == OpCode::Neg)
      return same(ops[0]->Operands[0]);
    return nullptr;
  case OpCode::Broadcast:
  case OpCode::Reshape:
    return same(ops[0]);
  default:
    return nullptr;
  }
}

/// Folds an elementwise op of scalar constants into a constant value.
bool foldConstant(const Node *n, double &value) {
  const ir::OpInfo &info = ir::opInfo(n->Op);
  if (info.Category != ir::OpCategory::Elementwise)
    return false;
  double args[2] = {0, 0};
  for (size_t i = 0; i < n->Operands.size(); ++i) {
    if (n->Operands[i]->Op != OpCode::Constant)
      return false;
    args[i] = n->Operands[i]->A.Value;
  }
  double a = args[0], b = args[1];
  switch (n->Op) {
  case OpCode::Neg: value = -a; break;
  case OpCode::Add: value = a + b; break;
  case OpCode::Sub: value = a - b; break;
  case OpCode::Mul: value = a * b; break;
  case OpCode::Div: value = a / b; break;
  case OpCode::Pow: value = std::pow(a, b); break;
  case OpCode::Sqrt: value = std::sqrt(a); break;
  default: return false;
  }
  if (n->Ty.Elem == ir::DType::F32)
    value = static_cast<float>(value);
  return std::isfinite(value);
}

using CseKey = std::tuple<OpCode, std::vector<const Node *>, int64_t, int64_t,
                          bool, bool, bool, double, std::string,
                          std::vector<int64_t>, ir::DType,
                          std::array<int64_t, 4>>;

CseKey keyOf(const Node *n) {
  std::vector<const Node *> operands(n->Operands.begin(), n->Operands.end());
  const ir::Attrs &a = n->A;
  return {n->Op,    operands,      a.Axis, a.Offset,         a.TransA,
          a.TransB, a.KeepDim,     a.Value, a.Name,           n->Ty.Dims,
          n->Ty.Elem,
          std::array<int64_t, 4>{a.KernelH, a.KernelW, a.Stride, a.Pad}};
}

void verifyOrThrow(const ir::Graph &g, const char *pass) {
  std::string error = g.verify();
  if (!error.empty())
    throw std::logic_error(std::string("internal error: graph invalid after ") +
                           pass + ": " + error);
}

} // namespace

void simplify(ir::Graph &g) {
  std::unordered_map<const Node *, Node *> replaced;
  std::map<CseKey, Node *> seen;
  auto resolve = [&](Node *n) {
    auto it = replaced.find(n);
    return it == replaced.end() ? n : it->second;
  };
  // Replaced nodes stay in the graph, unused, until dead-code elimination.
  for (const auto &node : g.nodes()) {
    Node *n = node.get();
    for (Node *&operand : n->Operands)
      operand = resolve(operand);
    // An elementwise op reads a scalar operand as it is: broadcasting it to
    // the other operand's shape first only costs a buffer and a loop.
    if (ir::opInfo(n->Op).Category == ir::OpCategory::Elementwise &&
        n->Operands.size() == 2)
      for (int k = 0; k < 2; ++k) {
        Node *&operand = n->Operands[k];
        if (operand->Op == OpCode::Broadcast && operand->Operands[0]->Ty.Dims.empty() &&
            n->Operands[1 - k]->Ty.Dims == n->Ty.Dims)
          operand = operand->Operands[0];
      }
    double value;
    if (foldConstant(n, value)) {
      n->Op = OpCode::Constant;
      n->Operands.clear();
      n->A = ir::Attrs();
      n->A.Value = value;
      n->A.Target = ir::Type{n->Ty.Elem, {}};
    }
    if (Node *same = identity(n)) {
      replaced[n] = same;
      continue;
    }
    auto [it, inserted] = seen.emplace(keyOf(n), n);
    if (!inserted)
      replaced[n] = it->second;
  }
  for (ir::Store &store : g.stores())
    store.Value = resolve(store.Value);
  eliminateDeadCode(g);
}

void eliminateDeadCode(ir::Graph &g) {
  std::unordered_set<const Node *> live;
  for (const ir::Store &store : g.stores())
    live.insert(store.Value);
  const auto &nodes = g.nodes();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it)
    if (live.count(it->get()))
      for (const Node *operand : (*it)->Operands)
        live.insert(operand);
  std::vector<std::unique_ptr<Node>> kept;
  for (auto &node : g.releaseNodes())
    if (live.count(node.get()))
      kept.push_back(std::move(node));
  g.setNodes(std::move(kept));
}

void runPasses(ir::Graph &g,
               const std::function<void(const char *pass)> &afterPass) {
  verifyOrThrow(g, "construction");
  simplify(g);
  verifyOrThrow(g, "simplify");
  if (afterPass)
    afterPass("simplify");
}

} // namespace nnc
