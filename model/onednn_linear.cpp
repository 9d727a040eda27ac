// OneDnnLinear (model/onednn_linear.h): a oneDNN inner product per batch size,
// sharing the packed weights among batch sizes whose primitives want one layout
// (or, in place, on the caller's plain weights); OneDnnClassifier: a chain of them.
#include "model/onednn_linear.h"

#include "model/dropout.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifdef ALEXNET_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace alexnet {

#ifdef ALEXNET_HAVE_DNNL

namespace {
using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;
// Batch sizes whose primitives are kept (serve's batches take any size up to --max-batch).
constexpr size_t kMaxBatches = 64;
}  // namespace

struct OneDnnLinear::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  // The values, plain (out, in): the caller's until the first pack, then kept only where batch 1
  // reads them (packs.front() is the source otherwise).
  torch::Tensor weight;
  bool plain_in_use = false;  // a batch-1 primitive reads `weight`

  torch::Tensor bias;
  int64_t out = 0, in = 0;
  torch::ScalarType dtype = torch::kFloat;
  Dt dt = Dt::f32;
  bool relu = false;
  bool in_place = false;  // the weights come with each call, plain (out, in)
  memory bias_mem;
  std::vector<std::pair<memory::desc, memory>> packs;  // (layout, weights in it)
  struct Batch {
    dnnl::inner_product_forward primitive;
    memory weights;
  };
  std::map<int64_t, Batch> batches;

  memory packed(const memory::desc& want) {
    for (const auto& [desc, mem] : packs)
      if (desc == want) return mem;
    memory from = packs.empty() ? memory({{out, in}, dt, Tag::oi}, engine, weight.data_ptr()) : packs.front().second;
    memory mem(want, engine);
    dnnl::reorder(from, mem).execute(stream, from, mem);
    stream.wait();
    packs.emplace_back(want, mem);
    if (!plain_in_use) weight = torch::Tensor();  // one copy of the weights: the packs
    return mem;
  }

  // The plain weights for batch 1, made again from a pack where they were dropped.
  memory plain() {
    if (!weight.defined()) {
      weight = torch::empty({out, in}, torch::TensorOptions().dtype(dtype));
      memory mem({{out, in}, dt, Tag::oi}, engine, weight.data_ptr());
      dnnl::reorder(packs.front().second, mem).execute(stream, packs.front().second, mem);
      stream.wait();
    }
    plain_in_use = true;
    return memory({{out, in}, dt, Tag::oi}, engine, weight.data_ptr());
  }

  Batch& batch(int64_t n) {
    auto it = batches.find(n);
    if (it != batches.end()) return it->second;
    if (batches.size() >= kMaxBatches) {  // the smallest batch size goes, batch 1 stays
      auto victim = batches.begin();
      if (victim->first == 1) ++victim;
      batches.erase(victim);
    }
    // Batch 1 reads the plain weights: oneDNN's GEMV streams them at 1.2-1.9x the rate of its
    // brgemm on the packed layout (bf16, AVX512-BF16), which is faster from batch 2 on
    // (BENCHMARKS.md, "bf16 on AMD's AVX512-BF16 (Zen 4)").
    const bool plain_weights = in_place || n == 1;
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, memory::desc({n, in}, dt, Tag::nc),
                                        memory::desc({out, in}, dt, plain_weights ? Tag::oi : Tag::any),
                                        memory::desc({out}, dt, Tag::x),
                                        memory::desc({n, out}, dt, Tag::nc));
    dnnl::post_ops ops;
    if (relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    dnnl::inner_product_forward::primitive_desc pd(d, attr, engine);
    memory weights = in_place ? memory() : n == 1 ? plain() : packed(pd.weights_desc());
    return batches.emplace(n, Batch{dnnl::inner_product_forward(pd), weights}).first->second;
  }

  // Runs the primitive for x's batch size on these weights and bias (nullptr: the packs).
  torch::Tensor run(const torch::Tensor& input, void* weights, void* bias) {
    TORCH_CHECK(input.dim() == 2 && input.size(1) == in && input.scalar_type() == dtype && input.device().is_cpu(),
                "OneDnnLinear: expected a CPU ", dtype, " input (N, ", in, "), got ", input.sizes(), " ",
                input.scalar_type(), " on ", input.device());
    const auto x = input.contiguous();
    const int64_t n = x.size(0);
    auto y = torch::empty({n, out}, x.options());
    std::lock_guard<std::mutex> lock(mutex);
    Batch& b = batch(n);
    memory src({{n, in}, dt, Tag::nc}, engine, x.data_ptr());
    memory dst({{n, out}, dt, Tag::nc}, engine, y.data_ptr());
    memory w = weights ? memory({{out, in}, dt, Tag::oi}, engine, weights) : b.weights;
    memory bm = bias ? memory({{out}, dt, Tag::x}, engine, bias) : bias_mem;
    b.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dst}});
    stream.wait();
    return y;
  }
};

