//===- GpuSchedule.cpp - GPU kernels and their launch schedule ------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// How a graph is cut into GPU kernels: a kernel per node (with row
// segments, runs of updates and side-by-side pieces sharing kernels), the
// whole graph as one kernel, or the graph over blocks of rows (runGpu,
// runRowBlocks).
//
//===----------------------------------------------------------------------===//

#include "codegen/GraphLowering.h"

#include <algorithm>

namespace nnc::lowering {

void GraphLowering::beginKernel(const std::string &work) {
  // The name says what the kernel computes, for profilers and --emit=ptx:
  // nnc_train_step_k3_conv2d.
  KernelWork = work;
  beginFunction(Gpu->kernelModule(), "nnc_" + G.name() + "_k" + std::to_string(Kernels.size()) +
                                         (work.empty() ? "" : "_" + work));
  // The entry block ends in a branch, before which materialize() finds
  // the kernel's slots.
  auto *body = llvm::BasicBlock::Create(Ctx, "body", F);
  B.CreateBr(body);
  B.SetInsertPoint(body);
  Slots.clear();
  Computed.clear();
  LaunchIf = LaunchBlocks = nullptr;
  LaunchCondition = "runs";
  PerThread = false;
  Pieces = 0;
  OneBlock = false;
}

std::string GraphLowering::kernelWork(const Node *n) const {
  auto epilogue = ProductEpilogues.find(n);
  if (epilogue == ProductEpilogues.end())
    return ir::opInfo(n->Op).Name;
  return std::string(ir::opInfo(epilogue->second.first->Op).Name) +
         (epilogue->second.second ? "_bias" : "") + (ReluEpilogues.count(n) ? "_relu" : "") +
         (MaskEpilogues.count(n) ? "_mask" : "");
}

void GraphLowering::endKernel() {
  B.CreateRetVoid();
  addBufferScopes();
  Gpu->finishKernel(*F);
  // A kernel with one piece of work that needs no barrier between its
  // threads' parts runs on as many blocks as the device wants.
  Kernels.push_back({F, Pieces == 1 && !OneBlock, LaunchIf, LaunchBlocks, LaunchCondition});
}

void GraphLowering::runGpu() {
  // Each kernel's pieces of work end at a barrier of the block, so nodes
  // lowered one after another in a kernel on one block see each other's
  // results, as nodes in kernels launched one after another do.
  CallTy = getCallType(Ctx);
  planFusion();
  if (RowBlocks) {
    RowBlocksRefusal = planRowBlocks();
    if (!RowBlocksRefusal.empty())
      return;
  }
  if (!WholeGraph) {
    planRowSegments();
    planUpdateRuns();
    planSideBySide();
  }
  planImageChains();
  planWorkspace();
  if (RowBlocks)
    return runRowBlocks();
  if (WholeGraph)
    beginKernel();
  for (const Node *n : Order) {
    if (loweredElsewhere(n) || InUpdateRun.count(n))
      continue;
    if (auto run = UpdateRuns.find(n); run != UpdateRuns.end()) {
      const std::vector<std::vector<const Node *>> &updates = run->second;
      beginKernel(kernelWork(updates[0].back()) +
                  (updates.size() > 1 ? "_x" + std::to_string(updates.size()) : ""));
      lowerFlatUpdates(updates);
      endKernel();
      continue;
    }
    if (InRowSegment.count(n))
      continue;
    if (auto segment = RowSegments.find(n); segment != RowSegments.end()) {
      lowerRowSegment(segment->second.first, segment->second.second);
      continue;
    }
    if (InSideBySide.count(n))
      continue;
    if (auto units = SideBySide.find(n); units != SideBySide.end()) {
      lowerSideBySide(units->second);
      continue;
    }
    if (!WholeGraph)
      beginKernel(kernelWork(n));
    lower(n);
    if (!WholeGraph)
      endKernel();
  }
  for (const ir::Store &store : G.stores()) {
    auto inPlace = InPlace.find(store.Value);
    if (inPlace != InPlace.end() && inPlace->second == &store)
      continue;
    if (!WholeGraph)
      beginKernel("store");
    lowerStore(store);
    if (!WholeGraph)
      endKernel();
  }
  if (WholeGraph) {
    OneBlock = true;
    endKernel();
  }
}

std::string GraphLowering::planRowBlocks() {
  // A unit runs per row when it computes a batched value from the same rows
  // of its operands (or from values of no rows), so that each block can run
  // it on its own run of rows; a sum over the rows (a weight's or a bias's
  // gradient, a loss) runs per row too, each block summing its rows into a
  // partial sum. Values of no rows that the rows' work reads must be
  // scalars in registers (each kernel computes those afresh). What reads
  // the sums (the loss's mean, the optimizer's update) comes after, in a
  // kernel of its own on one block, and so must not be batched.
  auto name = [](const Node *n) { return std::string(ir::opInfo(n->Op).Name); };
  auto byRows = [](const Node *n) { return n->Ty.isBatched() && n->Ty.Dims[0] == ir::N; };
  auto readsBatched = [](const Node *n) {
    return std::any_of(n->Operands.begin(), n->Operands.end(),
                       [](const Node *o) { return o->Ty.isBatched(); });
  };
  auto isLeaf = [](const Node *n) { return ir::opInfo(n->Op).Category == ir::OpCategory::Leaf; };
  auto sumOverRows = [&](const Node *n) {
    return !isLeaf(n) && !n->Ty.isBatched() && readsBatched(n);
  };
  const auto &nodes = G.nodes();
  std::unordered_set<const Node *> perRow;
  for (const ir::Store &store : G.stores())
    if (store.Value->Ty.isBatched())
      perRow.insert(store.Value);
  for (auto node = nodes.rbegin(); node != nodes.rend(); ++node) {
    const Node *n = node->get();
    if (n->Ty.isBatched() || sumOverRows(n))
      perRow.insert(n);
    if (perRow.count(n))
      perRow.insert(n->Operands.begin(), n->Operands.end());
  }
  std::unordered_set<const Node *> afterSums;
  for (const auto &node : nodes)
    for (const Node *operand : node->Operands)
      if (sumOverRows(operand) || afterSums.count(operand))
        afterSums.insert(node.get());
  bool anyRows = false;
  for (const auto &node : nodes) {
    const Node *n = node.get();
    if (!perRow.count(n) || isLeaf(n))
      continue;
    if (afterSums.count(n))
      return name(n) + " reads a sum over the batch's rows";
    if (sumOverRows(n)) {
      bool rowsFirst = std::all_of(n->Operands.begin(), n->Operands.end(),
                                   [&](const Node *o) { return byRows(o); });
      bool ok =
          (n->Op == OpCode::MatMul && n->A.TransA && rowsFirst &&
           n->Operands[0]->Ty.Dims.size() == 2) ||
          (n->Op == OpCode::ReduceSum && rowsFirst && (n->A.Axis == 0 || n->Ty.Dims.empty())) ||
          (n->Op == OpCode::SumAll && rowsFirst);
      if (!ok)
        return name(n) + " sums over the batch's rows in a way the row blocks do not";
      if (computedBy(n) != n) // its loop would be another unit's, after the sums
        return name(n) + " sums over the batch's rows in the loop of what reads it";
      anyRows = true;
      continue;
    }
    if (!n->Ty.isBatched()) {
      if (!scalarInRegisters(n) && n->Op != OpCode::Reshape)
        return name(n) + " computes a value of no rows that the rows' work reads";
      continue;
    }
    if (!byRows(n))
      return name(n) + " has the batch in a dimension other than the first";
    for (const Node *operand : n->Operands)
      if (operand->Ty.isBatched() && !byRows(operand))
        return name(n) + " reads a value with the batch in a dimension other than the first";
    bool rowWise = false;
    switch (ir::opInfo(n->Op).Category) {
    case ir::OpCategory::Elementwise:
    case ir::OpCategory::Row:
      rowWise = true;
      break;
    case ir::OpCategory::MatMul:
      rowWise = !n->Operands[1]->Ty.isBatched();
      break;
    case ir::OpCategory::Reduce:
      rowWise = n->A.Axis != 0;
      break;
    case ir::OpCategory::Layout:
      rowWise = n->Op != OpCode::Transpose;
      break;
    default:
      break;
    }
    if (!rowWise)
      return name(n) + " is not computed row by row";
    anyRows = true;
  }
  if (!anyRows)
    return "nothing in it is computed per row";
  // The row kernel's units first, in their order, then the rest.
  auto runsPerRow = [&](const Node *n) {
    const Node *unit = leaderOf(computedBy(n));
    return isLeaf(unit) || perRow.count(unit) > 0;
  };
  std::stable_partition(Order.begin(), Order.end(), runsPerRow);
  RowUnits = std::count_if(Order.begin(), Order.end(), runsPerRow);
  for (size_t i = 0; i < Order.size(); ++i)
    Position[Order[i]] = int64_t(i);
  for (const Node *n : Order)
    if (sumOverRows(n))
      RowSums.push_back(n);
  return "";
}

void GraphLowering::forChunks(Value *first, Value *chunks, Value *step, Value *chunkRows,
                              const std::function<void()> &body) {
  loopRange(
      first, chunks, step,
      [&](Value *chunk) {
        RowBegin = B.CreateMul(chunk, chunkRows, "chunk.begin");
        RowCount = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, chunkRows,
                                           B.CreateSub(Batch, RowBegin), nullptr, "chunk.rows");
        // The chunk's values are found in a block of their own, first in the
        // chunk's code (see materialize).
        SlotBlock = B.GetInsertBlock();
        auto *chunkCode = llvm::BasicBlock::Create(Ctx, "chunk", F);
        B.CreateBr(chunkCode);
        B.SetInsertPoint(chunkCode);
        Slots.clear();
        Computed.clear();
        body();
        SlotBlock = nullptr;
      },
      false);
}

