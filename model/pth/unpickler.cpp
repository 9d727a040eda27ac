#include "model/pth/unpickler.h"

#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace alexnet::pth {

namespace {

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

// The storage classes of torch.save; torch.<X>Storage in pickles.
struct StorageClass {
  const char* name;
  DType dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"torch.FloatStorage", DType::kFloat32},   {"torch.DoubleStorage", DType::kFloat64},
    {"torch.HalfStorage", DType::kFloat16},    {"torch.BFloat16Storage", DType::kBFloat16},
    {"torch.LongStorage", DType::kInt64},      {"torch.IntStorage", DType::kInt32},
    {"torch.ShortStorage", DType::kInt16},     {"torch.CharStorage", DType::kInt8},
    {"torch.ByteStorage", DType::kUInt8},      {"torch.BoolStorage", DType::kBool},
};

// Callables and classes a torchvision user's checkpoint refers to. Anything
// else is refused by name: unpickling never imports or runs code.
constexpr const char* kAllowedGlobals[] = {
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.device",
    "torch.Size",
    "argparse.Namespace",  // torchvision's train.py saves its args
    "builtins.set",
    "builtins.frozenset",
    "__builtin__.set",
    // torch.dtype objects (e.g. in AMP or EMA state); kept as their name.
    "torch.float32", "torch.float64", "torch.float16", "torch.bfloat16", "torch.int64",
    "torch.int32", "torch.int16", "torch.int8", "torch.uint8", "torch.bool",
    "torch.float", "torch.double", "torch.half", "torch.long", "torch.int",
};

bool storage_dtype(const std::string& name, DType* dtype) {
  for (const auto& c : kStorageClasses)
    if (name == c.name) {
      *dtype = c.dtype;
      return true;
    }
  return false;
}

// TorchScript's typed containers in data.pkl: build_*list(list) gives the list,
// restore_type_tag(value, type) the value.
constexpr const char* kTorchScriptHelpers[] = {
    "torch.jit._pickle.build_intlist",    "torch.jit._pickle.build_doublelist",
    "torch.jit._pickle.build_boollist",   "torch.jit._pickle.build_tensorlist",
    "torch.jit._pickle.restore_type_tag",
};

bool is_torchscript_helper(const std::string& name) {
  for (const char* h : kTorchScriptHelpers)
    if (name == h) return true;
  return false;
}

