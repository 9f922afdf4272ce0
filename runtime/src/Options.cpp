//===- Options.cpp - The trainer's command line ---------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Options.h"
#include "Gpu.h"
#include "Numbers.h"
#include "Plot.h"
#include "ThreadPool.h"

#include <cstring>
#include <string_view>

using namespace nnc;

Options nnc::defaultOptions(const Manifest &M) {
  Options O;
  O.Epochs = M.Epochs;
  O.Lr = M.Lr;
  O.Batch = M.Batch;
  O.Seed = M.Seed;
  O.SplitSeed = M.SplitSeed;
  O.Data = M.SourcePath;
  O.Save = M.Model + ".weights";
  O.GradCheckTolerance = M.Type == DType::F64 ? 1e-6 : 1e-2;
  return O;
}

namespace {

std::string invalid(std::string_view Name, std::string_view Value,
                    const char *Expected) {
  return "invalid value '" + std::string(Value) + "' for --" +
         std::string(Name) + ": expected " + Expected;
}

/// Stores \p Value into the option \p Name; false with Err when it is bad.
bool setOption(std::string_view Name, std::string_view Value, Options &O,
               std::string &Err) {
  if (Name == "epochs") {
    if (!parseInt64(Value, O.Epochs) || O.Epochs < 0) {
      Err = invalid(Name, Value, "an integer >= 0");
      return false;
    }
  } else if (Name == "lr") {
    if (!parseDouble(Value, O.Lr) || O.Lr <= 0) {
      Err = invalid(Name, Value, "a finite number > 0");
      return false;
    }
  } else if (Name == "batch") {
    if (Value == "all") {
      O.Batch = 0;
    } else if (!parseInt64(Value, O.Batch) || O.Batch < 1) {
      Err = invalid(Name, Value, "an integer >= 1 or 'all'");
      return false;
    }
  } else if (Name == "seed" || Name == "split-seed") {
    if (!parseUInt64(Value, Name == "seed" ? O.Seed : O.SplitSeed)) {
      Err = invalid(Name, Value, "an unsigned 64-bit integer");
      return false;
    }
  } else if (Name == "data") {
    if (Value.empty()) {
      Err = invalid(Name, Value, "a file or folder name");
      return false;
    }
    O.Data = std::string(Value);
  } else if (Name == "save" || Name == "log-json" || Name == "checkpoint" ||
             Name == "resume" || Name == "weights" || Name == "input" ||
             Name == "output") {
    if (Value.empty()) {
      Err = invalid(Name, Value, "a file name");
      return false;
    }
    (Name == "save"         ? O.Save
     : Name == "log-json"   ? O.LogJson
     : Name == "checkpoint" ? O.Checkpoint
     : Name == "resume"     ? O.Resume
     : Name == "weights"    ? O.Weights
     : Name == "input"      ? O.Input
                            : O.Output) = std::string(Value);
  } else if (Name == "checkpoint-every") {
    if (!parseInt64(Value, O.CheckpointEvery) || O.CheckpointEvery < 1) {
      Err = invalid(Name, Value, "an integer >= 1 (epochs)");
      return false;
    }
  } else if (Name == "on-nan") {
    if (Value == "stop") {
      O.OnNan = Options::NanAction::Stop;
    } else if (Value == "skip-batch") {
      O.OnNan = Options::NanAction::SkipBatch;
    } else {
      Err = invalid(Name, Value, "'stop' or 'skip-batch'");
      return false;
    }
  } else if (Name == "device") {
    if (Value == "auto") {
      O.Device = DeviceChoice::Auto;
    } else if (Value == "cpu") {
      O.Device = DeviceChoice::Cpu;
    } else if (Value == "cuda") {
      O.Device = DeviceChoice::Cuda;
    } else {
      Err = invalid(Name, Value, "'auto', 'cpu' or 'cuda'");
      return false;
    }
  } else if (Name == "plot") {
    if (!plotFormatFor(Value)) {
      Err = "invalid value '" + std::string(Value) +
            "' for --plot: the name says the format; name the file *.svg or "
            "*.png";
      return false;
    }
    O.Plot = std::string(Value);
  } else if (Name == "threads") {
    if (!parseInt64(Value, O.Threads) || O.Threads < 1 || O.Threads > 1024) {
      Err = invalid(Name, Value, "an integer from 1 to 1024");
      return false;
    }
  } else if (Name == "gradcheck-rows") {
    if (!parseInt64(Value, O.GradCheckRows) || O.GradCheckRows < 1) {
      Err = invalid(Name, Value, "an integer >= 1");
      return false;
    }
  } else if (Name == "gradcheck-tol") {
    if (!parseDouble(Value, O.GradCheckTolerance) ||
        O.GradCheckTolerance <= 0) {
      Err = invalid(Name, Value, "a finite number > 0");
      return false;
    }
  }
  return true;
}

const char *const ValueOptions[] = {
    "epochs",     "lr",         "batch",   "seed",           "split-seed",
    "data",       "save",       "plot",    "gradcheck-rows", "gradcheck-tol",
    "threads",    "log-json",   "checkpoint", "checkpoint-every", "resume",
    "on-nan",     "device"};
const char *const FlagOptions[] = {"gradcheck",   "help",       "summary",
                                   "speed",       "quiet",      "gpu-trace",
                                   "cuda-graphs", "gpu-profile"};
/// The predict command's options: the data options say how the training
/// split was made, which fixes the standardization and the vocabulary.
const char *const PredictValueOptions[] = {"weights",    "input",   "output",
                                           "data",       "split-seed",
                                           "threads",    "device"};
const char *const PredictFlagOptions[] = {"help", "gpu-trace"};

template <size_t N>
bool isOneOf(std::string_view Name, const char *const (&List)[N]) {
  for (const char *L : List)
    if (Name == L)
      return true;
  return false;
}

} // namespace

