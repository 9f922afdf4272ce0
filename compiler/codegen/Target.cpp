//===- Target.cpp - LLVM optimization and machine code emission -----------===//

#include "codegen/Codegen.h"

#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/Bitcode/BitcodeWriter.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Transforms/Utils/SplitModule.h"

#include <algorithm>
#include <mutex>
#include <thread>

namespace nnc {

std::unique_ptr<llvm::TargetMachine>
createTargetMachine(const TargetOptions &options, std::string &error) {
  static std::once_flag initialized; // emitObjects creates machines on several threads
  std::call_once(initialized, [] {
    LLVMInitializeX86TargetInfo();
    LLVMInitializeX86Target();
    LLVMInitializeX86TargetMC();
    LLVMInitializeX86AsmPrinter();
  });

  std::string triple = llvm::sys::getDefaultTargetTriple();
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return nullptr;
  std::string cpu = options.Cpu;
  std::string features;
  if (cpu == "native") {
    cpu = llvm::sys::getHostCPUName().str();
    llvm::StringMap<bool> hostFeatures = llvm::sys::getHostCPUFeatures();
    for (const auto &feature : hostFeatures)
      features += (features.empty() ? "" : ",") +
                  std::string(feature.second ? "+" : "-") + feature.first().str();
  } else {
    std::unique_ptr<llvm::MCSubtargetInfo> info(
        target->createMCSubtargetInfo(triple, cpu, ""));
    if (!info || !info->isCPUStringValid(cpu)) {
      error = "unknown CPU '" + cpu + "' for " + triple;
      return nullptr;
    }
  }
  llvm::TargetOptions targetOptions;
  auto level = options.OptLevel == 0   ? llvm::CodeGenOptLevel::None
               : options.OptLevel == 1 ? llvm::CodeGenOptLevel::Less
               : options.OptLevel == 2 ? llvm::CodeGenOptLevel::Default
                                       : llvm::CodeGenOptLevel::Aggressive;
  return std::unique_ptr<llvm::TargetMachine>(target->createTargetMachine(
      triple, cpu, features, targetOptions, llvm::Reloc::PIC_, std::nullopt,
      level));
}

unsigned vectorBits(const llvm::TargetMachine &machine) {
  std::unique_ptr<llvm::MCSubtargetInfo> info(
      machine.getTarget().createMCSubtargetInfo(
          machine.getTargetTriple().str(), machine.getTargetCPU(),
          machine.getTargetFeatureString()));
  if (info->checkFeatures("+avx512f"))
    return 512;
  if (info->checkFeatures("+avx"))
    return 256;
  return 128;
}

void optimizeModule(llvm::Module &module, llvm::TargetMachine &machine,
                    unsigned optLevel) {
  module.setTargetTriple(machine.getTargetTriple().str());
  module.setDataLayout(machine.createDataLayout());
  for (llvm::Function &f : module) {
    if (f.isDeclaration())
      continue;
    f.addFnAttr("target-cpu", machine.getTargetCPU());
    f.addFnAttr("target-features", machine.getTargetFeatureString());
  }
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(mam);
  builder.registerCGSCCAnalyses(cgam);
  builder.registerFunctionAnalyses(fam);
  builder.registerLoopAnalyses(lam);
  builder.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::OptimizationLevel level = optLevel == 0   ? llvm::OptimizationLevel::O0
                                  : optLevel == 1 ? llvm::OptimizationLevel::O1
                                  : optLevel == 2 ? llvm::OptimizationLevel::O2
                                                  : llvm::OptimizationLevel::O3;
  llvm::ModulePassManager passes =
      level == llvm::OptimizationLevel::O0
          ? builder.buildO0DefaultPipeline(level)
          : builder.buildPerModuleDefaultPipeline(level);
  passes.run(module, mam);
}

std::string emitFile(llvm::Module &module, llvm::TargetMachine &machine,
                     FileKind kind, const std::string &path) {
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return "cannot write '" + path + "': " + ec.message();
  llvm::legacy::PassManager passes;
  auto fileType = kind == FileKind::Object ? llvm::CodeGenFileType::ObjectFile
                                           : llvm::CodeGenFileType::AssemblyFile;
  if (machine.addPassesToEmitFile(passes, out, nullptr, fileType))
    return "the target cannot emit this kind of file";
  passes.run(module);
  out.flush();
  if (out.has_error())
    return "cannot write '" + path + "'";
  return "";
}

std::string emitObjects(llvm::Module &module, const TargetOptions &options,
                        const std::vector<std::string> &paths) {
  // The functions are dealt out largest first, in turn (round robin in
  // this order), so that the parts take about as long; each part goes to a
  // context of its own, as bitcode: a context is not safe to use from two
  // threads.
  std::vector<std::pair<size_t, llvm::Function *>> bySize;
  for (llvm::Function &f : module)
    if (!f.isDeclaration())
      bySize.push_back({f.getInstructionCount(), &f});
  std::stable_sort(bySize.begin(), bySize.end(),
                   [](const auto &a, const auto &b) { return a.first > b.first; });
  for (auto &[size, f] : bySize) {
    f->removeFromParent();
    module.getFunctionList().push_back(f);
  }
  std::vector<llvm::SmallString<0>> parts;
  llvm::SplitModule(module, unsigned(paths.size()), [&](std::unique_ptr<llvm::Module> part) {
    llvm::raw_svector_ostream out(parts.emplace_back());
    llvm::WriteBitcodeToFile(*part, out);
  }, /*PreserveLocals=*/false, /*RoundRobin=*/true);
  std::vector<std::string> errors(parts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < parts.size(); ++i)
    threads.emplace_back([&, i] {
      llvm::LLVMContext context;
      llvm::Expected<std::unique_ptr<llvm::Module>> part = llvm::parseBitcodeFile(
          llvm::MemoryBufferRef(parts[i].str(), "part"), context);
      if (!part) {
        errors[i] = "internal error: " + llvm::toString(part.takeError());
        return;
      }
      std::unique_ptr<llvm::TargetMachine> machine = createTargetMachine(options, errors[i]);
      if (machine)
        errors[i] = emitFile(**part, *machine, FileKind::Object, paths[i]);
    });
  for (std::thread &thread : threads)
    thread.join();
  for (const std::string &error : errors)
    if (!error.empty())
      return error;
  return "";
}

} // namespace nnc
