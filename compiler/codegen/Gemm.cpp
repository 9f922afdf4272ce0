//===- Gemm.cpp - Register-blocked matrix products ------------------------===//
//
// The generated function, for row blocks [begin, end) of its thread:
//
//   for each depth block k0 (KC deep, so that a packed panel fills about
//   half of the L1 cache):
//     for each panel of NR columns (the last may be narrower):
//       pack op(B)[k0 : k0 + KC, panel] contiguous, zero-padded;
//       for each block of MR rows (8, or 4 for panels of more than two
//       vectors): the micro-kernel;
//       the rows left over: a block of 4 (when MR is 8), then the
//       micro-kernel with one row for each.
//
// The micro-kernel holds MR x (NR / VW) vector accumulators; per step of k
// it loads NR / VW vectors of the panel, broadcasts MR values of A and
// issues MR x NR / VW fused multiply-adds. C is stored after each depth
// block and reloaded for the next; the first block starts from zero (or
// from C when accumulating, or from the bias).
//
// A product whose N fills little of a vector, where M fills more (the
// weight gradient of a narrow layer, a dense layer of 1 to 4 outputs over
// a batch), runs the column kernel instead (columnVectors): its
// vectors go along the rows of C. A block of RB rows (1 to 4 vectors) and
// all N columns stays in registers for the whole depth; per step of k it
// loads RB / VW vectors of op(A)'s column k (from a panel of A packed
// transposed, when A is not already stored [K, M]), broadcasts the N values
// of op(B)'s row k, and issues RB / VW x N multiply-adds. The block is then
// interleaved in registers into C's row-major order. Every element is the
// same chain of multiply-adds, in the same order, as in the panel kernel.
//
// A TransB product of a few rows and columns over a long K (the gradient of
// a weight over a batch, batch-minor: GemmShape::DotProducts), or of a few
// columns over more than a vector of static depth (a dense layer of a few
// outputs: dotProductsWin), runs the dot-product kernel (dotKernel): rows
// of A and of B both lie contiguous along K, so C[m, n] is a dot product of
// two rows, vectorized along K with nothing packed. A block of a few rows
// of A and of B (dotBlockingFor) keeps one vector accumulator per pair for
// the whole depth; per step of k it loads one vector of each row and
// issues a multiply-add per pair, the last vector of K masked. Each
// accumulator is then summed across its lanes by the same fixed tree of
// halvings, so every element of C is the same chain of operations whatever
// the block it falls in and the thread that runs it. Where the block holds
// all N columns, its elements of C are contiguous: its accumulators are
// summed together, a vector of sums at a time (sumLanesOfEach), by the
// same tree.
//
//===----------------------------------------------------------------------===//

#include "codegen/Gemm.h"
#include "codegen/VectorMath.h"

#include "llvm/IR/Module.h"

#include <algorithm>
#include <cassert>
#include <functional>
#include <string>

namespace nnc {
namespace {

using llvm::Value;

/// The packed panel's target size: half of a 32-48 KiB L1 data cache.
constexpr int64_t PanelBytes = 24 * 1024;
/// Products of fewer multiply-adds run on the calling thread: below this,
/// waking the other threads costs about as much as it saves.
constexpr int64_t ParallelWork = int64_t(1) << 19;

/// The blocking of one shape.
struct Blocking {
  int64_t Lanes;      ///< Elements per vector.
  int64_t MaxVectors; ///< Vectors per row of a full panel.
  int64_t KC;         ///< Depth of a packed block.
  int64_t FullPanels; ///< Panels of MaxVectors vectors.
  int64_t TailColumns;
  /// Rows per micro-kernel (MR), for the widest panel of the shape.
  int64_t Rows;
};

Blocking blockingFor(const GemmShape &S) {
  Blocking L;
  int64_t elemBytes = S.Elem->getPrimitiveSizeInBits() / 8;
  L.Lanes = std::max<int64_t>(1, S.VectorBits / 8 / elemBytes);
  // 32 vector registers with AVX-512 hold 16 accumulators and the panel's
  // vectors; the 16 of AVX2 and SSE, 8.
  L.MaxVectors = S.VectorBits >= 512 ? 4 : 2;
  int64_t panelWidth = L.Lanes * L.MaxVectors;
  L.KC = std::max<int64_t>(16, PanelBytes / (panelWidth * elemBytes));
  L.FullPanels = S.N / panelWidth;
  L.TailColumns = S.N % panelWidth;
  // 16 accumulators: with AVX-512's 32 registers, 8 rows of panels of at
  // most 2 vectors (each panel vector loaded for 8 multiply-adds rather
  // than 4, and a 120-row product in 15 blocks rather than 30: 92% -> 94%
  // of peak for 120x32x64 in bench/gemm), else 4 rows; 6 rows of 4
  // vectors measured slower. With 16 registers, 4 rows of at most 2.
  int64_t vectors = L.FullPanels > 0 ? L.MaxVectors : (L.TailColumns + L.Lanes - 1) / L.Lanes;
  L.Rows = S.VectorBits >= 512 && vectors <= 2 ? 8 : 4;
  return L;
}

/// Accumulators the column kernel may hold: most of the vector registers,
/// the rest for the column of A and the broadcast value.
int64_t columnAccumulators(const GemmShape &S) { return S.VectorBits >= 512 ? 24 : 12; }

/// Vectors of rows per block of the column kernel for a product of \p M rows
/// (0: M is not known when compiling), or 0 when the panel kernel fills its
/// vectors better.
int64_t columnVectors(const GemmShape &S, int64_t M) {
  if (S.Accumulate || S.LdA || S.LdB || S.LdC)
    return 0;
  int64_t lanes = blockingFor(S).Lanes;
  if (lanes == 1 || S.N > lanes)
    return 0;
  auto filled = [&](int64_t n) { return double(n) / double((n + lanes - 1) / lanes * lanes); };
  if (filled(M ? M : lanes) < filled(S.N) + 0.25)
    return 0;
  // Packing A transposed costs about as much as a quarter of a vector's
  // lanes saves (measured with bench/gemm: 120x3x32 and 100x1x32 gain,
  // 1000x5x10 does not).
  if (!S.TransA && filled(S.N) > 0.25)
    return 0;
  int64_t vectors = std::clamp<int64_t>(columnAccumulators(S) / S.N, 1, 4);
  return M ? std::min(vectors, (M + lanes - 1) / lanes) : vectors;
}

/// The blocking of the dot-product kernel: Rows x Columns accumulators.
struct DotBlocking {
  int64_t Rows;    ///< Rows of A per block.
  int64_t Columns; ///< Rows of B (columns of C) per block; the last may be fewer.
};

DotBlocking dotBlockingFor(const GemmShape &S) {
  // A step of k holds the block's vectors of A in registers and loads those
  // of B one at a time: Rows x Columns accumulators + Rows + 1 of the 32
  // vector registers of AVX-512 or the 16 of AVX2 and SSE. Over blocks of
  // Rows rows, all N columns in `blocks` blocks take blocks * Rows + N
  // loads for Rows * N multiply-adds: the fewest loads per multiply-add
  // (blocks / N + 1 / Rows) wins, the fewer blocks on a tie (A is read
  // once per block). With AVX-512: one block of 5 x 5 for N = 5, two for
  // N = 10 (20 % fewer loads than one of 2 x 10); with AVX2: 2 x 5 for
  // N = 5, and three blocks of 3 x 4 (the last 3 x 2) for N = 10.
  int64_t registers = S.VectorBits >= 512 ? 32 : 16;
  DotBlocking best{1, 1};
  double bestCost = 1e30;
  for (int64_t blocks = 1; blocks <= S.N; ++blocks) {
    int64_t columns = (S.N + blocks - 1) / blocks;
    if ((S.N + columns - 1) / columns != blocks) // Not a distinct split.
      continue;
    // At most 8 rows: enough accumulators to cover the multiply-adds'
    // latency when N is 1, and few remainder blocks to generate.
    int64_t rows = std::min<int64_t>(8, (registers - 1) / (columns + 1));
    if (rows < 1)
      continue;
    double cost = double(blocks) / double(S.N) + 1.0 / double(rows);
    if (cost < bestCost - 1e-9) {
      best = {rows, columns};
      bestCost = cost;
    }
  }
  return best;
}

/// Whether a TransB product of static depth \p K that its caller did not
/// ask for by dot products runs faster by them: when one block of the
/// dot-product kernel holds all N columns (its sums are then reduced
/// together and stored whole vectors at a time) and K is more than a
/// vector deep, or N is 1. Measured with bench/gemm, 120 rows, nnc's
/// GFLOP/s as the column kernel / as dot products: N = 3, K = 32:
/// 38 / 49 (iris's logits); N = 3, K = 64: 38 / 84; N = 5, K = 16: 33 / 41;
/// N = 1, K = 12: 16 / 26; but N = 3, K = 12: 35 / 28.
bool dotProductsWin(const GemmShape &S, int64_t K) {
  if (!S.TransB || S.TransA || S.Accumulate || S.LdA || S.LdB || S.LdC || K == 0 ||
      S.N > blockingFor(S).Lanes || dotBlockingFor(S).Columns != S.N)
    return false;
  return S.N == 1 || K > blockingFor(S).Lanes;
}

/// Whether \p S runs the dot-product kernel.
bool dotProducts(const GemmShape &S) {
  assert((!S.DotProducts || (S.TransB && !S.TransA)) &&
         "dot products need B stored [N, K] and A stored [M, K]");
  return S.DotProducts && S.TransB && !S.TransA;
}

std::string functionName(const GemmShape &S, int64_t ColumnVectors) {
  return std::string("nnc.gemm.") + (S.Elem->isDoubleTy() ? "f64" : "f32") +
         (S.TransA ? ".t" : ".n") + (S.TransB ? "t" : "n") +
         (S.Accumulate ? ".acc" : "") + (S.Bias ? ".bias" : "") + (S.Relu ? ".relu" : "") +
         (S.Mask ? ".mask" : "") +
         (S.M ? ".m" + std::to_string(S.M) : "") + ".n" + std::to_string(S.N) +
         (S.K ? ".k" + std::to_string(S.K) : "") + ".v" + std::to_string(S.VectorBits) +
         (S.LdA || S.LdB || S.LdC
              ? ".ld" + std::to_string(S.LdA) + "." + std::to_string(S.LdB) +
                    "." + std::to_string(S.LdC)
              : "") +
         (ColumnVectors ? ".cols" + std::to_string(ColumnVectors) : "") +
         (dotProducts(S) ? ".dot" : "") + (S.ColumnSums ? ".sums" : "");
}

/// The context a call passes: {A, B, C, M, K, bias or null, mask or null,
/// column sums or null}.
llvm::StructType *contextType(llvm::LLVMContext &Ctx) {
  llvm::Type *ptr = llvm::PointerType::getUnqual(Ctx);
  llvm::Type *i64 = llvm::Type::getInt64Ty(Ctx);
  return llvm::StructType::get(Ctx, {ptr, ptr, ptr, i64, i64, ptr, ptr, ptr});
}

/// Builds the body of one GEMM function.
class GemmEmitter {
public:
  GemmEmitter(llvm::Function *F, const GemmShape &S, int64_t ColumnVectors)
      : F(F), S(S), L(blockingFor(S)), ColumnVectors(ColumnVectors), B(F->getContext()),
        VecTy(llvm::FixedVectorType::get(S.Elem, unsigned(L.Lanes))) {}