bool nnc::parseOptions(int Argc, char **Argv, Options &O, std::string &Err) {
  int First = 1;
  if (Argc > 1 && std::string_view(Argv[1]) == "predict") {
    O.Predict = true;
    O.Weights = O.Save;
    First = 2;
  }
  auto IsFlag = [&](std::string_view Name) {
    return O.Predict ? isOneOf(Name, PredictFlagOptions)
                     : isOneOf(Name, FlagOptions);
  };
  auto IsValue = [&](std::string_view Name) {
    return O.Predict ? isOneOf(Name, PredictValueOptions)
                     : isOneOf(Name, ValueOptions);
  };
  for (int I = First; I < Argc; ++I) {
    std::string_view Arg = Argv[I];
    if (Arg == "-h")
      Arg = "--help";
    if (Arg.substr(0, 2) != "--" || Arg.size() == 2) {
      Err = "unexpected argument '" + std::string(Arg) + "'";
      return false;
    }
    std::string_view Name = Arg.substr(2);
    std::string_view Value;
    size_t Eq = Name.find('=');
    bool HasValue = Eq != std::string_view::npos;
    if (HasValue) {
      Value = Name.substr(Eq + 1);
      Name = Name.substr(0, Eq);
    }

    if (IsFlag(Name)) {
      if (HasValue) {
        Err = "option '--" + std::string(Name) + "' takes no value";
        return false;
      }
      (Name == "help"          ? O.Help
       : Name == "summary"     ? O.Summary
       : Name == "speed"       ? O.Speed
       : Name == "quiet"       ? O.Quiet
       : Name == "gpu-trace"   ? O.GpuTrace
       : Name == "cuda-graphs" ? O.CudaGraphs
       : Name == "gpu-profile" ? O.GpuProfile
                               : O.GradCheck) = true;
      continue;
    }
    if (!IsValue(Name)) {
      Err = "unknown option '--" + std::string(Name) + "'" +
            (O.Predict ? " for predict (see predict --help)" : " (see --help)");
      return false;
    }
    if (!HasValue) {
      if (I + 1 == Argc) {
        Err = "option '--" + std::string(Name) + "' needs a value";
        return false;
      }
      Value = Argv[++I];
    }
    if (!setOption(Name, Value, O, Err))
      return false;
  }
  if (O.Predict && O.Input.empty() && !O.Help) {
    Err = "predict needs --input FILE (see predict --help)";
    return false;
  }
  if (O.GpuProfile && O.CudaGraphs) {
    Err = "--gpu-profile times each launch, and --cuda-graphs replays a "
          "step's launches as one: use one or the other";
    return false;
  }
  if (O.GradCheck && (!O.Checkpoint.empty() || !O.Resume.empty())) {
    Err = "--gradcheck trains nothing: it takes no --checkpoint or --resume";
    return false;
  }
  return true;
}

