//===- CpuCodegen.cpp - Tensor IR graphs to LLVM functions ----------------===//
//
// Each graph becomes one function `void nnc_<graph>(nnc_call *)`. Scalar
// values live in registers. An elementwise op whose users read each element
// once in one loop is computed inside that loop; sums over operands of one
// length share a loop, and so do the elementwise ops of one parameter's
// update, which write the parameter and the optimizer state in place
// (planFusion). Every other value gets a buffer: leaves point into the
// call's buffers, the rest into the workspace, laid out statically
// (fixed-size buffers first, then per-row buffers scaled by the batch
// size), buffers whose lives do not overlap sharing memory
// (planWorkspace). Matrix products are
// register-blocked kernels (Gemm.cpp); the other ops become plain loop
// nests that LLVM's vectorizer then widens for the target; elementwise ops
// take their formula from the op registry (VectorMath.cpp).
//
//===----------------------------------------------------------------------===//

#include "codegen/Abi.h"
#include "codegen/Codegen.h"
#include "codegen/Gemm.h"
#include "codegen/Gpu.h"
#include "codegen/VectorMath.h"
#include "ir/Ops.h"

#include "llvm/Analysis/ValueTracking.h"
#include "llvm/Analysis/VectorUtils.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/IR/IntrinsicsX86.h"
#include "llvm/IR/MDBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <queue>
#include <set>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace nnc {

llvm::StructType *getCallType(llvm::LLVMContext &context) {
  llvm::Type *ptr = llvm::PointerType::getUnqual(context);
  llvm::Type *i64 = llvm::Type::getInt64Ty(context);
  llvm::Type *f64 = llvm::Type::getDoubleTy(context);
  return llvm::StructType::get(context,
                               {ptr, ptr, ptr, ptr, ptr, ptr, i64, f64, i64, f64, i64, ptr, ptr});
}

namespace {

using ir::Node;
using ir::OpCode;
using llvm::Value;

constexpr int64_t Alignment = 64;
/// Rows of softmax and log_softmax up to this width (a few classes) are
/// lowered as straight-line code per row, which vectorizes across rows;
/// wider rows loop over their elements, which vectorizes along the row.
constexpr int64_t SmallRowWidth = 8;
/// CPU: a convolution's images run in this many groups, each with a column
/// matrix (and, for a filter's gradient, a partial sum) of its own in the
/// scratch, split among the threads. The count is fixed, not the threads',
/// so that the order of the gradient's sums is too.
constexpr int64_t ImageGroups = 16;
/// GPU, a kernel per node: a product of few 64 x 64 tiles and a long depth
/// (a weight's gradient summed over a big batch, a wide layer at a small
/// one, a filter's gradient summed over the batch's images) cuts its depth
/// into runs at least GpuRunDepth deep, up to GpuProductUnits (tile, run)
/// pairs: enough to fill the device (4 blocks on each of an H100's 132
/// multiprocessors). A second kernel adds the runs' partial products in
/// order (addProductRuns), so a run must save more than a launch costs: a
/// product of depth below 2 x GpuRunDepth is not cut.
constexpr int64_t GpuProductUnits = 512;
constexpr int64_t GpuRunDepth = 128;
/// GPU, a kernel per node: side-by-side units (see SideBySide) hold at most
/// one product of more than GpuLightPiece multiply-adds a row of the batch.
/// Beside light pieces a launch costs a good part of the time; two heavy
/// products in one kernel would take more registers than either (mnist_cnn's
/// filter and input gradients: 123 a thread, not 77 and 64) and save no
/// time worth it.
constexpr int64_t GpuLightPiece = 1 << 16;
/// GPU, a kernel per node: a sum over the batch's rows of a few columns
/// (a bias's gradient) sums runs of at least GpuRunRows rows, a thread per
/// (run, column), up to GpuSumThreads threads; a second kernel adds each
/// column's runs in order (lowerSplitColumnSums).
constexpr int64_t GpuSumThreads = 65536;
constexpr int64_t GpuRunRows = 128;
/// GPU, a kernel per node: a sum of all the terms of a batched value (a
/// loss's) sums chunks of at least GpuChunkTerms terms, a block per chunk,
/// up to GpuSumChunks chunks; a one-block kernel adds the chunks' sums.
constexpr int64_t GpuSumChunks = 1024;
constexpr int64_t GpuChunkTerms = 4096;
int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
/// GPU: an embedding's gradient (scatter_add) sorts its index elements by
/// table row, stably, so that each row adds its values in one order
/// whatever the blocks do: each tile of GpuScatterTile elements counts the
/// rows in it, one scan of all the counts gives where each (row, tile)
/// starts. The sorted values are summed in chunks of GpuScatterChunk, a
/// row's pieces of several chunks then added in order (lowerGpuScatterAdd).
constexpr int64_t GpuScatterTile = 2048;
constexpr int64_t GpuScatterChunk = 32;
/// A call of at most GpuScatterFew index elements into a table of at most
/// GpuScatterSmallTable elements does all of it in one kernel on one block:
/// a launch would cost more than the block's work (a recommender's).
constexpr int64_t GpuScatterFew = 512;
constexpr int64_t GpuScatterSmallTable = 16384;

/// The product of dims [begin, end), with `batch` for the batch's extent
/// (0: unknown, 1: the product for a row of the batch).
int64_t staticExtents(std::vector<int64_t>::const_iterator begin,
                      std::vector<int64_t>::const_iterator end, int64_t batch = 0) {
  int64_t p = 1;
  for (auto d = begin; d != end; ++d)
    p *= *d == ir::N ? batch : *d;
  return p;
}

/// A matmul's rows (those of its result: see matmul's shape rule), columns
/// and depth, as staticExtents gives them.
struct MatMulExtents {
  int64_t Rows, Columns, Depth;
};
MatMulExtents matMulExtents(const Node *n, int64_t batch = 0) {
  const std::vector<int64_t> &dims = n->Ty.Dims, &aDims = n->Operands[0]->Ty.Dims;
  return {staticExtents(dims.begin(), dims.end() - 1, batch),
          staticExtents(dims.end() - 1, dims.end(), batch),
          n->A.TransA ? staticExtents(aDims.begin(), aDims.end() - 1, batch)
                      : staticExtents(aDims.end() - 1, aDims.end(), batch)};
}

/// Whether n is a column sum over the batch's rows (a bias's gradient):
/// lowerReduceSum's, not a sum to a scalar (lowerFullSums's).
bool isColumnSum(const Node *n) {
  return n->Op == OpCode::ReduceSum && n->A.Axis == 0 && n->Operands[0]->Ty.Dims[0] == ir::N &&
         !n->Ty.isBatched() && !n->Ty.Dims.empty();
}

/// Whether matmul n is a tiled product on the GPU, not one of lowerMatMul's
/// loops (a batch of columns, a depth of 1, one element).
bool isTiledMatMul(const Node *n) {
  MatMulExtents e = matMulExtents(n);
  return n->Ty.Dims.back() != ir::N && e.Depth != 1 && !(e.Rows == 1 && e.Columns == 1);
}

/// The multiply-adds of GPU product n (a matmul, or a convolution's
/// forward, input gradient or filter gradient) for a row (an image) of the
/// batch.
int64_t productWorkPerRow(const Node *n) {
  if (n->Op == OpCode::MatMul) {
    MatMulExtents e = matMulExtents(n, 1);
    return e.Rows * e.Columns * e.Depth;
  }
  // A convolution's three products have the forward's multiply-adds: each
  // output element's, over the filter's taps of every input channel.
  const Node *y =
      n->Op == OpCode::Conv2D ? n : n->Operands[n->Op == OpCode::Conv2DGradInput ? 0 : 1];
  const Node *x = n->Op == OpCode::Conv2DGradInput ? n : n->Operands[0];
  return staticExtents(y->Ty.Dims.begin(), y->Ty.Dims.end(), 1) * x->Ty.Dims[1] * n->A.KernelH *
         n->A.KernelW;
}

/// The product of dims[begin, end), with `batch` for the batch's extent.
Value *extentsOf(llvm::IRBuilder<> &B, const std::vector<int64_t> &dims, size_t begin,
                 size_t end, Value *batch) {
  Value *p = B.getInt64(1);
  for (size_t d = begin; d < end; ++d)
    p = B.CreateMul(p, dims[d] == ir::N ? batch : B.getInt64(dims[d]));
  return p;
}

/// `total` (an i64 value) cut into runs of even length: at most maxRuns,
/// each at least minLength long (one run where total is shorter) and a
/// multiple of `align`. Returns the runs and their length (the last may be
/// shorter), i64 values.
std::pair<Value *, Value *> evenRuns(llvm::IRBuilder<> &B, Value *total, Value *maxRuns,
                                     int64_t minLength, int64_t align) {
  auto atLeast = [&](Value *x, int64_t y) {
    return B.CreateBinaryIntrinsic(llvm::Intrinsic::umax, x, B.getInt64(y));
  };
  auto ceilDivide = [&](Value *x, Value *d) {
    return B.CreateUDiv(B.CreateAdd(x, B.CreateSub(d, B.getInt64(1))), d);
  };
  Value *runs = atLeast(B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, maxRuns,
                                                B.CreateUDiv(total, B.getInt64(minLength))),
                        1);
  Value *length = B.CreateMul(ceilDivide(ceilDivide(total, runs), B.getInt64(align)),
                              B.getInt64(align));
  length = atLeast(length, align);
  return {atLeast(ceilDivide(total, length), 1), length};
}

/// How GPU product n (a matmul, or a filter's gradient: the product of the
/// output's adjoint [O, b oh ow] and the input's patches [b oh ow, C KH KW])
/// cuts its depth into runs at a call of `batch` rows (see
/// GpuProductUnits): the runs (1: not cut) and their depth, a multiple of
/// 16 (the product's slices). The product's kernels and the host's schedule
/// compute it alike.
std::pair<Value *, Value *> productSplit(llvm::IRBuilder<> &B, const Node *n, Value *batch) {
  const std::vector<int64_t> &dims = n->Ty.Dims, &aDims = n->Operands[0]->Ty.Dims;
  Value *rows, *depth;
  int64_t columns = dims.back();
  if (n->Op == OpCode::Conv2DGradFilter) {
    const std::vector<int64_t> &out = n->Operands[1]->Ty.Dims;
    rows = B.getInt64(dims[0]);
    columns = dims[1] * dims[2] * dims[3];
    depth = B.CreateMul(extentsOf(B, out, 0, 1, batch), B.getInt64(out[2] * out[3]));
  } else {
    rows = extentsOf(B, dims, 0, dims.size() - 1, batch);
    depth = n->A.TransA ? extentsOf(B, aDims, 0, aDims.size() - 1, batch)
                        : extentsOf(B, aDims, aDims.size() - 1, aDims.size(), batch);
  }
  Value *tileRows = B.CreateUDiv(B.CreateAdd(rows, B.getInt64(GpuGemmTile - 1)),
                                 B.getInt64(GpuGemmTile));
  Value *tiles =
      B.CreateMul(B.CreateBinaryIntrinsic(llvm::Intrinsic::umax, tileRows, B.getInt64(1)),
                  B.getInt64(ceilDiv(columns, GpuGemmTile)));
  return evenRuns(B, depth, B.CreateUDiv(B.getInt64(GpuProductUnits), tiles), GpuRunDepth, 16);
}

/// How GPU column sum n (a reduce_sum over the batch's rows) cuts the
/// rows into runs at a call of `batch` rows (see GpuSumThreads).
std::pair<Value *, Value *> columnSumSplit(llvm::IRBuilder<> &B, const Node *n, Value *batch) {
  return evenRuns(B, batch, B.getInt64(GpuSumThreads / n->Ty.staticElements()), GpuRunRows, 1);
}

/// The terms of full sum `sums` (its first member's operand) at a call of
/// `batch` rows.
Value *fullSumTerms(llvm::IRBuilder<> &B, const std::vector<const Node *> &sums, Value *batch) {
  const std::vector<int64_t> &dims = sums.front()->Operands[0]->Ty.Dims;
  return extentsOf(B, dims, 0, dims.size(), batch);
}

/// How a GPU full sum of `count` terms is cut into chunks (see
/// GpuSumChunks).
std::pair<Value *, Value *> fullSumSplit(llvm::IRBuilder<> &B, Value *count) {
  return evenRuns(B, count, B.getInt64(GpuSumChunks), GpuChunkTerms, 1);
}

/// GPU, kernels over blocks of rows (--gpu-fuse rows, see runRowBlocks):
/// the batch's rows are cut into chunks of GpuChunkRows to twice as many
/// rows (at least a product's tile of rows). Each block of the row kernel
/// takes every (blocks)-th chunk, in order, reusing its own memory for
/// each chunk's values, so that they stay in the cache: 512 blocks' 64 rows
/// of the sweep's MLP take 35 MB, within an H100's 50 MB L2. The blocks are
/// one per chunk, up to --gpu-row-blocks (GpuOptions::RowBlocks, 512 by
/// default): enough to fill the device (4 blocks on each of an H100's 132
/// multiprocessors), and few enough that the blocks' partial sums (a copy
/// of the gradients each) cost less memory traffic than the rows' values.
constexpr int64_t GpuChunkRows = 64;

/// How the rows of a call of `batch` rows are cut into chunks: their count
/// and rows (the last may have fewer). The row kernel and the host's
/// schedule compute it alike.
std::pair<Value *, Value *> rowChunks(llvm::IRBuilder<> &B, Value *batch) {
  return evenRuns(B, batch, batch, GpuChunkRows, 1);
}

/// The blocks of the row kernel at a call of `batch` rows: one per chunk,
/// up to maxBlocks.
Value *rowBlocks(llvm::IRBuilder<> &B, Value *batch, int64_t maxBlocks) {
  return B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, rowChunks(B, batch).first,
                                 B.getInt64(maxBlocks));
}

int64_t alignUp(int64_t bytes) { return (bytes + Alignment - 1) / Alignment * Alignment; }

/// GPU: where the scratch of an embedding's gradient (scatter_add of the
/// index elements into a table's rows) lies. A fixed part holds the count
/// of valid elements, tile 0's counts of each row, and chunk 0's two
/// partial sums; the rest, which grows with the call's rows (or holds as
/// many elements as the indices when they are not batched), holds the
/// partial sums of chunks 1 on, the counts of tiles 1 on (tile after
/// tile), and the elements' sorted order (see lowerGpuScatterAdd).
struct ScatterScratch {
  int64_t Tile0 = 0, Chunk0 = 0, Fixed = 0; ///< Offsets in the fixed part; its bytes.
  int64_t Tiles = 0, Order = 0, Rest = 0;   ///< The same in the rest (per row), after the sums.
};

ScatterScratch scatterScratch(const Node *n) {
  int64_t rows = n->Ty.Dims[0], width = n->Ty.Dims[1], size = ir::byteSize(n->Ty.Elem);
  int64_t elements = n->Operands[0]->Ty.staticElements(); // a row's, when batched
  ScatterScratch s;
  s.Tile0 = Alignment;
  s.Chunk0 = s.Tile0 + alignUp(rows * 4);
  s.Fixed = s.Chunk0 + alignUp(2 * width * size);
  s.Tiles = alignUp(ceilDiv(elements * 2 * width, GpuScatterChunk) * size);
  s.Order = s.Tiles + alignUp(ceilDiv(elements * rows, GpuScatterTile) * 4);
  s.Rest = s.Order + alignUp(elements * 4);
  return s;
}

/// GPU, a kernel per node: a row segment (see planRowSegments) cuts the
/// rows into chunks of about GpuSegmentElements elements of its widest
/// value (a unit of wider rows is in no segment), and at most GpuBlock
/// rows (a unit that gives each thread a row then keeps them all busy):
/// at most 4 elements per thread and unit, since a thread's elements come
/// one after another, each a wait for memory. A block per chunk, up to
/// GpuSegmentBlocks, each taking every (blocks)-th chunk.
constexpr int64_t GpuSegmentElements = 1024;
constexpr int64_t GpuSegmentBlocks = 1024;

/// The chunks of `chunkRows` rows of a call of `batch` rows.
Value *segmentChunks(llvm::IRBuilder<> &B, Value *batch, int64_t chunkRows) {
  return B.CreateUDiv(B.CreateAdd(batch, B.getInt64(chunkRows - 1)), B.getInt64(chunkRows));
}

/// The blocks of a row segment's kernel whose chunks have `chunkRows` rows
/// at a call of `batch` rows: one per chunk, at least one, at most
/// GpuSegmentBlocks. The kernel and the host's schedule compute it alike.
Value *segmentBlocks(llvm::IRBuilder<> &B, Value *batch, int64_t chunkRows) {
  return B.CreateBinaryIntrinsic(llvm::Intrinsic::umax,
                                 B.CreateBinaryIntrinsic(llvm::Intrinsic::umin,
                                                         segmentChunks(B, batch, chunkRows),
                                                         B.getInt64(GpuSegmentBlocks)),
                                 B.getInt64(1));
}

/// A GPU target that numbers another's blocks otherwise, and is that
/// target in all else.
class BlocksView : public GpuTarget {
public:
  explicit BlocksView(GpuTarget &grid) : Grid(grid) {}
  llvm::Module &kernelModule() override { return Grid.kernelModule(); }
  Value *thread(llvm::IRBuilder<> &B) override { return Grid.thread(B); }
  void barrier(llvm::IRBuilder<> &B) override { Grid.barrier(B); }
  Value *shared(llvm::IRBuilder<> &B) override { return Grid.shared(B); }
  void finishKernel(llvm::Function &F) override { Grid.finishKernel(F); }
  bool device() const override { return Grid.device(); }

protected:
  GpuTarget &Grid;
};

/// A GPU target whose kernels see a grid of one block: each block of a
/// kernel over blocks of rows runs its rows' work as a one-block kernel
/// runs the whole batch's (its products' tiles, its parallel loops and its
/// reductions all among its own threads).
class BlockLocalTarget final : public BlocksView {
public:
  using BlocksView::BlocksView;
  Value *block(llvm::IRBuilder<> &B) override { return B.getInt32(0); }
  Value *blocks(llvm::IRBuilder<> &B) override { return B.getInt32(1); }
};

