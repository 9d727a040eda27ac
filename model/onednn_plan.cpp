// The oneDNN plan (model/onednn_plan.h): its primitives built per input shape, run in turn.
#include "model/onednn_plan.h"

#include "model/onednn_layers.h"
#include "model/quantize.h"
#include "model/winograd.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <stdexcept>

#ifdef ALEXNET_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace alexnet {

using onednn::Layer;

#ifdef ALEXNET_HAVE_DNNL

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;
using ConvPd = dnnl::convolution_forward::primitive_desc;

enum Slot { kPing, kPong, kScratch, kSlots };
constexpr size_t kMaxShapes = 8;
// bf16 Winograd for layers reading at least this many channels: over fewer, its transforms
// outweigh the products saved. features.0 reading the image in 4x4 tiles (48 channels,
// model/fused.h) took 27-34 ms as Winograd against 24-25 ms direct (Zen 4, batch 64).
constexpr int64_t kBf16WinogradMinChannels = 64;
// float32 3x3 layers run as the plan's own F(4x4, 3x3) from this many 4x4 output tiles in the
// batch (one chunk of its products) where oneDNN has a Winograd of its own too (AVX-512). On the
// Zen 4 EPYC at 224 px, conv3-5 took 93-95 ms at batch 64, 11.6 at batch 8 and 5.8-7.3 at batch 4
// as ours, against 108-118, 14.2 and 7.7-8.9 as oneDNN's; at batch 1 (16 tiles) 2.6-3.1 ms
// against 2.4-2.5. Whole passes alternating: batch 64 230 against 216 img/s (medians of 5).
constexpr int64_t kF32OwnWinogradMinTiles = 64;
Slot other(Slot slot) { return slot == kPing ? kPong : kPing; }

// Output side of a convolution or pooling window, as PyTorch computes it (floor).
// 0 when the window does not fit at all (C++'s division would round -1/2 up to 0).
int64_t out_side(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t span = in + 2 * pad - kernel;
  return span < 0 ? 0 : span / stride + 1;
}

// oneDNN wants the right/bottom padding that makes the window count come out at
// `out`; with PyTorch's floor it can be negative (the last rows are never read).
int64_t right_padding(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad) {
  return (out - 1) * stride + kernel - in - pad;
}

// One layer's window at an h x w input: its output side and oneDNN's strides and paddings.
struct Window {
  int64_t oh = 0, ow = 0;
  memory::dims strides, pad_l, pad_r;
};

Window window_of(const Layer& l, int64_t h, int64_t w) {
  Window win;
  win.oh = out_side(h, l.kernel[0], l.stride[0], l.padding[0]);
  win.ow = out_side(w, l.kernel[1], l.stride[1], l.padding[1]);
  TORCH_CHECK(win.oh >= 1 && win.ow >= 1, l.name, ": input ", h, "x", w, " is too small");
  win.strides = {l.stride[0], l.stride[1]};
  win.pad_l = {l.padding[0], l.padding[1]};
  win.pad_r = {right_padding(h, win.oh, l.kernel[0], l.stride[0], l.padding[0]),
               right_padding(w, win.ow, l.kernel[1], l.stride[1], l.padding[1])};
  return win;
}

// The activation between two layers: its memory and the buffer it lives in.
struct Flow {
  memory mem;
  Slot slot;
};

// oneDNN's type for a parameter/activation dtype the plan runs.
Dt dnnl_type(torch::ScalarType dtype) { return dtype == torch::kBFloat16 ? Dt::bf16 : Dt::f32; }

}  // namespace

struct OneDnnFeatures::Impl {
  std::vector<Layer> layers;
  ConvAlgorithm algorithm;
  torch::ScalarType dtype = torch::kFloat;
  Dt dt = Dt::f32;
  bool channels_last_output = false;
  std::vector<std::pair<std::string, double>>* profile = nullptr;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  mutable std::mutex mutex;

