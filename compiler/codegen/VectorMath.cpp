//===- VectorMath.cpp - Scalar formulas as LLVM IR ------------------------===//

#include "codegen/VectorMath.h"

#include "codegen/Gemm.h"

#include "llvm/IR/Module.h"

#include <cassert>
#include <functional>
#include <limits>

namespace nnc {

using llvm::Value;

namespace {

/// Builds the f32 functions from plain arithmetic, integer bit operations
/// and selects, all of which have vector forms.
class F32Math {
public:
  explicit F32Math(llvm::IRBuilder<> &b)
      : B(b), F(b.getFloatTy()), I(b.getInt32Ty()) {}

  Value *c(double v) { return llvm::ConstantFP::get(F, v); }
  Value *ci(int32_t v) { return llvm::ConstantInt::get(I, v, true); }
  Value *fmul(Value *a, Value *b) { return B.CreateFMul(a, b); }
  Value *fadd(Value *a, Value *b) { return B.CreateFAdd(a, b); }
  Value *fsub(Value *a, Value *b) { return B.CreateFSub(a, b); }
  Value *bitsOf(Value *x) { return B.CreateBitCast(x, I); }
  Value *floatOf(Value *bits) { return B.CreateBitCast(bits, F); }
  Value *select(Value *cond, Value *a, Value *b) { return B.CreateSelect(cond, a, b); }

  /// a * b + c, fused where the target has a fused multiply-add.
  Value *fmuladd(Value *a, Value *b, Value *addend) {
    return B.CreateIntrinsic(llvm::Intrinsic::fmuladd, {F}, {a, b, addend});
  }

  /// c[0] x^(n-1) + ... + c[n-1], by Horner's rule.
  Value *polynomial(Value *x, std::initializer_list<double> coefficients) {
    Value *result = nullptr;
    for (double k : coefficients)
      result = result ? fmuladd(result, x, c(k)) : c(k);
    return result;
  }

  Value *exp(Value *x) {
    // exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in
    // [-ln2/2, ln2/2] (ln 2 in two parts, so that n ln 2 is exact enough).
    // x is clamped to [-104, 89]: exp(89) overflows to inf and exp(-104)
    // rounds to 0 in the scaling itself, so no select handles them. The
    // clamps are selects on ordered comparisons, which keep a NaN, and a NaN
    // stays one through the arithmetic.
    Value *xc = select(B.CreateFCmpOLT(x, c(-104)), c(-104), x);
    xc = select(B.CreateFCmpOGT(xc, c(89)), c(89), xc);
    // Adding 1.5 * 2^23 rounds to an integer, which the sum's low mantissa
    // bits hold: n as a float and as an integer without a conversion.
    constexpr double Shifter = 12582912.0;
    Value *shifted = fmuladd(xc, c(1.44269504088896341), c(Shifter));
    Value *n = fsub(shifted, c(Shifter));
    Value *ni = B.CreateSub(bitsOf(shifted), bitsOf(c(Shifter)));
    Value *r = fmuladd(n, c(2.12194440e-4), fmuladd(n, c(-0.693359375), xc));
    Value *p = polynomial(r, {1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                              4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1});
    Value *y = fadd(fmuladd(p, fmul(r, r), r), c(1));
    // 2^n for n in [-150, 128] as two factors that are each a normal float;
    // the second product overflows or underflows as the result should.
    Value *half = B.CreateAShr(ni, 1);
    auto power = [&](Value *e) {
      return floatOf(B.CreateShl(B.CreateAdd(e, ci(127)), 23));
    };
    return fmul(fmul(y, power(half)), power(B.CreateSub(ni, half)));
  }

