//===- LowerSequences.cpp - Embeddings, slices and LSTMs ------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// The ops of sequence models: an embedding's lookup (gather) and its
// gradient (scatter_add: on the GPU, a stable sort of the indices, with no
// atomics), concatenation and slices, and the LSTM's steps and gradients.
//
//===----------------------------------------------------------------------===//

#include "codegen/GraphLowering.h"

#include <algorithm>

namespace nnc::lowering {

Value *GraphLowering::gatheredElement(const Node *n, Value *i) {
  const Node *table = n->Operands[0], *indices = n->Operands[1];
  int64_t rows = table->Ty.Dims[0], width = table->Ty.Dims[1];
  auto [r, j] = rowAndColumn(i, width);
  Value *index = B.CreateSExt(load(indices, r), B.getInt64Ty());
  Value *valid = inBounds(index, rows);
  Value *src = B.CreateMul(B.CreateSelect(valid, index, i64(0)), i64(width));
  Value *v = load(table, B.CreateAdd(src, j));
  return B.CreateSelect(valid, v, llvm::Constant::getNullValue(v->getType()));
}

void GraphLowering::lowerGather(const Node *n) {
  // Row r of the result is row indices[r] of the table; an index out of
  // range (the runtime rejects them) reads nothing and gives zeros.
  const Node *table = n->Operands[0], *indices = n->Operands[1];
  int64_t rows = table->Ty.Dims[0], width = table->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  if (Gpu) {
    // A thread per element, so that a warp reads along table rows: the
    // threads of a row load its index alike, which costs one access.
    parallelFor(elementCount(n->Ty), [&](Value *i) {
      B.CreateStore(gatheredElement(n, i), B.CreateInBoundsGEP(ft, Slots[n].Ptr, i));
    });
    return;
  }
  parallelFor(elementCount(indices->Ty), [&](Value *r) {
    Value *index = B.CreateSExt(load(indices, r), B.getInt64Ty());
    Value *valid = inBounds(index, rows);
    Value *src = B.CreateMul(B.CreateSelect(valid, index, i64(0)), i64(width));
    Value *dst = B.CreateMul(r, i64(width));
    forRow(width, [&](Value *j, unsigned lanes) {
      Value *v = lanes ? loadVector(table, src, lanes) : load(table, B.CreateAdd(src, j));
      v = B.CreateSelect(valid, v, llvm::Constant::getNullValue(v->getType()));
      storeLanes(v, B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(dst, j)));
    });
  });
}

void GraphLowering::lowerScatterAdd(const Node *n) {
  if (Gpu)
    return lowerGpuScatterAdd(n);
  const Node *indices = n->Operands[0], *values = n->Operands[1];
  int64_t rows = n->Ty.Dims[0], width = n->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  zeroFill(n);
  // Rows of one index add into the same row, one after another.
  parallelFor(elementCount(indices->Ty), [&](Value *r) {
    Value *index = B.CreateSExt(load(indices, r), B.getInt64Ty());
    ifThen(inBounds(index, rows), [&] {
      Value *dst = B.CreateMul(index, i64(width));
      Value *src = B.CreateMul(r, i64(width));
      forRow(width, [&](Value *j, unsigned lanes) {
        Value *out = B.CreateInBoundsGEP(ft, Slots[n].Ptr, B.CreateAdd(dst, j));
        Value *v = lanes ? loadVector(values, src, lanes) : load(values, B.CreateAdd(src, j));
        storeLanes(B.CreateFAdd(loadLanes(ft, out, lanes), v), out);
      });
    });
  });
}