void GraphLowering::planUpdateRuns() {
  // A run ends before an update that reads a result of the run (its
  // operands, and theirs where they are computed where they are read).
  std::vector<std::vector<const Node *>> updates;
  const Node *head = nullptr;
  std::unordered_set<const Node *> updated;
  std::function<bool(const Node *)> readsUpdated = [&](const Node *n) {
    for (const Node *operand : n->Operands)
      if (updated.count(operand) ||
          ((Inlined.count(operand) || scalarInRegisters(operand)) && readsUpdated(operand)))
        return true;
    return false;
  };
  auto endRun = [&] {
    if (!updates.empty())
      UpdateRuns[head] = std::move(updates);
    updates.clear();
    updated.clear();
  };
  for (const Node *n : Order) {
    if (loweredElsewhere(n))
      continue;
    std::vector<const Node *> members = flatUpdate(n);
    if (members.empty() || std::any_of(members.begin(), members.end(), readsUpdated))
      endRun();
    if (members.empty())
      continue;
    if (updates.empty())
      head = n;
    else
      InUpdateRun.insert(n);
    updates.push_back(members);
    updated.insert(members.begin(), members.end());
  }
  endRun();
  std::unordered_map<const Node *, const Node *> runOf;
  for (auto &[first, run] : UpdateRuns)
    for (const std::vector<const Node *> &members : run)
      runOf[leaderOf(members.back())] = first;
  addKernelSpans(runOf);
}

