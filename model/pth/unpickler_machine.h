// The unpickler's state and the class that runs a pickle, shared by the three
// files that implement it in the order data flows: unpickler.cpp reads the
// opcodes onto the stack, unpickler_globals.cpp holds the allow-list and builds
// what each allowed global stands for, unpickler_tree.cpp turns the result into
// the public Value tree at STOP. Internal to model/pth: unpickler.h is the interface.
#pragma once

#include "model/pth/unpickler.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace alexnet::pth::unpickling {

// Values are built in an arena of nodes addressed by index while the pickle
// runs: pickles mutate containers after referencing them (memo, APPEND), so
// they may form cycles or deep chains; the public tree is made at STOP, with
// depth and size limits, and the arena is freed without recursion.
struct Node {
  enum class Type { kNone, kBool, kInt, kBigInt, kFloat, kString, kList, kTuple, kDict, kGlobal, kStorage, kTensor };
  Type type = Type::kNone;
  int64_t i = 0;        // kBool, kInt
  double f = 0.0;       // kFloat
  std::string s;        // kString; kGlobal's "module.name"; kDict's type name
  std::vector<uint32_t> items;  // kList, kTuple; kDict as key, value, key, value...
  int64_t attributes = -1;      // kDict: the node of an OrderedDict's BUILD state (a dict), if any
};  // kStorage and kTensor keep their index into storages_ / tensors_ in `i`
using Type = Node::Type;

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const StorageLoader& load, const std::string& source,
            UnpickleLimits limits, PickleKind kind)
      : data_(data), size_(size), load_(load), source_(source), limits_(limits), kind_(kind) {}

  Value run(size_t* consumed);

 private:
  [[noreturn]] void fail(const std::string& what) const;

  // --- unpickler.cpp: reading the opcode stream, every length checked before use ---
  const uint8_t* take(uint64_t n);
  uint8_t byte() { return *take(1); }
  uint64_t le(int n);
  std::string text(uint64_t n);
  std::string line();  // GLOBAL's newline-terminated fields

  // --- unpickler.cpp: arena and stack ---
  uint32_t add(Node node);
  uint32_t add(Type type);
  void push(uint32_t node) { stack_.push_back(node); }
  uint32_t pop();
  uint32_t top();
  size_t stack_floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<uint32_t> pop_mark();
  Node& node(uint32_t index) { return nodes_[index]; }
  Node& expect(uint32_t index, Type type, const char* what);
  int64_t int_of(uint32_t index, const char* what);
  std::vector<int64_t> ints_of(uint32_t index, const char* what);
  void memo_put(uint64_t key);
  void memo_get(uint64_t key);
  void push_int(int64_t v);
  void push_long(uint64_t n);
  void push_tensor(TensorRecord t);
  void push_string(std::string s);
  void push_container(Type type, std::vector<uint32_t> items, std::string dict_type = "");
  void set_items(std::vector<uint32_t> kv);
  void append_items(const std::vector<uint32_t>& items, Type type);

  // --- unpickler.cpp: one opcode; each family returns false for an opcode not its own ---
  void step(uint8_t op);
  bool stack_op(uint8_t op);
  bool scalar_op(uint8_t op);
  bool string_op(uint8_t op);
  bool container_op(uint8_t op);
  bool memo_op(uint8_t op);
  bool object_op(uint8_t op);

  // --- unpickler_globals.cpp: the allow-list and what its entries build ---
  void push_global(const std::string& module, const std::string& name);
  void persistent_load(uint32_t pid_index);
  TensorRecord rebuild_tensor(const std::vector<uint32_t>& args);
  void reduce();
  void newobj(uint32_t cls_index);
  void build();

  // --- unpickler_tree.cpp: the public tree, built once at STOP ---
  Value to_value(uint32_t index, size_t depth, size_t* budget);
  Value dict_value(const Node& n, size_t depth, size_t* budget);

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  const StorageLoader& load_;
  const std::string& source_;
  UnpickleLimits limits_;
  PickleKind kind_;
  std::vector<Node> nodes_;
  std::vector<std::shared_ptr<const Storage>> storages_;
  std::vector<TensorRecord> tensors_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
};

}  // namespace alexnet::pth::unpickling