  void emit() {
    llvm::LLVMContext &Ctx = F->getContext();
    Entry = llvm::BasicBlock::Create(Ctx, "entry", F);
    B.SetInsertPoint(Entry);
    Value *ctx = F->getArg(0);
    llvm::StructType *ctxTy = contextType(Ctx);
    auto field = [&](unsigned I, llvm::Type *T) {
      return B.CreateLoad(T, B.CreateStructGEP(ctxTy, ctx, I));
    };
    A = field(0, B.getPtrTy());
    BM = field(1, B.getPtrTy());
    C = field(2, B.getPtrTy());
    auto staticOr = [&](int64_t Static, unsigned Field) {
      return Static ? static_cast<Value *>(B.getInt64(Static)) : field(Field, B.getInt64Ty());
    };
    M = staticOr(S.M, 3);
    K = staticOr(S.K, 4);
    Bias = field(5, B.getPtrTy());
    Mask = field(6, B.getPtrTy());
    Sums = field(7, B.getPtrTy());
    auto leading = [&](int64_t Static, Value *Contiguous) {
      return Static ? B.getInt64(Static) : Contiguous;
    };
    LdA = leading(S.LdA, S.TransA ? M : K);
    LdB = leading(S.LdB, S.TransB ? K : B.getInt64(S.N));
    LdC = leading(S.LdC, B.getInt64(S.N));
    int64_t blockRows = dotProducts(S)   ? dotBlockingFor(S).Rows
                        : ColumnVectors ? ColumnVectors * L.Lanes
                                        : L.Rows;
    RowBegin = B.CreateMul(F->getArg(1), B.getInt64(blockRows));
    RowEnd = B.CreateBinaryIntrinsic(llvm::Intrinsic::smin,
                                     B.CreateMul(F->getArg(2), B.getInt64(blockRows)), M);
    if (dotProducts(S)) {
      dotKernel();
      B.CreateRetVoid();
      return;
    }
    if (ColumnVectors) {
      columnKernel();
      B.CreateRetVoid();
      return;
    }
    int64_t panelElems = L.KC * L.Lanes * L.MaxVectors;
    Pack = B.CreateAlloca(llvm::ArrayType::get(S.Elem, panelElems));
    Pack->setAlignment(llvm::Align(64));

    loop(B.getInt64(0), K, L.KC, [&](Value *k0) {
      Value *depth = B.CreateBinaryIntrinsic(llvm::Intrinsic::smin,
                                             B.getInt64(L.KC), B.CreateSub(K, k0));
      Value *first = B.CreateICmpEQ(k0, B.getInt64(0));
      Value *last = B.CreateICmpEQ(B.CreateAdd(k0, depth), K);
      int64_t fullWidth = L.Lanes * L.MaxVectors;
      if (L.FullPanels > 0)
        loop(B.getInt64(0), B.getInt64(L.FullPanels * fullWidth), fullWidth,
             [&](Value *j0) {
               panel(k0, depth, first, last, j0, L.MaxVectors, fullWidth);
             });
      if (L.TailColumns > 0) {
        int64_t vectors = (L.TailColumns + L.Lanes - 1) / L.Lanes;
        panel(k0, depth, first, last, B.getInt64(L.FullPanels * fullWidth), vectors,
              L.TailColumns);
      }
    });
    B.CreateRetVoid();
  }

private:
  void loop(Value *begin, Value *end, int64_t step,
            const std::function<void(Value *)> &body) {
    emitLoop(B, begin, end, B.getInt64(step), body, "gemm.loop");
  }

