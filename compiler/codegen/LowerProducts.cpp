//===- LowerProducts.cpp - Matrix products and sums -----------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Matrix products (with their epilogues, their depth cut into runs on the
// GPU, and the CPU's skipping of a relu adjoint's zero columns) and sums
// (column sums, sums of every term, the GPU's block reductions).
//
//===----------------------------------------------------------------------===//

#include "codegen/GraphLowering.h"

#include "llvm/IR/IntrinsicsX86.h"

#include <algorithm>
#include <numeric>

namespace nnc::lowering {

void GraphLowering::lowerProduct(const Node *x, const Node *product, const Node *bias, bool relu,
                                 const Node *mask) {
  // Convolutions have epilogues on the GPU only (planFusion).
  if (product->Op == OpCode::Conv2D)
    return gpuConv2D(product, x, bias, relu);
  if (product->Op == OpCode::Conv2DGradInput)
    return gpuConv2DGradInput(product, x, mask);
  auto sums = SummedBy.find(x);
  if (sums == SummedBy.end()) {
    lowerMatMul(product, x, bias, relu, mask);
    return;
  }
  // The sums' buffer, ahead of their node (planWorkspace has it live from
  // here).
  if (!Slots.count(sums->second))
    materialize(sums->second);
  Value *summed = lowerMatMul(product, x, bias, relu, mask, Slots.at(sums->second).Ptr);
  SummedByProduct[sums->second] = summed ? summed : B.getFalse();
}

std::pair<Value *, Value *> GraphLowering::productExtents(const Node *n) {
  // Operands of rank above 2 are matrices whose leading dimensions make the
  // rows (see matmul's shape rule).
  const std::vector<int64_t> &dims = n->Ty.Dims, &aDims = n->Operands[0]->Ty.Dims;
  Value *rows = product(dims, 0, dims.size() - 1);
  Value *depth = n->A.TransA ? product(aDims, 0, aDims.size() - 1) : extent(aDims.back());
  return {rows, depth};
}

int64_t GraphLowering::productRuns(const Node *n) const {
  if (!Gpu || WholeGraph)
    return 1;
  if (n->Op == OpCode::Conv2DGradFilter) {
    // Its depth is the batch's: as many runs as the tiles leave.
    const std::vector<int64_t> &dims = n->Ty.Dims;
    int64_t tiles =
        ceilDiv(dims[0], GpuGemmTile) * ceilDiv(dims[1] * dims[2] * dims[3], GpuGemmTile);
    return std::max<int64_t>(GpuProductUnits / tiles, 1);
  }
  if (n->Op != OpCode::MatMul || !isTiledMatMul(n))
    return 1;
  auto [rows, columns, depth] = matMulExtents(n);
  int64_t tiles = std::max<int64_t>(ceilDiv(rows, GpuGemmTile), 1) * ceilDiv(columns, GpuGemmTile);
  int64_t runs = GpuProductUnits / tiles;
  if (depth)
    runs = std::min(runs, depth / GpuRunDepth);
  return std::max<int64_t>(runs, 1);
}

int64_t GraphLowering::productRunBytes(const Node *n) const {
  // The runs times the tiles are at most GpuProductUnits (see
  // lowerSplitProduct), whatever the batch.
  int64_t elements = GpuProductUnits * GpuGemmTile * GpuGemmTile;
  if (!n->Ty.isBatched())
    elements = std::min(elements, productRuns(n) * n->Ty.staticElements());
  return elements * ir::byteSize(n->Ty.Elem);
}

void GraphLowering::lowerSplitProduct(const Node *n, const Node *into, const GemmShape &shape,
                                      const Node *bias, const Node *mask) {
  if (shape.Accumulate || shape.LdA || shape.LdB || shape.LdC)
    throw std::logic_error("internal error: a split product that accumulates or has strides");
  auto [count, runDepth] = productSplit(B, n, Batch);
  GpuGemmSplit runs{count, runDepth,
                    B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)))};
  auto [rows, depth] = productExtents(n);
  gemm(shape, slotOf(n->Operands[0]).Ptr, slotOf(n->Operands[1]).Ptr, slotOf(into).Ptr, rows, depth,
       bias ? slotOf(bias).Ptr : nullptr, mask ? slotOf(mask).Ptr : nullptr, nullptr, &runs);

  auto elements = [this, n, columns = shape.N] {
    return B.CreateMul(productExtents(n).first, i64(columns));
  };
  addProductRuns(n, into, shape.N, elements, bias, shape.Relu, mask);
}

void GraphLowering::addProductRuns(const Node *n, const Node *into, int64_t columns,
                                   const std::function<Value *()> &elements, const Node *bias,
                                   bool relu, const Node *mask) {
  if (RunsAfter) {
    RunsAfter->push_back([=] { addProductRuns(n, into, columns, elements, bias, relu, mask); });
    return;
  }
  beginRunsKernel(
      n, [n](llvm::IRBuilder<> &b, Value *rows) { return productSplit(b, n, rows).first; });
  Value *runs = productSplit(B, n, Batch).first;
  Value *partials = B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)));
  llvm::Type *ft = elemType(n->Ty.Elem);
  ifThen(B.CreateICmpUGT(runs, i64(1)), [&] {
    Value *stride = elements();
    llvm::AllocaInst *sum = entryAlloca(ft);
    parallelFor(stride, [&](Value *i) {
      auto partial = [&](Value *run) {
        return B.CreateLoad(
            ft, B.CreateInBoundsGEP(ft, partials, B.CreateAdd(B.CreateMul(run, stride), i)));
      };
      B.CreateStore(partial(i64(0)), sum);
      forRange(i64(1), runs, [&](Value *run) {
        B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, sum), partial(run)), sum);
      });
      Value *total = B.CreateLoad(ft, sum);
      if (bias)
        total = B.CreateFAdd(total, load(bias, B.CreateURem(i, i64(columns))));
      B.CreateStore(reluAndMask(total, relu, mask, i), at(into, i));
    });
  });
}

