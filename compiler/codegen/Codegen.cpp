//===- Codegen.cpp - A program to one LLVM module -------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// A program's four graphs to one LLVM module: their CPU functions, the
// probes' table, with a GPU target their kernels, launch schedules and
// tables, and the manifest (docs/abi.md).
//
//===----------------------------------------------------------------------===//

#include "codegen/GraphLowering.h"

#include "llvm/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"

#include <stdexcept>

namespace nnc {

using lowering::GpuChunkRows;
using lowering::GraphLowering;
using lowering::KernelPlan;

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
    auto *schedule =
        llvm::Function::Create(llvm::FunctionType::get(b.getVoidTy(), {b.getPtrTy()}, false),
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
        auto *sum = kernel.LaunchIf ? llvm::BasicBlock::Create(context, kernel.Condition, schedule)
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
  new llvm::GlobalVariable(module, text->getType(), true, llvm::GlobalValue::ExternalLinkage, text,
                           "nnc_cuda_ptx");
  if (output)
    output->Ptx = std::move(ptx);
  return true;
}

} // namespace

std::unique_ptr<llvm::Module> lowerToLLVM(const Model &model, const Program &program,
                                          llvm::LLVMContext &context, unsigned vectorBits,
                                          bool skipDeadUnits, const GpuOptions &gpu,
                                          std::string &error, GpuOutput *gpuOutput) {
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
  new llvm::GlobalVariable(*module, text->getType(), true, llvm::GlobalValue::ExternalLinkage, text,
                           "nnc_manifest");
  std::string errors;
  llvm::raw_string_ostream os(errors);
  if (llvm::verifyModule(*module, &os))
    throw std::logic_error("internal error: invalid LLVM IR: " + os.str());
  return module;
}

} // namespace nnc
