//===- Lowering.cpp - Tensor IR graphs to LLVM functions ------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// GraphLowering's planning (fusion, the order of the units, image chains,
// the workspace), its loops on either target, and the lowering of
// elementwise ops, row ops (softmax and its kin), one_hot, transposes,
// dropout and stores. See GraphLowering.h.
//
//===----------------------------------------------------------------------===//

#include "codegen/GraphLowering.h"

#include "llvm/Analysis/ValueTracking.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/MDBuilder.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <set>
#include <stdexcept>

namespace nnc {

llvm::StructType *getCallType(llvm::LLVMContext &context) {
  llvm::Type *ptr = llvm::PointerType::getUnqual(context);
  llvm::Type *i64 = llvm::Type::getInt64Ty(context);
  llvm::Type *f64 = llvm::Type::getDoubleTy(context);
  return llvm::StructType::get(context,
                               {ptr, ptr, ptr, ptr, ptr, ptr, i64, f64, i64, f64, i64, ptr, ptr});
}

} // namespace nnc

namespace nnc::lowering {

void GraphLowering::forRange(Value *count, const std::function<void(Value *)> &body) {
  forRange(i64(0), count, body);
}

void GraphLowering::forRange(Value *begin, Value *end, const std::function<void(Value *)> &body,
                             bool rolled) {
  if (Gpu && !PerThread)
    return onOneThread([&] { loopRange(begin, end, i64(1), body, rolled); });
  loopRange(begin, end, i64(1), body, rolled);
}

void GraphLowering::parallelFor(Value *count, const std::function<void(Value *)> &body) {
  if (!Gpu || PerThread)
    return forRange(count, body);
  ++Pieces;
  Value *blocks = B.CreateZExt(Gpu->blocks(B), B.getInt64Ty());
  PerThread = true;
  loopRange(globalThread(), count, B.CreateMul(blocks, i64(GpuBlock)), body, false);
  PerThread = false;
  Gpu->barrier(B);
}

void GraphLowering::independentFor(Value *count, const std::function<void(Value *)> &body) {
  if (Gpu)
    return forRange(count, body);
  llvm::BasicBlock *last = &F->back();
  llvm::BranchInst *latch = emitLoop(B, i64(0), count, i64(1), body);
  llvm::MDNode *group = llvm::MDNode::getDistinct(Ctx, {});
  for (auto block = std::next(last->getIterator()); block != F->end(); ++block)
    for (llvm::Instruction &inst : *block)
      if (inst.mayReadOrWriteMemory()) {
        // An access of an inner independent loop is in its groups too: a
        // group is an empty node, several are a list of them.
        std::vector<llvm::Metadata *> groups;
        if (llvm::MDNode *inner = inst.getMetadata(llvm::LLVMContext::MD_access_group)) {
          if (inner->getNumOperands() == 0)
            groups.push_back(inner);
          groups.insert(groups.end(), inner->op_begin(), inner->op_end());
        }
        groups.push_back(group);
        inst.setMetadata(llvm::LLVMContext::MD_access_group,
                         groups.size() == 1 ? group : llvm::MDNode::get(Ctx, groups));
      }
  llvm::MDNode *parallel =
      llvm::MDNode::get(Ctx, {llvm::MDString::get(Ctx, "llvm.loop.parallel_accesses"), group});
  llvm::MDNode *id = llvm::MDNode::getDistinct(Ctx, {nullptr, parallel});
  id->replaceOperandWith(0, id);
  latch->setMetadata(llvm::LLVMContext::MD_loop, id);
}

void GraphLowering::stepsFor(Value *begin, Value *end, const std::function<void(Value *)> &body) {
  if (!Gpu || PerThread)
    return forRange(begin, end, body);
  ++Pieces;
  OneBlock = true;
  loopRange(begin, end, i64(1), body, false);
}

void GraphLowering::threadedFor(int64_t count, const std::function<void(Value *)> &body) {
  // The worker gets the call's pointer, which every thread only reads, and
  // its share [begin, end) of the range (nnc_parallel_for). Its slots and
  // cached values are its own; the caller's are back after it.
  auto *type =
      llvm::FunctionType::get(B.getVoidTy(), {B.getPtrTy(), B.getInt64Ty(), B.getInt64Ty()}, false);
  auto *worker = llvm::Function::Create(type, llvm::Function::InternalLinkage,
                                        F->getName() + ".w" + std::to_string(Workers++), M);
  worker->addFnAttr(llvm::Attribute::NoUnwind);
  worker->addParamAttr(0, llvm::Attribute::NoAlias);
  auto callerF = F;
  auto callerEntry = Entry;
  auto callerCall = Call;
  auto callerBatch = Batch;
  auto callerWorkspace = Workspace;
  auto callerBuffers = std::move(Buffers);
  auto callerSlots = std::move(Slots);
  auto callerComputed = std::move(Computed);
  auto callerAccesses = std::move(UnitAccesses);
  llvm::IRBuilderBase::InsertPoint callerPoint = B.saveIP();
  F = worker;
  Call = worker->getArg(0);
  Entry = llvm::BasicBlock::Create(Ctx, "entry", F);
  B.SetInsertPoint(Entry);
  Buffers.clear();
  Slots.clear();
  Computed.clear();
  UnitAccesses.clear();
  loadCall();
  // The entry block ends in a branch, before which materialize() finds
  // the worker's slots.
  auto *start = llvm::BasicBlock::Create(Ctx, "body", F);
  B.CreateBr(start);
  B.SetInsertPoint(start);
  OnWorker = true;
  recordAccesses([&] { loopRange(worker->getArg(1), worker->getArg(2), i64(1), body, false); });
  OnWorker = false;
  B.CreateRetVoid();
  addBufferScopes();

  F = callerF;
  Entry = callerEntry;
  Call = callerCall;
  Batch = callerBatch;
  Workspace = callerWorkspace;
  Buffers = std::move(callerBuffers);
  Slots = std::move(callerSlots);
  Computed = std::move(callerComputed);
  UnitAccesses = std::move(callerAccesses);
  B.restoreIP(callerPoint);
  llvm::FunctionCallee parallelFor = M.getOrInsertFunction(
      "nnc_parallel_for", B.getVoidTy(), B.getInt64Ty(), B.getPtrTy(), B.getPtrTy());
  B.CreateCall(parallelFor, {i64(count), worker, Call});
}

void GraphLowering::forImages(int64_t images, const std::function<void(Value *, Value *)> &body,
                              const std::function<void(Value *)> &groupStart) {
  if (ImageRow) { // in an image chain: its one image, in its group
    if (groupStart)
      groupStart(ImageGroup);
    return body(i64(0), ImageGroup);
  }
  threadedFor(ImageGroups, [&](Value *group) {
    if (groupStart)
      groupStart(group);
    // Group g takes images [g * n / G, (g + 1) * n / G).
    Value *n = extent(images);
    Value *begin = B.CreateUDiv(B.CreateMul(group, n), i64(ImageGroups));
    Value *end = B.CreateUDiv(B.CreateMul(B.CreateAdd(group, i64(1)), n), i64(ImageGroups));
    forRange(begin, end, [&](Value *img) { body(img, group); });
  });
}

void GraphLowering::onOneThread(const std::function<void()> &body) {
  ++Pieces;
  OneBlock = true;
  ifThen(B.CreateICmpEQ(globalThread(), i64(0)), [&] {
    PerThread = true;
    body();
    PerThread = false;
  });
  Gpu->barrier(B);
}

void GraphLowering::storeOnce(Value *value, Value *ptr) {
  if (!Gpu || PerThread) {
    B.CreateStore(value, ptr);
    return;
  }
  ifThen(B.CreateICmpEQ(globalThread(), i64(0)), [&] { B.CreateStore(value, ptr); });
  Gpu->barrier(B);
}

Value *GraphLowering::gemm(const GemmShape &shape, Value *a, Value *b, Value *c, Value *m, Value *k,
                           Value *bias, Value *mask, Value *columnSums, const GpuGemmSplit *split) {
  if (!Gpu)
    return emitGemm(B, shape, a, b, c, m, k, bias, OnWorker, mask, columnSums);
  ++Pieces;
  GpuGemmShape gpuShape{shape.TransA, shape.TransB, shape.Accumulate, shape.Bias,
                        shape.Relu,   shape.Mask,   shape.N,          shape.Elem,
                        shape.LdA,    shape.LdB,    shape.LdC};
  emitGpuGemm(B, *Gpu, gpuShape, a, b, c, m, k, bias, mask, split);
  Gpu->barrier(B);
  return nullptr;
}

void GraphLowering::zeroBytes(Value *ptr, int64_t bytes, int64_t align) {
  if (!Gpu) {
    B.CreateMemSet(ptr, B.getInt8(0), i64(bytes), llvm::MaybeAlign(align));
    return;
  }
  parallelFor(i64(bytes / 4), [&](Value *i) {
    B.CreateStore(B.getInt32(0), B.CreateInBoundsGEP(B.getInt32Ty(), ptr, i));
  });
}

void GraphLowering::loopRange(Value *begin, Value *end, Value *step,
                              const std::function<void(Value *)> &body, bool rolled) {
  llvm::BranchInst *latch = emitLoop(B, begin, end, step, body);
  if (rolled) {
    llvm::MDNode *noUnroll =
        llvm::MDNode::get(Ctx, llvm::MDString::get(Ctx, "llvm.loop.unroll.disable"));
    llvm::MDNode *id = llvm::MDNode::getDistinct(Ctx, {nullptr, noUnroll});
    id->replaceOperandWith(0, id);
    latch->setMetadata(llvm::LLVMContext::MD_loop, id);
  }
}

/// Whether n's value needs a buffer of its own.
static bool needsWorkspace(const Node *n, bool gpu) {
  if (n->Ty.Dims.empty() && !gpu)
    return false; // scalars live in registers (on the GPU, within a kernel)
  const ir::OpInfo &info = ir::opInfo(n->Op);
  return info.Category != ir::OpCategory::Leaf && n->Op != OpCode::Reshape;
}

/// Whether n holds one element, which an elementwise op reads whatever the
/// index (a scalar, or a parameter of shape [1] or [1, 1]).
static bool isOneElement(const Node *n) {
  return n->Ty.Dims.empty() || (!n->Ty.isBatched() && n->Ty.staticElements() == 1);
}

/// Whether elementwise node n reads each operand at the index it writes
/// (operands of its shape, or of one element).
static bool isFlat(const Node *n) {
  return std::all_of(n->Operands.begin(), n->Operands.end(), [&](const Node *operand) {
    return isOneElement(operand) || operand->Ty.Dims == n->Ty.Dims;
  });
}

/// The depth of matrix product n, or -1 when it depends on the batch size.
static int64_t productDepth(const Node *n) {
  const ir::Type &a = n->Operands[0]->Ty;
  if (!n->A.TransA)
    return a.Dims.back();
  ir::Type rows{a.Elem, {a.Dims.begin(), a.Dims.end() - 1}};
  return rows.isBatched() ? -1 : rows.staticElements();
}

/// A product of depth 1 and one column, C[m] = A[m] * B[0] (linreg's dense
/// layer of one input and one output), is elementwise in effect.
static bool isScaling(const Node *n) {
  return n->Op == OpCode::MatMul && n->Ty.Dims.back() == 1 && productDepth(n) == 1;
}

/// A product of one row and one column, with depth other than 1: the sum
/// over k of A[k] * B[k], whatever the transposes.
static bool isDot(const Node *n) {
  if (n->Op != OpCode::MatMul)
    return false;
  ir::Type rows{n->Ty.Elem, {n->Ty.Dims.begin(), n->Ty.Dims.end() - 1}};
  return n->Ty.Dims.back() == 1 && !rows.isBatched() && rows.staticElements() == 1 &&
         productDepth(n) != 1;
}

/// For a sum over every element of its operand (or a dot product): the
/// number of terms, as (static elements, batched), to group sums of the
/// same length into one loop. Nothing for the other reductions.
static std::optional<std::pair<int64_t, bool>> fullSumLength(const Node *n) {
  if (n->Op == OpCode::SumAll || (n->Op == OpCode::ReduceSum && isOneElement(n)) || isDot(n)) {
    const ir::Type &x = n->Operands[0]->Ty;
    return std::pair(x.staticElements(), x.isBatched());
  }
  return std::nullopt;
}

void GraphLowering::planFusion() {
  std::unordered_map<const Node *, std::unordered_set<const Node *>> users;
  for (const auto &node : G.nodes())
    for (const Node *operand : node->Operands)
      users[operand].insert(node.get());
  for (const ir::Store &store : G.stores())
    users[store.Value].insert(nullptr);
  std::unordered_map<const Node *, int64_t> position;
  for (size_t i = 0; i < G.nodes().size(); ++i)
    position[G.nodes()[i].get()] = int64_t(i);

  // A dense layer's add(matmul, bias) is one GEMM whose sums start from the
  // bias, when the product has no other reader (and is a real product). On
  // the GPU, so is a convolution's add(conv2d, reshape(bias) [O, 1, 1]): a
  // tiled product whose columns are the output channels (gpuConv2D).
  auto biasedProduct = [&](const Node *n) -> std::pair<const Node *, const Node *> {
    if (n->Op != OpCode::Add)
      return {nullptr, nullptr};
    for (int k = 0; k < 2; ++k) {
      const Node *product = n->Operands[k], *bias = n->Operands[1 - k];
      const std::unordered_set<const Node *> &readers = users[product];
      if (readers.size() != 1 || *readers.begin() != n || product->Ty != n->Ty)
        continue;
      // The bias is a vector of the columns; in batch-minor layout, a
      // column [M, 1] of the rows.
      const std::vector<int64_t> &dims = n->Ty.Dims;
      bool fits = dims.back() == ir::N
                      ? dims.size() == 2 && bias->Ty.Dims == std::vector<int64_t>{dims[0], 1}
                      : bias->Ty.Dims.size() == 1 && bias->Ty.Dims[0] == dims.back() &&
                            !bias->Ty.isBatched();
      if (product->Op == OpCode::MatMul && !isScaling(product) && fits)
        return {product, bias};
      if (Gpu && product->Op == OpCode::Conv2D && bias->Op == OpCode::Reshape &&
          bias->Ty.Dims == std::vector<int64_t>{dims[1], 1, 1} &&
          bias->Operands[0]->Ty.Dims == std::vector<int64_t>{dims[1]})
        return {product, bias->Operands[0]};
    }
    return {nullptr, nullptr};
  };

  // Sums over every element of operands of the same length share one loop
  // (a loss and the gradients of a one-output layer), when none of them
  // reads another. The group is computed where its last member's operands
  // are ready: the schedule below moves the nodes between them.
  std::unordered_map<const Node *, std::unordered_set<const Node *>> reached;
  // Whether `to` reads `from`, directly or not.
  auto reaches = [&](const Node *from, const Node *to) {
    auto [it, fresh] = reached.try_emplace(from);
    if (fresh) {
      std::vector<const Node *> work{from};
      while (!work.empty()) {
        const Node *n = work.back();
        work.pop_back();
        for (const Node *user : users[n])
          if (user && it->second.insert(user).second)
            work.push_back(user);
      }
    }
    return it->second.count(to) > 0;
  };
  std::vector<std::pair<std::pair<int64_t, bool>, std::vector<const Node *>>> groups;
  for (const auto &node : G.nodes()) {
    const Node *n = node.get();
    std::optional<std::pair<int64_t, bool>> length = fullSumLength(n);
    const std::unordered_set<const Node *> &readers = users[n];
    if (!length ||
        (readers.size() == 1 && *readers.begin() && biasedProduct(*readers.begin()).first == n))
      continue;
    auto group = std::find_if(groups.begin(), groups.end(), [&](const auto &g) {
      return g.first == *length &&
             std::none_of(g.second.begin(), g.second.end(),
                          [&](const Node *member) { return reaches(member, n); });
    });
    if (group == groups.end())
      groups.push_back({*length, {n}});
    else
      group->second.push_back(n);
  }
  for (auto &[length, members] : groups) {
    if (members.size() < 2)
      continue;
    const Node *leader = members.back();
    for (const Node *member : members)
      if (member != leader)
        GroupedInto[member] = leader;
    Groups[leader] = members;
  }
  // An elementwise node is computed in the loop of its users, and so needs
  // no buffer and no loop of its own, when they all read each of its
  // elements once through load() in one loop: elementwise ops of the same
  // shape, sums, dot products, all lowered together. Its operands must
  // have its shape (or one element), so that the users' index is theirs
  // too. Chains fuse whole: a + b * exp(c) is one loop; a loss's terms are
  // summed in the loop that computes them. Users come after their
  // operands, so walking backwards sees every user's decision first.
  auto loopOf = [&](const Node *n, const Node *user) -> const Node * {
    if (!user)
      return nullptr;
    const Node *loop = nullptr;
    if (Inlined.count(user)) {
      loop = FusedInto.at(user);
    } else {
      ir::OpCategory category = ir::opInfo(user->Op).Category;
      bool sameShape = category == ir::OpCategory::Elementwise && user->Ty.Dims == n->Ty.Dims &&
                       !biasedProduct(user).first;
      // On the GPU, an embedding's gradient reads its values through
      // load() too.
      bool scatteredValues = Gpu && user->Op == OpCode::ScatterAdd && user->Operands[1] == n;
      // And a concatenation (see gpuColumnsFrom).
      bool concatenated = Gpu && user->Op == OpCode::Concat;
      if (sameShape || category == ir::OpCategory::Reduce || isDot(user) || scatteredValues ||
          concatenated)
        loop = user;
    }
    auto grouped = loop ? GroupedInto.find(loop) : GroupedInto.end();
    return grouped == GroupedInto.end() ? loop : grouped->second;
  };
  const auto &nodes = G.nodes();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    const Node *n = it->get();
    if (n->Ty.Dims.empty())
      continue;
    if (isScaling(n)) {
      const ir::Type &a = n->Operands[0]->Ty;
      if (a.staticElements() != n->Ty.staticElements() || a.isBatched() != n->Ty.isBatched())
        continue;
    } else if (ir::opInfo(n->Op).Category == ir::OpCategory::Elementwise) {
      // On the GPU, also one that broadcasts an operand (but a product's
      // bias add, which the product's epilogue does), and a broadcast: a
      // thread per element finds its operands' elements alike (see
      // operandIndex), and a kernel and a buffer the size of the broadcast
      // result are saved.
      if (!isFlat(n) && !(Gpu && !biasedProduct(n).first))
        continue;
    } else if (!(Gpu && (n->Op == OpCode::Broadcast || n->Op == OpCode::Gather ||
                         n->Op == OpCode::Slice || n->Op == OpCode::Dropout))) {
      // On the GPU, an embedding's lookup, a slice and a dropout are
      // inlined too: their reader finds the table's or the operand's
      // element of each of their elements (see load), and they need no
      // buffer.
      continue;
    }
    const Node *loop = nullptr;
    bool oneLoop = true;
    for (const Node *user : users[n]) {
      const Node *userLoop = loopOf(n, user);
      oneLoop &= userLoop && (!loop || loop == userLoop);
      loop = userLoop;
    }
    if (oneLoop && loop) {
      Inlined.insert(n);
      FusedInto[n] = loop;
      if (n->Op == OpCode::Broadcast ||
          (ir::opInfo(n->Op).Category == ir::OpCategory::Elementwise && !isScaling(n) &&
           !isFlat(n)))
        InlinedBroadcasts.insert(n);
    }
  }

