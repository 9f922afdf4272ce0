//===- Parser.cpp - Spec text to syntax tree ------------------------------===//
//
// Runs the ANTLR-generated parser with nnc's own error reporting, then walks
// the parse tree into the AST of Ast.h. ANTLR's runtime throws on invalid
// UTF-8 and recurses once per nesting level, so the text is checked for both
// before ANTLR sees it.
//
//===----------------------------------------------------------------------===//

#include "frontend/Parser.h"

#include "NNLexer.h"
#include "NNParser.h"
#include "antlr4-runtime.h"

#include <cmath>
#include <cctype>
#include <set>

namespace nnc {
namespace {

/// Spec files are small; anything larger is certainly not one.
constexpr size_t MaxSpecBytes = 1 << 20;
/// Brackets nest this deep at most: deeper input would only exhaust the stack.
constexpr unsigned MaxNesting = 64;

/// Reports the first byte that is not well-formed UTF-8 (or a NUL), since
/// ANTLR's input stream would throw on it. Returns false after an error.
bool checkEncoding(const SourceFile &file, DiagnosticEngine &diags) {
  const std::string &text = file.text();
  uint32_t line = 1, col = 1;
  for (size_t i = 0; i < text.size();) {
    unsigned char c = text[i];
    size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3
                                : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = length != 0 && c != 0 && i + length <= text.size();
    for (size_t k = 1; ok && k < length; ++k)
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (!ok) {
      char hex[8];
      snprintf(hex, sizeof hex, "0x%02X", c);
      diags.error({line, col, 1},
                  std::string(c == 0 ? "NUL byte" : "invalid UTF-8 byte ") +
                      (c == 0 ? "" : hex) +
                      " in spec file; specs are UTF-8 text");
      return false;
    }
    if (c == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
    i += length;
  }
  return true;
}

/// Rejects bracket nesting deeper than MaxNesting, outside strings and
/// comments. Returns false after an error.
bool checkNesting(const SourceFile &file, DiagnosticEngine &diags) {
  const std::string &text = file.text();
  unsigned depth = 0;
  uint32_t line = 1, col = 1;
  bool inString = false, inComment = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n') {
      ++line;
      col = 1;
      inString = inComment = false;
      continue;
    }
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80)
      ++col;
    if (inComment)
      continue;
    if (inString) {
      if (c == '\\')
        ++i, ++col;
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '#')
      inComment = true;
    else if (c == '"')
      inString = true;
    else if (c == '(' || c == '[' || c == '{') {
      if (++depth > MaxNesting) {
        diags.error({line, col - 1, 1},
                    "brackets nested more than " + std::to_string(MaxNesting) +
                        " deep");
        return false;
      }
    } else if ((c == ')' || c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

/// The number of characters (not bytes) of UTF-8 text.
uint32_t countChars(const std::string &s) {
  uint32_t n = 0;
  for (unsigned char c : s)
    n += (c & 0xC0) != 0x80;
  return n;
}

std::string describeToken(const antlr4::dfa::Vocabulary &vocabulary,
                          size_t type) {
  switch (type) {
  case antlr4::Token::EOF:
    return "end of file";
  case NNLexer::ID:
    return "a name";
  case NNLexer::INT:
    return "an integer";
  case NNLexer::FLOAT:
    return "a number";
  case NNLexer::STRING:
    return "a string";
  default:
    return vocabulary.getLiteralName(type);
  }
}

/// Turns ANTLR's syntax errors into nnc diagnostics worded for people:
/// "expected ')', found 'relu'" rather than "mismatched input".
class SyntaxErrorListener : public antlr4::BaseErrorListener {
public:
  explicit SyntaxErrorListener(DiagnosticEngine &diags) : Diags(diags) {}

  void syntaxError(antlr4::Recognizer *recognizer, antlr4::Token *token,
                   size_t line, size_t position, const std::string &antlrMsg,
                   std::exception_ptr) override {
    SourceLoc loc{static_cast<uint32_t>(line),
                  static_cast<uint32_t>(position + 1), 1};
    // ANTLR reports several errors at one token, and usually more on the
    // same line, while it recovers from the first: they say nothing new.
    // After a block was left open, every later error is such an echo.
    if (StructureLost || loc.line == LastLoc.line)
      return;
    LastLoc = loc;
    if (!token) {
      Diags.error(loc, antlrMsg);
      return;
    }
    auto *parser = dynamic_cast<antlr4::Parser *>(recognizer);
    if (parser && reportUnclosedBlock(*parser, token))
      return;
    std::string text = token->getText();
    loc.length = std::max<uint32_t>(1, countChars(text));
    if (token->getType() == NNLexer::UNTERMINATED_STRING) {
      Diags.error(loc, "unterminated string literal");
      return;
    }
    if (token->getType() == NNLexer::BAD_CHAR) {
      Diags.error(loc, "unexpected character '" + text + "'");
      return;
    }
    std::string found = token->getType() == antlr4::Token::EOF
                            ? "end of file"
                            : "'" + text + "'";
    std::string message = "unexpected " + found;
    if (parser) {
      std::string expected = describeExpected(*parser);
      if (!expected.empty())
        message = "expected " + expected + ", found " + found;
    }
    Diags.error(loc, message);
    if (parser && token->getType() == antlr4::Token::EOF)
      noteUnclosedBracket(*parser);
  }

private:
  static SourceLoc locOf(antlr4::Token *token) {
    return {static_cast<uint32_t>(token->getLine()),
            static_cast<uint32_t>(token->getCharPositionInLine() + 1),
            std::max<uint32_t>(1, countChars(token->getText()))};
  }

  /// `data {`, `train {` or `model m` inside a block means that the block
  /// before it lacks its '}'. ANTLR would say "expected '='" (the keyword
  /// reads as a value's name); say what is missing instead, at the keyword.
  bool reportUnclosedBlock(antlr4::Parser &parser, antlr4::Token *token) {
    antlr4::TokenStream *tokens = parser.getTokenStream();
    antlr4::Token *keyword = tokens->LT(-1);
    if (!keyword)
      return false;
    bool blockStart =
        (token->getText() == "{" &&
         (keyword->getText() == "data" || keyword->getText() == "train" ||
          keyword->getText() == "after")) ||
        (token->getType() == NNLexer::ID && keyword->getText() == "model");
    if (!blockStart)
      return false;
    antlr4::RuleContext *ctx = parser.getContext();
    while (ctx && ctx->getRuleIndex() != NNParser::RuleBlock)
      ctx = dynamic_cast<antlr4::RuleContext *>(ctx->parent);
    auto *open = dynamic_cast<antlr4::ParserRuleContext *>(ctx);
    if (!open)
      return false;
    std::string kind = open->getStart()->getText();
    Diags.error(locOf(keyword), "expected '}' to close the " + kind +
                                    " block before this '" +
                                    keyword->getText() + "' block");
    Diags.note(locOf(open->getStart()), "the " + kind + " block starts here");
    StructureLost = true;
    return true;
  }

  /// At the end of the file, points at the innermost bracket left open.
  void noteUnclosedBracket(antlr4::Parser &parser) {
    antlr4::TokenStream *tokens = parser.getTokenStream();
    std::vector<antlr4::Token *> open;
    for (size_t i = 0; i < tokens->size(); ++i) {
      antlr4::Token *t = tokens->get(i);
      std::string text = t->getText();
      if (t->getType() == NNLexer::STRING || text.size() != 1)
        continue;
      if (text == "(" || text == "[" || text == "{")
        open.push_back(t);
      else if ((text == ")" || text == "]" || text == "}") && !open.empty())
        open.pop_back();
    }
    if (!open.empty())
      Diags.note(locOf(open.back()),
                 "to match this '" + open.back()->getText() + "'");
  }

  std::string describeExpected(antlr4::Parser &parser) {
    antlr4::misc::IntervalSet expected;
    try {
      expected = parser.getExpectedTokens();
    } catch (...) {
      return "";
    }
    const auto &vocabulary = parser.getVocabulary();
    bool name = expected.contains(static_cast<size_t>(NNLexer::ID));
    std::vector<std::string> items;
    std::set<std::string> seen;
    for (size_t type : expected.toList()) {
      std::string literal = vocabulary.getLiteralName(type);
      // Keywords that can also be names are covered by "a name".
      if (name && !literal.empty() && std::isalpha(literal[1]))
        continue;
      if (type == NNLexer::INT && expected.contains(static_cast<size_t>(NNLexer::FLOAT)))
        continue;
      std::string item = describeToken(vocabulary, type);
      if (!item.empty() && seen.insert(item).second)
        items.push_back(item);
    }
    if (items.empty() || items.size() > 6)
      return "";
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i)
        out += i + 1 == items.size() ? " or " : ", ";
      out += items[i];
    }
    return out;
  }

  DiagnosticEngine &Diags;
  SourceLoc LastLoc;
  bool StructureLost = false;
};

/// ANTLR's recovery, except that it never skips a closing bracket to go on
/// with the tokens after it: in `dense(x, 3,)` that would read the next
/// statement as more arguments and report it as a second, unrelated error.
class RecoveryStrategy : public antlr4::DefaultErrorStrategy {
protected:
  antlr4::Token *singleTokenDeletion(antlr4::Parser *parser) override {
    std::string next = parser->getCurrentToken()->getText();
    if (next == ")" || next == "]" || next == "}")
      return nullptr;
    return DefaultErrorStrategy::singleTokenDeletion(parser);
  }
};

/// Walks ANTLR's parse tree into the AST.
class AstBuilder {
public:
  explicit AstBuilder(DiagnosticEngine &diags) : Diags(diags) {}