  /// op(B)[k, j] for absolute k and j.
  Value *bAt(Value *k, Value *j) {
    Value *index = S.TransB ? B.CreateAdd(B.CreateMul(j, LdB), k)
                            : B.CreateAdd(B.CreateMul(k, LdB), j);
    return B.CreateLoad(S.Elem, B.CreateInBoundsGEP(S.Elem, BM, index));
  }

  /// op(A)[i, k] for absolute i and k.
  Value *aAt(Value *i, Value *k) {
    Value *index = S.TransA ? B.CreateAdd(B.CreateMul(k, LdA), i)
                            : B.CreateAdd(B.CreateMul(i, LdA), k);
    return B.CreateLoad(S.Elem, B.CreateInBoundsGEP(S.Elem, A, index));
  }

  /// Element (k, j) of the packed panel, \p width elements per row.
  Value *packAt(Value *k, Value *j, int64_t width) {
    return B.CreateInBoundsGEP(S.Elem, Pack,
                               B.CreateAdd(B.CreateMul(k, B.getInt64(width)), j));
  }

  /// Copies op(B)[k0 + k, j0 + j] into the panel at (k, j).
  void packOne(Value *k0, Value *j0, Value *k, Value *j, int64_t width) {
    B.CreateStore(bAt(B.CreateAdd(k0, k), B.CreateAdd(j0, j)), packAt(k, j, width));
  }

  /// One panel of \p columns columns from \p j0, \p vectors vectors wide:
  /// packs it, then runs the micro-kernel over the thread's rows. \p first
  /// and \p last: whether the depth block is K's first, K's last.
  void panel(Value *k0, Value *depth, Value *first, Value *last, Value *j0, int64_t vectors,
             int64_t columns) {
    int64_t width = vectors * L.Lanes;
    // B stored [K, N] with N whole vectors is its own only panel: its
    // rows are already contiguous, and it is read in place.
    Panel = Pack;
    PanelAlign = llvm::Align(std::min<int64_t>(64, L.Lanes * elemBytes()));
    if (!S.TransB && !S.LdB && S.N == width) {
      Panel = B.CreateInBoundsGEP(S.Elem, BM, B.CreateMul(k0, B.getInt64(width)));
      PanelAlign = llvm::Align(elemBytes());
    } else if (S.TransB)
      packTransposed(k0, depth, j0, columns, width);
    else // Rows of B are contiguous: copied row by row.
      loop(B.getInt64(0), depth, 1, [&](Value *k) {
        loop(B.getInt64(0), B.getInt64(columns), 1,
             [&](Value *j) { packOne(k0, j0, k, j, width); });
      });
    if (columns < width)
      loop(B.getInt64(0), depth, 1, [&](Value *k) {
        loop(B.getInt64(columns), B.getInt64(width), 1, [&](Value *j) {
          B.CreateStore(llvm::ConstantFP::get(S.Elem, 0), packAt(k, j, width));
        });
      });

    // Blocks of L.Rows rows. With M static, the rows left over (in the last
    // thread's range) are one block; otherwise a block of 4 (when L.Rows is
    // more), then single rows.
    std::vector<int64_t> blockRows{L.Rows};
    if (L.Rows > 4 && !S.M)
      blockRows.push_back(4);
    Value *begin = RowBegin;
    for (int64_t rows : blockRows) {
      Value *span = B.CreateSub(RowEnd, begin);
      Value *blockedEnd = B.CreateAdd(
          begin, B.CreateMul(B.CreateSDiv(span, B.getInt64(rows)), B.getInt64(rows)));
      loop(begin, blockedEnd, rows, [&](Value *i0) {
        microKernel(i0, rows, k0, depth, first, last, j0, vectors, columns);
      });
      begin = blockedEnd;
    }
    if (S.M) {
      if (int64_t left = S.M % L.Rows)
        loop(begin, RowEnd, left, [&](Value *i0) {
          microKernel(i0, left, k0, depth, first, last, j0, vectors, columns);
        });
      return;
    }
    loop(begin, RowEnd, 1, [&](Value *i0) {
      microKernel(i0, 1, k0, depth, first, last, j0, vectors, columns);
    });
  }

  /// Packs op(B) when B is stored [N, K]: square blocks of Lanes x Lanes
  /// are loaded along K, transposed in registers and stored along N; the
  /// edges that do not fill a block are copied one element at a time.
  void packTransposed(Value *k0, Value *depth, Value *j0, int64_t columns,
                      int64_t width) {
    int64_t lanes = L.Lanes, blockedColumns = columns / lanes * lanes;
    Value *blockedDepth =
        B.CreateMul(B.CreateSDiv(depth, B.getInt64(lanes)), B.getInt64(lanes));
    llvm::Align elemAlign(S.Elem->getPrimitiveSizeInBits() / 8);
    if (S.K && S.K < lanes) {
      // A static depth of less than a vector (a first layer's few
      // features): each column's K values written out, so that the loop
      // over the columns vectorizes with strided loads (a group LLVM
      // interleaves with shuffles) and contiguous stores.
      loop(B.getInt64(0), B.getInt64(columns), 1, [&](Value *j) {
        for (int64_t k = 0; k < S.K; ++k)
          packOne(k0, j0, B.getInt64(k), j, width);
      });
      return;
    }
    if (lanes > 1 && blockedColumns > 0)
      loop(B.getInt64(0), B.getInt64(blockedColumns), lanes, [&](Value *jb) {
        loop(B.getInt64(0), blockedDepth, lanes, [&](Value *kb) {
          std::vector<Value *> rows(lanes);
          for (int64_t r = 0; r < lanes; ++r) {
            Value *j = B.CreateAdd(B.CreateAdd(j0, jb), B.getInt64(r));
            Value *at = B.CreateInBoundsGEP(
                S.Elem, BM, B.CreateAdd(B.CreateMul(j, LdB), B.CreateAdd(k0, kb)));
            rows[r] = B.CreateAlignedLoad(VecTy, at, elemAlign);
          }
          transpose(rows);
          for (int64_t r = 0; r < lanes; ++r)
            B.CreateAlignedStore(
                rows[r], packAt(B.CreateAdd(kb, B.getInt64(r)), jb, width), elemAlign);
        });
        // The depth left over, below a block.
        loop(blockedDepth, depth, 1, [&](Value *k) {
          loop(jb, B.CreateAdd(jb, B.getInt64(lanes)), 1,
               [&](Value *j) { packOne(k0, j0, k, j, width); });
        });
      });
    if (blockedColumns < columns)
      loop(B.getInt64(blockedColumns), B.getInt64(columns), 1, [&](Value *j) {
        loop(B.getInt64(0), depth, 1, [&](Value *k) { packOne(k0, j0, k, j, width); });
      });
  }

  /// Transposes the square matrix whose rows are \p Rows in place: at each
  /// stage s = 1, 2, 4, ..., bit s of the row index trades places with bit
  /// s of the lane index, for every pair of rows that differ in it.
  void transpose(std::vector<Value *> &Rows) {
    int64_t n = int64_t(Rows.size());
    for (int64_t s = 1; s < n; s *= 2)
      for (int64_t i = 0; i < n; ++i) {
        if (i & s)
          continue;
        std::vector<int> low(n), high(n);
        for (int64_t p = 0; p < n; ++p) {
          low[p] = int(p & s ? n + p - s : p);
          high[p] = int(p & s ? n + p : p + s);
        }
        Value *a = Rows[i], *b = Rows[i + s];
        Rows[i] = B.CreateShuffleVector(a, b, low);
        Rows[i + s] = B.CreateShuffleVector(a, b, high);
      }
  }