/// A GPU target whose blocks are numbered from the last: in a kernel of
/// independent pieces of work (see SideBySide), every other piece starts on
/// the blocks that the piece before it leaves idle when both are small.
class ReversedBlocksTarget final : public BlocksView {
public:
  using BlocksView::BlocksView;
  Value *block(llvm::IRBuilder<> &B) override {
    return B.CreateSub(B.CreateSub(Grid.blocks(B), B.getInt32(1)), Grid.block(B));
  }
  Value *blocks(llvm::IRBuilder<> &B) override { return Grid.blocks(B); }
};

/// How a graph is lowered for the GPU (GpuOptions::Fusion).
enum class KernelPlan {
  PerNode,    ///< a kernel per node or group (see runGpu)
  WholeGraph, ///< the graph as one kernel on one block
  RowBlocks,  ///< a kernel over blocks of rows, then the rest (see runRowBlocks)
};

/// Lowers one graph to one function.
class GraphLowering {
public:
  /// With \p gpu, lowers the graph for it, as kernels planned by \p plan.
  /// With \p skipDeadUnits (CPU), the products of a relu's masked adjoint
  /// may skip its zero columns (see ColumnSkip).
  GraphLowering(llvm::Module &module, const ir::Graph &graph, unsigned vectorBits,
                GpuTarget *gpu = nullptr, KernelPlan plan = KernelPlan::PerNode,
                bool skipDeadUnits = false)
      : M(module), Ctx(module.getContext()), G(graph), B(Ctx), VectorBits(vectorBits), Gpu(gpu),
        WholeGraph(plan != KernelPlan::PerNode), RowBlocks(plan == KernelPlan::RowBlocks),
        SkipDeadUnits(skipDeadUnits) {}

  WorkspaceSize run();
  /// KernelPlan::RowBlocks: the most blocks of the row kernel.
  void setMaxRowBlocks(int64_t blocks) { MaxRowBlocks = blocks; }
  /// KernelPlan::RowBlocks: why the graph cannot be lowered so, after
  /// run(), which then made no kernels; empty when it was.
  const std::string &rowBlocksRefusal() const { return RowBlocksRefusal; }

  /// Emits, in the host's schedule, a value of a call of `rows` rows: the
  /// condition to launch a kernel (an i1), or its blocks (an i64).
  using OfRows = std::function<Value *(llvm::IRBuilder<> &, Value *rows)>;
  /// A GPU kernel, in launch order, and whether it may run on many blocks.
  /// A kernel that adds the runs of a sum cut into runs (a product's,
  /// lowerSplitProduct; a column sum's, lowerSplitColumnSums; a full sum's,
  /// lowerSplitFullSums; the row blocks', runRowBlocks) is launched only
  /// when the call's rows cut it. A kernel over blocks of rows is launched
  /// on as many blocks as the call's rows make.
  struct Kernel {
    llvm::Function *Fn;
    bool Wide;
    OfRows LaunchIf; ///< Empty: always.
    OfRows Blocks;   ///< Empty: Wide's (many) or one.
    /// What LaunchIf tells, for the schedule's readers: "runs" (the rows
    /// cut a sum into runs), "few" or "many" (index elements).
    const char *Condition;
  };
  const std::vector<Kernel> &kernels() const { return Kernels; }

private:
  /// Where a node's value is: a register (scalars) or a buffer.
  struct Slot {
    Value *Ptr = nullptr;
    Value *Scalar = nullptr;
  };

  llvm::Type *elemType(ir::DType type) {
    switch (type) {
    case ir::DType::F32: return B.getFloatTy();
    case ir::DType::F64: return B.getDoubleTy();
    case ir::DType::I32: return B.getInt32Ty();
    }
    return nullptr;
  }
  Value *i64(int64_t value) { return B.getInt64(value); }
  /// A dimension's extent: the batch's size for N (1 while an image chain
  /// is lowered for one image).
  Value *extent(int64_t dim) {
    if (dim != ir::N)
      return i64(dim);
    return ImageRow ? i64(1) : RowCount ? RowCount : Batch;
  }
  /// Where batched value n's rows start: at ImageRow's while an image chain
  /// is lowered, at the block's first row in a kernel over blocks of rows,
  /// else at the first.
  Value *rowStart(const Node *n, Value *ptr) {
    Value *first = ImageRow ? ImageRow : RowBegin;
    if (!first || !n->Ty.isBatched())
      return ptr;
    return B.CreateInBoundsGEP(elemType(n->Ty.Elem), ptr,
                               B.CreateMul(first, i64(n->Ty.staticElements())));
  }
  Value *product(const std::vector<int64_t> &dims, size_t begin, size_t end) {
    Value *result = i64(1);
    for (size_t i = begin; i < end; ++i)
      result = B.CreateMul(result, extent(dims[i]), "", true, true);
    return result;
  }
  Value *elementCount(const ir::Type &type) {
    return product(type.Dims, 0, type.Dims.size());
  }
  Value *field(CallField f) {
    return B.CreateStructGEP(CallTy, Call, f);
  }
  /// The pointer to one of the call's buffers (params, state, ...).
  Value *buffer(CallField f) { return Buffers.at(f); }
  Value *loadField(CallField f, llvm::Type *type) {
    return B.CreateLoad(type, field(f));
  }
  /// n's slot. On the GPU, each kernel finds the slots it reads afresh,
  /// at its start: a value computed by an earlier kernel is in memory (so
  /// does a CPU worker function).
  const Slot &slotOf(const Node *n) {
    if ((Gpu || OnWorker) && !Slots.count(n))
      materialize(n);
    return Slots.at(n);
  }
  void materialize(const Node *n);
  Value *at(const Node *n, Value *index) {
    return B.CreateInBoundsGEP(elemType(n->Ty.Elem), slotOf(n).Ptr, index);
  }
  /// Element `index` of n's value: loaded from its buffer, or computed
  /// here if n is inlined.
  Value *load(const Node *n, Value *index) {
    // A value read several times in one loop (an inlined node with several
    // readers, or a member of an elementwise group) is computed or loaded
    // once per element: later reads in the same block reuse it.
    auto key = std::make_tuple(n, index, B.GetInsertBlock());
    auto computed = Computed.find(key);
    if (computed != Computed.end())
      return computed->second;
    if (Inlined.count(n)) {
      std::vector<Value *> args;
      for (const Node *operand : n->Operands)
        args.push_back(load(operand, index));
      return Computed[key] =
                 n->Op == OpCode::MatMul
                     ? B.CreateFMul(args[0], args[1]) // isScaling: A[m] * B[0]
                     : LLVMScalarBuilder(B, elemType(n->Ty.Elem)).apply(n->Op, args);
    }
    const Slot &slot = slotOf(n);
    if (slot.Scalar)
      return slot.Scalar;
    return B.CreateLoad(elemType(n->Ty.Elem), at(n, n->Ty.staticElements() == 1 &&
                                                           !n->Ty.isBatched()
                                                       ? i64(0)
                                                       : index));
  }
  /// Elements index .. index + lanes - 1 of n as one vector (CPU code):
  /// loaded, or computed here from its operands' vectors if n is inlined.
  Value *loadVector(const Node *n, Value *index, unsigned lanes) {
    llvm::Type *ft = elemType(n->Ty.Elem);
    if (Inlined.count(n)) {
      std::vector<Value *> args;
      for (const Node *operand : n->Operands)
        args.push_back(loadVector(operand, index, lanes));
      return n->Op == OpCode::MatMul
                 ? B.CreateFMul(args[0], args[1])
                 : LLVMScalarBuilder(B, llvm::FixedVectorType::get(ft, lanes)).apply(n->Op, args);
    }
    const Slot &slot = slotOf(n);
    if (slot.Scalar)
      return B.CreateVectorSplat(lanes, slot.Scalar);
    if (n->Ty.staticElements() == 1 && !n->Ty.isBatched())
      return B.CreateVectorSplat(lanes, B.CreateLoad(ft, at(n, i64(0))));
    return B.CreateAlignedLoad(llvm::FixedVectorType::get(ft, lanes), at(n, index),
                               llvm::Align(ir::byteSize(n->Ty.Elem)));
  }
  Value *scalarOf(const Node *n) { return load(n, i64(0)); }
  Value *offsetPtr(Value *base, ir::DType type, int64_t elements) {
    return B.CreateInBoundsGEP(elemType(type), base, i64(elements));
  }

  /// Emits `for (i = 0; i < count; ++i) body(i)`.
  void forRange(Value *count, const std::function<void(Value *)> &body);
  /// Emits `for (i = begin; i < end; ++i) body(i)`. A rolled loop is kept
  /// from being unrolled before vectorization: a short row loop of constant
  /// length would otherwise be unrolled whole, and the loop around it
  /// vectorized with gathers instead. In a GPU kernel's uniform code, the
  /// loop runs on one thread (see onOneThread).
  void forRange(Value *begin, Value *end,
                const std::function<void(Value *)> &body, bool rolled = false);
  /// `for (i = 0; i < count; ++i) body(i)` where iteration i reads and
  /// writes only elements of its own: on the CPU, said to LLVM (every
  /// access in the loop is in an access group the loop declares parallel),
  /// so that it vectorizes with no run-time overlap checks, which fail
  /// between slices of one buffer (an LSTM's gates in its packed state).
  void independentFor(Value *count, const std::function<void(Value *)> &body);
  /// The loop itself: `for (i = begin; i < end; i += step) body(i)`.
  void loopRange(Value *begin, Value *end, Value *step,
                 const std::function<void(Value *)> &body, bool rolled);
  /// A loop whose iterations are independent (each writes its own
  /// elements, and reads none that another writes): on the GPU, split
  /// among the threads of all blocks.
  void parallelFor(Value *count, const std::function<void(Value *)> &body);
  /// A loop of steps that depend on each other (an LSTM's time steps)
  /// whose bodies hold parallel work: on the GPU, every thread of one
  /// block runs every step.
  void stepsFor(Value *begin, Value *end, const std::function<void(Value *)> &body);
  /// CPU: `for (i = 0; i < count; ++i) body(i)` with independent
  /// iterations, split among the runtime's threads. The body is emitted
  /// into a worker function of its own (see OnWorker).
  void threadedFor(int64_t count, const std::function<void(Value *)> &body);
  /// CPU: runs body(img, group) for every image of a batch of `images` (a
  /// dimension) for a convolution or a pooling: the images are cut into
  /// ImageGroups runs, one per scratch buffer, split among the threads
  /// (groupStart(group) first, when given).
  void forImages(int64_t images, const std::function<void(Value *, Value *)> &body,
                 const std::function<void(Value *)> &groupStart = nullptr);