void GraphLowering::lowerGpuScatterAdd(const Node *n) {
  // Atomic additions would add a row's values in the order the threads
  // reach them, which changes from run to run. Instead the index elements
  // are sorted by row, stably (a counting sort), and each row adds its
  // values in the elements' order: the same sums in every run, on every
  // GPU. Five kernels (or, for few elements and a small table, five
  // pieces of one kernel on one block): count each row in each tile of
  // GpuScatterTile elements (the first element of a row in a tile counts
  // them); one block scans the counts, row after row, tile after tile,
  // into where each (row, tile) starts; each element takes its place in
  // the order; a thread per (chunk of GpuScatterChunk sorted elements,
  // column) adds its rows' values, storing a row that starts and ends in
  // the chunk, else the sums of the chunk's first and last pieces; a
  // thread per (row, column) adds a row's pieces in order, or stores zero
  // for a row that no element names.
  const Node *indices = n->Operands[0], *values = n->Operands[1];
  int64_t rows = n->Ty.Dims[0], width = n->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem), *i32 = B.getInt32Ty(), *i64Ty = B.getInt64Ty();
  ScatterScratch layout = scatterScratch(n);
  bool batched = indices->Ty.isBatched();
  // Found afresh in each kernel.
  Value *fixed = nullptr, *rest = nullptr, *elements = nullptr, *tiles = nullptr;
  auto findScratch = [&] {
    fixed = B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)));
    rest = batched ? B.CreateInBoundsGEP(
                         B.getInt8Ty(), Workspace,
                         B.CreateAdd(i64(Size.Fixed), B.CreateMul(i64(RowScratch.at(n)), Batch)))
                   : B.CreateInBoundsGEP(B.getInt8Ty(), fixed, i64(layout.Fixed));
    elements = elementCount(indices->Ty);
    tiles = B.CreateBinaryIntrinsic(
        llvm::Intrinsic::umax,
        B.CreateUDiv(B.CreateAdd(elements, i64(GpuScatterTile - 1)), i64(GpuScatterTile)), i64(1));
  };
  auto restArray = [&](int64_t offset) {
    return B.CreateInBoundsGEP(B.getInt8Ty(), rest,
                               batched ? B.CreateMul(i64(offset), Batch) : i64(offset));
  };
  auto validCount = [&] { return B.CreateZExt(B.CreateLoad(i32, fixed), i64Ty); };
  // Where row r starts in the order, once scanned (before: its count in
  // tile 0).
  auto startOf = [&](Value *r) {
    return B.CreateInBoundsGEP(i32, B.CreateInBoundsGEP(B.getInt8Ty(), fixed, i64(layout.Tile0)),
                               r);
  };
  // Tile t's count (later: start) of row r.
  auto countOf = [&](Value *t, Value *r) {
    Value *later = B.CreateAdd(B.CreateMul(B.CreateSub(t, i64(1)), i64(rows)), r);
    return B.CreateSelect(B.CreateICmpEQ(t, i64(0)), startOf(r),
                          B.CreateGEP(i32, restArray(layout.Tiles), later));
  };
  // The sum of chunk q's first (piece 0) or last (piece 1) piece, column j.
  auto partialOf = [&](Value *q, int64_t piece, Value *j) {
    Value *first = B.CreateAdd(i64(piece * width), j);
    Value *later = B.CreateAdd(
        B.CreateMul(B.CreateAdd(B.CreateMul(B.CreateSub(q, i64(1)), i64(2)), i64(piece)),
                    i64(width)),
        j);
    return B.CreateSelect(
        B.CreateICmpEQ(q, i64(0)),
        B.CreateInBoundsGEP(ft, B.CreateInBoundsGEP(B.getInt8Ty(), fixed, i64(layout.Chunk0)),
                            first),
        B.CreateGEP(ft, restArray(0), later));
  };
  auto orderAt = [&](Value *p) { return B.CreateInBoundsGEP(i32, restArray(layout.Order), p); };
  auto rowOf = [&](Value *element) { return B.CreateSExt(load(indices, element), i64Ty); };
  auto sortedRow = [&](Value *p) {
    return rowOf(B.CreateZExt(B.CreateLoad(i32, orderAt(p)), i64Ty));
  };
  // The elements of [begin, end) whose row is `row`.
  auto countRow = [&](Value *begin, Value *end, Value *row) {
    llvm::AllocaInst *count = entryAlloca(i64Ty);
    B.CreateStore(i64(0), count);
    forRange(begin, end, [&](Value *k) {
      Value *same = B.CreateZExt(B.CreateICmpEQ(rowOf(k), row), i64Ty);
      B.CreateStore(B.CreateAdd(B.CreateLoad(i64Ty, count), same), count);
    });
    return B.CreateLoad(i64Ty, count);
  };
  auto tileStart = [&](Value *element) {
    return B.CreateMul(B.CreateUDiv(element, i64(GpuScatterTile)), i64(GpuScatterTile));
  };

  // The next piece: in a kernel of its own, launched when launchIf says,
  // or in the same kernel, after a barrier.
  bool ownKernels = true;
  OfRows launchIf;
  auto nextPiece = [&](const std::string &work) {
    if (ownKernels) {
      nextKernel(work);
      LaunchIf = launchIf;
      LaunchCondition = "many";
    }
    findScratch();
  };
  auto sortAndSum = [&] {
    // Each element that comes first of its row in its tile counts the row's
    // elements in the tile, into the place of the element in the order.
    findScratch();
    parallelFor(elements, [&](Value *i) {
      Value *row = rowOf(i);
      llvm::AllocaInst *count = entryAlloca(i32);
      B.CreateStore(B.getInt32(0), count);
      ifThen(inBounds(row, rows), [&] {
        Value *begin = tileStart(i);
        ifThen(B.CreateICmpEQ(countRow(begin, i, row), i64(0)), [&] {
          Value *end = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin,
                                               B.CreateAdd(begin, i64(GpuScatterTile)), elements);
          B.CreateStore(B.CreateTrunc(countRow(i, end, row), i32), count);
        });
      });
      B.CreateStore(B.CreateLoad(i32, count), orderAt(i));
    });

    nextPiece("scatter_add_scan");
    {
      // One block: zero the counts of every (tile, row), put each first
      // element's count in its place, then scan them.
      ++Pieces;
      OneBlock = true;
      Value *entries = B.CreateMul(tiles, i64(rows));
      Value *thread = B.CreateZExt(Gpu->thread(B), i64Ty);
      // A loop of this thread's own.
      auto threadLoop = [&](Value *begin, Value *end, Value *step,
                            const std::function<void(Value *)> &body) {
        PerThread = true;
        loopRange(begin, end, step, body, false);
        PerThread = false;
      };
      threadLoop(thread, entries, i64(GpuBlock), [&](Value *e) {
        B.CreateStore(B.getInt32(0),
                      countOf(B.CreateUDiv(e, i64(rows)), B.CreateURem(e, i64(rows))));
      });
      Gpu->barrier(B);
      threadLoop(thread, elements, i64(GpuBlock), [&](Value *i) {
        Value *count = B.CreateLoad(i32, orderAt(i));
        ifThen(B.CreateICmpNE(count, B.getInt32(0)), [&] {
          B.CreateStore(count, countOf(B.CreateUDiv(i, i64(GpuScatterTile)), rowOf(i)));
        });
      });
      Gpu->barrier(B);
      // Each thread scans a run of the counts, in the order row after row,
      // tile after tile, from the sum of the runs before its own.
      Value *share = B.CreateUDiv(B.CreateAdd(entries, i64(GpuBlock - 1)), i64(GpuBlock));
      Value *begin =
          B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, B.CreateMul(thread, share), entries);
      Value *end =
          B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, B.CreateAdd(begin, share), entries);
      auto count = [&](Value *e) {
        return countOf(B.CreateURem(e, tiles), B.CreateUDiv(e, tiles));
      };
      llvm::AllocaInst *sum = entryAlloca(i64Ty);
      B.CreateStore(i64(0), sum);
      threadLoop(begin, end, i64(1), [&](Value *e) {
        Value *c = B.CreateZExt(B.CreateLoad(i32, count(e)), i64Ty);
        B.CreateStore(B.CreateAdd(B.CreateLoad(i64Ty, sum), c), sum);
      });
      auto [before, total] = blockExclusiveScan(B.CreateLoad(i64Ty, sum));
      B.CreateStore(before, sum);
      threadLoop(begin, end, i64(1), [&](Value *e) {
        Value *cell = count(e);
        Value *c = B.CreateZExt(B.CreateLoad(i32, cell), i64Ty);
        Value *start = B.CreateLoad(i64Ty, sum);
        B.CreateStore(B.CreateTrunc(start, i32), cell);
        B.CreateStore(B.CreateAdd(start, c), sum);
      });
      storeOnce(B.CreateTrunc(total, i32), fixed);
    }

    nextPiece("scatter_add_sort");
    parallelFor(elements, [&](Value *i) {
      Value *row = rowOf(i);
      ifThen(inBounds(row, rows), [&] {
        Value *start = B.CreateLoad(i32, countOf(B.CreateUDiv(i, i64(GpuScatterTile)), row));
        Value *place = B.CreateAdd(B.CreateZExt(start, i64Ty), countRow(tileStart(i), i, row));
        B.CreateStore(B.CreateTrunc(i, i32), orderAt(place));
      });
    });

    nextPiece("scatter_add_chunks");
    {
      Value *valid = validCount();
      Value *chunks =
          B.CreateUDiv(B.CreateAdd(elements, i64(GpuScatterChunk - 1)), i64(GpuScatterChunk));
      parallelFor(B.CreateMul(chunks, i64(width)), [&](Value *e) {
        Value *q = B.CreateUDiv(e, i64(width)), *j = B.CreateURem(e, i64(width));
        Value *begin = B.CreateMul(q, i64(GpuScatterChunk));
        ifThen(B.CreateICmpULT(begin, valid), [&] {
          Value *end = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin,
                                               B.CreateAdd(begin, i64(GpuScatterChunk)), valid);
          // Whether the chunk's first piece starts its row.
          Value *before =
              B.CreateSub(B.CreateBinaryIntrinsic(llvm::Intrinsic::umax, begin, i64(1)), i64(1));
          Value *firstStarts = B.CreateOr(B.CreateICmpEQ(begin, i64(0)),
                                          B.CreateICmpNE(sortedRow(before), sortedRow(begin)));
          llvm::AllocaInst *acc = entryAlloca(ft), *pieceBegin = entryAlloca(i64Ty);
          B.CreateStore(llvm::ConstantFP::get(ft, 0), acc);
          B.CreateStore(begin, pieceBegin);
          forRange(begin, end, [&](Value *p) {
            Value *element = B.CreateZExt(B.CreateLoad(i32, orderAt(p)), i64Ty);
            Value *row = rowOf(element);
            Value *v = load(values, B.CreateAdd(B.CreateMul(element, i64(width)), j));
            Value *sum = B.CreateFAdd(B.CreateLoad(ft, acc), v);
            B.CreateStore(sum, acc);
            Value *next = B.CreateAdd(p, i64(1));
            Value *peek =
                B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, next, B.CreateSub(valid, i64(1)));
            Value *rowEnds =
                B.CreateOr(B.CreateICmpEQ(next, valid), B.CreateICmpNE(sortedRow(peek), row));
            ifThen(B.CreateOr(rowEnds, B.CreateICmpEQ(next, end)), [&] {
              Value *first = B.CreateICmpEQ(B.CreateLoad(i64Ty, pieceBegin), begin);
              Value *startsRow = B.CreateOr(B.CreateNot(first), firstStarts);
              Value *whole = at(n, B.CreateAdd(B.CreateMul(row, i64(width)), j));
              Value *piece = B.CreateSelect(first, partialOf(q, 0, j), partialOf(q, 1, j));
              B.CreateStore(sum, B.CreateSelect(B.CreateAnd(startsRow, rowEnds), whole, piece));
              B.CreateStore(llvm::ConstantFP::get(ft, 0), acc);
              B.CreateStore(next, pieceBegin);
            });
          });
        });
      });
    }

    nextPiece("scatter_add_rows");
    {
      Value *valid = validCount();
      parallelFor(i64(rows * width), [&](Value *e) {
        Value *r = B.CreateUDiv(e, i64(width)), *j = B.CreateURem(e, i64(width));
        auto start = [&](Value *row) {
          return B.CreateZExt(B.CreateLoad(i32, startOf(row)), i64Ty);
        };
        Value *begin = start(r);
        Value *lastRow = B.CreateICmpEQ(r, i64(rows - 1));
        Value *end = B.CreateSelect(lastRow, valid,
                                    start(B.CreateSelect(lastRow, r, B.CreateAdd(r, i64(1)))));
        Value *out = at(n, e);
        ifThen(B.CreateICmpEQ(begin, end),
               [&] { B.CreateStore(llvm::ConstantFP::get(ft, 0), out); });
        Value *first = B.CreateUDiv(begin, i64(GpuScatterChunk));
        Value *last = B.CreateUDiv(B.CreateSub(end, i64(1)), i64(GpuScatterChunk));
        ifThen(B.CreateAnd(B.CreateICmpNE(begin, end), B.CreateICmpNE(first, last)), [&] {
          // A row that started at its first chunk's start is that chunk's
          // first piece; else its last.
          Value *startsChunk = B.CreateICmpEQ(begin, B.CreateMul(first, i64(GpuScatterChunk)));
          llvm::AllocaInst *acc = entryAlloca(ft);
          B.CreateStore(B.CreateLoad(ft, B.CreateSelect(startsChunk, partialOf(first, 0, j),
                                                        partialOf(first, 1, j))),
                        acc);
          forRange(B.CreateAdd(first, i64(1)), B.CreateAdd(last, i64(1)), [&](Value *q) {
            Value *v = B.CreateLoad(ft, partialOf(q, 0, j));
            B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, acc), v), acc);
          });
          B.CreateStore(B.CreateLoad(ft, acc), out);
        });
      });
    }
  };
  int64_t rowElements = indices->Ty.staticElements();
  auto elementsAt = [batched, rowElements](llvm::IRBuilder<> &b, Value *callRows) {
    return batched ? b.CreateMul(callRows, b.getInt64(rowElements)) : b.getInt64(rowElements);
  };
  // A small table: calls of few elements launch the pieces as one kernel
  // on one block, the others the five kernels.
  if (!WholeGraph && rows * width <= GpuScatterSmallTable) {
    LaunchIf = [elementsAt](llvm::IRBuilder<> &b, Value *callRows) {
      return b.CreateICmpULE(elementsAt(b, callRows), b.getInt64(GpuScatterFew));
    };
    LaunchCondition = "few";
    ownKernels = false;
    sortAndSum();
    nextKernel(KernelWork);
    launchIf = [elementsAt](llvm::IRBuilder<> &b, Value *callRows) {
      return b.CreateICmpUGT(elementsAt(b, callRows), b.getInt64(GpuScatterFew));
    };
    LaunchIf = launchIf;
    LaunchCondition = "many";
    ownKernels = true;
  }
  sortAndSum();
}

