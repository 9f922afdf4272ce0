//===- Gemm.h - Register-blocked matrix products ----------------*- C++ -*-===//
///
/// \file
/// C[M, N] = op(A)[M, K] op(B)[K, N] (or +=), row-major, as
/// one generated function per shape: a micro-kernel keeps an MR x NR block
/// of C in vector registers while it runs along K, reading op(B) from a
/// panel packed contiguous (zero-padded to whole vectors) that stays in the
/// L1 cache for all the row blocks of a thread. N is static, so panel widths
/// and the masks of the last columns are constants; M and K may depend on
/// the batch size. Products whose rows of A and B both run along a long K
/// and whose C is small may take dot products along K instead
/// (GemmShape::DotProducts).
///
/// Threads split the row blocks: every element of C is summed by one
/// thread in the same order whatever the thread count, so the results do
/// not depend on it.
///
//===----------------------------------------------------------------------===//
#ifndef NNC_CODEGEN_GEMM_H
#define NNC_CODEGEN_GEMM_H

#include "llvm/IR/IRBuilder.h"

#include <functional>
#include <string>

namespace nnc {

struct GemmShape {
  bool TransA = false;     ///< A is stored [K, M].
  bool TransB = false;     ///< B is stored [N, K].
  bool Accumulate = false; ///< C += rather than C =.
  int64_t N = 0;
  llvm::Type *Elem = nullptr; ///< float or double.
  unsigned VectorBits = 128;  ///< The target's widest vector registers.
  /// Elements between the starts of consecutive stored rows of A, B and C,
  /// for matrices inside larger ones (an LSTM's steps); 0: the matrix's own
  /// row length (contiguous).
  int64_t LdA = 0, LdB = 0, LdC = 0;
  /// C = op(A) op(B) + bias, a vector of N added to every row (a dense
  /// layer's bias, added where the sums start rather than in a pass of its
  /// own). Not with Accumulate.
  bool Bias = false;
  /// C = relu(...) (reluOf: NaN stays NaN): a dense layer's relu,
  /// applied as the finished sums are stored. Not with Accumulate.
  bool Relu = false;
  /// C = (...) * (R > 0), R a matrix laid out as C: the adjoint of a relu's
  /// input, from the product that gives the adjoint of its output and the
  /// relu's output R. Not with Accumulate.
  bool Mask = false;
  /// C[m, n] = dot(A row m, B row n) along K, vectorized along K: for
  /// TransB products of a few rows and columns and a long depth (a weight's
  /// gradient over a batch in batch-minor layout). Only with TransB and not
  /// TransA; Accumulate, the leading dimensions, Bias, Relu and Mask apply
  /// as to the other kernels. emitGemm also takes dot products where they
  /// win, for a TransB product of a few columns and a static depth.
  bool DotProducts = false;
  /// Also the sums of C's columns over its rows, as stored (after bias,
  /// relu and mask), into a vector of N: a bias's gradient from the
  /// product that gives its layer's adjoint, summed as the last depth
  /// block's sums are stored rather than in a pass of its own. Each column
  /// is added in row order from 0, as a separate pass adds it. Only the
  /// panel kernel sums, and only on one thread (see emitGemm).
  bool ColumnSums = false;
  /// K when it is static and small (set by emitGemm), else 0 (K is
  /// an argument): the loops along a few steps of K unroll, and the
  /// addresses of a row block are constants apart.
  int64_t K = 0;
  /// M when it is static (set by emitGemm; a weight's gradient has as many
  /// rows as the layer has outputs), else 0: the rows left over after the
  /// blocks of MR are one block of their own.
  int64_t M = 0;
};

/// Emits, at \p B's insertion point, `for (i = Begin; i < End; i += Step)
/// Body(i)` over i64, in blocks named \p Name and \p Name.end; returns the
/// loop's latch branch (for loop metadata). The code generators' one loop.
llvm::BranchInst *emitLoop(llvm::IRBuilder<> &B, llvm::Value *Begin, llvm::Value *End,
                           llvm::Value *Step, const std::function<void(llvm::Value *)> &Body,
                           const llvm::Twine &Name = "loop");

/// Emits, at \p B's insertion point, C (+)= op(A) op(B) (+ bias) for \p M
/// rows and depth \p K (i64 values), masked by \p Mask (Shape.Mask). Large
/// products run on the runtime's threads (nnc_parallel_for), small ones on
/// the calling thread; all on the calling thread when it is one of those
/// threads already (\p OnWorker: nnc_parallel_for does not nest).
/// With \p ColumnSums, also the sums of C's columns there (see
/// GemmShape::ColumnSums) where the product runs on one thread in the
/// panel kernel; returns whether it did (an i1), or null without
/// \p ColumnSums. Where it did not, the caller sums C itself, in the same
/// order: the results do not depend on which.
llvm::Value *emitGemm(llvm::IRBuilder<> &B, const GemmShape &Shape, llvm::Value *A,
                      llvm::Value *BMatrix, llvm::Value *C, llvm::Value *M, llvm::Value *K,
                      llvm::Value *Bias = nullptr, bool OnWorker = false,
                      llvm::Value *Mask = nullptr, llvm::Value *ColumnSums = nullptr);

/// Defines `void nnc_gemm(const void *A, const void *B, void *C, int64_t M,
/// int64_t K, const void *Bias, const void *Mask, void *Sums)` in \p Mod:
/// the product of \p Shape as a function of its own, for bench/gemm to
/// time against the machine's peak (Bias, Mask and Sums are used only when
/// Shape says so; with ColumnSums, on the calling thread). Returns an
/// error message, or an empty string.
std::string emitGemmEntryPoint(llvm::Module &Mod, const GemmShape &Shape);

} // namespace nnc

#endif // NNC_CODEGEN_GEMM_H