  // GPU kernels. Code outside parallelFor loops is uniform: every thread
  // runs it alike. What it writes, one thread writes; the threads meet at
  // a barrier after each piece of shared work.
  /// The thread's index among all threads of the grid (i64).
  Value *globalThread() {
    Value *block = B.CreateZExt(Gpu->block(B), B.getInt64Ty());
    Value *thread = B.CreateZExt(Gpu->thread(B), B.getInt64Ty());
    return B.CreateAdd(B.CreateMul(block, i64(GpuBlock)), thread);
  }
  /// Runs body on thread 0 of the block, then a barrier; the kernel is
  /// then launched on one block.
  void onOneThread(const std::function<void()> &body);
  /// GPU: a scalar elementwise node (a loss's scaling by the batch, Adam's
  /// bias corrections) has no buffer and no kernel of its own. It is a few
  /// operations in the uniform code of each kernel that reads it
  /// (materialize), or of the graph's one kernel where it is lowered: a
  /// launch or a barrier would cost more.
  bool scalarInRegisters(const Node *n) const {
    return Gpu && n->Ty.Dims.empty() &&
           ir::opInfo(n->Op).Category == ir::OpCategory::Elementwise && !GroupedInto.count(n) &&
           !Groups.count(n) && !ProductEpilogues.count(n);
  }
  /// GPU: whether n has no code of its own where the schedule reaches it.
  /// It is lowered in the kernel of the node it is fused or grouped into;
  /// or kernels find it where they read it (leaves, reshapes: materialize);
  /// or it is a scalar computed where it is read, unless the graph is one
  /// kernel on one block, which computes it once.
  bool loweredElsewhere(const Node *n) const {
    return FusedInto.count(n) || GroupedInto.count(n) ||
           ir::opInfo(n->Op).Category == ir::OpCategory::Leaf || n->Op == OpCode::Reshape ||
           (scalarInRegisters(n) && (!WholeGraph || RowBlocks));
  }
  /// GPU, between two pieces of a node's work (the second may read what
  /// the first wrote): with a kernel per node, the next kernel starts here,
  /// so that both pieces may run on many blocks (with the whole graph in
  /// one kernel, the first piece's barrier orders them). No value computed
  /// before it may be used after it.
  void nextKernel(const std::string &work = "") {
    if (Gpu && !WholeGraph) {
      endKernel();
      beginKernel(work.empty() ? KernelWork : work);
    }
  }
  /// Stores value at ptr: from one thread, in a kernel's uniform code.
  void storeOnce(Value *value, Value *ptr);
  /// C (+)= op(A) op(B) (+ bias): the CPU's micro-kernels (Gemm.cpp), or
  /// the GPU's tiled product (Gpu.cpp). With `columnSums` (CPU), also C's
  /// column sums where they can be: returns whether they were (see
  /// emitGemm), or null.
  Value *gemm(const GemmShape &shape, Value *a, Value *b, Value *c, Value *m, Value *k,
              Value *bias = nullptr, Value *mask = nullptr, Value *columnSums = nullptr,
              const GpuGemmSplit *split = nullptr);
  /// Stores zeros into `bytes` bytes at ptr, aligned to `align` bytes.
  void zeroBytes(Value *ptr, int64_t bytes, int64_t align = Alignment);
  /// Lowers the graph as GPU kernels, one per node or group, one per store.
  void runGpu();
  /// KernelPlan::RowBlocks: which units run per row (and in which order),
  /// and which sum over the rows (see runRowBlocks); why it cannot be, or
  /// empty.
  std::string planRowBlocks();
  /// KernelPlan::RowBlocks: the kernels (see RowUnits).
  void runRowBlocks();
  /// GPU: body for chunks first, first + step, ... below `chunks` of the
  /// call's rows, `chunkRows` each (the last may have fewer), with RowBegin
  /// and RowCount set and the slots found afresh for each.
  void forChunks(Value *first, Value *chunks, Value *step, Value *chunkRows,
                 const std::function<void()> &body);
  /// A kernel per node: finds the runs of flat updates (see UpdateRuns).
  void planUpdateRuns();
  /// A kernel per node: finds the side-by-side units (see SideBySide).
  void planSideBySide();
  /// Whether unit n is one wide piece of work on the GPU, maybe with a
  /// kernel that adds its runs after it: a column sum over the batch's rows
  /// or a tiled product (see SideBySide).
  bool isWidePiece(const Node *n) const;
  /// A kernel per node: finds the row segments (see RowSegments), and
  /// moves what their units need not wait for after them.
  void planRowSegments();
  /// A row segment's kernel: each block runs every unit on its chunks of
  /// rows, one chunk after another.
  void lowerRowSegment(const std::vector<const Node *> &units, int64_t chunkRows);
  /// In the row kernel, the block's copy of sum n among those at workspace
  /// offset `offset` (RowPartials, RowChunkSums).
  Value *rowBlockSum(const Node *n, int64_t offset) {
    int64_t bytes = n->Ty.staticElements() * ir::byteSize(n->Ty.Elem);
    return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace,
                               B.CreateAdd(i64(offset), B.CreateMul(RowBlock, i64(bytes))));
  }
  /// Starts function `name` of the call's ABI in `module`: its entry block
  /// loads the call's buffers and batch size.
  void beginFunction(llvm::Module &module, const std::string &name);
  /// Loads the call's buffers and batch size, at the insertion point.
  void loadCall();
  /// Starts the next kernel, named after its \p work when it has one node's
  /// (or one store's).
  void beginKernel(const std::string &work = "");
  /// What node n's kernel computes, for its name: its op's name, but for a
  /// product with an epilogue (matmul_bias_relu, matmul_mask).
  std::string kernelWork(const Node *n) const;
  void endKernel();
  /// An accumulator in the entry block, so that loops can sum into it.
  llvm::AllocaInst *entryAlloca(llvm::Type *type) {
    llvm::IRBuilder<> entry(Entry, Entry->begin());
    return entry.CreateAlloca(type);
  }

  /// The sum of term(i) for i in [0, count), starting from `zero` (whose
  /// type is the sum's). The additions may be reassociated, so that the
  /// loop vectorizes: partial sums per vector lane, added at the end, in an
  /// order fixed by the generated code (not by the thread count).
  Value *reduce(Value *count, Value *zero, const std::function<Value *(Value *)> &term);
  /// Several sums of the same count in one loop: terms(i) gives one term
  /// for each.
  std::vector<Value *> reduce(Value *count, const std::vector<Value *> &zeros,
                              const std::function<std::vector<Value *>(Value *)> &terms);

  void planFusion();
  /// Finds the image chains (see ImageChains), after the schedule.
  void planImageChains();
  /// Lowers the units of an image chain one image at a time, the images
  /// shared out among the threads by image groups.
  void lowerImageChain(const std::vector<const Node *> &units);
  /// Which stored values are computed in their destination.
  void planInPlaceStores(std::unordered_map<const Node *, std::unordered_set<const Node *>> &users);
  /// The order in which the nodes are lowered (see schedule).
  void schedule(std::unordered_map<const Node *, std::unordered_set<const Node *>> &users);
  void planWorkspace();
  /// Marks every access through one of the call's buffers with that
  /// buffer's alias scope.
  void addBufferScopes();
  /// Points n's slot at its workspace buffer, if it has one.
  void placeInWorkspace(const Node *n);
  void lower(const Node *n);
  /// Lowers one unit (a node, its fused members or its group) and keeps
  /// the memory accesses of its code (see addBufferScopes).
  void recordAccesses(const std::function<void()> &lowerUnit);
  void lowerLeaf(const Node *n);
  void lowerMap(const Node *n,
                const std::function<Value *(std::vector<Value *> &)> &formula);
  /// Matrix product n into `into`'s buffer, plus `bias` (a row vector) if
  /// not null, then max(..., 0) if `relu`, then times (mask > 0) if `mask`
  /// is not null. With `columnSums`, also the result's column sums where
  /// the product can sum them: returns whether it did (an i1), or null.
  Value *lowerMatMul(const Node *n, const Node *into, const Node *bias, bool relu = false,
                     const Node *mask = nullptr, Value *columnSums = nullptr);
  /// A product's rows (M) and depth (K), for this call.
  std::pair<Value *, Value *> productExtents(const Node *n);
  /// GPU: the most runs that product n's depth is cut into (see
  /// GpuProductUnits; n a matmul or a filter's gradient); 1 when it is not.
  int64_t productRuns(const Node *n) const;
  /// The bytes of product n's runs' partial products, at most.
  int64_t productRunBytes(const Node *n) const;
  /// GPU: the most runs that column sum n's rows are cut into (see
  /// GpuSumThreads); 1 when they are not.
  int64_t columnSumRuns(const Node *n) const;
  /// GPU: column sum n with its rows cut into runs, for this call's rows,
  /// then each column's runs added in order by a kernel of its own.
  void lowerSplitColumnSums(const Node *n);
  /// GPU: product n (as lowerMatMul) with its depth cut into runs, for
  /// this call's rows, then their partial products summed in order, and
  /// the epilogue applied, by a kernel of its own.
  void lowerSplitProduct(const Node *n, const Node *into, const GemmShape &shape,
                         const Node *bias, const Node *mask);
  /// GPU: after product n's runs (see productSplit), starts the kernel
  /// that adds their partial products in order into into's first
  /// elements() elements (rows of `columns`), then applies the epilogue: a
  /// bias by column, relu, a relu's mask (see reluAndMask). Side by side
  /// (RunsAfter), only later: `elements` must capture by value.
  void addProductRuns(const Node *n, const Node *into, int64_t columns,
                      const std::function<Value *()> &elements, const Node *bias = nullptr,
                      bool relu = false, const Node *mask = nullptr);
  /// GPU: after column sum n's runs (lowerSplitColumnSums), starts the
  /// kernel that adds each column's runs in order. Side by side
  /// (RunsAfter), only later.
  void addColumnSumRuns(const Node *n);
  /// A kernel per node: side-by-side units (see SideBySide).
  void lowerSideBySide(const std::vector<const Node *> &units);
  /// Which products skip the zero columns of a relu's masked adjoint
  /// (see ColumnSkip), after planFusion and planImageChains.
  void planColumnSkips();
  /// Matrix product n (as lowerMatMul) of masked adjoint d, which it reads
  /// as its A along d's columns, over d's columns that hold a nonzero only,
  /// when skipping the others pays; the whole product otherwise.
  Value *lowerSkippingZeroColumns(const Node *n, const Node *d, const GemmShape &shape,
                                  Value *dest, Value *rows, Value *depth, Value *bias,
                                  Value *mask, Value *columnSums);
  /// Finds d's columns that hold a nonzero, and when skipping the others
  /// pays, copies them, row after row, into d's per-row scratch (see
  /// ColumnSkip).
  void compactColumns(const Node *d);
  /// d's fixed scratch (the count of live columns first) and its copy of
  /// the live columns (see ColumnSkip).
  Value *columnSkipFixed(const Node *d);
  Value *columnSkipCopy(const Node *d);
  /// A product's node (x) or its epilogue's: the product, its sums too
  /// when a reduce_sum over its rows is summed by it.
  void lowerProduct(const Node *x, const Node *product, const Node *bias, bool relu,
                    const Node *mask);
  void lowerReduceSum(const Node *n);
  /// reduce_sum n over the rows of a matrix of `columns` (a constant)
  /// columns, when they fit in a few vector registers.
  void lowerColumnSums(const Node *n, Value *outer, Value *length, int64_t columns);
  void lowerSumAll(const Node *n);
  /// Sums over every element (sum_all, reduce_sum to one element, dot
  /// products) of operands of one length, in one loop.
  void lowerFullSums(const std::vector<const Node *> &sums);
  /// GPU: whether full sum `sums` is cut into chunks (see GpuSumChunks).
  bool fullSumChunks(const std::vector<const Node *> &sums) const {
    return Gpu && !WholeGraph && sums.front()->Operands[0]->Ty.isBatched();
  }
  /// GPU: full sum `sums` (as lowerFullSums) cut into chunks of terms, a
  /// block per chunk, for this call's rows, then the chunks' sums added by
  /// a kernel of its own on one block.
  void lowerSplitFullSums(const std::vector<const Node *> &sums,
                          const std::vector<Value *> &zeros,
                          const std::function<std::vector<Value *>(Value *)> &termsAt);
  /// GPU: where chunk `chunk` of full sum `sums` keeps its sum of the k-th
  /// sum's terms (8 bytes: see ChunkScratch).
  Value *chunkSum(const std::vector<const Node *> &sums, Value *chunk, size_t k) {
    Value *slot = B.CreateAdd(B.CreateMul(chunk, i64(int64_t(sums.size()))), i64(int64_t(k)));
    return B.CreateInBoundsGEP(
        B.getInt8Ty(), Workspace,
        B.CreateAdd(i64(ChunkScratch.at(sums.front())), B.CreateMul(slot, i64(8))));
  }
  /// Stores the totals of full sum `sums` into their buffers.
  void storeFullSums(const std::vector<const Node *> &sums, const std::vector<Value *> &totals) {
    for (size_t k = 0; k < sums.size(); ++k)
      B.CreateStore(B.CreateFPCast(totals[k], elemType(sums[k]->Ty.Elem)), slotOf(sums[k]).Ptr);
  }
  /// GPU: after full sum `sums`'s chunks (lowerSplitFullSums), starts the
  /// kernel that adds their sums (`zeros`: constants of the sums' types).
  /// Side by side (RunsAfter), only later.
  void addFullSumChunks(const std::vector<const Node *> &sums, const std::vector<Value *> &zeros);
  /// GPU: adds each sum's partial sums of the block's threads pairwise in
  /// shared memory; every thread gets the totals. Every thread of the
  /// block must reach it.
  std::vector<Value *> blockTotals(const std::vector<Value *> &partials);
  /// In a kernel's uniform code, on one block: the sum of the i64 `value`
  /// of the threads before this one, and of all of them.
  std::pair<Value *, Value *> blockExclusiveScan(Value *value);
  /// Elementwise nodes of one shape, in one loop.
  void lowerElementwiseGroup(const std::vector<const Node *> &members);
  /// Element i of each of elementwise nodes `members` (of one shape).
  void elementwiseAt(const std::vector<const Node *> &members, Value *i);
  /// In a loop over the elements of several values, one value's after the
  /// other's (`ends`: where each value's end), body(k, j) for element i,
  /// which is element j of value k.
  void segmentAt(Value *i, const std::vector<int64_t> &ends,
                 const std::function<void(size_t, Value *)> &body);
  /// GPU, a kernel per node: the elementwise nodes (or groups) lowered as
  /// node n, when they are one flat loop over a value of static size, not
  /// batched (an optimizer's update of a parameter); else empty.
  std::vector<const Node *> flatUpdate(const Node *n) const;
  /// GPU, a kernel per node: flat updates (see flatUpdate) that read none
  /// of each other's results, as one kernel: a parallel loop over all their
  /// elements, each thread finding the update its element is of. A step
  /// updates each parameter tensor with a loop of its own, a launch each.
  void lowerFlatUpdates(const std::vector<std::vector<const Node *>> &updates);
  void lowerRow(const Node *n);
  void lowerOneHot(const Node *n);
  void lowerTranspose(const Node *n);
  void lowerColumnsProduct(const Node *n, Value *dest, const Node *bias, bool relu,
                           const Node *mask);
  /// A product's epilogue at C's element \p index: max(sum, 0) with \p relu
  /// (NaN stays NaN), then times (mask > 0) with a relu output \p mask.
  Value *reluAndMask(Value *sum, bool relu, const Node *mask, Value *index);
  void lowerConv2D(const Node *n);
  void lowerConv2DGradInput(const Node *n);
  void lowerConv2DGradFilter(const Node *n);
  /// GPU: the convolutions as tiled products (emitGpuGemm) of their image
  /// patches, read from the images as they are staged, with no column
  /// matrix: each a wide kernel (the filter's gradient two, its depth cut
  /// into runs). With `into`, the node whose value the product's epilogue
  /// computes (planFusion): the forward's bias by output channel, then
  /// relu; the input gradient's relu mask.
  void gpuConv2D(const Node *n, const Node *into = nullptr, const Node *bias = nullptr,
                 bool relu = false);
  void gpuConv2DGradInput(const Node *n, const Node *into = nullptr, const Node *mask = nullptr);
  void gpuConv2DGradFilter(const Node *n);
  /// GPU: n = the tiled product of operands a and b, read through their
  /// index functions, stored at out's indices: rows x columns, of depth.
  void gpuProduct(const Node *n, const GpuGemmOperand &a, const GpuGemmOperand &b,
                  const GpuGemmIndex &out, Value *rows, int64_t columns, Value *depth,
                  const GpuGemmSplit *split = nullptr, const Node *into = nullptr,
                  const Node *bias = nullptr, bool relu = false, const Node *mask = nullptr);
  /// v / d and v % d.
  std::pair<Value *, Value *> divRem(Value *v, int64_t d);
  /// The index of [b, channel, position] in a value [*, channels,
  /// positions], for imagePosition = b positions + position.
  Value *channelIndex(Value *imagePosition, Value *channel, int64_t channels, int64_t positions);
  /// Element (imagePosition, channelTap) of the input patches of
  /// convolution n (conv2d or conv2d_grad_filter), x[b, c, oh s + kh - pad,
  /// ow s + kw - pad] for imagePosition = b OH OW + oh OW + ow and
  /// channelTap = c KH KW + kh KW + kw: its index in x, and with padding
  /// whether it is inside the image (else null).
  std::pair<Value *, Value *> inputPatch(const Node *n, Value *imagePosition, Value *channelTap);
  void lowerMaxPool2D(const Node *n, bool grad);
  void lowerDropout(const Node *n);
  void lowerGather(const Node *n);
  void lowerScatterAdd(const Node *n);
  /// GPU: scatter_add by a stable sort of the indices (no atomics).
  void lowerGpuScatterAdd(const Node *n);
  /// Copies the rows of `from` (its last axis) to the rows of `to` at column
  /// `offset`: concat, slice and unslice. With `fromOffset`, reads from
  /// that column of `from` instead, `width` values per row.
  void copyColumns(const Node *from, int64_t fromOffset, const Node *to,
                   int64_t toOffset, int64_t width);
  void lowerLstm(const Node *n);
  void lowerLstmGrad(const Node *n);
  void lowerLstmGradWeight(const Node *n);
  /// Whether an index lies in [0, size): guards lookups by data values.
  Value *inBounds(Value *index, int64_t size) {
    return B.CreateICmpULT(index, i64(size));
  }
  /// Runs `body` only when `cond` holds.
  void ifThen(Value *cond, const std::function<void()> &body);
  /// The output positions o in [0, outExtent) whose input position
  /// o * stride + k - pad lies in [0, inExtent): [begin, end).
  std::pair<Value *, Value *> validRange(Value *k, int64_t inExtent,
                                         int64_t outExtent, int64_t stride,
                                         int64_t pad);
  /// Convolutions are matrix products of the weights [O, C*KH*KW] with an
  /// image's column matrix [C*KH*KW, OH*OW]. columnsOf visits the pairs
  /// (column matrix index, image index) that are inside the image, for
  /// `conv` over images of shape `in` (one image from `image`, a flat
  /// offset); the rest of the column matrix is zero.
  void columnsOf(const Node *conv, const std::vector<int64_t> &in,
                 const std::vector<int64_t> &out, Value *image,
                 const std::function<void(Value *, Value *)> &body);
  /// Group `group`'s column matrix of convolution n, in n's scratch.
  Value *columnBuffer(const Node *n, Value *group);
  /// Fills the column matrix `col` of convolution n from image `img` of x:
  /// zeros where the kernel reads the padding, the image's values elsewhere.
  void fillColumns(const Node *n, const Node *x, const std::vector<int64_t> &out,
                   Value *img, Value *col);
  /// Winograd's F(2x2, 3x3) for convolution n (usesWinograd): the
  /// filter's 16 transformed matrices, once per call, before the images.
  void winogradFilter(const Node *n);
  /// Image `img` of n by Winograd, in group `group`'s scratch.
  void winogradImage(const Node *n, Value *img, Value *group);
  /// Shorthands for the Winograd transforms.
  Value *fadd(Value *a, Value *b) { return B.CreateFAdd(a, b); }
  Value *fsub(Value *a, Value *b) { return B.CreateFSub(a, b); }
  Value *elementAt(llvm::Type *elem, Value *base, Value *index) {
    return B.CreateInBoundsGEP(elem, base, index);
  }
  /// Row r of the plane of n that starts at element `plane` (height rows
  /// of width elements) as one vector, shuffled by `mask` (indices from
  /// width on read zero); zeros when r is outside the plane.
  Value *planeRow(const Node *n, Value *plane, Value *r, int64_t height, int64_t width,
                  llvm::ArrayRef<int> mask);
  /// Winograd's tiles of image `img` of n's first operand into v,
  /// [16, In, tiles].
  void winogradInput(const Node *n, Value *img, Value *v);
  /// A filter's gradient by Winograd: image `img` added into `partial`,
  /// [16, Out, In]; the sum of the groups' partials turned back into the
  /// filter's shape.
  void winogradFilterGradImage(const Node *n, Value *img, Value *group, Value *partial);
  void winogradFilterGradSum(const Node *n, Value *partials, int64_t partialBytes);
  /// The transformed filter of n, after its groups' scratch.
  Value *winogradFilterBuffer(const Node *n);
  /// Emits body(j, lanes) over the `width` elements of one row: on the CPU,
  /// for rows of at most 64 elements, once, with j = 0 and `lanes` =
  /// width, for a body that reads and writes the row as one vector;
  /// otherwise as a loop, one element j at a time (lanes = 0). Left to
  /// the vectorizer, a loop over narrow rows (an embedding's 10 columns)
  /// is widened across the rows, with a gather for each column.
  void forRow(int64_t width, const std::function<void(Value *, unsigned)> &body);
  /// Loads `lanes` elements from ptr as a vector, or one element as a
  /// scalar when lanes is 0 (forRow).
  Value *loadLanes(llvm::Type *elem, Value *ptr, unsigned lanes);
  /// Stores a vector or a scalar, aligned as its elements.
  void storeLanes(Value *value, Value *ptr);
  /// Stores zeros into every element of n's buffer.
  void zeroFill(const Node *n);
  /// Where a store writes: its place in the call's buffer.
  Value *destination(const ir::Store &store);
  void lowerStore(const ir::Store &store);

  llvm::Module &M;
  llvm::LLVMContext &Ctx;
  const ir::Graph &G;
  llvm::IRBuilder<> B;
  unsigned VectorBits; ///< The target's widest vector registers.
  llvm::StructType *CallTy = nullptr;
  llvm::Function *F = nullptr;
  llvm::BasicBlock *Entry = nullptr;
  GpuTarget *Gpu = nullptr; ///< Null: the CPU's one function per graph.
  /// CPU: whether the code being emitted is a worker function's
  /// (threadedFor), which finds the slots it reads afresh at its start, as
  /// a GPU kernel does, and runs its products on its own thread.
  bool OnWorker = false;
  int Workers = 0; ///< Worker functions so far, for their names.
  /// CPU: runs of consecutive units that compute each image of a batch
  /// from the same image of their operands (convolutions, max-pools,
  /// dropout, elementwise ops, over batches of images), by their first
  /// unit. They are lowered together, image by image, so that what one
  /// unit writes is still in the cache when the next reads it.
  std::unordered_map<const Node *, std::vector<const Node *>> ImageChains;
  std::unordered_set<const Node *> InImageChain;
  /// For each position in Order, the first and last positions of its image
  /// chain (its own otherwise): the buffers of a chain's units live all
  /// through it, since its units run interleaved.
  std::vector<std::pair<int64_t, int64_t>> ChainSpan;
  /// While an image chain is lowered: the image (i64), its group, and the
  /// block at whose end the image's slots are found (see materialize).
  Value *ImageRow = nullptr, *ImageGroup = nullptr;
  llvm::BasicBlock *SlotBlock = nullptr;
  bool WholeGraph = false; ///< GPU: the graph as one kernel (or RowBlocks' few).
  /// GPU: the graph as a kernel over blocks of rows, then a kernel that
  /// adds the blocks' sums, then one for the rest (see runRowBlocks).
  bool RowBlocks = false;
  std::string RowBlocksRefusal;
  /// RowBlocks: Order's units before this position are the row kernel's.
  int64_t RowUnits = 0;
  int64_t MaxRowBlocks = GpuOptions().RowBlocks;
  /// RowBlocks: the row kernel's sums over the batch's rows, in order, and
  /// the fixed workspace offsets of their blocks' partial sums and of their
  /// blocks' sums of a chunk (MaxRowBlocks of each).
  std::vector<const Node *> RowSums;
  std::unordered_map<const Node *, int64_t> RowPartials, RowChunkSums;
  /// While the row kernel is lowered: its block's index and workspace
  /// offset of its per-row buffers, and its chunk's first row and rows
  /// (i64 values).
  Value *RowBlock = nullptr, *RowRegion = nullptr, *RowBegin = nullptr, *RowCount = nullptr;
  /// GPU, a kernel per node: runs of units that compute each row of a
  /// batched value from the same rows of their operands (a loss's
  /// log_softmax, one_hot and the few elementwise steps of its adjoint), in
  /// one kernel instead of one each: a row segment. By its first unit: its
  /// units, in order, and the rows of its chunks (see GpuSegmentElements).
  std::unordered_map<const Node *, std::pair<std::vector<const Node *>, int64_t>> RowSegments;
  /// The segments' other units.
  std::unordered_set<const Node *> InRowSegment;
  /// GPU, a kernel per node: flat updates that follow each other and read
  /// none of each other's results, lowered as one kernel (see
  /// lowerFlatUpdates), by the first one's unit: each one's members.
  std::unordered_map<const Node *, std::vector<std::vector<const Node *>>> UpdateRuns;
  /// The runs' other units.
  std::unordered_set<const Node *> InUpdateRun;
  /// GPU, a kernel per node: units next to each other that read none of
  /// each other's results and are each one wide piece of work (a column sum
  /// over the batch's rows, a tiled product), maybe followed by a kernel
  /// that adds its runs. A layer's bias gradient, weight gradient and input
  /// adjoint are such, all reading the layer's output adjoint. Their pieces
  /// are one wide kernel, every other one on the blocks numbered from the
  /// last (ReversedBlocksTarget), and their runs' kernels follow it, in
  /// order. By the first unit: the units, in order.
  std::unordered_map<const Node *, std::vector<const Node *>> SideBySide;
  /// Their other units.
  std::unordered_set<const Node *> InSideBySide;
  /// While side-by-side units are lowered: the kernels that add their runs,
  /// to be lowered after theirs.
  std::vector<std::function<void()>> *RunsAfter = nullptr;
  /// The first and last positions in Order of the nodes of units that one
  /// kernel runs interleaved (a row segment's) or at once (a run of
  /// updates, side-by-side units): what they read and write lives through
  /// the whole span.
  std::vector<std::pair<int64_t, int64_t>> KernelSpans;
  /// Adds to KernelSpans, for each key of unitKernels' values, the span of
  /// the nodes of the units it maps to it (by their leader).
  void addKernelSpans(const std::unordered_map<const Node *, const Node *> &unitKernels);
  bool SkipDeadUnits = false; ///< CPU: see ColumnSkip.
  /// GPU: whether the code being emitted runs on one thread's own share of
  /// the work (inside parallelFor or onOneThread), not on all alike.
  bool PerThread = false;
  /// GPU: the kernel being emitted: its pieces of shared work (parallel
  /// loops, products, reductions, one-thread regions), and whether it must
  /// run on one block (its pieces depend on each other through barriers).
  int Pieces = 0;
  bool OneBlock = false;
  std::string KernelWork; ///< What the kernel computes, for its name.
  std::vector<Kernel> Kernels;
  Value *Call = nullptr, *Batch = nullptr, *Workspace = nullptr;
  /// GPU: when the current kernel is to be launched, and on how many
  /// blocks (see Kernel).
  OfRows LaunchIf, LaunchBlocks;
  const char *LaunchCondition = "runs";
  /// GPU: after the runs of node n's sum, starts the kernel that adds them,
  /// launched only when runsAt a call's rows (the runs of a sum cut into
  /// runs) is above 1. Returns the runs of this call.
  Value *beginRunsKernel(const Node *n, const OfRows &runsAt) {
    nextKernel(std::string(ir::opInfo(n->Op).Name) + "_runs");
    LaunchIf = [runsAt](llvm::IRBuilder<> &b, Value *rows) {
      return b.CreateICmpUGT(runsAt(b, rows), b.getInt64(1));
    };
    return runsAt(B, Batch);
  }
  std::unordered_map<int, Value *> Buffers; ///< By CallField.
  std::unordered_map<const Node *, Slot> Slots;
  /// CPU: the workspace buffers by their start, and the memory accesses of
  /// each lowered unit's code, for addBufferScopes.
  std::unordered_map<const Value *, const Node *> WorkspaceBuffers;
  std::vector<std::vector<llvm::Instruction *>> UnitAccesses;
  /// Elementwise nodes with no buffer: computed by load() inside the loop
  /// that their users share (see planFusion).
  std::unordered_set<const Node *> Inlined;
  /// Nodes computed by the lowering of another (the inlined ones, and
  /// products whose bias is added in the product): that node.
  std::unordered_map<const Node *, const Node *> FusedInto;
  /// Values already computed or loaded in a block, by node and element
  /// index (see load()).
  std::map<std::tuple<const Node *, Value *, llvm::BasicBlock *>, Value *> Computed;
  /// Nodes computed in one loop (sums over operands of one length, or
  /// elementwise nodes of one shape; see planFusion), by the last of them,
  /// their leader.
  std::unordered_map<const Node *, std::vector<const Node *>> Groups;
  /// The other members of those groups: their leader.
  std::unordered_map<const Node *, const Node *> GroupedInto;
  /// Every node, in the order they are lowered: the graph's order, but for
  /// the members of a group, which are next to each other.
  std::vector<const Node *> Order;
  /// Each node's place in Order.
  std::unordered_map<const Node *, int64_t> Position;
  /// The node whose lowering computes n: n, or what it is fused into.
  const Node *computedBy(const Node *n) const {
    for (auto it = FusedInto.find(n); it != FusedInto.end(); it = FusedInto.find(n))
      n = it->second;
    return n;
  }
  /// The node lowered for n's loop: n, or its group's leader.
  const Node *leaderOf(const Node *n) const {
    auto grouped = GroupedInto.find(n);
    return grouped == GroupedInto.end() ? n : grouped->second;
  }
  /// The product that n's lowering computes: that of the epilogue n, or n.
  const Node *productOf(const Node *n) const {
    auto epilogue = ProductEpilogues.find(n);
    return epilogue == ProductEpilogues.end() ? n : epilogue->second.first;
  }
  /// Stored values computed in their destination: the store.
  std::unordered_map<const Node *, const ir::Store *> InPlace;
  /// Elementwise nodes computed as a product's epilogue, in one GEMM: adds
  /// of a product and a bias vector, relus of a product or of such an add,
  /// and products masked by a relu's output; the product and the bias (or
  /// null).
  std::unordered_map<const Node *, std::pair<const Node *, const Node *>> ProductEpilogues;
  /// The relus among them.
  std::unordered_set<const Node *> ReluEpilogues;
  /// The masked products among them: the relu output that masks each.
  std::unordered_map<const Node *, const Node *> MaskEpilogues;
  /// Column sums (reduce_sum over the rows: a bias's gradient) that the
  /// product computing their operand sums as it stores it: the reduce_sum
  /// of each such operand.
  std::unordered_map<const Node *, const Node *> SummedBy;
  /// Each of those reduce_sums: whether its product summed it (an i1 of
  /// the code after the product); where not, its own pass sums it.
  std::unordered_map<const Node *, Value *> SummedByProduct;
  /// Workspace offsets: fixed bytes, or bytes per row for batched buffers.
  std::unordered_map<const Node *, std::pair<bool, int64_t>> Offsets;
  /// Fixed workspace offsets of the convolutions' column matrices.
  std::unordered_map<const Node *, int64_t> Scratch;
  /// Per-row workspace offsets of lstm_grad's carried adjoints.
  std::unordered_map<const Node *, int64_t> RowScratch;
  /// GPU: the chunks' sums of full sums cut into chunks, by their first
  /// member (lowerSplitFullSums).
  std::unordered_map<const Node *, int64_t> ChunkScratch;
  /// A relu's masked adjoint D [rows, C] (MaskEpilogues) has a column of
  /// zeros for each unit that no row of the batch activates (a dead unit:
  /// 3 to 7 of the 32 of iris's second layer over its training). The
  /// products that read D along its columns add nothing for those: D B
  /// (the layer input's adjoint, summing along them) and D^T X (the
  /// weight's gradient, a row per column). CPU, with AVX-512 (compress
  /// stores). Per such D: its products, and its scratch, live from the
  /// first of them to the last: fixed, the count of live columns (i64),
  /// their indices (i64 each), then the live rows of a product's B; per
  /// row, D's live columns, first in rows of C (aligned, as D's).
  struct ColumnSkip {
    std::vector<const Node *> Products;
    int64_t LiveRowBytes = 0; ///< The most bytes of a product's B's live rows.
    /// The widths (result columns) of its products of each kind, D B
    /// (whose B's live rows are copied) and D^T X (whose result's rows are
    /// spread): what the copies cost (see compactColumns).
    int64_t CopiedWidth = 0, SpreadWidth = 0;
    int64_t Fixed = 0, PerRow = 0; ///< Workspace offsets (PerRow: per row).
    bool Compacted = false;        ///< Whether the code that finds them is emitted.
  };
  std::unordered_map<const Node *, ColumnSkip> ColumnSkips;
  /// The products that skip zero columns: the adjoint each reads.
  std::unordered_map<const Node *, const Node *> SkipsColumnsOf;
  WorkspaceSize Size;
};

