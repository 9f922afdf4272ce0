//===- VectorMath.h - Scalar formulas as LLVM IR ----------------*- C++ -*-===//
///
/// \file
/// The op registry's scalar formulas as LLVM instructions. Single-precision
/// exp, log and tanh are written out as range reductions and polynomials
/// (the Cephes library's) with selects for the special values, so that the
/// loops using them stay vectorizable: a call to libm's expf would keep
/// the loop scalar. Double precision (the gradient checks) keeps the LLVM
/// intrinsics, and so libm.
///
/// Accuracy, checked against double-precision libm by bench/math in
/// tests/codegen/math.test: a few units in the last place. Polynomials
/// use fused multiply-adds where the target has them.
///
//===----------------------------------------------------------------------===//
#ifndef NNC_CODEGEN_VECTORMATH_H
#define NNC_CODEGEN_VECTORMATH_H

#include "ir/Ops.h"

#include "llvm/IR/IRBuilder.h"

#include <string>

namespace nnc {

/// Scalar arithmetic of the op registry, as LLVM instructions.
class LLVMScalarBuilder : public ir::ScalarBuilder {
public:
  LLVMScalarBuilder(llvm::IRBuilder<> &b, llvm::Type *type) : B(b), Ty(type) {}

  static llvm::Value *v(ScalarBuilder::Value x) { return static_cast<llvm::Value *>(x); }

  Value constant(double value) override;
  Value add(Value a, Value b) override;
  Value sub(Value a, Value b) override;
  Value mul(Value a, Value b) override;
  Value div(Value a, Value b) override;
  Value max(Value a, Value b) override;
  Value relu(Value a) override;
  Value neg(Value a) override;
  Value exp(Value a) override;
  Value log(Value a) override;
  Value sqrt(Value a) override;
  Value tanh(Value a) override;
  Value pow(Value a, Value b) override;
  Value greater(Value a, Value b) override;
  /// In f32, nnc::quotientStep.
  Value quotientStep(Value p, Value s, Value a, Value d) override;

  /// The formula of elementwise op \p Op applied to \p Args.
  llvm::Value *apply(ir::OpCode Op, llvm::ArrayRef<llvm::Value *> Args);

private:
  llvm::IRBuilder<> &B;
  llvm::Type *Ty;
};

/// relu(\p X): X unless 0 > X, which keeps NaN and -0 as they are, as
/// PyTorch's relu on the CPU (clamp_min, a vector max whose second operand
/// is X). It is one x86 max instruction, where llvm.maximum's ordering of
/// -0 below +0 takes three.
llvm::Value *reluOf(llvm::IRBuilder<> &B, llvm::Value *X);

/// \p X times the indicator of \p Cond (1 where true, else 0), as a select
/// of X or X * 0: the product exactly (NaN for an infinite X, -0 for a
/// negative one) without converting the comparison to a number.
llvm::Value *timesIndicator(llvm::IRBuilder<> &B, llvm::Value *X, llvm::Value *Cond);

/// The constant mask of the first \p Valid of \p Lanes lanes.
llvm::Constant *firstLanes(llvm::IRBuilder<> &B, int64_t Lanes, int64_t Valid);

/// P - S * (A / D) in f32, scalars or vectors (S splat), exactly as that
/// formula rounds: the lowering of quotient_step, an optimizer's step of a
/// parameter. Zen 4 divides a subnormal numerator about three times slower
/// than a normal one (4.6 against 1.6 ns for 16 lanes, measured), and
/// Adam's first moments end in the subnormals (0.9 times 4 units of the
/// smallest subnormal rounds back to 4 units). Where
/// such a numerator's term provably rounds away against P, the division
/// takes 0 instead, which gives the same result at full speed; elsewhere
/// the formula is computed as written.
llvm::Value *quotientStep(llvm::IRBuilder<> &B, llvm::Value *P, llvm::Value *S,
                          llvm::Value *A, llvm::Value *D);

/// Defines `void nnc_math(const float *X, float *Y, int64_t N)` in \p Mod:
/// Y[i] = op(X[i]) for the one-operand elementwise op named \p OpName,
/// with the code the trainers use, for bench/math. For quotient_step,
/// `void nnc_quotient_step(float *P, float S, const float *A, const float
/// *D, int64_t N)`: P[i] = quotient_step(P[i], S, A[i], D[i]), as the
/// trainers' optimizer steps, for bench/math/step_bench. False if there is
/// no such op.
bool emitMathEntryPoint(llvm::Module &Mod, const std::string &OpName);

} // namespace nnc

#endif // NNC_CODEGEN_VECTORMATH_H
