// The allow-list of globals a pickle may name, and what each one builds when
// the pickle calls it (REDUCE, NEWOBJ, BUILD, persistent ids): tensors checked
// against their storage, OrderedDicts, devices, sets, argparse.Namespace and,
// in TorchScript archives, module records. Nothing is imported or run.
#include "model/pth/unpickler.h"

#include "model/pth/unpickler_machine.h"

#include <string>
#include <vector>

namespace alexnet::pth {

namespace unpickling {

namespace {

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

}  // namespace

void Unpickler::push_global(const std::string& module, const std::string& name) {
  const std::string full = module + "." + name;
  const bool torchscript =
      kind_ == PickleKind::kTorchScript && (is_torchscript_class(full) || is_torchscript_helper(full));
  if (!torchscript && !allowed_global(full)) fail("unsupported global '" + full + "'");
  Node n;
  n.type = Type::kGlobal;
  n.s = full;
  push(add(std::move(n)));
}

// ('storage', torch.XStorage, key, location, numel[, view_metadata])
void Unpickler::persistent_load(uint32_t pid_index) {
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
TensorRecord Unpickler::rebuild_tensor(const std::vector<uint32_t>& args) {
  if (args.size() < 4) fail("_rebuild_tensor needs (storage, offset, size, stride)");
  TensorRecord t;
  t.storage = storages_[expect(args[0], Type::kStorage, "a storage as _rebuild_tensor's first argument").i];
  t.offset = int_of(args[1], "storage offset");
  t.sizes = ints_of(args[2], "tensor size");
  t.strides = ints_of(args[3], "tensor stride");
  if (args.size() > 4) t.requires_grad = int_of(args[4], "requires_grad") != 0;
  const std::string problem = t.view_problem();  // the same check as every reader's
  if (!problem.empty()) fail(problem);
  return t;
}

void Unpickler::reduce() {
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

void Unpickler::newobj(uint32_t cls_index) {
  const std::string cls = expect(cls_index, Type::kGlobal, "a class (NEWOBJ)").s;
  if (cls == "argparse.Namespace") return push_container(Type::kDict, {}, "argparse.Namespace");
  if (cls == "collections.OrderedDict") return push_container(Type::kDict, {}, cls);
  // A TorchScript module or class instance: a record of attributes, filled by BUILD.
  if (is_torchscript_class(cls)) return push_container(Type::kDict, {}, cls);
  fail("cannot instantiate '" + cls + "'");
}

void Unpickler::build() {
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

}  // namespace unpickling

bool is_torchscript_class(const std::string& name) {
  static constexpr char kPrefix[] = "__torch__.";
  return name.compare(0, sizeof(kPrefix) - 1, kPrefix) == 0;
}

}  // namespace alexnet::pth
