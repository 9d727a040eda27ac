// The value tree of a PyTorch checkpoint (what torch.save pickled), without LibTorch.
//
// Tensors are described, not materialised: a TensorRecord names a Storage (raw
// little-endian bytes, a dtype, an element count) plus the view torch keeps on
// it (offset, sizes, strides, all in elements). model/weights.h turns records
// into torch::Tensor; the fuzzer and the format code never link LibTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::pth {

/// Any malformed, truncated or unsupported checkpoint. what() is "<file>: <what>".
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Element types of torch's typed storages (torch.FloatStorage, ...).
enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32, kInt16, kInt8, kUInt8, kBool };

/// Bytes per element.
int64_t element_size(DType dtype);
/// torch's name: "float32", "bfloat16", ...
const char* dtype_name(DType dtype);
/// Python class of the typed storage: "FloatStorage", ...
const char* storage_class_name(DType dtype);

/// A contiguous run of elements. `data` points into memory kept alive by `owner`
/// (the file's buffer when read, the source tensor when written).
struct Storage {
  std::string key;  // the persistent id's key: "0", "1", ... in zip files
  DType dtype = DType::kFloat32;
  int64_t numel = 0;
  const uint8_t* data = nullptr;  // numel * element_size(dtype) bytes once loaded
  std::shared_ptr<const void> owner;
};

/// A strided view on a storage, as torch._utils._rebuild_tensor_v2 receives it.
/// Readers guarantee every addressed element lies inside the storage.
struct TensorRecord {
  std::shared_ptr<const Storage> storage;
  int64_t offset = 0;            // elements
  std::vector<int64_t> sizes;    // elements per dimension
  std::vector<int64_t> strides;  // elements, non-negative
  bool requires_grad = false;

  DType dtype() const { return storage->dtype; }
  int64_t numel() const;
  /// True when the view's elements follow one another in row-major order from its
  /// offset, as torch's is_contiguous() says: a view of no elements always does.
  bool is_row_major() const;
  /// True when the view is the whole storage in row-major order.
  bool is_contiguous_whole() const;
  /// Empty when sizes and strides have one length, none is negative, and every
  /// element the view addresses lies inside the storage; else what is wrong.
  std::string view_problem() const;
};

/// None, bool, int, float, string, list, tuple, dict or tensor. Dicts keep
/// insertion order (Python 3.7+ dicts and OrderedDict both do); `type_name`
/// says which Python type a dict-like value came from or should become.
class Value {
 public:
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kTensor };
  using Entries = std::vector<std::pair<Value, Value>>;

  Value() = default;
  static Value none() { return Value(); }
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double d);
  static Value string(std::string s);
  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items = {});
  /// type_name: "dict", "collections.OrderedDict" or "argparse.Namespace".
  static Value dict(std::string type_name = "dict", Entries entries = {});
  static Value tensor(TensorRecord record);

  Kind kind() const { return kind_; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_tensor() const { return kind_ == Kind::kTensor; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_int() const { return kind_ == Kind::kInt; }

  /// Accessors throw std::logic_error on the wrong kind.
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;  // ints convert
  const std::string& as_string() const;
  const std::vector<Value>& items() const;  // list or tuple
  std::vector<Value>& items();
  const Entries& entries() const;  // dict
  Entries& entries();
  const std::string& type_name() const;  // dict
  const TensorRecord& as_tensor() const;

  /// Dict lookup by string or int key; nullptr when absent (or not a dict).
  const Value* find(const std::string& key) const;
  const Value* find(int64_t key) const;
  /// Appends or replaces a dict entry.
  void set(Value key, Value value);

  /// A dict's Python attributes, its pickled BUILD state: a state_dict (an
  /// OrderedDict) carries "_metadata" there. nullptr when it has none.
  const Value* attributes() const { return attributes_.get(); }
  /// Sets the attributes of a dict to `attributes`, itself a dict.
  void set_attributes(Value attributes);

  /// Python-like one-line summary, for messages: "dict(5)", "tensor float32 [64, 3, 11, 11]".
  std::string describe() const;

 private:
  Kind kind_ = Kind::kNone;
  bool bool_ = false;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::string string_;  // kString, or the dict's type name
  std::vector<Value> items_;
  Entries entries_;
  std::shared_ptr<const TensorRecord> tensor_;
  std::shared_ptr<const Value> attributes_;  // kDict only
};

const char* kind_name(Value::Kind kind);

}  // namespace alexnet::pth
