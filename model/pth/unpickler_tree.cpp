// The public Value tree, built once at STOP from the unpickler's arena: depth
// and value-count limits hold against cycles and blow-ups that the arena allows,
// and a dict key written twice is refused.
#include "model/pth/unpickler_machine.h"

#include <string>
#include <unordered_set>
#include <vector>

namespace alexnet::pth::unpickling {

Value Unpickler::to_value(uint32_t index, size_t depth, size_t* budget) {
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
    case Type::kDict: return dict_value(n, depth, budget);
  }
  fail("unknown value");
}

// A dict node's entries (and an OrderedDict's attributes), one level below `depth`.
Value Unpickler::dict_value(const Node& n, size_t depth, size_t* budget) {
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

}  // namespace alexnet::pth::unpickling