  for (const auto &node : G.nodes()) {
    const Node *n = node.get();
    if (Inlined.count(n))
      continue;
    auto [product, bias] = biasedProduct(n);
    if (product) {
      FusedInto[product] = n;
      ProductEpilogues[n] = {product, bias};
    }
  }
  // A relu of a dense layer's product, biased or not, that nothing else
  // reads is applied as the product's sums are stored (relu's gradient
  // reads the relu, not its operand).
  for (const auto &node : G.nodes()) {
    const Node *n = node.get();
    if (n->Op != OpCode::Relu || Inlined.count(n))
      continue;
    const Node *operand = n->Operands[0];
    if (users[operand].size() != 1 || Inlined.count(operand))
      continue;
    auto biased = ProductEpilogues.find(operand);
    if (biased != ProductEpilogues.end()) {
      ProductEpilogues[n] = biased->second;
      ProductEpilogues.erase(biased);
    } else if (operand->Op == OpCode::MatMul && !isScaling(operand)) {
      ProductEpilogues[n] = {operand, nullptr};
    } else {
      continue;
    }
    FusedInto[operand] = n;
    ReluEpilogues.insert(n);
  }
  // Relu's gradient, mul(product, greater(relu, 0)), when nothing else
  // reads the product or the comparison: the product's sums are masked as
  // they are stored. On the GPU, also a convolution's input gradient.
  for (const auto &node : G.nodes()) {
    const Node *n = node.get();
    if (n->Op != OpCode::Mul || Inlined.count(n))
      continue;
    for (int k = 0; k < 2; ++k) {
      const Node *product = n->Operands[k], *positive = n->Operands[1 - k];
      bool masked = (product->Op == OpCode::MatMul && !isScaling(product)) ||
                    (Gpu && product->Op == OpCode::Conv2DGradInput);
      if (!masked || product->Ty != n->Ty || users[product].size() != 1 || Inlined.count(product) ||
          positive->Op != OpCode::Greater || users[positive].size() != 1 ||
          positive->Operands[0]->Ty != n->Ty || Inlined.count(positive->Operands[0]) ||
          positive->Operands[1]->Op != OpCode::Constant || positive->Operands[1]->A.Value != 0)
        continue;
      ProductEpilogues[n] = {product, nullptr};
      MaskEpilogues[n] = positive->Operands[0];
      FusedInto[product] = n;
      FusedInto[positive] = n;
      break;
    }
  }
  // The sums over the rows of a product of whole vectors of columns (a
  // bias's gradient, from the product that gives the layer's adjoint),
  // summed by the product as it stores them. Each column is added in row
  // order from 0, as lowerColumnSums adds columns of whole vectors, so
  // that the sums are the same wherever the product cannot sum them.
  for (const auto &node : G.nodes()) {
    const Node *n = node.get();
    if (Gpu || n->Op != OpCode::ReduceSum || n->A.Axis != 0 || Inlined.count(n))
      continue;
    const Node *x = n->Operands[0];
    int64_t lanes = VectorBits / (8 * ir::byteSize(x->Ty.Elem));
    bool product = ProductEpilogues.count(x) ||
                   (x->Op == OpCode::MatMul && !FusedInto.count(x) && !isScaling(x));
    if (!product || Inlined.count(x) || SummedBy.count(x) || x->Ty.Dims.size() != 2 ||
        x->Ty.Dims[1] == ir::N || x->Ty.Dims[1] % lanes != 0)
      continue;
    SummedBy[x] = n;
  }