Value *GraphLowering::lowerMatMul(const Node *n, const Node *into, const Node *bias, bool relu,
                                  const Node *mask, Value *columnSums) {
  Value *dest = slotOf(into).Ptr;
  const Node *a = n->Operands[0], *b = n->Operands[1];
  size_t rank = n->Ty.Dims.size(), aRank = a->Ty.Dims.size();
  if (n->Ty.Dims.back() == ir::N) {
    lowerColumnsProduct(n, dest, bias, relu, mask);
    return nullptr;
  }
  GemmShape shape;
  shape.TransA = n->A.TransA;
  shape.TransB = n->A.TransB;
  // A sum over the batch of rows stored along it (a weight's gradient in
  // batch-minor layout): dot products along the rows.
  shape.DotProducts =
      !Gpu && shape.TransB && !shape.TransA && rank == 2 && aRank == 2 && a->Ty.Dims[1] == ir::N;
  shape.Bias = bias != nullptr;
  shape.Relu = relu;
  shape.Mask = mask != nullptr;
  shape.N = n->Ty.Dims.back();
  shape.Elem = elemType(n->Ty.Elem);
  shape.VectorBits = VectorBits;
  Value *rows, *depth;
  std::tie(rows, depth) = productExtents(n);
  // Shapes the micro-kernel has nothing to block in (a dense layer of one
  // input, or of one input and one output: linreg). Whatever the
  // transposes, op(A)[m, k] is A[m] when K = 1 and A[k] when M = 1, and
  // likewise for B.
  llvm::Type *ft = shape.Elem;
  auto element = [&](const Node *x, Value *i) {
    return B.CreateLoad(ft, B.CreateInBoundsGEP(ft, slotOf(x).Ptr, i));
  };
  auto finish = [&](Value *sum, Value *i, Value *j) { // the GEMM's epilogue at C[i, j]
    if (bias)
      sum = B.CreateFAdd(sum, element(bias, j));
    return reluAndMask(sum, relu, mask, B.CreateAdd(B.CreateMul(i, i64(shape.N)), j));
  };
  if (depth == i64(1) && Gpu) {
    // A thread per element, so that a warp's stores coalesce.
    parallelFor(B.CreateMul(rows, i64(shape.N)), [&](Value *i) {
      auto [m, j] = rowAndColumn(i, shape.N);
      B.CreateStore(finish(B.CreateFMul(element(a, m), element(b, j)), m, j),
                    B.CreateInBoundsGEP(ft, dest, i));
    });
    return nullptr;
  }
  if (depth == i64(1)) {
    parallelFor(rows, [&](Value *m) {
      Value *am = element(a, m);
      forRange(i64(shape.N), [&](Value *j) {
        B.CreateStore(finish(B.CreateFMul(am, element(b, j)), m, j),
                      B.CreateInBoundsGEP(ft, dest, B.CreateAdd(B.CreateMul(m, i64(shape.N)), j)));
      });
    });
    return nullptr;
  }
  if (rows == i64(1) && shape.N == 1) {
    Value *sum = reduce(depth, llvm::ConstantFP::get(ft, 0), [&](Value *k) {
      return B.CreateFMul(load(a, k), load(b, k)); // operands may be inlined
    });
    storeOnce(finish(sum, i64(0), i64(0)), dest);
    return nullptr;
  }
  if (productRuns(n) > 1 && !PerThread && !ImageRow) {
    lowerSplitProduct(n, into, shape, bias, mask);
    return nullptr;
  }
  Value *biasPtr = bias ? slotOf(bias).Ptr : nullptr, *maskPtr = mask ? slotOf(mask).Ptr : nullptr;
  // On the function's own thread, at its top level (see
  // lowerSkippingZeroColumns).
  if (auto skip = SkipsColumnsOf.find(n); skip != SkipsColumnsOf.end() && !OnWorker && !ImageRow)
    return lowerSkippingZeroColumns(n, skip->second, shape, dest, rows, depth, biasPtr, maskPtr,
                                    columnSums);
  return gemm(shape, slotOf(a).Ptr, slotOf(b).Ptr, dest, rows, depth, biasPtr, maskPtr, columnSums);
}

void GraphLowering::planColumnSkips() {
  if (!SkipDeadUnits || VectorBits < 512)
    return;
  for (const auto &node : G.nodes()) {
    const Node *p = node.get();
    if (p->Op != OpCode::MatMul || p->A.TransB || InImageChain.count(p) || p->Ty.Dims.size() != 2)
      continue;
    const Node *d = p->Operands[0], *b = p->Operands[1];
    if (!MaskEpilogues.count(d) || d->Ty.Dims.size() != 2 || d->Ty.Dims[0] != ir::N ||
        b->Ty.Dims.size() != 2 || p->Ty.Dims[1] == ir::N)
      continue;
    int64_t columns = d->Ty.Dims[1], elemBytes = ir::byteSize(d->Ty.Elem);
    int64_t lanes = VectorBits / (8 * elemBytes);
    // The live columns are found a vector at a time, in registers.
    if (columns % lanes || columns / lanes > 8)
      continue;
    int64_t liveRowBytes = 0;
    if (!p->A.TransA) {
      // D B, B a weight [C, width]: its live rows are copied, in order.
      if (b->Ty.isBatched())
        continue;
      liveRowBytes = columns * p->Ty.Dims[1] * elemBytes;
    } else if (p->Ty.isBatched() || computedBy(p) != p || SummedBy.count(p)) {
      // D^T X must be a weight's gradient [C, width] with no epilogue: its
      // live rows are computed, then spread to their places.
      continue;
    }
    ColumnSkip &skip = ColumnSkips[d];
    skip.Products.push_back(p);
    skip.LiveRowBytes = std::max(skip.LiveRowBytes, liveRowBytes);
    (p->A.TransA ? skip.SpreadWidth : skip.CopiedWidth) += p->Ty.Dims[1];
  }
  // A dead column saves its products a multiply-add per row and column of
  // their results; the copies cost about a vector operation per vector of
  // D (see compactColumns). Below 64 columns of results in all, they cost
  // more than a few dead columns save (iris's first layer: 4, for the
  // gradient of its weight only), and no code is made for them.
  for (auto it = ColumnSkips.begin(); it != ColumnSkips.end();) {
    if (it->second.CopiedWidth + it->second.SpreadWidth < 64) {
      it = ColumnSkips.erase(it);
      continue;
    }
    for (const Node *p : it->second.Products)
      SkipsColumnsOf[p] = it->first;
    ++it;
  }
}

