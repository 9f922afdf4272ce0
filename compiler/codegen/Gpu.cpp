//===- Gpu.cpp - GPU kernel primitives, the tiled GEMM, PTX emission ------===//

#include "codegen/Gpu.h"
#include "codegen/Codegen.h"
#include "codegen/Gemm.h"
#include "codegen/VectorMath.h"

#include "llvm/IR/InstIterator.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/IntrinsicsNVPTX.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Linker/Linker.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Transforms/IPO/Internalize.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <functional>

namespace nnc {

namespace {

using llvm::Value;

const char *const NvptxTriple = "nvptx64-nvidia-cuda";
/// PTX ISA 7.8 (CUDA 11.8) is the first with sm_90; every driver that runs
/// an sm_80 or sm_90 device today loads it.
const char *const PtxFeatures = "+ptx78";

void initializeNvptx() {
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
}

std::unique_ptr<llvm::TargetMachine> nvptxMachine(const std::string &arch,
                                                  unsigned optLevel, std::string &error) {
  initializeNvptx();
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(NvptxTriple, error);
  if (!target)
    return nullptr;
  auto level = optLevel == 0 ? llvm::CodeGenOptLevel::None : llvm::CodeGenOptLevel::Default;
  return std::unique_ptr<llvm::TargetMachine>(target->createTargetMachine(
      NvptxTriple, arch, PtxFeatures, llvm::TargetOptions(), std::nullopt, std::nullopt,
      level));
}

class NvptxTarget : public GpuTarget {
public:
  explicit NvptxTarget(llvm::LLVMContext &ctx)
      : Kernels(std::make_unique<llvm::Module>("kernels", ctx)) {
    std::string error;
    if (auto machine = nvptxMachine("sm_80", 2, error)) {
      Kernels->setTargetTriple(NvptxTriple);
      Kernels->setDataLayout(machine->createDataLayout());
    }
    auto *bytes = llvm::ArrayType::get(llvm::Type::getInt8Ty(ctx), GpuShared);
    Shared = new llvm::GlobalVariable(*Kernels, bytes, false,
                                      llvm::GlobalValue::InternalLinkage,
                                      llvm::UndefValue::get(bytes), "nnc_shared", nullptr,
                                      llvm::GlobalValue::NotThreadLocal, 3);
    Shared->setAlignment(llvm::Align(64)); // as the simulator's (NNC_SIM_SHARED)
  }
  llvm::Module &kernelModule() override { return *Kernels; }
  Value *thread(llvm::IRBuilder<> &B) override {
    return B.CreateIntrinsic(llvm::Intrinsic::nvvm_read_ptx_sreg_tid_x, {}, {});
  }
  Value *block(llvm::IRBuilder<> &B) override {
    return B.CreateIntrinsic(llvm::Intrinsic::nvvm_read_ptx_sreg_ctaid_x, {}, {});
  }
  Value *blocks(llvm::IRBuilder<> &B) override {
    return B.CreateIntrinsic(llvm::Intrinsic::nvvm_read_ptx_sreg_nctaid_x, {}, {});
  }
  void barrier(llvm::IRBuilder<> &B) override {
    B.CreateIntrinsic(llvm::Intrinsic::nvvm_barrier0, {}, {});
  }
  Value *shared(llvm::IRBuilder<> &B) override {
    return B.CreateAddrSpaceCast(Shared, B.getPtrTy());
  }
  void finishKernel(llvm::Function &F) override {
    llvm::LLVMContext &ctx = F.getContext();
    llvm::NamedMDNode *annotations = Kernels->getOrInsertNamedMetadata("nvvm.annotations");
    auto *i32 = llvm::Type::getInt32Ty(ctx);
    for (auto [key, value] : {std::pair<const char *, int64_t>{"kernel", 1},
                              {"maxntidx", GpuBlock}})
      annotations->addOperand(llvm::MDNode::get(
          ctx, {llvm::ValueAsMetadata::get(&F), llvm::MDString::get(ctx, key),
                llvm::ConstantAsMetadata::get(llvm::ConstantInt::get(i32, value))}));
  }
  bool device() const override { return true; }

private:
  std::unique_ptr<llvm::Module> Kernels;
  llvm::GlobalVariable *Shared;
};

class SimTarget : public GpuTarget {
public:
  explicit SimTarget(llvm::Module &host) : Host(host) {}
  llvm::Module &kernelModule() override { return Host; }
  Value *thread(llvm::IRBuilder<> &B) override { return index(B, "nnc_sim_thread"); }
  Value *block(llvm::IRBuilder<> &B) override { return index(B, "nnc_sim_block"); }
  Value *blocks(llvm::IRBuilder<> &B) override { return index(B, "nnc_sim_blocks"); }
  void barrier(llvm::IRBuilder<> &B) override {
    B.CreateCall(Host.getOrInsertFunction("nnc_sim_barrier", B.getVoidTy()));
  }
  Value *shared(llvm::IRBuilder<> &B) override {
    return B.CreateCall(Host.getOrInsertFunction("nnc_sim_shared", B.getPtrTy()));
  }
  void finishKernel(llvm::Function &) override {}
  bool device() const override { return false; }

private:
  Value *index(llvm::IRBuilder<> &B, const char *name) {
    llvm::FunctionCallee callee = Host.getOrInsertFunction(name, B.getInt32Ty());
    if (auto *f = llvm::dyn_cast<llvm::Function>(callee.getCallee())) {
      // Constant for the thread: may be computed once and reused.
      f->setDoesNotAccessMemory();
      f->setDoesNotThrow();
      f->setWillReturn();
    }
    return B.CreateCall(callee);
  }
  llvm::Module &Host;
};

} // namespace

std::unique_ptr<GpuTarget> createNvptxTarget(llvm::LLVMContext &Ctx) {
  return std::make_unique<NvptxTarget>(Ctx);
}

std::unique_ptr<GpuTarget> createSimTarget(llvm::Module &HostModule) {
  return std::make_unique<SimTarget>(HostModule);
}

void emitGpuGemm(llvm::IRBuilder<> &B, GpuTarget &Gpu, const GpuGemmShape &Shape,
                 Value *A, Value *BMatrix, Value *C, Value *M, Value *K, Value *Bias,
                 Value *Mask, const GpuGemmSplit *Split) {
  auto i64 = [&](int64_t v) { return B.getInt64(v); };
  Value *N = i64(Shape.N);
  // op(X)[i, k] of a matrix stored [i][k] (rowMajor) or [k][i], whose rows are ld apart.
  auto matrix = [](Value *base, Value *ld, bool rowMajor) {
    GpuGemmOperand operand;
    operand.Base = base;
    operand.AlongK = rowMajor;
    operand.At = [ld, rowMajor](llvm::IRBuilder<> &b, Value *i, Value *k) {
      Value *index =
          rowMajor ? b.CreateAdd(b.CreateMul(i, ld), k) : b.CreateAdd(b.CreateMul(k, ld), i);
      return std::pair<Value *, Value *>(index, nullptr);
    };
    return operand;
  };
  Value *lda = Shape.LdA ? i64(Shape.LdA) : Shape.TransA ? M : K;
  Value *ldb = Shape.LdB ? i64(Shape.LdB) : Shape.TransB ? K : N;
  Value *ldc = i64(Shape.LdC ? Shape.LdC : Shape.N);
  GpuGemmIndex out = [ldc](llvm::IRBuilder<> &b, Value *m, Value *n) {
    return b.CreateAdd(b.CreateMul(m, ldc), n);
  };
  emitGpuGemm(B, Gpu, Shape, matrix(A, lda, !Shape.TransA), matrix(BMatrix, ldb, Shape.TransB), C,
              out, M, K, Bias, Mask, Split);
}

GpuGemmTiling gpuGemmTiling(int64_t Columns) {
  if (Columns <= 16)
    return {256, 16};
  if (Columns <= 32)
    return {128, 32};
  return {64, 64};
}

void emitGpuGemm(llvm::IRBuilder<> &B, GpuTarget &Gpu, const GpuGemmShape &Shape,
                 const GpuGemmOperand &A, const GpuGemmOperand &BOperand, Value *C,
                 const GpuGemmIndex &Out, Value *M, Value *K, Value *Bias, Value *Mask,
                 const GpuGemmSplit *Split) {
  // 16 x 16 threads, each summing PerM consecutive rows by PerN consecutive
  // columns of the tile, which it reads from the staged slices as vectors
  // (with 4 x 4, one shared load for 4 multiply-adds, not one for 2).
  constexpr int64_t Depth = 16, Side = 16, Pad = 4;
  const auto [TileM, TileN] = gpuGemmTiling(Shape.N);
  const int64_t PerM = TileM / Side, PerN = TileN / Side;
  static_assert(Side * Side == GpuBlock, "a thread per part of the tile");
  // A staged slice is [k][m] (or [k][n]) with rows of the tile and 4
  // elements more, so that rows stay aligned for the vector loads and the
  // 16 threads that store one m's 16 k (see stage) hit 8 banks of shared
  // memory rather than 1.
  const int64_t StrideM = TileM + Pad, StrideN = TileN + Pad;
  llvm::Type *ft = Shape.Elem;
  auto i64 = [&](int64_t v) { return B.getInt64(v); };
  Value *N = i64(Shape.N);
  Value *ldc = i64(Shape.LdC ? Shape.LdC : Shape.N);
  Value *tid = B.CreateZExt(Gpu.thread(B), B.getInt64Ty());
  Value *tx = B.CreateURem(tid, i64(Side)), *ty = B.CreateUDiv(tid, i64(Side));
  Value *as = Gpu.shared(B);
  Value *bs = B.CreateInBoundsGEP(ft, as, i64(Depth * StrideM));
  Value *tilesN = i64((Shape.N + TileN - 1) / TileN);
  Value *tiles = B.CreateMul(B.CreateUDiv(B.CreateAdd(M, i64(TileM - 1)), i64(TileM)), tilesN);
  if (Split && Shape.Accumulate)
    throw std::logic_error("internal error: a split product that accumulates");
  Value *runs = Split ? Split->Count : i64(1), *runDepth = Split ? Split->Depth : K;
  Value *split = B.CreateICmpUGT(runs, i64(1));

  llvm::BasicBlock &entry = B.GetInsertBlock()->getParent()->getEntryBlock();
  llvm::IRBuilder<> allocas(&entry, entry.begin());
  std::vector<llvm::AllocaInst *> acc;
  for (int64_t k = 0; k < PerM * PerN; ++k)
    acc.push_back(allocas.CreateAlloca(ft));
  Value *zero = llvm::ConstantFP::get(ft, 0);
  auto element = [&](Value *base, Value *index) {
    return B.CreateInBoundsGEP(ft, base, index);
  };

  // Unit u is tile u mod tiles over run u / tiles of the depth.
  emitLoop(B, B.CreateZExt(Gpu.block(B), B.getInt64Ty()), B.CreateMul(tiles, runs),
       B.CreateZExt(Gpu.blocks(B), B.getInt64Ty()), [&](Value *u) {
         Value *t = B.CreateURem(u, tiles), *run = B.CreateUDiv(u, tiles);
         Value *m0 = B.CreateMul(B.CreateUDiv(t, tilesN), i64(TileM));
         Value *n0 = B.CreateMul(B.CreateURem(t, tilesN), i64(TileN));
         Value *kBegin = B.CreateMul(run, runDepth);
         Value *kEnd = B.CreateBinaryIntrinsic(llvm::Intrinsic::umin, K,
                                               B.CreateAdd(kBegin, runDepth));
         Value *out = C;
         if (Split)
           out = B.CreateSelect(split,
                                element(Split->Partials, B.CreateMul(run, B.CreateMul(M, ldc))),
                                C);
         for (llvm::AllocaInst *a : acc)
           B.CreateStore(zero, a);
         emitLoop(B, kBegin, kEnd, i64(Depth), [&](Value *k0) {
           // Stage op(A)[m0 .. +TileM, k0 .. +16] as [k][m] and op(B)[k0 ..
           // +16, n0 .. +TileN] as [k][n]; zeros outside the operands.
           // Consecutive threads load consecutive elements of the operand as
           // it is stored, so that a warp's loads coalesce: along k (AlongK)
           // or along the rows.
           auto stage = [&](const GpuGemmOperand &from, int64_t tile, Value *first, Value *limit,
                            Value *to, int64_t stride) {
             for (int64_t q = 0; q < tile * Depth / GpuBlock; ++q) {
               Value *e = B.CreateAdd(tid, i64(q * GpuBlock));
               bool alongK = from.AlongK;
               Value *slice = alongK ? B.CreateURem(e, i64(Depth)) : B.CreateUDiv(e, i64(tile));
               Value *inner = alongK ? B.CreateUDiv(e, i64(Depth)) : B.CreateURem(e, i64(tile));
               Value *k = B.CreateAdd(k0, slice), *row = B.CreateAdd(first, inner);
               Value *valid = B.CreateAnd(B.CreateICmpULT(row, limit), B.CreateICmpULT(k, kEnd));
               auto [index, inside] = from.At(B, row, k);
               if (inside)
                 valid = B.CreateAnd(valid, inside);
               Value *v =
                   B.CreateLoad(ft, element(from.Base, B.CreateSelect(valid, index, i64(0))));
               B.CreateStore(B.CreateSelect(valid, v, zero),
                             element(to, B.CreateAdd(B.CreateMul(slice, i64(stride)), inner)));
             }
           };
           stage(A, TileM, m0, M, as, StrideM);
           stage(BOperand, TileN, n0, N, bs, StrideN);
           Gpu.barrier(B);
           // This thread's PerM (or PerN) elements of row kk of a slice, as
           // vectors of at most 4 (16 bytes: the widest shared load).
           auto part = [&](Value *slice, int64_t stride, Value *at, int64_t per, int64_t kk) {
             Value *first = B.CreateAdd(i64(kk * stride), B.CreateMul(at, i64(per)));
             int64_t width = std::min<int64_t>(per, 4);
             auto *vt = llvm::FixedVectorType::get(ft, unsigned(width));
             llvm::Align align(std::min<int64_t>(width * ft->getPrimitiveSizeInBits() / 8, 16));
             std::vector<Value *> values;
             for (int64_t v = 0; v < per; v += width) {
               Value *vector =
                   B.CreateAlignedLoad(vt, element(slice, B.CreateAdd(first, i64(v))), align);
               for (int64_t e = 0; e < width; ++e)
                 values.push_back(B.CreateExtractElement(vector, uint64_t(e)));
             }
             return values;
           };
           // Unrolled: the slice's rows at constant offsets, and no loop
           // counter among the multiply-adds.
           for (int64_t kk = 0; kk < Depth; ++kk) {
             std::vector<Value *> a = part(as, StrideM, ty, PerM, kk);
             std::vector<Value *> b = part(bs, StrideN, tx, PerN, kk);
             for (int64_t r = 0; r < PerM; ++r)
               for (int64_t c = 0; c < PerN; ++c) {
                 llvm::AllocaInst *sum = acc[r * PerN + c];
                 B.CreateStore(B.CreateIntrinsic(llvm::Intrinsic::fmuladd, {ft},
                                                 {a[r], b[c], B.CreateLoad(ft, sum)}),
                               sum);
               }
           }
           Gpu.barrier(B);
         });
         for (int64_t r = 0; r < PerM; ++r)
           for (int64_t c = 0; c < PerN; ++c) {
             Value *m = B.CreateAdd(m0, B.CreateAdd(B.CreateMul(ty, i64(PerM)), i64(r)));
             Value *n = B.CreateAdd(n0, B.CreateAdd(B.CreateMul(tx, i64(PerN)), i64(c)));
             llvm::Function *f = B.GetInsertBlock()->getParent();
             auto *store = llvm::BasicBlock::Create(B.getContext(), "gemm.store", f);
             auto *done = llvm::BasicBlock::Create(B.getContext(), "gemm.stored", f);
             B.CreateCondBr(B.CreateAnd(B.CreateICmpULT(m, M), B.CreateICmpULT(n, N)), store,
                            done);
             B.SetInsertPoint(store);
             Value *index = Out(B, m, n);
             Value *v = B.CreateLoad(ft, acc[r * PerN + c]);
             if (Shape.Accumulate)
               v = B.CreateFAdd(B.CreateLoad(ft, element(out, index)), v);
             // The epilogue, but for a run's partial product.
             Value *e = v;
             if (Shape.Bias)
               e = B.CreateFAdd(e, B.CreateLoad(ft, element(Bias, n)));
             if (Shape.Relu)
               e = reluOf(B, e);
             if (Shape.Mask)
               e = timesIndicator(B, e, B.CreateFCmpOGT(B.CreateLoad(ft, element(Mask, index)), zero));
             B.CreateStore(Split ? B.CreateSelect(split, v, e) : e, element(out, index));
             B.CreateBr(done);
             B.SetInsertPoint(done);
           }
       });
}

/// CUDA's libdevice: the device's math library as LLVM bitcode, where the
/// CUDA toolkit is installed (CUDA_HOME, or /usr/local/cuda).
static std::string findLibdevice() {
  std::vector<std::string> roots;
  if (const char *home = std::getenv("CUDA_HOME"))
    roots.push_back(home);
  roots.push_back("/usr/local/cuda");
  for (const std::string &root : roots) {
    std::string path = root + "/nvvm/libdevice/libdevice.10.bc";
    if (llvm::sys::fs::exists(path))
      return path;
  }
  return "";
}

bool legalizeDeviceMath(llvm::Module &Kernels, std::string &Error) {
  std::vector<llvm::IntrinsicInst *> calls;
  for (llvm::Function &f : Kernels)
    for (llvm::Instruction &inst : llvm::instructions(f))
      if (auto *call = llvm::dyn_cast<llvm::IntrinsicInst>(&inst))
        switch (call->getIntrinsicID()) {
        case llvm::Intrinsic::pow:
        case llvm::Intrinsic::exp:
        case llvm::Intrinsic::log:
        case llvm::Intrinsic::tanh:
          calls.push_back(call);
          break;
        default:
          break;
        }
  bool needsLibdevice = false;
  for (llvm::IntrinsicInst *call : calls) {
    llvm::IRBuilder<> b(call);
    Value *result;
    if (call->getType()->isFloatTy()) {
      // f32's exp, log and tanh are already code (VectorMath.cpp); pow is
      // exp(y log x), for the positive bases of optimizers' bias corrections.
      LLVMScalarBuilder math(b, b.getFloatTy());
      Value *logX = LLVMScalarBuilder::v(math.log(call->getArgOperand(0)));
      result = LLVMScalarBuilder::v(math.exp(b.CreateFMul(call->getArgOperand(1), logX)));
    } else {
      // f64 (gradient checks): libdevice's functions.
      std::string name =
          "__nv_" + std::string(llvm::Intrinsic::getBaseName(call->getIntrinsicID()).substr(5));
      std::vector<llvm::Type *> params(call->arg_size(), call->getType());
      llvm::FunctionCallee callee = Kernels.getOrInsertFunction(
          name, llvm::FunctionType::get(call->getType(), params, false));
      result = b.CreateCall(callee, std::vector<Value *>(call->arg_begin(), call->arg_end()));
      needsLibdevice = true;
    }
    call->replaceAllUsesWith(result);
    call->eraseFromParent();
  }
  if (!needsLibdevice)
    return true;
  std::string path = findLibdevice();
  if (path.empty()) {
    Error = "f64 on the GPU needs CUDA's libdevice (nvvm/libdevice/libdevice.10.bc under "
            "CUDA_HOME or /usr/local/cuda), which was not found";
    return false;
  }
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> libdevice =
      llvm::parseIRFile(path, diagnostic, Kernels.getContext());
  if (!libdevice) {
    Error = "cannot read " + path + ": " + diagnostic.getMessage().str();
    return false;
  }
  libdevice->setTargetTriple(Kernels.getTargetTriple());
  libdevice->setDataLayout(Kernels.getDataLayout());
  // Only what the kernels call, made internal so that the rest goes.
  if (llvm::Linker::linkModules(Kernels, std::move(libdevice),
                                llvm::Linker::Flags::LinkOnlyNeeded,
                                [](llvm::Module &m, const llvm::StringSet<> &) {
                                  llvm::internalizeModule(m, [](const llvm::GlobalValue &g) {
                                    return !g.getName().starts_with("__nv_");
                                  });
                                })) {
    Error = "cannot link " + path;
    return false;
  }
  return true;
}

bool isKnownGpuArch(const std::string &Arch) {
  for (const char *known : {"sm_80", "sm_86", "sm_87", "sm_89", "sm_90"})
    if (Arch == known)
      return true;
  return false;
}

std::string emitPtx(llvm::Module &Kernels, const std::string &Arch, unsigned OptLevel,
                    std::string &Error) {
  std::unique_ptr<llvm::TargetMachine> machine = nvptxMachine(Arch, OptLevel, Error);
  if (!machine)
    return "";
  optimizeModule(Kernels, *machine, OptLevel);
  llvm::SmallString<0> text;
  llvm::raw_svector_ostream out(text);
  llvm::legacy::PassManager passes;
  if (machine->addPassesToEmitFile(passes, out, nullptr, llvm::CodeGenFileType::AssemblyFile)) {
    Error = "the NVPTX back end cannot emit PTX";
    return "";
  }
  passes.run(Kernels);
  return std::string(text);
}

} // namespace nnc
