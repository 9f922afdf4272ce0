//===- Ast.h - The syntax tree of a model spec ------------------*- C++ -*-===//
//
// A small tree that owns its source locations and nothing of ANTLR's: the
// parser builds it and everything after the front end reads it. Pipelines are
// desugared here: `x |> dense(64)` is the call `dense(x, 64)` with `Piped`
// set, so later stages see one form of call.
//
//===----------------------------------------------------------------------===//
#ifndef NNC_FRONTEND_AST_H
#define NNC_FRONTEND_AST_H

#include "frontend/Diagnostics.h"

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nnc::ast {

struct Expr;

/// `value` or `name = value` inside a call or a setting.
struct Arg {
  std::string Name; ///< Empty for a positional argument.
  SourceLoc NameLoc;
  std::unique_ptr<Expr> Value;
};

struct Expr {
  enum class Kind { Name, Call, Number, String, List };
  Kind K;
  SourceLoc Loc;
  std::string Text;       ///< Name, callee, string contents, number spelling.
  double Number = 0;      ///< Number value.
  bool IsInteger = false; ///< Number written without '.' or exponent.
  bool Piped = false;     ///< Call whose first argument came from `|>`.
  std::vector<Arg> Args;  ///< Call arguments; List elements (unnamed).

  explicit Expr(Kind k, SourceLoc loc) : K(k), Loc(loc) {}
  /// Positional arguments, in order.
  std::vector<const Expr *> positional() const;
  /// The value of the named argument, or null.
  const Arg *named(const std::string &name) const;
};

struct TensorType {
  std::string Elem; ///< f32, f64, class, ...
  SourceLoc ElemLoc;
  std::vector<int64_t> Dims;
  std::vector<SourceLoc> DimLocs;
};

struct Stmt {
  enum class Kind { Input, Label, Assign, Loss, Optimizer };
  Kind K;
  SourceLoc Loc; ///< The statement's keyword or assigned name.
  std::string Name; ///< Declared or assigned name.
  SourceLoc NameLoc;
  TensorType Type;             ///< Input and Label.
  std::unique_ptr<Expr> Value; ///< Assign, Loss, Optimizer.
};

struct Setting {
  std::string Key;
  SourceLoc Loc;
  std::vector<Arg> Args;
};

struct Model {
  std::string Name;
  SourceLoc Loc;
  std::vector<Stmt> Stmts;
};

struct Block {
  SourceLoc Loc;
  std::vector<Setting> Settings;
};

struct Spec {
  std::vector<Model> Models;
  std::vector<Block> DataBlocks;
  std::vector<Block> TrainBlocks;
  std::vector<Block> AfterBlocks; ///< What the trainer does after training.
};

/// Prints the tree in an indented, stable form (`nnc --emit=ast`).
void print(const Spec &spec, std::ostream &os);

} // namespace nnc::ast

#endif // NNC_FRONTEND_AST_H
