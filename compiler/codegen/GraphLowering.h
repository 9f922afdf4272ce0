//===- GraphLowering.h - One graph to LLVM functions ------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// GraphLowering lowers one graph of a program to LLVM: for the CPU, one
// function `void nnc_<graph>(nnc_call *)`; for the GPU, kernels and the
// host's schedule of their launches. Scalar values live in registers. An
// elementwise op whose users read each element once in one loop is
// computed inside that loop; sums over operands of one length share a
// loop, and so do the elementwise ops of one parameter's update, which
// write the parameter and the optimizer state in place (planFusion). Every
// other value gets a buffer: leaves point into the call's buffers, the
// rest into the workspace, laid out statically (fixed-size buffers first,
// then per-row buffers scaled by the batch size), buffers whose lives do
// not overlap sharing memory (planWorkspace). Matrix products are
// register-blocked kernels (Gemm.cpp) or the GPU's tiled product (Gpu.cpp);
// the other ops become plain loop nests that LLVM's vectorizer then widens
// for the target; elementwise ops take their formula from the op registry
// (VectorMath.cpp).
//
// The class is defined across files, by what each part lowers:
// Lowering.cpp (planning, loops, elementwise and row ops, stores),
// LowerProducts.cpp (matrix products and sums), LowerConv.cpp
// (convolutions and pooling), LowerSequences.cpp (embeddings, slices and
// LSTMs) and GpuSchedule.cpp (how a graph is cut into GPU kernels).
// Codegen.cpp lowers a whole program with it.
//
//===----------------------------------------------------------------------===//
#ifndef NNC_CODEGEN_GRAPHLOWERING_H
#define NNC_CODEGEN_GRAPHLOWERING_H

#include "codegen/Abi.h"
#include "codegen/Codegen.h"
#include "codegen/Gemm.h"
#include "codegen/Gpu.h"
#include "codegen/VectorMath.h"
#include "ir/Ops.h"

