//===- Ast.cpp - Syntax tree helpers and printer --------------------------===//

#include "frontend/Ast.h"

#include <ostream>

namespace nnc::ast {

std::vector<const Expr *> Expr::positional() const {
  std::vector<const Expr *> out;
  for (const Arg &arg : Args)
    if (arg.Name.empty())
      out.push_back(arg.Value.get());
  return out;
}

const Arg *Expr::named(const std::string &name) const {
  for (const Arg &arg : Args)
    if (arg.Name == name)
      return &arg;
  return nullptr;
}

static void printExpr(const Expr &e, std::ostream &os) {
  switch (e.K) {
  case Expr::Kind::Name:
    os << e.Text;
    return;
  case Expr::Kind::Number:
    os << e.Text;
    return;
  case Expr::Kind::String:
    os << '"';
    for (char c : e.Text)
      os << (c == '\n' ? "\\n" : c == '"' ? "\\\"" : std::string(1, c));
    os << '"';
    return;
  case Expr::Kind::List:
  case Expr::Kind::Call: {
    bool list = e.K == Expr::Kind::List;
    os << (list ? "[" : e.Text + "(");
    for (size_t i = 0; i < e.Args.size(); ++i) {
      if (i)
        os << ", ";
      if (!e.Args[i].Name.empty())
        os << e.Args[i].Name << " = ";
      printExpr(*e.Args[i].Value, os);
    }
    os << (list ? "]" : ")");
    return;
  }
  }
}

static void printLoc(SourceLoc loc, std::ostream &os) {
  os << " <" << loc.line << ':' << loc.col << '>';
}

static void printSettings(const char *kind, const Block &block,
                          std::ostream &os) {
  os << kind;
  printLoc(block.Loc, os);
  os << '\n';
  for (const Setting &s : block.Settings) {
    os << "  setting " << s.Key;
    for (size_t i = 0; i < s.Args.size(); ++i) {
      os << (i ? ", " : " ");
      if (!s.Args[i].Name.empty())
        os << s.Args[i].Name << " = ";
      printExpr(*s.Args[i].Value, os);
    }
    printLoc(s.Loc, os);
    os << '\n';
  }
}

void print(const Spec &spec, std::ostream &os) {
  for (const Model &model : spec.Models) {
    os << "model " << model.Name;
    printLoc(model.Loc, os);
    os << '\n';
    for (const Stmt &stmt : model.Stmts) {
      switch (stmt.K) {
      case Stmt::Kind::Input:
      case Stmt::Kind::Label:
        os << (stmt.K == Stmt::Kind::Input ? "  input " : "  label ")
           << stmt.Name << " : " << stmt.Type.Elem << '[';
        for (size_t i = 0; i < stmt.Type.Dims.size(); ++i)
          os << (i ? ", " : "") << stmt.Type.Dims[i];
        os << ']';
        break;
      case Stmt::Kind::Assign:
        os << "  assign " << stmt.Name << " = ";
        printExpr(*stmt.Value, os);
        break;
      case Stmt::Kind::Loss:
        os << "  loss ";
        printExpr(*stmt.Value, os);
        break;
      case Stmt::Kind::Optimizer:
        os << "  optimizer ";
        printExpr(*stmt.Value, os);
        break;
      }
      printLoc(stmt.Loc, os);
      os << '\n';
    }
  }
  for (const Block &block : spec.DataBlocks)
    printSettings("data", block, os);
  for (const Block &block : spec.TrainBlocks)
    printSettings("train", block, os);
  for (const Block &block : spec.AfterBlocks)
    printSettings("after", block, os);
}

} // namespace nnc::ast
