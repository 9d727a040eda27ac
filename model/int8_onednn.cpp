// OneDnnInt8Linear and OneDnnInt8Conv (model/int8_onednn.h): one oneDNN primitive per
// input shape, all on one copy of the weights per layout oneDNN asks for.
#include "model/int8_onednn.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
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
constexpr size_t kMaxShapes = 64;  // primitives kept (serve's batches take any size up to --max-batch)

// What both layers share: the weights (plain, and packed per layout), the bias in units
// of the accumulator, the requantization as oneDNN attributes, and one stream.
struct Int8Core {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  Int8Requantization rq;
  torch::Tensor weight;  // int8, plain: (out, in) or (out, in, kh, kw)
  memory::desc plain_desc;
  torch::Tensor bias;  // (out,) float32: b / (s_x * s_w) - z_x * sum_k w_q
  dnnl::primitive_attr attr;
  std::vector<std::pair<memory::desc, memory>> packs;  // (layout, the weights in it), made once each

  // fold_zero_point: a source zero point folded into the bias (Linear) or given to oneDNN
  // (convolution, whose padding must read as the zero point).
  Int8Core(const torch::Tensor& w, const torch::Tensor& b, const Int8Requantization& r, const char* who,
           bool fold_zero_point)
      : rq(r) {
    TORCH_CHECK(w.scalar_type() == torch::kQInt8 && w.qscheme() == torch::kPerChannelAffine &&
                    w.q_per_channel_axis() == 0 && w.q_per_channel_zero_points().eq(0).all().item<bool>(),
                who, ": expected a qint8 weight quantized per output channel with zero points 0, got ",
                w.scalar_type());
    TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0), who, ": expected a bias (", w.size(0), "), got ", b.sizes());
    TORCH_CHECK(r.in_scale > 0 && r.out_scale > 0 && r.in_zero_point >= 0 && r.in_zero_point <= 255 &&
                    r.out_zero_point >= 0 && r.out_zero_point <= 255,
                who, ": expected positive scales and quint8 zero points");
    TORCH_CHECK(!r.float_output || (r.out_scale == 1.0 && r.out_zero_point == 0), who,
                ": a float32 output takes no output scale or zero point");
    weight = w.int_repr().contiguous();
    memory::dims dims(weight.sizes().begin(), weight.sizes().end());
    plain_desc = memory::desc(dims, Dt::s8, weight.dim() == 2 ? Tag::oi : Tag::oihw);
    // In float, operation for operation as LibTorch forms them, so that every rounding agrees.
    const auto acc_scale = w.q_per_channel_scales().to(torch::kFloat) * static_cast<float>(r.in_scale);  // (out,)
    auto folded = b.detach().to(torch::kCPU, torch::kFloat) / acc_scale;
    if (r.in_zero_point != 0 && fold_zero_point)
      folded -= static_cast<float>(r.in_zero_point) * weight.reshape({weight.size(0), -1}).to(torch::kFloat).sum(1);
    bias = folded.contiguous();
    const auto scales = (r.float_output ? acc_scale : acc_scale / static_cast<float>(r.out_scale)).contiguous();
    attr.set_output_scales(/*mask=*/1 << 1,
                           std::vector<float>(scales.data_ptr<float>(), scales.data_ptr<float>() + scales.numel()));
    dnnl::post_ops ops;
    if (r.relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (r.out_zero_point != 0)
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, 1.0f, static_cast<float>(r.out_zero_point));
    attr.set_post_ops(ops);
    if (r.in_zero_point != 0 && !fold_zero_point)
      attr.set_zero_points(DNNL_ARG_SRC, /*mask=*/0, {static_cast<int32_t>(r.in_zero_point)});
  }

  memory packed(const memory::desc& want) {
    memory plain(plain_desc, engine, weight.data_ptr());
    if (want == plain_desc) return plain;
    for (const auto& [desc, mem] : packs)
      if (desc == want) return mem;
    memory mem(want, engine);
    dnnl::reorder(plain, mem).execute(stream, plain, mem);
    stream.wait();
    packs.emplace_back(want, mem);
    return mem;
  }

  void check_input(const torch::Tensor& x, const char* who) const {
    TORCH_CHECK(x.scalar_type() == torch::kQUInt8 && x.qscheme() == torch::kPerTensorAffine && x.device().is_cpu(),
                who, ": expected a quint8 CPU input, got ", x.scalar_type(), " on ", x.device());
    TORCH_CHECK(x.q_scale() == rq.in_scale && x.q_zero_point() == rq.in_zero_point, who,
                ": expected the input quantized with scale ", rq.in_scale, " and zero point ", rq.in_zero_point,
                ", got ", x.q_scale(), " and ", x.q_zero_point());
  }

  // Runs one primitive on x's and y's bytes; the caller holds the mutex.
  template <typename Primitive>
  void run(Primitive& p, const memory& weights, const memory::desc& src, const torch::Tensor& x,
           const memory::desc& dst, const torch::Tensor& y) {
    memory s(src, engine, x.data_ptr()), d(dst, engine, y.data_ptr());
    memory b({{bias.size(0)}, Dt::f32, Tag::x}, engine, bias.data_ptr());
    p.execute(stream, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, d}});
    stream.wait();
  }
};

}  // namespace