  // Elementwise nodes of one shape that need buffers share one loop when
  // each reads the others, if at all, only at its own index (through
  // inlined nodes or directly): an optimizer's update of one parameter,
  // its moments and the parameter, is one pass. Not for batched values:
  // the operands of every member would live until the last is computed,
  // and per-row memory is what bounds the batch.
  std::map<std::pair<std::vector<int64_t>, ir::DType>, std::vector<std::vector<const Node *>>>
      byShape;
  for (const auto &node : G.nodes()) {
    const Node *n = node.get();
    if (ir::opInfo(n->Op).Category != ir::OpCategory::Elementwise || n->Ty.Dims.empty() ||
        n->Ty.isBatched() || FusedInto.count(n) || ProductEpilogues.count(n) || !isFlat(n))
      continue;
    std::vector<std::vector<const Node *>> &groups = byShape[{n->Ty.Dims, n->Ty.Elem}];
    int64_t at = position.at(n);
    // Whether n reads a member of `group` on a path through a node that
    // the group's loop does not compute, and so not only at its index.
    auto readsAcross = [&](const std::vector<const Node *> &group) {
      std::set<std::pair<const Node *, bool>> seen;
      std::vector<std::pair<const Node *, bool>> work;
      for (const Node *member : group)
        work.push_back({member, false});
      while (!work.empty()) {
        auto [x, across] = work.back();
        work.pop_back();
        for (const Node *user : users[x]) {
          if (user == n && across)
            return true;
          if (!user || user == n || position.at(user) > at)
            continue; // paths to n run through nodes before it
          bool inLoop =
              Inlined.count(user) || std::find(group.begin(), group.end(), user) != group.end();
          std::pair<const Node *, bool> next{user, across || !inLoop};
          if (seen.insert(next).second)
            work.push_back(next);
        }
      }
      return false;
    };
    auto group =
        std::find_if(groups.begin(), groups.end(), [&](const auto &g) { return !readsAcross(g); });
    if (group == groups.end())
      groups.push_back({n});
    else
      group->push_back(n);
  }
  for (auto &[shape, groups] : byShape)
    for (const std::vector<const Node *> &members : groups) {
      if (members.size() < 2)
        continue;
      for (const Node *member : members)
        if (member != members.back())
          GroupedInto[member] = members.back();
      Groups[members.back()] = members;
    }
  schedule(users);
  planInPlaceStores(users);
}

void GraphLowering::planInPlaceStores(
    std::unordered_map<const Node *, std::unordered_set<const Node *>> &users) {
  // A stored elementwise value is computed straight into its destination,
  // with no buffer and no copy (a parameter updated in place), when the
  // old contents there are read only before its loop, or in its loop at
  // the same index before the element is written.
  // Whether `reader` (a node that is lowered) runs before n.
  auto before = [&](const Node *reader, const Node *n) {
    if (leaderOf(reader) != leaderOf(n))
      return Position.at(leaderOf(reader)) < Position.at(leaderOf(n));
    const std::vector<const Node *> &members = Groups[leaderOf(n)];
    return std::find(members.begin(), members.end(), reader) <
           std::find(members.begin(), members.end(), n);
  };
  std::unordered_map<const Node *, int> timesStored;
  for (const ir::Store &store : G.stores())
    ++timesStored[store.Value];
  for (const ir::Store &store : G.stores()) {
    const Node *n = store.Value;
    if (store.Dest == ir::Buffer::Loss || timesStored[n] != 1 || n->Ty.Dims.empty() ||
        ir::opInfo(n->Op).Category != ir::OpCategory::Elementwise || FusedInto.count(n) ||
        ProductEpilogues.count(n) || !isFlat(n))
      continue;
    OpCode leaf = store.Dest == ir::Buffer::Params  ? OpCode::Param
                  : store.Dest == ir::Buffer::State ? OpCode::State
                                                    : OpCode::Constant; // none
    int64_t begin = store.Offset, end = begin + n->Ty.staticElements();
    bool safe = !n->Ty.isBatched() || leaf == OpCode::Constant;
    // A reshape shares the old contents' storage: its readers read them.
    std::function<bool(const Node *)> readsBefore = [&](const Node *reader) {
      if (reader && reader->Op == OpCode::Reshape)
        return std::all_of(users[reader].begin(), users[reader].end(), readsBefore);
      const Node *by = reader ? computedBy(reader) : nullptr;
      return by && (by == n || before(by, n));
    };
    for (const auto &node : G.nodes()) {
      const Node *old = node.get();
      if (!safe || old->Op != leaf || leaf == OpCode::Constant ||
          old->A.Offset + old->Ty.staticElements() <= begin || end <= old->A.Offset)
        continue;
      safe &= std::all_of(users[old].begin(), users[old].end(), readsBefore);
    }
    if (safe)
      InPlace[n] = &store;
  }
}

void GraphLowering::schedule(
    std::unordered_map<const Node *, std::unordered_set<const Node *>> &users) {
  // A topological order of the graph's units: a node with the nodes
  // computed in its loop (the inlined ones, a biased product), or a group
  // of them, which ranks as its leader. Otherwise as close to the graph's
  // own order as may be: the earliest ready unit first. Should the groups
  // make a cycle (one group reading another's member and being read by
  // another), they are dropped.
  const auto &nodes = G.nodes();
  std::unordered_map<const Node *, int64_t> position;
  for (size_t i = 0; i < nodes.size(); ++i)
    position[nodes[i].get()] = int64_t(i);
  auto unitOf = [&](const Node *n) { return leaderOf(computedBy(n)); };
  std::unordered_map<const Node *, std::vector<const Node *>> unitNodes;
  for (const auto &node : nodes)
    unitNodes[unitOf(node.get())].push_back(node.get());
  std::unordered_map<const Node *, std::unordered_set<const Node *>> waitsFor, readers;
  for (const auto &node : nodes)
    for (const Node *operand : node->Operands)
      if (unitOf(operand) != unitOf(node.get())) {
        waitsFor[unitOf(node.get())].insert(unitOf(operand));
        readers[unitOf(operand)].insert(unitOf(node.get()));
      }
  using Entry = std::pair<int64_t, const Node *>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> ready;
  size_t units = 0;
  for (const auto &node : nodes)
    if (unitOf(node.get()) == node.get()) {
      ++units;
      if (waitsFor[node.get()].empty())
        ready.push({position[node.get()], node.get()});
    }
  Order.clear();
  size_t scheduled = 0;
  while (!ready.empty()) {
    const Node *unit = ready.top().second;
    ready.pop();
    ++scheduled;
    Order.insert(Order.end(), unitNodes[unit].begin(), unitNodes[unit].end());
    for (const Node *reader : readers[unit]) {
      std::unordered_set<const Node *> &waiting = waitsFor[reader];
      waiting.erase(unit);
      if (waiting.empty())
        ready.push({position[reader], reader});
    }
  }
  if (scheduled != units) {
    Groups.clear();
    GroupedInto.clear();
    Order.clear();
    for (const auto &node : nodes)
      Order.push_back(node.get());
  }
  for (size_t i = 0; i < Order.size(); ++i)
    Position[Order[i]] = int64_t(i);
}