Value *GraphLowering::columnSkipFixed(const Node *d) {
  return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(ColumnSkips.at(d).Fixed));
}

Value *GraphLowering::columnSkipCopy(const Node *d) {
  return B.CreateInBoundsGEP(
      B.getInt8Ty(), Workspace,
      B.CreateAdd(i64(Size.Fixed), B.CreateMul(i64(ColumnSkips.at(d).PerRow), Batch)));
}

void GraphLowering::compactColumns(const Node *d) {
  ColumnSkip &skip = ColumnSkips.at(d);
  llvm::Type *ft = elemType(d->Ty.Elem);
  unsigned bits = ft->getPrimitiveSizeInBits();
  int64_t columns = d->Ty.Dims[1], lanes = VectorBits / bits, vectors = columns / lanes;
  auto *vectorTy = llvm::FixedVectorType::get(ft, unsigned(lanes));
  auto *intsTy = llvm::FixedVectorType::get(B.getIntNTy(bits), unsigned(lanes));
  llvm::Align align(bits / 8);
  Value *rows = extent(d->Ty.Dims[0]), *data = slotOf(d).Ptr;
  auto rowVector = [&](Value *row, int64_t v) {
    Value *index = B.CreateAdd(B.CreateMul(row, i64(columns)), i64(v * lanes));
    return B.CreateAlignedLoad(vectorTy, elementAt(ft, data, index), align);
  };
  // A column holds a nonzero (or NaN) when the OR of its elements' bits,
  // less the sign, is not 0: -0 counts as zero.
  Value *zeros = llvm::Constant::getNullValue(intsTy);
  Value *magnitudeBits = llvm::ConstantInt::get(intsTy, llvm::APInt::getSignedMaxValue(bits));
  std::vector<llvm::AllocaInst *> seen(vectors);
  for (auto &slot : seen) {
    slot = entryAlloca(intsTy);
    B.CreateStore(zeros, slot);
  }
  forRange(rows, [&](Value *i) {
    for (int64_t v = 0; v < vectors; ++v) {
      Value *magnitude = B.CreateAnd(B.CreateBitCast(rowVector(i, v), intsTy), magnitudeBits);
      B.CreateStore(B.CreateOr(B.CreateLoad(intsTy, seen[v]), magnitude), seen[v]);
    }
  });
  // The live columns' indices, ascending, and their count.
  Value *fixed = columnSkipFixed(d);
  Value *indices = B.CreateInBoundsGEP(B.getInt64Ty(), fixed, i64(1));
  std::vector<Value *> live(vectors), counts(vectors), firsts(vectors);
  Value *count = i64(0);
  for (int64_t v = 0; v < vectors; ++v) {
    live[v] = B.CreateICmpNE(B.CreateLoad(intsTy, seen[v]), zeros);
    for (int64_t l = 0; l < lanes; ++l) {
      B.CreateStore(i64(v * lanes + l), B.CreateInBoundsGEP(B.getInt64Ty(), indices, count));
      count = B.CreateAdd(count, B.CreateZExt(B.CreateExtractElement(live[v], l), B.getInt64Ty()));
    }
    Value *liveCount = B.CreateUnaryIntrinsic(
        llvm::Intrinsic::ctpop, B.CreateBitCast(live[v], B.getIntNTy(unsigned(lanes))));
    counts[v] = B.CreateZExt(liveCount, B.getInt64Ty());
    // The first liveCount lanes, where the compressed vector is stored.
    Value *prefix = B.CreateSub(B.CreateShl(i64(1), counts[v]), i64(1));
    firsts[v] =
        B.CreateBitCast(B.CreateTrunc(prefix, B.getIntNTy(unsigned(lanes))), live[v]->getType());
  }
  // Skipping pays when the dead columns' multiply-adds (16 a cycle) take
  // longer than the copies: of D's live columns (a compress and a store
  // per vector, about 4 cycles), of a D B's B's live rows (a cycle per
  // vector) and of a D^T X's rows to their places (about 2 cycles per
  // vector, moved or zeroed). In 16ths of a cycle:
  //   dead rows (copied + spread) > 4 rows C + live copied + 2 C spread.
  // Otherwise the count stored is C, and the products run whole (with 64
  // rows, mnist_mlp's first layer would need 5 dead units of its 128, for
  // its weight's gradient of 784 columns, 400 KB to spread).
  int64_t width = skip.CopiedWidth + skip.SpreadWidth;
  Value *dead = B.CreateSub(i64(columns), count);
  Value *saved = B.CreateMul(B.CreateMul(dead, rows), i64(width));
  Value *cost = B.CreateAdd(
      B.CreateMul(rows, i64(4 * columns)),
      B.CreateAdd(B.CreateMul(count, i64(skip.CopiedWidth)), i64(2 * columns * skip.SpreadWidth)));
  Value *partial = B.CreateAnd(B.CreateICmpSGT(count, i64(0)), B.CreateICmpSGT(saved, cost));
  B.CreateStore(B.CreateSelect(partial, count, i64(columns)), fixed);
  ifThen(partial, [&] {
    Value *packed = columnSkipCopy(d);
    // Rolled: unrolled, the loop holds more masks and offsets than there
    // are registers.
    forRange(
        i64(0), rows,
        [&](Value *i) {
          Value *at = B.CreateMul(i, i64(columns));
          for (int64_t v = 0; v < vectors; ++v) {
            // Compressed in a register, then stored: compressing to memory is
            // microcoded on Zen 4 (iris's step took 1.7 times as long).
            Value *compressed = B.CreateIntrinsic(
                llvm::Intrinsic::x86_avx512_mask_compress, {vectorTy},
                {rowVector(i, v), llvm::Constant::getNullValue(vectorTy), live[v]});
            B.CreateMaskedStore(compressed, elementAt(ft, packed, at), align, firsts[v]);
            at = B.CreateAdd(at, counts[v]);
          }
        },
        true);
  });
  skip.Compacted = true;
}