  ast::Spec build(NNParser::FileContext *file) {
    ast::Spec spec;
    for (auto *block : file->block()) {
      if (auto *model = dynamic_cast<NNParser::ModelBlockContext *>(block)) {
        ast::Model m;
        m.Name = model->name->getText();
        m.Loc = loc(model->name->getStart());
        for (auto *stmt : model->modelStmt())
          m.Stmts.push_back(buildStmt(stmt));
        spec.Models.push_back(std::move(m));
      } else if (auto *data = dynamic_cast<NNParser::DataBlockContext *>(block)) {
        spec.DataBlocks.push_back(buildBlock(data->getStart(), data->setting()));
      } else if (auto *train =
                     dynamic_cast<NNParser::TrainBlockContext *>(block)) {
        spec.TrainBlocks.push_back(
            buildBlock(train->getStart(), train->setting()));
      } else if (auto *after =
                     dynamic_cast<NNParser::AfterBlockContext *>(block)) {
        spec.AfterBlocks.push_back(
            buildBlock(after->getStart(), after->setting()));
      }
    }
    return spec;
  }

private:
  static SourceLoc loc(antlr4::Token *token) {
    SourceLoc l{static_cast<uint32_t>(token->getLine()),
                static_cast<uint32_t>(token->getCharPositionInLine() + 1), 1};
    l.length = std::max<uint32_t>(1, countChars(token->getText()));
    return l;
  }