  /// The column kernel (see the file comment) over the thread's rows.
  void columnKernel() {
    int64_t lanes = L.Lanes, rows = ColumnVectors * lanes, n = S.N;
    // A stored [M, K] is packed transposed, depth blocks of whole vectors.
    int64_t depthBlock = S.TransA ? 0
                                  : std::max<int64_t>(lanes, PanelBytes / (rows * elemBytes()) /
                                                                 lanes * lanes);
    if (!S.TransA) {
      Pack = allocaInEntry(llvm::ArrayType::get(S.Elem, uint64_t(depthBlock * rows)));
      Pack->setAlignment(llvm::Align(64));
    }
    std::vector<llvm::AllocaInst *> acc(ColumnVectors * n);
    for (auto &slot : acc)
      slot = allocaInEntry(VecTy);

    loop(RowBegin, RowEnd, rows, [&](Value *i0) {
      Value *valid = B.CreateBinaryIntrinsic(llvm::Intrinsic::smin, B.getInt64(rows),
                                             B.CreateSub(RowEnd, i0));
      // A last block of fewer rows runs with as few vectors as hold them
      // (a batch of 10 rows: one vector, not four).
      if (ColumnVectors == 1)
        return columnBlock(i0, valid, 1, depthBlock, acc);
      llvm::Function *fn = B.GetInsertBlock()->getParent();
      auto *done = llvm::BasicBlock::Create(B.getContext(), "cols.done", fn);
      auto *full = llvm::BasicBlock::Create(B.getContext(), "cols.full", fn);
      Value *needed = B.CreateUDiv(B.CreateAdd(valid, B.getInt64(lanes - 1)),
                                   B.getInt64(lanes));
      llvm::SwitchInst *choice = B.CreateSwitch(needed, full, unsigned(ColumnVectors - 1));
      for (int64_t vecs = 1; vecs < ColumnVectors; ++vecs) {
        auto *block = llvm::BasicBlock::Create(B.getContext(), "cols." + std::to_string(vecs), fn);
        choice->addCase(B.getInt64(uint64_t(vecs)), block);
        B.SetInsertPoint(block);
        columnBlock(i0, valid, vecs, depthBlock, acc);
        B.CreateBr(done);
      }
      B.SetInsertPoint(full);
      columnBlock(i0, valid, ColumnVectors, depthBlock, acc);
      B.CreateBr(done);
      B.SetInsertPoint(done);
    });
  }

  /// One block of the column kernel: rows [i0, i0 + valid) of C, with
  /// \p vecs vectors of rows (valid <= vecs lanes-wide vectors).
  void columnBlock(Value *i0, Value *valid, int64_t vecs, int64_t depthBlock,
                   const std::vector<llvm::AllocaInst *> &acc) {
    int64_t lanes = L.Lanes, rows = vecs * lanes, n = S.N;
    llvm::Align elemAlign(S.Elem->getPrimitiveSizeInBits() / 8);
    {
      for (int64_t j = 0; j < n; ++j) {
        Value *start = llvm::ConstantFP::get(VecTy, 0);
        if (S.Bias)
          start = B.CreateVectorSplat(
              unsigned(lanes),
              B.CreateLoad(S.Elem, B.CreateInBoundsGEP(S.Elem, Bias, B.getInt64(j))));
        for (int64_t v = 0; v < vecs; ++v)
          B.CreateStore(start, acc[v * n + j]);
      }
      // Lanes of op(A)'s columns in rows below M.
      std::vector<Value *> rowMask(vecs);
      for (int64_t v = 0; v < vecs; ++v)
        rowMask[v] = lanesBelow(B.CreateSub(valid, B.getInt64(v * lanes)));

      auto steps = [&](Value *k0, Value *depth) {
        loop(B.getInt64(0), depth, 1, [&](Value *k) {
          Value *kAbs = B.CreateAdd(k0, k);
          std::vector<Value *> column(vecs);
          for (int64_t v = 0; v < vecs; ++v)
            column[v] =
                S.TransA
                    ? static_cast<Value *>(B.CreateMaskedLoad(
                          VecTy,
                          B.CreateInBoundsGEP(S.Elem, A,
                                              B.CreateAdd(B.CreateMul(kAbs, LdA),
                                                          B.CreateAdd(i0, B.getInt64(v * lanes)))),
                          elemAlign, rowMask[v], llvm::ConstantFP::get(VecTy, 0)))
                    : B.CreateAlignedLoad(
                          VecTy, packAt(k, B.getInt64(v * lanes), rows),
                          llvm::Align(std::min<int64_t>(64, lanes * elemBytes())));
          for (int64_t j = 0; j < n; ++j) {
            Value *b = B.CreateVectorSplat(unsigned(lanes), bAt(kAbs, B.getInt64(j)));
            for (int64_t v = 0; v < vecs; ++v) {
              llvm::AllocaInst *slot = acc[v * n + j];
              B.CreateStore(B.CreateIntrinsic(llvm::Intrinsic::fmuladd, {VecTy},
                                              {column[v], b, B.CreateLoad(VecTy, slot)}),
                            slot);
            }
          }
        });
      };
      if (S.TransA)
        steps(B.getInt64(0), K);
      else
        loop(B.getInt64(0), K, depthBlock, [&](Value *k0) {
          Value *depth = B.CreateBinaryIntrinsic(llvm::Intrinsic::smin,
                                                 B.getInt64(depthBlock), B.CreateSub(K, k0));
          packColumns(i0, valid, k0, depth, rows);
          steps(k0, depth);
        });

      // Each vector of rows, N columns of it, becomes N vectors of C's
      // row-major elements; those past the last row are masked off.
      for (int64_t v = 0; v < vecs; ++v) {
        std::vector<Value *> columns;
        for (int64_t j = 0; j < n; ++j) {
          Value *sum = B.CreateLoad(VecTy, acc[v * n + j]);
          columns.push_back(S.Relu ? relu(sum) : sum);
        }
        std::vector<Value *> out = interleave(columns);
        Value *elements = B.CreateMul(B.CreateSub(valid, B.getInt64(v * lanes)), B.getInt64(n));
        Value *first = B.CreateMul(B.CreateAdd(i0, B.getInt64(v * lanes)), B.getInt64(n));
        for (int64_t q = 0; q < n; ++q) {
          Value *at = B.CreateAdd(first, B.getInt64(q * lanes));
          Value *lanesIn = lanesBelow(B.CreateSub(elements, B.getInt64(q * lanes)));
          if (S.Mask) {
            Value *relu = B.CreateMaskedLoad(VecTy, B.CreateInBoundsGEP(S.Elem, Mask, at),
                                             elemAlign, lanesIn, llvm::ConstantFP::get(VecTy, 0));
            out[q] = maskedBy(out[q], relu);
          }
          B.CreateMaskedStore(out[q], B.CreateInBoundsGEP(S.Elem, C, at), elemAlign, lanesIn);
        }
      }
    }
  }