Value *GraphLowering::lowerSkippingZeroColumns(const Node *n, const Node *d, const GemmShape &shape,
                                               Value *dest, Value *rows, Value *depth, Value *bias,
                                               Value *mask, Value *columnSums) {
  const ColumnSkip &skip = ColumnSkips.at(d);
  // The first product finds the live columns for both; the code of either
  // runs at the top level of the function, so the second's runs after it.
  if (!skip.Compacted)
    compactColumns(d);
  const Node *b = n->Operands[1];
  int64_t columns = d->Ty.Dims[1], rowBytes = shape.N * ir::byteSize(n->Ty.Elem);
  llvm::Align align(ir::byteSize(n->Ty.Elem));
  Value *fixed = columnSkipFixed(d);
  Value *indices = B.CreateInBoundsGEP(B.getInt64Ty(), fixed, i64(1));
  Value *live = B.CreateLoad(B.getInt64Ty(), fixed);
  auto liveIndex = [&](Value *t) {
    return B.CreateLoad(B.getInt64Ty(), B.CreateInBoundsGEP(B.getInt64Ty(), indices, t));
  };
  auto row = [&](Value *matrix, Value *r) {
    return B.CreateInBoundsGEP(B.getInt8Ty(), matrix, B.CreateMul(r, i64(rowBytes)));
  };
  Value *packed = columnSkipCopy(d);
  // The live columns are the first of rows of C.
  GemmShape packedShape = shape;
  packedShape.LdA = columns;

  auto *skipping = llvm::BasicBlock::Create(Ctx, "skip.columns", F);
  auto *whole = llvm::BasicBlock::Create(Ctx, "skip.none", F);
  auto *done = llvm::BasicBlock::Create(Ctx, "skip.done", F);
  B.CreateCondBr(B.CreateAnd(B.CreateICmpSGT(live, i64(0)), B.CreateICmpSLT(live, i64(columns))),
                 skipping, whole);
  B.SetInsertPoint(whole);
  Value *wholeSummed =
      gemm(shape, slotOf(d).Ptr, slotOf(b).Ptr, dest, rows, depth, bias, mask, columnSums);
  llvm::BasicBlock *wholeEnd = B.GetInsertBlock();
  B.CreateBr(done);

  B.SetInsertPoint(skipping);
  Value *skippingSummed = nullptr;
  if (!shape.TransA) {
    // D' B': the depth is the live columns, B's rows copied after the
    // indices. Each element's chain of multiply-adds is the whole
    // product's less the terms of zeros (which add a zero: the sums are
    // the same, but for the sign of a zero sum).
    Value *liveRows = B.CreateInBoundsGEP(B.getInt8Ty(), fixed, i64(8 * (1 + columns)));
    forRange(live, [&](Value *t) {
      B.CreateMemCpy(row(liveRows, t), align, row(slotOf(b).Ptr, liveIndex(t)), align, rowBytes);
    });
    skippingSummed = gemm(packedShape, packed, liveRows, dest, rows, live, bias, mask, columnSums);
  } else {
    // D'^T X into the first rows of C, then each to its column's row, the
    // last first (a live column's index is at least its place), with zeros
    // in the rows of the others.
    gemm(packedShape, packed, slotOf(b).Ptr, dest, live, depth, nullptr, nullptr, nullptr);
    llvm::AllocaInst *next = entryAlloca(B.getInt64Ty());
    B.CreateStore(B.CreateSub(live, i64(1)), next);
    forRange(i64(columns), [&](Value *u) {
      Value *j = B.CreateSub(i64(columns - 1), u), *t = B.CreateLoad(B.getInt64Ty(), next);
      Value *isLive = B.CreateAnd(
          B.CreateICmpSGE(t, i64(0)),
          B.CreateICmpEQ(liveIndex(B.CreateBinaryIntrinsic(llvm::Intrinsic::smax, t, i64(0))), j));
      ifThen(isLive, [&] {
        ifThen(B.CreateICmpNE(t, j),
               [&] { B.CreateMemCpy(row(dest, j), align, row(dest, t), align, rowBytes); });
        B.CreateStore(B.CreateSub(t, i64(1)), next);
      });
      ifThen(B.CreateNot(isLive),
             [&] { B.CreateMemSet(row(dest, j), B.getInt8(0), rowBytes, align); });
    });
  }
  llvm::BasicBlock *skippingEnd = B.GetInsertBlock();
  B.CreateBr(done);
  B.SetInsertPoint(done);
  if (!wholeSummed)
    return nullptr;
  llvm::PHINode *summed = B.CreatePHI(B.getInt1Ty(), 2);
  summed->addIncoming(wholeSummed, wholeEnd);
  summed->addIncoming(skippingSummed, skippingEnd);
  return summed;
}

