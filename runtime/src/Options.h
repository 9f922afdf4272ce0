//===- Options.h - The trainer's command line -------------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// Every option overrides a setting of the spec; the defaults come from the
/// manifest, so `--help` shows what this trainer does when given nothing.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_OPTIONS_H
#define NNC_RUNTIME_OPTIONS_H

#include "Manifest.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace nnc {

/// --device: where the calls run. Auto: the GPU when the trainer has GPU
/// code and a GPU is there, else the CPU; Cuda: the GPU or an error.
enum class DeviceChoice { Auto, Cpu, Cuda };

struct Options {
  int64_t Epochs = 0;
  double Lr = 0;
  int64_t Batch = 0; ///< 0: the whole training split.
  uint64_t Seed = 0;
  uint64_t SplitSeed = 0;
  std::string Data;
  std::string Save;
  std::string Plot; ///< Empty: no plot.
  bool GradCheck = false;
  int64_t GradCheckRows = 8;
  double GradCheckTolerance = 0;
  bool Help = false;
  bool Summary = false;
  int64_t Threads = 0; ///< 0: every core the process may use.
  bool Speed = false;  ///< Print the training steps' throughput.
  bool Quiet = false;  ///< No progress line and no report lines.
  std::string LogJson; ///< Empty: no JSON log.
  std::string Checkpoint;     ///< Empty: no checkpoints.
  int64_t CheckpointEvery = 1; ///< In epochs.
  std::string Resume;         ///< Empty: start afresh.
  /// What a non-finite loss or parameter does: stop the run, or undo the
  /// step and go on with the next batch.
  enum class NanAction { Stop, SkipBatch } OnNan = NanAction::Stop;
  DeviceChoice Device = DeviceChoice::Auto;
  bool GpuTrace = false; ///< Print each GPU kernel launch.
  bool CudaGraphs = false; ///< Replay each schedule as a CUDA graph.
  bool GpuProfile = false; ///< Time each GPU kernel launch, sum by kernel.

  /// `predict`: the trainer's second command.
  bool Predict = false;
  std::string Weights; ///< predict: the weights file (default: Save's).
  std::string Input;   ///< predict: the rows to predict.
  std::string Output;  ///< predict: the CSV to write; empty: stdout.
};

/// The options of a trainer run with no arguments.
Options defaultOptions(const Manifest &M);

/// Parses Argv[1, Argc) over \p O, which holds the defaults. Accepts
/// `--name VALUE` and `--name=VALUE`, and `predict` as the first argument,
/// which selects the predict command and its options. On a usage error returns false and sets
/// \p Err to the message, without the program name.
bool parseOptions(int Argc, char **Argv, Options &O, std::string &Err);

/// Writes the `--help` text, with the defaults of \p M.
void printUsage(FILE *Out, const char *Prog, const Manifest &M);
/// Writes the `predict --help` text.
void printPredictUsage(FILE *Out, const char *Prog, const Manifest &M);

} // namespace nnc

#endif // NNC_RUNTIME_OPTIONS_H