OneDnnLinear::OneDnnLinear(const torch::Tensor& weight, const torch::Tensor& bias, bool relu)
    : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(weight.dim() == 2 && bias.dim() == 1 && bias.size(0) == weight.size(0) &&
                  (weight.scalar_type() == torch::kFloat || weight.scalar_type() == torch::kBFloat16) &&
                  bias.scalar_type() == weight.scalar_type(),
              "OneDnnLinear: expected float32 or bf16 weight (out, in) and bias (out), got ", weight.sizes(), " ",
              weight.scalar_type(), " and ", bias.sizes(), " ", bias.scalar_type());
  // Referenced, not copied, until the first pack: a module's own weights cost nothing extra.
  impl_->weight = weight.detach().to(torch::kCPU).contiguous();
  impl_->bias = bias.detach().to(torch::kCPU).contiguous().clone();
  impl_->out = weight.size(0);
  impl_->in = weight.size(1);
  impl_->dtype = weight.scalar_type();
  impl_->dt = weight.scalar_type() == torch::kBFloat16 ? Dt::bf16 : Dt::f32;
  impl_->relu = relu;
  impl_->bias_mem = memory({{bias.size(0)}, impl_->dt, Tag::x}, impl_->engine, impl_->bias.data_ptr());
}

OneDnnLinear::~OneDnnLinear() = default;

OneDnnLinear::OneDnnLinear(int64_t out, int64_t in, bool relu) : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(out > 0 && in > 0, "OneDnnLinear: expected a positive shape, got (", out, ", ", in, ")");
  impl_->out = out;
  impl_->in = in;
  impl_->relu = relu;
  impl_->in_place = true;
}

torch::Tensor OneDnnLinear::forward(const torch::Tensor& x) {
  TORCH_CHECK(!impl_->in_place, "OneDnnLinear: in place, the weights come with each call");
  return impl_->run(x, nullptr, nullptr);
}

bool OneDnnLinear::accepts(const torch::Tensor& weight, const torch::Tensor& bias) const {
  const auto& m = *impl_;
  const auto usable = [](const torch::Tensor& t, std::vector<int64_t> shape) {
    return t.sizes() == c10::IntArrayRef(shape) && t.scalar_type() == torch::kFloat && t.device().is_cpu() &&
           t.is_contiguous();
  };
  return m.in_place && usable(weight, {m.out, m.in}) && usable(bias, {m.out});
}

torch::Tensor OneDnnLinear::forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  TORCH_CHECK(accepts(weight, bias), "OneDnnLinear: expected contiguous float32 CPU weights (", impl_->out, ", ",
              impl_->in, ") and bias, got ", weight.sizes(), " ", weight.scalar_type(), " and ", bias.sizes(), " ",
              bias.scalar_type());
  return impl_->run(x, weight.data_ptr(), bias.data_ptr());
}

struct OneDnnClassifier::Layer {
  torch::nn::Linear linear{nullptr};
  std::shared_ptr<OneDnnLinear> onednn;
  bool relu = false;
};

OneDnnClassifier::OneDnnClassifier(torch::nn::Sequential classifier) {
  size_t index = 0;
  for (const auto& module : classifier->children()) {
    const std::string where = "classifier." + std::to_string(index++);
    if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(module)) {
      if (!linear->options.bias())
        throw std::invalid_argument("oneDNN classifier: " + where + " is a Linear without bias");
      layers_.push_back({torch::nn::Linear(linear), nullptr, false});
    } else if (std::dynamic_pointer_cast<torch::nn::ReLUImpl>(module) && !layers_.empty() && !layers_.back().relu) {
      layers_.back().relu = true;
    } else if (!std::dynamic_pointer_cast<DropoutImpl>(module) &&
               !std::dynamic_pointer_cast<torch::nn::DropoutImpl>(module)) {
      throw std::invalid_argument("oneDNN classifier: " + where + " is a " + module->name() +
                                  ", which it cannot run");
    }
  }
  if (layers_.empty()) throw std::invalid_argument("oneDNN classifier: no Linear layer");
  for (auto& l : layers_)
    l.onednn = std::make_shared<OneDnnLinear>(l.linear->options.out_features(), l.linear->options.in_features(),
                                              l.relu);
}

OneDnnClassifier::~OneDnnClassifier() = default;

torch::Tensor OneDnnClassifier::forward(const torch::Tensor& x) {
  if (x.dim() != 2 || x.size(0) < 1 || x.size(0) > kMaxBatch || x.scalar_type() != torch::kFloat ||
      !x.device().is_cpu())
    return {};
  for (const auto& l : layers_)
    if (!l.onednn->accepts(l.linear->weight, l.linear->bias)) return {};
  torch::Tensor y = x;
  for (const auto& l : layers_) y = l.onednn->forward(y, l.linear->weight, l.linear->bias);
  return y;
}

#else  // !ALEXNET_HAVE_DNNL

struct OneDnnLinear::Impl {};

OneDnnLinear::OneDnnLinear(const torch::Tensor&, const torch::Tensor&, bool) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

OneDnnLinear::~OneDnnLinear() = default;

OneDnnLinear::OneDnnLinear(int64_t, int64_t, bool) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

torch::Tensor OneDnnLinear::forward(const torch::Tensor&) { throw std::logic_error("this build has no oneDNN"); }

torch::Tensor OneDnnLinear::forward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  throw std::logic_error("this build has no oneDNN");
}

bool OneDnnLinear::accepts(const torch::Tensor&, const torch::Tensor&) const { return false; }

struct OneDnnClassifier::Layer {};

OneDnnClassifier::OneDnnClassifier(torch::nn::Sequential) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

OneDnnClassifier::~OneDnnClassifier() = default;

torch::Tensor OneDnnClassifier::forward(const torch::Tensor&) { return {}; }

#endif

}  // namespace alexnet