Value *GraphLowering::reluAndMask(Value *sum, bool relu, const Node *mask, Value *index) {
  Value *zero = llvm::ConstantFP::get(sum->getType(), 0);
  if (relu)
    sum = reluOf(B, sum);
  if (mask) {
    Value *r = B.CreateLoad(sum->getType(), at(mask, index));
    sum = timesIndicator(B, sum, B.CreateFCmpOGT(r, zero));
  }
  return sum;
}

void GraphLowering::lowerColumnsProduct(const Node *n, Value *dest, const Node *bias, bool relu,
                                        const Node *mask) {
  // C[M, N] = op(A)[M, K] B[K, N] with a batch of columns: a narrow layer in
  // batch-minor layout (passes/Layout.cpp), M and K a few each. One loop
  // over the columns, vectorized along them, with op(A)'s M x K values
  // loaded once; each element is the chain of multiply-adds of the GEMM
  // kernels: from the bias (a value per row), k ascending.
  const Node *a = n->Operands[0], *b = n->Operands[1];
  if (n->A.TransB || a->Ty.isBatched() || n->Ty.Dims.size() != 2 || a->Ty.Dims.size() != 2)
    throw std::logic_error("internal error: a product with batched columns not in "
                           "batch-minor form");
  int64_t rows = n->Ty.Dims[0], depth = b->Ty.Dims[0];
  Value *columns = extent(ir::N);
  llvm::Type *ft = elemType(n->Ty.Elem);
  std::vector<Value *> weights(rows * depth), starts(rows, llvm::ConstantFP::get(ft, 0));
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t k = 0; k < depth; ++k)
      weights[m * depth + k] =
          B.CreateLoad(ft, at(a, i64(n->A.TransA ? k * rows + m : m * depth + k)));
    if (bias)
      starts[m] = B.CreateLoad(ft, at(bias, i64(m)));
  }
  independentFor(columns, [&](Value *j) {
    std::vector<Value *> column(depth);
    for (int64_t k = 0; k < depth; ++k)
      column[k] = B.CreateLoad(ft, at(b, B.CreateAdd(B.CreateMul(i64(k), columns), j)));
    for (int64_t m = 0; m < rows; ++m) {
      Value *sum = starts[m];
      for (int64_t k = 0; k < depth; ++k)
        sum = B.CreateIntrinsic(llvm::Intrinsic::fmuladd, {ft},
                                {weights[m * depth + k], column[k], sum});
      Value *index = B.CreateAdd(B.CreateMul(i64(m), columns), j);
      B.CreateStore(reluAndMask(sum, relu, mask, index), B.CreateInBoundsGEP(ft, dest, index));
    }
  });
}

void GraphLowering::lowerReduceSum(const Node *n) {
  const Node *x = n->Operands[0];
  const std::vector<int64_t> &dims = x->Ty.Dims;
  size_t axis = n->A.Axis;
  Value *outer = product(dims, 0, axis);
  Value *length = extent(dims[axis]);
  Value *inner = product(dims, axis + 1, dims.size());
  llvm::Type *ft = elemType(n->Ty.Elem);
  if (columnSumRuns(n) > 1 && !PerThread)
    return lowerSplitColumnSums(n);
  if (inner == i64(1)) {
    // Contiguous sums (the bias of a one-output layer): in registers.
    parallelFor(outer, [&](Value *o) {
      Value *base = B.CreateMul(o, length);
      Value *sum = reduce(length, llvm::ConstantFP::get(ft, 0),
                          [&](Value *l) { return load(x, B.CreateAdd(base, l)); });
      B.CreateStore(sum, at(n, o));
    });
    return;
  }
  auto *columns = llvm::dyn_cast<llvm::ConstantInt>(inner);
  int64_t lanes = VectorBits / (8 * ir::byteSize(n->Ty.Elem));
  if (Gpu) {
    // A thread per sum, each over its column in row order.
    parallelFor(B.CreateMul(outer, inner), [&](Value *oj) {
      Value *o = B.CreateUDiv(oj, inner), *j = B.CreateURem(oj, inner);
      Value *sum = reduce(length, llvm::ConstantFP::get(ft, 0), [&](Value *l) {
        return load(x, B.CreateAdd(B.CreateMul(B.CreateAdd(B.CreateMul(o, length), l), inner), j));
      });
      B.CreateStore(sum, at(n, oj));
    });
    return;
  }
  if (columns && columns->getSExtValue() <= 8 * lanes && !Inlined.count(x))
    return lowerColumnSums(n, outer, length, columns->getSExtValue());
  forRange(outer, [&](Value *o) {
    Value *rowBase = B.CreateMul(o, inner);
    forRange(inner, [&](Value *j) {
      B.CreateStore(llvm::ConstantFP::get(ft, 0),
                    B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(rowBase, j)));
    });
    forRange(length, [&](Value *l) {
      Value *inBase = B.CreateMul(B.CreateAdd(B.CreateMul(o, length), l), inner);
      forRange(inner, [&](Value *j) {
        Value *out = B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(rowBase, j));
        Value *sum = B.CreateFAdd(B.CreateLoad(ft, out), load(x, B.CreateAdd(inBase, j)));
        B.CreateStore(sum, out);
      });
    });
  });
}

int64_t GraphLowering::columnSumRuns(const Node *n) const {
  if (!Gpu || WholeGraph || !isColumnSum(n))
    return 1;
  return std::max<int64_t>(GpuSumThreads / n->Ty.staticElements(), 1);
}