  ast::Block buildBlock(antlr4::Token *start,
                        const std::vector<NNParser::SettingContext *> &settings) {
    ast::Block block;
    block.Loc = loc(start);
    for (auto *s : settings) {
      ast::Setting setting;
      setting.Key = s->key->getText();
      setting.Loc = loc(s->key->getStart());
      for (auto *arg : s->arg())
        setting.Args.push_back(buildArg(arg));
      block.Settings.push_back(std::move(setting));
    }
    return block;
  }

  ast::Stmt buildStmt(NNParser::ModelStmtContext *ctx) {
    ast::Stmt stmt;
    stmt.Loc = loc(ctx->getStart());
    if (auto *input = dynamic_cast<NNParser::InputDeclContext *>(ctx)) {
      stmt.K = ast::Stmt::Kind::Input;
      setName(stmt, input->name);
      stmt.Type = buildType(input->tensorType());
    } else if (auto *label = dynamic_cast<NNParser::LabelDeclContext *>(ctx)) {
      stmt.K = ast::Stmt::Kind::Label;
      setName(stmt, label->name);
      stmt.Type = buildType(label->tensorType());
    } else if (auto *assign = dynamic_cast<NNParser::AssignStmtContext *>(ctx)) {
      stmt.K = ast::Stmt::Kind::Assign;
      setName(stmt, assign->name);
      stmt.Value = buildExpr(assign->expr());
    } else if (auto *lossCtx = dynamic_cast<NNParser::LossStmtContext *>(ctx)) {
      stmt.K = ast::Stmt::Kind::Loss;
      stmt.Value = buildExpr(lossCtx->expr());
    } else {
      auto *opt = static_cast<NNParser::OptimizerStmtContext *>(ctx);
      stmt.K = ast::Stmt::Kind::Optimizer;
      stmt.Value = buildExpr(opt->expr());
    }
    return stmt;
  }

  void setName(ast::Stmt &stmt, NNParser::IdentContext *name) {
    stmt.Name = name->getText();
    stmt.NameLoc = loc(name->getStart());
  }

  ast::TensorType buildType(NNParser::TensorTypeContext *ctx) {
    ast::TensorType type;
    type.Elem = ctx->elem->getText();
    type.ElemLoc = loc(ctx->elem->getStart());
    for (auto *dim : ctx->INT()) {
      SourceLoc l = loc(dim->getSymbol());
      const std::string &text = dim->getText();
      // Larger than any tensor can be; sema reports the exact limit.
      int64_t value = text.size() > 12 ? INT64_MAX : std::stoll(text);
      type.Dims.push_back(value);
      type.DimLocs.push_back(l);
    }
    return type;
  }

  ast::Arg buildArg(NNParser::ArgContext *ctx) {
    ast::Arg arg;
    if (ctx->name) {
      arg.Name = ctx->name->getText();
      arg.NameLoc = loc(ctx->name->getStart());
    }
    arg.Value = buildExpr(ctx->expr());
    if (!ctx->name)
      arg.NameLoc = arg.Value->Loc;
    return arg;
  }

