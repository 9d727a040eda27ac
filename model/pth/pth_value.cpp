#include "model/pth/pth_value.h"

#include <sstream>

namespace alexnet::pth {

int64_t element_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
    case DType::kInt64: return 8;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16: return 2;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool: return 1;
  }
  return 1;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kInt16: return "int16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kBool: return "bool";
  }
  return "?";
}

const char* storage_class_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "FloatStorage";
    case DType::kFloat64: return "DoubleStorage";
    case DType::kFloat16: return "HalfStorage";
    case DType::kBFloat16: return "BFloat16Storage";
    case DType::kInt64: return "LongStorage";
    case DType::kInt32: return "IntStorage";
    case DType::kInt16: return "ShortStorage";
    case DType::kInt8: return "CharStorage";
    case DType::kUInt8: return "ByteStorage";
    case DType::kBool: return "BoolStorage";
  }
  return "?";
}

int64_t TensorRecord::numel() const {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;  // readers checked this fits
  return n;
}

std::string TensorRecord::view_problem() const {
  if (sizes.size() != strides.size()) return "tensor size and stride differ in length";
  if (offset < 0) return "negative storage offset";
  int64_t count = 1, last = offset;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) return "negative tensor size or stride";
    if (__builtin_mul_overflow(count, sizes[d], &count)) return "tensor size overflows";
  }
  if (count == 0) return offset > storage->numel ? "storage offset past the end of the storage" : "";
  for (size_t d = 0; d < sizes.size(); ++d) {
    int64_t span;
    if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &span) || __builtin_add_overflow(last, span, &last))
      return "tensor view overflows";
  }
  if (last >= storage->numel)
    return "tensor view reaches element " + std::to_string(last) + " of a storage of " + std::to_string(storage->numel);
  return "";
}

bool TensorRecord::is_row_major() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] != 1 && strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

bool TensorRecord::is_contiguous_whole() const {
  return offset == 0 && numel() == storage->numel && is_row_major();
}

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kList: return "list";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kTensor: return "tensor";
  }
  return "?";
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.bool_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.int_ = i;
  return v;
}

Value Value::floating(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.float_ = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.string_ = std::move(s);
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kList;
  v.items_ = std::move(items);
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kTuple;
  v.items_ = std::move(items);
  return v;
}

Value Value::dict(std::string type_name, Entries entries) {
  Value v;
  v.kind_ = Kind::kDict;
  v.string_ = std::move(type_name);
  v.entries_ = std::move(entries);
  return v;
}

Value Value::tensor(TensorRecord record) {
  Value v;
  v.kind_ = Kind::kTensor;
  v.tensor_ = std::make_shared<const TensorRecord>(std::move(record));
  return v;
}

namespace {
[[noreturn]] void wrong_kind(Value::Kind have, const char* want) {
  throw std::logic_error(std::string("checkpoint value: expected ") + want + ", got " +
                         kind_name(have));
}
}  // namespace

bool Value::as_bool() const {
  if (kind_ != Kind::kBool) wrong_kind(kind_, "bool");
  return bool_;
}

int64_t Value::as_int() const {
  if (kind_ == Kind::kBool) return bool_;  // Python's bool is an int
  if (kind_ != Kind::kInt) wrong_kind(kind_, "int");
  return int_;
}

double Value::as_float() const {
  if (kind_ == Kind::kInt) return static_cast<double>(int_);
  if (kind_ != Kind::kFloat) wrong_kind(kind_, "float");
  return float_;
}

const std::string& Value::as_string() const {
  if (kind_ != Kind::kString) wrong_kind(kind_, "str");
  return string_;
}

const std::vector<Value>& Value::items() const {
  if (kind_ != Kind::kList && kind_ != Kind::kTuple) wrong_kind(kind_, "list or tuple");
  return items_;
}

std::vector<Value>& Value::items() {
  if (kind_ != Kind::kList && kind_ != Kind::kTuple) wrong_kind(kind_, "list or tuple");
  return items_;
}

const Value::Entries& Value::entries() const {
  if (kind_ != Kind::kDict) wrong_kind(kind_, "dict");
  return entries_;
}

Value::Entries& Value::entries() {
  if (kind_ != Kind::kDict) wrong_kind(kind_, "dict");
  return entries_;
}

const std::string& Value::type_name() const {
  if (kind_ != Kind::kDict) wrong_kind(kind_, "dict");
  return string_;
}

const TensorRecord& Value::as_tensor() const {
  if (kind_ != Kind::kTensor) wrong_kind(kind_, "tensor");
  return *tensor_;
}

const Value* Value::find(const std::string& key) const {
  if (kind_ != Kind::kDict) return nullptr;
  for (const auto& [k, v] : entries_)
    if (k.kind_ == Kind::kString && k.string_ == key) return &v;
  return nullptr;
}

const Value* Value::find(int64_t key) const {
  if (kind_ != Kind::kDict) return nullptr;
  for (const auto& [k, v] : entries_)
    if (k.kind_ == Kind::kInt && k.int_ == key) return &v;
  return nullptr;
}

void Value::set(Value key, Value value) {
  for (auto& [k, v] : entries()) {
    const bool same = k.kind_ == key.kind_ &&
                      ((k.kind_ == Kind::kString && k.string_ == key.string_) ||
                       (k.kind_ == Kind::kInt && k.int_ == key.int_));
    if (same) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

void Value::set_attributes(Value attributes) {
  if (kind_ != Kind::kDict) wrong_kind(kind_, "dict");
  if (attributes.kind_ != Kind::kDict) wrong_kind(attributes.kind_, "dict");
  attributes_ = std::make_shared<const Value>(std::move(attributes));
}

std::string Value::describe() const {
  std::ostringstream os;
  switch (kind_) {
    case Kind::kNone: os << "None"; break;
    case Kind::kBool: os << (bool_ ? "True" : "False"); break;
    case Kind::kInt: os << int_; break;
    case Kind::kFloat: os << float_; break;
    case Kind::kString: os << "'" << string_ << "'"; break;
    case Kind::kList:
    case Kind::kTuple: os << kind_name(kind_) << "(" << items_.size() << ")"; break;
    case Kind::kDict: os << string_ << "(" << entries_.size() << ")"; break;
    case Kind::kTensor: {
      os << "tensor " << dtype_name(tensor_->dtype()) << " [";
      for (size_t i = 0; i < tensor_->sizes.size(); ++i) os << (i ? ", " : "") << tensor_->sizes[i];
      os << "]";
      break;
    }
  }
  return os.str();
}

}  // namespace alexnet::pth
