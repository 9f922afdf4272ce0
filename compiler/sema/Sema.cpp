//===- Sema.cpp - Names, shapes and settings of a spec --------------------===//
//
// Walks the AST once, in order: declares inputs and labels, evaluates each
// statement into tensor IR (checking every layer's arguments and shapes),
// builds the loss, reads the optimizer and the data and train settings.
// Errors poison the value they concern (null) so that one mistake gives one
// diagnostic, and checking goes on to find the others.
//
//===----------------------------------------------------------------------===//

#include "sema/Sema.h"
#include "support/Format.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

namespace nnc {
namespace {

using ast::Expr;
using ir::N;
using ir::Node;
using ir::OpCode;

/// Parameters of a model may hold this many elements in all.
constexpr int64_t MaxParamElements = int64_t(1) << 30;
/// No dimension of a declared or computed shape may exceed this.
constexpr int64_t MaxDim = int64_t(1) << 24;

enum class ArgKind { Tensor, Int, Number, Bool, String, Any };

/// One parameter of a layer, loss, optimizer or setting signature.
struct ParamDecl {
  const char *Name;
  ArgKind Kind;
  bool Required;
};

const char *describe(ArgKind kind) {
  switch (kind) {
  case ArgKind::Tensor: return "a tensor value";
  case ArgKind::Int: return "an integer";
  case ArgKind::Number: return "a number";
  case ArgKind::Bool: return "true or false";
  case ArgKind::String: return "a string";
  case ArgKind::Any: return "a value";
  }
  return "";
}

const char *describe(const Expr &e) {
  switch (e.K) {
  case Expr::Kind::Name: return "a name";
  case Expr::Kind::Call: return "a call";
  case Expr::Kind::Number: return "a number";
  case Expr::Kind::String: return "a string";
  case Expr::Kind::List: return "a list";
  }
  return "";
}

/// A hyper-parameter with its default and the range it must lie in.
struct HyperParam {
  const char *Name;
  double Default;
  double Min, Max;
  bool MinOpen, MaxOpen; ///< Whether the bound itself is excluded.
};

struct OptimizerDecl {
  const char *Name;
  std::vector<HyperParam> Params;
};

const std::vector<OptimizerDecl> &optimizerTable() {
  static const std::vector<OptimizerDecl> table = {
      {"sgd",
       {{"lr", 0.01, 0, 1e6, true, false},
        {"momentum", 0, 0, 1, false, true},
        {"weight_decay", 0, 0, 1e6, false, false},
        {"nesterov", 0, 0, 1, false, false}}},
      {"adam",
       {{"lr", 0.001, 0, 1e6, true, false},
        {"beta1", 0.9, 0, 1, false, true},
        {"beta2", 0.999, 0, 1, false, true},
        {"eps", 1e-8, 0, 1, true, false},
        {"weight_decay", 0, 0, 1e6, false, false}}},
      {"rmsprop",
       {{"lr", 0.01, 0, 1e6, true, false},
        {"alpha", 0.99, 0, 1, false, true},
        {"eps", 1e-8, 0, 1, true, false},
        {"momentum", 0, 0, 1, false, true},
        {"centered", 0, 0, 1, false, false},
        {"weight_decay", 0, 0, 1e6, false, false}}},
      {"adadelta",
       {{"lr", 1.0, 0, 1e6, true, false},
        {"rho", 0.9, 0, 1, false, true},
        {"eps", 1e-6, 0, 1, true, false},
        {"weight_decay", 0, 0, 1e6, false, false}}},
  };
  return table;
}

/// Hyper-parameters written true or false (stored as 1 or 0).
bool isFlag(const HyperParam &p) {
  return p.Name == std::string("nesterov") || p.Name == std::string("centered");
}

std::string formatRange(const HyperParam &p) {
  auto num = [](double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.')
      s.pop_back();
    return s;
  };
  return std::string(p.MinOpen ? "(" : "[") + num(p.Min) + ", " +
         num(p.Max) + (p.MaxOpen ? ")" : "]");
}

/// How a layer's parameters start: U(-WeightBound, WeightBound) weights and
/// biases from BiasInit.
struct Initializer {
  double WeightBound;
  InitKind BiasInit;
  double BiasBound;
};
Initializer initializer(const std::string &scheme, int64_t fanIn,
                        int64_t fanOut);

class Sema {
public:
  Sema(const SemaOptions &opts, DiagnosticEngine &diags)
      : Opts(opts), Diags(diags) {}

  std::unique_ptr<Model> run(const ast::Spec &spec);

  using LayerFn = Node *(Sema::*)(const Expr &call);
  struct LayerDecl {
    const char *Name;
    LayerFn Fn;
  };
  static const std::vector<LayerDecl> &layers();

private:
  struct Value {
    ir::Node *Tensor = nullptr;
    SourceLoc Loc;
    bool IsLabel = false;
    const IoSpec *Io = nullptr; ///< Inputs and labels.
  };

  static const LayerDecl *findLayer(const std::string &name);

  // Model block.
  void declareIo(const ast::Stmt &stmt);
  void assign(const ast::Stmt &stmt);
  /// Reports a name that is already defined or names a layer.
  bool checkNewName(const ast::Stmt &stmt, const char *what);
  /// Starts naming the parameters of a statement's layers after `name`.
  void beginStatement(const std::string &name, const Expr &value);
  void buildLoss(const ast::Stmt &stmt);
  void readOptimizer(const ast::Stmt &stmt);
  Node *eval(const Expr &e);
  Node *tensorArg(const Expr *e);

  // Layers.
  Node *dense(const Expr &call);
  Node *relu(const Expr &call) { return activation(call, OpCode::Relu); }
  Node *sigmoid(const Expr &call) { return activation(call, OpCode::Sigmoid); }
  Node *tanh(const Expr &call) { return activation(call, OpCode::Tanh); }
  Node *softmax(const Expr &call) { return activation(call, OpCode::Softmax); }
  Node *activation(const Expr &call, OpCode op);
  Node *conv2d(const Expr &call);
  Node *maxPool2d(const Expr &call);
  Node *flatten(const Expr &call);
  Node *dropout(const Expr &call);
  Node *embedding(const Expr &call);
  Node *concat(const Expr &call);
  Node *lstm(const Expr &call);
  Node *meanPool(const Expr &call);
  Node *last(const Expr &call);
  /// Checks that `x` is a batch of sequences [N, T, features] for `layer`.
  bool checkSequence(const Node *x, const Expr *arg, const std::string &layer);
  /// The padding mask [N, T] (1 at real tokens, 0 at padding) of a sequence
  /// computed from an index sequence input, or null when `x` has no padding.
  Node *paddingMask(Node *x);
  /// Records a layer without parameters under the statement's name.
  void recordStep(const std::string &kind, const Node *output);
  /// A layer's `init` argument: "pytorch" (the default) or "glorot".
  std::optional<std::string> initScheme(const Expr *e, const std::string &layer);
  /// A window size: an integer, or [height, width].
  std::optional<std::pair<int64_t, int64_t>> windowSize(const Expr *e,
                                                        const std::string &what);
  /// Checks that `x` is a batch of images [N, C, H, W] for `layer`.
  bool checkImages(const Node *x, const Expr *arg, const std::string &layer);
  Node *addParam(const std::string &layer, const std::string &suffix,
                 std::vector<int64_t> dims, InitKind init, double bound,
                 SourceLoc loc);
  std::string paramPrefix(const std::string &layer);
  /// Adds a row to the model's layer summary (trainer --summary).
  void recordLayer(const std::string &name, const std::string &kind,
                   const Node *output, int64_t params);

  // Data and train blocks.
  void readData(const ast::Block &block);
  void readTrain(const ast::Block &block);
  void readReport(const ast::Setting &setting);
  void readSource(const Expr &reader);
  void readCsvSource(const Expr &reader);
  void readLinearSource(const Expr &reader);
  void readBlobsSource(const Expr &reader);
  void readIdxSource(const Expr &reader);
  void readRatingsSource(const Expr &reader);
  /// tagged(path) and polarity(path): text corpora of token sequences.
  void readTextSource(const Expr &reader);
  /// Resolves a path of the spec against the spec's folder.
  std::string specPath(const std::string &path);
  /// Checks that the model's inputs and labels suit the data source.
  void checkSourceSlots(const ast::Spec &spec);
  void readAfter(const ast::Block &block);
  void readKMeans(const ast::Setting &setting);
  void readPredict(const ast::Setting &setting);
  std::optional<std::string> distribution(const Expr *e, const std::string &what,
                                          const std::vector<std::string> &allowed);
  SourceLoc SourceCall; ///< The data source's call, for slot errors.

  // Arguments.
  bool bind(const std::string &what, SourceLoc loc,
            const std::vector<ast::Arg> &args,
            const std::vector<ParamDecl> &signature,
            std::vector<const Expr *> &out, bool piped = false);
  std::optional<int64_t> intValue(const Expr *e, const std::string &what,
                                  int64_t min, int64_t max);
  std::optional<double> numberValue(const Expr *e, const std::string &what);
  std::optional<bool> boolValue(const Expr *e, const std::string &what);
  std::optional<std::string> stringValue(const Expr *e, const std::string &what);

  Node *create(OpCode op, std::vector<Node *> operands, ir::Attrs attrs,
               SourceLoc loc, const std::string &what);

  const SemaOptions &Opts;
  DiagnosticEngine &Diags;
  std::unique_ptr<Model> M;
  std::map<std::string, Value> Env;
  std::vector<std::string> EnvOrder;

  // The statement being evaluated, for naming parameters.
  std::string StmtName;
  std::map<std::string, int> StmtLayerCounts; ///< Parametric layers it holds.
  std::map<std::string, int> StmtLayerSeen;

