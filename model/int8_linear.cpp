// OneDnnInt8Linear (model/int8_linear.h): one oneDNN u8 x s8 inner product per batch
// size, on the weights in their plain layout (batch 1) or in the one oneDNN picks.
#include "model/int8_linear.h"

#include <map>
#include <mutex>
#include <stdexcept>
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
constexpr size_t kMaxBatches = 64;  // primitives kept (serve's batches take any size up to --max-batch)
}  // namespace

struct OneDnnInt8Linear::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  int64_t out = 0, in = 0;
  double in_scale = 1.0, out_scale = 1.0;
  int64_t in_zero_point = 0, out_zero_point = 0;
  torch::Tensor weight;  // (out, in) int8, plain
  torch::Tensor bias;    // (out,) float32, in units of the accumulator: b / (s_x * s_w) - z_x * sum_k w_q
  dnnl::primitive_attr attr;
  std::vector<std::pair<memory::desc, memory>> packs;  // (layout, the weights in it), made once each
  struct Batch {
    dnnl::inner_product_forward primitive;
    memory weights;
  };
  std::map<int64_t, Batch> batches;

  memory plain() { return memory({{out, in}, Dt::s8, Tag::oi}, engine, weight.data_ptr()); }

  memory packed(const memory::desc& want) {
    if (want == plain().get_desc()) return plain();
    for (const auto& [desc, mem] : packs)
      if (desc == want) return mem;
    memory from = plain(), mem(want, engine);
    dnnl::reorder(from, mem).execute(stream, from, mem);
    stream.wait();
    packs.emplace_back(want, mem);
    return mem;
  }

  // Batch 1 reads the plain layout (oneDNN's integer GEMM); larger ones the layout oneDNN
  // picks (AMX or VNNI tiles where the CPU has them), packed on first use.
  Batch& batch(int64_t n) {
    auto it = batches.find(n);
    if (it != batches.end()) return it->second;
    if (batches.size() >= kMaxBatches) batches.erase(batches.begin());
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, memory::desc({n, in}, Dt::u8, Tag::nc),
                                        memory::desc({out, in}, Dt::s8, n == 1 ? Tag::oi : Tag::any),
                                        memory::desc({out}, Dt::f32, Tag::x), memory::desc({n, out}, Dt::u8, Tag::nc));
    dnnl::inner_product_forward::primitive_desc pd(d, attr, engine);
    return batches.emplace(n, Batch{dnnl::inner_product_forward(pd), packed(pd.weights_desc())}).first->second;
  }
};

bool OneDnnInt8Linear::available() { return true; }

OneDnnInt8Linear::OneDnnInt8Linear(const torch::Tensor& weight, const torch::Tensor& bias, double in_scale,
                                   int64_t in_zero_point, double out_scale, int64_t out_zero_point, bool relu)
    : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kQInt8 &&
                  weight.qscheme() == torch::kPerChannelAffine && weight.q_per_channel_axis() == 0,
              "OneDnnInt8Linear: expected a qint8 weight (out, in) quantized per output channel, got ",
              weight.sizes(), " ", weight.scalar_type());
  TORCH_CHECK(weight.q_per_channel_zero_points().eq(0).all().item<bool>(),
              "OneDnnInt8Linear: expected the weight's zero points to be 0");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "OneDnnInt8Linear: expected a bias (",
              weight.size(0), "), got ", bias.sizes());
  TORCH_CHECK(in_scale > 0 && out_scale > 0 && in_zero_point >= 0 && in_zero_point <= 255 && out_zero_point >= 0 &&
                  out_zero_point <= 255,
              "OneDnnInt8Linear: expected positive scales and quint8 zero points");
  auto& m = *impl_;
  m.out = weight.size(0);
  m.in = weight.size(1);
  m.in_scale = in_scale;
  m.out_scale = out_scale;
  m.in_zero_point = in_zero_point;
  m.out_zero_point = out_zero_point;
  m.weight = weight.int_repr().contiguous();  // (out, in) int8
  // In float, operation for operation as fbgemm forms them, so that every rounding agrees.
  const auto acc_scale = weight.q_per_channel_scales().to(torch::kFloat) * static_cast<float>(in_scale);  // (out,)
  auto b = bias.detach().to(torch::kCPU, torch::kFloat) / acc_scale;
  if (in_zero_point != 0) b -= static_cast<float>(in_zero_point) * m.weight.to(torch::kFloat).sum(1);
  m.bias = b.contiguous();
  const auto scales = (acc_scale / static_cast<float>(out_scale)).contiguous();
  m.attr.set_output_scales(/*mask=*/1 << 1, std::vector<float>(scales.data_ptr<float>(),
                                                                scales.data_ptr<float>() + m.out));
  dnnl::post_ops ops;
  if (relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  if (out_zero_point != 0)
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, 1.0f, static_cast<float>(out_zero_point));
  m.attr.set_post_ops(ops);
}

OneDnnInt8Linear::~OneDnnInt8Linear() = default;

torch::Tensor OneDnnInt8Linear::forward(const torch::Tensor& input) {
  auto& m = *impl_;
  TORCH_CHECK(input.dim() == 2 && input.size(1) == m.in && input.scalar_type() == torch::kQUInt8 &&
                  input.qscheme() == torch::kPerTensorAffine && input.device().is_cpu(),
              "OneDnnInt8Linear: expected a quint8 CPU input (N, ", m.in, "), got ", input.sizes(), " ",
              input.scalar_type(), " on ", input.device());
  TORCH_CHECK(input.q_scale() == m.in_scale && input.q_zero_point() == m.in_zero_point,
              "OneDnnInt8Linear: expected the input quantized with scale ", m.in_scale, " and zero point ",
              m.in_zero_point, ", got ", input.q_scale(), " and ", input.q_zero_point());
  const auto x = input.contiguous();  // (N, in)
  const int64_t n = x.size(0);
  auto y = at::_empty_affine_quantized({n, m.out}, x.options(), m.out_scale, m.out_zero_point);  // (N, out)
  if (n == 0) return y;  // oneDNN makes no primitive for N = 0
  std::lock_guard<std::mutex> lock(m.mutex);
  auto& b = m.batch(n);
  memory src({{n, m.in}, Dt::u8, Tag::nc}, m.engine, x.data_ptr());
  memory bias({{m.out}, Dt::f32, Tag::x}, m.engine, m.bias.data_ptr());
  memory dst({{n, m.out}, Dt::u8, Tag::nc}, m.engine, y.data_ptr());
  b.primitive.execute(m.stream,
                      {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, b.weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  m.stream.wait();
  return y;
}

#else  // !ALEXNET_HAVE_DNNL

struct OneDnnInt8Linear::Impl {};

bool OneDnnInt8Linear::available() { return false; }

OneDnnInt8Linear::OneDnnInt8Linear(const torch::Tensor&, const torch::Tensor&, double, int64_t, double, int64_t,
                                   bool) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

OneDnnInt8Linear::~OneDnnInt8Linear() = default;

torch::Tensor OneDnnInt8Linear::forward(const torch::Tensor&) { throw std::logic_error("this build has no oneDNN"); }

#endif

}  // namespace alexnet
