//===- Checkpoint.cpp - Training checkpoints ------------------------------===//
//
// Part of nnc. The format is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//

#include "Checkpoint.h"

#include "Binary.h"
#include "Files.h"
#include "Weights.h"

#include <cerrno>
#include <cmath>
#include <cstring>

using namespace nnc;

namespace {

constexpr char Magic[4] = {'N', 'N', 'C', 'K'};
constexpr uint32_t Version = 1;

} // namespace

bool nnc::writeCheckpoint(const std::string &Path, const Manifest &M,
                          const Checkpoint &C, std::string &Err) {
  ByteWriter W;
  W.bytes(std::string_view(Magic, 4));
  W.u32(Version);
  W.u32(uint32_t(elementSize(M.Type)));
  W.u64(uint64_t(M.ParamCount));
  W.u64(uint64_t(M.StateCount));
  W.u64(modelHash(M, true));
  W.u64(C.Seed);
  W.u64(C.Epochs);
  W.u64(C.Offset);
  W.u64(C.Steps);
  W.f64(C.LossSum);
  W.u64(C.LossRows);
  for (uint64_t Word : C.Shuffler)
    W.u64(Word);
  W.u64(C.Order.size());
  for (uint64_t Row : C.Order)
    W.u64(Row);
  W.bytes(C.Params);
  W.bytes(C.State);
  W.checksum();
  std::string What;
  if (!writeFileAtomically(Path, {W.data()}, What)) {
    Err = "cannot write checkpoint '" + Path + "': " + What;
    return false;
  }
  return true;
}

bool nnc::parseCheckpoint(std::string_view File, const Manifest &M,
                          Checkpoint &C, std::string &Err) {
  ByteReader R(File);
  std::string_view Head;
  if (!R.bytes(4, Head) || Head != std::string_view(Magic, 4)) {
    Err = "not an nnc checkpoint (it does not start with 'NNCK')";
    return false;
  }
  auto Truncated = [&] {
    Err = "truncated: " + std::to_string(File.size()) + " bytes";
    return false;
  };
  uint32_t FileVersion = 0, Elem = 0;
  if (!R.u32(FileVersion))
    return Truncated();
  if (FileVersion != Version) {
    Err = "checkpoint format version " + std::to_string(FileVersion) +
          "; this trainer reads version " + std::to_string(Version);
    return false;
  }
  uint64_t ParamCount = 0, StateCount = 0, Hash = 0;
  if (!R.u32(Elem) || !R.u64(ParamCount) || !R.u64(StateCount) ||
      !R.u64(Hash))
    return Truncated();
  size_t Want = elementSize(M.Type);
  if (Elem != Want || ParamCount != uint64_t(M.ParamCount) ||
      StateCount != uint64_t(M.StateCount) || Hash != modelHash(M, true)) {
    Err = "the checkpoint of another model or optimizer (" +
          std::to_string(ParamCount) + " parameters and " +
          std::to_string(StateCount) + " state values of " +
          std::to_string(Elem) + " bytes; this model '" + M.Model + "' has " +
          std::to_string(M.ParamCount) + " and " +
          std::to_string(M.StateCount) + " of " + std::to_string(Want) + ")";
    return false;
  }
  uint64_t Rows = 0;
  bool Ok = R.u64(C.Seed) && R.u64(C.Epochs) && R.u64(C.Offset) &&
            R.u64(C.Steps) && R.f64(C.LossSum) && R.u64(C.LossRows);
  for (uint64_t &Word : C.Shuffler)
    Ok = Ok && R.u64(Word);
  if (!Ok || !R.u64(Rows))
    return Truncated();
  // The sizes still to come, checked against what is there before anything
  // is allocated.
  size_t ParamBytes = size_t(M.ParamCount) * Want;
  size_t StateBytes = size_t(M.StateCount) * Want;
  size_t Rest = R.remaining();
  if (Rows > Rest / 8 || Rest - Rows * 8 < ParamBytes + StateBytes + 8)
    return Truncated();
  if (Rest - Rows * 8 != ParamBytes + StateBytes + 8) {
    Err = "trailing bytes: " + std::to_string(File.size()) + " bytes, expected " +
          std::to_string(File.size() - Rest + Rows * 8 + ParamBytes +
                         StateBytes + 8);
    return false;
  }
  if (!checksumMatches(File)) {
    Err = "corrupt: the checksum does not match the contents";
    return false;
  }
  C.Order.resize(size_t(Rows));
  for (uint64_t &Row : C.Order)
    R.u64(Row);
  R.bytes(ParamBytes, C.Params);
  R.bytes(StateBytes, C.State);
  // A checksum only proves that the writer wrote these values; check the
  // ones that would mislead the trainer too.
  if (C.Offset > Rows || C.LossRows > C.Offset || !std::isfinite(C.LossSum) ||
      (C.Shuffler[0] | C.Shuffler[1] | C.Shuffler[2] | C.Shuffler[3]) == 0) {
    Err = "inconsistent position (offset " + std::to_string(C.Offset) +
          " of " + std::to_string(Rows) + " rows)";
    return false;
  }
  return true;
}

bool nnc::loadCheckpoint(const std::string &Path, const Manifest &M,
                         std::string &Bytes, Checkpoint &C, std::string &Err) {
  bool Opened;
  Bytes.clear();
  if (!readFile(Path, Bytes, Opened)) {
    Err = "cannot read checkpoint '" + Path + "': " + std::strerror(errno);
    return false;
  }
  if (!parseCheckpoint(Bytes, M, C, Err)) {
    Err = "checkpoint '" + Path + "': " + Err;
    return false;
  }
  return true;
}