  std::unique_ptr<ast::Expr> buildCall(NNParser::IdentContext *callee,
                                       const std::vector<NNParser::ArgContext *> &args) {
    auto call = std::make_unique<ast::Expr>(ast::Expr::Kind::Call,
                                            loc(callee->getStart()));
    call->Text = callee->getText();
    for (auto *arg : args)
      call->Args.push_back(buildArg(arg));
    return call;
  }

  std::unique_ptr<ast::Expr> buildExpr(NNParser::ExprContext *ctx) {
    using Kind = ast::Expr::Kind;
    if (auto *pipe = dynamic_cast<NNParser::PipeExprContext *>(ctx)) {
      auto input = buildExpr(pipe->expr());
      auto call = buildCall(pipe->callee, pipe->arg());
      call->Piped = true;
      ast::Arg first;
      first.NameLoc = input->Loc;
      first.Value = std::move(input);
      call->Args.insert(call->Args.begin(), std::move(first));
      return call;
    }
    if (auto *callCtx = dynamic_cast<NNParser::CallExprContext *>(ctx))
      return buildCall(callCtx->callee, callCtx->arg());
    if (auto *name = dynamic_cast<NNParser::NameExprContext *>(ctx)) {
      auto e = std::make_unique<ast::Expr>(Kind::Name, loc(name->getStart()));
      e->Text = name->getText();
      return e;
    }
    if (auto *num = dynamic_cast<NNParser::NumberExprContext *>(ctx)) {
      auto e = std::make_unique<ast::Expr>(Kind::Number, loc(num->getStart()));
      antlr4::tree::TerminalNode *digits = num->INT() ? num->INT() : num->FLOAT();
      bool negative = num->getStart()->getText() == "-";
      e->Text = (negative ? "-" : "") + digits->getText();
      e->IsInteger = num->INT() != nullptr;
      e->Number = std::strtod(e->Text.c_str(), nullptr);
      e->Loc.length = e->Text.size();
      return e;
    }
    if (auto *str = dynamic_cast<NNParser::StringExprContext *>(ctx)) {
      auto e = std::make_unique<ast::Expr>(Kind::String, loc(str->getStart()));
      e->Text = unescape(str->STRING()->getText(), e->Loc);
      return e;
    }
    auto *list = static_cast<NNParser::ListExprContext *>(ctx);
    auto e = std::make_unique<ast::Expr>(Kind::List, loc(list->getStart()));
    for (auto *element : list->expr()) {
      ast::Arg arg;
      arg.Value = buildExpr(element);
      arg.NameLoc = arg.Value->Loc;
      e->Args.push_back(std::move(arg));
    }
    return e;
  }

  /// The contents of a string literal, with \" \\ \n \t decoded.
  std::string unescape(const std::string &quoted, SourceLoc where) {
    std::string out;
    for (size_t i = 1; i + 1 < quoted.size(); ++i) {
      char c = quoted[i];
      if (c != '\\') {
        out += c;
        continue;
      }
      char next = quoted[++i];
      switch (next) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      default: {
        SourceLoc at = where;
        // Columns count characters, not bytes.
        at.col += countChars(quoted.substr(0, i - 1));
        at.length = 2;
        Diags.error(at, std::string("unknown escape sequence '\\") + next +
                            "' in string");
      }
      }
    }
    return out;
  }

  DiagnosticEngine &Diags;
};

} // namespace

std::optional<ast::Spec> parseSpec(const SourceFile &file,
                                   DiagnosticEngine &diags) {
  if (file.text().size() > MaxSpecBytes) {
    diags.error({}, "spec file is larger than " +
                        std::to_string(MaxSpecBytes >> 20) +
                        " MiB; is it really a spec?");
    return std::nullopt;
  }
  if (!checkEncoding(file, diags) || !checkNesting(file, diags))
    return std::nullopt;

  try {
    antlr4::ANTLRInputStream input(file.text());
    NNLexer lexer(&input);
    lexer.removeErrorListeners();
    antlr4::CommonTokenStream tokens(&lexer);
    NNParser parser(&tokens);
    SyntaxErrorListener listener(diags);
    parser.removeErrorListeners();
    parser.addErrorListener(&listener);
    parser.setErrorHandler(std::make_shared<RecoveryStrategy>());
    NNParser::FileContext *tree = parser.file();
    if (diags.hasErrors())
      return std::nullopt;
    AstBuilder builder(diags);
    ast::Spec spec = builder.build(tree);
    if (diags.hasErrors())
      return std::nullopt;
    return spec;
  } catch (const std::exception &e) {
    diags.error({}, std::string("internal parser error: ") + e.what());
    return std::nullopt;
  }
}

} // namespace nnc