  /// The dot-product kernel over the thread's rows: per block of columns,
  /// blocks of the full number of rows, then one block of the rows left.
  void dotKernel() {
    DotBlocking D = dotBlockingFor(S);
    int64_t lanes = L.Lanes;
    // K in whole vectors, then at most one masked vector.
    Value *tail = B.CreateSRem(K, B.getInt64(lanes));
    Value *whole = B.CreateSub(K, tail);
    Value *tailMask = lanesBelow(tail);
    Value *span = B.CreateSub(RowEnd, RowBegin);
    Value *blockedEnd = B.CreateAdd(
        RowBegin, B.CreateMul(B.CreateSDiv(span, B.getInt64(D.Rows)), B.getInt64(D.Rows)));
    Value *left = B.CreateSub(RowEnd, blockedEnd);
    llvm::Function *fn = B.GetInsertBlock()->getParent();
    for (int64_t j0 = 0; j0 < S.N; j0 += D.Columns) {
      int64_t columns = std::min(D.Columns, S.N - j0);
      loop(RowBegin, blockedEnd, D.Rows, [&](Value *i0) {
        dotBlock(i0, D.Rows, j0, columns, whole, tailMask);
      });
      if (D.Rows == 1)
        continue;
      // The last rows, fewer than a block, in a block of their number (a
      // block of D.Rows with some rows unused would cost its full time).
      auto *done = llvm::BasicBlock::Create(B.getContext(), "dot.done", fn);
      llvm::SwitchInst *choice = B.CreateSwitch(left, done, unsigned(D.Rows - 1));
      for (int64_t rows = 1; rows < D.Rows; ++rows) {
        auto *block =
            llvm::BasicBlock::Create(B.getContext(), "dot.rows" + std::to_string(rows), fn);
        choice->addCase(B.getInt64(uint64_t(rows)), block);
        B.SetInsertPoint(block);
        dotBlock(blockedEnd, rows, j0, columns, whole, tailMask);
        B.CreateBr(done);
      }
      B.SetInsertPoint(done);
    }
  }

  /// One block of the dot-product kernel: C[i0 + r, j0 + j] for r < \p rows
  /// and j < \p columns, along K in whole vectors up to \p whole, then
  /// the lanes of \p tailMask of one more.
  void dotBlock(Value *i0, int64_t rows, int64_t j0, int64_t columns, Value *whole,
                Value *tailMask) {
    llvm::Align elemAlign(elemBytes());
    llvm::Constant *zero = llvm::ConstantFP::get(VecTy, 0);
    std::vector<llvm::AllocaInst *> acc(rows * columns);
    for (auto &slot : acc) {
      slot = allocaInEntry(VecTy);
      B.CreateStore(zero, slot);
    }
    std::vector<Value *> aRow(rows), bRow(columns);
    for (int64_t r = 0; r < rows; ++r)
      aRow[r] = B.CreateInBoundsGEP(S.Elem, A,
                                    B.CreateMul(B.CreateAdd(i0, B.getInt64(r)), LdA));
    for (int64_t j = 0; j < columns; ++j)
      bRow[j] = B.CreateInBoundsGEP(S.Elem, BM, B.CreateMul(B.getInt64(j0 + j), LdB));
    // One step along K: the A vectors stay in registers while each B vector
    // is loaded and used for all the rows. Masked-off lanes load as zero on
    // both sides, so that they add 0 * 0.
    auto step = [&](Value *k, Value *mask) {
      auto load = [&](Value *row) -> Value * {
        Value *at = B.CreateInBoundsGEP(S.Elem, row, k);
        if (mask)
          return B.CreateMaskedLoad(VecTy, at, elemAlign, mask, zero);
        return B.CreateAlignedLoad(VecTy, at, elemAlign);
      };
      std::vector<Value *> a(rows);
      for (int64_t r = 0; r < rows; ++r)
        a[r] = load(aRow[r]);
      for (int64_t j = 0; j < columns; ++j) {
        Value *b = load(bRow[j]);
        for (int64_t r = 0; r < rows; ++r) {
          llvm::AllocaInst *slot = acc[r * columns + j];
          B.CreateStore(B.CreateIntrinsic(llvm::Intrinsic::fmuladd, {VecTy},
                                          {a[r], b, B.CreateLoad(VecTy, slot)}),
                        slot);
        }
      }
    };
    loop(B.getInt64(0), whole, L.Lanes, [&](Value *k) { step(k, nullptr); });
    // The masked vector: a loop that runs once when K is not whole vectors.
    loop(whole, K, L.Lanes, [&](Value *k) { step(k, tailMask); });

    if (columns == S.N && S.N <= L.Lanes && !S.LdC) {
      // The block's elements of C are contiguous: its sums are reduced
      // together, whole vectors of them stored at once.
      std::vector<Value *> sums(rows * columns);
      for (size_t q = 0; q < sums.size(); ++q)
        sums[q] = B.CreateLoad(VecTy, acc[q]);
      storeContiguousSums(i0, sums);
      return;
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < columns; ++j) {
        Value *index = B.CreateAdd(B.CreateMul(B.CreateAdd(i0, B.getInt64(r)), LdC),
                                   B.getInt64(j0 + j));
        Value *at = B.CreateInBoundsGEP(S.Elem, C, index);
        Value *sum = sumLanes(B.CreateLoad(VecTy, acc[r * columns + j]));
        if (S.Accumulate)
          sum = B.CreateFAdd(B.CreateLoad(S.Elem, at), sum);
        if (S.Bias)
          sum = B.CreateFAdd(
              sum, B.CreateLoad(S.Elem, B.CreateInBoundsGEP(S.Elem, Bias, B.getInt64(j0 + j))));
        if (S.Relu)
          sum = relu(sum);
        if (S.Mask)
          sum = maskedBy(sum, B.CreateLoad(S.Elem, B.CreateInBoundsGEP(S.Elem, Mask, index)));
        B.CreateStore(sum, at);
      }
  }

  /// The sums of the lanes of \p Sums, each by sumLanes' tree, as vectors:
  /// lane l of the result's vector g is the sum of Sums[g * Lanes + l]'s
  /// lanes. Each step halves the lanes that hold each sum: pairs of
  /// vectors become one of the low halves of each sum's lanes, plus one of
  /// the high halves. Vectors past the end are poison.
  std::vector<Value *> sumLanesOfEach(std::vector<Value *> Sums) {
    int64_t lanes = L.Lanes;
    while (Sums.size() % lanes)
      Sums.push_back(llvm::PoisonValue::get(VecTy));
    for (int64_t width = lanes, segments = 1; width > 1; width /= 2, segments *= 2) {
      // Each vector: `segments` sums of `width` lanes; the result of a
      // pair, 2 * segments sums of width / 2 lanes, a's then b's.
      std::vector<int> low(lanes), high(lanes);
      for (int64_t p = 0; p < lanes; ++p) {
        int64_t segment = p / (width / 2), t = p % (width / 2);
        int64_t source = segment < segments ? segment * width + t
                                            : lanes + (segment - segments) * width + t;
        low[p] = int(source);
        high[p] = int(source + width / 2);
      }
      std::vector<Value *> next;
      for (size_t v = 0; v < Sums.size(); v += 2)
        next.push_back(B.CreateFAdd(B.CreateShuffleVector(Sums[v], Sums[v + 1], low),
                                    B.CreateShuffleVector(Sums[v], Sums[v + 1], high)));
      Sums = next;
    }
    return Sums;
  }