namespace {
/// A workspace buffer to place: its bytes (per row, in the per-row part)
/// and the positions of the nodes that first write and last read it.
struct Interval {
  int64_t Bytes, First, Last;
  int64_t Offset = 0;
};

/// Gives each interval an offset so that buffers live at the same time do
/// not overlap; returns the bytes used. Largest first, each at the lowest
/// offset that fits among those already placed (greedy by size).
int64_t placeIntervals(std::vector<Interval *> intervals) {
  std::stable_sort(intervals.begin(), intervals.end(),
                   [](const Interval *a, const Interval *b) { return a->Bytes > b->Bytes; });
  std::vector<const Interval *> placed;
  int64_t total = 0;
  for (Interval *x : intervals) {
    std::vector<const Interval *> live;
    for (const Interval *p : placed)
      if (p->First <= x->Last && x->First <= p->Last)
        live.push_back(p);
    std::sort(live.begin(), live.end(),
              [](const Interval *a, const Interval *b) { return a->Offset < b->Offset; });
    int64_t offset = 0;
    for (const Interval *p : live) {
      if (offset + x->Bytes <= p->Offset)
        break;
      offset = std::max(offset, p->Offset + p->Bytes);
    }
    x->Offset = offset;
    total = std::max(total, offset + x->Bytes);
    placed.push_back(x);
  }
  return total;
}
} // namespace

void GraphLowering::planImageChains() {
  ChainSpan.clear();
  for (int64_t p = 0; p < int64_t(Order.size()); ++p)
    ChainSpan.push_back({p, p});
  if (Gpu) {
    // A row segment's units run interleaved, chunk by chunk, as a chain's
    // run image by image; a run of updates' and side-by-side units' at
    // once, on other threads. Spans that overlap (a fused product's node may
    // be scheduled among another kernel's) are one.
    std::sort(KernelSpans.begin(), KernelSpans.end());
    for (size_t i = 0; i < KernelSpans.size();) {
      auto [first, last] = KernelSpans[i];
      size_t j = i + 1;
      for (; j < KernelSpans.size() && KernelSpans[j].first <= last; ++j)
        last = std::max(last, KernelSpans[j].second);
      for (int64_t p = first; p <= last; ++p)
        ChainSpan[p] = {first, last};
      i = j;
    }
    return;
  }
  auto unitOf = [&](const Node *n) { return leaderOf(computedBy(n)); };
  // A value that every image's code can find: one of a batch of images
  // (row by row), or one that is not batched and has storage or is a leaf.
  auto readable = [&](const Node *n) {
    if (n->Ty.isBatched())
      return n->Ty.Dims[0] == ir::N;
    return ir::opInfo(n->Op).Category == ir::OpCategory::Leaf || !n->Ty.Dims.empty();
  };
  // Whether a node computes each image from the same image of its
  // operands, as code that can run for one image.
  auto perImage = [&](const Node *n) {
    if (!n->Ty.isBatched() || n->Ty.Dims[0] != ir::N || n->Ty.Dims.size() < 2 || InPlace.count(n) ||
        ProductEpilogues.count(n))
      return false;
    switch (ir::opInfo(n->Op).Category) {
    case ir::OpCategory::Elementwise:
    case ir::OpCategory::Random:
      break;
    case ir::OpCategory::Window:
      if (n->Op == OpCode::Conv2DGradFilter)
        return false;
      break;
    case ir::OpCategory::Layout:
      if (n->Op != OpCode::Reshape)
        return false;
      break;
    default:
      return false;
    }
    for (const Node *operand : n->Operands)
      if (!readable(operand))
        return false;
    return true;
  };
  // Leaves and reshapes of values that are not batched compute nothing
  // per image: they neither join nor end a chain.
  auto neutral = [&](const Node *n) {
    return ir::opInfo(n->Op).Category == ir::OpCategory::Leaf ||
           (n->Op == OpCode::Reshape && !n->Ty.isBatched());
  };
  std::vector<const Node *> chain;
  int64_t first = 0, last = 0;
  bool windowed = false;
  auto close = [&] {
    // Only chains with a convolution or a pool: a chain of elementwise ops
    // alone gains little from running image by image, and a small
    // model's rows are too short for it.
    if (windowed && chain.size() > 1) {
      ImageChains[chain.front()] = chain;
      for (const Node *unit : chain)
        InImageChain.insert(unit);
      for (int64_t p = first; p <= last; ++p)
        ChainSpan[p] = {first, last};
    }
    chain.clear();
    windowed = false;
  };
  for (int64_t p = 0; p < int64_t(Order.size());) {
    // The unit at p: its leader and the nodes computed in its loop.
    const Node *unit = unitOf(Order[p]);
    int64_t end = p;
    bool fits = true;
    while (end < int64_t(Order.size()) && unitOf(Order[end]) == unit) {
      fits = fits && perImage(Order[end]);
      ++end;
    }
    if (neutral(unit) && end == p + 1) {
      p = end;
      continue;
    }
    if (!fits) {
      close();
    } else {
      if (chain.empty())
        first = p;
      chain.push_back(unit);
      last = end - 1;
      windowed = windowed || ir::opInfo(unit->Op).Category == ir::OpCategory::Window;
    }
    p = end;
  }
  close();
}

void GraphLowering::lowerImageChain(const std::vector<const Node *> &units) {
  for (const Node *unit : units)
    if (usesWinograd(unit, false))
      winogradFilter(unit);
  forImages(ir::N, [&](Value *img, Value *group) {
    // The image's slots are found in a block of their own, first in the
    // image's code.
    SlotBlock = B.GetInsertBlock();
    auto *body = llvm::BasicBlock::Create(Ctx, "image", F);
    B.CreateBr(body);
    B.SetInsertPoint(body);
    ImageRow = img;
    ImageGroup = group;
    Slots.clear();
    Computed.clear();
    for (const Node *unit : units)
      lower(unit);
    ImageRow = ImageGroup = nullptr;
    SlotBlock = nullptr;
  });
  // The code after the chain finds its values where they are, from the
  // first row.
  std::unordered_set<const Node *> chain(units.begin(), units.end());
  for (const Node *n : Order)
    if (chain.count(leaderOf(computedBy(n))) && !Inlined.count(n) && n->Op != OpCode::Reshape)
      placeInWorkspace(n);
  for (const Node *unit : units)
    if (unit->Op == OpCode::Reshape)
      lower(unit);
}

void GraphLowering::planWorkspace() {
  // Each buffer lives from the node that writes it to the last node that
  // reads it (an inlined node reads its operands where its user runs; a
  // stored value is read at the end); buffers whose lives do not overlap
  // share memory. Lives are closed intervals, so no node's result overlaps
  // its own operands. A convolution's column matrix and lstm_grad's
  // carried adjoints live only during their node.
  auto evaluatedAt = [&](const Node *n) {
    return ChainSpan[Position.at(leaderOf(computedBy(n)))].second;
  };
  // Reshapes share their operand's storage (on the GPU, reshapes to a
  // scalar too: each kernel that reads one loads it afresh).
  auto storageOf = [&](const Node *n) {
    while (n->Op == OpCode::Reshape && (!n->Ty.Dims.empty() || Gpu))
      n = n->Operands[0];
    return n;
  };
  const auto &nodes = G.nodes();
  std::unordered_map<const Node *, int64_t> lastRead;
  for (const ir::Store &store : G.stores())
    lastRead[storageOf(store.Value)] = int64_t(nodes.size());
  // A scalar in registers reads its operands where its readers run: the
  // last of them, seen first when walking backwards.
  for (auto node = nodes.rbegin(); node != nodes.rend(); ++node) {
    const Node *n = node->get();
    int64_t at = scalarInRegisters(n) ? lastRead[n] : evaluatedAt(n);
    for (const Node *operand : n->Operands) {
      int64_t &last = lastRead[storageOf(operand)];
      last = std::max(last, at);
    }
  }

  std::vector<std::unique_ptr<Interval>> all;
  std::vector<Interval *> fixed, perRow;
  auto add = [&](bool batched, int64_t bytes, int64_t first, int64_t last) {
    all.push_back(std::make_unique<Interval>(Interval{alignUp(bytes), first, last}));
    (batched ? perRow : fixed).push_back(all.back().get());
    return all.back().get();
  };
  std::unordered_map<const Node *, Interval *> buffers, scratch, rowScratch, chunkScratch,
      rowPartials, rowChunkSums;
  // RowBlocks: the row kernel's sums are written after all its units (by
  // the kernel that adds the blocks' partial sums), which live until then.
  for (const Node *n : RowSums) {
    int64_t bytes = MaxRowBlocks * n->Ty.staticElements() * ir::byteSize(n->Ty.Elem);
    rowPartials[n] = add(false, bytes, 0, RowUnits);
    rowChunkSums[n] = add(false, bytes, 0, RowUnits);
    lastRead[n] = std::max(lastRead[n], RowUnits);
  }
  for (const auto &node : nodes) {
    const Node *n = node.get();
    auto [at, chainEnd] = ChainSpan[Position.at(n)];
    // Column sums that a product sums are written where it runs.
    if (n->Op == OpCode::ReduceSum) {
      const Node *x = n->Operands[0];
      auto sums = SummedBy.find(x);
      if (sums != SummedBy.end() && sums->second == n)
        at = std::min(at, ChainSpan[Position.at(leaderOf(computedBy(x)))].first);
    }
    const ir::OpInfo &info = ir::opInfo(n->Op);
    if (info.Category == ir::OpCategory::Window && n->Op != OpCode::MaxPool2D &&
        n->Op != OpCode::MaxPool2DGrad) {
      // CPU: per image group, a column matrix; a filter's gradient also
      // sums each group's images apart (lowerConv2DGradFilter). GPU: a
      // filter's gradient's runs (productRuns, below).
      if (!Gpu) {
        int64_t bytes = columnBytes(n), fixedBytes = 0;
        if (n->Op == OpCode::Conv2DGradFilter)
          bytes += partialBytes(n);
        else if (usesWinograd(n, false)) {
          WinogradShape s = winogradShape(n);
          fixedBytes = alignUp(16 * s.Out * s.In * ir::byteSize(n->Ty.Elem));
        }
        scratch[n] = add(false, ImageGroups * bytes + fixedBytes, at, chainEnd);
      }
    }
    if (productRuns(n) > 1)
      scratch[n] = add(false, productRunBytes(n), at, chainEnd);
    if (int64_t runs = columnSumRuns(n); runs > 1)
      scratch[n] =
          add(false, runs * n->Ty.staticElements() * ir::byteSize(n->Ty.Elem), at, chainEnd);
    // A full sum's chunks: a group's (by its leader), or a sum_all's.
    if (auto group = Groups.find(n);
        group != Groups.end() && ir::opInfo(n->Op).Category != ir::OpCategory::Elementwise) {
      if (fullSumChunks(group->second))
        chunkScratch[group->second.front()] =
            add(false, GpuSumChunks * int64_t(group->second.size()) * 8, at, chainEnd);
    } else if (n->Op == OpCode::SumAll && !GroupedInto.count(n) && fullSumChunks({n})) {
      chunkScratch[n] = add(false, GpuSumChunks * 8, at, chainEnd);
    }
    if (Gpu && n->Op == OpCode::ScatterAdd) {
      ScatterScratch s = scatterScratch(n);
      bool batched = n->Operands[0]->Ty.isBatched();
      scratch[n] = add(false, s.Fixed + (batched ? 0 : s.Rest), at, chainEnd);
      if (batched)
        rowScratch[n] = add(true, s.Rest, at, chainEnd);
    }
    if (n->Op == OpCode::LstmGrad) {
      int64_t hidden = n->Operands[2]->Ty.Dims[1];
      rowScratch[n] = add(true, 2 * hidden * ir::byteSize(n->Ty.Elem), at, at);
    }
    if (!needsWorkspace(n, Gpu) || scalarInRegisters(n) || FusedInto.count(n) || InPlace.count(n))
      continue;
    int64_t last = lastRead.count(n) ? std::max(lastRead[n], chainEnd) : chainEnd;
    buffers[n] =
        add(n->Ty.isBatched(), n->Ty.staticElements() * ir::byteSize(n->Ty.Elem), at, last);
  }
  std::unordered_map<const Node *, std::pair<Interval *, Interval *>> skipScratch;
  for (auto &[d, skip] : ColumnSkips) {
    int64_t first = int64_t(nodes.size()), last = 0;
    for (const Node *p : skip.Products) {
      auto [begin, end] = ChainSpan[Position.at(leaderOf(computedBy(p)))];
      first = std::min(first, begin);
      last = std::max(last, end);
    }
    int64_t columns = d->Ty.Dims[1];
    skipScratch[d] = {add(false, 8 * (1 + columns) + skip.LiveRowBytes, first, last),
                      add(true, columns * ir::byteSize(d->Ty.Elem), first, last)};
  }
  Size.Fixed = placeIntervals(fixed);
  Size.PerRow = placeIntervals(perRow);
  for (auto &[d, x] : skipScratch) {
    ColumnSkips[d].Fixed = x.first->Offset;
    ColumnSkips[d].PerRow = x.second->Offset;
  }
  for (auto &[n, x] : buffers)
    Offsets[n] = {n->Ty.isBatched(), x->Offset};
  for (auto &[n, x] : scratch)
    Scratch[n] = x->Offset;
  for (auto &[n, x] : rowScratch)
    RowScratch[n] = x->Offset;
  for (auto &[n, x] : chunkScratch)
    ChunkScratch[n] = x->Offset;
  for (auto &[n, x] : rowPartials)
    RowPartials[n] = x->Offset;
  for (auto &[n, x] : rowChunkSums)
    RowChunkSums[n] = x->Offset;
}