void GraphLowering::copyColumns(const Node *from, int64_t fromOffset, const Node *to,
                                int64_t toOffset, int64_t width) {
  int64_t fromWidth = from->Ty.Dims.back(), toWidth = to->Ty.Dims.back();
  llvm::Type *ft = elemType(to->Ty.Elem);
  Value *rows = product(to->Ty.Dims, 0, to->Ty.Dims.size() - 1);
  auto fromRow = [&](Value *r) { // where row r's elements start
    return B.CreateAdd(B.CreateMul(r, i64(fromWidth)), i64(fromOffset));
  };
  auto toRow = [&](Value *r) {
    return B.CreateAdd(B.CreateMul(r, i64(toWidth)), i64(toOffset));
  };
  if (Gpu) {
    // A thread per element, so that a warp's loads and stores coalesce.
    parallelFor(B.CreateMul(rows, i64(width)), [&](Value *i) {
      auto [r, j] = rowAndColumn(i, width);
      B.CreateStore(load(from, B.CreateAdd(fromRow(r), j)),
                    B.CreateInBoundsGEP(ft, slotOf(to).Ptr, B.CreateAdd(toRow(r), j)));
    });
    return;
  }
  parallelFor(rows, [&](Value *r) {
    Value *src = fromRow(r), *dst = toRow(r);
    forRow(width, [&](Value *j, unsigned lanes) {
      storeLanes(lanes ? loadVector(from, src, lanes) : load(from, B.CreateAdd(src, j)),
                 B.CreateInBoundsGEP(ft, slotOf(to).Ptr, B.CreateAdd(dst, j)));
    });
  });
}

