//===- Graph.cpp - Tensor IR construction, printing and verification ------===//

#include "ir/Graph.h"
#include "ir/Ops.h"

#include <cmath>
#include <cstring>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

namespace nnc::ir {

const char *toString(DType type) {
  switch (type) {
  case DType::F32: return "f32";
  case DType::F64: return "f64";
  case DType::I32: return "i32";
  }
  return "?";
}

const char *toString(Buffer buffer) {
  switch (buffer) {
  case Buffer::Params: return "params";
  case Buffer::State: return "state";
  case Buffer::Grads: return "grads";
  case Buffer::Output: return "output";
  case Buffer::Loss: return "loss";
  }
  return "?";
}

bool Type::isBatched() const {
  for (int64_t d : Dims)
    if (d == N)
      return true;
  return false;
}

int64_t Type::staticElements() const {
  int64_t count = 1;
  for (int64_t d : Dims)
    if (d != N)
      count *= d;
  return count;
}

std::string toString(const Type &type) {
  std::string s = toString(type.Elem);
  s += '[';
  for (size_t i = 0; i < type.Dims.size(); ++i) {
    if (i)
      s += ',';
    s += type.Dims[i] == N ? std::string("N") : std::to_string(type.Dims[i]);
  }
  return s + ']';
}

/// Checks once that Ops.def and the table in Ops.cpp agree op by op.
static void checkRegistry() {
  static const bool checked = [] {
    const char *names[] = {
#define NNC_OP(Enum, Name, Arity, Category) Name,
#include "ir/Ops.def"
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i)
      if (std::strcmp(names[i], opInfo(static_cast<OpCode>(i)).Name) != 0)
        throw std::logic_error(std::string("op registry out of order at ") +
                               names[i]);
    return true;
  }();
  (void)checked;
}

Node *Graph::tryCreate(OpCode op, std::vector<Node *> operands, Attrs attrs,
                       std::string &error) {
  checkRegistry();
  const OpInfo &info = opInfo(op);
  if (info.Arity != static_cast<int>(operands.size())) {
    error = std::string(info.Name) + " takes " + std::to_string(info.Arity) +
            " operands, got " + std::to_string(operands.size());
    return nullptr;
  }
  Type type;
  error = info.InferType(operands, attrs, type);
  if (!error.empty())
    return nullptr;
  int batchDims = 0;
  for (int64_t d : type.Dims)
    batchDims += d == N;
  if (batchDims > 1) {
    error = "result " + toString(type) + " has the batch dimension twice";
    return nullptr;
  }
  auto node = std::make_unique<Node>();
  node->Id = Nodes.size();
  node->Op = op;
  node->Operands = std::move(operands);
  node->Ty = std::move(type);
  node->A = std::move(attrs);
  Nodes.push_back(std::move(node));
  return Nodes.back().get();
}

Node *Graph::create(OpCode op, std::vector<Node *> operands, Attrs attrs) {
  std::string error;
  Node *node = tryCreate(op, std::move(operands), std::move(attrs), error);
  if (!node)
    throw std::logic_error(std::string("internal error: ") +
                           opInfo(op).Name + ": " + error);
  return node;
}

Node *Graph::constant(double value, DType type) {
  Attrs attrs;
  attrs.Value = value;
  attrs.Target = Type{type, {}};
  return create(OpCode::Constant, {}, attrs);
}

void Graph::setNodes(std::vector<std::unique_ptr<Node>> nodes) {
  Nodes = std::move(nodes);
  for (size_t i = 0; i < Nodes.size(); ++i)
    Nodes[i]->Id = i;
}

std::unique_ptr<Graph>
Graph::clone(std::string name,
             std::unordered_map<const Node *, Node *> &map) const {
  auto copy = std::make_unique<Graph>(std::move(name));
  for (const auto &node : Nodes) {
    auto n = std::make_unique<Node>(*node);
    for (Node *&operand : n->Operands)
      operand = map.at(operand);
    map[node.get()] = n.get();
    copy->Nodes.push_back(std::move(n));
  }
  for (const Store &store : Stores)
    copy->Stores.push_back(
        {map.at(store.Value), store.Dest, store.Offset, store.Name});
  return copy;
}

static std::string formatNumber(double value) {
  std::ostringstream os;
  os.precision(9);
  os << value;
  return os.str();
}

void Graph::print(std::ostream &os) const {
  os << "graph @" << Name << " {\n";
  for (const auto &node : Nodes) {
    const OpInfo &info = opInfo(node->Op);
    os << "  %" << node->Id << " = " << info.Name;
    for (size_t i = 0; i < node->Operands.size(); ++i)
      os << (i ? ", %" : " %") << node->Operands[i]->Id;
    const Attrs &a = node->A;
    std::vector<std::string> attrs;
    switch (node->Op) {
    case OpCode::Input:
      attrs.push_back("\"" + a.Name + "\" #" + std::to_string(a.Offset));
      break;
    case OpCode::Param:
    case OpCode::State:
      attrs.push_back("\"" + a.Name + "\" @" + std::to_string(a.Offset));
      break;
    case OpCode::Constant:
      attrs.push_back(formatNumber(a.Value));
      break;
    case OpCode::MatMul:
      if (a.TransA)
        attrs.push_back("transA");
      if (a.TransB)
        attrs.push_back("transB");
      break;
    case OpCode::ReduceSum:
      attrs.push_back("axis=" + std::to_string(a.Axis));
      if (a.KeepDim)
        attrs.push_back("keepdim");
      break;
    case OpCode::OneHot:
      attrs.push_back("classes=" + std::to_string(a.Axis));
      break;
    case OpCode::Conv2D:
    case OpCode::Conv2DGradInput:
    case OpCode::Conv2DGradFilter:
    case OpCode::MaxPool2D:
    case OpCode::MaxPool2DGrad:
      attrs.push_back("kernel=" + std::to_string(a.KernelH) + "x" +
                      std::to_string(a.KernelW));
      attrs.push_back("stride=" + std::to_string(a.Stride));
      attrs.push_back("pad=" + std::to_string(a.Pad));
      break;
    case OpCode::Slice:
    case OpCode::Unslice:
      attrs.push_back("offset=" + std::to_string(a.Offset));
      break;
    case OpCode::Dropout:
      attrs.push_back("p=" + formatNumber(a.Value));
      attrs.push_back("stream=" + std::to_string(a.Offset));
      break;
    default:
      break;
    }
    if (!attrs.empty()) {
      bool leaf = info.Category == OpCategory::Leaf;
      os << (leaf ? " " : " {");
      for (size_t i = 0; i < attrs.size(); ++i)
        os << (i ? ", " : "") << attrs[i];
      os << (leaf ? "" : "}");
    }
    os << " : " << toString(node->Ty) << '\n';
  }
  for (const Store &store : Stores) {
    os << "  store %" << store.Value->Id << " -> " << toString(store.Dest);
    if (store.Dest != Buffer::Loss && store.Dest != Buffer::Output)
      os << " @" << store.Offset;
    os << " \"" << store.Name << "\"\n";
  }
  os << "}\n";
}

std::string Graph::verify() const {
  std::unordered_set<const Node *> seen;
  for (const auto &node : Nodes) {
    std::string where = Name + ": %" + std::to_string(node->Id) + " (" +
                        opInfo(node->Op).Name + ")";
    for (const Node *operand : node->Operands)
      if (!seen.count(operand))
        return where + " uses a value defined after it or outside the graph";
    Type type;
    std::string error = opInfo(node->Op).InferType(node->Operands, node->A, type);
    if (!error.empty())
      return where + ": " + error;
    if (type != node->Ty)
      return where + " has type " + toString(node->Ty) + " but its operands give " +
             toString(type);
    seen.insert(node.get());
  }
  for (const Store &store : Stores) {
    if (!seen.count(store.Value))
      return Name + ": store of \"" + store.Name + "\" reads a value outside the graph";
    bool batched = store.Value->Ty.isBatched();
    bool wantsBatched = store.Dest == Buffer::Output;
    if (batched != wantsBatched)
      return Name + ": store of \"" + store.Name + "\" to " + toString(store.Dest) +
             (batched ? " has a batch dimension" : " lacks the batch dimension");
    if (store.Dest == Buffer::Loss && !store.Value->Ty.Dims.empty())
      return Name + ": the loss must be a scalar";
  }
  return "";
}

} // namespace nnc::ir