void GraphLowering::materialize(const Node *n) {
  // At the end of the kernel's entry block, which dominates all its code
  // (in an image chain, of the image's first block).
  llvm::IRBuilderBase::InsertPointGuard guard(B);
  B.SetInsertPoint((SlotBlock ? SlotBlock : Entry)->getTerminator());
  bool perThread = PerThread;
  if (ir::opInfo(n->Op).Category == ir::OpCategory::Leaf) {
    lowerLeaf(n);
  } else if (scalarInRegisters(n) && (!WholeGraph || RowBlocks)) {
    // Its operands are in memory, from kernels before this one, or
    // computed here likewise.
    std::vector<Value *> args;
    for (const Node *operand : n->Operands)
      args.push_back(scalarOf(operand));
    Slots[n].Scalar = LLVMScalarBuilder(B, elemType(n->Ty.Elem)).apply(n->Op, args);
  } else if (n->Op == OpCode::Reshape) {
    lower(n);
  } else {
    placeInWorkspace(n);
  }
  PerThread = perThread;
  if (!Slots.count(n))
    throw std::logic_error("internal error: a kernel reads a value that has no storage");
}

void GraphLowering::beginFunction(llvm::Module &module, const std::string &name) {
  F = llvm::Function::Create(
      llvm::FunctionType::get(B.getVoidTy(), {llvm::PointerType::getUnqual(Ctx)}, false),
      llvm::Function::ExternalLinkage, name, module);
  F->addFnAttr(llvm::Attribute::NoUnwind);
  F->addParamAttr(0, llvm::Attribute::NoAlias);
  Call = F->getArg(0);
  Call->setName("call");
  Entry = llvm::BasicBlock::Create(Ctx, "entry", F);
  B.SetInsertPoint(Entry);
  loadCall();
}

void GraphLowering::loadCall() {
  for (auto [field, name] : {std::pair{CallParams, "params"},
                             {CallState, "state"},
                             {CallGrads, "grads"},
                             {CallOutput, "output"},
                             {CallWorkspace, "workspace"}}) {
    Buffers[field] = loadField(field, B.getPtrTy());
    Buffers[field]->setName(name);
  }
  Batch = loadField(CallBatch, B.getInt64Ty());
  Batch->setName("batch");
  Workspace = buffer(CallWorkspace);
}

WorkspaceSize GraphLowering::run() {
  if (Gpu) {
    runGpu();
    return Size;
  }
  CallTy = getCallType(Ctx);
  beginFunction(M, "nnc_" + G.name());
  planFusion();
  planImageChains();
  planColumnSkips();
  planWorkspace();
  for (const Node *n : Order) {
    if (FusedInto.count(n) || GroupedInto.count(n))
      continue;
    auto chain = ImageChains.find(n);
    if (chain != ImageChains.end())
      recordAccesses([&] { lowerImageChain(chain->second); });
    else if (!InImageChain.count(n))
      recordAccesses([&] { lower(n); });
  }
  for (const ir::Store &store : G.stores())
    lowerStore(store);
  B.CreateRetVoid();
  addBufferScopes();
  return Size;
}

void GraphLowering::placeInWorkspace(const Node *n) {
  auto inPlace = InPlace.find(n);
  if (inPlace != InPlace.end()) {
    Slots[n].Ptr = rowStart(n, destination(*inPlace->second));
    return;
  }
  auto offset = Offsets.find(n);
  if (offset == Offsets.end())
    return;
  auto [batched, bytes] = offset->second;
  Value *start = i64(bytes);
  if (batched && RowBlock) // the block's own, for the chunk's rows
    start = B.CreateAdd(RowRegion, B.CreateMul(i64(bytes), RowCount));
  else if (batched)
    start = B.CreateAdd(i64(Size.Fixed), B.CreateMul(i64(bytes), Batch));
  Value *ptr = B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, start, "t" + std::to_string(n->Id));
  WorkspaceBuffers[ptr] = n;
  // A sum over the rows, in the row kernel: its block's sum of the chunk.
  if (auto chunkSums = RowChunkSums.find(n); RowBlock && chunkSums != RowChunkSums.end())
    ptr = rowBlockSum(n, chunkSums->second);
  Slots[n].Ptr = RowBlock ? ptr : rowStart(n, ptr);
}

/// The address that \p inst loads from or stores to, if it is a memory access.
static Value *accessedAddress(llvm::Instruction &inst) {
  if (auto *load = llvm::dyn_cast<llvm::LoadInst>(&inst))
    return load->getPointerOperand();
  if (auto *store = llvm::dyn_cast<llvm::StoreInst>(&inst))
    return store->getPointerOperand();
  if (auto *intrinsic = llvm::dyn_cast<llvm::IntrinsicInst>(&inst)) {
    if (intrinsic->getIntrinsicID() == llvm::Intrinsic::masked_load)
      return intrinsic->getArgOperand(0);
    if (intrinsic->getIntrinsicID() == llvm::Intrinsic::masked_store)
      return intrinsic->getArgOperand(1);
  }
  return nullptr;
}

void GraphLowering::recordAccesses(const std::function<void()> &lowerUnit) {
  // Blocks are only ever appended to the function, and a unit's code goes
  // after the insertion point: what follows these two marks is the unit's.
  llvm::BasicBlock *start = B.GetInsertBlock();
  llvm::Instruction *lastBefore = start->empty() ? nullptr : &start->back();
  llvm::BasicBlock *lastBlock = &F->back();
  lowerUnit();
  std::vector<llvm::Instruction *> accesses;
  auto collect = [&](llvm::BasicBlock::iterator from, llvm::BasicBlock::iterator to) {
    for (llvm::Instruction &inst : llvm::make_range(from, to))
      if (accessedAddress(inst))
        accesses.push_back(&inst);
  };
  collect(lastBefore ? std::next(lastBefore->getIterator()) : start->begin(), start->end());
  for (auto block = std::next(lastBlock->getIterator()); block != F->end(); ++block)
    collect(block->begin(), block->end());
  UnitAccesses.push_back(std::move(accesses));
}

