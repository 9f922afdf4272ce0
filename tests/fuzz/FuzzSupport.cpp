//===- FuzzSupport.cpp - What the runtime's fuzz targets share ------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "FuzzSupport.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

using namespace nnc;

namespace {

/// Owns the scratch folder; its destructor runs when libFuzzer exits
/// normally (a crash leaves the folder for the post-mortem).
struct ScratchFolder {
  std::string Path;

  ScratchFolder() {
    const char *Base = std::getenv("TMPDIR");
    if (!Base || !*Base)
      Base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string Template = std::string(Base) + "/nnc-fuzz.XXXXXX";
    if (!mkdtemp(Template.data())) {
      std::perror(("nnc-fuzz: cannot create " + Template).c_str());
      std::abort();
    }
    Path = Template;
  }
  ~ScratchFolder() {
    std::error_code Ignored;
    std::filesystem::remove_all(Path, Ignored);
  }
};

} // namespace

const std::string &fuzz::scratchDir() {
  static ScratchFolder Folder;
  return Folder.Path;
}

void fuzz::writeFile(const std::string &Path, std::string_view Bytes) {
  std::FILE *F = std::fopen(Path.c_str(), "wb");
  if (!F || std::fwrite(Bytes.data(), 1, Bytes.size(), F) != Bytes.size() ||
      std::fclose(F) != 0) {
    std::perror(("nnc-fuzz: cannot write " + Path).c_str());
    std::abort();
  }
}

Manifest fuzz::makeManifest(const std::string &Slots,
                            const std::string &Source) {
  std::string Text = "nnc-manifest\t1\n"
                     "model\tfuzz\n"
                     "dtype\tf32\n"
                     "params\t0\n"
                     "state\t0\n"
                     "workspace\t0\t0\n" +
                     Slots +
                     "output\tout\t1\n"
                     "loss\tmse\n"
                     "optimizer\tsgd\tlr=0.1\n"
                     "lr\t0.1\n" +
                     Source +
                     "split\t0.8\t0.2\t42\n"
                     "standardize\t0\n"
                     "epochs\t1\n"
                     "batch\t0\n"
                     "shuffle\t0\n"
                     "seed\t0\n"
                     "report_every\t1\n"
                     "summary\t0\n";
  Manifest M;
  std::string Err;
  if (!parseManifest(Text.c_str(), M, Err)) {
    std::fprintf(stderr, "nnc-fuzz: bad manifest: %s\n%s", Err.c_str(),
                 Text.c_str());
    std::abort();
  }
  return M;
}
