//===- nnc.cpp - The nnc compiler driver ----------------------------------===//
//
// nnc spec.nn -o trainer: parse, check, differentiate, optimize, lower to
// LLVM, emit an object for the host and link it with the runtime library.
// --emit stops after any stage and prints it, so that each can be tested.
//
//===----------------------------------------------------------------------===//

#include "autodiff/Autodiff.h"
#include "codegen/Codegen.h"
#include "codegen/Gemm.h"
#include "codegen/Gpu.h"
#include "codegen/VectorMath.h"
#include "frontend/Parser.h"
#include "passes/Passes.h"
#include "sema/Sema.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <boost/program_options.hpp>

#include <pthread.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace po = boost::program_options;

namespace nnc {
namespace {

enum class Emit { Ast, Ir, TrainIr, Llvm, GpuLlvm, Ptx, Asm, Obj, Exe };

struct DriverOptions {
  std::string Input;
  std::string Output;
  Emit EmitKind = Emit::Exe;
  TargetOptions Target;
  GpuOptions Gpu;
  ir::DType FloatType = ir::DType::F32;
  std::string RuntimeLib;
  std::string Argv0;
  std::string GemmKernel; ///< --gemm-kernel's value.
  std::string MathKernel; ///< --math-kernel's value.
  bool SkipDeadUnits = true; ///< --skip-dead-units's value.
  /// Whether a kernel for bench/ is asked for rather than a spec compiled.
  bool kernel() const { return !GemmKernel.empty() || !MathKernel.empty(); }
};

int fail(const std::string &message) {
  std::cerr << "nnc: error: " << message << '\n';
  return 1;
}

/// Parses the command line; returns an exit status, or -1 to go on.
int parseCommandLine(int argc, char **argv, DriverOptions &opts) {
  po::options_description visible(
      "Usage: nnc SPEC.nn [-o OUTPUT] [options]\n\n"
      "Compiles a model spec into a standalone trainer.\n\nOptions");
  std::string emit = "exe", dtype = "f32", target = "cpu", fuse = "auto", skipDead = "on";
  unsigned optLevel = 2;
  visible.add_options()
      ("help,h", "print this help and exit")
      ("output,o", po::value(&opts.Output),
       "output file (default: the spec's name, in the current folder)")
      ("emit", po::value(&emit)->default_value("exe"),
       "stage to stop after: ast, ir, train-ir, llvm, gpu-llvm (the GPU kernels' "
       "LLVM IR, before optimization), ptx, asm, obj or exe")
      ("opt-level,O", po::value(&optLevel)->default_value(2),
       "LLVM optimization level, 0 to 3 (-O0 ... -O3)")
      ("dtype", po::value(&dtype)->default_value("f32"),
       "floating-point type of the whole model: f32, or f64 for gradient checks")
      ("target", po::value(&target)->default_value("cpu"),
       "cpu; cuda: also GPU kernels, as PTX run through the CUDA driver "
       "(the trainer falls back to the CPU where there is no GPU); cuda-sim: "
       "also the GPU kernels compiled for the host, run by a simulator (tests)")
      ("gpu-arch", po::value(&opts.Gpu.Arch)->default_value("sm_80"),
       "GPU architecture of the PTX: sm_80, sm_86, sm_87, sm_89 or sm_90")
      ("gpu-fuse", po::value(&fuse)->default_value("auto"),
       "GPU kernels: node (one per node, or fused group of nodes), graph (the "
       "whole step as one kernel on one block: no launches between layers), "
       "rows (each block runs the whole step on chunks of the batch's rows, "
       "then a kernel adds the blocks' gradients and one updates the parameters; "
       "for graphs of row-wise ops, dense layers and losses), or auto (for "
       "models of at most 16384 parameters, graph while the batch's rows times "
       "the parameters are at most --gpu-graph-limit, else rows where it "
       "applies; node for bigger models)")
      ("gpu-graph-limit", po::value(&opts.Gpu.GraphLimit),
       "with --gpu-fuse=auto, the most rows times parameters that a call runs "
       "as one kernel on one block (default: 2^18 where bigger calls run over "
       "blocks of rows, and at least 127 rows, one row chunk's; 2^24 where they "
       "run a kernel per node)")
      ("gpu-row-blocks", po::value(&opts.Gpu.RowBlocks)->default_value(opts.Gpu.RowBlocks),
       "over blocks of rows, the most blocks: each takes every N-th chunk of 64 "
       "to 127 of the batch's rows (more blocks fill the GPU; fewer keep fewer "
       "copies of the gradients)")
      ("cpu", po::value(&opts.Target.Cpu)->default_value("native"),
       "target CPU (LLVM name, e.g. x86-64-v3, znver4); native: this host")
      ("skip-dead-units", po::value(&skipDead)->default_value("on"),
       "on: the CPU products of a relu layer's gradient skip the units that no row "
       "of the batch activates, whose gradient is zero (with AVX-512; the results "
       "are the same); off: they compute them, for comparisons")
      ("runtime-lib", po::value(&opts.RuntimeLib),
       "the runtime library to link (default: lib/libnnc_runtime.a beside nnc)")
      ("gemm-kernel", po::value(&opts.GemmKernel),
       "N[,ta][,tb][,bias][,relu][,mask][,sums][,dot][,kK][,mM]: instead of a spec, "
       "emit (--emit=llvm, asm or obj) the function nnc_gemm(A, B, C, M, K, bias, mask, "
       "sums) computing C[M,N] = op(A) op(B) (+ bias) (then relu) (times mask > 0) "
       "(and C's column sums), for bench/gemm; dot (with tb, without ta): by dot products along K; kK, mM: with "
       "the depth K or the row count M compiled in, as the trainers have them when "
       "static (K at most 64; the argument is then ignored)")
      ("math-kernel", po::value(&opts.MathKernel),
       "OP: instead of a spec, emit (--emit=llvm, asm or obj) the function "
       "nnc_math(X, Y, N) computing Y[i] = OP(X[i]) in f32, for bench/math "
       "(OP: exp, log, tanh, sigmoid, ...); quotient_step: the function "
       "nnc_quotient_step(P, S, A, D, N) computing P[i] -= S * (A[i] / D[i]), for "
       "bench/math/step_bench");
  po::options_description hidden;
  hidden.add_options()("input", po::value(&opts.Input));
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add("input", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv)
                  .options(all)
                  .positional(positional)
                  .run(),
              vm);
    po::notify(vm);
  } catch (const po::error &e) {
    return fail(std::string(e.what()) + " (see nnc --help)");
  }
  if (vm.count("help")) {
    std::cout << visible << '\n';
    return 0;
  }
  if (opts.Input.empty() && !opts.kernel())
    return fail("no spec file given (see nnc --help)");
  if (!opts.GemmKernel.empty() && !opts.MathKernel.empty())
    return fail("--gemm-kernel and --math-kernel exclude each other");
  static const std::pair<const char *, Emit> emits[] = {
      {"ast", Emit::Ast},   {"ir", Emit::Ir},   {"train-ir", Emit::TrainIr},
      {"llvm", Emit::Llvm}, {"gpu-llvm", Emit::GpuLlvm}, {"ptx", Emit::Ptx},
      {"asm", Emit::Asm},   {"obj", Emit::Obj}, {"exe", Emit::Exe}};
  bool known = false;
  for (const auto &[name, kind] : emits)
    if (emit == name) {
      opts.EmitKind = kind;
      known = true;
    }
  if (!known)
    return fail("unknown --emit '" + emit +
                "'; expected ast, ir, train-ir, llvm, gpu-llvm, ptx, asm, obj or exe");
  if (optLevel > 3)
    return fail("optimization level must be 0 to 3, got " + std::to_string(optLevel));
  opts.Target.OptLevel = optLevel;
  opts.Gpu.OptLevel = optLevel;
  if (target == "cuda")
    opts.Gpu.Target = GpuOptions::Kind::Cuda;
  else if (target == "cuda-sim")
    opts.Gpu.Target = GpuOptions::Kind::Sim;
  else if (target != "cpu")
    return fail("unknown --target '" + target + "'; expected cpu, cuda or cuda-sim");
  if (fuse == "node")
    opts.Gpu.Fuse = GpuOptions::Fusion::Node;
  else if (fuse == "graph")
    opts.Gpu.Fuse = GpuOptions::Fusion::Graph;
  else if (fuse == "rows")
    opts.Gpu.Fuse = GpuOptions::Fusion::Rows;
  else if (fuse != "auto")
    return fail("unknown --gpu-fuse '" + fuse + "'; expected auto, node, graph or rows");
  if (opts.Gpu.RowBlocks < 1 || opts.Gpu.RowBlocks > 65535)
    return fail("--gpu-row-blocks must be between 1 and 65535");
  if (vm.count("gpu-graph-limit") && opts.Gpu.GraphLimit < 0)
    return fail("--gpu-graph-limit must be at least 0");
  if (skipDead != "on" && skipDead != "off")
    return fail("unknown --skip-dead-units '" + skipDead + "'; expected on or off");
  opts.SkipDeadUnits = skipDead == "on";
  if (!isKnownGpuArch(opts.Gpu.Arch))
    return fail("unknown --gpu-arch '" + opts.Gpu.Arch +
                "'; expected sm_80, sm_86, sm_87, sm_89 or sm_90");
  if ((opts.EmitKind == Emit::Ptx || opts.EmitKind == Emit::GpuLlvm) &&
      opts.Gpu.Target != GpuOptions::Kind::Cuda)
    return fail("--emit=" + emit + " needs --target=cuda");
  if (dtype == "f64")
    opts.FloatType = ir::DType::F64;
  else if (dtype != "f32")
    return fail("unknown --dtype '" + dtype + "'; expected f32 or f64");
  opts.Argv0 = argv[0];
  return -1;
}