  Value *log(Value *x) {
    // x = m 2^e with m in [sqrt(1/2), sqrt(2)); log x = log m + e ln 2,
    // log m by a polynomial in m - 1. Subnormal x is scaled by 2^23 first.
    Value *subnormal = B.CreateFCmpOLT(x, c(1.17549435e-38));
    Value *xs = select(subnormal, fmul(x, c(8388608.0)), x);
    Value *bits = bitsOf(xs);
    Value *e = B.CreateSub(B.CreateAnd(B.CreateLShr(bits, 23), ci(0xff)), ci(126));
    e = select(subnormal, B.CreateSub(e, ci(23)), e);
    // The mantissa with the exponent of 0.5: m in [0.5, 1).
    Value *m = floatOf(B.CreateOr(B.CreateAnd(bits, ci(0x007fffff)), ci(0x3f000000)));
    Value *small = B.CreateFCmpOLT(m, c(0.707106781186547524));
    e = select(small, B.CreateSub(e, ci(1)), e);
    m = select(small, fsub(fadd(m, m), c(1)), fsub(m, c(1)));
    Value *ef = B.CreateSIToFP(e, F);
    Value *z = fmul(m, m);
    Value *p = polynomial(m, {7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                              -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                              2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1});
    Value *y = fmul(fmul(p, m), z);
    y = fadd(y, fmul(ef, c(-2.12194440e-4)));
    y = fsub(y, fmul(z, c(0.5)));
    Value *result = fadd(fadd(m, y), fmul(ef, c(0.693359375)));
    // log(+inf) = +inf, log(0) = -inf, log(x < 0) and log(NaN) = NaN.
    result = select(B.CreateFCmpOEQ(x, llvm::ConstantFP::getInfinity(F)), x, result);
    result = select(B.CreateFCmpOEQ(x, c(0)), llvm::ConstantFP::getInfinity(F, true),
                    result);
    return select(B.CreateFCmpULT(x, c(0)), llvm::ConstantFP::getNaN(F), result);
  }

  Value *tanh(Value *x) {
    // Small |x|: an odd polynomial (1 - 2/(e^2x + 1) would cancel);
    // otherwise that formula on |x|. The result takes x's sign (tanh(-0) is
    // -0). NaN takes the second path and stays NaN; large |x| gives
    // exp = inf and so 1.
    Value *ax = B.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x);
    Value *z = fmul(x, x);
    Value *p = polynomial(z, {-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                              1.33314422036e-1, -3.33332819422e-1});
    Value *near = fadd(fmul(fmul(p, z), x), x);
    Value *far = fsub(c(1), B.CreateFDiv(c(2), fadd(exp(fadd(ax, ax)), c(1))));
    return B.CreateBinaryIntrinsic(llvm::Intrinsic::copysign,
                                   select(B.CreateFCmpOLT(ax, c(0.625)), near, far), x);
  }

private:
  llvm::IRBuilder<> &B;
  llvm::Type *F, *I;
};

} // namespace

using SV = ir::ScalarBuilder::Value;

SV LLVMScalarBuilder::constant(double value) { return llvm::ConstantFP::get(Ty, value); }
SV LLVMScalarBuilder::add(SV a, SV b) { return B.CreateFAdd(v(a), v(b)); }
SV LLVMScalarBuilder::sub(SV a, SV b) { return B.CreateFSub(v(a), v(b)); }
SV LLVMScalarBuilder::mul(SV a, SV b) {
  // greater(...) times a value, as relu's gradient has it: a select.
  for (auto [x, indicator] : {std::pair(v(a), v(b)), std::pair(v(b), v(a))})
    if (auto *converted = llvm::dyn_cast<llvm::UIToFPInst>(indicator))
      if (converted->getOperand(0)->getType()->isIntOrIntVectorTy(1))
        return timesIndicator(B, x, converted->getOperand(0));
  return B.CreateFMul(v(a), v(b));
}
SV LLVMScalarBuilder::div(SV a, SV b) { return B.CreateFDiv(v(a), v(b)); }
SV LLVMScalarBuilder::max(SV a, SV b) {
  // llvm.maximum propagates NaN, as PyTorch's relu and max do.
  return B.CreateBinaryIntrinsic(llvm::Intrinsic::maximum, v(a), v(b));
}
SV LLVMScalarBuilder::relu(SV a) { return reluOf(B, v(a)); }
SV LLVMScalarBuilder::neg(SV a) { return B.CreateFNeg(v(a)); }
SV LLVMScalarBuilder::exp(SV a) {
  if (Ty->isFloatTy())
    return F32Math(B).exp(v(a));
  return B.CreateUnaryIntrinsic(llvm::Intrinsic::exp, v(a));
}
SV LLVMScalarBuilder::log(SV a) {
  if (Ty->isFloatTy())
    return F32Math(B).log(v(a));
  return B.CreateUnaryIntrinsic(llvm::Intrinsic::log, v(a));
}
SV LLVMScalarBuilder::sqrt(SV a) {
  return B.CreateUnaryIntrinsic(llvm::Intrinsic::sqrt, v(a));
}
SV LLVMScalarBuilder::tanh(SV a) {
  if (Ty->isFloatTy())
    return F32Math(B).tanh(v(a));
  return B.CreateUnaryIntrinsic(llvm::Intrinsic::tanh, v(a));
}
SV LLVMScalarBuilder::pow(SV a, SV b) {
  return B.CreateBinaryIntrinsic(llvm::Intrinsic::pow, v(a), v(b));
}
SV LLVMScalarBuilder::greater(SV a, SV b) {
  return B.CreateUIToFP(B.CreateFCmpOGT(v(a), v(b)), Ty);
}