  int DropoutCount = 0; ///< Each dropout draws from its own stream.
  bool SawLoss = false, SawOptimizer = false;
  SourceLoc FirstLossLoc, FirstOptimizerLoc;
  bool HasTestSplit = false;
};

const std::vector<Sema::LayerDecl> &Sema::layers() {
  static const std::vector<LayerDecl> table = {
      {"dense", &Sema::dense},         {"relu", &Sema::relu},
      {"sigmoid", &Sema::sigmoid},     {"tanh", &Sema::tanh},
      {"softmax", &Sema::softmax},     {"conv2d", &Sema::conv2d},
      {"max_pool2d", &Sema::maxPool2d}, {"flatten", &Sema::flatten},
      {"dropout", &Sema::dropout},     {"embedding", &Sema::embedding},
      {"concat", &Sema::concat},       {"lstm", &Sema::lstm},
      {"mean_pool", &Sema::meanPool},  {"last", &Sema::last},
  };
  return table;
}

const Sema::LayerDecl *Sema::findLayer(const std::string &name) {
  for (const LayerDecl &layer : layers())
    if (name == layer.Name)
      return &layer;
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Arguments
//===----------------------------------------------------------------------===//

bool Sema::bind(const std::string &what, SourceLoc loc,
                const std::vector<ast::Arg> &args,
                const std::vector<ParamDecl> &signature,
                std::vector<const Expr *> &out, bool piped) {
  out.assign(signature.size(), nullptr);
  std::vector<std::string> names;
  for (const ParamDecl &p : signature)
    names.push_back(p.Name);
  bool ok = true;
  size_t nextPositional = 0;
  for (const ast::Arg &arg : args) {
    size_t index;
    if (arg.Name.empty()) {
      if (nextPositional >= signature.size()) {
        Diags.error(arg.Value->Loc,
                    what + " takes at most " + std::to_string(signature.size()) +
                        " argument" + (signature.size() == 1 ? "" : "s") +
                        ", got " + std::to_string(args.size()) +
                        // `x |> relu(5)` shows one argument but passes two.
                        (piped ? " (counting the input piped in with `|>`)"
                               : ""));
        return false;
      }
      index = nextPositional++;
    } else {
      auto it = std::find(names.begin(), names.end(), arg.Name);
      if (it == names.end()) {
        Diags.error(arg.NameLoc,
                    withSuggestion(what + " has no argument '" + arg.Name + "'",
                                   arg.Name, names));
        ok = false;
        continue;
      }
      index = it - names.begin();
    }
    if (out[index]) {
      Diags.error(arg.NameLoc, what + ": argument '" + names[index] +
                                   "' is given twice");
      ok = false;
      continue;
    }
    out[index] = arg.Value.get();
  }
  for (size_t i = 0; i < signature.size(); ++i) {
    if (signature[i].Required && !out[i]) {
      Diags.error(loc, what + " needs argument '" + names[i] + "' (" +
                           describe(signature[i].Kind) + ")");
      ok = false;
    }
  }
  return ok;
}

std::optional<int64_t> Sema::intValue(const Expr *e, const std::string &what,
                                      int64_t min, int64_t max) {
  if (e->K != Expr::Kind::Number || !e->IsInteger) {
    Diags.error(e->Loc, what + " must be an integer, found " +
                            (e->K == Expr::Kind::Number ? e->Text
                                                        : describe(*e)));
    return std::nullopt;
  }
  if (e->Number < static_cast<double>(min) ||
      e->Number > static_cast<double>(max)) {
    Diags.error(e->Loc, what + " must be between " + std::to_string(min) +
                            " and " + std::to_string(max) + ", got " + e->Text);
    return std::nullopt;
  }
  return static_cast<int64_t>(e->Number);
}

std::optional<double> Sema::numberValue(const Expr *e,
                                        const std::string &what) {
  if (e->K != Expr::Kind::Number) {
    Diags.error(e->Loc, what + " must be a number, found " + describe(*e));
    return std::nullopt;
  }
  if (!std::isfinite(e->Number)) {
    Diags.error(e->Loc, what + " is too large: " + e->Text);
    return std::nullopt;
  }
  return e->Number;
}

std::optional<bool> Sema::boolValue(const Expr *e, const std::string &what) {
  if (e->K == Expr::Kind::Name && (e->Text == "true" || e->Text == "false"))
    return e->Text == "true";
  Diags.error(e->Loc, what + " must be true or false, found " +
                          (e->K == Expr::Kind::Name ? "'" + e->Text + "'"
                                                    : describe(*e)));
  return std::nullopt;
}

std::optional<std::string> Sema::stringValue(const Expr *e,
                                             const std::string &what) {
  if (e->K != Expr::Kind::String) {
    Diags.error(e->Loc, what + " must be a string, found " + describe(*e));
    return std::nullopt;
  }
  if (e->Text.find_first_of("\t\n\r") != std::string::npos ||
      e->Text.find('\0') != std::string::npos) {
    Diags.error(e->Loc, what + " must not contain tabs or line breaks");
    return std::nullopt;
  }
  return e->Text;
}

Node *Sema::create(OpCode op, std::vector<Node *> operands, ir::Attrs attrs,
                   SourceLoc loc, const std::string &what) {
  std::string error;
  Node *node = M->Forward->tryCreate(op, std::move(operands), std::move(attrs),
                                     error);
  if (!node)
    Diags.error(loc, what + ": " + error);
  return node;
}

//===----------------------------------------------------------------------===//
// Model block
//===----------------------------------------------------------------------===//

void Sema::declareIo(const ast::Stmt &stmt) {
  bool isLabel = stmt.K == ast::Stmt::Kind::Label;
  const ast::TensorType &type = stmt.Type;
  IoSpec io;
  io.Name = stmt.Name;
  bool ok = true;
  if (type.Elem == "class" || type.Elem == "index") {
    // The last dimension is the range of the integers; one before it, if
    // any, the length of a sequence of them.
    bool isClass = type.Elem == "class";
    const char *range = isClass ? "classes" : "indices (the vocabulary size)";
    if (isClass != isLabel) {
      Diags.error(type.ElemLoc,
                  isClass ? "input '" + stmt.Name +
                                "' cannot have type class; class labels are "
                                "declared with `label`"
                          : "label '" + stmt.Name +
                                "' cannot have type index; integer labels "
                                "are classes: class[K]");
      ok = false;
    } else if (type.Dims.size() != 1 && type.Dims.size() != 2) {
      Diags.error(type.ElemLoc,
                  type.Elem + " takes the number of " + range +
                      ", after the sequence length for a sequence: " +
                      type.Elem + (isClass ? "[3] or class[50, 45]"
                                           : "[1000] or index[50, 1000]"));
      ok = false;
    } else if (type.Dims.back() < 2 || type.Dims.back() > MaxDim) {
      Diags.error(type.DimLocs.back(), "'" + stmt.Name + "' needs between 2 and " +
                                           std::to_string(MaxDim) + " " + range);
      ok = false;
    } else if (type.Dims.size() == 2 &&
               (type.Dims[0] < 1 || type.Dims[0] > MaxDim)) {
      Diags.error(type.DimLocs[0], "sequence length must be between 1 and " +
                                       std::to_string(MaxDim));
      ok = false;
    } else {
      io.IsClass = isClass;
      io.IsIndex = !isClass;
      io.Classes = type.Dims.back();
      if (type.Dims.size() == 2)
        io.Dims = {type.Dims[0]};
    }
  } else if (type.Elem == "f32" || type.Elem == "f64") {
    int64_t elements = 1;
    for (size_t i = 0; i < type.Dims.size(); ++i) {
      if (type.Dims[i] < 1 || type.Dims[i] > MaxDim) {
        Diags.error(type.DimLocs[i], "dimension must be between 1 and " +
                                         std::to_string(MaxDim));
        ok = false;
        break;
      }
      elements *= type.Dims[i];
      if (elements > MaxDim) {
        Diags.error(type.DimLocs[i], "'" + stmt.Name + "' has more than " +
                                         std::to_string(MaxDim) +
                                         " elements per row");
        ok = false;
        break;
      }
    }
    io.Dims = type.Dims;
  } else {
    Diags.error(type.ElemLoc,
                withSuggestion("unknown element type '" + type.Elem + "'",
                               type.Elem, {"f32", "f64", "class", "index"}));
    ok = false;
  }
  if (!checkNewName(stmt, isLabel ? "label" : "input"))
    return;
  Value value;
  value.Loc = stmt.NameLoc;
  value.IsLabel = isLabel;
  if (ok) {
    ir::Attrs attrs;
    attrs.Name = stmt.Name;
    attrs.Offset = static_cast<int64_t>(M->Inputs.size()); // labels: see run()
    attrs.Target.Elem = io.isInteger() ? ir::DType::I32 : M->FloatType;
    attrs.Target.Dims.push_back(N);
    for (int64_t d : io.Dims)
      attrs.Target.Dims.push_back(d);
    io.Node = M->Forward->create(OpCode::Input, {}, attrs);
    value.Tensor = io.Node;
    std::vector<IoSpec> &list = isLabel ? M->Labels : M->Inputs;
    list.push_back(io);
  }
  Env[stmt.Name] = value;
  EnvOrder.push_back(stmt.Name);
}

/// Counts the parametric layers a statement calls, to name their params.
static void countLayers(const Expr &e, std::map<std::string, int> &counts) {
  if (e.K == Expr::Kind::Call &&
      (e.Text == "dense" || e.Text == "conv2d" || e.Text == "embedding" ||
       e.Text == "lstm"))
    ++counts[e.Text];
  for (const ast::Arg &arg : e.Args)
    countLayers(*arg.Value, counts);
}

void Sema::beginStatement(const std::string &name, const Expr &value) {
  StmtName = name;
  StmtLayerCounts.clear();
  StmtLayerSeen.clear();
  countLayers(value, StmtLayerCounts);
}

bool Sema::checkNewName(const ast::Stmt &stmt, const char *what) {
  auto previous = Env.find(stmt.Name);
  if (previous != Env.end()) {
    Diags.error(stmt.NameLoc, "redefinition of '" + stmt.Name + "'");
    Diags.note(previous->second.Loc, "previous definition is here");
    return false;
  }
  // `x |> relu` must not depend on whether a value is called `relu`.
  if (findLayer(stmt.Name)) {
    Diags.error(stmt.NameLoc, "'" + stmt.Name +
                                  "' is the name of a layer; choose another "
                                  "name for this " + what);
    return false;
  }
  return true;
}

void Sema::assign(const ast::Stmt &stmt) {
  if (!checkNewName(stmt, "value"))
    return;
  beginStatement(stmt.Name, *stmt.Value);
  Value value;
  value.Loc = stmt.NameLoc;
  value.Tensor = tensorArg(stmt.Value.get());
  Env[stmt.Name] = value;
  EnvOrder.push_back(stmt.Name);
}

Node *Sema::eval(const Expr &e) {
  switch (e.K) {
  case Expr::Kind::Name: {
    auto it = Env.find(e.Text);
    if (it != Env.end())
      return it->second.Tensor;
    if (findLayer(e.Text)) {
      Diags.error(e.Loc, "'" + e.Text + "' is a layer, not a value; apply it "
                                        "to one, as in `x |> " + e.Text + "`");
      return nullptr;
    }
    Diags.error(e.Loc, withSuggestion("unknown value '" + e.Text + "'", e.Text,
                                      EnvOrder));
    return nullptr;
  }
  case Expr::Kind::Call: {
    if (const LayerDecl *layer = findLayer(e.Text))
      return (this->*layer->Fn)(e);
    if (Env.count(e.Text)) {
      Diags.error(e.Loc, "'" + e.Text + "' is a value, not a layer");
      return nullptr;
    }
    std::vector<std::string> names = layerNames();
    std::string message = "unknown layer '" + e.Text + "'";
    if (e.Text == "cross_entropy" || e.Text == "mse")
      message += "; losses are declared with `loss " + e.Text + "(...)`";
    else if (e.Text == "adam" || e.Text == "sgd")
      message += "; optimizers are declared with `optimizer " + e.Text + "(...)`";
    else
      message = withSuggestion(message, e.Text, names);
    Diags.error(e.Loc, message);
    return nullptr;
  }
  default:
    Diags.error(e.Loc, std::string("expected a tensor value, found ") +
                           describe(e));
    return nullptr;
  }
}

/// Evaluates a layer's tensor argument; labels may only feed the loss.
Node *Sema::tensorArg(const Expr *e) {
  if (e->K == Expr::Kind::Name) {
    auto it = Env.find(e->Text);
    if (it != Env.end() && it->second.IsLabel) {
      Diags.error(e->Loc, "label '" + e->Text +
                              "' can only be used by the loss");
      return nullptr;
    }
  }
  return eval(*e);
}

std::string Sema::paramPrefix(const std::string &layer) {
  int index = ++StmtLayerSeen[layer];
  if (StmtLayerCounts[layer] <= 1 && StmtLayerCounts.size() <= 1)
    return StmtName;
  return StmtName + "." + layer + std::to_string(index);
}

Node *Sema::addParam(const std::string &prefix, const std::string &suffix,
                     std::vector<int64_t> dims, InitKind init, double bound,
                     SourceLoc loc) {
  ParamSpec p;
  p.Name = prefix + "." + suffix;
  p.Ty = ir::Type{M->FloatType, dims};
  p.Offset = M->ParamElements;
  p.Init = init;
  p.InitArg = bound;
  int64_t elements = p.Ty.staticElements();
  if (elements > MaxParamElements - M->ParamElements) {
    Diags.error(loc, "the model has more than " +
                         std::to_string(MaxParamElements) + " parameters");
    return nullptr;
  }
  M->ParamElements += elements;
  ir::Attrs attrs;
  attrs.Name = p.Name;
  attrs.Offset = p.Offset;
  attrs.Target = p.Ty;
  p.Node = M->Forward->create(OpCode::Param, {}, attrs);
  M->Params.push_back(p);
  return p.Node;
}

std::optional<std::string> Sema::initScheme(const Expr *e,
                                            const std::string &layer) {
  if (!e)
    return std::string("pytorch");
  static const std::vector<std::string> schemes = {"pytorch", "glorot"};
  if (e->K == Expr::Kind::Name &&
      std::find(schemes.begin(), schemes.end(), e->Text) != schemes.end())
    return e->Text;
  Diags.error(e->Loc, withSuggestion(layer + " init must be `pytorch` or "
                                             "`glorot`",
                                     e->Text, schemes));
  return std::nullopt;
}

Initializer initializer(const std::string &scheme, int64_t fanIn,
                        int64_t fanOut) {
  if (scheme == "glorot") {
    // Keras' default: Glorot-uniform weights, zero biases.
    return {std::sqrt(6.0 / static_cast<double>(fanIn + fanOut)),
            InitKind::Zeros, 0};
  }
  // PyTorch's nn.Linear and nn.Conv2d default: weight and bias both
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  double bound = 1.0 / std::sqrt(static_cast<double>(fanIn));
  return {bound, InitKind::Uniform, bound};
}

Node *Sema::dense(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("dense", call.Loc, call.Args,
            {{"input", ArgKind::Tensor, true},
             {"units", ArgKind::Int, true},
             {"bias", ArgKind::Bool, false},
             {"init", ArgKind::Any, false}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  auto units = intValue(args[1], "dense units", 1, MaxDim);
  std::optional<bool> bias = true;
  if (args[2])
    bias = boolValue(args[2], "dense bias");
  auto init = initScheme(args[3], "dense");
  if (!x || !units || !bias || !init)
    return nullptr;
  // A sequence [N, T, features] gets the same layer at every time step.
  if (x->Ty.Dims.size() < 2 || x->Ty.Dims.size() > 3 || x->Ty.Dims[0] != N) {
    Diags.error(args[0]->Loc, "dense expects a batch of vectors "
                              "[N, features] or of sequences [N, steps, "
                              "features], got " + toString(x->Ty));
    if (x->Ty.Dims.size() > 3)
      Diags.note(call.Loc, "insert `flatten` before `dense` to make each row "
                           "one vector: `|> flatten |> dense(" +
                               (args[1] ? args[1]->Text : std::string("units")) + ")`");
    return nullptr;
  }
  int64_t fanIn = x->Ty.Dims.back();
  Initializer scheme = initializer(*init, fanIn, *units);
  std::string prefix = paramPrefix("dense");
  Node *weight = addParam(prefix, "weight", {*units, fanIn}, InitKind::Uniform,
                          scheme.WeightBound, call.Loc);
  if (!weight)
    return nullptr;
  ir::Attrs mm;
  mm.TransB = true;
  Node *y = create(OpCode::MatMul, {x, weight}, mm, call.Loc, "dense");
  if (y && *bias) {
    Node *b = addParam(prefix, "bias", {*units}, scheme.BiasInit,
                       scheme.BiasBound, call.Loc);
    if (!b)
      return nullptr;
    y = create(OpCode::Add, {y, b}, {}, call.Loc, "dense");
  }
  if (y)
    recordLayer(prefix, "dense", y, *units * fanIn + (*bias ? *units : 0));
  return y;
}

void Sema::recordLayer(const std::string &name, const std::string &kind,
                       const Node *output, int64_t params) {
  LayerInfo layer;
  layer.Name = name;
  layer.Kind = kind;
  layer.Output.assign(output->Ty.Dims.begin() + 1, output->Ty.Dims.end());
  layer.Params = params;
  M->Layers.push_back(layer);
}

void Sema::recordStep(const std::string &kind, const Node *output) {
  recordLayer(StmtName + "." + kind + std::to_string(++StmtLayerSeen[kind]),
              kind, output, 0);
}

Node *Sema::activation(const Expr &call, OpCode op) {
  std::vector<const Expr *> args;
  if (!bind(call.Text, call.Loc, call.Args, {{"input", ArgKind::Tensor, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  if (!x)
    return nullptr;
  if (x->Ty.Dims.size() < 2 && op == OpCode::Softmax) {
    Diags.error(args[0]->Loc, "softmax needs a batch of vectors, got " +
                                  toString(x->Ty));
    return nullptr;
  }
  Node *y = create(op, {x}, {}, call.Loc, call.Text);
  if (y)
    recordStep(call.Text, y);
  return y;
}

std::optional<std::pair<int64_t, int64_t>>
Sema::windowSize(const Expr *e, const std::string &what) {
  if (e->K == Expr::Kind::List) {
    if (e->Args.size() != 2) {
      Diags.error(e->Loc, what + " takes one integer or two, [height, width]");
      return std::nullopt;
    }
    auto h = intValue(e->Args[0].Value.get(), what, 1, MaxDim);
    auto w = intValue(e->Args[1].Value.get(), what, 1, MaxDim);
    if (!h || !w)
      return std::nullopt;
    return std::make_pair(*h, *w);
  }
  auto k = intValue(e, what, 1, MaxDim);
  if (!k)
    return std::nullopt;
  return std::make_pair(*k, *k);
}

bool Sema::checkImages(const Node *x, const Expr *arg,
                       const std::string &layer) {
  if (x->Ty.Dims.size() == 4 && x->Ty.Dims[0] == N)
    return true;
  Diags.error(arg->Loc, layer + " expects a batch of images [N, channels, "
                                "height, width], got " + toString(x->Ty));
  if (x->Ty.Dims.size() == 2 && x->Ty.Dims[0] == N)
    Diags.note(arg->Loc, "declare image inputs with their channels, height "
                         "and width, as in `input image: f32[1, 28, 28]`");
  return false;
}

Node *Sema::conv2d(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("conv2d", call.Loc, call.Args,
            {{"input", ArgKind::Tensor, true},
             {"channels", ArgKind::Int, true},
             {"kernel", ArgKind::Int, true},
             {"stride", ArgKind::Int, false},
             {"padding", ArgKind::Int, false},
             {"bias", ArgKind::Bool, false},
             {"init", ArgKind::Any, false}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  auto channels = intValue(args[1], "conv2d channels", 1, MaxDim);
  auto kernel = windowSize(args[2], "conv2d kernel");
  std::optional<int64_t> stride = 1, padding = 0;
  if (args[3])
    stride = intValue(args[3], "conv2d stride", 1, MaxDim);
  if (args[4])
    padding = intValue(args[4], "conv2d padding", 0, MaxDim);
  std::optional<bool> bias = true;
  if (args[5])
    bias = boolValue(args[5], "conv2d bias");
  auto init = initScheme(args[6], "conv2d");
  if (!x || !channels || !kernel || !stride || !padding || !bias || !init ||
      !checkImages(x, args[0], "conv2d"))
    return nullptr;
  int64_t inChannels = x->Ty.Dims[1];
  auto [kh, kw] = *kernel;
  int64_t fanIn = inChannels * kh * kw;
  Initializer scheme = initializer(*init, fanIn, *channels * kh * kw);
  ir::Attrs window;
  window.KernelH = kh;
  window.KernelW = kw;
  window.Stride = *stride;
  window.Pad = *padding;
  // Check the shape before adding parameters, so that an error adds none.
  if (x->Ty.Dims[2] + 2 * *padding < kh || x->Ty.Dims[3] + 2 * *padding < kw) {
    Diags.error(args[2]->Loc,
                "conv2d: the kernel (" + std::to_string(kh) + "x" +
                    std::to_string(kw) + ") is larger than the input (" +
                    std::to_string(x->Ty.Dims[2]) + "x" +
                    std::to_string(x->Ty.Dims[3]) +
                    (*padding ? " padded by " + std::to_string(*padding) : "") + ")");
    return nullptr;
  }
  std::string prefix = paramPrefix("conv2d");
  Node *weight = addParam(prefix, "weight", {*channels, inChannels, kh, kw},
                          InitKind::Uniform, scheme.WeightBound, call.Loc);
  if (!weight)
    return nullptr;
  Node *y = create(OpCode::Conv2D, {x, weight}, window, call.Loc, "conv2d");
  if (y && *bias) {
    Node *b = addParam(prefix, "bias", {*channels}, scheme.BiasInit,
                       scheme.BiasBound, call.Loc);
    if (!b)
      return nullptr;
    ir::Attrs column;
    column.Target = ir::Type{M->FloatType, {*channels, 1, 1}};
    y = create(OpCode::Add,
               {y, M->Forward->create(OpCode::Reshape, {b}, column)}, {},
               call.Loc, "conv2d");
  }
  if (y)
    recordLayer(prefix, "conv2d", y, *channels * fanIn + (*bias ? *channels : 0));
  return y;
}

Node *Sema::maxPool2d(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("max_pool2d", call.Loc, call.Args,
            {{"input", ArgKind::Tensor, true},
             {"kernel", ArgKind::Int, true},
             {"stride", ArgKind::Int, false},
             {"padding", ArgKind::Int, false}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  auto kernel = windowSize(args[1], "max_pool2d kernel");
  std::optional<int64_t> stride, padding = 0;
  if (args[2])
    stride = intValue(args[2], "max_pool2d stride", 1, MaxDim);
  if (args[3])
    padding = intValue(args[3], "max_pool2d padding", 0, MaxDim);
  if (!x || !kernel || (args[2] && !stride) || !padding ||
      !checkImages(x, args[0], "max_pool2d"))
    return nullptr;
  auto [kh, kw] = *kernel;
  if (*padding * 2 > std::min(kh, kw)) {
    Diags.error(args[3]->Loc, "max_pool2d padding must be at most half the "
                              "kernel size");
    return nullptr;
  }
  ir::Attrs window;
  window.KernelH = kh;
  window.KernelW = kw;
  window.Stride = stride.value_or(kh); // PyTorch: the stride defaults to the kernel
  window.Pad = *padding;
  Node *y = create(OpCode::MaxPool2D, {x}, window, args[1]->Loc, "max_pool2d");
  if (y)
    recordLayer(StmtName + ".max_pool2d" +
                    std::to_string(++StmtLayerSeen["max_pool2d"]),
                "max_pool2d", y, 0);
  return y;
}

Node *Sema::flatten(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("flatten", call.Loc, call.Args, {{"input", ArgKind::Tensor, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  if (!x)
    return nullptr;
  if (x->Ty.Dims.size() < 2 || x->Ty.Dims[0] != N) {
    Diags.error(args[0]->Loc, "flatten expects a batch [N, ...], got " +
                                  toString(x->Ty));
    return nullptr;
  }
  ir::Attrs rows;
  rows.Target = ir::Type{x->Ty.Elem, {N, x->Ty.staticElements()}};
  Node *y = create(OpCode::Reshape, {x}, rows, call.Loc, "flatten");
  if (y)
    recordStep("flatten", y);
  return y;
}

Node *Sema::dropout(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("dropout", call.Loc, call.Args,
            {{"input", ArgKind::Tensor, true}, {"p", ArgKind::Number, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  auto p = numberValue(args[1], "dropout p");
  if (!x || !p)
    return nullptr;
  if (*p < 0 || *p >= 1) {
    Diags.error(args[1]->Loc, "dropout p must be in [0, 1), got " + args[1]->Text);
    return nullptr;
  }
  if (!x->Ty.isBatched()) {
    Diags.error(args[0]->Loc, "dropout expects a batch [N, ...], got " +
                                  toString(x->Ty));
    return nullptr;
  }
  ir::Attrs attrs;
  attrs.Value = *p;
  attrs.Offset = DropoutCount++;
  Node *y = create(OpCode::Dropout, {x}, attrs, call.Loc, "dropout");
  if (y)
    recordStep("dropout", y);
  return y;
}

Node *Sema::embedding(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("embedding", call.Loc, call.Args,
            {{"input", ArgKind::Tensor, true}, {"dim", ArgKind::Int, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  auto dim = intValue(args[1], "embedding dim", 1, MaxDim);
  if (!x || !dim)
    return nullptr;
  const IoSpec *io = nullptr;
  for (const IoSpec &in : M->Inputs)
    if (in.Node == x && in.IsIndex)
      io = &in;
  if (!io) {
    Diags.error(args[0]->Loc, "embedding looks up integer indices, got " +
                                  toString(x->Ty));
    Diags.note(call.Loc, "declare the input as `index[V]`, or `index[T, V]` "
                         "for sequences of T indices below V");
    return nullptr;
  }
  std::string prefix = paramPrefix("embedding");
  // PyTorch's nn.Embedding: weights drawn from N(0, 1).
  Node *table = addParam(prefix, "weight", {io->Classes, *dim}, InitKind::Normal,
                         1.0, call.Loc);
  if (!table)
    return nullptr;
  Node *y = create(OpCode::Gather, {table, x}, {}, call.Loc, "embedding");
  if (y)
    recordLayer(prefix, "embedding", y, io->Classes * *dim);
  return y;
}

Node *Sema::concat(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("concat", call.Loc, call.Args,
            {{"first", ArgKind::Tensor, true}, {"second", ArgKind::Tensor, true}},
            args, call.Piped))
    return nullptr;
  Node *a = tensorArg(args[0]);
  Node *b = tensorArg(args[1]);
  if (!a || !b)
    return nullptr;
  if (!a->Ty.isBatched() || !b->Ty.isBatched() || a->Ty.Dims.size() < 2) {
    Diags.error(call.Loc, "concat joins two values computed per row, got " +
                              toString(a->Ty) + " and " + toString(b->Ty));
    return nullptr;
  }
  Node *y = create(OpCode::Concat, {a, b}, {}, call.Loc, "concat");
  if (y)
    recordStep("concat", y);
  return y;
}

bool Sema::checkSequence(const Node *x, const Expr *arg,
                         const std::string &layer) {
  if (x->Ty.Dims.size() == 3 && x->Ty.Dims[0] == N)
    return true;
  Diags.error(arg->Loc, layer + " expects a batch of sequences [N, steps, "
                                "features], got " + toString(x->Ty));
  Diags.note(arg->Loc, "a sequence comes from an input `f32[T, F]`, or from an "
                       "input `index[T, V]` through `embedding`");
  return false;
}

Node *Sema::paddingMask(Node *x) {
  // Follow the sequence back through per-step layers to the index input
  // it was looked up from; index 0 is padding (docs/language.md).
  while (x && x->Op != OpCode::Gather) {
    Node *next = nullptr;
    for (Node *operand : x->Operands)
      if (!next && operand->Ty.Dims.size() >= 3 && operand->Ty.Dims[0] == N &&
          operand->Ty.Dims[1] == x->Ty.Dims[1])
        next = operand;
    x = next;
  }
  if (!x || x->Operands[1]->Ty.Dims.size() != 2)
    return nullptr;
  ir::Graph &g = *M->Forward;
  ir::Attrs toFloat;
  toFloat.Target.Elem = M->FloatType;
  Node *indices = g.create(OpCode::ToFloat, {x->Operands[1]}, toFloat);
  return g.binary(OpCode::Greater, indices, g.constant(0, M->FloatType));
}

Node *Sema::lstm(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("lstm", call.Loc, call.Args,
            {{"input", ArgKind::Tensor, true}, {"hidden", ArgKind::Int, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  auto hidden = intValue(args[1], "lstm hidden", 1, 1 << 16);
  if (!x || !hidden || !checkSequence(x, args[0], "lstm"))
    return nullptr;
  int64_t h = *hidden, features = x->Ty.Dims[2];
  // PyTorch's nn.LSTM: every weight and bias from U(-1/sqrt(H), 1/sqrt(H)),
  // gates in the order i, f, g, o.
  double bound = 1.0 / std::sqrt(double(h));
  std::string prefix = paramPrefix("lstm");
  Node *wIh = addParam(prefix, "weight_ih", {4 * h, features}, InitKind::Uniform,
                       bound, call.Loc);
  Node *wHh = wIh ? addParam(prefix, "weight_hh", {4 * h, h}, InitKind::Uniform,
                             bound, call.Loc)
                  : nullptr;
  Node *bIh = wHh ? addParam(prefix, "bias_ih", {4 * h}, InitKind::Uniform,
                             bound, call.Loc)
                  : nullptr;
  Node *bHh = bIh ? addParam(prefix, "bias_hh", {4 * h}, InitKind::Uniform,
                             bound, call.Loc)
                  : nullptr;
  if (!bHh)
    return nullptr;
  // The input's part of every gate is one matrix product over all steps;
  // only the recurrent part is in the loop.
  ir::Graph &g = *M->Forward;
  ir::Attrs transB;
  transB.TransB = true;
  Node *gates = g.create(OpCode::MatMul, {x, wIh}, transB);
  gates = g.binary(OpCode::Add, g.binary(OpCode::Add, gates, bIh), bHh);
  Node *state = g.create(OpCode::Lstm, {gates, wHh});
  ir::Attrs hiddenPart;
  hiddenPart.Target = ir::Type{M->FloatType, {N, x->Ty.Dims[1], h}};
  Node *y = g.create(OpCode::Slice, {state}, hiddenPart);
  recordLayer(prefix, "lstm", y, 4 * h * (features + h + 2));
  return y;
}

Node *Sema::meanPool(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("mean_pool", call.Loc, call.Args, {{"input", ArgKind::Tensor, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  if (!x || !checkSequence(x, args[0], "mean_pool"))
    return nullptr;
  ir::Graph &g = *M->Forward;
  int64_t steps = x->Ty.Dims[1];
  ir::Attrs overSteps;
  overSteps.Axis = 1;
  Node *y;
  if (Node *mask = paddingMask(x)) {
    // The mean over real tokens: padding is zeroed, then the sum divided by
    // the number of tokens (at least 1, for an all-padding row).
    ir::Attrs column;
    column.Target = ir::Type{M->FloatType, {N, steps, 1}};
    Node *kept = g.binary(OpCode::Mul, x, g.create(OpCode::Reshape, {mask}, column));
    ir::Attrs keep = overSteps;
    keep.KeepDim = true;
    Node *count = g.binary(OpCode::Max, g.create(OpCode::ReduceSum, {mask}, keep),
                           g.constant(1, M->FloatType));
    y = g.binary(OpCode::Div, g.create(OpCode::ReduceSum, {kept}, overSteps), count);
  } else {
    y = g.binary(OpCode::Div, g.create(OpCode::ReduceSum, {x}, overSteps),
                 g.constant(double(steps), M->FloatType));
  }
  recordStep("mean_pool", y);
  return y;
}

Node *Sema::last(const Expr &call) {
  std::vector<const Expr *> args;
  if (!bind("last", call.Loc, call.Args, {{"input", ArgKind::Tensor, true}},
            args, call.Piped))
    return nullptr;
  Node *x = tensorArg(args[0]);
  if (!x || !checkSequence(x, args[0], "last"))
    return nullptr;
  ir::Graph &g = *M->Forward;
  int64_t steps = x->Ty.Dims[1], width = x->Ty.Dims[2];
  Node *y;
  Node *mask = paddingMask(x);
  if (mask && steps > 1) {
    // With padding at the end, mask[t] - mask[t + 1] is 1 at the last real
    // token only; the value there is the sum of the steps weighted by it.
    ir::Attrs later;
    later.Offset = 1;
    later.Target = ir::Type{M->FloatType, {N, steps - 1}};
    ir::Attrs back;
    back.Target = mask->Ty;
    Node *next = g.create(OpCode::Unslice, {g.create(OpCode::Slice, {mask}, later)}, back);
    ir::Attrs column;
    column.Target = ir::Type{M->FloatType, {N, steps, 1}};
    Node *pick = g.create(OpCode::Reshape, {g.binary(OpCode::Sub, mask, next)}, column);
    ir::Attrs overSteps;
    overSteps.Axis = 1;
    y = g.create(OpCode::ReduceSum, {g.binary(OpCode::Mul, x, pick)}, overSteps);
  } else {
    // No padding (or a single step): the last step of every row.
    ir::Attrs flat;
    flat.Target = ir::Type{M->FloatType, {N, steps * width}};
    ir::Attrs lastStep;
    lastStep.Offset = (steps - 1) * width;
    lastStep.Target = ir::Type{M->FloatType, {N, width}};
    y = g.create(OpCode::Slice, {g.create(OpCode::Reshape, {x}, flat)}, lastStep);
    if (mask)
      y = g.binary(OpCode::Mul, y, mask); // one step: zero when it is padding
  }
  recordStep("last", y);
  return y;
}

void Sema::buildLoss(const ast::Stmt &stmt) {
  if (SawLoss) {
    Diags.error(stmt.Loc, "a model has one loss; this is the second");
    Diags.note(FirstLossLoc, "the first loss is here");
    return;
  }
  SawLoss = true;
  FirstLossLoc = stmt.Loc;
  const Expr &call = *stmt.Value;
  beginStatement("loss", call);
  if (call.K != Expr::Kind::Call) {
    Diags.error(call.Loc, "expected a loss such as cross_entropy(logits, y) "
                          "or mse(prediction, y)");
    return;
  }
  static const std::vector<std::pair<std::string, LossKind>> losses = {
      {"cross_entropy", LossKind::CrossEntropy},
      {"mse", LossKind::MeanSquaredError},
      {"binary_cross_entropy", LossKind::BinaryCrossEntropy}};
  std::vector<std::string> lossNames;
  const LossKind *kind = nullptr;
  for (const auto &[name, k] : losses) {
    lossNames.push_back(name);
    if (call.Text == name)
      kind = &k;
  }
  if (!kind) {
    Diags.error(call.Loc, withSuggestion("unknown loss '" + call.Text + "'",
                                         call.Text, lossNames));
    return;
  }
  std::vector<const Expr *> args;
  if (!bind(call.Text, call.Loc, call.Args,
            {{"prediction", ArgKind::Tensor, true},
             {"target", ArgKind::Tensor, true}},
            args))
    return;
  Node *pred = tensorArg(args[0]);
  Node *target = eval(*args[1]);
  if (!pred || !target)
    return;
  // The target is a label, or for the element-wise losses an input (an
  // autoencoder reconstructs its input).
  const IoSpec *io = nullptr;
  bool targetIsInput = false;
  for (const IoSpec &l : M->Labels)
    if (l.Node == target && args[1]->K == Expr::Kind::Name)
      io = &l;
  for (const IoSpec &in : M->Inputs)
    if (in.Node == target && args[1]->K == Expr::Kind::Name) {
      io = &in;
      targetIsInput = true;
    }
  if (!io || (targetIsInput && *kind == LossKind::CrossEntropy)) {
    Diags.error(args[1]->Loc,
                call.Text + ": the target must be a label declared with "
                            "`label`" +
                    (*kind == LossKind::CrossEntropy ? "" : " or an input"));
    return;
  }
  if (io->IsIndex) {
    Diags.error(args[1]->Loc, call.Text + ": the target must be a label or "
                                          "features, not the indices '" +
                                  io->Name + "'");
    return;
  }
  // A sequence of class labels [N, T] scores predictions [N, T, classes].
  bool sequence = io->IsClass && !io->Dims.empty();
  if (sequence && *kind == LossKind::CrossEntropy) {
    std::vector<int64_t> want = {N, io->Dims[0], io->Classes};
    if (pred->Ty.Dims != want) {
      Diags.error(args[0]->Loc,
                  "cross_entropy: label '" + io->Name + "' holds sequences of " +
                      std::to_string(io->Dims[0]) + " classes out of " +
                      std::to_string(io->Classes) +
                      ", so the prediction must be [N, " +
                      std::to_string(io->Dims[0]) + ", " +
                      std::to_string(io->Classes) + "], got " + toString(pred->Ty));
      return;
    }
  } else if (pred->Ty.Dims.size() != 2 || pred->Ty.Dims[0] != N) {
    Diags.error(args[0]->Loc, call.Text + " expects predictions of shape "
                                          "[N, outputs], got " +
                                  toString(pred->Ty));
    return;
  }
  if (*kind == LossKind::CrossEntropy && io->IsClass && !sequence &&
      pred->Ty.Dims[1] != io->Classes) {
    Diags.error(args[0]->Loc,
                "cross_entropy: the prediction has " +
                    std::to_string(pred->Ty.Dims[1]) + " columns but label '" +
                    io->Name + "' has " + std::to_string(io->Classes) +
                    " classes");
    return;
  }
  if (*kind != LossKind::CrossEntropy && io->IsClass) {
    Diags.error(args[1]->Loc, call.Text + " needs float targets; label '" +
                                  io->Name + "' holds classes");
    return;
  }
  if (!io->IsClass && pred->Ty != target->Ty) {
    Diags.error(args[0]->Loc, call.Text + ": prediction " + toString(pred->Ty) +
                                  " and target " + toString(target->Ty) +
                                  " differ in shape");
    return;
  }

  ir::Graph &g = *M->Forward;
  ir::DType ft = M->FloatType;
  ir::Attrs scalar;
  scalar.Target.Elem = ft;
  Node *batch = g.create(OpCode::BatchSize, {}, scalar);
  // Every loss is a mean: over rows for cross-entropy (as PyTorch's
  // CrossEntropyLoss), over all elements for the element-wise losses.
  Node *elements = g.binary(OpCode::Mul, batch,
                            g.constant(pred->Ty.staticElements(), ft));
  M->LossK = *kind;
  switch (*kind) {
  case LossKind::CrossEntropy: {
    // Probabilities from softmax are taken back to logits so that the loss
    // is the stable log-softmax form (softmax + cross-entropy as one op).
    Node *logits = pred->Op == OpCode::Softmax ? pred->Operands[0] : pred;
    Node *logProbs = g.create(OpCode::LogSoftmax, {logits});
    Node *weights = target; // one-hot rows or class probabilities
    if (io->IsClass) {
      ir::Attrs oneHot;
      oneHot.Axis = io->Classes;
      oneHot.Target.Elem = ft;
      weights = g.create(OpCode::OneHot, {target}, oneHot);
    }
    Node *picked = g.create(OpCode::SumAll, {g.binary(OpCode::Mul, weights, logProbs)});
    // Padding positions of a sequence hold the label -1, whose one-hot row
    // is zero (PyTorch's ignore_index): the mean is over the real tokens.
    Node *count = batch;
    if (sequence)
      count = g.binary(OpCode::Max, g.create(OpCode::SumAll, {weights}),
                       g.constant(1, ft));
    M->Loss = g.binary(OpCode::Div, g.unary(OpCode::Neg, picked), count);
    break;
  }
  case LossKind::MeanSquaredError: {
    Node *diff = g.binary(OpCode::Sub, pred, target);
    Node *sum = g.create(OpCode::SumAll, {g.binary(OpCode::Mul, diff, diff)});
    M->Loss = g.binary(OpCode::Div, sum, elements);
    break;
  }
  case LossKind::BinaryCrossEntropy: {
    // PyTorch's BCEWithLogitsLoss: max(z, 0) - z*t + log(1 + exp(-|z|)),
    // which never takes the exponential of a large positive number. Sigmoid
    // outputs are taken back to their logits, as softmax is above.
    Node *z = pred->Op == OpCode::Sigmoid ? pred->Operands[0] : pred;
    Node *zero = g.constant(0, ft), *one = g.constant(1, ft);
    Node *absZ = g.binary(OpCode::Max, z, g.unary(OpCode::Neg, z));
    Node *softplus = g.unary(
        OpCode::Log,
        g.binary(OpCode::Add, one, g.unary(OpCode::Exp, g.unary(OpCode::Neg, absZ))));
    Node *terms = g.binary(OpCode::Add,
                           g.binary(OpCode::Sub, g.binary(OpCode::Max, z, zero),
                                    g.binary(OpCode::Mul, z, target)),
                           softplus);
    M->Loss = g.binary(OpCode::Div, g.create(OpCode::SumAll, {terms}), elements);
    break;
  }
  }
  M->Prediction = pred;
  M->PredictionName =
      args[0]->K == Expr::Kind::Name ? args[0]->Text : std::string("output");
}

void Sema::readOptimizer(const ast::Stmt &stmt) {
  if (SawOptimizer) {
    Diags.error(stmt.Loc, "a model has one optimizer; this is the second");
    Diags.note(FirstOptimizerLoc, "the first optimizer is here");
    return;
  }
  SawOptimizer = true;
  FirstOptimizerLoc = stmt.Loc;
  const Expr &call = *stmt.Value;
  std::vector<std::string> names;
  const OptimizerDecl *decl = nullptr;
  for (const OptimizerDecl &d : optimizerTable()) {
    names.push_back(d.Name);
    if (call.Text == d.Name)
      decl = &d;
  }
  if (call.K != Expr::Kind::Call && call.K != Expr::Kind::Name) {
    Diags.error(call.Loc, "expected an optimizer such as adam(lr = 0.001)");
    return;
  }
  if (!decl) {
    Diags.error(call.Loc, withSuggestion("unknown optimizer '" + call.Text + "'",
                                         call.Text, names));
    return;
  }
  std::vector<ParamDecl> signature;
  for (const HyperParam &p : decl->Params)
    signature.push_back({p.Name, isFlag(p) ? ArgKind::Bool : ArgKind::Number,
                         false});
  std::vector<const Expr *> args;
  if (!bind(call.Text, call.Loc, call.Args, signature, args))
    return;
  OptimizerSpec spec;
  spec.Kind = decl->Name;
  for (size_t i = 0; i < decl->Params.size(); ++i) {
    const HyperParam &p = decl->Params[i];
    double value = p.Default;
    if (args[i]) {
      std::string what = call.Text + " " + p.Name;
      if (signature[i].Kind == ArgKind::Bool) {
        auto b = boolValue(args[i], what);
        if (!b)
          continue;
        value = *b;
      } else {
        auto v = numberValue(args[i], what);
        if (!v)
          continue;
        value = *v;
        bool low = p.MinOpen ? value <= p.Min : value < p.Min;
        bool high = p.MaxOpen ? value >= p.Max : value > p.Max;
        if (low || high) {
          Diags.error(args[i]->Loc, what + " must be in " + formatRange(p) +
                                        ", got " + args[i]->Text);
          continue;
        }
      }
    }
    spec.Hyper.emplace_back(p.Name, value);
  }
  if (spec.Kind == "sgd" && spec.get("nesterov") != 0 &&
      spec.get("momentum") == 0) {
    Diags.error(call.Loc, "sgd: nesterov needs a momentum above 0");
  }
  M->Optimizer = spec;
}

//===----------------------------------------------------------------------===//
// Data and train blocks
//===----------------------------------------------------------------------===//

void Sema::readData(const ast::Block &block) {
  std::map<std::string, SourceLoc> seen;
  bool haveSource = false;
  for (const ast::Setting &s : block.Settings) {
    if (!seen.emplace(s.Key, s.Loc).second) {
      Diags.error(s.Loc, "setting '" + s.Key + "' is given twice");
      Diags.note(seen[s.Key], "it was first given here");
      continue;
    }
    std::vector<const Expr *> args;
    if (s.Key == "source") {
      if (!bind("source", s.Loc, s.Args, {{"reader", ArgKind::Any, true}}, args))
        continue;
      haveSource = true;
      readSource(*args[0]);
    } else if (s.Key == "split") {
      if (!bind("split", s.Loc, s.Args,
                {{"train", ArgKind::Number, true},
                 {"test", ArgKind::Number, false},
                 {"seed", ArgKind::Int, false}},
                args))
        continue;
      auto train = numberValue(args[0], "split train");
      std::optional<double> test = 0.0;
      if (args[1])
        test = numberValue(args[1], "split test");
      if (train && (*train <= 0 || *train > 1)) {
        Diags.error(args[0]->Loc, "split train must be in (0, 1], got " +
                                      args[0]->Text);
        train.reset();
      }
      if (test && (*test < 0 || *test >= 1)) {
        Diags.error(args[1]->Loc, "split test must be in [0, 1), got " +
                                      args[1]->Text);
        test.reset();
      }
      if (train && test && *train + *test > 1 + 1e-9) {
        Diags.error(s.Loc, "split fractions add up to more than 1: train " +
                               args[0]->Text + " + test " + args[1]->Text);
        continue;
      }
      if (args[2])
        if (auto seed = intValue(args[2], "split seed", 0, INT64_MAX / 2))
          M->Data.SplitSeed = *seed;
      if (train && test) {
        M->Data.TrainFraction = *train;
        M->Data.TestFraction = *test;
        HasTestSplit = *test > 0;
      }
    } else if (s.Key == "standardize") {
      if (!bind("standardize", s.Loc, s.Args, {{"on", ArgKind::Bool, true}},
                args))
        continue;
      if (auto on = boolValue(args[0], "standardize"))
        M->Data.Standardize = *on;
    } else {
      Diags.error(s.Loc, withSuggestion("unknown data setting '" + s.Key + "'",
                                        s.Key,
                                        {"source", "split", "standardize"}));
    }
  }
  if (M->Data.SourceKind == "idx" && seen.count("split"))
    Diags.error(seen["split"], "an idx source comes split into training and "
                               "test files; remove this split");
  if (!haveSource && !seen.count("source"))
    Diags.error(block.Loc, "the data block needs a source, such as "
                           "`source csv(\"data.csv\", label = \"y\")`");
}

void Sema::readSource(const Expr &reader) {
  static const std::vector<std::pair<std::string, void (Sema::*)(const Expr &)>>
      sources = {{"csv", &Sema::readCsvSource},
                 {"idx", &Sema::readIdxSource},
                 {"linear", &Sema::readLinearSource},
                 {"blobs", &Sema::readBlobsSource},
                 {"ratings", &Sema::readRatingsSource},
                 {"tagged", &Sema::readTextSource},
                 {"polarity", &Sema::readTextSource}};
  std::vector<std::string> names;
  for (const auto &[name, read] : sources) {
    names.push_back(name);
    if (reader.K == Expr::Kind::Call && reader.Text == name) {
      SourceCall = reader.Loc;
      return (this->*read)(reader);
    }
  }
  if (reader.K == Expr::Kind::Call)
    Diags.error(reader.Loc, withSuggestion("unknown data source '" +
                                               reader.Text + "'",
                                           reader.Text, names));
  else
    Diags.error(reader.Loc, "expected a data source such as "
                            "csv(\"file.csv\", label = \"column\")");
}

std::string Sema::specPath(const std::string &path) {
  std::filesystem::path p(path);
  if (p.is_relative())
    p = std::filesystem::absolute(std::filesystem::path(Opts.SpecDir) / p)
            .lexically_normal();
  return p.string();
}

void Sema::readIdxSource(const Expr &reader) {
  std::vector<const Expr *> args;
  if (!bind("idx", reader.Loc, reader.Args,
            {{"path", ArgKind::String, true}, {"range", ArgKind::Any, false}},
            args))
    return;
  auto path = stringValue(args[0], "idx path");
  if (!path)
    return;
  if (path->empty()) {
    Diags.error(args[0]->Loc, "idx path is empty");
    return;
  }
  double low = 0, high = 1;
  if (args[1]) {
    const Expr *range = args[1];
    if (range->K != Expr::Kind::List || range->Args.size() != 2) {
      Diags.error(range->Loc, "idx range must be [low, high], the values that "
                              "pixel bytes 0 and 255 become");
      return;
    }
    auto lo = numberValue(range->Args[0].Value.get(), "idx range low");
    auto hi = numberValue(range->Args[1].Value.get(), "idx range high");
    if (!lo || !hi)
      return;
    if (!(*lo < *hi)) {
      Diags.error(range->Loc, "idx range: low must be below high");
      return;
    }
    low = *lo;
    high = *hi;
  }
  M->Data.SourceKind = "idx";
  M->Data.SourcePath = specPath(*path);
  HasTestSplit = true; // the training and test files are the split
  M->Data.SourceArgs = {{"low", formatExact(low)}, {"high", formatExact(high)}};
}

void Sema::readBlobsSource(const Expr &reader) {
  std::vector<const Expr *> args;
  if (!bind("blobs", reader.Loc, reader.Args,
            {{"rows", ArgKind::Int, true},
             {"features", ArgKind::Int, true},
             {"centers", ArgKind::Int, true},
             {"std", ArgKind::Number, false},
             {"box", ArgKind::Any, false},
             {"seed", ArgKind::Int, false}},
            args))
    return;
  auto rows = intValue(args[0], "blobs rows", 1, int64_t(1) << 31);
  auto features = intValue(args[1], "blobs features", 1, MaxDim);
  auto centers = intValue(args[2], "blobs centers", 1, 1 << 20);
  std::optional<double> stddev = 1.0;
  if (args[3])
    stddev = numberValue(args[3], "blobs std");
  if (stddev && *stddev < 0) {
    Diags.error(args[3]->Loc, "blobs std must be at least 0");
    stddev.reset();
  }
  // scikit-learn's make_blobs draws the centres from U(-10, 10).
  double low = -10, high = 10;
  if (args[4]) {
    const Expr *box = args[4];
    std::optional<double> lo, hi;
    if (box->K == Expr::Kind::List && box->Args.size() == 2) {
      lo = numberValue(box->Args[0].Value.get(), "blobs box low");
      hi = numberValue(box->Args[1].Value.get(), "blobs box high");
    } else {
      Diags.error(box->Loc, "blobs box must be [low, high], the range of the "
                            "centres' coordinates");
      return;
    }
    if (!lo || !hi)
      return;
    if (*lo > *hi) {
      Diags.error(box->Loc, "blobs box: low must not exceed high");
      return;
    }
    low = *lo;
    high = *hi;
  }
  std::optional<int64_t> seed = 0;
  if (args[5])
    seed = intValue(args[5], "blobs seed", 0, INT64_MAX / 2);
  if (!rows || !features || !centers || !stddev || !seed)
    return;
  if (*centers > *rows) {
    Diags.error(args[2]->Loc, "blobs: more centers than rows");
    return;
  }
  M->Data.SourceKind = "blobs";
  M->Data.SourceArgs = {{"rows", std::to_string(*rows)},
                        {"features", std::to_string(*features)},
                        {"centers", std::to_string(*centers)},
                        {"std", formatExact(*stddev)},
                        {"low", formatExact(low)},
                        {"high", formatExact(high)},
                        {"seed", std::to_string(*seed)}};
}

void Sema::readRatingsSource(const Expr &reader) {
  std::vector<const Expr *> args;
  if (!bind("ratings", reader.Loc, reader.Args,
            {{"users", ArgKind::Int, true},
             {"items", ArgKind::Int, true},
             {"rank", ArgKind::Int, false},
             {"noise", ArgKind::Number, false},
             {"seed", ArgKind::Int, false}},
            args))
    return;
  auto users = intValue(args[0], "ratings users", 1, 1 << 20);
  auto items = intValue(args[1], "ratings items", 1, 1 << 20);
  std::optional<int64_t> rank = 5, seed = 0;
  if (args[2])
    rank = intValue(args[2], "ratings rank", 1, 1024);
  std::optional<double> noise = 0.05;
  if (args[3])
    noise = numberValue(args[3], "ratings noise");
  if (noise && *noise < 0) {
    Diags.error(args[3]->Loc, "ratings noise must be at least 0");
    return;
  }
  if (args[4])
    seed = intValue(args[4], "ratings seed", 0, INT64_MAX / 2);
  if (!users || !items || !rank || !noise || !seed)
    return;
  if (*users * *items > (int64_t(1) << 31)) {
    Diags.error(reader.Loc, "ratings: more than 2^31 user-item pairs");
    return;
  }
  M->Data.SourceKind = "ratings";
  M->Data.SourceArgs = {{"users", std::to_string(*users)},
                        {"items", std::to_string(*items)},
                        {"rank", std::to_string(*rank)},
                        {"noise", formatExact(*noise)},
                        {"seed", std::to_string(*seed)}};
}

void Sema::readTextSource(const Expr &reader) {
  std::vector<const Expr *> args;
  if (!bind(reader.Text, reader.Loc, reader.Args,
            {{"path", ArgKind::String, true}}, args))
    return;
  auto path = stringValue(args[0], reader.Text + " path");
  if (!path)
    return;
  if (path->empty()) {
    Diags.error(args[0]->Loc, reader.Text + " path is empty");
    return;
  }
  M->Data.SourceKind = reader.Text;
  M->Data.SourcePath = specPath(*path);
}

void Sema::readCsvSource(const Expr &reader) {
  std::vector<const Expr *> csv;
  if (!bind("csv", reader.Loc, reader.Args,
            {{"path", ArgKind::String, true}, {"label", ArgKind::Any, true}},
            csv))
    return;
  auto path = stringValue(csv[0], "csv path");
  if (!path)
    return;
  if (path->empty()) {
    Diags.error(csv[0]->Loc, "csv path is empty");
    return;
  }
  M->Data.SourceKind = "csv";
  M->Data.SourcePath = specPath(*path);
  std::vector<const Expr *> columns;
  if (csv[1]->K == Expr::Kind::List) {
    for (const ast::Arg &element : csv[1]->Args)
      columns.push_back(element.Value.get());
  } else {
    columns.push_back(csv[1]);
  }
  if (columns.empty())
    Diags.error(csv[1]->Loc, "csv label needs at least one column");
  for (const Expr *column : columns) {
    if (column->K == Expr::Kind::String) {
      auto name = stringValue(column, "csv label column");
      // The manifest lists the label columns separated by commas.
      if (name && name->find(',') != std::string::npos)
        Diags.error(column->Loc, "csv label column names cannot contain ','; "
                                 "give the column's 0-based index instead");
      else if (name)
        M->Data.LabelColumns.push_back(*name);
    } else if (column->K == Expr::Kind::Number) {
      if (auto index = intValue(column, "csv label column index", 0, 1 << 20))
        M->Data.LabelColumns.push_back("#" + std::to_string(*index));
    } else {
      Diags.error(column->Loc, "csv label must name a column (a string) "
                               "or give its 0-based index");
    }
  }
}

/// `uniform(a, b)`, `linspace(a, b)` or `normal(std)`, as the runtime's
/// `kind:a:b` text; `allowed` lists the kinds this argument takes.
std::optional<std::string>
Sema::distribution(const Expr *e, const std::string &what,
                   const std::vector<std::string> &allowed) {
  bool known = e->K == Expr::Kind::Call &&
               std::find(allowed.begin(), allowed.end(), e->Text) != allowed.end();
  if (!known) {
    std::string list;
    for (size_t i = 0; i < allowed.size(); ++i)
      list += (i ? (i + 1 == allowed.size() ? " or " : ", ") : "") +
              allowed[i] + (allowed[i] == "normal" ? "(std)" : "(low, high)");
    Diags.error(e->Loc, what + " must be " + list);
    return std::nullopt;
  }
  bool normal = e->Text == "normal";
  std::vector<const Expr *> args;
  std::vector<ParamDecl> signature =
      normal ? std::vector<ParamDecl>{{"std", ArgKind::Number, true}}
             : std::vector<ParamDecl>{{"low", ArgKind::Number, true},
                                      {"high", ArgKind::Number, true}};
  if (!bind(e->Text, e->Loc, e->Args, signature, args))
    return std::nullopt;
  std::string text = e->Text;
  std::vector<double> values;
  for (const Expr *arg : args) {
    auto v = numberValue(arg, what);
    if (!v)
      return std::nullopt;
    values.push_back(*v);
  }
  if (normal ? values[0] < 0 : values[0] > values[1]) {
    Diags.error(e->Loc, what + ": " +
                            (normal ? "the standard deviation must be at least 0"
                                    : "low must not exceed high"));
    return std::nullopt;
  }
  for (double v : values)
    text += ":" + formatExact(v);
  return text;
}

void Sema::readLinearSource(const Expr &reader) {
  std::vector<const Expr *> args;
  if (!bind("linear", reader.Loc, reader.Args,
            {{"rows", ArgKind::Int, true},
             {"x", ArgKind::Any, true},
             {"slope", ArgKind::Number, false},
             {"intercept", ArgKind::Number, false},
             {"noise", ArgKind::Any, false},
             {"seed", ArgKind::Int, false}},
            args))
    return;
  auto rows = intValue(args[0], "linear rows", 1, int64_t(1) << 31);
  auto x = distribution(args[1], "linear x", {"uniform", "linspace"});
  std::optional<double> slope = 1.0, intercept = 0.0;
  if (args[2])
    slope = numberValue(args[2], "linear slope");
  if (args[3])
    intercept = numberValue(args[3], "linear intercept");
  std::optional<std::string> noise = "none";
  if (args[4])
    noise = distribution(args[4], "linear noise", {"normal", "uniform"});
  std::optional<int64_t> seed = 0;
  if (args[5])
    seed = intValue(args[5], "linear seed", 0, INT64_MAX / 2);
  if (!rows || !x || !slope || !intercept || !noise || !seed)
    return;
  M->Data.SourceKind = "linear";
  M->Data.SourceArgs = {{"rows", std::to_string(*rows)},
                        {"x", *x},
                        {"slope", formatExact(*slope)},
                        {"intercept", formatExact(*intercept)},
                        {"noise", *noise},
                        {"seed", std::to_string(*seed)}};
}

void Sema::readTrain(const ast::Block &block) {
  std::map<std::string, SourceLoc> seen;
  for (const ast::Setting &s : block.Settings) {
    if (!seen.emplace(s.Key, s.Loc).second) {
      Diags.error(s.Loc, "setting '" + s.Key + "' is given twice");
      Diags.note(seen[s.Key], "it was first given here");
      continue;
    }
    std::vector<const Expr *> args;
    if (s.Key == "report") {
      readReport(s);
      continue;
    }
    static const std::vector<std::string> keys = {"epochs", "batch", "shuffle",
                                                  "seed", "report"};
    if (std::find(keys.begin(), keys.end(), s.Key) == keys.end()) {
      Diags.error(s.Loc, withSuggestion("unknown train setting '" + s.Key + "'",
                                        s.Key, keys));
      continue;
    }
    if (!bind(s.Key, s.Loc, s.Args, {{"value", ArgKind::Any, true}}, args))
      continue;
    const Expr *v = args[0];
    if (s.Key == "epochs") {
      if (auto epochs = intValue(v, "epochs", 0, 1000000000))
        M->Train.Epochs = *epochs;
    } else if (s.Key == "batch") {
      if (v->K == Expr::Kind::Name && v->Text == "all")
        M->Train.Batch = 0;
      else if (v->K == Expr::Kind::Number && v->IsInteger)
        M->Train.Batch = intValue(v, "batch", 1, 1 << 24).value_or(1);
      else
        Diags.error(v->Loc, "batch must be a row count or `all`");
    } else if (s.Key == "shuffle") {
      if (auto on = boolValue(v, "shuffle"))
        M->Train.Shuffle = *on;
    } else if (s.Key == "seed") {
      if (auto seed = intValue(v, "seed", 0, INT64_MAX / 2))
        M->Train.Seed = *seed;
    }
  }
}

void Sema::readReport(const ast::Setting &s) {
  std::set<std::string> seenItems;
  for (const ast::Arg &arg : s.Args) {
    const Expr &item = *arg.Value;
    if (!arg.Name.empty() ||
        (item.K != Expr::Kind::Call && item.K != Expr::Kind::Name)) {
      Diags.error(arg.NameLoc, "expected a report item: loss(every = N), "
                               "accuracy(test), mse(test), summary, weights "
                               "or time");
      continue;
    }
    if (!seenItems.insert(item.Text).second) {
      Diags.error(item.Loc, "report item '" + item.Text + "' is given twice");
      continue;
    }
    std::vector<const Expr *> args;
    if (item.Text == "loss") {
      if (!bind("loss", item.Loc, item.Args,
                {{"every", ArgKind::Int, false}}, args))
        continue;
      if (args[0])
        if (auto every = intValue(args[0], "loss every", 1, 1000000000))
          M->Train.ReportEvery = *every;
    } else if (item.Text == "summary") {
      if (bind("summary", item.Loc, item.Args, {}, args))
        M->Train.PrintSummary = true;
    } else if (item.Text == "weights") {
      if (bind("weights", item.Loc, item.Args, {}, args))
        M->Train.PrintWeights = true;
    } else if (item.Text == "time") {
      if (bind("time", item.Loc, item.Args, {}, args))
        M->Train.PrintTime = true;
    } else if (item.Text == "accuracy" || item.Text == "mse") {
      if (!bind(item.Text, item.Loc, item.Args,
                {{"split", ArgKind::Any, false}}, args))
        continue;
      std::string split = "test";
      if (args[0]) {
        if (args[0]->K != Expr::Kind::Name ||
            (args[0]->Text != "test" && args[0]->Text != "train")) {
          Diags.error(args[0]->Loc, item.Text + " is measured on `test` or `train`");
          continue;
        }
        split = args[0]->Text;
      }
      bool accuracy = item.Text == "accuracy";
      bool classes = false, features = false;
      for (const IoSpec &l : M->Labels) {
        classes |= l.IsClass;
        features |= !l.IsClass;
      }
      if (accuracy && !classes) {
        Diags.error(item.Loc, "accuracy needs class labels; this model has none");
        continue;
      }
      if (!accuracy && (!features || M->LossK != LossKind::MeanSquaredError)) {
        Diags.error(item.Loc, "mse is reported for a model trained with `loss "
                              "mse(prediction, label)`");
        continue;
      }
      if (split == "test" && !HasTestSplit) {
        Diags.error(item.Loc, item.Text + " on test needs a test split: add "
                              "`split train = 0.8, test = 0.2` to the data block");
        continue;
      }
      M->Train.Metrics.emplace_back(item.Text, split);
    } else {
      Diags.error(item.Loc, withSuggestion("unknown report item '" + item.Text +
                                               "'",
                                           item.Text,
                                           {"loss", "accuracy", "mse",
                                            "summary", "weights", "time"}));
    }
  }
}


void Sema::checkSourceSlots(const ast::Spec &spec) {
  const std::string &kind = M->Data.SourceKind;
  auto slots = [&] {
    return std::to_string(M->Inputs.size()) + " input" +
           (M->Inputs.size() == 1 ? "" : "s") + " and " +
           std::to_string(M->Labels.size()) + " label" +
           (M->Labels.size() == 1 ? "" : "s");
  };
  auto isFeatures = [](const IoSpec &io) { return !io.isInteger(); };
  auto indexSequence = [](const IoSpec &io) {
    return io.IsIndex && io.Dims.size() == 1;
  };
  if (kind == "linear") {
    auto oneValue = [](const IoSpec &io) {
      return !io.isInteger() && io.Node->Ty.staticElements() == 1;
    };
    if (M->Inputs.size() != 1 || M->Labels.size() != 1 ||
        !oneValue(M->Inputs[0]) || !oneValue(M->Labels[0]))
      Diags.error(SourceCall, "linear data feed one input f32[1] and "
                              "one label f32[1]");
  } else if (kind == "blobs") {
    int64_t features = std::stoll(M->Data.SourceArgs[1].second);
    int64_t centers = std::stoll(M->Data.SourceArgs[2].second);
    bool ok = M->Inputs.size() == 1 &&
              M->Inputs[0].Node->Ty.staticElements() == features &&
              isFeatures(M->Inputs[0]) &&
              (M->Labels.empty() ||
               (M->Labels.size() == 1 && M->Labels[0].IsClass &&
                M->Labels[0].Dims.empty() && M->Labels[0].Classes == centers));
    if (!ok)
      Diags.error(SourceCall,
                  "blobs data feed one input of " + std::to_string(features) +
                      " features and, optionally, one label class[" +
                      std::to_string(centers) + "] (the blob of each row); "
                      "model '" + M->Name + "' has " + slots());
  } else if (kind == "idx") {
    if (M->Inputs.size() != 1 || M->Labels.size() != 1 ||
        !isFeatures(M->Inputs[0]) || !M->Labels[0].IsClass ||
        !M->Labels[0].Dims.empty())
      Diags.error(SourceCall, "idx data feed one image input and one class "
                              "label; model '" + M->Name + "' has " + slots());
  } else if (kind == "ratings") {
    auto range = [&](size_t i) { return M->Data.SourceArgs[i].second; };
    auto indices = [&](size_t i) {
      const IoSpec &in = M->Inputs[i];
      return in.IsIndex && in.Dims.empty() &&
             std::to_string(in.Classes) == range(i);
    };
    if (M->Inputs.size() != 2 || M->Labels.size() != 1 || !indices(0) ||
        !indices(1) || !isFeatures(M->Labels[0]) ||
        M->Labels[0].Node->Ty.staticElements() != 1)
      Diags.error(SourceCall, "ratings data feed two inputs, `index[" +
                                  range(0) + "]` (the user) and `index[" +
                                  range(1) + "]` (the item), and one label "
                                  "f32[1] (the rating); model '" + M->Name +
                                  "' has " + slots());
  } else if (kind == "tagged" || kind == "polarity") {
    bool tagged = kind == "tagged";
    bool ok = M->Inputs.size() == 1 && M->Labels.size() == 1 &&
              indexSequence(M->Inputs[0]) && M->Labels[0].IsClass;
    if (ok && tagged)
      ok = M->Labels[0].Dims == M->Inputs[0].Dims;
    if (ok && !tagged)
      ok = M->Labels[0].Dims.empty();
    if (!ok)
      Diags.error(SourceCall,
                  std::string(kind) + " data feed one input `index[T, V]` (the "
                  "words of a sentence, cut or padded to T) and one label " +
                  (tagged ? "`class[T, K]` (a tag per word)"
                          : "`class[K]` (the sentence's polarity)") +
                  "; model '" + M->Name + "' has " + slots());
  } else if (kind == "csv") {
    if (M->Inputs.size() != 1 || M->Labels.size() != 1) {
      Diags.error(spec.DataBlocks[0].Loc,
                  "a csv source feeds one input and one label; model '" +
                      M->Name + "' has " + slots());
      return;
    }
    const IoSpec &label = M->Labels[0];
    if (!isFeatures(M->Inputs[0]) || (label.IsClass && !label.Dims.empty())) {
      Diags.error(spec.DataBlocks[0].Loc,
                  "a csv source feeds features and a label of features or "
                  "one class; index inputs and sequences of classes come "
                  "from the ratings, tagged and polarity sources");
      return;
    }
    size_t want = label.IsClass ? 1 : label.Node->Ty.staticElements();
    if (M->Data.LabelColumns.size() != want)
      Diags.error(spec.DataBlocks[0].Loc,
                  "label '" + label.Name + "' takes " + std::to_string(want) +
                      " csv column" + (want == 1 ? "" : "s") +
                      ", the source names " +
                      std::to_string(M->Data.LabelColumns.size()));
  }
}

void Sema::readAfter(const ast::Block &block) {
  for (const ast::Setting &s : block.Settings) {
    if (s.Key == "kmeans")
      readKMeans(s);
    else if (s.Key == "predict")
      readPredict(s);
    else
      Diags.error(s.Loc, withSuggestion("unknown after-training step '" +
                                            s.Key + "'",
                                        s.Key, {"kmeans", "predict"}));
  }
}

void Sema::readKMeans(const ast::Setting &s) {
  std::vector<const Expr *> args;
  if (!bind("kmeans", s.Loc, s.Args,
            {{"value", ArgKind::Any, true},
             {"k", ArgKind::Int, true},
             {"restarts", ArgKind::Int, false},
             {"seed", ArgKind::Int, false},
             {"truth", ArgKind::Any, false}},
            args))
    return;
  const Expr *value = args[0];
  if (value->K != Expr::Kind::Name) {
    Diags.error(value->Loc, "kmeans clusters a named value of the model, such "
                            "as `kmeans code, k = 3`");
    return;
  }
  auto it = Env.find(value->Text);
  if (it == Env.end()) {
    Diags.error(value->Loc, withSuggestion("unknown value '" + value->Text + "'",
                                           value->Text, EnvOrder));
    return;
  }
  Node *node = it->second.Tensor;
  if (!node)
    return; // already reported
  if (it->second.IsLabel || !node->Ty.isBatched() || node->Ty.Dims[0] != N) {
    Diags.error(value->Loc, "kmeans needs a value computed per row, not " +
                                std::string(it->second.IsLabel ? "a label"
                                                               : toString(node->Ty)));
    return;
  }
  auto k = intValue(args[1], "kmeans k", 1, 1 << 16);
  std::optional<int64_t> restarts = 10, seed = 0;
  if (args[2])
    restarts = intValue(args[2], "kmeans restarts", 1, 10000);
  if (args[3])
    seed = intValue(args[3], "kmeans seed", 0, INT64_MAX / 2);
  std::string truth;
  if (args[4]) {
    const Expr *t = args[4];
    const IoSpec *label = nullptr;
    for (const IoSpec &l : M->Labels)
      if (t->K == Expr::Kind::Name && l.Name == t->Text)
        label = &l;
    if (!label || !label->IsClass) {
      Diags.error(t->Loc, "kmeans truth must name a class label of the model");
      return;
    }
    truth = label->Name;
  }
  if (!k || !restarts || !seed)
    return;
  bool probed = false;
  for (const ProbeSpec &p : M->Probes)
    probed |= p.Name == value->Text;
  if (!probed)
    M->Probes.push_back({value->Text, node});
  AfterStep step;
  step.Kind = "kmeans";
  step.Args = {{"value", value->Text},
               {"k", std::to_string(*k)},
               {"restarts", std::to_string(*restarts)},
               {"seed", std::to_string(*seed)}};
  if (!truth.empty())
    step.Args.emplace_back("truth", truth);
  M->After.push_back(step);
}

void Sema::readPredict(const ast::Setting &s) {
  AfterStep step;
  step.Kind = "predict";
  const ast::Arg &first = s.Args[0];
  if (first.Name.empty()) {
    // predict train|test [, rows = K]: the first K rows of a split.
    std::vector<const Expr *> args;
    if (!bind("predict", s.Loc, s.Args,
              {{"split", ArgKind::Any, true}, {"rows", ArgKind::Int, false}},
              args))
      return;
    if (args[0]->K != Expr::Kind::Name ||
        (args[0]->Text != "train" && args[0]->Text != "test")) {
      Diags.error(args[0]->Loc, "predict takes a split, `train` or `test`, "
                                "or a value for each input: `predict user = "
                                "3, item = 7`");
      return;
    }
    if (args[0]->Text == "test" && !HasTestSplit) {
      Diags.error(args[0]->Loc, "predict test needs a test split");
      return;
    }
    std::optional<int64_t> rows = 0;
    if (args[1])
      rows = intValue(args[1], "predict rows", 1, INT32_MAX);
    if (!rows)
      return;
    step.Args = {{"split", args[0]->Text}, {"rows", std::to_string(*rows)}};
    M->After.push_back(step);
    return;
  }
  // predict name = value, ...: one row made of the given input values.
  std::set<std::string> given;
  bool ok = true;
  for (const ast::Arg &arg : s.Args) {
    const IoSpec *input = nullptr;
    std::vector<std::string> names;
    for (const IoSpec &in : M->Inputs) {
      names.push_back(in.Name);
      if (in.Name == arg.Name)
        input = &in;
    }
    if (arg.Name.empty() || !input) {
      Diags.error(arg.Name.empty() ? arg.Value->Loc : arg.NameLoc,
                  arg.Name.empty() ? std::string("predict: name the input this "
                                                 "value is for")
                                   : withSuggestion("predict: the model has no "
                                                    "input '" + arg.Name + "'",
                                                    arg.Name, names));
      ok = false;
      continue;
    }
    if (!given.insert(arg.Name).second) {
      Diags.error(arg.NameLoc, "predict: input '" + arg.Name + "' is given twice");
      ok = false;
      continue;
    }
    std::string what = "predict " + arg.Name;
    if (input->IsIndex && input->Dims.empty()) {
      auto index = intValue(arg.Value.get(), what, 0, input->Classes - 1);
      if (!index) {
        ok = false;
        continue;
      }
      step.Args.emplace_back(arg.Name, std::to_string(*index));
    } else if (!input->isInteger() && input->Node->Ty.staticElements() == 1) {
      auto value = numberValue(arg.Value.get(), what);
      if (!value) {
        ok = false;
        continue;
      }
      step.Args.emplace_back(arg.Name, formatExact(*value));
    } else {
      Diags.error(arg.Value->Loc, "predict takes single values; input '" +
                                      arg.Name + "' holds " +
                                      toString(input->Node->Ty) +
                                      " per row: use `predict test` instead");
      ok = false;
    }
  }
  for (const IoSpec &in : M->Inputs)
    if (ok && !given.count(in.Name)) {
      Diags.error(s.Loc, "predict needs a value for input '" + in.Name + "'");
      ok = false;
    }
  if (ok)
    M->After.push_back(step);
}

//===----------------------------------------------------------------------===//
// Driver
//===----------------------------------------------------------------------===//

std::unique_ptr<Model> Sema::run(const ast::Spec &spec) {
  if (spec.Models.empty()) {
    Diags.error({}, "the spec has no model block");
    return nullptr;
  }
  for (size_t i = 1; i < spec.Models.size(); ++i)
    Diags.error(spec.Models[i].Loc, "a spec holds one model; '" +
                                        spec.Models[i].Name + "' is the second");
  const ast::Model &model = spec.Models[0];
  M = std::make_unique<Model>();
  M->Name = model.Name;
  M->FloatType = Opts.FloatType;
  M->Forward = std::make_unique<ir::Graph>("forward");

  for (const ast::Stmt &stmt : model.Stmts) {
    switch (stmt.K) {
    case ast::Stmt::Kind::Input:
    case ast::Stmt::Kind::Label:
      declareIo(stmt);
      break;
    case ast::Stmt::Kind::Assign:
      assign(stmt);
      break;
    case ast::Stmt::Kind::Loss:
      buildLoss(stmt);
      break;
    case ast::Stmt::Kind::Optimizer:
      readOptimizer(stmt);
      break;
    }
  }
  if (M->Inputs.empty() && !Diags.hasErrors())
    Diags.error(model.Loc, "model '" + model.Name +
                               "' has no input; declare one with "
                               "`input x: f32[features]`");
  if (!SawLoss)
    Diags.error(model.Loc, "model '" + model.Name +
                               "' has no loss; add one such as "
                               "`loss cross_entropy(logits, y)`");
  if (!SawOptimizer)
    Diags.error(model.Loc, "model '" + model.Name +
                               "' has no optimizer; add one such as "
                               "`optimizer adam(lr = 0.001)`");
  if (SawLoss && M->Params.empty() && !Diags.hasErrors())
    Diags.error(model.Loc, "model '" + model.Name +
                               "' has no parameters to train");

  if (spec.DataBlocks.empty())
    Diags.error(model.Loc, "the spec has no data block; add one with "
                           "`data { source csv(\"file.csv\", label = \"y\") }`");
  for (size_t i = 1; i < spec.DataBlocks.size(); ++i)
    Diags.error(spec.DataBlocks[i].Loc, "a spec holds one data block");
  if (!spec.DataBlocks.empty())
    readData(spec.DataBlocks[0]);
  for (size_t i = 1; i < spec.TrainBlocks.size(); ++i)
    Diags.error(spec.TrainBlocks[i].Loc, "a spec holds one train block");
  if (!spec.TrainBlocks.empty())
    readTrain(spec.TrainBlocks[0]);

  for (size_t i = 1; i < spec.AfterBlocks.size(); ++i)
    Diags.error(spec.AfterBlocks[i].Loc, "a spec holds one after block");
  if (!spec.AfterBlocks.empty())
    readAfter(spec.AfterBlocks[0]);
  if (!Diags.hasErrors())
    checkSourceSlots(spec);
  if (Diags.hasErrors())
    return nullptr;
  // The call's input array holds the inputs, then the labels (runtime.h).
  for (size_t i = 0; i < M->Labels.size(); ++i)
    M->Labels[i].Node->A.Offset = M->Inputs.size() + i;
  return std::move(M);
}

} // namespace

double OptimizerSpec::get(const std::string &name) const {
  for (const auto &[key, value] : Hyper)
    if (key == name)
      return value;
  return 0;
}

std::unique_ptr<Model> analyze(const ast::Spec &spec, const SemaOptions &opts,
                               DiagnosticEngine &diags) {
  Sema sema(opts, diags);
  return sema.run(spec);
}

std::vector<std::string> layerNames() {
  std::vector<std::string> names;
  for (const Sema::LayerDecl &layer : Sema::layers())
    names.push_back(layer.Name);
  return names;
}

} // namespace nnc