std::string defaultOutput(const DriverOptions &opts, const char *extension) {
  std::filesystem::path stem = std::filesystem::path(opts.Input).stem();
  return stem.string() + extension;
}

std::string findRuntimeLib(const DriverOptions &opts) {
  if (!opts.RuntimeLib.empty())
    return opts.RuntimeLib;
  if (const char *env = std::getenv("NNC_RUNTIME_LIB"))
    return env;
  static int anchor;
  std::string exe = llvm::sys::fs::getMainExecutable(opts.Argv0.c_str(), &anchor);
  llvm::SmallString<256> path(llvm::sys::path::parent_path(exe));
  llvm::sys::path::append(path, "..", "lib", "libnnc_runtime.a");
  return std::string(path);
}

/// Links `objects` with the runtime into the executable `output`.
int link(const DriverOptions &opts, const std::vector<std::string> &objects,
         const std::string &output) {
  std::string runtime = findRuntimeLib(opts);
  if (!llvm::sys::fs::exists(runtime))
    return fail("runtime library '" + runtime + "' not found; pass --runtime-lib");
  auto cxx = llvm::sys::findProgramByName("c++");
  if (!cxx)
    return fail("no C++ compiler driver 'c++' on PATH to link with");
  // zlib (the runtime's gzip reader) is linked statically, so that the
  // trainer needs nothing beyond libc and libstdc++.
  std::vector<llvm::StringRef> args = {*cxx};
  args.insert(args.end(), objects.begin(), objects.end());
  args.insert(args.end(), {runtime, "-o", output, "-Wl,-Bstatic", "-lz", "-Wl,-Bdynamic",
                           "-lm", "-pthread"});
  // A runtime built with sanitizers (scripts/sanitize.sh) needs their
  // libraries in the trainer too; CMake's NNC_TRAINER_LINK_FLAGS says which.
  llvm::SmallVector<llvm::StringRef, 4> extra;
  llvm::StringRef(NNC_TRAINER_LINK_FLAGS)
      .split(extra, ' ', /*MaxSplit=*/-1, /*KeepEmpty=*/false);
  args.insert(args.end(), extra.begin(), extra.end());
  std::string message;
  int status = llvm::sys::ExecuteAndWait(*cxx, args, std::nullopt, {}, 0, 0,
                                         &message);
  if (status != 0)
    return fail("linking '" + output + "' failed" +
                (message.empty() ? "" : ": " + message));
  return 0;
}