SV LLVMScalarBuilder::quotientStep(SV p, SV s, SV a, SV d) {
  if (Ty->getScalarType()->isFloatTy())
    return nnc::quotientStep(B, v(p), v(s), v(a), v(d));
  return ScalarBuilder::quotientStep(p, s, a, d);
}

llvm::Value *reluOf(llvm::IRBuilder<> &B, llvm::Value *X) {
  llvm::Value *zero = llvm::ConstantFP::get(X->getType(), 0);
  return B.CreateSelect(B.CreateFCmpOGT(zero, X), zero, X);
}

llvm::Value *timesIndicator(llvm::IRBuilder<> &B, llvm::Value *X, llvm::Value *Cond) {
  // Selecting the product where Cond is false lets X86 multiply under a
  // mask: one instruction rather than a multiplication and a blend.
  return B.CreateSelect(B.CreateNot(Cond),
                        B.CreateFMul(X, llvm::ConstantFP::get(X->getType(), 0)), X);
}

llvm::Constant *firstLanes(llvm::IRBuilder<> &B, int64_t Lanes, int64_t Valid) {
  std::vector<llvm::Constant *> bits;
  for (int64_t l = 0; l < Lanes; ++l)
    bits.push_back(B.getInt1(l < Valid));
  return llvm::ConstantVector::get(bits);
}

llvm::Value *LLVMScalarBuilder::apply(ir::OpCode Op, llvm::ArrayRef<llvm::Value *> Args) {
  SV handles[4] = {nullptr, nullptr, nullptr, nullptr};
  for (size_t k = 0; k < Args.size() && k < 4; ++k)
    handles[k] = Args[k];
  return v(ir::opInfo(Op).Scalar(*this, handles));
}

llvm::Value *quotientStep(llvm::IRBuilder<> &B, Value *P, Value *S, Value *A, Value *D) {
  llvm::Type *ty = P->getType();
  assert(ty->getScalarType()->isFloatTy() && "the shortcut's bounds are single precision's");
  auto c = [&](double value) { return llvm::ConstantFP::get(ty, value); };
  auto fabs = [&](Value *x) { return B.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x); };
  const float inf = std::numeric_limits<float>::infinity();
  // The term S * (A / D) is negligible when |A| < 2^-100, 2^-100 <= |P| <
  // inf, S is finite and |P D| >= T = max(|S| 2^-70, 2^-126), P D rounded:
  //  - |P D| >= 2^-126 makes D nonzero and not NaN. D infinite makes A / D
  //    and 0 / D both zeros, and P minus a zero is P (P is not zero).
  //  - Otherwise P D rounds to a normal number or to infinity, so
  //    |P| |D| >= T (1 - 2^-24) and |S| <= |P| |D| 2^70 (1 + 2^-23).
  //    Rounding to nearest at most doubles |A / D| (in the subnormals) and
  //    |S (A / D)|, so the term, rounded as the formula rounds it, is
  //    below 4 |S| 2^-100 / |D| < |P| 2^-27, P normal: P - term rounds to
  //    P, as P - S * (0 / D) does.
  // |S| 2^-70 is exact unless it is below 2^-126, where the floor replaces
  // it: T stays at least |S| 2^-70, and never 0. For S infinite or NaN,
  // T is NaN: the comparison fails, the formula as is. So does NaN in P or
  // D. The magnitudes of A and P are compared as integers, and T is
  // computed once: 10 vector operations per step where the bound
  // |S| <= (|P| |D|) 2^70 with float comparisons took 14, and they compete
  // with Adam's own for the cycles the divider leaves (iris: 1-2% faster).
  // Numerators that small, not only subnormal ones, also keep S * (A / D)
  // from underflowing: a product of normal numbers that underflows takes
  // twice as long on Zen 4.
  llvm::Type *intTy = ty->getWithNewType(B.getInt32Ty());
  auto magnitude = [&](Value *x) {
    return B.CreateAnd(B.CreateBitCast(x, intTy), llvm::ConstantInt::get(intTy, 0x7fffffff));
  };
  auto bits = [&](float value) { return llvm::bit_cast<uint32_t>(value); };
  auto integer = [&](uint32_t value) { return llvm::ConstantInt::get(intTy, value); };
  Value *small = B.CreateICmpULT(magnitude(A), integer(bits(0x1p-100f)));
  // 2^-100 <= |P| < inf as one unsigned comparison.
  Value *normalP = B.CreateICmpULT(B.CreateSub(magnitude(P), integer(bits(0x1p-100f))),
                                   integer(bits(inf) - bits(0x1p-100f)));
  // With S loop-invariant, as in the optimizers, T is computed once.
  Value *absS = fabs(S), *scaledS = B.CreateFMul(absS, c(0x1p-70));
  Value *floored = B.CreateSelect(B.CreateFCmpOLT(scaledS, c(0x1p-126)), c(0x1p-126), scaledS);
  Value *threshold = B.CreateSelect(B.CreateFCmpOLT(absS, c(inf)), floored,
                                       c(std::numeric_limits<float>::quiet_NaN()));
  Value *negligible = B.CreateAnd(B.CreateAnd(small, normalP),
                                  B.CreateFCmpOGE(fabs(B.CreateFMul(P, D)), threshold));
  Value *numerator = B.CreateSelect(negligible, c(0), A);
  return B.CreateFSub(P, B.CreateFMul(S, B.CreateFDiv(numerator, D)));
}