void GraphLowering::addBufferScopes() {
  // The call's buffers never overlap (docs/abi.md). Saying so to LLVM, as
  // one alias scope per buffer on every access through it, lets loops that
  // read one buffer and write another vectorize with no run-time overlap
  // checks (an optimizer's update, reading the state and the gradient,
  // writing the parameters and the state).
  llvm::MDBuilder md(Ctx);
  llvm::MDNode *domain = md.createAnonymousAliasScopeDomain("nnc.buffers");
  std::unordered_map<const Value *, llvm::MDNode *> scopes;
  for (auto &[field, pointer] : Buffers)
    scopes[pointer] = md.createAnonymousAliasScope(domain, pointer->getName());
  auto append = [&](llvm::Instruction &inst, unsigned kind,
                    const std::vector<llvm::Metadata *> &more) {
    std::vector<llvm::Metadata *> list;
    if (llvm::MDNode *old = inst.getMetadata(kind))
      list.assign(old->op_begin(), old->op_end());
    list.insert(list.end(), more.begin(), more.end());
    inst.setMetadata(kind, llvm::MDNode::get(Ctx, list));
  };
  for (llvm::BasicBlock &block : *F)
    for (llvm::Instruction &inst : block) {
      Value *address = accessedAddress(inst);
      auto scope = address ? scopes.find(llvm::getUnderlyingObject(address)) : scopes.end();
      if (scope == scopes.end())
        continue;
      std::vector<llvm::Metadata *> others;
      for (auto &[pointer, other] : scopes)
        if (other != scope->second)
          others.push_back(other);
      inst.setMetadata(llvm::LLVMContext::MD_alias_scope, llvm::MDNode::get(Ctx, {scope->second}));
      inst.setMetadata(llvm::LLVMContext::MD_noalias, llvm::MDNode::get(Ctx, others));
    }

  // The workspace's buffers share memory when their lives do not overlap,
  // so no scope per buffer holds for the whole function. Within one unit's
  // code they do not overlap: the unit's operands, results and members are
  // all live while it runs (planWorkspace). So each unit gets a domain of
  // its own, with a scope per workspace buffer that its code accesses,
  // which says nothing of the accesses of other units. Loops reading one
  // buffer with a stride and writing another (the rows of a softmax over
  // a few classes) then vectorize, where run-time overlap checks fail.
  for (const std::vector<llvm::Instruction *> &accesses : UnitAccesses) {
    std::vector<std::pair<llvm::Instruction *, const Node *>> owned;
    std::map<const Node *, llvm::MDNode *> unitScopes;
    for (llvm::Instruction *inst : accesses) {
      Value *address = accessedAddress(*inst);
      while (!WorkspaceBuffers.count(address))
        if (auto *gep = llvm::dyn_cast<llvm::GetElementPtrInst>(address))
          address = gep->getPointerOperand();
        else
          break;
      auto buffer = WorkspaceBuffers.find(address);
      if (buffer == WorkspaceBuffers.end())
        continue;
      owned.push_back({inst, buffer->second});
      unitScopes[buffer->second] = nullptr;
    }
    if (unitScopes.size() < 2)
      continue;
    llvm::MDNode *unitDomain = md.createAnonymousAliasScopeDomain("nnc.unit");
    for (auto &[node, scope] : unitScopes)
      scope = md.createAnonymousAliasScope(unitDomain, "t" + std::to_string(node->Id));
    for (auto &[inst, node] : owned) {
      std::vector<llvm::Metadata *> others;
      for (auto &[other, scope] : unitScopes)
        if (other != node)
          others.push_back(scope);
      append(*inst, llvm::LLVMContext::MD_alias_scope, {unitScopes.at(node)});
      append(*inst, llvm::LLVMContext::MD_noalias, others);
    }
  }
}

void GraphLowering::lower(const Node *n) {
  auto group = Groups.find(n);
  if (group != Groups.end()) {
    for (const Node *member : group->second)
      placeInWorkspace(member);
    if (ir::opInfo(n->Op).Category == ir::OpCategory::Elementwise)
      return lowerElementwiseGroup(group->second);
    return lowerFullSums(group->second);
  }
  placeInWorkspace(n);
  const ir::OpInfo &info = ir::opInfo(n->Op);
  switch (info.Category) {
  case ir::OpCategory::Leaf:
    return lowerLeaf(n);
  case ir::OpCategory::Elementwise: {
    auto epilogue = ProductEpilogues.find(n);
    if (epilogue != ProductEpilogues.end()) {
      auto mask = MaskEpilogues.find(n);
      return lowerProduct(n, epilogue->second.first, epilogue->second.second,
                          ReluEpilogues.count(n) > 0,
                          mask == MaskEpilogues.end() ? nullptr : mask->second);
    }
    LLVMScalarBuilder sb(B, elemType(n->Ty.Elem));
    return lowerMap(n, [&](std::vector<Value *> &args) { return sb.apply(n->Op, args); });
  }
  case ir::OpCategory::MatMul:
    return lowerProduct(n, n, nullptr, false, nullptr);
  case ir::OpCategory::Reduce:
    if (n->Op == OpCode::SumAll || n->Ty.Dims.empty())
      return lowerSumAll(n);
    if (auto summed = SummedByProduct.find(n); summed != SummedByProduct.end()) {
      if (summed->second != B.getTrue())
        ifThen(B.CreateNot(summed->second), [&] { lowerReduceSum(n); });
      return;
    }
    return lowerReduceSum(n);
  case ir::OpCategory::Row:
    return lowerRow(n);
  case ir::OpCategory::Layout:
    if (n->Op == OpCode::OneHot)
      return lowerOneHot(n);
    if (n->Op == OpCode::Transpose)
      return lowerTranspose(n);
    if (n->Op == OpCode::ToFloat) {
      llvm::Type *ft = elemType(n->Ty.Elem);
      return lowerMap(n, [&](std::vector<Value *> &args) { return B.CreateSIToFP(args[0], ft); });
    }
    if (n->Op == OpCode::Concat) {
      int64_t split = n->Operands[0]->Ty.Dims.back(), width = n->Ty.Dims.back();
      if (Gpu)
        return gpuColumnsFrom(n, {{0, split, n->Operands[0]}, {split, width, n->Operands[1]}});
      copyColumns(n->Operands[0], 0, n, 0, split);
      return copyColumns(n->Operands[1], 0, n, split, width - split);
    }
    if (n->Op == OpCode::Slice)
      return copyColumns(n->Operands[0], n->A.Offset, n, 0, n->Ty.Dims.back());
    if (n->Op == OpCode::Unslice) {
      int64_t begin = n->A.Offset, end = begin + n->Operands[0]->Ty.Dims.back();
      if (Gpu)
        return gpuColumnsFrom(
            n,
            {{0, begin, nullptr}, {begin, end, n->Operands[0]}, {end, n->Ty.Dims.back(), nullptr}});
      zeroFill(n);
      return copyColumns(n->Operands[0], 0, n, begin, end - begin);
    }
    if (n->Op == OpCode::Reshape) {
      // Same elements, same order: share the operand's storage.
      const Slot &from = slotOf(n->Operands[0]);
      if (n->Ty.Dims.empty()) {
        Slots[n].Scalar = scalarOf(n->Operands[0]);
      } else if (from.Scalar) {
        throw std::logic_error("internal error: reshape of a register value");
      } else {
        Slots[n].Ptr = from.Ptr;
      }
      return;
    }
    return lowerMap(n, [](std::vector<Value *> &args) { return args[0]; });
  case ir::OpCategory::Window:
    switch (n->Op) {
    case OpCode::Conv2D:
      return Gpu ? gpuConv2D(n) : lowerConv2D(n);
    case OpCode::Conv2DGradInput:
      return Gpu ? gpuConv2DGradInput(n) : lowerConv2DGradInput(n);
    case OpCode::Conv2DGradFilter:
      return Gpu ? gpuConv2DGradFilter(n) : lowerConv2DGradFilter(n);
    case OpCode::MaxPool2D:
      return lowerMaxPool2D(n, false);
    case OpCode::MaxPool2DGrad:
      return lowerMaxPool2D(n, true);
    default:
      break;
    }
    throw std::logic_error("internal error: unknown window op");
  case ir::OpCategory::Random:
    return lowerDropout(n);
  case ir::OpCategory::Index:
    return n->Op == OpCode::Gather ? lowerGather(n) : lowerScatterAdd(n);
  case ir::OpCategory::Recurrent:
    if (n->Op == OpCode::Lstm)
      return lowerLstm(n);
    if (n->Op == OpCode::LstmGrad)
      return lowerLstmGrad(n);
    return lowerLstmGradWeight(n);
  }
}

void GraphLowering::lowerLeaf(const Node *n) {
  llvm::Type *ft = elemType(n->Ty.Elem);
  Slot &slot = Slots[n];
  switch (n->Op) {
  case OpCode::Input: {
    Value *inputs = loadField(CallInputs, B.getPtrTy());
    Value *entry = B.CreateInBoundsGEP(B.getPtrTy(), inputs, i64(n->A.Offset));
    slot.Ptr = rowStart(n, B.CreateLoad(B.getPtrTy(), entry, n->A.Name));
    return;
  }
  case OpCode::Param:
    slot.Ptr = offsetPtr(buffer(CallParams), n->Ty.Elem, n->A.Offset);
    return;
  case OpCode::State:
    slot.Ptr = offsetPtr(buffer(CallState), n->Ty.Elem, n->A.Offset);
    return;
  case OpCode::Constant:
    slot.Scalar = llvm::ConstantFP::get(ft, n->A.Value);
    return;
  case OpCode::BatchSize:
    slot.Scalar = B.CreateSIToFP(Batch, ft);
    return;
  case OpCode::LearningRate:
    slot.Scalar = B.CreateFPCast(loadField(CallLr, B.getDoubleTy()), ft);
    return;
  case OpCode::Step:
    slot.Scalar = B.CreateSIToFP(loadField(CallStep, B.getInt64Ty()), ft);
    return;
  default:
    throw std::logic_error("internal error: not a leaf");
  }
}