void GraphLowering::gpuColumnsFrom(const Node *n, const std::vector<ColumnSource> &sources) {
  // A thread per element, which reads it from the source that holds its
  // column: one kernel, where a copy per source (and a fill) would be one
  // each.
  int64_t width = n->Ty.Dims.back();
  llvm::Type *ft = elemType(n->Ty.Elem);
  parallelFor(elementCount(n->Ty), [&](Value *i) {
    auto [r, j] = rowAndColumn(i, width);
    for (const ColumnSource &source : sources) {
      if (source.Begin == source.End)
        continue;
      // Below Begin, the column wraps around to a large unsigned value.
      Value *column = B.CreateSub(j, i64(source.Begin));
      Value *index = B.CreateAdd(B.CreateMul(r, i64(source.End - source.Begin)), column);
      ifThen(B.CreateICmpULT(column, i64(source.End - source.Begin)), [&] {
        B.CreateStore(source.From ? load(source.From, index) : llvm::Constant::getNullValue(ft),
                      at(n, i));
      });
    }
  });
}

Value *GraphLowering::slicedIndex(const Node *n, Value *i) {
  int64_t width = n->Ty.Dims.back(), fromWidth = n->Operands[0]->Ty.Dims.back();
  auto [r, j] = rowAndColumn(i, width);
  return B.CreateAdd(B.CreateMul(r, i64(fromWidth)), B.CreateAdd(j, i64(n->A.Offset)));
}