struct OneDnnInt8Linear::Impl : Int8Core {
  using Int8Core::Int8Core;
  struct Batch {
    dnnl::inner_product_forward primitive;
    memory weights;
  };
  std::map<int64_t, Batch> batches;

  Dt dst_type() const { return rq.float_output ? Dt::f32 : Dt::u8; }

  // Batch 1 reads the plain layout (oneDNN's integer GEMM, faster there); larger ones the
  // layout oneDNN picks (AMX or VNNI tiles where the CPU has them), packed on first use.
  Batch& batch(int64_t n) {
    auto it = batches.find(n);
    if (it != batches.end()) return it->second;
    if (batches.size() >= kMaxShapes) batches.erase(batches.begin());
    const int64_t out = weight.size(0), in = weight.size(1);
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, memory::desc({n, in}, Dt::u8, Tag::nc),
                                        memory::desc({out, in}, Dt::s8, n == 1 ? Tag::oi : Tag::any),
                                        memory::desc({out}, Dt::f32, Tag::x),
                                        memory::desc({n, out}, dst_type(), Tag::nc));
    dnnl::inner_product_forward::primitive_desc pd(d, attr, engine);
    return batches.emplace(n, Batch{dnnl::inner_product_forward(pd), packed(pd.weights_desc())}).first->second;
  }
};

bool OneDnnInt8Linear::available() { return true; }

OneDnnInt8Linear::OneDnnInt8Linear(const torch::Tensor& weight, const torch::Tensor& bias,
                                   const Int8Requantization& requantization) {
  TORCH_CHECK(weight.dim() == 2, "OneDnnInt8Linear: expected a weight (out, in), got ", weight.sizes());
  impl_ = std::make_unique<Impl>(weight, bias, requantization, "OneDnnInt8Linear", /*fold_zero_point=*/true);
}

OneDnnInt8Linear::~OneDnnInt8Linear() = default;

torch::Tensor OneDnnInt8Linear::forward(const torch::Tensor& input) {
  auto& m = *impl_;
  const int64_t out = m.weight.size(0), in = m.weight.size(1);
  m.check_input(input, "OneDnnInt8Linear");
  TORCH_CHECK(input.dim() == 2 && input.size(1) == in, "OneDnnInt8Linear: expected an input (N, ", in, "), got ",
              input.sizes());
  const auto x = input.contiguous();  // (N, in)
  const int64_t n = x.size(0);
  auto y = m.rq.float_output ? torch::empty({n, out})  // (N, out)
                             : at::_empty_affine_quantized({n, out}, x.options(), m.rq.out_scale, m.rq.out_zero_point);
  if (n == 0) return y;  // oneDNN makes no primitive for N = 0
  std::lock_guard<std::mutex> lock(m.mutex);
  auto& b = m.batch(n);
  m.run(b.primitive, b.weights, {{n, in}, Dt::u8, Tag::nc}, x, {{n, out}, m.dst_type(), Tag::nc}, y);
  return y;
}

struct OneDnnInt8Conv::Impl : Int8Core {
  using Int8Core::Int8Core;
  memory::dims stride, padding;
  struct Shape {
    dnnl::convolution_forward primitive;
    memory weights;
    memory::desc src, dst;
    int64_t out_h = 0, out_w = 0;
  };
  std::map<std::tuple<int64_t, int64_t, int64_t>, Shape> shapes;  // by (N, H, W)

  std::pair<int64_t, int64_t> out_size(int64_t h, int64_t w) const {  // PyTorch's Conv2d rule
    const int64_t oh = (h + 2 * padding[0] - weight.size(2)) / stride[0] + 1;
    const int64_t ow = (w + 2 * padding[1] - weight.size(3)) / stride[1] + 1;
    TORCH_CHECK(h + 2 * padding[0] >= weight.size(2) && w + 2 * padding[1] >= weight.size(3),
                "OneDnnInt8Conv: the input (", h, "x", w, ") is smaller than the kernel");
    return {oh, ow};
  }