void GraphLowering::lowerMap(const Node *n,
                             const std::function<Value *(std::vector<Value *> &)> &formula) {
  const std::vector<int64_t> &dims = n->Ty.Dims;
  std::vector<Value *> args(n->Operands.size());
  if (dims.empty()) {
    for (size_t k = 0; k < args.size(); ++k)
      args[k] = scalarOf(n->Operands[k]);
    Slots[n].Scalar = formula(args);
    if (Gpu && !scalarInRegisters(n)) // for the kernels after this one
      storeOnce(Slots[n].Scalar, Slots[n].Ptr);
    return;
  }
  llvm::Type *outType = elemType(n->Ty.Elem);
  if (isFlat(n)) {
    parallelFor(elementCount(n->Ty), [&](Value *i) {
      for (size_t k = 0; k < args.size(); ++k)
        args[k] = load(n->Operands[k], i);
      B.CreateStore(formula(args), B.CreateInBoundsGEP(outType, Slots[n].Ptr, i));
    });
    return;
  }
  BroadcastLoops walk = broadcastLoops(n);
  const std::vector<Value *> &extents = walk.Extents;
  const std::vector<std::vector<Value *>> &strides = walk.Strides;
  size_t operands = n->Operands.size();
  size_t loops = extents.size();
  if (Gpu) {
    // A thread per element of the result, so that neighbouring threads
    // read and write neighbouring elements: a thread per row looping along
    // it would make each load of a warp 32 accesses, and leave most
    // threads idle.
    parallelFor(elementCount(n->Ty), [&](Value *i) {
      for (size_t k = 0; k < args.size(); ++k)
        args[k] = load(n->Operands[k], operandIndex(walk, k, i));
      B.CreateStore(formula(args), B.CreateInBoundsGEP(outType, Slots[n].Ptr, i));
    });
    return;
  }
  std::function<void(size_t, std::vector<Value *>)> nest = [&](size_t d,
                                                               std::vector<Value *> base) {
    auto body = [&](Value *i) {
      std::vector<Value *> index(base.size());
      for (size_t k = 0; k < base.size(); ++k)
        index[k] = B.CreateAdd(base[k], B.CreateMul(i, strides[k][d]));
      if (d + 1 < loops)
        return nest(d + 1, index);
      for (size_t k = 0; k < args.size(); ++k)
        args[k] = load(n->Operands[k], index[k]);
      B.CreateStore(formula(args), B.CreateInBoundsGEP(outType, Slots[n].Ptr, index.back()));
    };
    auto *staticExtent = llvm::dyn_cast<llvm::ConstantInt>(extents[d]);
    if (d == 0) { // the outermost loop is split among GPU threads
      parallelFor(extents[d], body);
    } else if (d + 1 == loops && staticExtent && staticExtent->getSExtValue() <= SmallRowWidth) {
      // A row of a few elements (a loss over 3 classes times a value
      // per row), written out as lowerRow writes its rows: the loop
      // around it vectorizes across rows.
      for (int64_t j = 0; j < staticExtent->getSExtValue(); ++j)
        body(i64(j));
    } else {
      forRange(i64(0), extents[d], body, /*rolled=*/d + 1 == loops);
    }
  };
  nest(0, std::vector<Value *>(operands + 1, i64(0)));
}

GraphLowering::BroadcastLoops GraphLowering::broadcastLoops(const Node *n) {
  // An operand's stride is 0 along the dimensions it is broadcast in.
  // Neighbouring dimensions that every operand either reads both of or is
  // broadcast in both are one loop: adding a channel's bias to an image of
  // [C, H, W] is a loop over channels around one over H * W elements,
  // which vectorizes.
  const std::vector<int64_t> &dims = n->Ty.Dims;
  size_t rank = dims.size();
  size_t operands = n->Operands.size();
  auto broadcastIn = [&](size_t k, size_t d) {
    const std::vector<int64_t> &own = k == operands ? dims : n->Operands[k]->Ty.Dims;
    size_t lead = rank - own.size();
    return d < lead || (own[d - lead] == 1 && dims[d] != 1);
  };
  auto samePattern = [&](size_t d, size_t e) {
    for (size_t k = 0; k <= operands; ++k)
      if (broadcastIn(k, d) != broadcastIn(k, e))
        return false;
    return true;
  };
  BroadcastLoops loops;
  loops.Strides.resize(operands + 1);
  for (size_t d = 0; d < rank;) {
    size_t e = d + 1;
    while (e < rank && samePattern(d, e))
      ++e;
    loops.Extents.push_back(product(dims, d, e));
    for (size_t k = 0; k <= operands; ++k) {
      const std::vector<int64_t> &own = k == operands ? dims : n->Operands[k]->Ty.Dims;
      size_t lead = rank - own.size();
      loops.Strides[k].push_back(broadcastIn(k, e - 1) ? i64(0)
                                                       : product(own, e - lead, own.size()));
    }
    d = e;
  }
  return loops;
}

Value *GraphLowering::operandIndex(const BroadcastLoops &loops, size_t k, Value *i) {
  Value *index = i64(0), *rest = i;
  for (size_t d = loops.Extents.size(); d-- > 0;) {
    Value *coordinate = d ? B.CreateURem(rest, loops.Extents[d]) : rest;
    if (d)
      rest = B.CreateUDiv(rest, loops.Extents[d]);
    index = B.CreateAdd(index, B.CreateMul(coordinate, loops.Strides[k][d]));
  }
  return index;
}

void GraphLowering::lowerElementwiseGroup(const std::vector<const Node *> &members) {
  parallelFor(elementCount(members[0]->Ty), [&](Value *i) { elementwiseAt(members, i); });
}

void GraphLowering::elementwiseAt(const std::vector<const Node *> &members, Value *i) {
  LLVMScalarBuilder sb(B, elemType(members[0]->Ty.Elem));
  for (const Node *n : members) {
    std::vector<Value *> args;
    for (const Node *operand : n->Operands)
      args.push_back(load(operand, i));
    Value *value = sb.apply(n->Op, args);
    B.CreateStore(value, at(n, i));
    Computed[{n, i, B.GetInsertBlock()}] = value;
  }
}

std::vector<const Node *> GraphLowering::flatUpdate(const Node *n) const {
  if (!Gpu || WholeGraph || n->Ty.isBatched() || ProductEpilogues.count(n) ||
      ir::opInfo(n->Op).Category != ir::OpCategory::Elementwise)
    return {};
  auto group = Groups.find(n);
  std::vector<const Node *> members =
      group != Groups.end() ? group->second : std::vector<const Node *>{n};
  for (const Node *member : members)
    if (!isFlat(member) || member->Ty.Dims != n->Ty.Dims)
      return {};
  return members;
}

void GraphLowering::lowerFlatUpdates(const std::vector<std::vector<const Node *>> &updates) {
  std::vector<int64_t> ends;
  int64_t total = 0;
  for (const std::vector<const Node *> &members : updates) {
    for (const Node *member : members)
      placeInWorkspace(member);
    total += members[0]->Ty.staticElements();
    ends.push_back(total);
  }
  parallelFor(i64(total), [&](Value *i) {
    segmentAt(i, ends, [&](size_t u, Value *j) { elementwiseAt(updates[u], j); });
  });
}

void GraphLowering::segmentAt(Value *i, const std::vector<int64_t> &ends,
                              const std::function<void(size_t, Value *)> &body) {
  auto *done = llvm::BasicBlock::Create(Ctx, "segment.done", F);
  for (size_t k = 0; k < ends.size(); ++k) {
    auto *in = llvm::BasicBlock::Create(Ctx, "segment", F);
    auto *next = llvm::BasicBlock::Create(Ctx, "segment.next", F);
    B.CreateCondBr(B.CreateICmpULT(i, i64(ends[k])), in, next);
    B.SetInsertPoint(in);
    body(k, B.CreateSub(i, i64(k ? ends[k - 1] : 0)));
    B.CreateBr(done);
    B.SetInsertPoint(next);
  }
  B.CreateBr(done);
  B.SetInsertPoint(done);
}

void GraphLowering::lowerRow(const Node *n) {
  const Node *x = n->Operands[0];
  const std::vector<int64_t> &dims = x->Ty.Dims;
  Value *width = extent(dims.back());
  Value *rows = product(dims, 0, dims.size() - 1);
  llvm::Type *ft = elemType(n->Ty.Elem);
  LLVMScalarBuilder sb(B, ft);
  bool logForm = n->Op == OpCode::LogSoftmax;
  auto *staticWidth = llvm::dyn_cast<llvm::ConstantInt>(width);
  if (staticWidth && staticWidth->getSExtValue() <= SmallRowWidth) {
    // A few classes: each row in registers, straight-line code that LLVM's
    // vectorizer widens across rows.
    int64_t w = staticWidth->getSExtValue();
    parallelFor(rows, [&](Value *r) {
      Value *base = B.CreateMul(r, width);
      std::vector<Value *> xs(w), es(w);
      Value *rowMax = llvm::ConstantFP::getInfinity(ft, true);
      for (int64_t j = 0; j < w; ++j) {
        xs[j] = load(x, B.CreateAdd(base, i64(j)));
        rowMax = LLVMScalarBuilder::v(sb.max(rowMax, xs[j]));
      }
      Value *sum = llvm::ConstantFP::get(ft, 0);
      for (int64_t j = 0; j < w; ++j) {
        es[j] = LLVMScalarBuilder::v(sb.exp(B.CreateFSub(xs[j], rowMax)));
        sum = B.CreateFAdd(sum, es[j]);
      }
      Value *logSum = logForm ? LLVMScalarBuilder::v(sb.log(sum)) : nullptr;
      for (int64_t j = 0; j < w; ++j)
        B.CreateStore(logForm ? B.CreateFSub(B.CreateFSub(xs[j], rowMax), logSum)
                              : B.CreateFDiv(es[j], sum),
                      B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(base, i64(j))));
    });
    return;
  }
  llvm::IRBuilder<> entry(Entry, Entry->begin());
  llvm::AllocaInst *maxSlot = entry.CreateAlloca(ft);
  llvm::AllocaInst *sumSlot = entry.CreateAlloca(ft);
  parallelFor(rows, [&](Value *r) {
    Value *base = B.CreateMul(r, width);
    B.CreateStore(llvm::ConstantFP::getInfinity(ft, true), maxSlot);
    forRange(width, [&](Value *j) {
      Value *v = load(x, B.CreateAdd(base, j));
      B.CreateStore(LLVMScalarBuilder::v(sb.max(B.CreateLoad(ft, maxSlot), v)), maxSlot);
    });
    Value *rowMax = B.CreateLoad(ft, maxSlot);
    B.CreateStore(llvm::ConstantFP::get(ft, 0), sumSlot);
    forRange(width, [&](Value *j) {
      Value *shifted = B.CreateFSub(load(x, B.CreateAdd(base, j)), rowMax);
      Value *e = LLVMScalarBuilder::v(sb.exp(shifted));
      if (!logForm)
        B.CreateStore(e, B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(base, j)));
      B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, sumSlot), e), sumSlot);
    });
    Value *sum = B.CreateLoad(ft, sumSlot);
    Value *logSum = logForm ? LLVMScalarBuilder::v(sb.log(sum)) : nullptr;
    forRange(width, [&](Value *j) {
      Value *out = B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(base, j));
      Value *y = logForm ? B.CreateFSub(B.CreateFSub(load(x, B.CreateAdd(base, j)), rowMax), logSum)
                         : B.CreateFDiv(B.CreateLoad(ft, out), sum);
      B.CreateStore(y, out);
    });
  });
}