/// Writes text to -o's file, or to standard output.
int writeText(const DriverOptions &opts, const std::string &text) {
  if (opts.Output.empty() || opts.Output == "-") {
    std::cout << text;
    return 0;
  }
  std::error_code ec;
  llvm::raw_fd_ostream out(opts.Output, ec);
  if (ec)
    return fail("cannot write '" + opts.Output + "': " + ec.message());
  out << text;
  return 0;
}

/// Optimizes the module and writes what --emit asks for: LLVM IR,
/// assembly, an object, or the object linked into a trainer.
int writeOutput(const DriverOptions &opts, llvm::Module &module,
                llvm::TargetMachine &machine) {
  optimizeModule(module, machine, opts.Target.OptLevel);
  std::string error;

  if (opts.EmitKind == Emit::Llvm) {
    if (opts.Output.empty() || opts.Output == "-") {
      module.print(llvm::outs(), nullptr);
      return 0;
    }
    std::error_code ec;
    llvm::raw_fd_ostream out(opts.Output, ec);
    if (ec)
      return fail("cannot write '" + opts.Output + "': " + ec.message());
    module.print(out, nullptr);
    return 0;
  }
  if (opts.EmitKind == Emit::Asm) {
    std::string path = opts.Output.empty() ? "-" : opts.Output;
    error = emitFile(module, machine, FileKind::Assembly, path);
    return error.empty() ? 0 : fail(error);
  }
  if (opts.EmitKind == Emit::Obj) {
    std::string path = opts.Output.empty() ? defaultOutput(opts, ".o") : opts.Output;
    error = emitFile(module, machine, FileKind::Object, path);
    return error.empty() ? 0 : fail(error);
  }

  // A trainer's code is compiled on every core (up to 4), in parts that
  // the linker joins: machine code generation is most of nnc's time.
  std::string output = opts.Output.empty() ? defaultOutput(opts, "") : opts.Output;
  unsigned cores = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
  std::vector<std::string> objects;
  for (unsigned i = 0; i < cores; ++i) {
    llvm::SmallString<128> object;
    if (llvm::sys::fs::createTemporaryFile("nnc", "o", object))
      error = "cannot create a temporary object file";
    else
      objects.push_back(std::string(object));
  }
  if (error.empty())
    error = objects.size() == 1
                ? emitFile(module, machine, FileKind::Object, objects[0])
                : emitObjects(module, opts.Target, objects);
  int status = error.empty() ? link(opts, objects, output) : fail(error);
  for (const std::string &object : objects)
    llvm::sys::fs::remove(object);
  return status;
}