void GraphLowering::addKernelSpans(
    const std::unordered_map<const Node *, const Node *> &unitKernels) {
  // A kernel's units are next to each other, but for the nodes that no
  // kernel computes (leaves, scalars in registers) between them.
  std::unordered_map<const Node *, std::pair<int64_t, int64_t>> spans;
  for (int64_t p = 0; p < int64_t(Order.size()); ++p) {
    auto kernel = unitKernels.find(leaderOf(computedBy(Order[p])));
    if (kernel == unitKernels.end())
      continue;
    std::pair<int64_t, int64_t> &span = spans.try_emplace(kernel->second, p, p).first->second;
    span = {std::min(span.first, p), std::max(span.second, p)};
  }
  for (auto &[kernel, span] : spans)
    KernelSpans.push_back(span);
}

bool GraphLowering::isWidePiece(const Node *n) const {
  if (!Gpu || WholeGraph || Groups.count(n) || InPlace.count(n) || UpdateRuns.count(n) ||
      InUpdateRun.count(n) || RowSegments.count(n) || InRowSegment.count(n))
    return false;
  if (ir::opInfo(n->Op).Category == ir::OpCategory::Reduce &&
      (n->Op == OpCode::SumAll || n->Ty.Dims.empty())) // lowerFullSums's
    return fullSumChunks({n});
  if (n->Op == OpCode::ReduceSum)
    return isColumnSum(n);
  const Node *product = productOf(n);
  switch (product->Op) {
  case OpCode::Conv2D:
  case OpCode::Conv2DGradInput:
  case OpCode::Conv2DGradFilter:
    return true;
  case OpCode::MatMul:
    return isTiledMatMul(product);
  default:
    return false;
  }
}

