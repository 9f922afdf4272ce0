//===- CsvFuzzer.cpp - Fuzz target of the CSV loader ----------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Each input is a CSV file, loaded (runtime/src/Csv.h) for each of a few
// models that read their columns differently: a class label by name (iris),
// a float label by name (simple), labels by column index, and a class and a
// float label together. Any outcome but a message is a bug.
//
//===----------------------------------------------------------------------===//

#include "Csv.h"
#include "FuzzSupport.h"

#include <cstdlib>
#include <vector>

using namespace nnc;

namespace {

std::vector<Manifest> makeManifests() {
  std::vector<Manifest> Ms;
  Ms.push_back(fuzz::makeManifest(
      "input\tx\tfeatures\t4\nlabel\ty\tclass\t3\n",
      "source\tcsv\tpath=iris.csv\tlabel=species\n"));
  Ms.push_back(fuzz::makeManifest(
      "input\tx\tfeatures\t2\nlabel\ty\tfeatures\t1\n",
      "source\tcsv\tpath=simple.csv\tlabel=y\n"));
  Ms.push_back(fuzz::makeManifest(
      "input\tx\tfeatures\t1\nlabel\ty\tfeatures\t2\n",
      "source\tcsv\tpath=columns.csv\tlabel=#2,#0\n"));
  Ms.push_back(fuzz::makeManifest(
      "input\tx\tfeatures\t3\nlabel\ty\tclass\t3\nlabel\tz\tfeatures\t1\n",
      "source\tcsv\tpath=two-labels.csv\tlabel=species,petal_width\n"));
  return Ms;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  static const std::vector<Manifest> Manifests = makeManifests();
  static const std::string Path = fuzz::scratchDir() + "/data.csv";
  fuzz::writeFile(Path, {reinterpret_cast<const char *>(Data), Size});
  for (const Manifest &M : Manifests) {
    Table T;
    LoadError Err;
    // A failure must say why; a success must fill every slot for every row.
    if (!loadCsv(Path, M, T, Err)) {
      if (Err.Message.empty())
        std::abort();
      continue;
    }
    if (T.Rows == 0 || T.Slots.size() != M.Slots.size())
      std::abort();
    for (size_t S = 0; S < T.Slots.size(); ++S) {
      const SlotData &D = T.Slots[S];
      size_t Want = T.Rows * D.Width;
      if ((D.IsClass ? D.Classes.size() : D.Values.size()) != Want)
        std::abort();
      for (int32_t C : D.Classes)
        if (C < 0 || C >= M.Slots[S].Classes)
          std::abort();
    }
  }
  return 0;
}
