//===- Layout.cpp - Batch-minor layout of narrow batched values -----------===//
//
// A batched matrix [N, f] of fewer columns than a vector has lanes keeps
// most lanes idle in every op that reads it along its rows: a dense layer of
// 5 outputs runs at 5/16 of the machine's peak with AVX-512. Stored
// transposed, [f, N], its rows are as long as the batch, and its products
// (C' = W X', a few rows along the batch), elementwise ops and sums fill
// whole vectors. This pass computes values in that layout where the ops
// allow it:
//
//   - a product of a narrow batched matrix and a parameter: C = X op(W)
//     becomes C' = op(W)^T X';
//   - elementwise ops of such values, with a bias [f] read as a column
//     [f, 1] and scalars as they are;
//
// and rewrites the ops that read them without needing rows: sums over the
// batch (reduce_sum, sum_all) and a weight's gradient X^T Y, which becomes
// X' Y'^T, dot products along the batch. A transpose converts at the
// boundaries: an input read in the new layout, a value whose reader needs
// rows (for a matrix of one column, a reshape: the same elements in the
// same order). A layer of one output follows only a layer already in the
// new layout: linreg's stays one loop over its rows. The training graph's
// stores are parameters, state and the loss, so the rewritten values stay
// inside it.
//
//===----------------------------------------------------------------------===//

#include "ir/Ops.h"
#include "passes/Passes.h"

#include <stdexcept>
#include <unordered_map>

namespace nnc {

using ir::Node;
using ir::OpCode;

namespace {

/// Batched matrices of fewer columns than this (one AVX-512 vector of
/// float) are narrow.
constexpr int64_t NarrowColumns = 16;

bool isNarrow(const Node *n) {
  const std::vector<int64_t> &dims = n->Ty.Dims;
  return n->Ty.Elem != ir::DType::I32 && dims.size() == 2 && dims[0] == ir::N &&
         dims[1] < NarrowColumns;
}

/// Whether x is a matrix of one row or one column, whose transpose has the
/// same elements in the same order.
bool isVector(const Node *x) {
  const std::vector<int64_t> &dims = x->Ty.Dims;
  return dims.size() == 2 && (dims[0] == 1 || dims[1] == 1);
}

class BatchMinor {
public:
  explicit BatchMinor(ir::Graph &g) : G(g) {}

  void run() {
    std::vector<Node *> original;
    for (const auto &node : G.nodes())
      original.push_back(node.get());
    for (Node *n : original) {
      if (isNarrow(n))
        if (Node *m = computeMinor(n)) {
          Minor[n] = m;
          continue;
        }
      if (Node *r = readMinor(n)) {
        Row[n] = r;
        continue;
      }
      for (Node *&operand : n->Operands)
        operand = row(operand);
      Row[n] = n;
    }
    for (ir::Store &store : G.stores())
      store.Value = row(store.Value);
    sortTopologically();
    eliminateDeadCode(G);
    std::string error = G.verify();
    if (!error.empty())
      throw std::logic_error("internal error: graph invalid after the layout pass: " + error);
  }

private:
  /// n's value in the graph's own layout.
  Node *row(Node *n) {
    auto it = Row.find(n);
    if (it != Row.end())
      return it->second;
    return Row[n] = transpose(Minor.at(n));
  }

  /// Narrow n's value transposed, [f, N].
  Node *minor(Node *n) {
    auto it = Minor.find(n);
    if (it != Minor.end())
      return it->second;
    return Minor[n] = transpose(row(n));
  }

  Node *transpose(Node *x) {
    if (!isVector(x))
      return G.unary(OpCode::Transpose, x);
    ir::Attrs to;
    to.Target = ir::Type{x->Ty.Elem, {x->Ty.Dims[1], x->Ty.Dims[0]}};
    return G.create(OpCode::Reshape, {x}, to);
  }