void GraphLowering::planSideBySide() {
  std::unordered_map<const Node *, std::vector<const Node *>> members;
  for (const Node *n : Order)
    members[leaderOf(computedBy(n))].push_back(n);
  // Whether node n reads a result of the units in `set` (through the nodes
  // that have no code of their own: inlined, scalars, reshapes).
  std::unordered_set<const Node *> set;
  std::function<bool(const Node *)> readsSet = [&](const Node *n) {
    for (const Node *operand : n->Operands)
      if (set.count(leaderOf(computedBy(operand))) ||
          (loweredElsewhere(operand) && readsSet(operand)))
        return true;
    return false;
  };
  std::vector<const Node *> units;
  bool heavy = false; // whether one of them is (see GpuLightPiece)
  std::unordered_map<const Node *, const Node *> kernelOf;
  auto endSet = [&] {
    if (units.size() > 1) {
      for (const Node *unit : units)
        kernelOf[unit] = units.front();
      InSideBySide.insert(units.begin() + 1, units.end());
      SideBySide[units.front()] = std::move(units);
    }
    units.clear();
    set.clear();
    heavy = false;
  };
  for (const Node *n : Order) {
    if (loweredElsewhere(n))
      continue;
    bool piece = isWidePiece(n);
    bool heavyPiece = piece && ir::opInfo(n->Op).Category != ir::OpCategory::Reduce &&
                      productWorkPerRow(productOf(n)) > GpuLightPiece;
    if (!piece || (heavy && heavyPiece) ||
        std::any_of(members[n].begin(), members[n].end(), readsSet))
      endSet();
    if (!piece)
      continue;
    units.push_back(n);
    set.insert(n);
    heavy = heavy || heavyPiece;
  }
  endSet();
  addKernelSpans(kernelOf);
}