void GraphLowering::forRange(Value *count,
                             const std::function<void(Value *)> &body) {
  forRange(i64(0), count, body);
}

void GraphLowering::forRange(Value *begin, Value *end,
                             const std::function<void(Value *)> &body,
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

void GraphLowering::independentFor(Value *count,
                                   const std::function<void(Value *)> &body) {
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
  llvm::MDNode *parallel = llvm::MDNode::get(
      Ctx, {llvm::MDString::get(Ctx, "llvm.loop.parallel_accesses"), group});
  llvm::MDNode *id = llvm::MDNode::getDistinct(Ctx, {nullptr, parallel});
  id->replaceOperandWith(0, id);
  latch->setMetadata(llvm::LLVMContext::MD_loop, id);
}

void GraphLowering::stepsFor(Value *begin, Value *end,
                             const std::function<void(Value *)> &body) {
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
  auto *type = llvm::FunctionType::get(B.getVoidTy(),
                                       {B.getPtrTy(), B.getInt64Ty(), B.getInt64Ty()}, false);
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
  recordAccesses(
      [&] { loopRange(worker->getArg(1), worker->getArg(2), i64(1), body, false); });
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

void GraphLowering::forImages(int64_t images,
                              const std::function<void(Value *, Value *)> &body,
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

Value *GraphLowering::gemm(const GemmShape &shape, Value *a, Value *b, Value *c, Value *m,
                           Value *k, Value *bias, Value *mask, Value *columnSums,
                           const GpuGemmSplit *split) {
  if (!Gpu)
    return emitGemm(B, shape, a, b, c, m, k, bias, OnWorker, mask, columnSums);
  ++Pieces;
  GpuGemmShape gpuShape{shape.TransA, shape.TransB, shape.Accumulate, shape.Bias, shape.Relu,
                        shape.Mask, shape.N, shape.Elem, shape.LdA, shape.LdB, shape.LdC};
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
    llvm::MDNode *noUnroll = llvm::MDNode::get(
        Ctx, llvm::MDString::get(Ctx, "llvm.loop.unroll.disable"));
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

/// Elements of a convolution's column matrix: one row per input channel
/// and kernel tap, one column per output position, for one image.
static int64_t columnElements(const Node *conv) {
  // conv2d(x, w) -> out; conv2d_grad_input(dout, w) -> dx;
  // conv2d_grad_filter(x, dout) -> dw.
  bool gradInput = conv->Op == OpCode::Conv2DGradInput;
  const std::vector<int64_t> &in = gradInput ? conv->Ty.Dims : conv->Operands[0]->Ty.Dims;
  const std::vector<int64_t> &out = conv->Op == OpCode::Conv2D
                                        ? conv->Ty.Dims
                                        : conv->Operands[gradInput ? 0 : 1]->Ty.Dims;
  return in[1] * conv->A.KernelH * conv->A.KernelW * out[2] * out[3];
}

/// A 3x3 convolution of stride 1 as Winograd's F(2x2, 3x3) computes it
/// (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
/// 2016): In channels of H x W with Pad zeros around, into Out channels of
/// OH x OW, in tiles of 2x2 outputs, TH x TW of them.
struct WinogradShape {
  int64_t In, H, W, Pad, Out, OH, OW, TH, TW;
  int64_t tiles() const { return TH * TW; }
  int64_t padded() const { return 2 * TW + 2; } // input columns the tiles read
};

/// conv2d(x, w), or conv2d_grad_input(dy, w): the input's gradient of a
/// 3x3 convolution of stride 1 is one too, of dy with the filter turned by
/// 180 degrees and its channels swapped, padded by 2 - pad. For the
/// filter's gradient, conv2d_grad_filter(x, dy), the forward convolution's.
static WinogradShape winogradShape(const Node *conv) {
  // conv2d_grad_filter(x, dy): the forward's shape, from x to dy.
  bool filter = conv->Op == OpCode::Conv2DGradFilter;
  const std::vector<int64_t> &in = conv->Operands[0]->Ty.Dims,
                             &out = filter ? conv->Operands[1]->Ty.Dims : conv->Ty.Dims;
  int64_t pad = conv->Op == OpCode::Conv2DGradInput ? 2 - conv->A.Pad : conv->A.Pad;
  return {in[1], in[2], in[3], pad, out[1], out[2], out[3], (out[2] + 1) / 2,
          (out[3] + 1) / 2};
}

/// Whether convolution n runs as Winograd's F(2x2, 3x3): on the CPU, for a
/// 3x3 kernel of stride 1 between enough channels that the products are
/// most of the work (2.25 times fewer multiplications than the column
/// matrix's product), on rows narrow enough to be one vector each.
static bool usesWinograd(const Node *n, bool gpu) {
  if (gpu || ir::opInfo(n->Op).Category != ir::OpCategory::Window || n->Op == OpCode::MaxPool2D ||
      n->Op == OpCode::MaxPool2DGrad ||
      n->A.KernelH != 3 || n->A.KernelW != 3 || n->A.Stride != 1 || n->A.Pad > 2)
    return false;
  WinogradShape s = winogradShape(n);
  return s.In >= 16 && s.Out >= 16 && s.OW <= 64 && s.W <= 64;
}

/// CPU: bytes between the scratch of consecutive image groups: a column
/// matrix; with Winograd, the transformed tiles [16, In, tiles] and their
/// products [16, Out, tiles] (for a filter's gradient: the input's tiles
/// and the output gradient's).
static int64_t columnBytes(const Node *conv) {
  int64_t size = ir::byteSize(conv->Ty.Elem);
  if (!usesWinograd(conv, false))
    return alignUp(columnElements(conv) * size);
  WinogradShape s = winogradShape(conv);
  return alignUp(16 * s.In * s.tiles() * size) + alignUp(16 * s.Out * s.tiles() * size);
}

/// CPU: bytes of an image group's partial sum of a filter's gradient: the
/// filter's shape, or with Winograd its 16 transformed matrices.
static int64_t partialBytes(const Node *gradFilter) {
  int64_t elements = gradFilter->Ty.staticElements();
  if (usesWinograd(gradFilter, false)) {
    WinogradShape s = winogradShape(gradFilter);
    elements = 16 * s.Out * s.In;
  }
  return alignUp(elements * ir::byteSize(gradFilter->Ty.Elem));
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
  if (n->Op == OpCode::SumAll || (n->Op == OpCode::ReduceSum && isOneElement(n)) ||
      isDot(n)) {
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
    if (!length || (readers.size() == 1 && *readers.begin() &&
                    biasedProduct(*readers.begin()).first == n))
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
      if (sameShape || category == ir::OpCategory::Reduce || isDot(user))
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
      if (!isFlat(n))
        continue;
    } else {
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
          bool inLoop = Inlined.count(user) ||
                        std::find(group.begin(), group.end(), user) != group.end();
          std::pair<const Node *, bool> next{user, across || !inLoop};
          if (seen.insert(next).second)
            work.push_back(next);
        }
      }
      return false;
    };
    auto group = std::find_if(groups.begin(), groups.end(),
                              [&](const auto &g) { return !readsAcross(g); });
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
    if (!n->Ty.isBatched() || n->Ty.Dims[0] != ir::N || n->Ty.Dims.size() < 2 ||
        InPlace.count(n) || ProductEpilogues.count(n))
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
    if (chain.count(leaderOf(computedBy(n))) && !Inlined.count(n) &&
        n->Op != OpCode::Reshape)
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
      scratch[n] = add(false, runs * n->Ty.staticElements() * ir::byteSize(n->Ty.Elem), at,
                       chainEnd);
    // A full sum's chunks: a group's (by its leader), or a sum_all's.
    if (auto group = Groups.find(n); group != Groups.end() &&
        ir::opInfo(n->Op).Category != ir::OpCategory::Elementwise) {
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
    if (!needsWorkspace(n, Gpu) || scalarInRegisters(n) || FusedInto.count(n) ||
        InPlace.count(n))
      continue;
    int64_t last = lastRead.count(n) ? std::max(lastRead[n], chainEnd) : chainEnd;
    buffers[n] = add(n->Ty.isBatched(), n->Ty.staticElements() * ir::byteSize(n->Ty.Elem),
                     at, last);
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
  F = llvm::Function::Create(llvm::FunctionType::get(B.getVoidTy(),
                                                     {llvm::PointerType::getUnqual(Ctx)},
                                                     false),
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
  for (auto [field, name] : {std::pair{CallParams, "params"}, {CallState, "state"},
                             {CallGrads, "grads"}, {CallOutput, "output"},
                             {CallWorkspace, "workspace"}}) {
    Buffers[field] = loadField(field, B.getPtrTy());
    Buffers[field]->setName(name);
  }
  Batch = loadField(CallBatch, B.getInt64Ty());
  Batch->setName("batch");
  Workspace = buffer(CallWorkspace);
}

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
          Value *chunkSum = B.CreateLoad(
              ft, B.CreateInBoundsGEP(ft, rowBlockSum(n, RowChunkSums.at(n)), j));
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
      inst.setMetadata(llvm::LLVMContext::MD_alias_scope,
                       llvm::MDNode::get(Ctx, {scope->second}));
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
      return lowerMap(n, [&](std::vector<Value *> &args) {
        return B.CreateSIToFP(args[0], ft);
      });
    }
    if (n->Op == OpCode::Concat) {
      int64_t split = n->Operands[0]->Ty.Dims.back();
      copyColumns(n->Operands[0], 0, n, 0, split);
      nextKernel();
      copyColumns(n->Operands[1], 0, n, split, n->Operands[1]->Ty.Dims.back());
      return;
    }
    if (n->Op == OpCode::Slice)
      return copyColumns(n->Operands[0], n->A.Offset, n, 0, n->Ty.Dims.back());
    if (n->Op == OpCode::Unslice) {
      zeroFill(n);
      nextKernel();
      return copyColumns(n->Operands[0], 0, n, n->A.Offset,
                         n->Operands[0]->Ty.Dims.back());
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
    case OpCode::Conv2D: return Gpu ? gpuConv2D(n) : lowerConv2D(n);
    case OpCode::Conv2DGradInput: return Gpu ? gpuConv2DGradInput(n) : lowerConv2DGradInput(n);
    case OpCode::Conv2DGradFilter:
      return Gpu ? gpuConv2DGradFilter(n) : lowerConv2DGradFilter(n);
    case OpCode::MaxPool2D: return lowerMaxPool2D(n, false);
    case OpCode::MaxPool2DGrad: return lowerMaxPool2D(n, true);
    default: break;
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

void GraphLowering::lowerMap(
    const Node *n, const std::function<Value *(std::vector<Value *> &)> &formula) {
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
  // Broadcasting: walk the result's index space; an operand's stride is 0
  // along the dimensions it is broadcast in. Neighbouring dimensions that
  // every operand either reads both of or is broadcast in both are one
  // loop: adding a channel's bias to an image of [C, H, W] is a loop over
  // channels around one over H * W elements, which vectorizes.
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
  std::vector<Value *> extents;                      // of the merged loops
  std::vector<std::vector<Value *>> strides(operands + 1); // per operand, per loop
  for (size_t d = 0; d < rank;) {
    size_t e = d + 1;
    while (e < rank && samePattern(d, e))
      ++e;
    extents.push_back(product(dims, d, e));
    for (size_t k = 0; k <= operands; ++k) {
      const std::vector<int64_t> &own = k == operands ? dims : n->Operands[k]->Ty.Dims;
      size_t lead = rank - own.size();
      strides[k].push_back(broadcastIn(k, e - 1) ? i64(0)
                                                 : product(own, e - lead, own.size()));
    }
    d = e;
  }
  size_t loops = extents.size();
  std::function<void(size_t, std::vector<Value *>)> nest =
      [&](size_t d, std::vector<Value *> base) {
        auto body = [&](Value *i) {
          std::vector<Value *> index(base.size());
          for (size_t k = 0; k < base.size(); ++k)
            index[k] = B.CreateAdd(base[k], B.CreateMul(i, strides[k][d]));
          if (d + 1 < loops)
            return nest(d + 1, index);
          for (size_t k = 0; k < args.size(); ++k)
            args[k] = load(n->Operands[k], index[k]);
          B.CreateStore(formula(args),
                        B.CreateInBoundsGEP(outType, Slots[n].Ptr, index.back()));
        };
        auto *staticExtent = llvm::dyn_cast<llvm::ConstantInt>(extents[d]);
        if (d == 0) { // the outermost loop is split among GPU threads
          parallelFor(extents[d], body);
        } else if (d + 1 == loops && staticExtent &&
                   staticExtent->getSExtValue() <= SmallRowWidth) {
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

void GraphLowering::lowerProduct(const Node *x, const Node *product, const Node *bias,
                                 bool relu, const Node *mask) {
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
  Value *summed =
      lowerMatMul(product, x, bias, relu, mask, Slots.at(sums->second).Ptr);
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
  gemm(shape, slotOf(n->Operands[0]).Ptr, slotOf(n->Operands[1]).Ptr, slotOf(into).Ptr, rows,
       depth, bias ? slotOf(bias).Ptr : nullptr, mask ? slotOf(mask).Ptr : nullptr, nullptr,
       &runs);

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
  beginRunsKernel(n, [n](llvm::IRBuilder<> &b, Value *rows) {
    return productSplit(b, n, rows).first;
  });
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
  shape.DotProducts = !Gpu && shape.TransB && !shape.TransA && rank == 2 && aRank == 2 &&
                      a->Ty.Dims[1] == ir::N;
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
  return gemm(shape, slotOf(a).Ptr, slotOf(b).Ptr, dest, rows, depth, biasPtr, maskPtr,
              columnSums);
}

void GraphLowering::planColumnSkips() {
  if (!SkipDeadUnits || VectorBits < 512)
    return;
  for (const auto &node : G.nodes()) {
    const Node *p = node.get();
    if (p->Op != OpCode::MatMul || p->A.TransB || InImageChain.count(p) ||
        p->Ty.Dims.size() != 2)
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
    firsts[v] = B.CreateBitCast(B.CreateTrunc(prefix, B.getIntNTy(unsigned(lanes))),
                                live[v]->getType());
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
    forRange(i64(0), rows, [&](Value *i) {
      Value *at = B.CreateMul(i, i64(columns));
      for (int64_t v = 0; v < vectors; ++v) {
        // Compressed in a register, then stored: compressing to memory is
        // microcoded on Zen 4 (iris's step took 1.7 times as long).
        Value *compressed =
            B.CreateIntrinsic(llvm::Intrinsic::x86_avx512_mask_compress, {vectorTy},
                              {rowVector(i, v), llvm::Constant::getNullValue(vectorTy), live[v]});
        B.CreateMaskedStore(compressed, elementAt(ft, packed, at), align, firsts[v]);
        at = B.CreateAdd(at, counts[v]);
      }
    }, true);
  });
  skip.Compacted = true;
}

Value *GraphLowering::lowerSkippingZeroColumns(const Node *n, const Node *d,
                                               const GemmShape &shape, Value *dest, Value *rows,
                                               Value *depth, Value *bias, Value *mask,
                                               Value *columnSums) {
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
    skippingSummed =
        gemm(packedShape, packed, liveRows, dest, rows, live, bias, mask, columnSums);
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

void GraphLowering::lowerColumnsProduct(const Node *n, Value *dest, const Node *bias,
                                        bool relu, const Node *mask) {
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
      Value *sum = reduce(length, llvm::ConstantFP::get(ft, 0), [&](Value *l) {
        return load(x, B.CreateAdd(base, l));
      });
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
        return load(x, B.CreateAdd(B.CreateMul(B.CreateAdd(B.CreateMul(o, length), l), inner),
                                   j));
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
  auto partials = [&] {
    return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)));
  };
  auto [runs, runRows] = columnSumSplit(B, n, Batch);
  Value *cut = B.CreateICmpUGT(runs, i64(1));
  parallelFor(B.CreateMul(runs, i64(columns)), [&](Value *i) {
    Value *run = B.CreateUDiv(i, i64(columns)), *column = B.CreateURem(i, i64(columns));
    Value *begin = B.CreateMul(run, runRows);
    Value *end = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, Batch,
                                         B.CreateAdd(begin, runRows));
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

void GraphLowering::lowerColumnSums(const Node *n, Value *outer, Value *length,
                                    int64_t columns) {
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
  auto vectorAt = [&](Value *base, Value *index) {
    return B.CreateInBoundsGEP(ft, base, index);
  };
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
          Value *v = B.CreateAlignedLoad(vt, vectorAt(in, B.CreateAdd(block, i64(k * lanes))),
                                         align);
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
          B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, total),
                                     B.CreateLoad(ft, vectorAt(row, i64(c)))),
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
        Value *v = mask ? static_cast<Value *>(B.CreateMaskedLoad(
                              vt, ptr, align, mask, llvm::Constant::getNullValue(vt)))
                        : B.CreateAlignedLoad(vt, ptr, align);
        B.CreateStore(B.CreateFAdd(B.CreateLoad(vt, sums[k]), v), sums[k]);
      }
    });
    for (int64_t k = 0; k < vectors; ++k) {
      Value *ptr = vectorAt(slotOf(n).Ptr, B.CreateAdd(B.CreateMul(o, i64(columns)),
                                                         i64(k * lanes)));
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
    zeros.push_back(llvm::ConstantFP::get(
        n->Op == OpCode::SumAll ? B.getDoubleTy() : elemType(n->Ty.Elem), 0));
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
  loopRange(B.CreateZExt(Gpu->block(B), B.getInt64Ty()), chunks,
            B.CreateZExt(Gpu->blocks(B), B.getInt64Ty()), [&](Value *chunk) {
              Value *begin = B.CreateMul(chunk, terms);
              Value *end = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, count,
                                                   B.CreateAdd(begin, terms));
              std::vector<llvm::AllocaInst *> accs;
              for (Value *zero : zeros) {
                accs.push_back(entryAlloca(zero->getType()));
                B.CreateStore(zero, accs.back());
              }
              PerThread = true;
              loopRange(B.CreateAdd(begin, thread), end, i64(GpuBlock), [&](Value *i) {
                std::vector<Value *> values = termsAt(i);
                for (size_t k = 0; k < width; ++k)
                  B.CreateStore(B.CreateFAdd(B.CreateLoad(zeros[k]->getType(), accs[k]),
                                             values[k]),
                                accs[k]);
              }, false);
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
            }, false);
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
      Value *y = logForm
                     ? B.CreateFSub(B.CreateFSub(load(x, B.CreateAdd(base, j)), rowMax),
                                    logSum)
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
    B.CreateStore(llvm::ConstantFP::get(ft, 1),
                  B.CreateInBoundsGEP(ft, Slots[n].Ptr, index));
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
        v[i] = B.CreateMaskedLoad(
            vt, at(x, B.CreateMul(B.CreateAdd(r0, i64(i)), i64(c))), align, rowMask,
            llvm::Constant::getNullValue(vt));
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
        B.CreateAlignedStore(v[j], at(n, B.CreateAdd(B.CreateMul(i64(j), rows), r0)),
                             align);
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

std::pair<Value *, Value *> GraphLowering::validRange(Value *k, int64_t inExtent,
                                                      int64_t outExtent,
                                                      int64_t stride,
                                                      int64_t pad) {
  // begin = max(0, ceil((pad - k) / stride)); a negative quotient truncates
  // to at most 0, which the max turns into 0.
  Value *low = B.CreateSDiv(B.CreateAdd(B.CreateSub(i64(pad), k), i64(stride - 1)),
                            i64(stride));
  Value *begin = B.CreateBinaryIntrinsic(llvm::Intrinsic::smax, low, i64(0));
  // end = min(outExtent, floor((in - 1 + pad - k) / stride) + 1), or 0 when
  // the numerator is negative (no valid position).
  Value *num = B.CreateSub(i64(inExtent - 1 + pad), k);
  Value *high = B.CreateAdd(B.CreateSDiv(num, i64(stride)), i64(1));
  high = B.CreateBinaryIntrinsic(llvm::Intrinsic::smin, high, i64(outExtent));
  Value *end = B.CreateSelect(B.CreateICmpSLT(num, i64(0)), i64(0), high);
  return {begin, end};
}

void GraphLowering::forRow(int64_t width,
                           const std::function<void(Value *, unsigned)> &body) {
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
  B.CreateAlignedStore(value, ptr,
                       llvm::Align(value->getType()->getScalarSizeInBits() / 8));
}

void GraphLowering::zeroFill(const Node *n) {
  llvm::Type *ft = elemType(n->Ty.Elem);
  parallelFor(elementCount(n->Ty), [&](Value *i) {
    B.CreateStore(llvm::ConstantFP::get(ft, 0), B.CreateInBoundsGEP(ft, Slots[n].Ptr, i));
  });
}

void GraphLowering::columnsOf(const Node *conv, const std::vector<int64_t> &in,
                              const std::vector<int64_t> &out, Value *image,
                              const std::function<void(Value *, Value *)> &body) {
  const ir::Attrs &a = conv->A;
  int64_t C = in[1], H = in[2], W = in[3], OH = out[2], OW = out[3];
  // Channels write to rows of their own in the column matrix, and read
  // from (or, col2im, add into) planes of their own in the image.
  parallelFor(i64(C), [&](Value *c) {
    Value *plane = B.CreateAdd(image, B.CreateMul(c, i64(H * W)));
    forRange(i64(a.KernelH), [&](Value *kh) {
      auto [ohBegin, ohEnd] = validRange(kh, H, OH, a.Stride, a.Pad);
      forRange(i64(a.KernelW), [&](Value *kw) {
        auto [owBegin, owEnd] = validRange(kw, W, OW, a.Stride, a.Pad);
        Value *row = B.CreateAdd(
            B.CreateMul(c, i64(a.KernelH * a.KernelW)),
            B.CreateAdd(B.CreateMul(kh, i64(a.KernelW)), kw));
        Value *rowStart = B.CreateMul(row, i64(OH * OW));
        forRange(ohBegin, ohEnd, [&](Value *oh) {
          Value *ih = B.CreateSub(B.CreateAdd(B.CreateMul(oh, i64(a.Stride)), kh),
                                  i64(a.Pad));
          Value *colRow = B.CreateAdd(rowStart, B.CreateMul(oh, i64(OW)));
          Value *inRow = B.CreateSub(
              B.CreateAdd(B.CreateAdd(plane, B.CreateMul(ih, i64(W))), kw), i64(a.Pad));
          forRange(owBegin, owEnd, [&](Value *ow) {
            body(B.CreateAdd(colRow, ow),
                 B.CreateAdd(inRow, B.CreateMul(ow, i64(a.Stride))));
          }, /*rolled=*/true);
        });
      });
    });
  });
}

Value *GraphLowering::columnBuffer(const Node *n, Value *group) {
  Value *start = B.CreateAdd(i64(Scratch.at(n)), B.CreateMul(group, i64(columnBytes(n))));
  return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, start);
}

void GraphLowering::fillColumns(const Node *n, const Node *x,
                                const std::vector<int64_t> &out, Value *img, Value *col) {
  const std::vector<int64_t> &in = x->Ty.Dims;
  llvm::Type *ft = elemType(n->Ty.Elem);
  // Without padding, every entry is some pixel of the image.
  if (n->A.Pad > 0)
    zeroBytes(col, columnElements(n) * ir::byteSize(n->Ty.Elem));
  Value *image = B.CreateMul(img, i64(in[1] * in[2] * in[3]));
  columnsOf(n, in, out, image, [&](Value *c, Value *i) {
    B.CreateStore(load(x, i), B.CreateInBoundsGEP(ft, col, c));
  });
}

Value *GraphLowering::winogradFilterBuffer(const Node *n) {
  return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace,
                             i64(Scratch.at(n) + ImageGroups * columnBytes(n)));
}

