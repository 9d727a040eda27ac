// The opcode machine: reads a pickle's opcodes, every length checked before
// use, onto the stack and into the arena (model/pth/unpickler_machine.h);
// what a GLOBAL may name and build is decided in unpickler_globals.cpp.
#include "model/pth/unpickler.h"

#include "model/pth/unpickler_machine.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

namespace alexnet::pth {

namespace unpickling {

Value Unpickler::run(size_t* consumed) {
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

void Unpickler::fail(const std::string& what) const {
  throw FormatError(source_ + ": pickle: " + what + " (at byte " + std::to_string(op_pos_) + ")");
}

// --- reading the opcode stream, every length checked before use ---

const uint8_t* Unpickler::take(uint64_t n) {
  if (n > size_ - pos_) fail("truncated (wants " + std::to_string(n) + " bytes, " + std::to_string(size_ - pos_) + " left)");
  const uint8_t* p = data_ + pos_;
  pos_ += n;
  return p;
}

uint64_t Unpickler::le(int n) {
  const uint8_t* p = take(n);
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = v << 8 | p[k];
  return v;
}

std::string Unpickler::text(uint64_t n) {
  const uint8_t* p = take(n);
  return std::string(reinterpret_cast<const char*>(p), n);
}

std::string Unpickler::line() {
  const auto* start = data_ + pos_;
  const void* nl = std::memchr(start, '\n', size_ - pos_);
  if (!nl) fail("unterminated GLOBAL name");
  const size_t n = static_cast<const uint8_t*>(nl) - start;
  std::string s = text(n);
  pos_ += 1;
  return s;
}

// --- arena and stack ---

uint32_t Unpickler::add(Node node) {
  if (nodes_.size() >= limits_.max_values) fail("more than " + std::to_string(limits_.max_values) + " values");
  nodes_.push_back(std::move(node));
  return static_cast<uint32_t>(nodes_.size() - 1);
}

uint32_t Unpickler::add(Type type) {
  Node n;
  n.type = type;
  return add(std::move(n));
}

uint32_t Unpickler::pop() {
  if (stack_.size() <= stack_floor()) fail("stack underflow");
  const uint32_t v = stack_.back();
  stack_.pop_back();
  return v;
}

uint32_t Unpickler::top() {
  if (stack_.size() <= stack_floor()) fail("stack underflow");
  return stack_.back();
}

std::vector<uint32_t> Unpickler::pop_mark() {
  if (marks_.empty()) fail("no MARK to pop to");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
  stack_.resize(mark);
  return items;
}

Node& Unpickler::expect(uint32_t index, Type type, const char* what) {
  if (nodes_[index].type != type) fail(std::string("expected ") + what);
  return nodes_[index];
}

int64_t Unpickler::int_of(uint32_t index, const char* what) {
  const Node& n = nodes_[index];
  if (n.type != Type::kInt && n.type != Type::kBool) fail(std::string(what) + " is not an int");
  return n.i;
}

std::vector<int64_t> Unpickler::ints_of(uint32_t index, const char* what) {
  const Node& n = nodes_[index];
  if (n.type != Type::kTuple && n.type != Type::kList) fail(std::string(what) + " is not a tuple");
  if (n.items.size() > 64) fail(std::string(what) + " has more than 64 dimensions");
  std::vector<int64_t> out;
  for (uint32_t item : n.items) out.push_back(int_of(item, what));
  return out;
}

void Unpickler::memo_put(uint64_t key) {
  memo_[static_cast<uint32_t>(key)] = top();
}

void Unpickler::memo_get(uint64_t key) {
  auto it = memo_.find(static_cast<uint32_t>(key));
  if (it == memo_.end() || key > std::numeric_limits<uint32_t>::max())
    fail("memo key " + std::to_string(key) + " was never stored");
  push(it->second);
}

void Unpickler::push_int(int64_t v) {
  Node n;
  n.type = Type::kInt;
  n.i = v;
  push(add(std::move(n)));
}

// LONG1/LONG4: little-endian two's complement of n bytes.
void Unpickler::push_long(uint64_t n) {
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

void Unpickler::push_tensor(TensorRecord t) {
  Node n;
  n.type = Type::kTensor;
  n.i = static_cast<int64_t>(tensors_.size());
  tensors_.push_back(std::move(t));
  push(add(std::move(n)));
}

void Unpickler::push_string(std::string s) {
  Node n;
  n.type = Type::kString;
  n.s = std::move(s);
  push(add(std::move(n)));
}

void Unpickler::push_container(Type type, std::vector<uint32_t> items, std::string dict_type) {
  Node n;
  n.type = type;
  n.items = std::move(items);
  n.s = std::move(dict_type);
  push(add(std::move(n)));
}

void Unpickler::set_items(std::vector<uint32_t> kv) {
  if (kv.size() % 2) fail("SETITEMS with an odd number of values");
  Node& d = expect(top(), Type::kDict, "a dict for SETITEM(S)");
  d.items.insert(d.items.end(), kv.begin(), kv.end());
}

void Unpickler::append_items(const std::vector<uint32_t>& items, Type type) {
  Node& l = expect(top(), type, type == Type::kList ? "a list for APPEND(S)" : "a set for ADDITEMS");
  l.items.insert(l.items.end(), items.begin(), items.end());
}

// --- one opcode, by family ---

void Unpickler::step(uint8_t op) {
  if (stack_op(op) || scalar_op(op) || string_op(op) || container_op(op) || memo_op(op) || object_op(op))
    return;
  char hex[8];
  std::snprintf(hex, sizeof(hex), "0x%02x", op);
  fail(std::string("unsupported opcode ") + hex);
}

// Framing and the stack itself.
bool Unpickler::stack_op(uint8_t op) {
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
    default: return false;
  }
  return true;
}

// None, booleans, integers and floats.
bool Unpickler::scalar_op(uint8_t op) {
  switch (op) {
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
    default: return false;
  }
  return true;
}

// Text and bytes, both kept as strings.
bool Unpickler::string_op(uint8_t op) {
  switch (op) {
    case 'X': push_string(text(le(4))); break;   // BINUNICODE
    case 0x8c: push_string(text(le(1))); break;  // SHORT_BINUNICODE
    case 0x8d: push_string(text(le(8))); break;  // BINUNICODE8
    case 'T': push_string(text(le(4))); break;   // BINSTRING
    case 'U': push_string(text(le(1))); break;   // SHORT_BINSTRING
    case 'B': push_string(text(le(4))); break;   // BINBYTES (kept as a string)
    case 'C': push_string(text(le(1))); break;   // SHORT_BINBYTES
    case 0x8e: push_string(text(le(8))); break;  // BINBYTES8
    default: return false;
  }
  return true;
}

// Tuples, lists, dicts and sets (read as lists), made and filled.
bool Unpickler::container_op(uint8_t op) {
  switch (op) {
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
    default: return false;
  }
  return true;
}

bool Unpickler::memo_op(uint8_t op) {
  switch (op) {
    case 'q': memo_put(le(1)); break;          // BINPUT
    case 'r': memo_put(le(4)); break;          // LONG_BINPUT
    case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
    case 'h': memo_get(le(1)); break;          // BINGET
    case 'j': memo_get(le(4)); break;          // LONG_BINGET
    default: return false;
  }
  return true;
}

// Globals and what is made from them: only the allow-list's (unpickler_globals.cpp).
bool Unpickler::object_op(uint8_t op) {
  switch (op) {
    case 'c': {  // GLOBAL
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
    default: return false;
  }
  return true;
}

}  // namespace unpickling

Value unpickle(const uint8_t* data, size_t size, const StorageLoader& load,
               const std::string& source, size_t* consumed, UnpickleLimits limits,
               PickleKind kind) {
  unpickling::Unpickler unpickler(data, size, load, source, limits, kind);
  return unpickler.run(consumed);
}

}  // namespace alexnet::pth