void GraphLowering::planRowSegments() {
  auto unitOf = [&](const Node *n) { return leaderOf(computedBy(n)); };
  auto byRows = [](const Node *n) { return n->Ty.isBatched() && n->Ty.Dims[0] == ir::N; };
  // Order's nodes as runs of one unit's nodes (a unit's nodes are next to
  // each other, but where the schedule fell back to the graph's order).
  struct Item {
    int64_t Begin, End;
    const Node *Unit;
  };
  std::vector<Item> items;
  std::unordered_map<const Node *, int> runsOf;
  for (int64_t p = 0; p < int64_t(Order.size());) {
    const Node *unit = unitOf(Order[p]);
    int64_t end = p + 1;
    while (end < int64_t(Order.size()) && unitOf(Order[end]) == unit)
      ++end;
    items.push_back({p, end, unit});
    ++runsOf[unit];
    p = end;
  }
  // The elements of a row of the widest batched value that a unit's nodes
  // compute or read, or 0 where the unit does not compute each row from
  // the same rows of its operands, in one parallel loop over the rows'
  // elements (or over the rows) that a chunk's rows can stand for.
  auto rowWidth = [&](const Item &item) -> int64_t {
    const Node *unit = item.Unit;
    if (loweredElsewhere(unit) || runsOf[unit] != 1 || Groups.count(unit) ||
        ProductEpilogues.count(unit) || !byRows(unit))
      return 0;
    switch (ir::opInfo(unit->Op).Category) {
    case ir::OpCategory::Elementwise:
    case ir::OpCategory::Row:
      break;
    case ir::OpCategory::Reduce:
      if (unit->Op != OpCode::ReduceSum || unit->A.Axis == 0)
        return 0;
      break;
    case ir::OpCategory::Layout:
      if (unit->Op != OpCode::OneHot && unit->Op != OpCode::ToFloat &&
          unit->Op != OpCode::Broadcast)
        return 0;
      break;
    default:
      return 0;
    }
    int64_t width = 0;
    // A reshape reads its operand's rows as its own when both have the
    // rows first.
    std::function<bool(const Node *)> rowsFirst = [&](const Node *n) {
      if (!n->Ty.isBatched())
        return true;
      width = std::max(width, n->Ty.staticElements());
      return byRows(n) && (n->Op != OpCode::Reshape || rowsFirst(n->Operands[0]));
    };
    for (int64_t p = item.Begin; p < item.End; ++p) {
      if (!rowsFirst(Order[p]))
        return 0;
      for (const Node *operand : Order[p]->Operands)
        if (!rowsFirst(operand))
          return 0;
    }
    return width <= GpuSegmentElements ? width : 0;
  };

  // A segment starts at a unit that computes rows so and takes in the
  // next such units. The other units between them (a loss's sum over the
  // rows) move after it, and so does what reads a moved unit's result
  // (directly, or through scalars and reshapes computed where read).
  // Moving a unit later is safe: the units it passes read none of its
  // results, and overwrite nothing it reads (they write batched values
  // only; the memory plan comes after; an in-place update already runs
  // after every reader of the old values). A segment passes at most
  // MaxPassed units, so that buffers' lives grow little.
  constexpr int MaxPassed = 4;
  std::vector<std::pair<size_t, size_t>> segmentItems; // [first, end) in items
  for (size_t i = 0; i < items.size();) {
    int64_t width = rowWidth(items[i]);
    if (!width) {
      ++i;
      continue;
    }
    std::vector<size_t> front{i}, back;
    std::vector<const Node *> units{items[i].Unit};
    std::unordered_set<const Node *> moved;
    // Whether node n reads a moved node.
    std::function<bool(const Node *)> readsMoved = [&](const Node *n) {
      for (const Node *operand : n->Operands)
        if (moved.count(operand) ||
            (unitOf(operand) != unitOf(n) && loweredElsewhere(unitOf(operand)) &&
             ir::opInfo(operand->Op).Category != ir::OpCategory::Leaf && readsMoved(operand)))
          return true;
      return false;
    };
    size_t frontCut = 1, backCut = 0;
    int passed = 0;
    for (size_t j = i + 1; j < items.size() && passed < MaxPassed; ++j) {
      const Item &item = items[j];
      bool late = false;
      for (int64_t p = item.Begin; p < item.End && !late; ++p)
        late = readsMoved(Order[p]);
      int64_t itemWidth = late ? 0 : rowWidth(item);
      if (itemWidth) {
        front.push_back(j);
        units.push_back(item.Unit);
        width = std::max(width, itemWidth);
        frontCut = front.size();
        backCut = back.size();
      } else if (loweredElsewhere(item.Unit) && !late) {
        front.push_back(j);
      } else {
        back.push_back(j);
        for (int64_t p = item.Begin; p < item.End; ++p)
          moved.insert(Order[p]);
        passed += !loweredElsewhere(item.Unit);
      }
    }
    if (units.size() < 2) {
      ++i;
      continue;
    }
    // Items [i, last] become the segment's, then the moved ones, which may
    // start or join the next segment.
    std::vector<Item> rearranged;
    for (size_t k = 0; k < frontCut; ++k)
      rearranged.push_back(items[front[k]]);
    for (size_t k = 0; k < backCut; ++k)
      rearranged.push_back(items[back[k]]);
    std::copy(rearranged.begin(), rearranged.end(), items.begin() + i);
    segmentItems.push_back({i, i + frontCut});
    int64_t chunkRows = std::clamp<int64_t>(GpuSegmentElements / width, 1, GpuBlock);
    InRowSegment.insert(units.begin() + 1, units.end());
    const Node *head = units.front();
    RowSegments[head] = {std::move(units), chunkRows};
    i += frontCut;
  }
  std::vector<const Node *> order;
  std::vector<int64_t> itemStart;
  for (const Item &item : items) {
    itemStart.push_back(int64_t(order.size()));
    order.insert(order.end(), Order.begin() + item.Begin, Order.begin() + item.End);
  }
  itemStart.push_back(int64_t(order.size()));
  for (auto [first, end] : segmentItems)
    KernelSpans.push_back({itemStart[first], itemStart[end] - 1});
  Order = std::move(order);
  for (size_t i = 0; i < Order.size(); ++i)
    Position[Order[i]] = int64_t(i);
}