void GraphLowering::lowerOneHot(const Node *n) {
  const Node *labels = n->Operands[0];
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *classes = i64(n->A.Axis);
  if (Gpu) {
    // One piece of work, so that the kernel is wide: each element is 1 or
    // 0 by itself (0 across the row of an out-of-range label).
    parallelFor(elementCount(n->Ty), [&](Value *i) {
      Value *label = B.CreateSExt(load(labels, B.CreateUDiv(i, classes)), B.getInt64Ty());
      Value *hot = B.CreateICmpEQ(label, B.CreateURem(i, classes));
      B.CreateStore(B.CreateUIToFP(hot, ft), B.CreateInBoundsGEP(ft, Slots[n].Ptr, i));
    });
    return;
  }
  zeroFill(n);
  parallelFor(elementCount(labels->Ty), [&](Value *r) {
    Value *label = B.CreateSExt(load(labels, r), B.getInt64Ty());
    // Out-of-range labels (the runtime rejects them) must not write anywhere.
    Value *inRange = B.CreateICmpULT(label, classes);
    auto *set = llvm::BasicBlock::Create(Ctx, "onehot.set", F);
    auto *done = llvm::BasicBlock::Create(Ctx, "onehot.done", F);
    B.CreateCondBr(inRange, set, done);
    B.SetInsertPoint(set);
    Value *index = B.CreateAdd(B.CreateMul(r, classes), label);
    B.CreateStore(llvm::ConstantFP::get(ft, 1), B.CreateInBoundsGEP(ft, Slots[n].Ptr, index));
    B.CreateBr(done);
    B.SetInsertPoint(done);
  });
}

void GraphLowering::lowerTranspose(const Node *n) {
  const Node *x = n->Operands[0];
  Value *rows = extent(x->Ty.Dims[0]), *columns = extent(x->Ty.Dims[1]);
  llvm::Type *ft = elemType(n->Ty.Elem);
  auto *width = llvm::dyn_cast<llvm::ConstantInt>(columns);
  int64_t lanes = VectorBits / (8 * ir::byteSize(n->Ty.Elem));
  Value *done = i64(0);
  if (!Gpu && width && width->getSExtValue() < lanes && lanes > 1) {
    // Rows narrower than a vector (a narrow layer's input): a block of
    // `lanes` rows is loaded as vectors, transposed in registers by
    // exchanging ever larger sub-blocks (lanes 1, 2, 4, ... apart), and
    // its first `columns` vectors are the block's columns.
    int64_t c = width->getSExtValue();
    auto *vt = llvm::FixedVectorType::get(ft, unsigned(lanes));
    llvm::Constant *rowMask = firstLanes(B, lanes, c);
    llvm::Align align(ir::byteSize(n->Ty.Elem));
    Value *blocks = B.CreateUDiv(rows, i64(lanes));
    forRange(blocks, [&](Value *block) {
      Value *r0 = B.CreateMul(block, i64(lanes));
      std::vector<Value *> v(lanes);
      for (int64_t i = 0; i < lanes; ++i)
        v[i] = B.CreateMaskedLoad(vt, at(x, B.CreateMul(B.CreateAdd(r0, i64(i)), i64(c))), align,
                                  rowMask, llvm::Constant::getNullValue(vt));
      for (int64_t h = 1; h < lanes; h *= 2) {
        std::vector<int> low(lanes), high(lanes);
        for (int64_t l = 0; l < lanes; ++l) {
          low[l] = int((l & h) ? lanes + l - h : l);
          high[l] = int((l & h) ? lanes + l : l + h);
        }
        for (int64_t i = 0; i < lanes; ++i)
          if (!(i & h)) {
            Value *a = v[i], *b = v[i + h];
            v[i] = B.CreateShuffleVector(a, b, low);
            v[i + h] = B.CreateShuffleVector(a, b, high);
          }
      }
      for (int64_t j = 0; j < c; ++j)
        B.CreateAlignedStore(v[j], at(n, B.CreateAdd(B.CreateMul(i64(j), rows), r0)), align);
    });
    done = B.CreateMul(blocks, i64(lanes));
  }
  parallelFor(B.CreateSub(rows, done), [&](Value *i) {
    Value *r = B.CreateAdd(done, i);
    forRange(columns, [&](Value *j) {
      B.CreateStore(load(x, B.CreateAdd(B.CreateMul(r, columns), j)),
                    at(n, B.CreateAdd(B.CreateMul(j, rows), r)));
    });
  });
}

void GraphLowering::forRow(int64_t width, const std::function<void(Value *, unsigned)> &body) {
  if (!Gpu && width > 1 && width <= 64)
    return body(i64(0), unsigned(width));
  forRange(i64(width), [&](Value *j) { body(j, 0); });
}

Value *GraphLowering::loadLanes(llvm::Type *elem, Value *ptr, unsigned lanes) {
  if (!lanes)
    return B.CreateLoad(elem, ptr);
  return B.CreateAlignedLoad(llvm::FixedVectorType::get(elem, lanes), ptr,
                             llvm::Align(elem->getPrimitiveSizeInBits() / 8));
}

void GraphLowering::storeLanes(Value *value, Value *ptr) {
  B.CreateAlignedStore(value, ptr, llvm::Align(value->getType()->getScalarSizeInBits() / 8));
}

void GraphLowering::zeroFill(const Node *n) {
  llvm::Type *ft = elemType(n->Ty.Elem);
  parallelFor(elementCount(n->Ty), [&](Value *i) {
    B.CreateStore(llvm::ConstantFP::get(ft, 0), B.CreateInBoundsGEP(ft, Slots[n].Ptr, i));
  });
}

void GraphLowering::lowerDropout(const Node *n) {
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *key = dropoutKey(n), *first = batchOffset(n);
  parallelFor(elementCount(n->Ty), [&](Value *i) {
    Value *y = droppedElement(n, key, B.CreateAdd(first, i), i);
    B.CreateStore(y, B.CreateInBoundsGEP(ft, Slots[n].Ptr, i));
  });
}

Value *GraphLowering::dropoutKey(const Node *n) {
  // A counter-based generator: each element's keep decision is a hash
  // (splitmix64's finalizer) of the call's seed, the op's stream, the step
  // and the element's index. The backward op recomputes the same mask.
  Value *seed = loadField(CallSeed, B.getInt64Ty());
  Value *step = loadField(CallStep, B.getInt64Ty());
  return B.CreateAdd(
      B.CreateXor(seed, i64(int64_t(0x9E3779B97F4A7C15ULL * uint64_t(n->A.Offset + 1)))),
      B.CreateMul(step, i64(int64_t(0xD1B54A32D192ED03ULL))));
}

Value *GraphLowering::droppedElement(const Node *n, Value *key, Value *counter, Value *i) {
  llvm::Type *ft = elemType(n->Ty.Elem);
  double p = n->A.Value;
  Value *scale = llvm::ConstantFP::get(ft, 1.0 / (1.0 - p));
  // keep when the top 24 bits, as a fraction of 2^24, are at least p.
  Value *threshold = i64(int64_t(std::ceil(p * double(1 << 24))));
  Value *z = B.CreateAdd(key, B.CreateMul(counter, i64(int64_t(0x9E3779B97F4A7C15ULL))));
  z = B.CreateMul(B.CreateXor(z, B.CreateLShr(z, 30)), i64(int64_t(0xBF58476D1CE4E5B9ULL)));
  z = B.CreateMul(B.CreateXor(z, B.CreateLShr(z, 27)), i64(int64_t(0x94D049BB133111EBULL)));
  z = B.CreateXor(z, B.CreateLShr(z, 31));
  Value *keep = B.CreateICmpUGE(B.CreateLShr(z, 40), threshold);
  return B.CreateSelect(keep, B.CreateFMul(load(n->Operands[0], i), scale),
                        llvm::ConstantFP::get(ft, 0));
}

void GraphLowering::ifThen(Value *cond, const std::function<void()> &body) {
  auto *then = llvm::BasicBlock::Create(Ctx, "if.then", F);
  auto *done = llvm::BasicBlock::Create(Ctx, "if.done", F);
  B.CreateCondBr(cond, then, done);
  B.SetInsertPoint(then);
  body();
  B.CreateBr(done);
  B.SetInsertPoint(done);
}

Value *GraphLowering::destination(const ir::Store &store) {
  CallField f = store.Dest == ir::Buffer::Params  ? CallParams
                : store.Dest == ir::Buffer::State ? CallState
                : store.Dest == ir::Buffer::Grads ? CallGrads
                                                  : CallOutput;
  return offsetPtr(buffer(f), store.Value->Ty.Elem, store.Offset);
}

void GraphLowering::lowerStore(const ir::Store &store) {
  const Node *n = store.Value;
  if (store.Dest == ir::Buffer::Loss) {
    storeOnce(B.CreateFPCast(scalarOf(n), B.getDoubleTy()), field(CallLoss));
    return;
  }
  auto inPlace = InPlace.find(n);
  if (inPlace != InPlace.end() && inPlace->second == &store)
    return;
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *dest = rowStart(n, destination(store));
  Value *count = elementCount(n->Ty);
  const Slot &slot = slotOf(n);
  if (slot.Scalar) {
    parallelFor(count,
                [&](Value *i) { B.CreateStore(slot.Scalar, B.CreateInBoundsGEP(ft, dest, i)); });
    return;
  }
  if (Gpu) {
    parallelFor(count,
                [&](Value *i) { B.CreateStore(load(n, i), B.CreateInBoundsGEP(ft, dest, i)); });
    return;
  }
  Value *bytes = B.CreateMul(count, i64(ir::byteSize(n->Ty.Elem)));
  B.CreateMemMove(dest, llvm::MaybeAlign(4), slot.Ptr, llvm::MaybeAlign(4), bytes);
}

} // namespace nnc::lowering