  Shape& shape(int64_t n, int64_t h, int64_t w) {
    const auto key = std::make_tuple(n, h, w);
    auto it = shapes.find(key);
    if (it != shapes.end()) return it->second;
    if (shapes.size() >= kMaxShapes) shapes.erase(shapes.begin());
    const int64_t out = weight.size(0), in = weight.size(1), kh = weight.size(2), kw = weight.size(3);
    const auto [oh, ow] = out_size(h, w);
    const memory::desc src({n, in, h, w}, Dt::u8, Tag::nhwc), dst({n, out, oh, ow}, Dt::u8, Tag::nhwc);
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                      memory::desc({out, in, kh, kw}, Dt::s8, Tag::any),
                                      memory::desc({out}, Dt::f32, Tag::x), dst, stride, padding, padding);
    dnnl::convolution_forward::primitive_desc pd(d, attr, engine);
    return shapes.emplace(key, Shape{dnnl::convolution_forward(pd), packed(pd.weights_desc()), src, dst, oh, ow})
        .first->second;
  }
};

OneDnnInt8Conv::OneDnnInt8Conv(const torch::Tensor& weight, const torch::Tensor& bias, std::vector<int64_t> stride,
                               std::vector<int64_t> padding, const Int8Requantization& requantization) {
  TORCH_CHECK(weight.dim() == 4 && stride.size() == 2 && padding.size() == 2 && stride[0] > 0 && stride[1] > 0 &&
                  padding[0] >= 0 && padding[1] >= 0,
              "OneDnnInt8Conv: expected a weight (out, in, kh, kw), two positive strides and two paddings, got ",
              weight.sizes());
  TORCH_CHECK(!requantization.float_output, "OneDnnInt8Conv: no float32 output (a Linear layer's only)");
  impl_ = std::make_unique<Impl>(weight, bias, requantization, "OneDnnInt8Conv", /*fold_zero_point=*/false);
  impl_->stride = memory::dims(stride.begin(), stride.end());
  impl_->padding = memory::dims(padding.begin(), padding.end());
}

OneDnnInt8Conv::~OneDnnInt8Conv() = default;

torch::Tensor OneDnnInt8Conv::forward(const torch::Tensor& input) {
  auto& m = *impl_;
  m.check_input(input, "OneDnnInt8Conv");
  TORCH_CHECK(input.dim() == 4 && input.size(1) == m.weight.size(1), "OneDnnInt8Conv: expected an input (N, ",
              m.weight.size(1), ", H, W), got ", input.sizes());
  const auto x = input.contiguous(torch::MemoryFormat::ChannelsLast);  // (N, C, H, W)
  const int64_t n = x.size(0);
  if (n == 0) {  // oneDNN makes no primitive for N = 0
    const auto [oh, ow] = m.out_size(x.size(2), x.size(3));
    return at::_empty_affine_quantized({0, m.weight.size(0), oh, ow}, x.options(), m.rq.out_scale,
                                       m.rq.out_zero_point, torch::MemoryFormat::ChannelsLast);
  }
  std::lock_guard<std::mutex> lock(m.mutex);
  auto& s = m.shape(n, x.size(2), x.size(3));
  auto y = at::_empty_affine_quantized({n, m.weight.size(0), s.out_h, s.out_w}, x.options(), m.rq.out_scale,
                                       m.rq.out_zero_point, torch::MemoryFormat::ChannelsLast);  // (N, out, H', W')
  m.run(s.primitive, s.weights, s.src, x, s.dst, y);
  return y;
}

#else  // !ALEXNET_HAVE_DNNL

struct OneDnnInt8Linear::Impl {};
struct OneDnnInt8Conv::Impl {};

bool OneDnnInt8Linear::available() { return false; }

OneDnnInt8Linear::OneDnnInt8Linear(const torch::Tensor&, const torch::Tensor&, const Int8Requantization&) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

OneDnnInt8Linear::~OneDnnInt8Linear() = default;

torch::Tensor OneDnnInt8Linear::forward(const torch::Tensor&) { throw std::logic_error("this build has no oneDNN"); }

OneDnnInt8Conv::OneDnnInt8Conv(const torch::Tensor&, const torch::Tensor&, std::vector<int64_t>,
                               std::vector<int64_t>, const Int8Requantization&) {
  throw std::invalid_argument("this build has no oneDNN (its headers were not found)");
}

OneDnnInt8Conv::~OneDnnInt8Conv() = default;

torch::Tensor OneDnnInt8Conv::forward(const torch::Tensor&) { throw std::logic_error("this build has no oneDNN"); }

#endif

}  // namespace alexnet