void GraphLowering::winogradFilter(const Node *n) {
  // U = G g G^T for each 3x3 filter g, G = [1 0 0; 1/2 1/2 1/2;
  // 1/2 -1/2 1/2; 0 0 1]: 16 matrices [Out, In], element (a, b) of every
  // filter's U in matrix 4a + b.
  WinogradShape s = winogradShape(n);
  const Node *w = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *u = winogradFilterBuffer(n);
  Value *half = llvm::ConstantFP::get(ft, 0.5);
  // Before an image chain, the filter (a parameter) may come later in the
  // order of the nodes than the chain's first.
  if (!Slots.count(w) && ir::opInfo(w->Op).Category == ir::OpCategory::Leaf)
    lowerLeaf(w);
  parallelFor(i64(s.Out * s.In), [&](Value *pair) {
    Value *o = B.CreateUDiv(pair, i64(s.In)), *c = B.CreateURem(pair, i64(s.In));
    // w is [O, C, 3, 3]. The input's gradient takes filter (o, c) from
    // w[c, o], turned by 180 degrees.
    bool turned = n->Op == OpCode::Conv2DGradInput;
    Value *first = turned ? B.CreateMul(B.CreateAdd(B.CreateMul(c, i64(s.Out)), o), i64(9))
                          : B.CreateMul(pair, i64(9));
    auto g = [&](int kh, int kw) {
      return load(w, B.CreateAdd(first, i64(turned ? (2 - kh) * 3 + (2 - kw) : kh * 3 + kw)));
    };
    auto transform = [&](Value *v0, Value *v1, Value *v2) {
      Value *even = fadd(v0, v2);
      return std::array<Value *, 4>{v0, B.CreateFMul(half, fadd(even, v1)),
                                    B.CreateFMul(half, fsub(even, v1)), v2};
    };
    std::array<std::array<Value *, 4>, 3> byColumn; // G g, column by column
    for (int kw = 0; kw < 3; ++kw)
      byColumn[kw] = transform(g(0, kw), g(1, kw), g(2, kw));
    for (int a = 0; a < 4; ++a) {
      std::array<Value *, 4> row = transform(byColumn[0][a], byColumn[1][a], byColumn[2][a]);
      for (int b = 0; b < 4; ++b)
        B.CreateStore(row[b], B.CreateInBoundsGEP(
                                  ft, u, B.CreateAdd(pair, i64((a * 4 + b) * s.Out * s.In))));
    }
  });
}

Value *GraphLowering::planeRow(const Node *n, Value *plane, Value *r, int64_t height,
                               int64_t width, llvm::ArrayRef<int> mask) {
  // A row outside is read from row 0 (always valid memory), then zeroed.
  Value *inside = B.CreateICmpULT(r, i64(height));
  Value *row = loadVector(
      n, B.CreateAdd(plane, B.CreateMul(B.CreateSelect(inside, r, i64(0)), i64(width))),
      unsigned(width));
  Value *zero = llvm::Constant::getNullValue(row->getType());
  return B.CreateShuffleVector(B.CreateSelect(inside, row, zero), zero, mask);
}

void GraphLowering::winogradInput(const Node *n, Value *img, Value *v) {
  WinogradShape s = winogradShape(n);
  const Node *x = n->Operands[0];
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t T = s.tiles();
  llvm::Align align(ir::byteSize(n->Ty.Elem));
  // The input's rows, padded: column j of the padded row is column j - Pad
  // of the image, or zero.
  std::vector<int> padMask;
  for (int64_t j = 0; j < s.padded(); ++j)
    padMask.push_back(int(j - s.Pad >= 0 && j - s.Pad < s.W ? j - s.Pad : s.W));
  Value *image = B.CreateMul(img, i64(s.In * s.H * s.W));
  parallelFor(i64(s.In), [&](Value *c) {
    Value *plane = B.CreateAdd(image, B.CreateMul(c, i64(s.H * s.W)));
    forRange(i64(s.TH), [&](Value *ty) {
      std::array<std::array<Value *, 4>, 4> t; // B^T applied along each of 4 rows
      for (int i = 0; i < 4; ++i) {
        Value *r = B.CreateAdd(B.CreateMul(ty, i64(2)), i64(i - s.Pad));
        Value *row = planeRow(x, plane, r, s.H, s.W, padMask);
        std::array<Value *, 4> d;
        for (int j = 0; j < 4; ++j)
          d[j] = B.CreateShuffleVector(row, llvm::createStrideMask(j, 2, unsigned(s.TW)));
        t[i] = {fsub(d[0], d[2]), fadd(d[1], d[2]), fsub(d[2], d[1]), fsub(d[1], d[3])};
      }
      Value *first = B.CreateAdd(B.CreateMul(c, i64(T)), B.CreateMul(ty, i64(s.TW)));
      for (int b = 0; b < 4; ++b) {
        Value *col[4] = {fsub(t[0][b], t[2][b]), fadd(t[1][b], t[2][b]), fsub(t[2][b], t[1][b]),
                         fsub(t[1][b], t[3][b])};
        for (int a = 0; a < 4; ++a)
          B.CreateAlignedStore(
              col[a], elementAt(ft, v, B.CreateAdd(first, i64((a * 4 + b) * s.In * T))), align);
      }
    });
  });
}

