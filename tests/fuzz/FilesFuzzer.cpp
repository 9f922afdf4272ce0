//===- FilesFuzzer.cpp - Fuzz target of the weights and checkpoint readers ===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Each input is parsed as a weights file and as a checkpoint of a small
// model (runtime/src/Weights.h, Checkpoint.h), as it is and with its
// trailing checksum recomputed: a random change almost never keeps the
// checksum right, and the checks behind it (lengths, counts, the training
// order) would go unexercised. Any outcome but a message, or a success
// whose parts do not fit the model, is a bug.
//
// `nnc-fuzz-files --write-seeds DIR` writes a valid weights file and two
// valid checkpoints of that model into DIR, the seeds of tests/fuzz/files.test.
//
//===----------------------------------------------------------------------===//

#include "Binary.h"
#include "Checkpoint.h"
#include "Weights.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace nnc;

namespace {

/// A dense layer of 3 inputs and 2 outputs trained by Adam: 8 parameters,
/// 16 state elements.
Manifest makeModel() {
  const char *Text = "nnc-manifest\t1\n"
                     "model\tfuzz\n"
                     "dtype\tf32\n"
                     "param\tfc.weight\t2x3\t0\tuniform\t0.5\n"
                     "param\tfc.bias\t2\t6\tuniform\t0.5\n"
                     "params\t8\n"
                     "state\t16\n"
                     "workspace\t0\t64\n"
                     "input\tx\tfeatures\t3\n"
                     "label\ty\tclass\t2\n"
                     "output\tfc\t2\n"
                     "loss\tcross_entropy\n"
                     "optimizer\tadam\tlr=0.001\n"
                     "lr\t0.001\n"
                     "source\tcsv\tpath=data.csv\tlabel=y\n"
                     "split\t0.8\t0.2\t42\n"
                     "standardize\t0\n"
                     "epochs\t1\n"
                     "batch\t0\n"
                     "shuffle\t1\n"
                     "seed\t0\n"
                     "report_every\t1\n"
                     "summary\t0\n";
  Manifest M;
  std::string Err;
  if (!parseManifest(Text, M, Err)) {
    std::fprintf(stderr, "nnc-fuzz-files: bad manifest: %s\n", Err.c_str());
    std::abort();
  }
  return M;
}

const Manifest &model() {
  static const Manifest M = makeModel();
  return M;
}

void parseBoth(std::string_view File) {
  const Manifest &M = model();
  size_t ParamBytes = size_t(M.ParamCount) * sizeof(float);
  std::string_view Params;
  std::string Err;
  if (parseWeights(File, M, Params, Err)) {
    if (Params.size() != ParamBytes)
      std::abort();
  } else if (Err.empty()) {
    std::abort();
  }
  Checkpoint C;
  Err.clear();
  if (parseCheckpoint(File, M, C, Err)) {
    if (C.Params.size() != ParamBytes ||
        C.State.size() != size_t(M.StateCount) * sizeof(float) ||
        C.Offset > C.Order.size())
      std::abort();
  } else if (Err.empty()) {
    std::abort();
  }
}

/// \p File with its last 8 bytes replaced by the checksum of the rest.
std::string withChecksum(std::string_view File) {
  std::string Fixed(File);
  uint64_t Sum = fnv1a64(File.substr(0, File.size() - 8));
  std::memcpy(&Fixed[Fixed.size() - 8], &Sum, 8); // little-endian, as written
  return Fixed;
}

int writeSeeds(const std::string &Dir) {
  const Manifest &M = model();
  std::vector<float> Params(size_t(M.ParamCount), 0.25f);
  std::vector<float> State(size_t(M.StateCount), 0.125f);
  std::string Err;
  bool Ok = writeWeights(Dir + "/weights", M, Params.data(), Err);
  Checkpoint C;
  C.Seed = 7;
  C.Epochs = 2;
  C.Steps = 6;
  C.Order = {3, 1, 0, 2};
  C.Params = {reinterpret_cast<const char *>(Params.data()), Params.size() * 4};
  C.State = {reinterpret_cast<const char *>(State.data()), State.size() * 4};
  Ok = Ok && writeCheckpoint(Dir + "/checkpoint-end", M, C, Err);
  C.Offset = 2; // interrupted within an epoch
  C.LossSum = 1.5;
  C.LossRows = 2;
  Ok = Ok && writeCheckpoint(Dir + "/checkpoint-mid", M, C, Err);
  if (!Ok)
    std::fprintf(stderr, "nnc-fuzz-files: %s\n", Err.c_str());
  return Ok ? 0 : 1;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *Argc, char ***Argv) {
  if (*Argc == 3 && std::strcmp((*Argv)[1], "--write-seeds") == 0)
    std::exit(writeSeeds((*Argv)[2]));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  std::string_view File(reinterpret_cast<const char *>(Data), Size);
  parseBoth(File);
  if (Size >= 8)
    parseBoth(withChecksum(File));
  return 0;
}