void GraphLowering::lowerSplitColumnSums(const Node *n) {
  // Run r sums rows [r R, (r + 1) R) of each column, in order, into its
  // partial sums; with one run, into the sums.
  const Node *x = n->Operands[0];
  int64_t columns = n->Ty.staticElements();
  llvm::Type *ft = elemType(n->Ty.Elem);
  auto partials = [&] { return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n))); };
  auto [runs, runRows] = columnSumSplit(B, n, Batch);
  Value *cut = B.CreateICmpUGT(runs, i64(1));
  parallelFor(B.CreateMul(runs, i64(columns)), [&](Value *i) {
    auto [run, column] = rowAndColumn(i, columns);
    Value *begin = B.CreateMul(run, runRows);
    Value *end = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, Batch, B.CreateAdd(begin, runRows));
    llvm::AllocaInst *sum = entryAlloca(ft);
    B.CreateStore(llvm::ConstantFP::get(ft, 0), sum);
    forRange(begin, end, [&](Value *row) {
      Value *term = load(x, B.CreateAdd(B.CreateMul(row, i64(columns)), column));
      B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, sum), term), sum);
    });
    Value *to = B.CreateSelect(cut, B.CreateInBoundsGEP(ft, partials(), i), at(n, column));
    B.CreateStore(B.CreateLoad(ft, sum), to);
  });
  addColumnSumRuns(n);
}

void GraphLowering::addColumnSumRuns(const Node *n) {
  if (RunsAfter) {
    RunsAfter->push_back([=] { addColumnSumRuns(n); });
    return;
  }
  int64_t columns = n->Ty.staticElements();
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *runs = beginRunsKernel(
      n, [n](llvm::IRBuilder<> &b, Value *rows) { return columnSumSplit(b, n, rows).first; });
  Value *partials = B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)));
  ifThen(B.CreateICmpUGT(runs, i64(1)), [&] {
    llvm::AllocaInst *sum = entryAlloca(ft);
    parallelFor(i64(columns), [&](Value *column) {
      B.CreateStore(llvm::ConstantFP::get(ft, 0), sum);
      forRange(runs, [&](Value *run) {
        Value *partial = B.CreateLoad(
            ft,
            B.CreateInBoundsGEP(ft, partials, B.CreateAdd(B.CreateMul(run, i64(columns)), column)));
        B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, sum), partial), sum);
      });
      B.CreateStore(B.CreateLoad(ft, sum), at(n, column));
    });
  });
}

void GraphLowering::lowerColumnSums(const Node *n, Value *outer, Value *length, int64_t columns) {
  // The sums of a few vectors' worth of columns, over `length` rows, kept
  // in vector registers: a loop over the rows that adds each column to its
  // own sum in memory is bound by the store and reload of every sum. Each
  // column is still summed in row order.
  const Node *x = n->Operands[0];
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t lanes = VectorBits / (8 * ir::byteSize(n->Ty.Elem));
  auto *vt = llvm::FixedVectorType::get(ft, unsigned(lanes));
  int64_t vectors = (columns + lanes - 1) / lanes;
  auto maskOf = [&](int64_t k) -> Value * {
    int64_t valid = std::min(lanes, columns - k * lanes);
    return valid == lanes ? nullptr : firstLanes(B, lanes, valid);
  };
  auto vectorAt = [&](Value *base, Value *index) { return B.CreateInBoundsGEP(ft, base, index); };
  llvm::Align align(ir::byteSize(n->Ty.Elem));
  // Rows narrower than a vector: a block of rows that ends where a vector
  // ends (16 rows of 5 columns in 5 vectors of 16 lanes) is added as whole
  // vectors, each lane to its own sum; the lanes of each column are added
  // at the end, then the rows after the last whole block. A column's sum
  // is so reassociated (by its rows' position in the block), the same way
  // for any thread count.
  int64_t shared = std::gcd(columns, lanes);
  int64_t blockRows = lanes / shared, blockVectors = columns / shared;
  if (blockRows > 1 && blockVectors <= 8) {
    forRange(outer, [&](Value *o) {
      Value *in = vectorAt(slotOf(x).Ptr, B.CreateMul(B.CreateMul(o, length), i64(columns)));
      Value *out = vectorAt(slotOf(n).Ptr, B.CreateMul(o, i64(columns)));
      std::vector<llvm::AllocaInst *> sums;
      for (int64_t k = 0; k < blockVectors; ++k) {
        sums.push_back(entryAlloca(vt));
        B.CreateStore(llvm::Constant::getNullValue(vt), sums.back());
      }
      Value *blocks = B.CreateUDiv(length, i64(blockRows));
      forRange(blocks, [&](Value *b) {
        Value *block = B.CreateMul(b, i64(blockRows * columns));
        for (int64_t k = 0; k < blockVectors; ++k) {
          Value *v =
              B.CreateAlignedLoad(vt, vectorAt(in, B.CreateAdd(block, i64(k * lanes))), align);
          B.CreateStore(B.CreateFAdd(B.CreateLoad(vt, sums[k]), v), sums[k]);
        }
      });
      std::vector<Value *> totals(columns, nullptr);
      for (int64_t k = 0; k < blockVectors; ++k) {
        Value *sum = B.CreateLoad(vt, sums[k]);
        for (int64_t l = 0; l < lanes; ++l) {
          Value *&total = totals[(k * lanes + l) % columns];
          Value *lane = B.CreateExtractElement(sum, B.getInt64(l));
          total = total ? B.CreateFAdd(total, lane) : lane;
        }
      }
      for (int64_t c = 0; c < columns; ++c)
        B.CreateStore(totals[c], vectorAt(out, i64(c)));
      forRange(B.CreateMul(blocks, i64(blockRows)), length, [&](Value *r) {
        Value *row = vectorAt(in, B.CreateMul(r, i64(columns)));
        for (int64_t c = 0; c < columns; ++c) {
          Value *total = vectorAt(out, i64(c));
          B.CreateStore(
              B.CreateFAdd(B.CreateLoad(ft, total), B.CreateLoad(ft, vectorAt(row, i64(c)))),
              total);
        }
      });
    });
    return;
  }
  forRange(outer, [&](Value *o) {
    std::vector<llvm::AllocaInst *> sums;
    for (int64_t k = 0; k < vectors; ++k) {
      sums.push_back(entryAlloca(vt));
      B.CreateStore(llvm::Constant::getNullValue(vt), sums.back());
    }
    forRange(length, [&](Value *l) {
      Value *row = B.CreateMul(B.CreateAdd(B.CreateMul(o, length), l), i64(columns));
      for (int64_t k = 0; k < vectors; ++k) {
        Value *ptr = vectorAt(slotOf(x).Ptr, B.CreateAdd(row, i64(k * lanes)));
        Value *mask = maskOf(k);
        Value *v = mask ? static_cast<Value *>(B.CreateMaskedLoad(vt, ptr, align, mask,
                                                                  llvm::Constant::getNullValue(vt)))
                        : B.CreateAlignedLoad(vt, ptr, align);
        B.CreateStore(B.CreateFAdd(B.CreateLoad(vt, sums[k]), v), sums[k]);
      }
    });
    for (int64_t k = 0; k < vectors; ++k) {
      Value *ptr =
          vectorAt(slotOf(n).Ptr, B.CreateAdd(B.CreateMul(o, i64(columns)), i64(k * lanes)));
      Value *sum = B.CreateLoad(vt, sums[k]);
      if (Value *mask = maskOf(k))
        B.CreateMaskedStore(sum, ptr, align, mask);
      else
        B.CreateAlignedStore(sum, ptr, align);
    }
  });
}

