//===- SpecFuzzer.cpp - Fuzz target of the spec front end -----------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Each input is the text of a .nn spec. It goes through what nnc does before
// code generation: parse, print the syntax tree, sema, then build the
// train-step graphs and run the passes on them (the IR verifier runs after
// each). A rejected spec must have reported an error; a crash, a leak, an
// undefined behaviour or a hang anywhere is a bug.
//
//===----------------------------------------------------------------------===//

#include "autodiff/Autodiff.h"
#include "frontend/Parser.h"
#include "passes/Passes.h"
#include "sema/Sema.h"

#include <cstdlib>
#include <sstream>

using namespace nnc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  SourceFile File("fuzz.nn",
                  std::string(reinterpret_cast<const char *>(Data), Size));
  // Diagnostics are formatted (source line, caret) but not shown.
  std::ostringstream Out;
  DiagnosticEngine Diags(File, Out);

  std::optional<ast::Spec> Spec = parseSpec(File, Diags);
  if (!Spec) {
    if (!Diags.hasErrors())
      std::abort();
    return 0;
  }
  ast::print(*Spec, Out);

  SemaOptions Options;
  Options.SpecDir = "/nnc-fuzz";
  std::unique_ptr<Model> M = analyze(*Spec, Options, Diags);
  if (!M) {
    if (!Diags.hasErrors())
      std::abort();
    return 0;
  }
  Program P = buildProgram(*M);
  for (ir::Graph *G : P.graphs())
    runPasses(*G);
  return 0;
}