void nnc::printUsage(FILE *Out, const char *Prog, const Manifest &M) {
  Options D = defaultOptions(M);
  std::string Optimizer = M.Optimizer;
  for (const std::string &Arg : M.OptimizerArgs)
    Optimizer += " " + Arg;
  std::fprintf(
      Out,
      "usage: %s [options]\n"
      "\n"
      "Trains model '%s' (%s, %lld parameters, loss %s, optimizer %s)\n"
      "on %s, then saves its weights.\n"
      "\n"
      "options:\n",
      Prog, M.Model.c_str(), dtypeName(M.Type), (long long)M.ParamCount,
      M.Loss.c_str(), Optimizer.c_str(),
      !M.SourcePath.empty()
          ? M.SourcePath.c_str()
          : ("data generated by " + M.SourceKind).c_str());
  char Batch[32];
  if (D.Batch == 0)
    std::snprintf(Batch, sizeof(Batch), "all");
  else
    std::snprintf(Batch, sizeof(Batch), "%lld", (long long)D.Batch);
  std::fprintf(Out, "  --epochs N            training epochs (default %lld)\n",
               (long long)D.Epochs);
  std::fprintf(Out, "  --lr X                learning rate (default %g)\n",
               D.Lr);
  std::fprintf(Out,
               "  --batch N|all         rows per optimizer step (default %s)\n",
               Batch);
  std::fprintf(Out,
               "  --seed N              seed of parameter initialisation and "
               "shuffling (default %llu)\n",
               (unsigned long long)D.Seed);
  if (M.TestFraction > 0)
    std::fprintf(Out,
                 "  --split-seed N        seed of the train/test split "
                 "(default %llu)\n",
                 (unsigned long long)D.SplitSeed);
  if (M.SourceKind == "idx")
    std::fprintf(Out,
                 "  --data DIR            folder of the MNIST IDX files "
                 "(default %s)\n",
                 D.Data.c_str());
  else if (!M.SourcePath.empty())
    std::fprintf(Out, "  --data FILE           %s file (default %s)\n",
                 M.SourceKind == "csv"      ? "CSV data"
                 : M.SourceKind == "tagged" ? "tagged corpus"
                                            : "polarity CSV",
                 D.Data.c_str());
  std::fprintf(Out,
               "  --save FILE           where to write the trained weights "
               "(default %s)\n",
               D.Save.c_str());
  std::fprintf(Out, "  --plot FILE           write the loss curve (and, for a "
                    "model of one input\n"
                    "                        and one output value, the data "
                    "and the fitted curve)\n"
                    "                        as SVG or PNG, as its name ends\n");
  std::fprintf(Out, "  --threads N           worker threads (default: all %d cores "
                    "this process may use)\n",
               availableCores());
  GpuProgram Gpu = trainerGpuProgram();
  std::fprintf(Out,
               "  --device auto|cpu|cuda\n"
               "                        where to run: the GPU when there is "
               "one, else the CPU\n"
               "                        (auto, the default); the CPU; the "
               "GPU or nothing (cuda)\n"
               "                        %s\n",
               !Gpu.hasGpuCode() ? "(this trainer: CPU code only, no "
                                   "--target=cuda)"
               : Gpu.SimKernels  ? "(this trainer: a simulated GPU, "
                                   "--target=cuda-sim)"
                                 : "(this trainer: CUDA kernels and CPU "
                                   "code)");
  std::fprintf(Out, "  --gpu-trace           print each GPU kernel's launch "
                    "to stderr\n");
  std::fprintf(Out,
               "  --gpu-profile         time each GPU kernel launch; at the "
               "end, print each\n"
               "                        kernel's launches and time to "
               "stderr\n");
  std::fprintf(Out, "  --cuda-graphs         record each launch schedule once "
                    "(per batch size) and\n"
                    "                        replay it as a CUDA graph, one "
                    "launch a step\n");
  std::fprintf(Out, "  --speed               print the rows per second of the "
                    "training steps\n");
  std::fprintf(Out, "  --quiet               print no progress and no epoch "
                    "lines, only the final results\n");
  std::fprintf(Out, "  --log-json FILE       append one JSON object per epoch "
                    "to FILE\n");
  std::fprintf(Out, "  --checkpoint FILE     save the training state to FILE "
                    "every --checkpoint-every\n"
                    "                        epochs, at the end, and on "
                    "SIGINT or SIGTERM\n");
  std::fprintf(Out, "  --checkpoint-every N  epochs between checkpoints "
                    "(default 1)\n");
  std::fprintf(Out, "  --resume FILE         continue the run saved in "
                    "checkpoint FILE (its seed;\n"
                    "                        give the other options as "
                    "before)\n");
  std::fprintf(Out, "  --on-nan stop|skip-batch\n"
                    "                        on a non-finite loss or "
                    "parameter: stop (default), or\n"
                    "                        undo the step and go on with "
                    "the next batch\n");
  std::fprintf(Out, "  --gradcheck           compare the gradients with finite "
                    "differences instead of training\n");
  std::fprintf(Out,
               "  --gradcheck-rows N    training rows for --gradcheck (default "
               "%lld)\n",
               (long long)D.GradCheckRows);
  std::fprintf(Out,
               "  --gradcheck-tol X     largest relative error --gradcheck "
               "passes (default %g)\n",
               D.GradCheckTolerance);
  std::fprintf(Out, "  --summary             print the model layer by layer and "
                    "exit\n");
  std::fprintf(Out, "  --help                print this help and exit\n");
  std::fprintf(Out, "\n");
  if (M.SourceKind == "idx")
    std::fprintf(Out, "The data files fix the train and test split%s.\n",
                 M.Standardize ? "; features standardized" : "");
  else
    std::fprintf(Out, "The data are split %g train / %g test (seed %llu)%s.\n",
                 M.TrainFraction, M.TestFraction,
                 (unsigned long long)M.SplitSeed,
                 M.Standardize ? ", features standardized" : "");
  std::fprintf(Out,
               "\n"
               "'%s predict --help' describes the predict command.\n"
               "Exit status: 0 success, 1 usage error or failed gradient "
               "check,\n"
               "2 data or file error, 3 no usable GPU for --device cuda or a "
               "GPU failure,\n"
               "4 loss or parameters not finite,\n"
               "130 or 143 stopped by SIGINT or SIGTERM (after saving the "
               "checkpoint).\n",
               Prog);
}