void GraphLowering::lowerSideBySide(const std::vector<const Node *> &units) {
  std::string work;
  for (const Node *unit : units)
    work += (work.empty() ? "" : "_") + kernelWork(unit);
  beginKernel(work);
  std::vector<std::function<void()>> runs;
  RunsAfter = &runs;
  GpuTarget *grid = Gpu;
  ReversedBlocksTarget reversed(*grid);
  for (size_t i = 0; i < units.size(); ++i) {
    Gpu = i % 2 ? &reversed : grid;
    lower(units[i]);
  }
  Gpu = grid;
  RunsAfter = nullptr;
  if (Pieces != int(units.size()) || OneBlock)
    throw std::logic_error("internal error: side-by-side units that are not a wide piece each");
  // No piece reads another's results: the kernel is as wide as one piece.
  Pieces = 1;
  for (const std::function<void()> &addRuns : runs)
    addRuns();
  endKernel();
}

void GraphLowering::lowerRowSegment(const std::vector<const Node *> &units, int64_t chunkRows) {
  // As in the row kernel (runRowBlocks), each block's parallel loops are
  // among its own threads, and each chunk finds its slots afresh; but the
  // values are the batch's, in the workspace, at the chunk's rows.
  GpuTarget *grid = Gpu;
  BlockLocalTarget blockLocal(*grid);
  Gpu = &blockLocal;
  beginKernel(kernelWork(units.front()) + "_x" + std::to_string(units.size()));
  Value *chunks, *blocks, *block;
  {
    llvm::IRBuilder<> entry(Entry->getTerminator());
    chunks = segmentChunks(entry, Batch, chunkRows);
    blocks = segmentBlocks(entry, Batch, chunkRows);
    block = entry.CreateZExt(grid->block(entry), entry.getInt64Ty(), "segment.block");
  }
  forChunks(block, chunks, blocks, i64(chunkRows), [&] {
    for (const Node *unit : units)
      lower(unit);
  });
  Slots.clear();
  Computed.clear();
  OneBlock = true;
  LaunchBlocks = [chunkRows](llvm::IRBuilder<> &b, Value *rows) {
    return segmentBlocks(b, rows, chunkRows);
  };
  endKernel();
  Gpu = grid;
  RowBegin = RowCount = nullptr;
}