  // What the packed weights were made from: each convolution's weight and bias
  // storage and version counter. An in-place update (an optimizer step,
  // load_state_dict, copy_) bumps the version, set_data or to() changes the
  // storage; either way forward() repacks instead of using stale weights.
  std::vector<std::pair<const void*, int64_t>> signature;
  std::vector<std::pair<const void*, int64_t>> current_signature() const {
    std::vector<std::pair<const void*, int64_t>> sig;
    for (const Layer& l : layers) {
      if (l.kind != Layer::kConv) continue;
      for (const torch::Tensor* t : {&l.weight, &l.bias}) {
        TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == dtype, "oneDNN plan: ", l.name, " now holds ",
                    t->scalar_type(), " on ", t->device(), "; the plan runs ", dtype,
                    " on the CPU (build a new one, or none)");
        sig.emplace_back(t->data_ptr(), static_cast<int64_t>(t->_version()));
      }
    }
    return sig;
  }
  void forget_weights() {
    for (auto& w : weights) w.clear();
    for (auto& b : biases) b = memory();
    for (auto& t : bias_tensors) t = torch::Tensor();
    for (auto& w : winograd) w.reset();
    shapes.clear();
    last = nullptr;
  }

  // Weights in the layouts the primitives asked for, shared by every input
  // shape whose primitive asks for the same layout: (layer, layout) -> memory.
  std::vector<std::vector<std::pair<memory::desc, memory>>> weights;
  std::vector<torch::Tensor> bias_tensors;  // contiguous copies the memories below wrap
  std::vector<memory> biases;
  // The plan's own Winograd (model/winograd.h): each such layer's transformed weights, made on first use.
  std::vector<std::shared_ptr<onednn::Winograd>> winograd;

  struct Step {
    dnnl::primitive primitive;
    std::unordered_map<int, memory> args;
    std::string what;
    std::string layer;  // the profile's stage: the layer this step is or feeds
    std::function<void()> run = nullptr;  // set instead of the primitive: a step of the plan's own

    void execute(dnnl::stream& stream) {
      if (run)
        run();
      else
        primitive.execute(stream, args);
    }
  };
  // Activations alternate between two buffers (each layer reads one and writes
  // the other) and every primitive shares one scratchpad: the plan's memory is
  // twice the largest activation plus the largest scratchpad, not the sum of
  // all layers'. The buffers are shared by every input shape and grow to fit.
  torch::Tensor buffers[kSlots];  // bytes

  struct Shape {
    memory input;   // wraps the caller's tensor (handle set per call)
    memory output;  // wraps the returned tensor (handle set per call)
    std::vector<Step> steps;
    std::vector<std::pair<memory, Slot>> bound;  // memories living in buffers[slot]
    size_t need[kSlots] = {0, 0, 0};             // bytes
    std::vector<int64_t> out_dims;
    int winograd = 0;
  };

  // A memory for `desc` that will live in buffers[slot].
  memory intermediate(Shape& s, const memory::desc& desc, Slot slot) {
    memory m(desc, engine, DNNL_MEMORY_NONE);
    s.bound.emplace_back(m, slot);
    s.need[slot] = std::max(s.need[slot], desc.get_size());
    return m;
  }
  memory scratchpad(Shape& s, const memory::desc& desc) { return intermediate(s, desc, kScratch); }
  std::map<std::vector<int64_t>, Shape> shapes;  // (N, C, H, W, channels_last)
  const Shape* last = nullptr;

  memory weights_in(size_t i, const memory::desc& want) {
    for (const auto& [desc, mem] : weights[i])
      if (desc == want) return mem;
    const Layer& l = layers[i];
    const torch::Tensor w = l.weight.detach().contiguous();  // (OC, IC/g, KH, KW)
    memory::dims dims{w.size(0), w.size(1), w.size(2), w.size(3)};
    Tag tag = Tag::oihw;
    if (l.groups > 1) {
      dims = {l.groups, w.size(0) / l.groups, w.size(1), w.size(2), w.size(3)};
      tag = Tag::goihw;
    }
    memory user({dims, dt, tag}, engine, w.data_ptr());
    memory packed(want, engine);
    dnnl::reorder(user, packed).execute(stream, user, packed);
    stream.wait();
    weights[i].emplace_back(want, packed);
    return weights[i].back().second;
  }

  // A memory for `desc` in the buffer the activation is not in, where it moves.
  memory next_activation(Shape& s, const memory::desc& desc, Flow& flow) {
    memory m = intermediate(s, desc, other(flow.slot));
    flow.slot = other(flow.slot);
    return m;
  }

  // Layer l's convolution: Winograd where asked for and oneDNN has a kernel for
  // this CPU and shape (*winograd set), else direct.
  ConvPd conv_primitive(const Layer& l, const memory::desc& src_md, const memory::desc& w_md,
                        const memory::desc& b_md, const memory::desc& dst_md, const Window& win, bool* winograd) {
    dnnl::post_ops ops;
    if (l.relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const bool wino_shape = algorithm == ConvAlgorithm::kWinograd && l.groups == 1 &&
                            l.kernel[0] == 3 && l.kernel[1] == 3 && l.stride[0] == 1 &&
                            l.stride[1] == 1;
    *winograd = false;
    if (wino_shape) {
      try {
        dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                          dnnl::algorithm::convolution_winograd, src_md, w_md,
                                          b_md, dst_md, win.strides, win.pad_l, win.pad_r);
        ConvPd pd(d, attr, engine);
        *winograd = true;
        return pd;
      } catch (const dnnl::error&) {
        // No Winograd kernel for this CPU or shape: the direct one below.
      }
    }
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                      dnnl::algorithm::convolution_direct, src_md, w_md, b_md,
                                      dst_md, win.strides, win.pad_l, win.pad_r);
    return ConvPd(d, attr, engine);
  }

  // A kernel written for convolutions (oneDNN's jit ones), not a matrix product or the reference.
  static bool kernel_of_its_own(const ConvPd& pd) {
    const std::string impl = pd.impl_info_str();
    return !onednn::is_reference_kernel(impl) && impl.find("gemm") == std::string::npos;
  }

  // Appends layer i's convolution on an `in` (N, C, H, W) input, after a reorder
  // where it wants another layout than the activation's; returns its output channels.
  int64_t add_conv(Shape& s, size_t i, Flow& flow, const memory::dims& in, const Window& win) {
    const Layer& l = layers[i];
    const int64_t n = in[0], c = in[1];
    const int64_t oc = l.weight.size(0);
    TORCH_CHECK(l.weight.size(1) * l.groups == c, l.name, ": expected ",
                l.weight.size(1) * l.groups, " input channels, got ", c);
    if (i == 0 && tiles_first(l, c, oc)) return add_tiled_first(s, i, flow, in, win);
    if (own_winograd(l, c, oc, n, win)) return add_winograd(s, i, flow, in, win);
    memory::dims wdims{oc, c, l.kernel[0], l.kernel[1]};
    if (l.groups > 1) wdims = {l.groups, oc / l.groups, c / l.groups, l.kernel[0], l.kernel[1]};
    // The first layer reads the caller's layout as is (3 channels: a blocked
    // copy would be mostly padding); later ones let oneDNN choose.
    const memory::desc src_md = i == 0 ? s.input.get_desc() : memory::desc(in, dt, Tag::any);
    const memory::desc w_md(wdims, dt, Tag::any);
    const memory::desc b_md({oc}, dt, Tag::x);
    const memory::desc dst_md({n, oc, win.oh, win.ow}, dt, Tag::any);
    bool wino = false;
    auto pd = conv_primitive(l, src_md, w_md, b_md, dst_md, win, &wino);
    if (i == 0 && !kernel_of_its_own(pd)) {
      // No direct kernel for the caller's layout (AVX2 CPUs: a matrix product on NCHW,
      // 104 ms at batch 64, and an NCHW pooling after it, 87 ms; or the reference kernel
      // on NHWC): NHWC in and out, after a reorder, where the matrix product takes 68 ms
      // and the pooling after it 4 ms (BENCHMARKS.md).
      const memory::desc nhwc_src(in, dt, Tag::nhwc), nhwc_dst({n, oc, win.oh, win.ow}, dt, Tag::nhwc);
      auto nhwc = conv_primitive(l, nhwc_src, w_md, b_md, nhwc_dst, win, &wino);
      if (!onednn::is_reference_kernel(nhwc.impl_info_str())) pd = nhwc;
    }
    s.winograd += wino;
    if (pd.src_desc() != flow.mem.get_desc()) {
      memory converted = next_activation(s, pd.src_desc(), flow);
      s.steps.push_back({dnnl::reorder(flow.mem, converted),
                         {{DNNL_ARG_FROM, flow.mem}, {DNNL_ARG_TO, converted}},
                         l.name + ": reorder", l.name});
      flow.mem = converted;
    }
    memory dst = next_activation(s, pd.dst_desc(), flow);
    if (!bias_tensors[i].defined()) {
      bias_tensors[i] = l.bias.detach().clone();  // the plan's own: packed like the weights
      biases[i] = memory(b_md, engine, bias_tensors[i].data_ptr());
    }
    s.steps.push_back({dnnl::convolution_forward(pd),
                       {{DNNL_ARG_SRC, flow.mem},
                        {DNNL_ARG_WEIGHTS, weights_in(i, pd.weights_desc())},
                        {DNNL_ARG_BIAS, biases[i]},
                        {DNNL_ARG_DST, dst},
                        {DNNL_ARG_SCRATCHPAD, scratchpad(s, pd.scratchpad_desc())}},
                       l.name + ": " + pd.impl_info_str() + (l.relu ? " + relu" : ""), l.name});
    flow.mem = dst;
    return oc;
  }

  // Whether layer l (c input channels, oc output, batch n, output win) runs as the plan's own
  // Winograd: bf16's 3x3 layers reading at least kBf16WinogradMinChannels; float32's 5x5 layers,
  // and its 3x3 ones where oneDNN has no Winograd of its own (AVX2 CPUs) or the batch has
  // kF32OwnWinogradMinTiles tiles.
  bool own_winograd(const Layer& l, int64_t c, int64_t oc, int64_t n, const Window& win) const {
    if (algorithm != ConvAlgorithm::kWinograd || l.groups != 1 ||
        !onednn::Winograd::supports(dtype, c, oc, l.kernel, l.stride, l.padding))
      return false;
    if (dt == Dt::bf16) return c >= kBf16WinogradMinChannels;
    const int64_t tiles = n * ((win.oh + 3) / 4) * ((win.ow + 3) / 4);
    return l.kernel[0] != 3 || !OneDnnFeatures::onednn_winograd_available() ||
           tiles >= kF32OwnWinogradMinTiles;
  }

  // Whether the first layer, strided over few channels (features.0: 11x11 over 3 at stride 4),
  // runs as the plan's own float32 Winograd F(4x4, 3x3) on the image cut into stride x stride
  // tiles (model/quantize.h: 48 channels under a 3x3 kernel at stride 1): where oneDNN has no
  // Winograd (AVX2), whose direct kernel for it is a matrix product (105-127 ms at batch 64
  // with its reorder, against 46-78 ms so). With oneDNN's AVX-512 kernel (41-43 ms) it did not
  // pay (47-75 ms), so it is not used there.
  bool tiles_first(const Layer& l, int64_t c, int64_t oc) const {
    const int64_t b = l.stride[0];
    if (dt != Dt::f32 || algorithm != ConvAlgorithm::kWinograd || OneDnnFeatures::onednn_winograd_available() ||
        l.groups != 1 || b < 2 || l.stride[1] != b ||
        l.kernel[0] != l.kernel[1] || l.padding[0] != l.padding[1] || (l.kernel[0] + b - 1) / b != 3)
      return false;
    const int64_t kernel[2] = {3, 3}, stride[2] = {1, 1}, padding[2] = {0, 0};
    return onednn::Winograd::supports(dtype, c * b * b, oc, kernel, stride, padding);
  }

  // Appends layer i (tiles_first) as a conversion of the caller's image into tiles and the
  // plan's own Winograd on them; returns its output channels.
  int64_t add_tiled_first(Shape& s, size_t i, Flow& flow, const memory::dims& in, const Window& win) {
    const Layer& l = layers[i];
    const int64_t n = in[0], c = in[1], b = l.stride[0];
    const SpaceToDepth g = SpaceToDepth::of(in[2], in[3], l.kernel[0], b, l.padding[0]);
    if (!winograd[i])
      winograd[i] = std::make_shared<onednn::Winograd>(space_to_depth_weight(l.weight.detach(), g), l.bias, 0, 0,
                                                       l.relu, engine);
    const memory::dims tiled{n, c * b * b, g.tiles_h, g.tiles_w};
    const memory image = flow.mem;  // the caller's tensor, NCHW or NHWC
    const bool channels_last = image.get_desc() == memory::desc(in, dt, Tag::nhwc);
    const memory tiles = next_activation(s, memory::desc(tiled, dt, Tag::nhwc), flow);
    Step step;
    step.run = [image, tiles, g, in, channels_last] {
      const std::vector<int64_t> sizes(in.begin(), in.end());
      const std::vector<int64_t> strides =
          channels_last ? std::vector<int64_t>{in[1] * in[2] * in[3], 1, in[3] * in[1], in[1]}
                        : std::vector<int64_t>{in[1] * in[2] * in[3], in[2] * in[3], in[3], 1};
      const auto x = torch::from_blob(image.get_data_handle(), sizes, strides, torch::kFloat);
      space_to_depth_into(x, g, static_cast<float*>(tiles.get_data_handle()));
    };
    step.what = l.name + ": " + std::to_string(b) + "x" + std::to_string(b) + " tiles (" + std::to_string(c * b * b) +
                " channels, 3x3 kernel)";
    step.layer = l.name;
    s.steps.push_back(std::move(step));
    flow.mem = tiles;
    return add_winograd(s, i, flow, tiled, win);
  }

  // Appends layer i's convolution as the plan's own Winograd, on NHWC activations (reordered
  // to them where the layer before left another layout); returns its output channels.
  int64_t add_winograd(Shape& s, size_t i, Flow& flow, const memory::dims& in, const Window& win) {
    const Layer& l = layers[i];
    const int64_t n = in[0], oc = l.weight.size(0);
    const memory::desc nhwc(in, dt, Tag::nhwc);
    if (flow.mem.get_desc() != nhwc) {
      memory converted = next_activation(s, nhwc, flow);
      s.steps.push_back({dnnl::reorder(flow.mem, converted),
                         {{DNNL_ARG_FROM, flow.mem}, {DNNL_ARG_TO, converted}},
                         l.name + ": reorder", l.name});
      flow.mem = converted;
    }
    if (!winograd[i])
      winograd[i] = std::make_shared<onednn::Winograd>(l.weight, l.bias, l.padding[0], l.padding[1], l.relu, engine);
    const onednn::Winograd::Call call = winograd[i]->prepare(n, in[2], in[3]);
    const memory src = flow.mem;
    const memory dst = next_activation(s, memory::desc({n, oc, win.oh, win.ow}, dt, Tag::nhwc), flow);
    const memory scratch = scratchpad(s, memory::desc({static_cast<int64_t>(call.scratch_bytes())}, Dt::u8, Tag::x));
    Step step;
    step.run = [this, call, src, dst, scratch] {
      call.run(src.get_data_handle(), dst.get_data_handle(), scratch.get_data_handle(), stream);
    };
    step.what = l.name + ": " + call.description() + (l.relu ? " + relu" : "");
    step.layer = l.name;
    s.steps.push_back(std::move(step));
    ++s.winograd;
    flow.mem = dst;
    return oc;
  }

  // Appends layer l's max-pooling on an `in` (N, C, H, W) input.
  void add_pool(Shape& s, const Layer& l, Flow& flow, const memory::dims& in, const Window& win) {
    const memory::desc dst_md({in[0], in[1], win.oh, win.ow}, dt, Tag::any);
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                  flow.mem.get_desc(), dst_md, win.strides,
                                  {l.kernel[0], l.kernel[1]}, win.pad_l, win.pad_r);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::pooling_forward::primitive_desc pd(d, attr, engine);
    memory dst = next_activation(s, pd.dst_desc(), flow);
    s.steps.push_back({dnnl::pooling_forward(pd),
                       {{DNNL_ARG_SRC, flow.mem},
                        {DNNL_ARG_DST, dst},
                        {DNNL_ARG_SCRATCHPAD, scratchpad(s, pd.scratchpad_desc())}},
                       l.name + ": " + pd.impl_info_str(), l.name});
    flow.mem = dst;
  }

  Shape build(int64_t n, int64_t c, int64_t h, int64_t w, bool channels_last) {
    Shape s;
    s.input = memory({{n, c, h, w}, dt, channels_last ? Tag::nhwc : Tag::nchw}, engine, DNNL_MEMORY_NONE);
    // The input is the caller's; pretend it sits in kPong so the first layer writes kPing.
    Flow flow{s.input, kPong};
    for (size_t i = 0; i < layers.size(); ++i) {
      const Layer& l = layers[i];
      const Window win = window_of(l, h, w);
      if (l.kind == Layer::kConv)
        c = add_conv(s, i, flow, {n, c, h, w}, win);
      else
        add_pool(s, l, flow, {n, c, h, w}, win);
      h = win.oh;
      w = win.ow;
    }
    s.out_dims = {n, c, h, w};
    s.output = memory({{n, c, h, w}, dt, channels_last_output ? Tag::nhwc : Tag::nchw}, engine, DNNL_MEMORY_NONE);
    s.steps.push_back({dnnl::reorder(flow.mem, s.output),
                       {{DNNL_ARG_FROM, flow.mem}, {DNNL_ARG_TO, s.output}},
                       channels_last_output ? "output: reorder to NHWC" : "output: reorder to NCHW",
                       layers.back().name});
    return s;
  }
};

