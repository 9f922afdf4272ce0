//===- Parser.h - Spec text to syntax tree ----------------------*- C++ -*-===//
#ifndef NNC_FRONTEND_PARSER_H
#define NNC_FRONTEND_PARSER_H

#include "frontend/Ast.h"

#include <optional>

namespace nnc {

/// Parses a whole spec. Every syntax error goes to `diags` (all of them, not
/// just the first); the result is empty when there was any. Never throws and
/// never crashes, whatever the bytes of the file.
std::optional<ast::Spec> parseSpec(const SourceFile &file,
                                   DiagnosticEngine &diags);

} // namespace nnc

#endif // NNC_FRONTEND_PARSER_H