void GraphLowering::winogradImage(const Node *n, Value *img, Value *group) {
  // V = B^T d B for each 4x4 input tile d (tiles 2 apart), B^T = [1 0 -1 0;
  // 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; for each of the 16 elements, the product
  // [Out, In] x [In, tiles] of U's matrix and V's; then each output tile
  // is A^T m A, A^T = [1 1 1 0; 0 1 -1 -1]. A row of tiles is one vector:
  // the input rows are loaded whole and the tiles' columns are shuffles.
  WinogradShape s = winogradShape(n);
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t size = ir::byteSize(n->Ty.Elem), T = s.tiles();
  llvm::Align align(size);
  Value *v = columnBuffer(n, group);
  Value *m = B.CreateInBoundsGEP(B.getInt8Ty(), v, i64(alignUp(16 * s.In * T * size)));
  auto *tileRow = llvm::FixedVectorType::get(ft, unsigned(s.TW));

  winogradInput(n, img, v);

  GemmShape shape{false, false, false, T, ft, VectorBits};
  Value *u = winogradFilterBuffer(n);
  forRange(i64(16), [&](Value *e) {
    gemm(shape, elementAt(ft, u, B.CreateMul(e, i64(s.Out * s.In))),
         elementAt(ft, v, B.CreateMul(e, i64(s.In * T))),
         elementAt(ft, m, B.CreateMul(e, i64(s.Out * T))), i64(s.Out), i64(s.In));
  });

  std::vector<int> firstColumns;
  for (int64_t j = 0; j < s.OW; ++j)
    firstColumns.push_back(int(j));
  Value *out = B.CreateInBoundsGEP(ft, slotOf(n).Ptr, B.CreateMul(img, i64(s.Out * s.OH * s.OW)));
  parallelFor(i64(s.Out), [&](Value *o) {
    forRange(i64(s.TH), [&](Value *ty) {
      Value *first = B.CreateAdd(B.CreateMul(o, i64(T)), B.CreateMul(ty, i64(s.TW)));
      auto tile = [&](int a, int b) {
        return B.CreateAlignedLoad(
            tileRow, elementAt(ft, m, B.CreateAdd(first, i64((a * 4 + b) * s.Out * T))), align);
      };
      for (int i = 0; i < 2; ++i) {
        Value *byColumn[4];
        for (int b = 0; b < 4; ++b)
          byColumn[b] = i == 0 ? fadd(fadd(tile(0, b), tile(1, b)), tile(2, b))
                               : fsub(fsub(tile(1, b), tile(2, b)), tile(3, b));
        Value *even = fadd(fadd(byColumn[0], byColumn[1]), byColumn[2]);
        Value *odd = fsub(fsub(byColumn[1], byColumn[2]), byColumn[3]);
        Value *row =
            B.CreateShuffleVector(even, odd, llvm::createInterleaveMask(unsigned(s.TW), 2));
        if (s.OW < 2 * s.TW)
          row = B.CreateShuffleVector(row, firstColumns);
        Value *oh = B.CreateAdd(B.CreateMul(ty, i64(2)), i64(i));
        auto store = [&] {
          Value *index =
              B.CreateAdd(B.CreateMul(o, i64(s.OH * s.OW)), B.CreateMul(oh, i64(s.OW)));
          B.CreateAlignedStore(row, elementAt(ft, out, index), align);
        };
        if (i == 1 && s.OH % 2)
          ifThen(B.CreateICmpULT(oh, i64(s.OH)), store);
        else
          store();
      }
    });
  });
}

void GraphLowering::winogradFilterGradImage(const Node *n, Value *img, Value *group,
                                            Value *partial) {
  // The forward's output tile is A^T (U . V) A, so the adjoint of U is
  // (A dy A^T) . V, summed over the tiles: for each of the 16 elements, the
  // product [Out, tiles] x [tiles, In] of dy's transformed tiles and V's.
  WinogradShape s = winogradShape(n);
  const Node *dy = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t size = ir::byteSize(n->Ty.Elem), T = s.tiles();
  llvm::Align align(size);
  Value *v = columnBuffer(n, group);
  Value *d = B.CreateInBoundsGEP(B.getInt8Ty(), v, i64(alignUp(16 * s.In * T * size)));
  winogradInput(n, img, v);

  // A e A^T for each 2x2 tile e of dy (zero past its edges), A = [1 0;
  // 1 1; 1 -1; 0 -1].
  std::vector<int> padMask;
  for (int64_t j = 0; j < 2 * s.TW; ++j)
    padMask.push_back(int(std::min(j, s.OW)));
  Value *image = B.CreateMul(img, i64(s.Out * s.OH * s.OW));
  parallelFor(i64(s.Out), [&](Value *o) {
    Value *plane = B.CreateAdd(image, B.CreateMul(o, i64(s.OH * s.OW)));
    forRange(i64(s.TH), [&](Value *ty) {
      std::array<std::array<Value *, 4>, 2> f; // A applied along each of 2 rows
      for (int i = 0; i < 2; ++i) {
        Value *r = B.CreateAdd(B.CreateMul(ty, i64(2)), i64(i));
        Value *row = planeRow(dy, plane, r, s.OH, s.OW, padMask);
        Value *e0 = B.CreateShuffleVector(row, llvm::createStrideMask(0, 2, unsigned(s.TW)));
        Value *e1 = B.CreateShuffleVector(row, llvm::createStrideMask(1, 2, unsigned(s.TW)));
        f[i] = {e0, fadd(e0, e1), fsub(e0, e1), B.CreateFNeg(e1)};
      }
      Value *first = B.CreateAdd(B.CreateMul(o, i64(T)), B.CreateMul(ty, i64(s.TW)));
      for (int b = 0; b < 4; ++b) {
        Value *z[4] = {f[0][b], fadd(f[0][b], f[1][b]), fsub(f[0][b], f[1][b]),
                       B.CreateFNeg(f[1][b])};
        for (int a = 0; a < 4; ++a)
          B.CreateAlignedStore(
              z[a], elementAt(ft, d, B.CreateAdd(first, i64((a * 4 + b) * s.Out * T))), align);
      }
    });
  });

  GemmShape shape{false, true, true, s.In, ft, VectorBits};
  forRange(i64(16), [&](Value *e) {
    gemm(shape, elementAt(ft, d, B.CreateMul(e, i64(s.Out * T))),
         elementAt(ft, v, B.CreateMul(e, i64(s.In * T))),
         elementAt(ft, partial, B.CreateMul(e, i64(s.Out * s.In))), i64(s.Out), i64(T));
  });
}

void GraphLowering::winogradFilterGradSum(const Node *n, Value *partials,
                                          int64_t partialBytes) {
  // The groups' sums of U's adjoint, added in order, then G^T (.) G gives
  // the filter's: G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1].
  WinogradShape s = winogradShape(n);
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *half = llvm::ConstantFP::get(ft, 0.5);
  auto back = [&](Value *v0, Value *v1, Value *v2, Value *v3) {
    Value *even = B.CreateFMul(half, B.CreateFAdd(v1, v2));
    return std::array<Value *, 3>{B.CreateFAdd(v0, even),
                                  B.CreateFMul(half, B.CreateFSub(v1, v2)),
                                  B.CreateFAdd(even, v3)};
  };
  parallelFor(i64(s.Out * s.In), [&](Value *pair) {
    Value *p[4][4];
    for (int e = 0; e < 16; ++e) {
      Value *index = B.CreateAdd(pair, i64(e * s.Out * s.In));
      Value *sum = nullptr;
      for (int64_t g = 0; g < ImageGroups; ++g) {
        Value *group = B.CreateInBoundsGEP(B.getInt8Ty(), partials, i64(g * partialBytes));
        Value *term = B.CreateLoad(ft, B.CreateInBoundsGEP(ft, group, index));
        sum = sum ? B.CreateFAdd(sum, term) : term;
      }
      p[e / 4][e % 4] = sum;
    }
    std::array<Value *, 3> rows[4]; // p G, row by row
    for (int a = 0; a < 4; ++a)
      rows[a] = back(p[a][0], p[a][1], p[a][2], p[a][3]);
    for (int l = 0; l < 3; ++l) {
      std::array<Value *, 3> column = back(rows[0][l], rows[1][l], rows[2][l], rows[3][l]);
      for (int k = 0; k < 3; ++k)
        B.CreateStore(column[k],
                      B.CreateInBoundsGEP(ft, slotOf(n).Ptr,
                                          B.CreateAdd(B.CreateMul(pair, i64(9)), i64(k * 3 + l))));
    }
  });
}

void GraphLowering::lowerConv2D(const Node *n) {
  // Per image: im2col, then out[O, OH*OW] = w[O, C*KH*KW] col.
  const Node *x = n->Operands[0], *w = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  const std::vector<int64_t> &in = x->Ty.Dims, &out = n->Ty.Dims;
  int64_t taps = in[1] * n->A.KernelH * n->A.KernelW, positions = out[2] * out[3];
  if (usesWinograd(n, false)) {
    if (!ImageRow) // in an image chain, done before it
      winogradFilter(n);
    return forImages(in[0], [&](Value *img, Value *group) { winogradImage(n, img, group); });
  }
  GemmShape shape{false, false, false, positions, ft, VectorBits};
  forImages(in[0], [&](Value *img, Value *group) {
    Value *col = columnBuffer(n, group);
    fillColumns(n, x, out, img, col);
    Value *dest = B.CreateInBoundsGEP(ft, slotOf(n).Ptr,
                                      B.CreateMul(img, i64(out[1] * positions)));
    gemm(shape, slotOf(w).Ptr, col, dest, i64(out[1]), i64(taps));
  });
}

void GraphLowering::lowerConv2DGradInput(const Node *n) {
  // Per image: dcol = w^T dy, then each column entry flows back to the
  // input element it was copied from (col2im).
  const Node *dy = n->Operands[0], *w = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  const std::vector<int64_t> &in = n->Ty.Dims, &out = dy->Ty.Dims;
  int64_t taps = in[1] * n->A.KernelH * n->A.KernelW, positions = out[2] * out[3];
  int64_t imageElements = in[1] * in[2] * in[3];
  if (usesWinograd(n, false)) {
    if (!ImageRow)
      winogradFilter(n);
    return forImages(in[0], [&](Value *img, Value *group) { winogradImage(n, img, group); });
  }
  GemmShape shape{true, false, false, positions, ft, VectorBits};
  forImages(in[0], [&](Value *img, Value *group) {
    Value *col = columnBuffer(n, group);
    Value *adjoint = B.CreateInBoundsGEP(ft, slotOf(dy).Ptr,
                                         B.CreateMul(img, i64(out[1] * positions)));
    gemm(shape, slotOf(w).Ptr, adjoint, col, i64(taps), i64(out[1]));
    Value *image = B.CreateMul(img, i64(imageElements));
    zeroBytes(B.CreateInBoundsGEP(ft, slotOf(n).Ptr, image),
              imageElements * ir::byteSize(n->Ty.Elem), ir::byteSize(n->Ty.Elem));
    columnsOf(n, in, out, image, [&](Value *c, Value *i) {
      Value *dst = B.CreateInBoundsGEP(ft, slotOf(n).Ptr, i);
      B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, dst),
                                 B.CreateLoad(ft, B.CreateInBoundsGEP(ft, col, c))),
                    dst);
    });
  });
}

void GraphLowering::lowerConv2DGradFilter(const Node *n) {
  // dw[O, C*KH*KW] = sum over images of dy[O, OH*OW] col^T. Each image
  // group sums its images in order into a partial sum of its own, and the
  // groups' sums are added in order after: the same order whatever the
  // thread count.
  const Node *x = n->Operands[0], *dy = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  const std::vector<int64_t> &in = x->Ty.Dims, &out = dy->Ty.Dims;
  int64_t taps = in[1] * n->A.KernelH * n->A.KernelW, positions = out[2] * out[3];
  int64_t filterElements = n->Ty.staticElements();
  int64_t filterBytes = partialBytes(n);
  bool winograd = usesWinograd(n, false);
  GemmShape shape{false, true, true, taps, ft, VectorBits};
  // Group g's partial sum, after the groups' column matrices.
  auto partial = [&](Value *group) {
    Value *start = B.CreateAdd(i64(Scratch.at(n) + ImageGroups * columnBytes(n)),
                               B.CreateMul(group, i64(filterBytes)));
    return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, start);
  };
  forImages(
      in[0],
      [&](Value *img, Value *group) {
        if (winograd)
          return winogradFilterGradImage(n, img, group, partial(group));
        Value *col = columnBuffer(n, group);
        fillColumns(n, x, out, img, col);
        Value *adjoint = B.CreateInBoundsGEP(ft, slotOf(dy).Ptr,
                                             B.CreateMul(img, i64(out[1] * positions)));
        gemm(shape, adjoint, col, partial(group), i64(out[1]), i64(positions));
      },
      [&](Value *group) { zeroBytes(partial(group), filterBytes); });
  Value *first = partial(i64(0));
  if (winograd)
    return winogradFilterGradSum(n, first, filterBytes);
  parallelFor(i64(filterElements), [&](Value *i) {
    Value *sum = B.CreateLoad(ft, B.CreateInBoundsGEP(ft, first, i));
    for (int64_t g = 1; g < ImageGroups; ++g) {
      Value *group = B.CreateInBoundsGEP(B.getInt8Ty(), first, i64(g * filterBytes));
      sum = B.CreateFAdd(sum, B.CreateLoad(ft, B.CreateInBoundsGEP(ft, group, i)));
    }
    B.CreateStore(sum, B.CreateInBoundsGEP(ft, slotOf(n).Ptr, i));
  });
}

std::pair<Value *, Value *> GraphLowering::divRem(Value *v, int64_t d) {
  return {B.CreateUDiv(v, i64(d)), B.CreateURem(v, i64(d))};
}

Value *GraphLowering::channelIndex(Value *imagePosition, Value *channel, int64_t channels,
                                   int64_t positions) {
  auto [img, position] = divRem(imagePosition, positions);
  Value *plane = B.CreateAdd(B.CreateMul(img, i64(channels)), channel);
  return B.CreateAdd(B.CreateMul(plane, i64(positions)), position);
}

std::pair<Value *, Value *> GraphLowering::inputPatch(const Node *n, Value *imagePosition,
                                                      Value *channelTap) {
  const std::vector<int64_t> &in = n->Operands[0]->Ty.Dims,
                             &out = n->Op == OpCode::Conv2D ? n->Ty.Dims : n->Operands[1]->Ty.Dims;
  const ir::Attrs &a = n->A;
  int64_t C = in[1], H = in[2], W = in[3];
  auto [img, p] = divRem(imagePosition, out[2] * out[3]);
  auto [oh, ow] = divRem(p, out[3]);
  auto [c, tap] = divRem(channelTap, a.KernelH * a.KernelW);
  auto [kh, kw] = divRem(tap, a.KernelW);
  auto position = [&](Value *o, Value *k) {
    return B.CreateSub(B.CreateAdd(B.CreateMul(o, i64(a.Stride)), k), i64(a.Pad));
  };
  Value *ih = position(oh, kh), *iw = position(ow, kw);
  Value *plane = B.CreateAdd(B.CreateMul(img, i64(C)), c);
  Value *index = B.CreateAdd(B.CreateMul(B.CreateAdd(B.CreateMul(plane, i64(H)), ih), i64(W)), iw);
  // In the padding: nothing. Negative positions are large unsigned numbers.
  if (a.Pad == 0)
    return {index, nullptr};
  return {index, B.CreateAnd(B.CreateICmpULT(ih, i64(H)), B.CreateICmpULT(iw, i64(W)))};
}

void GraphLowering::gpuProduct(const Node *n, const GpuGemmOperand &a, const GpuGemmOperand &b,
                               const GpuGemmIndex &out, Value *rows, int64_t columns, Value *depth,
                               const GpuGemmSplit *split, const Node *into, const Node *bias,
                               bool relu, const Node *mask) {
  GpuGemmShape shape;
  shape.N = shape.LdC = columns;
  shape.Elem = elemType(n->Ty.Elem);
  shape.Bias = bias != nullptr;
  shape.Relu = relu;
  shape.Mask = mask != nullptr;
  ++Pieces;
  emitGpuGemm(B, *Gpu, shape, a, b, slotOf(into ? into : n).Ptr, out, rows, depth,
              bias ? slotOf(bias).Ptr : nullptr, mask ? slotOf(mask).Ptr : nullptr, split);
  Gpu->barrier(B);
}

