//===- IdxFuzzer.cpp - Fuzz target of the IDX (MNIST) loader --------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// The IDX loader (runtime/src/Idx.h) reads a folder of four files, each raw
// or gzip-compressed. An input holds them all: a first byte whose bits 0 to
// 3 say which of the four files is named with `.gz`, then the files' bytes
// in the order train images, train labels, test images, test labels,
// separated by Separator; a file that the input does not reach is absent.
// The model takes 28x28 images and 10 classes, as MNIST's do, so that the
// seeds (tests/fuzz/seeds.py: a few images of specs/data/mnist-slice) load.
//
//===----------------------------------------------------------------------===//

#include "FuzzSupport.h"
#include "Idx.h"

#include <cstdlib>
#include <cstdio>
#include <string_view>

using namespace nnc;

namespace {

constexpr std::string_view Separator = "--nnc-fuzz-next-file--";

const char *const FileNames[] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  static const Manifest M = fuzz::makeManifest(
      "input\timage\tfeatures\t784\nlabel\tdigit\tclass\t10\n",
      "source\tidx\tpath=mnist\tlow=0\thigh=1\n");
  static const std::string Dir = fuzz::scratchDir();
  if (Size == 0)
    return 0;
  unsigned GzNames = Data[0];
  std::string_view Rest(reinterpret_cast<const char *>(Data) + 1, Size - 1);
  bool More = true; ///< Whether the input reaches the next file.
  for (int I = 0; I < 4; ++I) {
    std::string Path = Dir + "/" + FileNames[I];
    std::remove(Path.c_str());
    std::remove((Path + ".gz").c_str());
    if (!More)
      continue;
    size_t End = Rest.find(Separator);
    fuzz::writeFile(GzNames & (1u << I) ? Path + ".gz" : Path,
                    Rest.substr(0, End));
    More = End != std::string_view::npos;
    if (More)
      Rest.remove_prefix(End + Separator.size());
  }

  Table T;
  LoadError Err;
  if (!loadIdx(Dir, M, T, Err)) {
    if (Err.Message.empty())
      std::abort();
    return 0;
  }
  if (!T.FixedSplit || T.FixedTrainRows == 0 || T.FixedTrainRows >= T.Rows ||
      T.Slots[0].Codes.size() != T.Rows * 784 ||
      T.Slots[1].Classes.size() != T.Rows)
    std::abort();
  return 0;
}