bool allowed_global(const std::string& name) {
  DType unused;
  if (storage_dtype(name, &unused)) return true;
  for (const char* g : kAllowedGlobals)
    if (name == g) return true;
  return false;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const StorageLoader& load, const std::string& source,
            UnpickleLimits limits, PickleKind kind)
      : data_(data), size_(size), load_(load), source_(source), limits_(limits), kind_(kind) {}

  Value run(size_t* consumed) {
    for (;;) {
      op_pos_ = pos_;
      const uint8_t op = byte();
      if (op == '.') break;  // STOP
      step(op);
    }
    if (stack_.size() != 1 || !marks_.empty()) fail("STOP with " + std::to_string(stack_.size()) + " values on the stack");
    if (consumed) *consumed = pos_;
    size_t budget = limits_.max_values;
    return to_value(stack_.back(), 0, &budget);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(source_ + ": pickle: " + what + " (at byte " + std::to_string(op_pos_) + ")");
  }

  // --- reading the opcode stream, every length checked before use ---
  const uint8_t* take(uint64_t n) {
    if (n > size_ - pos_) fail("truncated (wants " + std::to_string(n) + " bytes, " + std::to_string(size_ - pos_) + " left)");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t byte() { return *take(1); }
  uint64_t le(int n) {
    const uint8_t* p = take(n);
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = v << 8 | p[k];
    return v;
  }
  std::string text(uint64_t n) {
    const uint8_t* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  std::string line() {  // GLOBAL's newline-terminated fields
    const auto* start = data_ + pos_;
    const void* nl = std::memchr(start, '\n', size_ - pos_);
    if (!nl) fail("unterminated GLOBAL name");
    const size_t n = static_cast<const uint8_t*>(nl) - start;
    std::string s = text(n);
    pos_ += 1;
    return s;
  }

  // --- arena and stack ---
  uint32_t add(Node node) {
    if (nodes_.size() >= limits_.max_values) fail("more than " + std::to_string(limits_.max_values) + " values");
    nodes_.push_back(std::move(node));
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  uint32_t add(Type type) {
    Node n;
    n.type = type;
    return add(std::move(n));
  }
  void push(uint32_t node) { stack_.push_back(node); }
  uint32_t pop() {
    if (stack_.size() <= stack_floor()) fail("stack underflow");
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t top() {
    if (stack_.size() <= stack_floor()) fail("stack underflow");
    return stack_.back();
  }
  size_t stack_floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  Node& node(uint32_t index) { return nodes_[index]; }
  Node& expect(uint32_t index, Type type, const char* what) {
    if (nodes_[index].type != type) fail(std::string("expected ") + what);
    return nodes_[index];
  }
  int64_t int_of(uint32_t index, const char* what) {
    const Node& n = nodes_[index];
    if (n.type != Type::kInt && n.type != Type::kBool) fail(std::string(what) + " is not an int");
    return n.i;
  }
  std::vector<int64_t> ints_of(uint32_t index, const char* what) {
    const Node& n = nodes_[index];
    if (n.type != Type::kTuple && n.type != Type::kList) fail(std::string(what) + " is not a tuple");
    if (n.items.size() > 64) fail(std::string(what) + " has more than 64 dimensions");
    std::vector<int64_t> out;
    for (uint32_t item : n.items) out.push_back(int_of(item, what));
    return out;
  }

  void memo_put(uint64_t key) {
    memo_[static_cast<uint32_t>(key)] = top();
  }
  void memo_get(uint64_t key) {
    auto it = memo_.find(static_cast<uint32_t>(key));
    if (it == memo_.end() || key > std::numeric_limits<uint32_t>::max())
      fail("memo key " + std::to_string(key) + " was never stored");
    push(it->second);
  }

  void push_int(int64_t v) {
    Node n;
    n.type = Type::kInt;
    n.i = v;
    push(add(std::move(n)));
  }
  // LONG1/LONG4: little-endian two's complement of n bytes.
  void push_long(uint64_t n) {
    const uint8_t* p = take(n);
    if (n > 8) {
      Node big;
      big.type = Type::kBigInt;
      big.s.assign(reinterpret_cast<const char*>(p), n);
      push(add(std::move(big)));
      return;
    }
    uint64_t v = 0;
    for (uint64_t k = n; k-- > 0;) v = v << 8 | p[k];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    push_int(static_cast<int64_t>(v));
  }
  void push_tensor(TensorRecord t) {
    Node n;
    n.type = Type::kTensor;
    n.i = static_cast<int64_t>(tensors_.size());
    tensors_.push_back(std::move(t));
    push(add(std::move(n)));
  }
  void push_string(std::string s) {
    Node n;
    n.type = Type::kString;
    n.s = std::move(s);
    push(add(std::move(n)));
  }
  void push_global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    const bool torchscript =
        kind_ == PickleKind::kTorchScript && (is_torchscript_class(full) || is_torchscript_helper(full));
    if (!torchscript && !allowed_global(full)) fail("unsupported global '" + full + "'");
    Node n;
    n.type = Type::kGlobal;
    n.s = full;
    push(add(std::move(n)));
  }
  void push_container(Type type, std::vector<uint32_t> items, std::string dict_type = "") {
    Node n;
    n.type = type;
    n.items = std::move(items);
    n.s = std::move(dict_type);
    push(add(std::move(n)));
  }

  void set_items(std::vector<uint32_t> kv) {
    if (kv.size() % 2) fail("SETITEMS with an odd number of values");
    Node& d = expect(top(), Type::kDict, "a dict for SETITEM(S)");
    d.items.insert(d.items.end(), kv.begin(), kv.end());
  }
  void append_items(const std::vector<uint32_t>& items, Type type) {
    Node& l = expect(top(), type, type == Type::kList ? "a list for APPEND(S)" : "a set for ADDITEMS");
    l.items.insert(l.items.end(), items.begin(), items.end());
  }

  // ('storage', torch.XStorage, key, location, numel[, view_metadata])
  void persistent_load(uint32_t pid_index) {
    const Node& pid = nodes_[pid_index];
    if (pid.type != Type::kTuple || pid.items.size() < 5 || nodes_[pid.items[0]].type != Type::kString ||
        nodes_[pid.items[0]].s != "storage")
      fail("persistent id is not a ('storage', ...) tuple");
    PersistentId id;
    const Node& cls = nodes_[pid.items[1]];
    if (cls.type != Type::kGlobal || !storage_dtype(cls.s, &id.dtype)) fail("persistent id without a storage class");
    if (nodes_[pid.items[2]].type != Type::kString || nodes_[pid.items[3]].type != Type::kString)
      fail("persistent id: key and location must be strings");
    id.key = nodes_[pid.items[2]].s;
    id.location = nodes_[pid.items[3]].s;
    id.numel = int_of(pid.items[4], "storage size");
    if (id.numel < 0) fail("negative storage size");
    if (pid.items.size() > 5 && nodes_[pid.items[5]].type != Type::kNone)
      fail("storage views (legacy view_metadata) are not supported");
    Node n;
    n.type = Type::kStorage;
    n.i = static_cast<int64_t>(storages_.size());
    storages_.push_back(load_(id));
    push(add(std::move(n)));
  }

  // _rebuild_tensor(_v2)(storage, offset, size, stride, ...): checked so that
  // every element the view addresses lies inside the storage.
  TensorRecord rebuild_tensor(const std::vector<uint32_t>& args) {
    if (args.size() < 4) fail("_rebuild_tensor needs (storage, offset, size, stride)");
    TensorRecord t;
    t.storage = storages_[expect(args[0], Type::kStorage, "a storage as _rebuild_tensor's first argument").i];
    t.offset = int_of(args[1], "storage offset");
    t.sizes = ints_of(args[2], "tensor size");
    t.strides = ints_of(args[3], "tensor stride");
    if (args.size() > 4) t.requires_grad = int_of(args[4], "requires_grad") != 0;
    if (t.sizes.size() != t.strides.size()) fail("tensor size and stride differ in length");
    if (t.offset < 0) fail("negative storage offset");
    int64_t numel = 1, last = t.offset;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) fail("negative tensor size or stride");
      if (__builtin_mul_overflow(numel, t.sizes[d], &numel)) fail("tensor size overflows");
    }
    if (numel > 0) {
      for (size_t d = 0; d < t.sizes.size(); ++d) {
        int64_t span;
        if (__builtin_mul_overflow(t.sizes[d] - 1, t.strides[d], &span) ||
            __builtin_add_overflow(last, span, &last))
          fail("tensor view overflows");
      }
      if (last >= t.storage->numel)
        fail("tensor view reaches element " + std::to_string(last) + " of a storage of " +
             std::to_string(t.storage->numel));
    } else if (t.offset > t.storage->numel) {
      fail("storage offset past the end of the storage");
    }
    return t;
  }

  void reduce() {
    const uint32_t args_index = pop();
    const std::string callable = expect(pop(), Type::kGlobal, "a global to call (REDUCE)").s;
    const Node& args_node = expect(args_index, Type::kTuple, "an argument tuple (REDUCE)");
    const std::vector<uint32_t> args = args_node.items;
    if (callable == "collections.OrderedDict") {
      if (!args.empty()) fail("OrderedDict(...) with arguments is not supported");
      push_container(Type::kDict, {}, "collections.OrderedDict");
    } else if (callable == "torch._utils._rebuild_tensor_v2" || callable == "torch._utils._rebuild_tensor") {
      push_tensor(rebuild_tensor(args));
    } else if (callable == "torch._utils._rebuild_parameter" ||
               callable == "torch._utils._rebuild_parameter_with_state") {
      if (args.size() < 2) fail("_rebuild_parameter needs (tensor, requires_grad, ...)");
      TensorRecord t = tensors_[expect(args[0], Type::kTensor, "a tensor in _rebuild_parameter").i];
      t.requires_grad = int_of(args[1], "requires_grad") != 0;
      push_tensor(std::move(t));
    } else if (callable == "torch.device") {
      if (args.empty() || node(args[0]).type != Type::kString) fail("torch.device needs a string");
      std::string device = node(args[0]).s;
      if (args.size() > 1) device += ":" + std::to_string(int_of(args[1], "device index"));
      push_string(device);
    } else if (is_torchscript_helper(callable)) {
      if (args.empty()) fail(callable + " needs an argument");
      push(args[0]);
    } else if (callable == "torch.Size") {
      push_container(Type::kTuple, args.empty() ? std::vector<uint32_t>{} : node(args[0]).items);
    } else if (callable == "builtins.set" || callable == "builtins.frozenset" || callable == "__builtin__.set") {
      push_container(Type::kList, args.empty() ? std::vector<uint32_t>{} : node(args[0]).items);
    } else {
      fail("cannot call '" + callable + "'");
    }
  }

  void newobj(uint32_t cls_index) {
    const std::string cls = expect(cls_index, Type::kGlobal, "a class (NEWOBJ)").s;
    if (cls == "argparse.Namespace") return push_container(Type::kDict, {}, "argparse.Namespace");
    if (cls == "collections.OrderedDict") return push_container(Type::kDict, {}, cls);
    // A TorchScript module or class instance: a record of attributes, filled by BUILD.
    if (is_torchscript_class(cls)) return push_container(Type::kDict, {}, cls);
    fail("cannot instantiate '" + cls + "'");
  }

  void build() {
    const uint32_t state = pop();
    Node& target = node(top());
    const Node& st = node(state);
    const bool record = target.type == Type::kDict &&
                        (target.s == "argparse.Namespace" || is_torchscript_class(target.s));
    if (record) {
      if (st.type != Type::kDict)
        fail("'" + target.s + "' has a custom state (set by code in the file, which is never run)");
      const std::vector<uint32_t> kv = st.items;  // st may be target itself
      node(top()).items.insert(node(top()).items.end(), kv.begin(), kv.end());
    } else if (target.type == Type::kDict) {
      // OrderedDict's state: its attributes, e.g. a state_dict's _metadata (module versions and,
      // in this project's files, the class names). Any other state is not needed.
      if (st.type == Type::kDict) node(top()).attributes = state;
    } else if (target.type == Type::kTensor && (st.type == Type::kNone || (st.type == Type::kDict && st.items.empty()))) {
      // a tensor without Python attributes
    } else {
      fail("BUILD on this object is not supported");
    }
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = byte();
        if (proto > 5) fail("pickle protocol " + std::to_string(proto) + " is newer than 5");
        break;
      }
      case 0x95: le(8); break;  // FRAME: length of the next frame, no meaning for a reader of the whole
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0': pop(); break;                              // POP
      case '1': pop_mark(); break;                         // POP_MARK
      case '2': push(top()); break;                        // DUP
      case 'N': push(add(Type::kNone)); break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        Node n;
        n.type = Type::kBool;
        n.i = op == 0x88;
        push(add(std::move(n)));
        break;
      }
      case 'K': push_int(static_cast<int64_t>(le(1))); break;                           // BININT1
      case 'M': push_int(static_cast<int64_t>(le(2))); break;                           // BININT2
      case 'J': push_int(static_cast<int32_t>(static_cast<uint32_t>(le(4)))); break;    // BININT
      case 0x8a: push_long(le(1)); break;                                              // LONG1
      case 0x8b: {                                                                     // LONG4
        const uint64_t n = le(4);
        if (n > 8) fail("integer of " + std::to_string(n) + " bytes is too large");
        push_long(n);
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = bits << 8 | p[k];
        Node n;
        n.type = Type::kFloat;
        std::memcpy(&n.f, &bits, 8);
        push(add(std::move(n)));
        break;
      }
      case 'X': push_string(text(le(4))); break;   // BINUNICODE
      case 0x8c: push_string(text(le(1))); break;  // SHORT_BINUNICODE
      case 0x8d: push_string(text(le(8))); break;  // BINUNICODE8
      case 'T': push_string(text(le(4))); break;   // BINSTRING
      case 'U': push_string(text(le(1))); break;   // SHORT_BINSTRING
      case 'B': push_string(text(le(4))); break;   // BINBYTES (kept as a string)
      case 'C': push_string(text(le(1))); break;   // SHORT_BINBYTES
      case 0x8e: push_string(text(le(8))); break;  // BINBYTES8
      case ')': push_container(Type::kTuple, {}); break;  // EMPTY_TUPLE
      case 't': push_container(Type::kTuple, pop_mark()); break;  // TUPLE
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<uint32_t> items(op - 0x84);
        for (size_t k = items.size(); k-- > 0;) items[k] = pop();
        push_container(Type::kTuple, std::move(items));
        break;
      }
      case ']': push_container(Type::kList, {}); break;  // EMPTY_LIST
      case 'l': push_container(Type::kList, pop_mark()); break;  // LIST
      case 'a': {  // APPEND
        const uint32_t v = pop();
        append_items({v}, Type::kList);
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        append_items(items, Type::kList);
        break;
      }
      case '}': push_container(Type::kDict, {}, "dict"); break;  // EMPTY_DICT
      case 'd': {                                                // DICT
        auto kv = pop_mark();
        if (kv.size() % 2) fail("DICT with an odd number of values");
        push_container(Type::kDict, std::move(kv), "dict");
        break;
      }
      case 's': {  // SETITEM
        const uint32_t v = pop(), k = pop();
        set_items({k, v});
        break;
      }
      case 'u': set_items(pop_mark()); break;               // SETITEMS
      case 0x8f: push_container(Type::kList, {}); break;    // EMPTY_SET (read as a list)
      case 0x90: {                                          // ADDITEMS
        auto items = pop_mark();
        append_items(items, Type::kList);
        break;
      }
      case 0x91: push_container(Type::kList, pop_mark()); break;  // FROZENSET
      case 'q': memo_put(le(1)); break;                           // BINPUT
      case 'r': memo_put(le(4)); break;                           // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;                   // MEMOIZE
      case 'h': memo_get(le(1)); break;                           // BINGET
      case 'j': memo_get(le(4)); break;                           // LONG_BINGET
      case 'c': {                                                 // GLOBAL
        const std::string module = line();
        push_global(module, line());
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop(), module = pop();
        push_global(expect(module, Type::kString, "a module name").s, expect(name, Type::kString, "a global name").s);
        break;
      }
      case 'R': reduce(); break;
      case 0x81: {  // NEWOBJ
        pop();      // the arguments: Namespace and OrderedDict take none that matter
        newobj(pop());
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();
        pop();
        newobj(pop());
        break;
      }
      case 'b': build(); break;
      case 'Q': persistent_load(pop()); break;  // BINPERSID
      default: {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02x", op);
        fail(std::string("unsupported opcode ") + hex);
      }
    }
  }

  // --- the public tree, built once at STOP ---
  Value to_value(uint32_t index, size_t depth, size_t* budget) {
    if (depth > limits_.max_depth) fail("nesting deeper than " + std::to_string(limits_.max_depth) + " (or a cycle)");
    const Node& n = nodes_[index];
    const size_t cost = 1 + n.s.size() / 8 + n.items.size();
    if (*budget < cost) fail("more values than the limit of " + std::to_string(limits_.max_values));
    *budget -= cost;
    switch (n.type) {
      case Type::kNone: return Value::none();
      case Type::kBool: return Value::boolean(n.i != 0);
      case Type::kInt: return Value::integer(n.i);
      case Type::kBigInt: fail("integer does not fit in 64 bits");
      case Type::kFloat: return Value::floating(n.f);
      case Type::kString:
      case Type::kGlobal: return Value::string(n.s);
      case Type::kStorage: fail("a bare storage outside a tensor is not supported");
      case Type::kTensor: return Value::tensor(tensors_[n.i]);
      case Type::kList:
      case Type::kTuple: {
        std::vector<Value> items;
        items.reserve(n.items.size());
        for (uint32_t item : n.items) items.push_back(to_value(item, depth + 1, budget));
        return n.type == Type::kList ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      case Type::kDict: {
        Value::Entries entries;
        entries.reserve(n.items.size() / 2);
        std::unordered_set<std::string> seen;
        for (size_t k = 0; k + 1 < n.items.size(); k += 2) {
          Value key = to_value(n.items[k], depth + 1, budget);
          // Python's pickler writes each key once; a repeated one is a crafted file.
          if ((key.is_string() || key.is_int()) &&
              !seen.insert(key.is_string() ? "s" + key.as_string() : "i" + std::to_string(key.as_int())).second)
            fail("key " + key.describe() + " appears twice in one dict");
          entries.emplace_back(std::move(key), to_value(n.items[k + 1], depth + 1, budget));
        }
        Value dict = Value::dict(n.s, std::move(entries));
        if (n.attributes >= 0) dict.set_attributes(to_value(static_cast<uint32_t>(n.attributes), depth + 1, budget));
        return dict;
      }
    }
    fail("unknown value");
  }

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

}  // namespace

bool is_torchscript_class(const std::string& name) {
  static constexpr char kPrefix[] = "__torch__.";
  return name.compare(0, sizeof(kPrefix) - 1, kPrefix) == 0;
}

Value unpickle(const uint8_t* data, size_t size, const StorageLoader& load,
               const std::string& source, size_t* consumed, UnpickleLimits limits,
               PickleKind kind) {
  Unpickler unpickler(data, size, load, source, limits, kind);
  return unpickler.run(consumed);
}

}  // namespace alexnet::pth
