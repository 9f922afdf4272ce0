//===- Passes.h - Graph-level optimizations ---------------------*- C++ -*-===//
#ifndef NNC_PASSES_PASSES_H
#define NNC_PASSES_PASSES_H

#include "ir/Graph.h"

#include <functional>

namespace nnc {

/// Folds algebraic identities (x * 1, x + 0, broadcasts and reshapes to the
/// same shape, constant arithmetic) and merges nodes that compute the same
/// value (CSE), in one forward sweep.
void simplify(ir::Graph &g);

/// Removes nodes that no store depends on.
void eliminateDeadCode(ir::Graph &g);

/// Stores batched matrices of fewer than 16 columns transposed, [f, N],
/// where the ops that compute and read them allow it (Layout.cpp): for the
/// CPU's training graphs, whose stores are parameters, state and the loss.
void useBatchMinorLayout(ir::Graph &g);

/// Runs the pass pipeline; verifies the graph after every pass and calls
/// `afterPass(name)` (for --print-after-all) when given.
void runPasses(ir::Graph &g,
               const std::function<void(const char *pass)> &afterPass = {});

} // namespace nnc

#endif // NNC_PASSES_PASSES_H