void GraphLowering::runRowBlocks() {
  auto storedHere = [&](const ir::Store &store, bool batched) {
    auto inPlace = InPlace.find(store.Value);
    return store.Value->Ty.isBatched() == batched &&
           (inPlace == InPlace.end() || inPlace->second != &store);
  };
  // The units at Order's positions [begin, end), then the stores of
  // batched values or of the others, in one kernel on each block.
  auto lowerUnits = [&](int64_t begin, int64_t end, bool batched) {
    for (int64_t p = begin; p < end; ++p)
      if (!loweredElsewhere(Order[p]))
        lower(Order[p]);
    for (const ir::Store &store : G.stores())
      if (storedHere(store, batched))
        lowerStore(store);
    OneBlock = true;
  };
  // The row kernel: block b runs every unit that runs per row on chunks b,
  // b + blocks, ... of the rows, one after another, as a one-block kernel
  // runs them on the whole batch. Each chunk's values are in the block's own
  // memory (its first chunk's rows of the per-row workspace), so that the
  // blocks need not keep in step; buffers that share memory share only a
  // block's own. The chunk's sums over the rows go to the block's sums of a
  // chunk, which it adds to its partial sums (with one block, the sums), in
  // chunk order.
  std::vector<int64_t> ends;
  int64_t total = 0;
  for (const Node *n : RowSums)
    ends.push_back(total += n->Ty.staticElements());
  // The sums' element i: sum k's element j, and its place in memory.
  auto sumsAt = [&](Value *i, const std::function<void(const Node *, Value *)> &body) {
    segmentAt(i, ends, [&](size_t k, Value *j) { body(RowSums[k], j); });
  };
  auto finalSum = [&](const Node *n) {
    return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Offsets.at(n).second));
  };
  int64_t maxBlocks = MaxRowBlocks;
  GpuTarget *grid = Gpu;
  BlockLocalTarget blockLocal(*grid);
  Gpu = &blockLocal;
  beginKernel("rows");
  Value *chunks, *chunkRows, *blocks;
  {
    llvm::IRBuilder<> entry(Entry->getTerminator());
    std::tie(chunks, chunkRows) = rowChunks(entry, Batch);
    blocks = rowBlocks(entry, Batch, maxBlocks);
    RowBlock = entry.CreateZExt(grid->block(entry), entry.getInt64Ty(), "row.block");
    RowRegion = entry.CreateAdd(
        i64(Size.Fixed), entry.CreateMul(entry.CreateMul(RowBlock, chunkRows), i64(Size.PerRow)),
        "row.region");
  }
  Value *oneBlock = B.CreateICmpEQ(blocks, i64(1));
  auto accumulator = [&](const Node *n, Value *j) {
    Value *sums = B.CreateSelect(oneBlock, finalSum(n), rowBlockSum(n, RowPartials.at(n)));
    return B.CreateInBoundsGEP(elemType(n->Ty.Elem), sums, j);
  };
  if (total)
    parallelFor(i64(total), [&](Value *i) {
      sumsAt(i, [&](const Node *n, Value *j) {
        B.CreateStore(llvm::ConstantFP::get(elemType(n->Ty.Elem), 0), accumulator(n, j));
      });
    });
  forChunks(RowBlock, chunks, blocks, chunkRows, [&] {
    lowerUnits(0, RowUnits, true);
    if (total)
      parallelFor(i64(total), [&](Value *i) {
        sumsAt(i, [&](const Node *n, Value *j) {
          llvm::Type *ft = elemType(n->Ty.Elem);
          Value *chunkSum =
              B.CreateLoad(ft, B.CreateInBoundsGEP(ft, rowBlockSum(n, RowChunkSums.at(n)), j));
          Value *to = accumulator(n, j);
          B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, to), chunkSum), to);
        });
      });
  });
  Slots.clear();
  Computed.clear();
  LaunchBlocks = [maxBlocks](llvm::IRBuilder<> &b, Value *rows) {
    return rowBlocks(b, rows, maxBlocks);
  };
  endKernel();
  Gpu = grid;
  RowBlock = RowRegion = RowBegin = RowCount = nullptr;

  // The blocks' partial sums, added in block order: a thread per element
  // of every sum.
  if (total) {
    beginKernel("row_sums");
    LaunchIf = [maxBlocks](llvm::IRBuilder<> &b, Value *rows) {
      return b.CreateICmpUGT(rowBlocks(b, rows, maxBlocks), b.getInt64(1));
    };
    Value *partialSums = rowBlocks(B, Batch, maxBlocks);
    parallelFor(i64(total), [&](Value *i) {
      sumsAt(i, [&](const Node *n, Value *j) {
        // A loss's sum, of many terms of similar size, adds in double.
        llvm::Type *ft = elemType(n->Ty.Elem);
        llvm::Type *acc = n->Op == OpCode::SumAll ? B.getDoubleTy() : ft;
        Value *partials = B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(RowPartials.at(n)));
        llvm::AllocaInst *sum = entryAlloca(acc);
        B.CreateStore(llvm::ConstantFP::get(acc, 0), sum);
        forRange(partialSums, [&](Value *block) {
          Value *index = B.CreateAdd(B.CreateMul(block, i64(n->Ty.staticElements())), j);
          Value *partial = B.CreateLoad(ft, B.CreateInBoundsGEP(ft, partials, index));
          B.CreateStore(B.CreateFAdd(B.CreateLoad(acc, sum), B.CreateFPCast(partial, acc)), sum);
        });
        B.CreateStore(B.CreateFPCast(B.CreateLoad(acc, sum), ft), at(n, j));
      });
    });
    endKernel();
  }

  // What reads the sums, on one block (the same as the whole graph's
  // kernel would), and the stores of values of no rows.
  bool rest = std::any_of(Order.begin() + RowUnits, Order.end(),
                          [&](const Node *n) { return !loweredElsewhere(n); }) ||
              std::any_of(G.stores().begin(), G.stores().end(),
                          [&](const ir::Store &store) { return storedHere(store, false); });
  if (!rest)
    return;
  beginKernel("finish");
  lowerUnits(RowUnits, int64_t(Order.size()), false);
  endKernel();
}

} // namespace nnc::lowering