  /// The dot-product kernel's epilogue for a block of rows from \p i0 and
  /// all N columns, whose elements of C are contiguous: \p Sums, row by
  /// row, each a vector of partial sums, summed across its lanes and
  /// stored with the other operations of the epilogue a vector at a time.
  void storeContiguousSums(Value *i0, const std::vector<Value *> &Sums) {
    llvm::Align elemAlign(elemBytes());
    int64_t lanes = L.Lanes, count = int64_t(Sums.size());
    Value *zero = llvm::ConstantFP::get(VecTy, 0);
    Value *bias = nullptr;
    if (S.Bias)
      bias = B.CreateMaskedLoad(VecTy, Bias, elemAlign, firstLanes(B, L.Lanes, S.N), zero);
    std::vector<Value *> reduced = sumLanesOfEach(Sums);
    Value *first = B.CreateMul(i0, B.getInt64(S.N)); // The block's first element of C.
    for (int64_t g = 0; g < int64_t(reduced.size()); ++g) {
      Value *index = B.CreateAdd(first, B.getInt64(g * lanes));
      Value *at = B.CreateInBoundsGEP(S.Elem, C, index);
      llvm::Constant *inside = firstLanes(B, L.Lanes, std::min(lanes, count - g * lanes));
      Value *sum = reduced[g];
      if (S.Accumulate)
        sum = B.CreateFAdd(B.CreateMaskedLoad(VecTy, at, elemAlign, inside, zero), sum);
      if (S.Bias) {
        std::vector<int> column(lanes);
        for (int64_t l = 0; l < lanes; ++l)
          column[l] = int((g * lanes + l) % S.N);
        sum = B.CreateFAdd(sum, B.CreateShuffleVector(bias, column));
      }
      if (S.Relu)
        sum = relu(sum);
      if (S.Mask) {
        Value *maskAt = B.CreateInBoundsGEP(S.Elem, Mask, index);
        sum = maskedBy(sum, B.CreateMaskedLoad(VecTy, maskAt, elemAlign, inside, zero));
      }
      B.CreateMaskedStore(sum, at, elemAlign, inside);
    }
  }

  /// The sum of \p V's lanes by a fixed tree: the low half plus the high
  /// half until one lane is left (no reassociation, so the same on every
  /// target and at every optimization level).
  Value *sumLanes(Value *V) {
    for (int64_t width = L.Lanes; width > 1; width /= 2) {
      std::vector<int> low(width / 2), high(width / 2);
      for (int64_t l = 0; l < width / 2; ++l) {
        low[l] = int(l);
        high[l] = int(width / 2 + l);
      }
      V = B.CreateFAdd(B.CreateShuffleVector(V, low), B.CreateShuffleVector(V, high));
    }
    return B.CreateExtractElement(V, uint64_t(0));
  }

  /// Packs op(A)[i0 : i0 + valid, k0 : k0 + depth] transposed into the
  /// panel, \p rows wide: square blocks loaded along K (rows past \p valid
  /// and depths past \p depth read as zero), transposed in registers.
  void packColumns(Value *i0, Value *valid, Value *k0, Value *depth, int64_t rows) {
    int64_t lanes = L.Lanes;
    llvm::Align elemAlign(S.Elem->getPrimitiveSizeInBits() / 8);
    llvm::Constant *none = llvm::ConstantVector::getSplat(
        llvm::ElementCount::getFixed(unsigned(lanes)), B.getFalse());
    loop(B.getInt64(0), depth, lanes, [&](Value *kb) {
      Value *depthMask = lanesBelow(B.CreateSub(depth, kb));
      for (int64_t v = 0; v < rows / lanes; ++v) {
        std::vector<Value *> block(lanes);
        for (int64_t r = 0; r < lanes; ++r) {
          Value *row = B.CreateAdd(i0, B.getInt64(v * lanes + r));
          Value *inside = B.CreateICmpSLT(B.getInt64(v * lanes + r), valid);
          Value *at = B.CreateInBoundsGEP(
              S.Elem, A, B.CreateAdd(B.CreateMul(row, LdA), B.CreateAdd(k0, kb)));
          block[r] = B.CreateMaskedLoad(VecTy, at, elemAlign,
                                        B.CreateSelect(inside, depthMask, none),
                                        llvm::ConstantFP::get(VecTy, 0));
        }
        transpose(block);
        for (int64_t t = 0; t < lanes; ++t)
          B.CreateAlignedStore(block[t],
                               packAt(B.CreateAdd(kb, B.getInt64(t)), B.getInt64(v * lanes), rows),
                               llvm::Align(std::min<int64_t>(64, lanes * elemBytes())));
      }
    });
  }

  /// sum * (r > 0), as relu's gradient multiplies.
  Value *maskedBy(Value *sum, Value *r) {
    return timesIndicator(B, sum, B.CreateFCmpOGT(r, llvm::ConstantFP::get(r->getType(), 0)));
  }

  Value *relu(Value *sum) { return reluOf(B, sum); }

  /// The mask of the lanes l < \p count (none when count <= 0, all when
  /// count >= lanes).
  Value *lanesBelow(Value *count) {
    std::vector<llvm::Constant *> index;
    for (int64_t l = 0; l < L.Lanes; ++l)
      index.push_back(B.getInt64(l));
    return B.CreateICmpSLT(llvm::ConstantVector::get(index),
                           B.CreateVectorSplat(unsigned(L.Lanes), count));
  }

  /// Vectors holding column j of a block of rows, j < N, reordered into
  /// N vectors of the block's row-major elements: element f of the result
  /// is lane f / N of column f % N.
  std::vector<Value *> interleave(std::vector<Value *> columns) {
    int64_t n = int64_t(columns.size()), lanes = L.Lanes;
    if (n == 1)
      return columns;
    // One wide vector of all the columns, padded to a power of two of them.
    while (columns.size() & (columns.size() - 1))
      columns.push_back(llvm::PoisonValue::get(VecTy));
    while (columns.size() > 1) {
      std::vector<Value *> pairs;
      for (size_t c = 0; c < columns.size(); c += 2) {
        auto width = llvm::cast<llvm::FixedVectorType>(columns[c]->getType())->getNumElements();
        std::vector<int> both(2 * width);
        for (unsigned e = 0; e < 2 * width; ++e)
          both[e] = int(e);
        pairs.push_back(B.CreateShuffleVector(columns[c], columns[c + 1], both));
      }
      columns = pairs;
    }
    std::vector<Value *> out;
    for (int64_t q = 0; q < n; ++q) {
      std::vector<int> pick(lanes);
      for (int64_t l = 0; l < lanes; ++l) {
        int64_t f = q * lanes + l;
        pick[l] = int((f % n) * lanes + f / n);
      }
      out.push_back(B.CreateShuffleVector(columns[0], pick));
    }
    return out;
  }

  int64_t elemBytes() const { return S.Elem->getPrimitiveSizeInBits() / 8; }

  llvm::AllocaInst *allocaInEntry(llvm::Type *type) {
    llvm::IRBuilder<> entry(Entry, Entry->begin());
    return entry.CreateAlloca(type);
  }

