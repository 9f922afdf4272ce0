//===- Gpu.h - What GPU kernels are made of, for two targets ----*- C++ -*-===//
///
/// \file
/// The code generator lowers a graph for the GPU as a sequence of kernels
/// (GraphLowering.h, in GPU mode; GpuSchedule.cpp). The few things a kernel
/// needs beyond plain LLVM IR are here, behind one interface with two
/// implementations:
///   - NVPTX: special registers, bar.sync, shared memory in address space
///     3, kernels marked in nvvm.annotations; compiled to PTX text;
///   - the simulator (--target=cuda-sim): the same kernels compiled for the
///     host, reading their indices from the runtime (nnc_sim_* in
///     runtime.h), so that the GPU code generator is tested where there is
///     no GPU.
///
//===----------------------------------------------------------------------===//
#ifndef NNC_CODEGEN_GPU_H
#define NNC_CODEGEN_GPU_H

#include "llvm/IR/IRBuilder.h"

#include <functional>
#include <memory>
#include <string>

namespace nnc {

/// Threads per block of every kernel (NNC_GPU_BLOCK of runtime.h).
constexpr int64_t GpuBlock = 256;
/// Shared memory a kernel may use, in bytes (NNC_SIM_SHARED of runtime.h,
/// and within the 48 KiB any CUDA device gives a block without opting in).
constexpr int64_t GpuShared = 49152;

class GpuTarget {
public:
  virtual ~GpuTarget() = default;
  /// The module that kernels are defined in.
  virtual llvm::Module &kernelModule() = 0;
  /// i32 values: the thread's index in its block, the block's index in
  /// the grid, the number of blocks.
  virtual llvm::Value *thread(llvm::IRBuilder<> &B) = 0;
  virtual llvm::Value *block(llvm::IRBuilder<> &B) = 0;
  virtual llvm::Value *blocks(llvm::IRBuilder<> &B) = 0;
  /// Waits for every thread of the block; their writes before it are seen
  /// by all after it.
  virtual void barrier(llvm::IRBuilder<> &B) = 0;
  /// A generic pointer to the block's shared memory (GpuShared bytes).
  virtual llvm::Value *shared(llvm::IRBuilder<> &B) = 0;
  /// Marks a finished function as a kernel.
  virtual void finishKernel(llvm::Function &F) = 0;
  /// Whether math library calls must be avoided (no libm on the device).
  virtual bool device() const = 0;
};

/// Kernels for nvptx64-nvidia-cuda, in a module of their own.
std::unique_ptr<GpuTarget> createNvptxTarget(llvm::LLVMContext &Ctx);
/// Kernels for the host, in \p HostModule, calling the runtime's nnc_sim_*.
std::unique_ptr<GpuTarget> createSimTarget(llvm::Module &HostModule);

/// The settings of one matrix product on the GPU: as GemmShape (Gemm.h).
struct GpuGemmShape {
  bool TransA = false, TransB = false, Accumulate = false, Bias = false, Relu = false,
       Mask = false;
  int64_t N = 0;
  llvm::Type *Elem = nullptr;
  int64_t LdA = 0, LdB = 0, LdC = 0;
};

/// The side of the square tiles of C by which a product's work is counted
/// (its tiles times its runs: see GpuGemmSplit). A block computes a tile of
/// as many elements, square or narrower (gpuGemmTiling).
constexpr int64_t GpuGemmTile = 64;

/// The rows and columns of the tiles of C that a block computes, for a
/// product of \p Columns columns: 64 x 64, or 128 x 32 for at most 32
/// columns and 256 x 16 for at most 16, so that a narrow product does not
/// spend most of its multiply-adds on padding. Each thread of the block's
/// 16 x 16 sums 16 elements of a tile whichever its shape, in the same
/// order: the results are the same.
struct GpuGemmTiling {
  int64_t Rows, Columns;
};
GpuGemmTiling gpuGemmTiling(int64_t Columns);

/// A product's depth cut into runs (split-K), so that a product of few
/// tiles and a long depth fills the device: each (tile, run) pair is a unit
/// of work. i64 values, uniform in the kernel: Count runs (at least 1) of
/// Depth each (a multiple of 16; the last may be shorter). With Count > 1,
/// run s writes its partial product to Partials + s * M * ldc, without
/// bias, for a kernel after it to sum in order; with Count = 1, the product
/// goes to C as without a split.
struct GpuGemmSplit {
  llvm::Value *Count, *Depth, *Partials;
};

/// Emits, at B's insertion point in a kernel, C (+)= op(A) op(B) (+ bias),
/// then max(..., 0) with Relu, then times (mask > 0) with Mask (\p Mask
/// laid out as C), computed by all the threads of each block together: tiles of C
/// (gpuGemmTiling), one after another per block (the tiles split among the blocks), each
/// thread summing a part of a tile from 16-deep slices of A and B staged in shared memory.
/// Every thread of the block must reach it.
/// With \p Split, the depth's runs too are split among the blocks (a run's
/// partial product has no epilogue).
void emitGpuGemm(llvm::IRBuilder<> &B, GpuTarget &Gpu, const GpuGemmShape &Shape,
                 llvm::Value *A, llvm::Value *BMatrix, llvm::Value *C, llvm::Value *M,
                 llvm::Value *K, llvm::Value *Bias, llvm::Value *Mask = nullptr,
                 const GpuGemmSplit *Split = nullptr);

/// An operand of a tiled product read through an index function rather than as a matrix (a
/// convolution's image patches, its filter taken apart): element (i, k) of op(A), i a row of
/// C, or of op(B), i a column of C. At gives its index from Base, and whether it is there at
/// all (null: always; where not, it is zero: a convolution's padding); it is called with i
/// and k in range, and may be called out of range too, where its index is not used.
/// Consecutive threads stage consecutive k when AlongK, else consecutive i: the order in
/// which their loads coalesce.
struct GpuGemmOperand {
  llvm::Value *Base = nullptr;
  std::function<std::pair<llvm::Value *, llvm::Value *>(llvm::IRBuilder<> &, llvm::Value *i,
                                                        llvm::Value *k)>
      At;
  bool AlongK = false;
};

/// Where element (m, n) of C goes: its index from C.
using GpuGemmIndex =
    std::function<llvm::Value *(llvm::IRBuilder<> &, llvm::Value *m, llvm::Value *n)>;

/// emitGpuGemm's product of two operands read through index functions, its result stored
/// at Out's indices (Shape's N: C's columns; LdC: the stride of a split's partial products,
/// whose Out must be m LdC + n; TransA, TransB, LdA and LdB unused).
void emitGpuGemm(llvm::IRBuilder<> &B, GpuTarget &Gpu, const GpuGemmShape &Shape,
                 const GpuGemmOperand &A, const GpuGemmOperand &BOperand, llvm::Value *C,
                 const GpuGemmIndex &Out, llvm::Value *M, llvm::Value *K, llvm::Value *Bias,
                 llvm::Value *Mask = nullptr, const GpuGemmSplit *Split = nullptr);

/// Rewrites the math library calls of NVPTX kernels, which have no libm:
/// f32 pow as exp(y log x); f64's transcendental functions from CUDA's
/// libdevice, linked in. False with \p Error when libdevice is needed and
/// not found.
bool legalizeDeviceMath(llvm::Module &Kernels, std::string &Error);

/// Optimizes the NVPTX kernel module and returns its PTX text for \p Arch
/// (sm_80, sm_90, ...); an error message in \p Error when it fails.
std::string emitPtx(llvm::Module &Kernels, const std::string &Arch, unsigned OptLevel,
                    std::string &Error);

/// Whether \p Arch is a GPU architecture nnc emits PTX for.
bool isKnownGpuArch(const std::string &Arch);

} // namespace nnc

#endif // NNC_CODEGEN_GPU_H
