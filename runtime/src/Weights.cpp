//===- Weights.cpp - The trained weights file -----------------------------===//
//
// Part of nnc. The format is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//

#include "Weights.h"

#include "Binary.h"
#include "Files.h"

#include <cerrno>
#include <cstring>

using namespace nnc;

namespace {

constexpr char Magic[4] = {'N', 'N', 'C', 'W'};
constexpr uint32_t Version = 2;
constexpr size_t HeaderBytes = 28;

} // namespace

uint64_t nnc::modelHash(const Manifest &M, bool WithOptimizer) {
  uint64_t H = Fnv1a64Start;
  std::string_view Text = M.Text;
  while (!Text.empty()) {
    size_t End = Text.find('\n');
    std::string_view Line = Text.substr(0, End);
    Text = End == std::string_view::npos ? "" : Text.substr(End + 1);
    std::string_view Record = Line.substr(0, Line.find('\t'));
    bool Shape = Record == "nnc-manifest" || Record == "dtype" ||
                 Record == "param" || Record == "params" ||
                 Record == "input" || Record == "label" || Record == "output";
    bool Training = Record == "state" || Record == "optimizer";
    if (Shape || (WithOptimizer && Training)) {
      H = fnv1a64(Line, H);
      H = fnv1a64("\n", H);
    }
  }
  return H;
}

bool nnc::writeWeights(const std::string &Path, const Manifest &M,
                       const void *Params, std::string &Err) {
  size_t Elem = elementSize(M.Type);
  ByteWriter W;
  W.bytes(std::string_view(Magic, 4));
  W.u32(Version);
  W.u32(uint32_t(Elem));
  W.u64(uint64_t(M.ParamCount));
  W.u64(modelHash(M, false));
  W.bytes(std::string_view(static_cast<const char *>(Params),
                           size_t(M.ParamCount) * Elem));
  W.checksum();
  std::string What;
  if (!writeFileAtomically(Path, {W.data()}, What)) {
    Err = "cannot write weights file '" + Path + "': " + What;
    return false;
  }
  return true;
}

bool nnc::parseWeights(std::string_view File, const Manifest &M,
                       std::string_view &Params, std::string &Err) {
  ByteReader R(File);
  std::string_view Head;
  uint32_t FileVersion = 0, Elem = 0;
  uint64_t Count = 0, Hash = 0;
  if (!R.bytes(4, Head) || Head != std::string_view(Magic, 4)) {
    Err = "not an nnc weights file (it does not start with 'NNCW')";
    return false;
  }
  if (!R.u32(FileVersion) || !R.u32(Elem) || !R.u64(Count) || !R.u64(Hash)) {
    Err = "truncated: " + std::to_string(File.size()) +
          " bytes, shorter than the header";
    return false;
  }
  if (FileVersion != Version) {
    Err = "weights format version " + std::to_string(FileVersion) +
          "; this trainer reads version " + std::to_string(Version);
    return false;
  }
  size_t Want = elementSize(M.Type);
  if (Elem != Want || Count != uint64_t(M.ParamCount) ||
      Hash != modelHash(M, false)) {
    Err = "the weights of another model (" + std::to_string(Count) +
          " parameters of " + std::to_string(Elem) +
          " bytes; this model '" + M.Model + "' has " +
          std::to_string(M.ParamCount) + " of " + std::to_string(Want) +
          (Elem == Want && Count == uint64_t(M.ParamCount)
               ? ", and its structure hash differs)"
               : ")");
    return false;
  }
  size_t Bytes = size_t(M.ParamCount) * Want;
  size_t Expected = HeaderBytes + Bytes + 8;
  if (File.size() != Expected) {
    Err = (File.size() < Expected ? "truncated: " : "trailing bytes: ") +
          std::to_string(File.size()) + " bytes, expected " +
          std::to_string(Expected);
    return false;
  }
  if (!checksumMatches(File)) {
    Err = "corrupt: the checksum does not match the contents";
    return false;
  }
  R.bytes(Bytes, Params);
  return true;
}

bool nnc::loadWeights(const std::string &Path, const Manifest &M, void *Params,
                      std::string &Err) {
  std::string File;
  bool Opened;
  if (!readFile(Path, File, Opened)) {
    Err = "cannot read weights file '" + Path + "': " + std::strerror(errno);
    return false;
  }
  std::string_view Data;
  if (!parseWeights(File, M, Data, Err)) {
    Err = "weights file '" + Path + "': " + Err;
    return false;
  }
  std::memcpy(Params, Data.data(), Data.size());
  return true;
}
