//===- Graph.h - The tensor IR: one SSA graph of tensor ops -----*- C++ -*-===//
//
// A Graph is a list of Nodes in topological order (operands always come
// first) plus the Stores that write its results into the call's buffers.
// Shapes are static except for the batch dimension N, which a shape may hold
// at most once, so that every buffer's size is `a + b * N` bytes.
//
//===----------------------------------------------------------------------===//
#ifndef NNC_IR_GRAPH_H
#define NNC_IR_GRAPH_H

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace nnc::ir {

enum class DType : uint8_t { F32, F64, I32 };
const char *toString(DType type);
inline unsigned byteSize(DType type) { return type == DType::F64 ? 8 : 4; }

/// The batch dimension, whose size is known only when the code runs.
constexpr int64_t N = -1;

struct Type {
  DType Elem = DType::F32;
  std::vector<int64_t> Dims; ///< Empty: a scalar.

  bool isBatched() const;
  /// Product of the static dimensions (N counts as 1).
  int64_t staticElements() const;
  bool operator==(const Type &other) const {
    return Elem == other.Elem && Dims == other.Dims;
  }
  bool operator!=(const Type &other) const { return !(*this == other); }
};
std::string toString(const Type &type);

enum class OpCode : uint16_t {
#define NNC_OP(Enum, Name, Arity, Category) Enum,
#include "ir/Ops.def"
};

/// The attributes an op may carry; each op documents which it reads.
struct Attrs {
  int64_t Axis = 0;    ///< reduce_sum, softmax axis; one_hot classes.
  int64_t Offset = 0;  ///< input index; param/state offset; dropout stream.
  bool TransA = false; ///< matmul: use A transposed.
  bool TransB = false; ///< matmul: use B transposed.
  bool KeepDim = false;
  double Value = 0;    ///< constant value; dropout probability.
  /// conv2d and max_pool2d: window size, stride and zero padding.
  int64_t KernelH = 0, KernelW = 0, Stride = 1, Pad = 0;
  std::string Name;    ///< input, param and state names.
  Type Target;         ///< broadcast, reshape and leaf result types.
};

struct Node {
  unsigned Id = 0;
  OpCode Op;
  std::vector<Node *> Operands;
  Type Ty;
  Attrs A;
};

/// Where a Store writes: the buffers of nnc_call.
enum class Buffer : uint8_t { Params, State, Grads, Output, Loss };
const char *toString(Buffer buffer);

struct Store {
  Node *Value;
  Buffer Dest;
  int64_t Offset = 0; ///< Element offset into the buffer.
  std::string Name;   ///< What is stored, for printing.
};

class Graph {
public:
  explicit Graph(std::string name) : Name(std::move(name)) {}
  Graph(const Graph &) = delete;
  Graph &operator=(const Graph &) = delete;

  const std::string &name() const { return Name; }

  /// Adds a node after inferring its type; on a shape error returns null and
  /// sets `error` (user-facing words, without location).
  Node *tryCreate(OpCode op, std::vector<Node *> operands, Attrs attrs,
                  std::string &error);
  /// Adds a node whose shape is known to be valid (an internal error if not).
  Node *create(OpCode op, std::vector<Node *> operands, Attrs attrs = {});

  // Shorthands used by autodiff and the optimizers.
  Node *constant(double value, DType type);
  Node *unary(OpCode op, Node *a) { return create(op, {a}); }
  Node *binary(OpCode op, Node *a, Node *b) { return create(op, {a, b}); }

  void addStore(Node *value, Buffer dest, int64_t offset, std::string name) {
    Stores.push_back({value, dest, offset, std::move(name)});
  }

  const std::vector<std::unique_ptr<Node>> &nodes() const { return Nodes; }
  const std::vector<Store> &stores() const { return Stores; }
  std::vector<Store> &stores() { return Stores; }

  /// Hands the node list to a pass, which gives it back with setNodes.
  std::vector<std::unique_ptr<Node>> releaseNodes() { return std::move(Nodes); }
  /// Replaces the node list (passes rebuild it); renumbers the nodes.
  void setNodes(std::vector<std::unique_ptr<Node>> nodes);

  /// A copy of this graph under another name; `map` receives old -> new.
  std::unique_ptr<Graph> clone(std::string name,
                               std::unordered_map<const Node *, Node *> &map) const;

  void print(std::ostream &os) const;
  /// Checks order, types and stores; returns "" or the first problem.
  std::string verify() const;

private:
  std::string Name;
  std::vector<std::unique_ptr<Node>> Nodes;
  std::vector<Store> Stores;
};

} // namespace nnc::ir

#endif // NNC_IR_GRAPH_H