// The packed LSTM state of one (row, time step) holds 6H values: h, c, and
// the activated gates i, f, g, o (PyTorch's gate order).
enum LstmPart { LstmH, LstmC, LstmI, LstmF, LstmG, LstmO };

void GraphLowering::lowerLstm(const Node *n) {
  // One time step after the other, all rows at once: z_t = xg_t + h_{t-1}
  // W_hh^T as one matrix product into the gate slots of the packed state;
  // then i, f, o = sigmoid, g = tanh of z's four blocks; c = f c_{t-1} + i g;
  // h = o tanh(c). The state before the first step is zero.
  const Node *xg = n->Operands[0], *w = n->Operands[1];
  int64_t T = n->Ty.Dims[1], H = w->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  LLVMScalarBuilder sb(B, ft);
  auto sigmoid = [&](Value *x) { return sb.apply(OpCode::Sigmoid, {x}); };
  auto tanh = [&](Value *x) { return LLVMScalarBuilder::v(sb.tanh(x)); };
  Value *rows = extent(n->Ty.Dims[0]);
  Value *out = Slots[n].Ptr;
  auto at = [&](Value *index) { return B.CreateInBoundsGEP(ft, out, index); };
  GemmShape recurrence{false, true, false, 4 * H, ft, VectorBits};
  recurrence.LdA = recurrence.LdC = T * 6 * H;
  Value *zero = llvm::ConstantFP::get(ft, 0);
  // One loop over the steps in the generated code, whatever T is.
  stepsFor(i64(0), i64(T), [&](Value *t) {
    Value *hasPrev = B.CreateICmpSGT(t, i64(0));
    ifThen(hasPrev, [&] {
      Value *prevH = B.CreateAdd(B.CreateMul(B.CreateSub(t, i64(1)), i64(6 * H)), i64(LstmH * H));
      Value *gates = B.CreateAdd(B.CreateMul(t, i64(6 * H)), i64(LstmI * H));
      gemm(recurrence, at(prevH), slotOf(w).Ptr, at(gates), rows, i64(H));
    });
    parallelFor(rows, [&](Value *row) {
      Value *step = B.CreateAdd(B.CreateMul(row, i64(T)), t);
      Value *base = B.CreateMul(step, i64(6 * H));
      // At t = 0 the previous state is not read: c_{t-1} is taken as zero.
      Value *prev = B.CreateSelect(hasPrev, B.CreateSub(base, i64(6 * H)), base);
      Value *zBase = B.CreateMul(step, i64(4 * H));
      for (int gate = 0; gate < 4; ++gate)
        independentFor(i64(H), [&](Value *jj) {
          Value *j = B.CreateAdd(i64(gate * H), jj);
          Value *slot = at(B.CreateAdd(base, B.CreateAdd(i64(LstmI * H), j)));
          Value *z = B.CreateFAdd(load(xg, B.CreateAdd(zBase, j)),
                                  B.CreateSelect(hasPrev, B.CreateLoad(ft, slot), zero));
          B.CreateStore(gate == 2 ? tanh(z) : sigmoid(z), slot);
        });
      independentFor(i64(H), [&](Value *jj) {
        auto part = [&](Value *from, LstmPart p) {
          return at(B.CreateAdd(from, B.CreateAdd(i64(p * H), jj)));
        };
        Value *cPrev = B.CreateSelect(hasPrev, B.CreateLoad(ft, part(prev, LstmC)), zero);
        Value *c = B.CreateFAdd(
            B.CreateFMul(B.CreateLoad(ft, part(base, LstmF)), cPrev),
            B.CreateFMul(B.CreateLoad(ft, part(base, LstmI)), B.CreateLoad(ft, part(base, LstmG))));
        B.CreateStore(c, part(base, LstmC));
        B.CreateStore(B.CreateFMul(B.CreateLoad(ft, part(base, LstmO)), tanh(c)),
                      part(base, LstmH));
      });
    });
  });
}