  void microKernel(Value *i0, int64_t rows, Value *k0, Value *depth, Value *first,
                   Value *last, Value *j0, int64_t vectors, int64_t columns) {
    int64_t width = vectors * L.Lanes;
    int64_t lastLanes = columns - (vectors - 1) * L.Lanes;
    llvm::Constant *zero = llvm::ConstantFP::get(VecTy, 0);
    llvm::Constant *lastMask = firstLanes(B, L.Lanes, lastLanes);
    llvm::Align elemAlign(S.Elem->getPrimitiveSizeInBits() / 8);

    auto cIndex = [&](int64_t r, int64_t v) {
      Value *row = B.CreateAdd(i0, B.getInt64(r));
      return B.CreateAdd(B.CreateMul(row, LdC), B.CreateAdd(j0, B.getInt64(v * L.Lanes)));
    };
    auto cPtr = [&](int64_t r, int64_t v) {
      return B.CreateInBoundsGEP(S.Elem, C, cIndex(r, v));
    };
    bool masked = lastLanes < L.Lanes;
    auto loadC = [&](int64_t r, int64_t v) -> Value * {
      if (masked && v == vectors - 1)
        return B.CreateMaskedLoad(VecTy, cPtr(r, v), elemAlign, lastMask, zero);
      return B.CreateAlignedLoad(VecTy, cPtr(r, v), elemAlign);
    };

    // Accumulators in allocas of the entry block, which SROA turns into
    // registers carried around the k loop.
    std::vector<llvm::AllocaInst *> acc(rows * vectors);
    for (auto &slot : acc)
      slot = allocaInEntry(VecTy);
    std::vector<Value *> initial(vectors, zero);
    if (S.Bias)
      for (int64_t v = 0; v < vectors; ++v) {
        Value *at = B.CreateInBoundsGEP(S.Elem, Bias,
                                        B.CreateAdd(j0, B.getInt64(v * L.Lanes)));
        initial[v] = masked && v == vectors - 1
                         ? static_cast<Value *>(
                               B.CreateMaskedLoad(VecTy, at, elemAlign, lastMask, zero))
                         : B.CreateAlignedLoad(VecTy, at, elemAlign);
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vectors; ++v) {
        Value *start = loadC(r, v);
        if (!S.Accumulate)
          start = B.CreateSelect(first, initial[v], start);
        B.CreateStore(start, acc[r * vectors + v]);
      }

    loop(B.getInt64(0), depth, 1, [&](Value *k) {
      std::vector<Value *> panelRow(vectors);
      for (int64_t v = 0; v < vectors; ++v) {
        Value *at = B.CreateInBoundsGEP(
            S.Elem, Panel,
            B.CreateAdd(B.CreateMul(k, B.getInt64(width)), B.getInt64(v * L.Lanes)));
        panelRow[v] = B.CreateAlignedLoad(VecTy, at, PanelAlign);
      }
      Value *kAbs = B.CreateAdd(k0, k);
      for (int64_t r = 0; r < rows; ++r) {
        Value *a = B.CreateVectorSplat(unsigned(L.Lanes),
                                       aAt(B.CreateAdd(i0, B.getInt64(r)), kAbs));
        for (int64_t v = 0; v < vectors; ++v) {
          llvm::AllocaInst *slot = acc[r * vectors + v];
          Value *sum = B.CreateIntrinsic(llvm::Intrinsic::fmuladd, {VecTy},
                                         {a, panelRow[v], B.CreateLoad(VecTy, slot)});
          B.CreateStore(sum, slot);
        }
      }
    });

    std::vector<Value *> stored(rows * vectors);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vectors; ++v) {
        Value *sum = B.CreateLoad(VecTy, acc[r * vectors + v]);
        if (S.Relu)
          sum = B.CreateSelect(last, relu(sum), sum);
        if (S.Mask) {
          Value *at = B.CreateInBoundsGEP(S.Elem, Mask, cIndex(r, v));
          Value *relu = masked && v == vectors - 1
                            ? static_cast<Value *>(
                                  B.CreateMaskedLoad(VecTy, at, elemAlign, lastMask, zero))
                            : B.CreateAlignedLoad(VecTy, at, elemAlign);
          sum = B.CreateSelect(last, maskedBy(sum, relu), sum);
        }
        if (masked && v == vectors - 1)
          B.CreateMaskedStore(sum, cPtr(r, v), elemAlign, lastMask);
        else
          B.CreateAlignedStore(sum, cPtr(r, v), elemAlign);
        stored[r * vectors + v] = sum;
      }
    if (S.ColumnSums)
      addToColumnSums(stored, rows, last, j0, vectors, masked ? lastMask : nullptr);
  }

  /// After the last depth block, when the call passes column sums: adds the
  /// block's \p rows rows of C, \p Stored (row-major, \p vectors per row),
  /// to the sums of their columns from \p j0, one row after the other (the
  /// blocks run in row order). \p LastMask: the lanes of the last vector
  /// inside C, or null when all are.
  void addToColumnSums(const std::vector<Value *> &Stored, int64_t rows, Value *last, Value *j0,
                       int64_t vectors, llvm::Constant *LastMask) {
    llvm::Align elemAlign(elemBytes());
    llvm::Function *fn = B.GetInsertBlock()->getParent();
    auto *add = llvm::BasicBlock::Create(B.getContext(), "sums.add", fn);
    auto *done = llvm::BasicBlock::Create(B.getContext(), "sums.done", fn);
    B.CreateCondBr(B.CreateAnd(last, B.CreateIsNotNull(Sums)), add, done);
    B.SetInsertPoint(add);
    for (int64_t v = 0; v < vectors; ++v) {
      Value *at = B.CreateInBoundsGEP(S.Elem, Sums, B.CreateAdd(j0, B.getInt64(v * L.Lanes)));
      llvm::Constant *mask = v == vectors - 1 ? LastMask : nullptr;
      Value *sum = mask ? static_cast<Value *>(B.CreateMaskedLoad(
                              VecTy, at, elemAlign, mask, llvm::ConstantFP::get(VecTy, 0)))
                        : B.CreateAlignedLoad(VecTy, at, elemAlign);
      for (int64_t r = 0; r < rows; ++r)
        sum = B.CreateFAdd(sum, Stored[r * vectors + v]);
      if (mask)
        B.CreateMaskedStore(sum, at, elemAlign, mask);
      else
        B.CreateAlignedStore(sum, at, elemAlign);
    }
    B.CreateBr(done);
    B.SetInsertPoint(done);
  }

  llvm::Function *F;
  const GemmShape &S;
  Blocking L;
  int64_t ColumnVectors; ///< Vectors of rows per block of the column kernel; 0: panel kernel.
  llvm::IRBuilder<> B;
  llvm::Type *VecTy;
  llvm::BasicBlock *Entry = nullptr;
  Value *A = nullptr, *BM = nullptr, *C = nullptr, *M = nullptr, *K = nullptr,
        *Bias = nullptr, *Mask = nullptr, *Sums = nullptr;
  Value *LdA = nullptr, *LdB = nullptr, *LdC = nullptr;
  Value *RowBegin = nullptr, *RowEnd = nullptr;
  llvm::AllocaInst *Pack = nullptr;
  /// The panel that the micro-kernel reads: Pack, or B itself.
  Value *Panel = nullptr;
  llvm::Align PanelAlign;
};

llvm::Function *gemmFunction(llvm::Module &Mod, const GemmShape &S, int64_t ColumnVectors) {
  std::string name = functionName(S, ColumnVectors);
  if (llvm::Function *existing = Mod.getFunction(name))
    return existing;
  llvm::LLVMContext &Ctx = Mod.getContext();
  auto *type = llvm::FunctionType::get(
      llvm::Type::getVoidTy(Ctx),
      {llvm::PointerType::getUnqual(Ctx), llvm::Type::getInt64Ty(Ctx),
       llvm::Type::getInt64Ty(Ctx)},
      false);
  auto *F = llvm::Function::Create(type, llvm::Function::InternalLinkage, name, Mod);
  F->addFnAttr(llvm::Attribute::NoUnwind);
  GemmEmitter(F, S, ColumnVectors).emit();
  return F;
}

} // namespace