void nnc::printPredictUsage(FILE *Out, const char *Prog, const Manifest &M) {
  Options D = defaultOptions(M);
  bool Text = M.SourceKind == "tagged" || M.SourceKind == "polarity";
  std::fprintf(
      Out,
      "usage: %s predict --input FILE [--weights FILE] [--output FILE]\n"
      "\n"
      "Writes the predictions of model '%s' for the rows of FILE as CSV.\n"
      "\n"
      "options:\n"
      "  --input FILE          %s\n"
      "  --weights FILE        trained weights (default %s)\n"
      "  --output FILE         where to write the CSV (default: stdout)\n"
      "  --data FILE           the training data, for the %s (default %s)\n"
      "  --split-seed N        the split seed of training (default %llu)\n"
      "  --threads N           worker threads\n"
      "  --device auto|cpu|cuda\n"
      "                        where to run (as in training: see --help)\n"
      "  --gpu-trace           print each GPU kernel's launch to stderr\n",
      Prog, M.Model.c_str(),
      Text ? "one sentence per line"
           : "CSV with a header; the training columns, label columns "
             "optional (ignored)",
      D.Save.c_str(),
      Text ? "vocabulary and the class names"
           : "standardization and the class names",
      D.Data.c_str(), (unsigned long long)D.SplitSeed);
}