std::vector<Value *>
GraphLowering::reduce(Value *count, const std::vector<Value *> &zeros,
                      const std::function<std::vector<Value *>(Value *)> &terms) {
  std::vector<llvm::AllocaInst *> accs;
  for (Value *zero : zeros) {
    accs.push_back(entryAlloca(zero->getType()));
    B.CreateStore(zero, accs.back());
  }
  auto accumulate = [&](Value *i) {
    std::vector<Value *> values = terms(i);
    for (size_t k = 0; k < accs.size(); ++k) {
      Value *sum = B.CreateFAdd(B.CreateLoad(zeros[k]->getType(), accs[k]), values[k]);
      llvm::cast<llvm::Instruction>(sum)->setHasAllowReassoc(true);
      B.CreateStore(sum, accs[k]);
    }
  };
  std::vector<Value *> sums;
  if (!Gpu || PerThread) {
    forRange(count, accumulate);
    for (size_t k = 0; k < accs.size(); ++k)
      sums.push_back(B.CreateLoad(zeros[k]->getType(), accs[k]));
    return sums;
  }
  // In a kernel's uniform code: each thread of the block sums every
  // GpuBlock-th term, then the partial sums are added pairwise in shared
  // memory, and every thread reads the total.
  ++Pieces;
  OneBlock = true;
  Value *thread = B.CreateZExt(Gpu->thread(B), B.getInt64Ty());
  PerThread = true;
  loopRange(thread, count, i64(GpuBlock), accumulate, false);
  PerThread = false;
  for (size_t k = 0; k < accs.size(); ++k)
    sums.push_back(B.CreateLoad(zeros[k]->getType(), accs[k]));
  return blockTotals(sums);
}

std::vector<Value *> GraphLowering::blockTotals(const std::vector<Value *> &partials) {
  Value *thread = B.CreateZExt(Gpu->thread(B), B.getInt64Ty());
  std::vector<Value *> sums;
  for (Value *partial : partials) {
    llvm::Type *type = partial->getType();
    Value *shared = Gpu->shared(B);
    auto cell = [&](Value *index) { return B.CreateInBoundsGEP(type, shared, index); };
    B.CreateStore(partial, cell(thread));
    Gpu->barrier(B);
    for (int64_t half = GpuBlock / 2; half >= 1; half /= 2) {
      ifThen(B.CreateICmpULT(thread, i64(half)), [&] {
        Value *other = B.CreateLoad(type, cell(B.CreateAdd(thread, i64(half))));
        B.CreateStore(B.CreateFAdd(B.CreateLoad(type, cell(thread)), other), cell(thread));
      });
      Gpu->barrier(B);
    }
    sums.push_back(B.CreateLoad(type, cell(i64(0))));
    Gpu->barrier(B); // before the shared memory is used again
  }
  return sums;
}

std::pair<Value *, Value *> GraphLowering::blockExclusiveScan(Value *value) {
  // Each step adds the sum of as many threads before, twice as many as the
  // step before (Hillis and Steele).
  llvm::Type *type = B.getInt64Ty();
  Value *thread = B.CreateZExt(Gpu->thread(B), type);
  Value *shared = Gpu->shared(B);
  auto cell = [&](Value *index) { return B.CreateInBoundsGEP(type, shared, index); };
  B.CreateStore(value, cell(thread));
  Gpu->barrier(B);
  for (int64_t step = 1; step < GpuBlock; step *= 2) {
    Value *has = B.CreateICmpUGE(thread, i64(step));
    Value *from = B.CreateSelect(has, B.CreateSub(thread, i64(step)), thread);
    Value *before = B.CreateSelect(has, B.CreateLoad(type, cell(from)), i64(0));
    Value *mine = B.CreateLoad(type, cell(thread));
    Gpu->barrier(B);
    B.CreateStore(B.CreateAdd(mine, before), cell(thread));
    Gpu->barrier(B);
  }
  Value *inclusive = B.CreateLoad(type, cell(thread));
  Value *total = B.CreateLoad(type, cell(i64(GpuBlock - 1)));
  Gpu->barrier(B); // before the shared memory is used again
  return {B.CreateSub(inclusive, value), total};
}

Value *GraphLowering::reduce(Value *count, Value *zero,
                             const std::function<Value *(Value *)> &term) {
  return reduce(count, std::vector<Value *>{zero},
                [&](Value *i) { return std::vector<Value *>{term(i)}; })[0];
}

