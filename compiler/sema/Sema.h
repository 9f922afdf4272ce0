//===- Sema.h - Names, shapes and settings of a spec ------------*- C++ -*-===//
#ifndef NNC_SEMA_SEMA_H
#define NNC_SEMA_SEMA_H

#include "frontend/Ast.h"
#include "sema/Model.h"

#include <optional>

namespace nnc {

struct SemaOptions {
  ir::DType FloatType = ir::DType::F32; ///< --dtype
  std::string SpecDir;                  ///< Folder relative paths resolve in.
};

/// Checks a parsed spec and builds its model. Reports every error it finds to
/// `diags`; returns null when there was any.
std::unique_ptr<Model> analyze(const ast::Spec &spec, const SemaOptions &opts,
                               DiagnosticEngine &diags);

/// The names of the layers a model block may call, for suggestions and docs.
std::vector<std::string> layerNames();

} // namespace nnc

#endif // NNC_SEMA_SEMA_H