#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Module.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace nnc::lowering {

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
inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
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
inline int64_t staticExtents(std::vector<int64_t>::const_iterator begin,
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
inline MatMulExtents matMulExtents(const Node *n, int64_t batch = 0) {
  const std::vector<int64_t> &dims = n->Ty.Dims, &aDims = n->Operands[0]->Ty.Dims;
  return {staticExtents(dims.begin(), dims.end() - 1, batch),
          staticExtents(dims.end() - 1, dims.end(), batch),
          n->A.TransA ? staticExtents(aDims.begin(), aDims.end() - 1, batch)
                      : staticExtents(aDims.end() - 1, aDims.end(), batch)};
}

/// Whether n is a column sum over the batch's rows (a bias's gradient):
/// lowerReduceSum's, not a sum to a scalar (lowerFullSums's).
inline bool isColumnSum(const Node *n) {
  return n->Op == OpCode::ReduceSum && n->A.Axis == 0 && n->Operands[0]->Ty.Dims[0] == ir::N &&
         !n->Ty.isBatched() && !n->Ty.Dims.empty();
}

/// Whether matmul n is a tiled product on the GPU, not one of lowerMatMul's
/// loops (a batch of columns, a depth of 1, one element).
inline bool isTiledMatMul(const Node *n) {
  MatMulExtents e = matMulExtents(n);
  return n->Ty.Dims.back() != ir::N && e.Depth != 1 && !(e.Rows == 1 && e.Columns == 1);
}

/// The multiply-adds of GPU product n (a matmul, or a convolution's
/// forward, input gradient or filter gradient) for a row (an image) of the
/// batch.
inline int64_t productWorkPerRow(const Node *n) {
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
inline Value *extentsOf(llvm::IRBuilder<> &B, const std::vector<int64_t> &dims, size_t begin,
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
inline std::pair<Value *, Value *> evenRuns(llvm::IRBuilder<> &B, Value *total, Value *maxRuns,
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
  Value *length =
      B.CreateMul(ceilDivide(ceilDivide(total, runs), B.getInt64(align)), B.getInt64(align));
  length = atLeast(length, align);
  return {atLeast(ceilDivide(total, length), 1), length};
}

/// How GPU product n (a matmul, or a filter's gradient: the product of the
/// output's adjoint [O, b oh ow] and the input's patches [b oh ow, C KH KW])
/// cuts its depth into runs at a call of `batch` rows (see
/// GpuProductUnits): the runs (1: not cut) and their depth, a multiple of
/// 16 (the product's slices). The product's kernels and the host's schedule
/// compute it alike.
inline std::pair<Value *, Value *> productSplit(llvm::IRBuilder<> &B, const Node *n, Value *batch) {
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
  Value *tileRows =
      B.CreateUDiv(B.CreateAdd(rows, B.getInt64(GpuGemmTile - 1)), B.getInt64(GpuGemmTile));
  Value *tiles =
      B.CreateMul(B.CreateBinaryIntrinsic(llvm::Intrinsic::umax, tileRows, B.getInt64(1)),
                  B.getInt64(ceilDiv(columns, GpuGemmTile)));
  return evenRuns(B, depth, B.CreateUDiv(B.getInt64(GpuProductUnits), tiles), GpuRunDepth, 16);
}

/// How GPU column sum n (a reduce_sum over the batch's rows) cuts the
/// rows into runs at a call of `batch` rows (see GpuSumThreads).
inline std::pair<Value *, Value *> columnSumSplit(llvm::IRBuilder<> &B, const Node *n,
                                                  Value *batch) {
  return evenRuns(B, batch, B.getInt64(GpuSumThreads / n->Ty.staticElements()), GpuRunRows, 1);
}

/// The terms of full sum `sums` (its first member's operand) at a call of
/// `batch` rows.
inline Value *fullSumTerms(llvm::IRBuilder<> &B, const std::vector<const Node *> &sums,
                           Value *batch) {
  const std::vector<int64_t> &dims = sums.front()->Operands[0]->Ty.Dims;
  return extentsOf(B, dims, 0, dims.size(), batch);
}

/// How a GPU full sum of `count` terms is cut into chunks (see
/// GpuSumChunks).
inline std::pair<Value *, Value *> fullSumSplit(llvm::IRBuilder<> &B, Value *count) {
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
inline std::pair<Value *, Value *> rowChunks(llvm::IRBuilder<> &B, Value *batch) {
  return evenRuns(B, batch, batch, GpuChunkRows, 1);
}

/// The blocks of the row kernel at a call of `batch` rows: one per chunk,
/// up to maxBlocks.
inline Value *rowBlocks(llvm::IRBuilder<> &B, Value *batch, int64_t maxBlocks) {
  return B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, rowChunks(B, batch).first,
                                 B.getInt64(maxBlocks));
}

inline int64_t alignUp(int64_t bytes) { return (bytes + Alignment - 1) / Alignment * Alignment; }

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

inline ScatterScratch scatterScratch(const Node *n) {
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
inline Value *segmentChunks(llvm::IRBuilder<> &B, Value *batch, int64_t chunkRows) {
  return B.CreateUDiv(B.CreateAdd(batch, B.getInt64(chunkRows - 1)), B.getInt64(chunkRows));
}

/// The blocks of a row segment's kernel whose chunks have `chunkRows` rows
/// at a call of `batch` rows: one per chunk, at least one, at most
/// GpuSegmentBlocks. The kernel and the host's schedule compute it alike.
inline Value *segmentBlocks(llvm::IRBuilder<> &B, Value *batch, int64_t chunkRows) {
  return B.CreateBinaryIntrinsic(llvm::Intrinsic::umax,
                                 B.CreateBinaryIntrinsic(llvm::Intrinsic::umin,
                                                         segmentChunks(B, batch, chunkRows),
                                                         B.getInt64(GpuSegmentBlocks)),
                                 B.getInt64(1));
}

/// Elements of a convolution's column matrix: one row per input channel
/// and kernel tap, one column per output position, for one image.
inline int64_t columnElements(const Node *conv) {
  // conv2d(x, w) -> out; conv2d_grad_input(dout, w) -> dx;
  // conv2d_grad_filter(x, dout) -> dw.
  bool gradInput = conv->Op == OpCode::Conv2DGradInput;
  const std::vector<int64_t> &in = gradInput ? conv->Ty.Dims : conv->Operands[0]->Ty.Dims;
  const std::vector<int64_t> &out =
      conv->Op == OpCode::Conv2D ? conv->Ty.Dims : conv->Operands[gradInput ? 0 : 1]->Ty.Dims;
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
inline WinogradShape winogradShape(const Node *conv) {
  // conv2d_grad_filter(x, dy): the forward's shape, from x to dy.
  bool filter = conv->Op == OpCode::Conv2DGradFilter;
  const std::vector<int64_t> &in = conv->Operands[0]->Ty.Dims,
                             &out = filter ? conv->Operands[1]->Ty.Dims : conv->Ty.Dims;
  int64_t pad = conv->Op == OpCode::Conv2DGradInput ? 2 - conv->A.Pad : conv->A.Pad;
  return {in[1], in[2], in[3], pad, out[1], out[2], out[3], (out[2] + 1) / 2, (out[3] + 1) / 2};
}

/// Whether convolution n runs as Winograd's F(2x2, 3x3): on the CPU, for a
/// 3x3 kernel of stride 1 between enough channels that the products are
/// most of the work (2.25 times fewer multiplications than the column
/// matrix's product), on rows narrow enough to be one vector each.
inline bool usesWinograd(const Node *n, bool gpu) {
  if (gpu || ir::opInfo(n->Op).Category != ir::OpCategory::Window || n->Op == OpCode::MaxPool2D ||
      n->Op == OpCode::MaxPool2DGrad || n->A.KernelH != 3 || n->A.KernelW != 3 ||
      n->A.Stride != 1 || n->A.Pad > 2)
    return false;
  WinogradShape s = winogradShape(n);
  return s.In >= 16 && s.Out >= 16 && s.OW <= 64 && s.W <= 64;
}

/// CPU: bytes between the scratch of consecutive image groups: a column
/// matrix; with Winograd, the transformed tiles [16, In, tiles] and their
/// products [16, Out, tiles] (for a filter's gradient: the input's tiles
/// and the output gradient's).
inline int64_t columnBytes(const Node *conv) {
  int64_t size = ir::byteSize(conv->Ty.Elem);
  if (!usesWinograd(conv, false))
    return alignUp(columnElements(conv) * size);
  WinogradShape s = winogradShape(conv);
  return alignUp(16 * s.In * s.tiles() * size) + alignUp(16 * s.Out * s.tiles() * size);
}

/// CPU: bytes of an image group's partial sum of a filter's gradient: the
/// filter's shape, or with Winograd its 16 transformed matrices.
inline int64_t partialBytes(const Node *gradFilter) {
  int64_t elements = gradFilter->Ty.staticElements();
  if (usesWinograd(gradFilter, false)) {
    WinogradShape s = winogradShape(gradFilter);
    elements = 16 * s.Out * s.In;
  }
  return alignUp(elements * ir::byteSize(gradFilter->Ty.Elem));
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
    case ir::DType::F32:
      return B.getFloatTy();
    case ir::DType::F64:
      return B.getDoubleTy();
    case ir::DType::I32:
      return B.getInt32Ty();
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
  /// The index in the whole batch of batched value n's first element
  /// here: nonzero in an image chain and in a chunk or block of rows.
  Value *batchOffset(const Node *n) {
    Value *first = ImageRow ? ImageRow : RowBegin;
    return first ? B.CreateMul(first, i64(n->Ty.staticElements())) : i64(0);
  }
  Value *product(const std::vector<int64_t> &dims, size_t begin, size_t end) {
    Value *result = i64(1);
    for (size_t i = begin; i < end; ++i)
      result = B.CreateMul(result, extent(dims[i]), "", true, true);
    return result;
  }
  Value *elementCount(const ir::Type &type) { return product(type.Dims, 0, type.Dims.size()); }
  Value *field(CallField f) { return B.CreateStructGEP(CallTy, Call, f); }
  /// The pointer to one of the call's buffers (params, state, ...).
  Value *buffer(CallField f) { return Buffers.at(f); }
  Value *loadField(CallField f, llvm::Type *type) { return B.CreateLoad(type, field(f)); }
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
      if (n->Op == OpCode::Gather)
        return Computed[key] = gatheredElement(n, index);
      if (n->Op == OpCode::Slice)
        return Computed[key] = load(n->Operands[0], slicedIndex(n, index));
      if (n->Op == OpCode::Dropout)
        return Computed[key] =
                   droppedElement(n, dropoutKey(n), B.CreateAdd(batchOffset(n), index), index);
      std::optional<BroadcastLoops> loops;
      if (InlinedBroadcasts.count(n))
        loops = broadcastLoops(n);
      std::vector<Value *> args;
      for (size_t k = 0; k < n->Operands.size(); ++k)
        args.push_back(load(n->Operands[k], loops ? operandIndex(*loops, k, index) : index));
      if (n->Op == OpCode::Broadcast)
        return Computed[key] = args[0];
      return Computed[key] = n->Op == OpCode::MatMul
                                 ? B.CreateFMul(args[0], args[1]) // isScaling: A[m] * B[0]
                                 : LLVMScalarBuilder(B, elemType(n->Ty.Elem)).apply(n->Op, args);
    }
    const Slot &slot = slotOf(n);
    if (slot.Scalar)
      return slot.Scalar;
    return B.CreateLoad(elemType(n->Ty.Elem),
                        at(n, n->Ty.staticElements() == 1 && !n->Ty.isBatched() ? i64(0) : index));
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
  void forRange(Value *begin, Value *end, const std::function<void(Value *)> &body,
                bool rolled = false);
  /// `for (i = 0; i < count; ++i) body(i)` where iteration i reads and
  /// writes only elements of its own: on the CPU, said to LLVM (every
  /// access in the loop is in an access group the loop declares parallel),
  /// so that it vectorizes with no run-time overlap checks, which fail
  /// between slices of one buffer (an LSTM's gates in its packed state).
  void independentFor(Value *count, const std::function<void(Value *)> &body);
  /// The loop itself: `for (i = begin; i < end; i += step) body(i)`.
  void loopRange(Value *begin, Value *end, Value *step, const std::function<void(Value *)> &body,
                 bool rolled);
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
    return Gpu && n->Ty.Dims.empty() && ir::opInfo(n->Op).Category == ir::OpCategory::Elementwise &&
           !GroupedInto.count(n) && !Groups.count(n) && !ProductEpilogues.count(n);
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
  /// Elementwise node n (formula of its operands' elements), broadcasting
  /// operands of other shapes.
  void lowerMap(const Node *n, const std::function<Value *(std::vector<Value *> &)> &formula);
  /// The loops over the result of elementwise node n (or a broadcast) with
  /// broadcast operands: their extents, outermost first, and each
  /// operand's stride along each (0 where it is broadcast; the result's
  /// last).
  struct BroadcastLoops {
    std::vector<Value *> Extents;
    std::vector<std::vector<Value *>> Strides;
  };
  BroadcastLoops broadcastLoops(const Node *n);
  /// The index of operand k's element that element i of the result reads.
  Value *operandIndex(const BroadcastLoops &loops, size_t k, Value *i);
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
  void lowerSplitProduct(const Node *n, const Node *into, const GemmShape &shape, const Node *bias,
                         const Node *mask);
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
  Value *lowerSkippingZeroColumns(const Node *n, const Node *d, const GemmShape &shape, Value *dest,
                                  Value *rows, Value *depth, Value *bias, Value *mask,
                                  Value *columnSums);
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
  void lowerSplitFullSums(const std::vector<const Node *> &sums, const std::vector<Value *> &zeros,
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
  /// The hash key of dropout n's mask in this call (from the seed, the
  /// op's stream and the step).
  Value *dropoutKey(const Node *n);
  /// Element i of dropout n, whose keep decision hashes `key` with the
  /// element's index in the whole batch, `counter` (see batchOffset), so
  /// that the backward op finds the same mask.
  Value *droppedElement(const Node *n, Value *key, Value *counter, Value *i);
  void lowerGather(const Node *n);
  /// GPU: element i of gather n, row indices[r] of the table at column j
  /// (i = r width + j), or zero for an index out of range.
  Value *gatheredElement(const Node *n, Value *i);
  void lowerScatterAdd(const Node *n);
  /// GPU: scatter_add by a stable sort of the indices (no atomics).
  void lowerGpuScatterAdd(const Node *n);
  /// Copies the rows of `from` (its last axis) to the rows of `to` at column
  /// `offset`: concat, slice and unslice. With `fromOffset`, reads from
  /// that column of `from` instead, `width` values per row.
  void copyColumns(const Node *from, int64_t fromOffset, const Node *to, int64_t toOffset,
                   int64_t width);
  /// Columns [Begin, End) of each row of a result, taken from the rows of
  /// From (End - Begin wide), or zeros where From is null.
  struct ColumnSource {
    int64_t Begin, End;
    const Node *From;
  };
  /// GPU: n (a concatenation, an unslice) as one kernel from sources that
  /// cover its columns, each read through load().
  void gpuColumnsFrom(const Node *n, const std::vector<ColumnSource> &sources);
  /// GPU: the index in the sliced value of element i of slice n.
  Value *slicedIndex(const Node *n, Value *i);
  void lowerLstm(const Node *n);
  void lowerLstmGrad(const Node *n);
  void lowerLstmGradWeight(const Node *n);
  /// The row and column of flat index i in rows of `width` elements: a
  /// GPU thread's element, where a thread per element replaces one per row.
  std::pair<Value *, Value *> rowAndColumn(Value *i, int64_t width) {
    return {B.CreateUDiv(i, i64(width)), B.CreateURem(i, i64(width))};
  }
  /// Whether an index lies in [0, size): guards lookups by data values.
  Value *inBounds(Value *index, int64_t size) { return B.CreateICmpULT(index, i64(size)); }
  /// Runs `body` only when `cond` holds.
  void ifThen(Value *cond, const std::function<void()> &body);
  /// The output positions o in [0, outExtent) whose input position
  /// o * stride + k - pad lies in [0, inExtent): [begin, end).
  std::pair<Value *, Value *> validRange(Value *k, int64_t inExtent, int64_t outExtent,
                                         int64_t stride, int64_t pad);
  /// Convolutions are matrix products of the weights [O, C*KH*KW] with an
  /// image's column matrix [C*KH*KW, OH*OW]. columnsOf visits the pairs
  /// (column matrix index, image index) that are inside the image, for
  /// `conv` over images of shape `in` (one image from `image`, a flat
  /// offset); the rest of the column matrix is zero.
  void columnsOf(const Node *conv, const std::vector<int64_t> &in, const std::vector<int64_t> &out,
                 Value *image, const std::function<void(Value *, Value *)> &body);
  /// Group `group`'s column matrix of convolution n, in n's scratch.
  Value *columnBuffer(const Node *n, Value *group);
  /// Fills the column matrix `col` of convolution n from image `img` of x:
  /// zeros where the kernel reads the padding, the image's values elsewhere.
  void fillColumns(const Node *n, const Node *x, const std::vector<int64_t> &out, Value *img,
                   Value *col);
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
  /// GPU: the inlined nodes that broadcast an operand (a broadcast, an
  /// elementwise op of operands of other shapes): they read their operands
  /// at their index's coordinates (see broadcastLoops).
  std::unordered_set<const Node *> InlinedBroadcasts;
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

} // namespace nnc::lowering

#endif // NNC_CODEGEN_GRAPHLOWERING_H