void GraphLowering::lowerSumAll(const Node *n) { lowerFullSums({n}); }

void GraphLowering::lowerFullSums(const std::vector<const Node *> &sums) {
  // sum_all accumulates in double: losses sum many terms of similar size.
  std::vector<Value *> zeros;
  for (const Node *n : sums)
    zeros.push_back(
        llvm::ConstantFP::get(n->Op == OpCode::SumAll ? B.getDoubleTy() : elemType(n->Ty.Elem), 0));
  auto termsAt = [&](Value *i) {
    std::vector<Value *> terms;
    for (const Node *n : sums) {
      Value *x = load(n->Operands[0], i);
      if (n->Op == OpCode::SumAll)
        terms.push_back(B.CreateFPExt(x, B.getDoubleTy()));
      else if (n->Op == OpCode::MatMul)
        terms.push_back(B.CreateFMul(x, load(n->Operands[1], i)));
      else
        terms.push_back(x);
    }
    return terms;
  };
  if (fullSumChunks(sums) && !PerThread)
    return lowerSplitFullSums(sums, zeros, termsAt);
  std::vector<Value *> totals = reduce(elementCount(sums[0]->Operands[0]->Ty), zeros, termsAt);
  for (size_t k = 0; k < sums.size(); ++k) {
    const Node *n = sums[k];
    if (n->Ty.Dims.empty())
      Slots[n].Scalar = B.CreateFPCast(totals[k], elemType(n->Ty.Elem));
    if (!n->Ty.Dims.empty() || Gpu) // on the GPU, for the kernels after this one
      storeOnce(B.CreateFPCast(totals[k], elemType(n->Ty.Elem)), Slots.at(n).Ptr);
  }
}

void GraphLowering::lowerSplitFullSums(
    const std::vector<const Node *> &sums, const std::vector<Value *> &zeros,
    const std::function<std::vector<Value *>(Value *)> &termsAt) {
  // Chunk c's terms are summed by a block as reduce() sums a block's: each
  // thread every GpuBlock-th term, then pairwise. Its sums go to the
  // workspace, 8 bytes each; with one chunk, they are the totals.
  size_t width = sums.size();
  Value *count = fullSumTerms(B, sums, Batch);
  auto [chunks, terms] = fullSumSplit(B, count);
  Value *cut = B.CreateICmpUGT(chunks, i64(1));
  Value *thread = B.CreateZExt(Gpu->thread(B), B.getInt64Ty());
  ++Pieces;
  loopRange(
      B.CreateZExt(Gpu->block(B), B.getInt64Ty()), chunks,
      B.CreateZExt(Gpu->blocks(B), B.getInt64Ty()),
      [&](Value *chunk) {
        Value *begin = B.CreateMul(chunk, terms);
        Value *end =
            B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, count, B.CreateAdd(begin, terms));
        std::vector<llvm::AllocaInst *> accs;
        for (Value *zero : zeros) {
          accs.push_back(entryAlloca(zero->getType()));
          B.CreateStore(zero, accs.back());
        }
        PerThread = true;
        loopRange(
            B.CreateAdd(begin, thread), end, i64(GpuBlock),
            [&](Value *i) {
              std::vector<Value *> values = termsAt(i);
              for (size_t k = 0; k < width; ++k)
                B.CreateStore(B.CreateFAdd(B.CreateLoad(zeros[k]->getType(), accs[k]), values[k]),
                              accs[k]);
            },
            false);
        PerThread = false;
        std::vector<Value *> partials;
        for (size_t k = 0; k < width; ++k)
          partials.push_back(B.CreateLoad(zeros[k]->getType(), accs[k]));
        std::vector<Value *> totals = blockTotals(partials);
        ifThen(B.CreateICmpEQ(thread, i64(0)), [&] {
          PerThread = true;
          auto *toPartials = llvm::BasicBlock::Create(Ctx, "chunk.partial", F);
          auto *toTotals = llvm::BasicBlock::Create(Ctx, "chunk.total", F);
          auto *stored = llvm::BasicBlock::Create(Ctx, "chunk.stored", F);
          B.CreateCondBr(cut, toPartials, toTotals);
          B.SetInsertPoint(toPartials);
          for (size_t k = 0; k < width; ++k)
            B.CreateStore(totals[k], chunkSum(sums, chunk, k));
          B.CreateBr(stored);
          B.SetInsertPoint(toTotals);
          storeFullSums(sums, totals);
          B.CreateBr(stored);
          B.SetInsertPoint(stored);
          PerThread = false;
        });
      },
      false);
  Gpu->barrier(B);
  addFullSumChunks(sums, zeros);
}

void GraphLowering::addFullSumChunks(const std::vector<const Node *> &sums,
                                     const std::vector<Value *> &zeros) {
  if (RunsAfter) {
    RunsAfter->push_back([=] { addFullSumChunks(sums, zeros); });
    return;
  }
  size_t width = sums.size();
  Value *chunks = beginRunsKernel(sums.front(), [sums](llvm::IRBuilder<> &b, Value *rows) {
    return fullSumSplit(b, fullSumTerms(b, sums, rows)).first;
  });
  ifThen(B.CreateICmpUGT(chunks, i64(1)), [&] {
    std::vector<Value *> totals = reduce(chunks, zeros, [&](Value *chunk) {
      std::vector<Value *> values;
      for (size_t k = 0; k < width; ++k)
        values.push_back(B.CreateLoad(zeros[k]->getType(), chunkSum(sums, chunk, k)));
      return values;
    });
    ifThen(B.CreateICmpEQ(B.CreateZExt(Gpu->thread(B), B.getInt64Ty()), i64(0)),
           [&] { storeFullSums(sums, totals); });
    Gpu->barrier(B);
  });
}

} // namespace nnc::lowering