  /// A node computing narrow n in batch-minor layout, or null.
  Node *computeMinor(Node *n) {
    const std::vector<int64_t> &dims = n->Ty.Dims;
    if (n->Op == OpCode::MatMul) {
      Node *x = n->Operands[0], *w = n->Operands[1];
      if (n->A.TransA || !isNarrow(x) || w->Ty.isBatched() || w->Ty.Dims.size() != 2)
        return nullptr;
      // A layer of one output (linreg's) is one loop with its loss and
      // gradients in the graph's own layout; it follows only a layer that
      // is batch-minor already.
      if (dims[1] == 1 && !Minor.count(x))
        return nullptr;
      // X W^T = (W X')^T; X W = (W^T X')^T.
      ir::Attrs attrs;
      attrs.TransA = !n->A.TransB;
      return G.create(OpCode::MatMul, {row(w), minor(x)}, attrs);
    }
    if (ir::opInfo(n->Op).Category != ir::OpCategory::Elementwise)
      return nullptr;
    bool readsMinor = false;
    for (Node *operand : n->Operands) {
      const ir::Type &type = operand->Ty;
      if (type.Dims == dims && !isNarrow(operand))
        return nullptr;
      if (type.Dims == dims)
        readsMinor |= Minor.count(operand) > 0;
      else if (type.isBatched() ||
               (type.staticElements() != 1 && type.Dims != std::vector<int64_t>{dims[1]} &&
                type.Dims != std::vector<int64_t>{1, dims[1]}))
        return nullptr;
    }
    // Only where an operand is in the new layout already: an op of row-major
    // operands stays as it is, rather than transposing them.
    if (!readsMinor)
      return nullptr;
    std::vector<Node *> operands;
    for (Node *operand : n->Operands) {
      if (operand->Ty.Dims == dims) {
        operands.push_back(minor(operand));
      } else if (operand->Ty.staticElements() == 1) {
        operands.push_back(row(operand));
      } else { // a vector of the columns: a column of the rows
        ir::Attrs column;
        column.Target = ir::Type{operand->Ty.Elem, {dims[1], 1}};
        operands.push_back(G.create(OpCode::Reshape, {row(operand)}, column));
      }
    }
    return G.create(n->Op, operands, n->A);
  }

  /// A node computing n (not itself narrow or not rewritten) from the
  /// batch-minor values it reads, or null.
  Node *readMinor(Node *n) {
    auto inMinor = [&](Node *x) { return isNarrow(x) && Minor.count(x) > 0; };
    switch (n->Op) {
    case OpCode::ReduceSum: {
      Node *x = n->Operands[0];
      if (!inMinor(x) || n->A.KeepDim)
        return nullptr;
      ir::Attrs attrs = n->A;
      attrs.Axis = 1 - n->A.Axis;
      return G.create(OpCode::ReduceSum, {minor(x)}, attrs);
    }
    case OpCode::SumAll:
      return inMinor(n->Operands[0]) ? G.create(OpCode::SumAll, {minor(n->Operands[0])}, n->A)
                                     : nullptr;
    case OpCode::MatMul: {
      // X^T Y over the batch = X' Y'^T: dot products along the batch.
      Node *x = n->Operands[0], *y = n->Operands[1];
      if (!n->A.TransA || n->A.TransB || !isNarrow(x) || !isNarrow(y) ||
          (!inMinor(x) && !inMinor(y)))
        return nullptr;
      ir::Attrs attrs;
      attrs.TransB = true;
      return G.create(OpCode::MatMul, {minor(x), minor(y)}, attrs);
    }
    default:
      return nullptr;
    }
  }

  /// Puts every node after its operands: the nodes this pass created were
  /// appended at the end. Depth first, in the present order otherwise.
  void sortTopologically() {
    std::vector<std::unique_ptr<Node>> nodes = G.releaseNodes();
    std::unordered_map<const Node *, size_t> index;
    for (size_t i = 0; i < nodes.size(); ++i)
      index[nodes[i].get()] = i;
    std::vector<bool> placed(nodes.size(), false);
    std::vector<std::unique_ptr<Node>> sorted;
    for (size_t root = 0; root < nodes.size(); ++root) {
      // (node, next operand to visit)
      std::vector<std::pair<size_t, size_t>> stack{{root, 0}};
      while (!stack.empty()) {
        auto &[i, next] = stack.back();
        if (placed[i]) {
          stack.pop_back();
          continue;
        }
        const std::vector<Node *> &operands = nodes[i]->Operands;
        if (next < operands.size()) {
          size_t operand = index.at(operands[next++]);
          if (!placed[operand])
            stack.push_back({operand, 0});
          continue;
        }
        placed[i] = true;
        sorted.push_back(std::move(nodes[i]));
        stack.pop_back();
      }
    }
    G.setNodes(std::move(sorted));
  }

  ir::Graph &G;
  std::unordered_map<const Node *, Node *> Minor, Row;
};

} // namespace

void useBatchMinorLayout(ir::Graph &g) { BatchMinor(g).run(); }

} // namespace nnc