llvm::BranchInst *emitLoop(llvm::IRBuilder<> &B, Value *Begin, Value *End, Value *Step,
                           const std::function<void(Value *)> &Body, const llvm::Twine &Name) {
  llvm::Function *f = B.GetInsertBlock()->getParent();
  llvm::BasicBlock *before = B.GetInsertBlock();
  auto *head = llvm::BasicBlock::Create(f->getContext(), Name, f);
  auto *exit = llvm::BasicBlock::Create(f->getContext(), Name + ".end", f);
  B.CreateCondBr(B.CreateICmpSLT(Begin, End), head, exit);
  B.SetInsertPoint(head);
  llvm::PHINode *i = B.CreatePHI(B.getInt64Ty(), 2, "i");
  i->addIncoming(Begin, before);
  Body(i);
  Value *next = B.CreateAdd(i, Step, "", true, true);
  i->addIncoming(next, B.GetInsertBlock());
  llvm::BranchInst *latch = B.CreateCondBr(B.CreateICmpSLT(next, End), head, exit);
  B.SetInsertPoint(exit);
  return latch;
}

Value *emitGemm(llvm::IRBuilder<> &B, const GemmShape &StaticShape, Value *A, Value *BMatrix,
               Value *C, Value *M, Value *K, Value *Bias, bool OnWorker, Value *Mask,
               Value *ColumnSums) {
  GemmShape Shape = StaticShape;
  // A static depth of a few steps is compiled in: with K = 4, a row block
  // of 120x64x4 is 64 multiply-adds, and the depth loop's and the
  // addresses' set-up cost about half as much again (bench/gemm: 65% of
  // peak with K an argument, 77% with K = 4 compiled in).
  if (auto *depth = llvm::dyn_cast<llvm::ConstantInt>(K); depth && depth->getSExtValue() <= 64)
    Shape.K = depth->getSExtValue();
  auto *staticRows = llvm::dyn_cast<llvm::ConstantInt>(M);
  if (staticRows)
    Shape.M = staticRows->getSExtValue();
  if (auto *depth = llvm::dyn_cast<llvm::ConstantInt>(K))
    Shape.DotProducts |= dotProductsWin(Shape, depth->getSExtValue());
  llvm::Function *caller = B.GetInsertBlock()->getParent();
  llvm::Module &Mod = *caller->getParent();
  llvm::LLVMContext &Ctx = Mod.getContext();
  int64_t columnVectorsPerBlock =
      dotProducts(Shape) ? 0
                         : columnVectors(Shape, staticRows ? staticRows->getSExtValue() : 0);
  Shape.ColumnSums = ColumnSums && !dotProducts(Shape) && !columnVectorsPerBlock &&
                     !Shape.Accumulate;
  llvm::Function *fn = gemmFunction(Mod, Shape, columnVectorsPerBlock);
  int64_t blockRows = dotProducts(Shape)     ? dotBlockingFor(Shape).Rows
                      : columnVectorsPerBlock ? columnVectorsPerBlock * blockingFor(Shape).Lanes
                                              : blockingFor(Shape).Rows;

  llvm::StructType *ctxTy = contextType(Ctx);
  llvm::AllocaInst *ctx;
  {
    llvm::BasicBlock &entry = caller->getEntryBlock();
    llvm::IRBuilder<> atEntry(&entry, entry.begin());
    ctx = atEntry.CreateAlloca(ctxTy);
  }
  Value *null = llvm::ConstantPointerNull::get(B.getPtrTy());
  Value *fields[] = {A, BMatrix, C, M, K, Bias ? Bias : null, Mask ? Mask : null, null};
  for (unsigned I = 0; I < 8; ++I)
    B.CreateStore(fields[I], B.CreateStructGEP(ctxTy, ctx, I));
  Value *blocks =
      B.CreateSDiv(B.CreateAdd(M, B.getInt64(blockRows - 1)), B.getInt64(blockRows));
  // On one thread, the sums start from 0 and the blocks add their rows in
  // order.
  auto callOnThisThread = [&] {
    if (Shape.ColumnSums) {
      int64_t bytes = Shape.N * int64_t(Shape.Elem->getPrimitiveSizeInBits() / 8);
      B.CreateMemSet(ColumnSums, B.getInt8(0), B.getInt64(bytes), llvm::MaybeAlign());
      B.CreateStore(ColumnSums, B.CreateStructGEP(ctxTy, ctx, 7));
    }
    B.CreateCall(fn, {ctx, B.getInt64(0), blocks});
  };
  Value *summed = ColumnSums ? B.getInt1(Shape.ColumnSums) : nullptr;

  if (OnWorker) {
    callOnThisThread();
    return summed;
  }
  llvm::FunctionCallee parallelFor = Mod.getOrInsertFunction(
      "nnc_parallel_for", B.getVoidTy(), B.getInt64Ty(), B.getPtrTy(), B.getPtrTy());
  Value *work = B.CreateMul(B.CreateMul(M, K), B.getInt64(Shape.N));
  auto *parallel = llvm::BasicBlock::Create(Ctx, "gemm.parallel", caller);
  auto *serial = llvm::BasicBlock::Create(Ctx, "gemm.serial", caller);
  auto *done = llvm::BasicBlock::Create(Ctx, "gemm.done", caller);
  Value *split = B.CreateICmpSGE(work, B.getInt64(ParallelWork));
  B.CreateCondBr(split, parallel, serial);
  B.SetInsertPoint(parallel);
  B.CreateCall(parallelFor, {blocks, fn, ctx});
  B.CreateBr(done);
  B.SetInsertPoint(serial);
  callOnThisThread();
  B.CreateBr(done);
  B.SetInsertPoint(done);
  return Shape.ColumnSums ? B.CreateNot(split) : summed;
}

std::string emitGemmEntryPoint(llvm::Module &Mod, const GemmShape &Shape) {
  llvm::LLVMContext &Ctx = Mod.getContext();
  llvm::Type *ptr = llvm::PointerType::getUnqual(Ctx);
  llvm::Type *i64 = llvm::Type::getInt64Ty(Ctx);
  auto *type = llvm::FunctionType::get(llvm::Type::getVoidTy(Ctx),
                                       {ptr, ptr, ptr, i64, i64, ptr, ptr, ptr}, false);
  auto *F = llvm::Function::Create(type, llvm::Function::ExternalLinkage,
                                   "nnc_gemm", Mod);
  F->addFnAttr(llvm::Attribute::NoUnwind);
  llvm::IRBuilder<> B(llvm::BasicBlock::Create(Ctx, "entry", F));
  auto staticOr = [&](int64_t Static, Value *Argument) {
    return Static ? static_cast<Value *>(B.getInt64(Static)) : Argument;
  };
  Value *summed = emitGemm(B, Shape, F->getArg(0), F->getArg(1), F->getArg(2),
                           staticOr(Shape.M, F->getArg(3)), staticOr(Shape.K, F->getArg(4)),
                           Shape.Bias ? F->getArg(5) : nullptr, Shape.ColumnSums,
                           Shape.Mask ? F->getArg(6) : nullptr,
                           Shape.ColumnSums ? F->getArg(7) : nullptr);
  B.CreateRetVoid();
  if (summed && summed != B.getTrue())
    return "sums: only the panel kernel sums columns (not the column kernel of a few columns, "
           "nor dot)";
  return "";
}

} // namespace nnc
