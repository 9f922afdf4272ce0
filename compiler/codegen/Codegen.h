//===- Codegen.h - Tensor IR to LLVM IR, and LLVM IR to code ----*- C++ -*-===//
#ifndef NNC_CODEGEN_CODEGEN_H
#define NNC_CODEGEN_CODEGEN_H

#include "autodiff/Autodiff.h"
#include "sema/Model.h"

#include <memory>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
class TargetMachine;
} // namespace llvm

namespace nnc {

/// Scratch memory a generated function needs: Fixed + PerRow * batch bytes.
struct WorkspaceSize {
  int64_t Fixed = 0;
  int64_t PerRow = 0;
};

/// GPU code beside the CPU code (runtime.h, "GPU trainers").
struct GpuOptions {
  enum class Kind {
    None, ///< CPU code only
    Cuda, ///< kernels as PTX, for the CUDA driver
    Sim,  ///< kernels for the host, run by the runtime's simulator
  } Target = Kind::None;
  std::string Arch = "sm_80"; ///< PTX target architecture
  unsigned OptLevel = 2;      ///< for the kernels
  /// Kernels per graph: one per node (or group of nodes); the whole graph
  /// as one kernel on one block, which saves the launches that dominate a
  /// small model's step; or (Rows) the graph's work on each row as one
  /// kernel whose blocks take a run of rows each, then the sums over the
  /// rows and what follows them (a graph of other ops gets a kernel per
  /// node). Auto: for models of at most WholeGraphParams parameters, the
  /// whole graph for calls of at most GraphLimit rows times parameters,
  /// and Rows above that (or Node, for a graph that cannot run over rows);
  /// for bigger models, a kernel per node.
  enum class Fusion { Auto, Node, Graph, Rows } Fuse = Fusion::Auto;
  static constexpr int64_t WholeGraphParams = 16384;
  /// -1: the default limit, by the schedule for bigger calls. Against a
  /// kernel per node, NodeGraphLimit: below it, one block's work costs less
  /// than the launches of tens of kernels. Against row blocks (whose one
  /// block's work on the same rows is the same), RowsGraphLimit, about
  /// where one block's work costs the two launches more, and at least the
  /// rows that make one row block. Estimates until bench/gpu.py's sweep
  /// has measured them.
  int64_t GraphLimit = -1;
  static constexpr int64_t NodeGraphLimit = int64_t(1) << 24;
  static constexpr int64_t RowsGraphLimit = int64_t(1) << 18;
  /// Rows: the most blocks of the kernel over blocks of rows, each taking
  /// every RowBlocks-th chunk of the batch's rows.
  int64_t RowBlocks = 512;
};

/// What lowering made for the GPU, for --emit to show.
struct GpuOutput {
  std::string Ptx;      ///< Cuda: the PTX text embedded in the module
  std::string KernelIr; ///< Cuda: the kernels' LLVM IR before optimization
};

/// Lowers the four graphs of `program` to LLVM functions with the C ABI of
/// runtime.h, plus the manifest global, in a new module. Kernels are
/// blocked for vector registers of `vectorBits` bits. With `gpu`, the
/// graphs are also lowered as GPU kernels with their launch schedules
/// (filling `gpuOutput` if given); null with `error` set when that fails.
/// With `skipDeadUnits`, the CPU products of a relu layer's gradient skip
/// the units that no row of the batch activates (the same results).
std::unique_ptr<llvm::Module> lowerToLLVM(const Model &model,
                                          const Program &program,
                                          llvm::LLVMContext &context,
                                          unsigned vectorBits, bool skipDeadUnits,
                                          const GpuOptions &gpu, std::string &error,
                                          GpuOutput *gpuOutput = nullptr);

/// The manifest text (docs/abi.md) for a model and its workspace needs.
std::string buildManifest(const Model &model, const Program &program,
                          WorkspaceSize workspace);

struct TargetOptions {
  std::string Cpu = "native"; ///< "native": the host CPU and its features.
  unsigned OptLevel = 2;      ///< 0 to 3
};

/// A TargetMachine for the host's triple and the chosen CPU; an error
/// message in `error` and null when the CPU is unknown.
std::unique_ptr<llvm::TargetMachine>
createTargetMachine(const TargetOptions &options, std::string &error);

/// The width in bits of the machine's widest vector registers that code
/// may use: 512 with AVX-512, 256 with AVX, else 128.
unsigned vectorBits(const llvm::TargetMachine &machine);

/// Runs LLVM's standard optimization pipeline for the level.
void optimizeModule(llvm::Module &module, llvm::TargetMachine &machine,
                    unsigned optLevel);

enum class FileKind { Assembly, Object };
/// Emits the module as assembly or an object file; returns "" or an error.
std::string emitFile(llvm::Module &module, llvm::TargetMachine &machine,
                     FileKind kind, const std::string &path);
/// Emits the (optimized) module as one object file per path, its
/// functions split among them and compiled on as many threads, each with a
/// target machine made from \p options; returns "" or an error. The module
/// is left split.
std::string emitObjects(llvm::Module &module, const TargetOptions &options,
                        const std::vector<std::string> &paths);

} // namespace nnc

#endif // NNC_CODEGEN_CODEGEN_H