bool OneDnnFeatures::compiled() { return true; }

bool OneDnnFeatures::bf16_winograd_pays() { return bf16_available() && onednn::Winograd::bf16_pays_on_this_cpu(); }

std::string OneDnnFeatures::library_version() {
  const dnnl_version_t* v = dnnl_version();  // the library loaded, not the headers compiled with
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

OneDnnFeatures::OneDnnFeatures(torch::nn::Sequential features, ConvAlgorithm algorithm, torch::ScalarType dtype,
                               bool channels_last_output)
    : impl_(std::make_unique<Impl>()) {
  if (dtype != torch::kFloat && dtype != torch::kBFloat16)
    throw std::invalid_argument(std::string("the oneDNN plan runs float32 or bf16, not ") + c10::toString(dtype));
  impl_->layers = onednn::describe_layers(features);
  impl_->algorithm = algorithm;
  impl_->dtype = dtype;
  impl_->dt = dnnl_type(dtype);
  impl_->channels_last_output = channels_last_output;
  impl_->weights.resize(impl_->layers.size());
  impl_->biases.resize(impl_->layers.size());
  impl_->bias_tensors.resize(impl_->layers.size());
  impl_->winograd.resize(impl_->layers.size());
  for (size_t i = 0; i < impl_->layers.size(); ++i) {
    const Layer& l = impl_->layers[i];
    if (l.kind != Layer::kConv) continue;
    if (!l.weight.device().is_cpu() || l.weight.scalar_type() != dtype)
      throw std::invalid_argument(l.name + ": the oneDNN plan needs " + c10::toString(dtype) +
                                  " weights on the CPU, not " + c10::toString(l.weight.scalar_type()));
    if (!l.bias.defined()) throw std::invalid_argument(l.name + ": a convolution without bias");
  }
}

OneDnnFeatures::~OneDnnFeatures() = default;

torch::Tensor OneDnnFeatures::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4 && input.device().is_cpu() && input.scalar_type() == impl_->dtype,
              "oneDNN plan: expected a ", impl_->dtype, " CPU tensor (N, C, H, W), got ", input.sizes(), " ",
              input.scalar_type(), " on ", input.device());
  const bool channels_last =
      !input.is_contiguous() && input.is_contiguous(torch::MemoryFormat::ChannelsLast);
  const torch::Tensor x = channels_last ? input : input.contiguous();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto signature = impl_->current_signature();
  if (signature != impl_->signature) {
    impl_->forget_weights();
    impl_->signature = std::move(signature);
  }
  const std::vector<int64_t> key{x.size(0), x.size(1), x.size(2), x.size(3), channels_last};
  auto it = impl_->shapes.find(key);
  if (it == impl_->shapes.end()) {
    // A few shapes are usual (the batch size and a smaller last batch); inputs
    // of ever new sizes would otherwise keep a set of primitives each.
    if (impl_->shapes.size() >= kMaxShapes) {
      impl_->shapes.clear();
      impl_->last = nullptr;
    }
    try {
      it = impl_->shapes.emplace(key, impl_->build(x.size(0), x.size(1), x.size(2), x.size(3), channels_last)).first;
    } catch (const dnnl::error& e) {
      TORCH_CHECK(false, "oneDNN plan: no primitive for input ", x.sizes(), ": ", e.what());
    }
  }
  Impl::Shape& s = it->second;
  torch::Tensor out = torch::empty(s.out_dims, x.options().memory_format(impl_->channels_last_output
                                                                             ? torch::MemoryFormat::ChannelsLast
                                                                             : torch::MemoryFormat::Contiguous));
  for (int slot = 0; slot < kSlots; ++slot) {
    auto& buffer = impl_->buffers[slot];
    if (!buffer.defined() || static_cast<size_t>(buffer.numel()) < s.need[slot])
      buffer = torch::empty({static_cast<int64_t>(std::max<size_t>(s.need[slot], 1))}, torch::kUInt8);
  }
  for (auto& [mem, slot] : s.bound) mem.set_data_handle(impl_->buffers[slot].data_ptr());
  s.input.set_data_handle(x.data_ptr());
  s.output.set_data_handle(out.data_ptr());
  if (impl_->profile) {
    // Each step waited for and timed; consecutive steps of one layer summed.
    using Clock = std::chrono::steady_clock;
    for (auto& step : s.steps) {
      const auto start = Clock::now();
      step.execute(impl_->stream);
      impl_->stream.wait();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      auto& sink = *impl_->profile;
      if (!sink.empty() && sink.back().first == step.layer)
        sink.back().second += seconds;
      else
        sink.emplace_back(step.layer, seconds);
    }
  } else {
    for (auto& step : s.steps) step.execute(impl_->stream);
  }
  impl_->stream.wait();
  impl_->last = &s;
  return out;
}

std::vector<std::string> OneDnnFeatures::describe() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<std::string> lines;
  if (impl_->last)
    for (const auto& step : impl_->last->steps) lines.push_back(step.what);
  return lines;
}

void OneDnnFeatures::set_profile(std::vector<std::pair<std::string, double>>* sink) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->profile = sink;
}

int OneDnnFeatures::winograd_layers() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->last ? impl_->last->winograd : 0;
}

#endif

}  // namespace alexnet
