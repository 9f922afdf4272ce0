//===- Abi.h - nnc_call of runtime.h as an LLVM type ------------*- C++ -*-===//
#ifndef NNC_CODEGEN_ABI_H
#define NNC_CODEGEN_ABI_H

namespace llvm {
class LLVMContext;
class StructType;
} // namespace llvm

namespace nnc {

/// The fields of nnc_call (runtime/include/nnc/runtime.h), in order.
enum CallField : unsigned {
  CallParams,
  CallState,
  CallGrads,
  CallWorkspace,
  CallInputs,
  CallOutput,
  CallBatch,
  CallLr,
  CallStep,
  CallLoss,
  CallSeed,
  CallTable,
  CallRows,
};

/// { ptr x6, i64 batch, double lr, i64 step, double loss, i64 seed, ptr table,
///   ptr rows }
llvm::StructType *getCallType(llvm::LLVMContext &context);

} // namespace nnc

#endif // NNC_CODEGEN_ABI_H
