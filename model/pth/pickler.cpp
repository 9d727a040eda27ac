#include "model/pth/pickler.h"

#include <cstring>
#include <map>
#include <tuple>

namespace alexnet::pth {

namespace {

constexpr size_t kBatchSize = 1000;  // items per APPENDS/SETITEMS, as Python batches them

class Pickler {
 public:
  Pickled run(const Value& root) {
    op(0x80);
    out_.bytes.push_back(2);  // PROTO 2, what torch.save uses
    value(root);
    op('.');
    return std::move(out_);
  }

 private:
  void op(uint8_t code) { out_.bytes.push_back(static_cast<char>(code)); }
  void le(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out_.bytes.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
  }
  void global(const char* module, const char* name) {
    op('c');
    out_.bytes += module;
    out_.bytes += '\n';
    out_.bytes += name;
    out_.bytes += '\n';
  }
  void string(const std::string& s) {
    op('X');  // BINUNICODE
    le(s.size(), 4);
    out_.bytes += s;
  }
  void integer(int64_t i) {
    if (i >= 0 && i < 256) {
      op('K');
      le(static_cast<uint64_t>(i), 1);
    } else if (i >= 0 && i < 65536) {
      op('M');
      le(static_cast<uint64_t>(i), 2);
    } else if (i >= INT32_MIN && i <= INT32_MAX) {
      op('J');
      le(static_cast<uint32_t>(static_cast<int32_t>(i)), 4);
    } else {
      op(0x8a);  // LONG1, 8 bytes two's complement
      le(8, 1);
      le(static_cast<uint64_t>(i), 8);
    }
  }
  void floating(double d) {
    op('G');
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    for (int k = 7; k >= 0; --k) out_.bytes.push_back(static_cast<char>((bits >> (8 * k)) & 0xFF));
  }
  void batched(const std::vector<Value>& items, uint8_t code) {
    for (size_t start = 0; start < items.size(); start += kBatchSize) {
      op('(');
      for (size_t k = start; k < std::min(items.size(), start + kBatchSize); ++k) value(items[k]);
      op(code);
    }
  }
  void setitems(const Value::Entries& entries) {
    for (size_t start = 0; start < entries.size(); start += kBatchSize) {
      op('(');
      for (size_t k = start; k < std::min(entries.size(), start + kBatchSize); ++k) {
        value(entries[k].first);
        value(entries[k].second);
      }
      op('u');  // SETITEMS
    }
  }
  void dict(const Value& v) {
    if (v.type_name() == "collections.OrderedDict") {
      global("collections", "OrderedDict");
      op(')');
      op('R');
      setitems(v.entries());
      if (const Value* attributes = v.attributes()) {
        // As Python's pickler writes OrderedDict.__reduce__'s state: after the items.
        value(*attributes);
        op('b');  // BUILD: the instance's __dict__ is updated with the attributes
      }
    } else if (v.type_name() == "argparse.Namespace") {
      global("argparse", "Namespace");
      op(')');
      op(0x81);  // NEWOBJ
      op('}');
      setitems(v.entries());
      op('b');  // BUILD with the attributes
    } else {
      op('}');
      setitems(v.entries());
    }
  }
  std::string storage_key(const std::shared_ptr<const Storage>& s) {
    const auto id = std::make_tuple(s->data, s->numel, static_cast<int>(s->dtype));
    auto it = keys_.find(id);
    if (it != keys_.end()) return it->second;
    const std::string key = std::to_string(out_.storages.size());
    keys_.emplace(id, key);
    out_.storages.push_back(s);
    return key;
  }
  void tuple_of(const std::vector<int64_t>& ints) {
    op('(');
    for (int64_t i : ints) integer(i);
    op('t');
  }
  void tensor(const TensorRecord& t) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');  // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
    string("storage");
    global("torch", storage_class_name(t.dtype()));
    string(storage_key(t.storage));
    string("cpu");
    integer(t.storage->numel);
    op('t');
    op('Q');  // BINPERSID
    integer(t.offset);
    tuple_of(t.sizes);
    tuple_of(t.strides);
    op(t.requires_grad ? 0x88 : 0x89);
    global("collections", "OrderedDict");  // backward hooks: none
    op(')');
    op('R');
    op('t');
    op('R');
  }
  void value(const Value& v) {
    switch (v.kind()) {
      case Value::Kind::kNone: op('N'); break;
      case Value::Kind::kBool: op(v.as_bool() ? 0x88 : 0x89); break;
      case Value::Kind::kInt: integer(v.as_int()); break;
      case Value::Kind::kFloat: floating(v.as_float()); break;
      case Value::Kind::kString: string(v.as_string()); break;
      case Value::Kind::kList:
        op(']');
        batched(v.items(), 'e');  // APPENDS
        break;
      case Value::Kind::kTuple:
        op('(');
        for (const auto& item : v.items()) value(item);
        op('t');
        break;
      case Value::Kind::kDict: dict(v); break;
      case Value::Kind::kTensor: tensor(v.as_tensor()); break;
    }
  }

  Pickled out_;
  std::map<std::tuple<const uint8_t*, int64_t, int>, std::string> keys_;
};

}  // namespace

Pickled pickle(const Value& root) { return Pickler().run(root); }

}  // namespace alexnet::pth