void GraphLowering::lowerLstmGrad(const Node *n) {
  // Backpropagation through time, from the last step to the first, all rows
  // at once. dOut is the adjoint of every part of the packed state; the
  // adjoints of h and c carried to the previous step live in dhNext and
  // dcNext (per-row scratch); dhNext = dz_{t+1} W_hh is a matrix product.
  const Node *state = n->Operands[0], *dOut = n->Operands[1], *w = n->Operands[2];
  int64_t T = n->Ty.Dims[1], H = w->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  LLVMScalarBuilder sb(B, ft);
  Value *rows = extent(n->Ty.Dims[0]);
  Value *dhNext =
      B.CreateInBoundsGEP(B.getInt8Ty(), Workspace,
                          B.CreateAdd(i64(Size.Fixed), B.CreateMul(i64(RowScratch.at(n)), Batch)));
  Value *dcNext = B.CreateInBoundsGEP(ft, dhNext, B.CreateMul(rows, i64(H)));
  auto carried = [&](Value *array, Value *index) { return B.CreateInBoundsGEP(ft, array, index); };
  Value *one = llvm::ConstantFP::get(ft, 1), *zero = llvm::ConstantFP::get(ft, 0);
  Value *dz = Slots[n].Ptr;
  GemmShape backShape{false, false, false, H, ft, VectorBits};
  backShape.LdA = T * 4 * H;
  parallelFor(B.CreateMul(rows, i64(H)), [&](Value *k) {
    B.CreateStore(zero, carried(dhNext, k));
    B.CreateStore(zero, carried(dcNext, k));
  });
  stepsFor(i64(0), i64(T), [&](Value *back) {
    Value *t = B.CreateSub(i64(T - 1), back);
    ifThen(B.CreateICmpSGT(back, i64(0)), [&] {
      Value *next = B.CreateMul(B.CreateAdd(t, i64(1)), i64(4 * H));
      gemm(backShape, B.CreateInBoundsGEP(ft, dz, next), slotOf(w).Ptr, dhNext, rows, i64(4 * H));
    });
    Value *hasPrev = B.CreateICmpSGT(t, i64(0));
    parallelFor(rows, [&](Value *row) {
      Value *step = B.CreateAdd(B.CreateMul(row, i64(T)), t);
      Value *base = B.CreateMul(step, i64(6 * H));
      Value *prev = B.CreateSelect(hasPrev, B.CreateSub(base, i64(6 * H)), base);
      Value *zBase = B.CreateMul(step, i64(4 * H));
      independentFor(i64(H), [&](Value *jj) {
        auto index = [&](Value *from, int p) {
          return B.CreateAdd(from, B.CreateAdd(i64(p * H), jj));
        };
        auto get = [&](int p) { return load(state, index(base, p)); };
        auto adj = [&](int p) { return load(dOut, index(base, p)); };
        Value *own = B.CreateAdd(B.CreateMul(row, i64(H)), jj);
        Value *c = get(LstmC), *i = get(LstmI), *f = get(LstmF);
        Value *g = get(LstmG), *o = get(LstmO);
        Value *tc = LLVMScalarBuilder::v(sb.tanh(c));
        Value *dh = B.CreateFAdd(adj(LstmH), B.CreateLoad(ft, carried(dhNext, own)));
        Value *dc = B.CreateFAdd(
            B.CreateFAdd(adj(LstmC), B.CreateLoad(ft, carried(dcNext, own))),
            B.CreateFMul(B.CreateFMul(dh, o), B.CreateFSub(one, B.CreateFMul(tc, tc))));
        Value *cPrev = B.CreateSelect(hasPrev, load(state, index(prev, LstmC)), zero);
        Value *di = B.CreateFAdd(B.CreateFMul(dc, g), adj(LstmI));
        Value *df = B.CreateFAdd(B.CreateFMul(dc, cPrev), adj(LstmF));
        Value *dg = B.CreateFAdd(B.CreateFMul(dc, i), adj(LstmG));
        Value *dO = B.CreateFAdd(B.CreateFMul(dh, tc), adj(LstmO));
        auto sigmoidSlope = [&](Value *s) { return B.CreateFMul(s, B.CreateFSub(one, s)); };
        Value *dzs[4] = {B.CreateFMul(di, sigmoidSlope(i)), B.CreateFMul(df, sigmoidSlope(f)),
                         B.CreateFMul(dg, B.CreateFSub(one, B.CreateFMul(g, g))),
                         B.CreateFMul(dO, sigmoidSlope(o))};
        for (int gate = 0; gate < 4; ++gate)
          B.CreateStore(dzs[gate], B.CreateInBoundsGEP(ft, dz, index(zBase, gate)));
        B.CreateStore(B.CreateFMul(dc, f), carried(dcNext, own));
      });
    });
  });
}

void GraphLowering::lowerLstmGradWeight(const Node *n) {
  // dW_hh = sum over steps t >= 1 of dz_t^T h_{t-1}, each a product over
  // all rows.
  const Node *state = n->Operands[0], *dz = n->Operands[1];
  int64_t T = state->Ty.Dims[1], H = n->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  zeroFill(n);
  GemmShape shape{true, false, true, H, ft, VectorBits};
  shape.LdA = T * 4 * H;
  shape.LdB = T * 6 * H;
  Value *rows = extent(state->Ty.Dims[0]);
  stepsFor(i64(1), i64(T), [&](Value *t) {
    Value *gates = B.CreateMul(t, i64(4 * H));
    Value *prevH = B.CreateAdd(B.CreateMul(B.CreateSub(t, i64(1)), i64(6 * H)), i64(LstmH * H));
    gemm(shape, B.CreateInBoundsGEP(ft, slotOf(dz).Ptr, gates),
         B.CreateInBoundsGEP(ft, slotOf(state).Ptr, prevH), Slots[n].Ptr, i64(4 * H), rows);
  });
}

} // namespace nnc::lowering