void GraphLowering::gpuConv2D(const Node *n, const Node *into, const Node *bias, bool relu) {
  // out[b, o, oh, ow] = sum over c, kh, kw of x[b, c, ih, iw] w[o, c, kh, kw]
  // (ih = oh s + kh - pad, iw = ow s + kw - pad): the product of the image
  // patches [b oh ow, c kh kw] and the filter's transpose [c kh kw, o],
  // each patch read from x as it is staged. Consecutive threads stage
  // consecutive ow: neighbouring pixels.
  const Node *x = n->Operands[0], *w = n->Operands[1];
  int64_t Depth = x->Ty.Dims[1] * n->A.KernelH * n->A.KernelW;
  int64_t O = n->Ty.Dims[1], P = n->Ty.Dims[2] * n->Ty.Dims[3];
  GpuGemmOperand patches;
  patches.Base = slotOf(x).Ptr;
  patches.At = [=](llvm::IRBuilder<> &, Value *m, Value *k) { return inputPatch(n, m, k); };
  // w [O, C KH KW]: op(B)[k, o] = w[o, k].
  GpuGemmOperand filter;
  filter.Base = slotOf(w).Ptr;
  filter.AlongK = true;
  filter.At = [=](llvm::IRBuilder<> &, Value *o, Value *k) {
    return std::pair<Value *, Value *>(B.CreateAdd(B.CreateMul(o, i64(Depth)), k), nullptr);
  };
  GpuGemmIndex out = [=](llvm::IRBuilder<> &, Value *m, Value *o) {
    return channelIndex(m, o, O, P);
  };
  gpuProduct(n, patches, filter, out, B.CreateMul(extent(x->Ty.Dims[0]), i64(P)), O, i64(Depth),
             nullptr, into, bias, relu);
}

void GraphLowering::gpuConv2DGradInput(const Node *n, const Node *into, const Node *mask) {
  // dx[b, c, ih, iw] = sum over o, kh, kw of dy[b, o, oh, ow] w[o, c, kh, kw]
  // over the outputs whose window read (ih, iw): oh s = ih + pad - kh,
  // ow s = iw + pad - kw. The product of dy's patches [b ih iw, o kh kw]
  // (zero where no window starts) and the filter [o kh kw, c]: each input
  // element is written once, by a sum in a fixed order.
  const Node *dy = n->Operands[0], *w = n->Operands[1];
  const ir::Attrs a = n->A;
  int64_t O = dy->Ty.Dims[1], OH = dy->Ty.Dims[2], OW = dy->Ty.Dims[3];
  int64_t C = n->Ty.Dims[1], W = n->Ty.Dims[3], HW = n->Ty.Dims[2] * W;
  int64_t S = a.Stride, KW = a.KernelW, Taps = a.KernelH * KW;
  // Whether t = pos + pad - k is a window's start: t = o s for an output o
  // in [0, extent). A negative t is a large unsigned number.
  auto start = [=](Value *t, int64_t extent) {
    Value *inside = B.CreateICmpULT(t, i64(extent * S));
    return S == 1 ? inside : B.CreateAnd(inside, B.CreateICmpEQ(B.CreateURem(t, i64(S)), i64(0)));
  };
  GpuGemmOperand patches;
  patches.Base = slotOf(dy).Ptr;
  patches.At = [=](llvm::IRBuilder<> &, Value *m, Value *k) {
    auto [img, q] = divRem(m, HW);
    auto [ih, iw] = divRem(q, W);
    auto [o, tap] = divRem(k, Taps);
    auto [kh, kw] = divRem(tap, KW);
    Value *th = B.CreateSub(B.CreateAdd(ih, i64(a.Pad)), kh);
    Value *tw = B.CreateSub(B.CreateAdd(iw, i64(a.Pad)), kw);
    Value *plane = B.CreateAdd(B.CreateMul(img, i64(O)), o);
    Value *row = B.CreateAdd(B.CreateMul(plane, i64(OH)), B.CreateUDiv(th, i64(S)));
    Value *index = B.CreateAdd(B.CreateMul(row, i64(OW)), B.CreateUDiv(tw, i64(S)));
    return std::pair<Value *, Value *>(index, B.CreateAnd(start(th, OH), start(tw, OW)));
  };
  // w [O, C, KH, KW]: op(B)[(o, kh, kw), c] = w[o, c, kh, kw].
  GpuGemmOperand filter;
  filter.Base = slotOf(w).Ptr;
  filter.AlongK = true;
  filter.At = [=](llvm::IRBuilder<> &, Value *c, Value *k) {
    auto [o, tap] = divRem(k, Taps);
    Value *pair = B.CreateAdd(B.CreateMul(o, i64(C)), c);
    return std::pair<Value *, Value *>(B.CreateAdd(B.CreateMul(pair, i64(Taps)), tap), nullptr);
  };
  GpuGemmIndex out = [=](llvm::IRBuilder<> &, Value *m, Value *c) {
    return channelIndex(m, c, C, HW);
  };
  gpuProduct(n, patches, filter, out, B.CreateMul(extent(dy->Ty.Dims[0]), i64(HW)), C,
             i64(O * Taps), nullptr, into, nullptr, false, mask);
}

void GraphLowering::gpuConv2DGradFilter(const Node *n) {
  // dw[o, c, kh, kw] = sum over b, oh, ow of dy[b, o, oh, ow] x[b, c, ih, iw]
  // (ih = oh s + kh - pad, iw = ow s + kw - pad): the product of dy
  // [o, b oh ow] and x's patches [b oh ow, c kh kw]. Its depth, the batch's
  // output positions, is long and its tiles few: it is cut into runs
  // (productSplit), which a second kernel adds in order.
  const Node *x = n->Operands[0], *dy = n->Operands[1];
  int64_t O = dy->Ty.Dims[1], P = dy->Ty.Dims[2] * dy->Ty.Dims[3];
  int64_t Columns = x->Ty.Dims[1] * n->A.KernelH * n->A.KernelW;
  // dy [b, o, p]: op(A)[o, (b, p)].
  GpuGemmOperand adjoint;
  adjoint.Base = slotOf(dy).Ptr;
  adjoint.AlongK = true;
  adjoint.At = [=](llvm::IRBuilder<> &, Value *o, Value *k) {
    return std::pair<Value *, Value *>(channelIndex(k, o, O, P), nullptr);
  };
  GpuGemmOperand patches;
  patches.Base = slotOf(x).Ptr;
  patches.AlongK = true;
  patches.At = [=](llvm::IRBuilder<> &, Value *column, Value *k) {
    return inputPatch(n, k, column);
  };
  GpuGemmIndex out = [=](llvm::IRBuilder<> &, Value *o, Value *column) {
    return B.CreateAdd(B.CreateMul(o, i64(Columns)), column);
  };
  Value *depth = B.CreateMul(extent(x->Ty.Dims[0]), i64(P));
  if (productRuns(n) == 1)
    return gpuProduct(n, adjoint, patches, out, i64(O), Columns, depth);
  auto [runs, runDepth] = productSplit(B, n, Batch);
  GpuGemmSplit split{runs, runDepth,
                     B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)))};
  gpuProduct(n, adjoint, patches, out, i64(O), Columns, depth, &split);
  addProductRuns(n, n, Columns, [this, elements = O * Columns] { return i64(elements); });
}

void GraphLowering::lowerMaxPool2D(const Node *n, bool grad) {
  // Forward: the maximum of each window (padding counts as -inf, as in
  // PyTorch). Gradient: the output's adjoint goes to the window's first
  // maximum, found again from the input. The window's taps are
  // straight-line code, so that the loop along a row of outputs
  // vectorizes.
  const Node *x = n->Operands[0];
  const ir::Attrs &a = n->A;
  int64_t C = x->Ty.Dims[1], H = x->Ty.Dims[2], W = x->Ty.Dims[3];
  const std::vector<int64_t> &outDims = grad ? n->Operands[1]->Ty.Dims : n->Ty.Dims;
  int64_t OH = outDims[2], OW = outDims[3];
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *minusInf = llvm::ConstantFP::getInfinity(ft, true);
  // Windows that neither overlap nor reach into the padding: each input
  // element is in one window at most, and the gradient stores each
  // window's elements (the adjoint or zero) rather than adding into them.
  bool disjoint = a.Pad == 0 && a.Stride >= a.KernelH && a.Stride >= a.KernelW;
  bool covered = disjoint && OH * a.Stride == H && OW * a.Stride == W &&
                 a.Stride == a.KernelH && a.Stride == a.KernelW;
  auto window = [&](Value *plane) {
    Value *dst = slotOf(n).Ptr;
    Value *inBase = B.CreateMul(plane, i64(H * W));
    forRange(i64(OH), [&](Value *oh) {
      forRange(i64(0), i64(OW), [&](Value *ow) {
        // The best tap's number as well as its index: comparing 32-bit
        // numbers keeps whole vectors where 64-bit indices split them.
        Value *best = minusInf, *bestIndex = inBase, *bestTap = B.getInt32(0);
        std::vector<Value *> taps;
        for (int64_t kh = 0; kh < a.KernelH; ++kh)
          for (int64_t kw = 0; kw < a.KernelW; ++kw) {
            Value *ih = B.CreateAdd(B.CreateMul(oh, i64(a.Stride)), i64(kh - a.Pad));
            Value *iw = B.CreateAdd(B.CreateMul(ow, i64(a.Stride)), i64(kw - a.Pad));
            Value *index = B.CreateAdd(inBase, B.CreateAdd(B.CreateMul(ih, i64(W)), iw));
            taps.push_back(index);
            Value *v;
            if (a.Pad == 0) {
              v = load(x, index);
            } else {
              Value *inside = B.CreateAnd(
                  B.CreateAnd(B.CreateICmpSGE(ih, i64(0)), B.CreateICmpSLT(ih, i64(H))),
                  B.CreateAnd(B.CreateICmpSGE(iw, i64(0)), B.CreateICmpSLT(iw, i64(W))));
              // Outside the image, read the window's corner instead
              // (always valid memory) and let -inf stand for the padding.
              index = B.CreateSelect(inside, index, inBase);
              v = B.CreateSelect(inside, load(x, index), minusInf);
            }
            Value *better = B.CreateFCmpOGT(v, best);
            best = B.CreateSelect(better, v, best);
            bestIndex = B.CreateSelect(better, index, bestIndex);
            bestTap = B.CreateSelect(better, B.getInt32(uint32_t(taps.size() - 1)), bestTap);
          }
        Value *outIndex = B.CreateAdd(
            B.CreateMul(B.CreateAdd(B.CreateMul(plane, i64(OH)), oh), i64(OW)), ow);
        if (!grad) {
          B.CreateStore(best, B.CreateInBoundsGEP(ft, dst, outIndex));
          return;
        }
        Value *adjoint = load(n->Operands[1], outIndex);
        if (disjoint) {
          Value *zero = llvm::ConstantFP::get(ft, 0);
          for (size_t k = 0; k < taps.size(); ++k)
            B.CreateStore(B.CreateSelect(B.CreateICmpEQ(bestTap, B.getInt32(uint32_t(k))),
                                         adjoint, zero),
                          B.CreateInBoundsGEP(ft, dst, taps[k]));
          return;
        }
        Value *target = B.CreateInBoundsGEP(ft, dst, bestIndex);
        B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, target), adjoint), target);
      }, /*rolled=*/true);
    });
  };
  // Windows that tile a narrow plane exactly (a 2x2 pool of stride 2 on
  // 24x24): a row of windows is computed from whole input rows as vectors,
  // each tap a shuffle of one row, where the loop above gathers each tap
  // and scatters each gradient element.
  unsigned S = unsigned(a.Stride), lanes = unsigned(OW);
  auto windowRows = [&](Value *plane) {
    Value *inBase = B.CreateMul(plane, i64(H * W));
    Value *outBase = B.CreateMul(plane, i64(OH * OW));
    auto *tapType = llvm::FixedVectorType::get(B.getInt32Ty(), lanes);
    forRange(i64(OH), [&](Value *oh) {
      auto rowIndex = [&](int64_t kh) {
        return B.CreateAdd(inBase, B.CreateMul(B.CreateAdd(B.CreateMul(oh, i64(S)), i64(kh)),
                                               i64(W)));
      };
      Value *best = B.CreateVectorSplat(lanes, minusInf);
      Value *bestTap = llvm::Constant::getNullValue(tapType);
      for (unsigned kh = 0; kh < S; ++kh) {
        Value *row = loadVector(x, rowIndex(kh), unsigned(W));
        for (unsigned kw = 0; kw < S; ++kw) {
          Value *v = B.CreateShuffleVector(row, llvm::createStrideMask(kw, S, lanes));
          Value *better = B.CreateFCmpOGT(v, best);
          best = B.CreateSelect(better, v, best);
          bestTap = B.CreateSelect(better, llvm::ConstantInt::get(tapType, kh * S + kw), bestTap);
        }
      }
      Value *outIndex = B.CreateAdd(outBase, B.CreateMul(oh, i64(OW)));
      llvm::Align align(ir::byteSize(n->Ty.Elem));
      if (!grad) {
        B.CreateAlignedStore(best, B.CreateInBoundsGEP(ft, slotOf(n).Ptr, outIndex), align);
        return;
      }
      Value *adjoint = loadVector(n->Operands[1], outIndex, lanes);
      Value *zero = llvm::Constant::getNullValue(adjoint->getType());
      for (unsigned kh = 0; kh < S; ++kh) {
        std::vector<Value *> parts;
        for (unsigned kw = 0; kw < S; ++kw)
          parts.push_back(B.CreateSelect(
              B.CreateICmpEQ(bestTap, llvm::ConstantInt::get(tapType, kh * S + kw)), adjoint,
              zero));
        Value *row = B.CreateShuffleVector(llvm::concatenateVectors(B, parts),
                                           llvm::createInterleaveMask(lanes, S));
        B.CreateAlignedStore(row, B.CreateInBoundsGEP(ft, slotOf(n).Ptr, rowIndex(kh)), align);
      }
    });
  };
  bool rowVectors = !Gpu && covered && W <= 64;
  auto planes = [&](Value *img) {
    if (grad && !covered) // elements that no window stores to
      zeroBytes(B.CreateInBoundsGEP(ft, slotOf(n).Ptr, B.CreateMul(img, i64(C * H * W))),
                C * H * W * ir::byteSize(n->Ty.Elem), ir::byteSize(n->Ty.Elem));
    forRange(i64(C), [&](Value *c) {
      Value *plane = B.CreateAdd(B.CreateMul(img, i64(C)), c);
      rowVectors ? windowRows(plane) : window(plane);
    });
  };
  if (!Gpu)
    return forImages(x->Ty.Dims[0], [&](Value *img, Value *) { planes(img); });
  if (grad && !covered) {
    zeroFill(n);
    nextKernel();
  }
  parallelFor(B.CreateMul(extent(x->Ty.Dims[0]), i64(C)), window);
}

void GraphLowering::lowerDropout(const Node *n) {
  // A counter-based generator: each element's keep decision is a hash
  // (splitmix64's finalizer) of the call's seed, the op's stream, the step
  // and the element's index. The backward op recomputes the same mask.
  const Node *x = n->Operands[0];
  llvm::Type *ft = elemType(n->Ty.Elem);
  double p = n->A.Value;
  Value *seed = loadField(CallSeed, B.getInt64Ty());
  Value *step = loadField(CallStep, B.getInt64Ty());
  Value *key = B.CreateAdd(
      B.CreateXor(seed, i64(int64_t(0x9E3779B97F4A7C15ULL * uint64_t(n->A.Offset + 1)))),
      B.CreateMul(step, i64(int64_t(0xD1B54A32D192ED03ULL))));
  Value *scale = llvm::ConstantFP::get(ft, 1.0 / (1.0 - p));
  // keep when the top 24 bits, as a fraction of 2^24, are at least p.
  Value *threshold = i64(int64_t(std::ceil(p * double(1 << 24))));
  // The element's index in the whole batch, also in an image chain.
  Value *first = ImageRow ? B.CreateMul(ImageRow, i64(n->Ty.staticElements())) : i64(0);
  parallelFor(elementCount(n->Ty), [&](Value *i) {
    Value *z = B.CreateAdd(
        key, B.CreateMul(B.CreateAdd(first, i), i64(int64_t(0x9E3779B97F4A7C15ULL))));
    z = B.CreateMul(B.CreateXor(z, B.CreateLShr(z, 30)), i64(int64_t(0xBF58476D1CE4E5B9ULL)));
    z = B.CreateMul(B.CreateXor(z, B.CreateLShr(z, 27)), i64(int64_t(0x94D049BB133111EBULL)));
    z = B.CreateXor(z, B.CreateLShr(z, 31));
    Value *keep = B.CreateICmpUGE(B.CreateLShr(z, 40), threshold);
    Value *y = B.CreateSelect(keep, B.CreateFMul(load(x, i), scale),
                              llvm::ConstantFP::get(ft, 0));
    B.CreateStore(y, B.CreateInBoundsGEP(ft, Slots[n].Ptr, i));
  });
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

void GraphLowering::lowerGather(const Node *n) {
  // Row r of the result is row indices[r] of the table; an index out of
  // range (the runtime rejects them) reads nothing and gives zeros.
  const Node *table = n->Operands[0], *indices = n->Operands[1];
  int64_t rows = table->Ty.Dims[0], width = table->Ty.Dims[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
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
        B.CreateStore(B.getInt32(0), countOf(B.CreateUDiv(e, i64(rows)), B.CreateURem(e, i64(rows))));
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
      Value *end = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, B.CreateAdd(begin, share), entries);
      auto count = [&](Value *e) { return countOf(B.CreateURem(e, tiles), B.CreateUDiv(e, tiles)); };
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
        ifThen(B.CreateICmpEQ(begin, end), [&] { B.CreateStore(llvm::ConstantFP::get(ft, 0), out); });
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

void GraphLowering::copyColumns(const Node *from, int64_t fromOffset,
                                const Node *to, int64_t toOffset,
                                int64_t width) {
  int64_t fromWidth = from->Ty.Dims.back(), toWidth = to->Ty.Dims.back();
  llvm::Type *ft = elemType(to->Ty.Elem);
  Value *rows = product(to->Ty.Dims, 0, to->Ty.Dims.size() - 1);
  parallelFor(rows, [&](Value *r) {
    Value *src = B.CreateAdd(B.CreateMul(r, i64(fromWidth)), i64(fromOffset));
    Value *dst = B.CreateAdd(B.CreateMul(r, i64(toWidth)), i64(toOffset));
    forRow(width, [&](Value *j, unsigned lanes) {
      storeLanes(lanes ? loadVector(from, src, lanes) : load(from, B.CreateAdd(src, j)),
                 B.CreateInBoundsGEP(ft, slotOf(to).Ptr, B.CreateAdd(dst, j)));
    });
  });
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
      Value *prevH = B.CreateAdd(B.CreateMul(B.CreateSub(t, i64(1)), i64(6 * H)),
                                 i64(LstmH * H));
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
        Value *c = B.CreateFAdd(B.CreateFMul(B.CreateLoad(ft, part(base, LstmF)), cPrev),
                                B.CreateFMul(B.CreateLoad(ft, part(base, LstmI)),
                                             B.CreateLoad(ft, part(base, LstmG))));
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
  Value *dhNext = B.CreateInBoundsGEP(
      B.getInt8Ty(), Workspace,
      B.CreateAdd(i64(Size.Fixed), B.CreateMul(i64(RowScratch.at(n)), Batch)));
  Value *dcNext = B.CreateInBoundsGEP(ft, dhNext, B.CreateMul(rows, i64(H)));
  auto carried = [&](Value *array, Value *index) {
    return B.CreateInBoundsGEP(ft, array, index);
  };
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
      gemm(backShape, B.CreateInBoundsGEP(ft, dz, next), slotOf(w).Ptr, dhNext, rows,
           i64(4 * H));
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
        Value *dc = B.CreateFAdd(B.CreateFAdd(adj(LstmC), B.CreateLoad(ft, carried(dcNext, own))),
                                 B.CreateFMul(B.CreateFMul(dh, o),
                                              B.CreateFSub(one, B.CreateFMul(tc, tc))));
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
    Value *prevH = B.CreateAdd(B.CreateMul(B.CreateSub(t, i64(1)), i64(6 * H)),
                               i64(LstmH * H));
    gemm(shape, B.CreateInBoundsGEP(ft, slotOf(dz).Ptr, gates),
         B.CreateInBoundsGEP(ft, slotOf(state).Ptr, prevH), Slots[n].Ptr, i64(4 * H), rows);
  });
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
    parallelFor(count, [&](Value *i) {
      B.CreateStore(slot.Scalar, B.CreateInBoundsGEP(ft, dest, i));
    });
    return;
  }
  if (Gpu) {
    parallelFor(count, [&](Value *i) {
      B.CreateStore(load(n, i), B.CreateInBoundsGEP(ft, dest, i));
    });
    return;
  }
  Value *bytes = B.CreateMul(count, i64(ir::byteSize(n->Ty.Elem)));
  B.CreateMemMove(dest, llvm::MaybeAlign(4), slot.Ptr, llvm::MaybeAlign(4), bytes);
}

} // namespace

