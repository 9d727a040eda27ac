// OneDnnLinear (model/onednn_linear.h): a oneDNN inner product per batch size,
// sharing the packed weights among batch sizes whose primitives want one layout.
#include "model/onednn_linear.h"

#include <map>
#include <mutex>
#include <stdexcept>
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
  torch::Tensor weight;  // the caller's values, plain, until the first pack (then packs.front() is the source)
  torch::Tensor bias;
  int64_t out = 0, in = 0;
  torch::ScalarType dtype = torch::kFloat;
  Dt dt = Dt::f32;
  bool relu = false;
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
    weight = torch::Tensor();  // one copy of the weights: the packs
    return mem;
  }

  Batch& batch(int64_t n) {
    auto it = batches.find(n);
    if (it != batches.end()) return it->second;
    if (batches.size() >= kMaxBatches) batches.erase(batches.begin());
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, memory::desc({n, in}, dt, Tag::nc),
                                        memory::desc({out, in}, dt, Tag::any), memory::desc({out}, dt, Tag::x),
                                        memory::desc({n, out}, dt, Tag::nc));
    dnnl::post_ops ops;
    if (relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    dnnl::inner_product_forward::primitive_desc pd(d, attr, engine);
    return batches.emplace(n, Batch{dnnl::inner_product_forward(pd), packed(pd.weights_desc())}).first->second;
  }
};

OneDnnLinear::OneDnnLinear(const torch::Tensor& weight, const torch::Tensor& bias, bool relu)
    : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(weight.dim() == 2 && bias.dim() == 1 && bias.size(0) == weight.size(0) &&
                  (weight.scalar_type() == torch::kFloat || weight.scalar_type() == torch::kBFloat16) &&
                  bias.scalar_type() == weight.scalar_type(),
              "OneDnnLinear: expected float32 or bf16 weight (out, in) and bias (out), got ", weight.sizes(), " ",
              weight.scalar_type(), " and ", bias.sizes(), " ", bias.scalar_type());
  impl_->weight = weight.detach().to(torch::kCPU).contiguous().clone();
  impl_->bias = bias.detach().to(torch::kCPU).contiguous().clone();
  impl_->out = weight.size(0);
  impl_->in = weight.size(1);
  impl_->dtype = weight.scalar_type();
  impl_->dt = weight.scalar_type() == torch::kBFloat16 ? Dt::bf16 : Dt::f32;
  impl_->relu = relu;
  impl_->bias_mem = memory({{bias.size(0)}, impl_->dt, Tag::x}, impl_->engine, impl_->bias.data_ptr());
}

OneDnnLinear::~OneDnnLinear() = default;

torch::Tensor OneDnnLinear::forward(const torch::Tensor& input) {
  auto& m = *impl_;
  TORCH_CHECK(input.dim() == 2 && input.size(1) == m.in && input.scalar_type() == m.dtype && input.device().is_cpu(),
              "OneDnnLinear: expected a CPU ", m.dtype, " input (N, ", m.in, "), got ", input.sizes(), " ",
              input.scalar_type(), " on ", input.device());
  const auto x = input.contiguous();
  const int64_t n = x.size(0);
  auto y = torch::empty({n, m.out}, x.options());
  std::lock_guard<std::mutex> lock(m.mutex);
  Impl::Batch& b = m.batch(n);
  memory src({{n, m.in}, m.dt, Tag::nc}, m.engine, x.data_ptr());
  memory dst({{n, m.out}, m.dt, Tag::nc}, m.engine, y.data_ptr());
  b.primitive.execute(m.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, b.weights}, {DNNL_ARG_BIAS, m.bias_mem},
                                 {DNNL_ARG_DST, dst}});
  m.stream.wait();
  return y;
}

#else  // !ALEXNET_HAVE_DNNL

struct OneDnnLinear::Impl {};

OneDnnLinear::OneDnnLinear(const torch::Tensor&, const torch::Tensor&, bool) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

OneDnnLinear::~OneDnnLinear() = default;

torch::Tensor OneDnnLinear::forward(const torch::Tensor&) { throw std::logic_error("this build has no oneDNN"); }

#endif

}  // namespace alexnet
