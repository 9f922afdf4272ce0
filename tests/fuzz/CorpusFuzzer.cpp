//===- CorpusFuzzer.cpp - Fuzz targets of the text corpus readers ---------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Built twice (tests/fuzz/CMakeLists.txt), with NNC_FUZZ_SOURCE "tagged" or
// "polarity": each input is a corpus file, read by readTaggedCorpus or
// readPolarityCsv (runtime/src/Corpus.h) through loadText, which numbers the
// labels; a corpus that loads is then split and its words encoded with a
// vocabulary of the training rows, as the trainer does.
//
//===----------------------------------------------------------------------===//

#include "Dataset.h"
#include "FuzzSupport.h"
#include "Text.h"

#include <cstdlib>
#include <string_view>

using namespace nnc;

namespace {

constexpr std::string_view Kind = NNC_FUZZ_SOURCE;

/// Sequences shorter than most sentences and vocabularies smaller than most
/// corpora, so that cutting and the unknown word are exercised too.
Manifest makeTextManifest() {
  if (Kind == "tagged")
    return fuzz::makeManifest(
        "input\twords\tindex\t20\t8\nlabel\ttags\tclass\t48\t8\n",
        "source\ttagged\tpath=corpus.txt\n");
  return fuzz::makeManifest(
      "input\twords\tindex\t50\t16\nlabel\tpolarity\tclass\t2\n",
      "source\tpolarity\tpath=corpus.csv\n");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  static const Manifest M = makeTextManifest();
  static const std::string Path = fuzz::scratchDir() + "/corpus";
  fuzz::writeFile(Path, {reinterpret_cast<const char *>(Data), Size});

  Table T;
  TextRows Words;
  LoadError Err;
  if (!loadText(Path, M, T, Words, Err)) {
    if (Err.Message.empty())
      std::abort();
    return 0;
  }
  if (T.Rows == 0 || Words.size() != T.Rows)
    std::abort();
  Split S = splitRows(T.Rows, M.TrainFraction, M.TestFraction, M.SplitSeed);
  encodeWords(Words, M, S.Train, T);
  for (int32_t I : T.Slots[0].Classes)
    if (I < 0 || I >= M.Slots[0].Classes)
      std::abort();
  for (int32_t C : T.Slots[1].Classes)
    if (C < -1 || C >= M.Slots[1].Classes)
      std::abort();
  return 0;
}