int compile(const DriverOptions &opts) {
  std::ifstream in(opts.Input, std::ios::binary);
  if (!in)
    return fail("cannot read '" + opts.Input + "': " + std::strerror(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  SourceFile file(opts.Input, buffer.str());
  DiagnosticEngine diags(file, std::cerr);

  std::optional<ast::Spec> spec = parseSpec(file, diags);
  if (!spec)
    return 1;
  if (opts.EmitKind == Emit::Ast) {
    ast::print(*spec, std::cout);
    return 0;
  }
  SemaOptions semaOptions;
  semaOptions.FloatType = opts.FloatType;
  semaOptions.SpecDir = std::filesystem::path(opts.Input).parent_path().string();
  std::unique_ptr<Model> model = analyze(*spec, semaOptions, diags);
  if (!model)
    return 1;

  Program program = buildProgram(*model);
  for (ir::Graph *graph : program.graphs())
    runPasses(*graph);
  if (opts.Gpu.Target == GpuOptions::Kind::None) {
    useBatchMinorLayout(*program.TrainStep);
    useBatchMinorLayout(*program.LossGrad);
  }
  if (opts.EmitKind == Emit::Ir || opts.EmitKind == Emit::TrainIr) {
    (opts.EmitKind == Emit::Ir ? program.Eval : program.TrainStep)->print(std::cout);
    return 0;
  }

  std::string error;
  std::unique_ptr<llvm::TargetMachine> machine =
      createTargetMachine(opts.Target, error);
  if (!machine)
    return fail(error);
  llvm::LLVMContext context;
  GpuOutput gpu;
  std::unique_ptr<llvm::Module> module =
      lowerToLLVM(*model, program, context, vectorBits(*machine), opts.SkipDeadUnits, opts.Gpu,
                  error, &gpu);
  if (!module)
    return fail(error);
  if (opts.EmitKind == Emit::Ptx || opts.EmitKind == Emit::GpuLlvm)
    return writeText(opts, opts.EmitKind == Emit::Ptx ? gpu.Ptx : gpu.KernelIr);
  return writeOutput(opts, *module, *machine);
}

/// Writes a module of one kernel (--gemm-kernel, --math-kernel), built by
/// \p build for the target machine; \p flag names the option in messages.
int compileKernel(const DriverOptions &opts, const char *flag,
                  const std::function<std::string(llvm::Module &, unsigned)> &build) {
  if (opts.EmitKind != Emit::Llvm && opts.EmitKind != Emit::Asm &&
      opts.EmitKind != Emit::Obj)
    return fail(std::string(flag) + " needs --emit=llvm, asm or obj");
  std::string error;
  std::unique_ptr<llvm::TargetMachine> machine =
      createTargetMachine(opts.Target, error);
  if (!machine)
    return fail(error);
  llvm::LLVMContext context;
  llvm::Module module("kernel", context);
  error = build(module, vectorBits(*machine));
  if (!error.empty())
    return fail(std::string(flag) + ": " + error);
  if (llvm::verifyModule(module, &llvm::errs()))
    return fail(std::string("internal error: invalid LLVM IR for ") + flag);
  return writeOutput(opts, module, *machine);
}

/// --gemm-kernel: one matrix product as the function nnc_gemm.
int compileGemmKernel(const DriverOptions &opts) {
  GemmShape shape;
  std::stringstream fields(opts.GemmKernel);
  std::string field;
  std::getline(fields, field, ',');
  try {
    size_t used = 0;
    shape.N = std::stoll(field, &used);
    if (used != field.size() || shape.N < 1)
      throw std::invalid_argument(field);
  } catch (const std::exception &) {
    return fail("--gemm-kernel: expected N[,ta][,tb][,bias][,relu][,mask][,sums][,dot][,kK][,mM] "
                "with N >= 1, got '" + opts.GemmKernel + "'");
  }
  while (std::getline(fields, field, ',')) {
    if (field.size() > 1 && field.size() < 10 && (field[0] == 'k' || field[0] == 'm') &&
        field.find_first_not_of("0123456789", 1) == std::string::npos) {
      int64_t value = std::stoll(field.substr(1));
      if (value < 1)
        return fail("--gemm-kernel: the static " +
                    std::string(field[0] == 'k' ? "depth " : "row count ") + field +
                    " must be at least 1");
      (field[0] == 'k' ? shape.K : shape.M) = value;
      continue;
    }
    if (field != "ta" && field != "tb" && field != "bias" && field != "relu" &&
        field != "mask" && field != "sums" && field != "dot")
      return fail("--gemm-kernel: unknown flag '" + field +
                  "'; expected ta, tb, bias, relu, mask, sums, dot, kK or mM (K, M numbers)");
    (field == "ta"     ? shape.TransA
     : field == "tb"   ? shape.TransB
     : field == "bias" ? shape.Bias
     : field == "relu" ? shape.Relu
     : field == "mask" ? shape.Mask
     : field == "sums" ? shape.ColumnSums
                       : shape.DotProducts) = true;
  }
  if (shape.DotProducts && (!shape.TransB || shape.TransA))
    return fail("--gemm-kernel: dot needs tb and not ta (rows of A and B along K)");
  return compileKernel(opts, "--gemm-kernel", [&](llvm::Module &module, unsigned bits) {
    llvm::LLVMContext &context = module.getContext();
    shape.Elem = opts.FloatType == ir::DType::F64 ? llvm::Type::getDoubleTy(context)
                                                  : llvm::Type::getFloatTy(context);
    shape.VectorBits = bits;
    return emitGemmEntryPoint(module, shape);
  });
}

/// --math-kernel: one elementwise op over an array as the function nnc_math.
int compileMathKernel(const DriverOptions &opts) {
  return compileKernel(opts, "--math-kernel", [&](llvm::Module &module, unsigned) {
    if (emitMathEntryPoint(module, opts.MathKernel))
      return std::string();
    return "'" + opts.MathKernel + "' is not an elementwise op of one operand or quotient_step";
  });
}

struct Job {
  const DriverOptions *Opts;
  int Status = 0;
};

void *runJob(void *arg) {
  Job *job = static_cast<Job *>(arg);
  try {
    const DriverOptions &opts = *job->Opts;
    job->Status = !opts.GemmKernel.empty()   ? compileGemmKernel(opts)
                  : !opts.MathKernel.empty() ? compileMathKernel(opts)
                                             : compile(opts);
  } catch (const std::exception &e) {
    std::cerr << "nnc: " << e.what() << '\n';
    job->Status = 70;
  }
  return nullptr;
}

} // namespace
} // namespace nnc

int main(int argc, char **argv) {
  nnc::DriverOptions opts;
  int status = nnc::parseCommandLine(argc, argv, opts);
  if (status >= 0)
    return status;
  // The parser and the tree walks recurse once per nesting level of a spec;
  // a large stack makes the input limits, not the stack, decide what fits.
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, size_t(512) << 20);
  nnc::Job job{&opts};
  pthread_t thread;
  if (pthread_create(&thread, &attr, nnc::runJob, &job) != 0)
    nnc::runJob(&job);
  else
    pthread_join(thread, nullptr);
  return job.Status;
}