namespace {

/// A constant global array of pointers named `name`; one null entry when
/// there are none, since C has no empty arrays.
void addPointerArray(llvm::Module &module, std::vector<llvm::Constant *> pointers,
                     const std::string &name) {
  auto *ptrType = llvm::PointerType::getUnqual(module.getContext());
  if (pointers.empty())
    pointers.push_back(llvm::ConstantPointerNull::get(ptrType));
  auto *type = llvm::ArrayType::get(ptrType, pointers.size());
  new llvm::GlobalVariable(module, type, true, llvm::GlobalValue::ExternalLinkage,
                           llvm::ConstantArray::get(type, pointers), name);
}

/// nnc_gpu_gather's kernel: rows[r] of each slot of the call's table to row
/// r of its input slot, for r below the batch. A warp copies a row, its
/// lanes consecutive 4-byte words, so that rows of any width coalesce.
/// \p slotWords: each slot's words per row, as the runtime lays them out.
llvm::Function *emitGatherKernel(GpuTarget &gpu, const std::vector<int64_t> &slotWords) {
  llvm::LLVMContext &context = gpu.kernelModule().getContext();
  llvm::IRBuilder<> b(context);
  auto *fn = llvm::Function::Create(llvm::FunctionType::get(b.getVoidTy(), {b.getPtrTy()}, false),
                                    llvm::Function::ExternalLinkage, "nnc_gpu_gather_rows",
                                    gpu.kernelModule());
  fn->addFnAttr(llvm::Attribute::NoUnwind);
  fn->addParamAttr(0, llvm::Attribute::NoAlias);
  llvm::Value *call = fn->getArg(0);
  call->setName("call");
  b.SetInsertPoint(llvm::BasicBlock::Create(context, "entry", fn));
  llvm::StructType *callType = getCallType(context);
  auto field = [&](CallField f, llvm::Type *type, const char *name) {
    return b.CreateLoad(type, b.CreateStructGEP(callType, call, f), name);
  };
  llvm::Value *inputs = field(CallInputs, b.getPtrTy(), "inputs");
  llvm::Value *table = field(CallTable, b.getPtrTy(), "table");
  llvm::Value *rows = field(CallRows, b.getPtrTy(), "rows");
  llvm::Value *batch = field(CallBatch, b.getInt64Ty(), "batch");
  constexpr int64_t warp = 32, warps = GpuBlock / warp;
  llvm::Value *thread = b.CreateZExt(gpu.thread(b), b.getInt64Ty());
  llvm::Value *lane = b.CreateAnd(thread, warp - 1, "lane");
  llvm::Value *firstRow =
      b.CreateAdd(b.CreateMul(b.CreateZExt(gpu.block(b), b.getInt64Ty()), b.getInt64(warps)),
                  b.CreateUDiv(thread, b.getInt64(warp)), "first_row");
  llvm::Value *rowStride =
      b.CreateMul(b.CreateZExt(gpu.blocks(b), b.getInt64Ty()), b.getInt64(warps), "row_stride");
  // for (i = begin; i < end; i += step) body(i), the loop's blocks named after what it counts.
  auto loop = [&](llvm::Value *begin, llvm::Value *end, llvm::Value *step, const char *name,
                  const std::function<void(llvm::Value *)> &body) {
    llvm::BasicBlock *before = b.GetInsertBlock();
    auto *head = llvm::BasicBlock::Create(context, name, fn);
    auto *inside = llvm::BasicBlock::Create(context, std::string(name) + ".body", fn);
    auto *after = llvm::BasicBlock::Create(context, std::string(name) + ".end", fn);
    b.CreateBr(head);
    b.SetInsertPoint(head);
    llvm::PHINode *i = b.CreatePHI(b.getInt64Ty(), 2, name);
    i->addIncoming(begin, before);
    b.CreateCondBr(b.CreateICmpULT(i, end), inside, after);
    b.SetInsertPoint(inside);
    body(i);
    i->addIncoming(b.CreateAdd(i, step), b.GetInsertBlock());
    b.CreateBr(head);
    b.SetInsertPoint(after);
  };
  for (size_t slot = 0; slot < slotWords.size(); ++slot) {
    llvm::Value *index = b.getInt64(int64_t(slot));
    llvm::Value *to = b.CreateLoad(b.getPtrTy(), b.CreateGEP(b.getPtrTy(), inputs, index), "to");
    llvm::Value *from = b.CreateLoad(b.getPtrTy(), b.CreateGEP(b.getPtrTy(), table, index), "from");
    llvm::Value *words = b.getInt64(slotWords[slot]);
    loop(firstRow, batch, rowStride, "row", [&](llvm::Value *row) {
      llvm::Value *source = b.CreateSExt(
          b.CreateLoad(b.getInt32Ty(), b.CreateGEP(b.getInt32Ty(), rows, row)), b.getInt64Ty());
      llvm::Value *fromRow = b.CreateMul(source, words), *toRow = b.CreateMul(row, words);
      loop(lane, words, b.getInt64(warp), "word", [&](llvm::Value *word) {
        llvm::Value *value = b.CreateLoad(
            b.getInt32Ty(), b.CreateGEP(b.getInt32Ty(), from, b.CreateAdd(fromRow, word)));
        b.CreateStore(value, b.CreateGEP(b.getInt32Ty(), to, b.CreateAdd(toRow, word)));
      });
    });
  }
  b.CreateRetVoid();
  gpu.finishKernel(*fn);
  return fn;
}

/// The GPU kernels of every graph, their launch schedules and tables
/// (runtime.h, "GPU trainers").
bool addGpuCode(llvm::Module &module, const Model &model, const Program &program,
                unsigned vectorBits, const GpuOptions &options, std::string &error,
                GpuOutput *output) {
  llvm::LLVMContext &context = module.getContext();
  std::unique_ptr<GpuTarget> gpu = options.Target == GpuOptions::Kind::Cuda
                                       ? createNvptxTarget(context)
                                       : createSimTarget(module);
  llvm::IRBuilder<> b(context);
  llvm::FunctionCallee launch = module.getOrInsertFunction(
      "nnc_gpu_launch", b.getVoidTy(), b.getPtrTy(), b.getInt32Ty(), b.getInt32Ty());
  llvm::FunctionCallee batchRows =
      module.getOrInsertFunction("nnc_gpu_rows", b.getInt64Ty(), b.getPtrTy());
  std::vector<llvm::Constant *> names, kernels;
  WorkspaceSize workspace;
  // Auto: a small model gets two schedules. It runs the whole graph as one
  // kernel on one block while the call's rows times its parameters (about
  // a third of a step's multiply-adds) are at most options.GraphLimit; a
  // bigger batch needs the whole device: kernels over blocks of rows where
  // the graph allows, a kernel per node elsewhere.
  using Fusion = GpuOptions::Fusion;
  bool autoFuse = options.Fuse == Fusion::Auto;
  bool small = model.ParamElements <= GpuOptions::WholeGraphParams;
  bool graphSchedule = options.Fuse == Fusion::Graph || (autoFuse && small);
  bool rowsSchedule = options.Fuse == Fusion::Rows || (autoFuse && small);
  bool nodeSchedule = options.Fuse != Fusion::Graph;
  for (const ir::Graph *graph : program.graphs()) {
    auto *schedule = llvm::Function::Create(
        llvm::FunctionType::get(b.getVoidTy(), {b.getPtrTy()}, false),
        llvm::Function::ExternalLinkage, "nnc_gpu_" + graph->name(), module);
    auto lower = [&](KernelPlan plan) {
      auto lowering = std::make_unique<GraphLowering>(module, *graph, vectorBits, gpu.get(), plan);
      lowering->setMaxRowBlocks(options.RowBlocks);
      WorkspaceSize size = lowering->run();
      workspace.Fixed = std::max(workspace.Fixed, size.Fixed);
      workspace.PerRow = std::max(workspace.PerRow, size.PerRow);
      return lowering;
    };
    // One launch per kernel, in order.
    auto launchAll = [&](const GraphLowering &lowering) {
      for (const GraphLowering::Kernel &kernel : lowering.kernels()) {
        // Blocks in launch order, for the IR's readers.
        auto *sum = kernel.LaunchIf
                        ? llvm::BasicBlock::Create(context, kernel.Condition, schedule)
                        : nullptr;
        auto *skip = sum ? llvm::BasicBlock::Create(context, "", schedule) : nullptr;
        if (skip) {
          llvm::Value *rows = b.CreateCall(batchRows, {schedule->getArg(0)});
          b.CreateCondBr(kernel.LaunchIf(b, rows), sum, skip);
          b.SetInsertPoint(sum);
        }
        // Blocks: 0 for as many as keep the device busy.
        llvm::Value *blocks = b.getInt32(kernel.Wide ? 0 : 1);
        if (kernel.Blocks)
          blocks = b.CreateTrunc(kernel.Blocks(b, b.CreateCall(batchRows, {schedule->getArg(0)})),
                                 b.getInt32Ty());
        b.CreateCall(launch, {schedule->getArg(0), b.getInt32(int32_t(names.size())), blocks});
        if (skip) {
          b.CreateBr(skip);
          b.SetInsertPoint(skip);
        }
        names.push_back(b.CreateGlobalStringPtr(kernel.Fn->getName(), "", 0, &module));
        kernels.push_back(kernel.Fn);
      }
      b.CreateRetVoid();
    };
    std::unique_ptr<GraphLowering> whole, big;
    if (graphSchedule)
      whole = lower(KernelPlan::WholeGraph);
    bool overRows = false;
    if (rowsSchedule) {
      big = lower(KernelPlan::RowBlocks);
      overRows = big->rowBlocksRefusal().empty();
      if (!big->rowBlocksRefusal().empty()) {
        // Forced, the step must run so; the other graphs may fall back.
        if (options.Fuse == Fusion::Rows && graph->name() == "train_step") {
          error = "--gpu-fuse rows: the training step cannot run over blocks of rows: " +
                  big->rowBlocksRefusal();
          return false;
        }
        big.reset();
      }
    }
    if (!big && nodeSchedule)
      big = lower(KernelPlan::PerNode);
    auto *entry = llvm::BasicBlock::Create(context, "entry", schedule);
    b.SetInsertPoint(entry);
    if (whole && big) {
      auto *wholeBlock = llvm::BasicBlock::Create(context, "graph", schedule);
      auto *bigBlock = llvm::BasicBlock::Create(context, overRows ? "rows" : "nodes", schedule);
      llvm::Value *rows = b.CreateCall(batchRows, {schedule->getArg(0)});
      int64_t params = std::max<int64_t>(model.ParamElements, 1);
      int64_t maxRows = options.GraphLimit >= 0 ? options.GraphLimit / params
                        : overRows
                            ? std::max(GpuOptions::RowsGraphLimit / params, 2 * GpuChunkRows - 1)
                            : GpuOptions::NodeGraphLimit / params;
      b.CreateCondBr(b.CreateICmpULE(rows, b.getInt64(maxRows)), wholeBlock, bigBlock);
      b.SetInsertPoint(wholeBlock);
      launchAll(*whole);
      b.SetInsertPoint(bigBlock);
      launchAll(*big);
    } else {
      launchAll(whole ? *whole : *big);
    }
  }
  // nnc_gpu_gather: its kernel on as many blocks as keep the device busy.
  // A slot's row is as the runtime gathers it on the host: integers as
  // int32, features in the model's type.
  std::vector<int64_t> slotWords;
  for (const auto *ios : {&model.Inputs, &model.Labels})
    for (const IoSpec &io : *ios) {
      int64_t width = 1;
      for (int64_t d : io.Dims)
        width *= d;
      slotWords.push_back(io.isInteger() || model.FloatType == ir::DType::F32 ? width : 2 * width);
    }
  llvm::Function *gather = emitGatherKernel(*gpu, slotWords);
  auto *gatherSchedule =
      llvm::Function::Create(llvm::FunctionType::get(b.getVoidTy(), {b.getPtrTy()}, false),
                             llvm::Function::ExternalLinkage, "nnc_gpu_gather", module);
  b.SetInsertPoint(llvm::BasicBlock::Create(context, "entry", gatherSchedule));
  b.CreateCall(launch,
               {gatherSchedule->getArg(0), b.getInt32(int32_t(names.size())), b.getInt32(0)});
  b.CreateRetVoid();
  names.push_back(b.CreateGlobalStringPtr(gather->getName(), "", 0, &module));
  kernels.push_back(gather);
  names.push_back(llvm::ConstantPointerNull::get(b.getPtrTy()));
  addPointerArray(module, names, "nnc_gpu_kernels");
  std::vector<llvm::Constant *> probes;
  for (const auto &graph : program.Probes)
    probes.push_back(module.getFunction("nnc_gpu_" + graph->name()));
  addPointerArray(module, probes, "nnc_gpu_probes");
  auto *sizes = llvm::ArrayType::get(b.getInt64Ty(), 2);
  new llvm::GlobalVariable(
      module, sizes, true, llvm::GlobalValue::ExternalLinkage,
      llvm::ConstantArray::get(sizes, {b.getInt64(workspace.Fixed), b.getInt64(workspace.PerRow)}),
      "nnc_gpu_workspace");
  if (options.Target == GpuOptions::Kind::Sim) {
    addPointerArray(module, kernels, "nnc_sim_kernels");
    return true;
  }
  llvm::Module &deviceModule = gpu->kernelModule();
  std::string errors;
  llvm::raw_string_ostream os(errors);
  if (llvm::verifyModule(deviceModule, &os))
    throw std::logic_error("internal error: invalid GPU kernels: " + os.str());
  if (output)
    llvm::raw_string_ostream(output->KernelIr) << deviceModule;
  if (!legalizeDeviceMath(deviceModule, error))
    return false;
  std::string ptx = emitPtx(deviceModule, options.Arch, options.OptLevel, error);
  if (ptx.empty())
    return false;
  auto *text = llvm::ConstantDataArray::getString(context, ptx, true);
  new llvm::GlobalVariable(module, text->getType(), true, llvm::GlobalValue::ExternalLinkage,
                           text, "nnc_cuda_ptx");
  if (output)
    output->Ptx = std::move(ptx);
  return true;
}

} // namespace

std::unique_ptr<llvm::Module> lowerToLLVM(const Model &model,
                                          const Program &program,
                                          llvm::LLVMContext &context,
                                          unsigned vectorBits, bool skipDeadUnits,
                                          const GpuOptions &gpu, std::string &error,
                                          GpuOutput *gpuOutput) {
  auto module = std::make_unique<llvm::Module>(model.Name, context);
  WorkspaceSize workspace;
  for (const ir::Graph *graph : program.graphs()) {
    WorkspaceSize size =
        GraphLowering(*module, *graph, vectorBits, nullptr, KernelPlan::PerNode, skipDeadUnits)
            .run();
    workspace.Fixed = std::max(workspace.Fixed, size.Fixed);
    workspace.PerRow = std::max(workspace.PerRow, size.PerRow);
  }
  // nnc_probes: the probe functions in manifest order.
  std::vector<llvm::Constant *> probes;
  for (const auto &graph : program.Probes)
    probes.push_back(module->getFunction("nnc_" + graph->name()));
  addPointerArray(*module, probes, "nnc_probes");
  if (gpu.Target != GpuOptions::Kind::None &&
      !addGpuCode(*module, model, program, vectorBits, gpu, error, gpuOutput))
    return nullptr;
  std::string manifest = buildManifest(model, program, workspace);
  auto *text = llvm::ConstantDataArray::getString(context, manifest, true);
  new llvm::GlobalVariable(*module, text->getType(), true,
                           llvm::GlobalValue::ExternalLinkage, text,
                           "nnc_manifest");
  std::string errors;
  llvm::raw_string_ostream os(errors);
  if (llvm::verifyModule(*module, &os))
    throw std::logic_error("internal error: invalid LLVM IR: " + os.str());
  return module;
}

} // namespace nnc