/// Defines `void Name(Params..., int64_t N)` in \p Mod, its pointers not
/// aliasing one another: a loop over i in [0, N), in single precision,
/// whose body \p Body emits; the optimizer vectorizes it, as the trainers'
/// loops.
static void defineElementLoop(
    llvm::Module &Mod, const char *Name, std::vector<llvm::Type *> Params,
    const std::function<void(llvm::IRBuilder<> &, LLVMScalarBuilder &, llvm::Function *, Value *)>
        &Body) {
  llvm::LLVMContext &ctx = Mod.getContext();
  llvm::IRBuilder<> b(ctx);
  Params.push_back(b.getInt64Ty());
  auto *fn = llvm::Function::Create(llvm::FunctionType::get(b.getVoidTy(), Params, false),
                                    llvm::Function::ExternalLinkage, Name, Mod);
  fn->addFnAttr(llvm::Attribute::NoUnwind);
  for (unsigned arg = 0; arg < Params.size(); ++arg)
    if (Params[arg]->isPointerTy())
      fn->addParamAttr(arg, llvm::Attribute::NoAlias);
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", fn));
  LLVMScalarBuilder sb(b, b.getFloatTy());
  emitLoop(b, b.getInt64(0), fn->getArg(unsigned(Params.size() - 1)), b.getInt64(1),
           [&](Value *i) { Body(b, sb, fn, i); });
  b.CreateRetVoid();
}

bool emitMathEntryPoint(llvm::Module &Mod, const std::string &OpName) {
  llvm::Type *ptr = llvm::PointerType::getUnqual(Mod.getContext());
  llvm::Type *f = llvm::Type::getFloatTy(Mod.getContext());
  if (OpName == "quotient_step") {
    // void nnc_quotient_step(float *P, float S, const float *A, const float *D, int64_t N).
    defineElementLoop(Mod, "nnc_quotient_step", {ptr, f, ptr, ptr},
                      [&](llvm::IRBuilder<> &b, LLVMScalarBuilder &sb, llvm::Function *fn,
                          Value *i) {
                        auto at = [&](unsigned arg) {
                          return b.CreateInBoundsGEP(f, fn->getArg(arg), i);
                        };
                        Value *args[] = {b.CreateLoad(f, at(0)), fn->getArg(1),
                                         b.CreateLoad(f, at(2)), b.CreateLoad(f, at(3))};
                        b.CreateStore(sb.apply(ir::OpCode::QuotientStep, args), at(0));
                      });
    return true;
  }
  static const ir::OpCode AllOps[] = {
#define NNC_OP(Enum, Name, Arity, Category) ir::OpCode::Enum,
#include "ir/Ops.def"
  };
  const ir::OpCode *op = nullptr;
  for (const ir::OpCode &candidate : AllOps) {
    const ir::OpInfo &info = ir::opInfo(candidate);
    if (info.Category == ir::OpCategory::Elementwise && info.Arity == 1 &&
        OpName == info.Name)
      op = &candidate;
  }
  if (!op)
    return false;
  // void nnc_math(const float *X, float *Y, int64_t N).
  defineElementLoop(Mod, "nnc_math", {ptr, ptr},
                    [&](llvm::IRBuilder<> &b, LLVMScalarBuilder &sb, llvm::Function *fn,
                        Value *i) {
                      Value *x = b.CreateLoad(f, b.CreateInBoundsGEP(f, fn->getArg(0), i));
                      b.CreateStore(sb.apply(*op, {x}),
                                    b.CreateInBoundsGEP(f, fn->getArg(1), i));
                    });
  return true;
}

} // namespace nnc
