// Winograd F(2x2, 3x3) in bf16 (model/winograd_bf16.h): the weights transformed once, and
// per chunk of images an input transform, 16 oneDNN matmuls and an output transform.

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which
// -Wmaybe-uninitialized then reports inside the headers (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "model/winograd_bf16.h"

#ifdef ALEXNET_HAVE_DNNL

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::onednn {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

constexpr int kPoints = 16;  // the 4x4 transformed tile
constexpr int kLanes = 16;   // channels per step of the transforms
// Tiles per chunk of images (4 images at 13x13): the chunk's transformed input and float32
// products (1.2 and 1.6 MB for conv4) stay in the caches between the three passes. At batch 64
// on the Zen 4 EPYC, chunks of 196 tiles took 14% less time than chunks of 512 and 1024 (whose
// transforms ran 2x slower), and chunks of 49 (one image) made the matrix products 1.5x slower.
constexpr int64_t kChunkTiles = 196;

// The transforms' arithmetic on kLanes channels at a time, in AVX-512 (F and BW: every CPU
// whose oneDNN runs bf16 kernels of its own, the only ones where the plan runs bf16).
#define ALEXNET_AVX512 __attribute__((target("avx512f,avx512bw")))
namespace simd {
using Vec = __m512;
ALEXNET_AVX512 inline Vec load(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
ALEXNET_AVX512 inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
// Rounds to nearest even, as oneDNN and LibTorch round to bf16; a NaN keeps a mantissa bit set.
ALEXNET_AVX512 inline void store(uint16_t* p, Vec v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), odd), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
}
ALEXNET_AVX512 inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
ALEXNET_AVX512 inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
ALEXNET_AVX512 inline Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
ALEXNET_AVX512 inline Vec zero() { return _mm512_setzero_ps(); }
}  // namespace simd

// V = B^T d B for `channels` channels (a multiple of kLanes): d[16] points at the 4x4
// tile's pixels (row-major, each `channels` bf16 values, zeros for padding); v receives
// point k at v + k * point_stride.
ALEXNET_AVX512 void input_tile(const uint16_t* const* d, int64_t channels, uint16_t* v, int64_t point_stride) {
  using Vec = simd::Vec;
  for (int64_t c = 0; c < channels; c += kLanes) {
    Vec t[kPoints];  // B^T d: rows combined
    for (int j = 0; j < 4; ++j) {
      const Vec x0 = simd::load(d[0 * 4 + j] + c), x1 = simd::load(d[1 * 4 + j] + c);
      const Vec x2 = simd::load(d[2 * 4 + j] + c), x3 = simd::load(d[3 * 4 + j] + c);
      t[0 * 4 + j] = simd::sub(x0, x2);
      t[1 * 4 + j] = simd::add(x1, x2);
      t[2 * 4 + j] = simd::sub(x2, x1);
      t[3 * 4 + j] = simd::sub(x1, x3);
    }
    for (int i = 0; i < 4; ++i) {  // (B^T d) B: columns combined
      simd::store(v + (i * 4 + 0) * point_stride + c, simd::sub(t[i * 4 + 0], t[i * 4 + 2]));
      simd::store(v + (i * 4 + 1) * point_stride + c, simd::add(t[i * 4 + 1], t[i * 4 + 2]));
      simd::store(v + (i * 4 + 2) * point_stride + c, simd::sub(t[i * 4 + 2], t[i * 4 + 1]));
      simd::store(v + (i * 4 + 3) * point_stride + c, simd::sub(t[i * 4 + 1], t[i * 4 + 3]));
    }
  }
}

// Y = A^T m A + bias (ReLU) for `channels` channels (a multiple of kLanes): point k of the
// products at m + k * point_stride; y[4] receives the 2x2 outputs (row-major), bf16.
ALEXNET_AVX512 void output_tile(const float* m, int64_t point_stride, int64_t channels, const float* bias, bool relu,
                                uint16_t* const* y) {
  using Vec = simd::Vec;
  for (int64_t c = 0; c < channels; c += kLanes) {
    Vec s[4][2];  // m A: columns combined
    for (int i = 0; i < 4; ++i) {
      const float* row = m + i * 4 * point_stride + c;  // points (i, 0..3)
      const Vec m0 = simd::load(row), m1 = simd::load(row + point_stride);
      const Vec m2 = simd::load(row + 2 * point_stride), m3 = simd::load(row + 3 * point_stride);
      s[i][0] = simd::add(simd::add(m0, m1), m2);
      s[i][1] = simd::sub(simd::sub(m1, m2), m3);
    }
    const Vec b = simd::load(bias + c);
    for (int j = 0; j < 2; ++j) {  // A^T (m A): rows combined
      Vec top = simd::add(simd::add(simd::add(s[0][j], s[1][j]), s[2][j]), b);
      Vec bottom = simd::add(simd::sub(simd::sub(s[1][j], s[2][j]), s[3][j]), b);
      if (relu) {
        top = simd::max(top, simd::zero());
        bottom = simd::max(bottom, simd::zero());
      }
      simd::store(y[j] + c, top);
      simd::store(y[2 + j] + c, bottom);
    }
  }
}

bool has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return has;
}

size_t aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }

}  // namespace

struct WinogradBf16::Impl {
  int64_t ic = 0, oc = 0, pad_h = 0, pad_w = 0;
  bool relu = false;
  dnnl::engine engine;
  torch::Tensor u;     // (16, IC, OC) bf16: U = G g G^T, point-major
  torch::Tensor bias;  // (OC) float32
  std::vector<std::pair<memory::desc, memory>> packs;  // u in each layout a matmul asked for

  memory packed(const memory::desc& want) {
    for (const auto& [desc, mem] : packs)
      if (desc == want) return mem;
    memory user({{kPoints, ic, oc}, Dt::bf16, Tag::abc}, engine, u.data_ptr());
    memory pack(want, engine);
    dnnl::stream stream(engine);
    dnnl::reorder(user, pack).execute(stream, user, pack);
    stream.wait();
    packs.emplace_back(want, pack);
    return pack;
  }
};

struct WinogradBf16::Call::Impl {
  int64_t n = 0, h = 0, w = 0, oh = 0, ow = 0, tiles_h = 0, tiles_w = 0;
  int64_t ic = 0, oc = 0, pad_h = 0, pad_w = 0;
  bool relu = false;
  int64_t chunk = 1;  // images per chunk
  torch::Tensor bias;
  std::vector<uint16_t> zeros;  // one pixel of padding
  dnnl::engine engine;
  // The matmul for a full chunk, and for the last, shorter one (if any).
  struct Product {
    dnnl::matmul primitive;
    memory weights;
    memory::desc src, dst, scratchpad;
    std::string kernel;
  };
  std::vector<Product> products;
  size_t v_bytes = 0, m_bytes = 0, pad_bytes = 0;

  int64_t tiles() const { return tiles_h * tiles_w; }

  void transform_input(const uint16_t* x, int64_t first, int64_t images, uint16_t* v) const {
    const int64_t rows = images * tiles();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      const uint16_t* d[kPoints];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = first + t / tiles(), ty = t % tiles() / tiles_w, tx = t % tiles_w;
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            const int64_t r = ty * 2 - pad_h + i, c = tx * 2 - pad_w + j;
            d[i * 4 + j] = r < 0 || r >= h || c < 0 || c >= w ? zeros.data() : x + ((b * h + r) * w + c) * ic;
          }
        input_tile(d, ic, v + t * kPoints * ic, ic);
      }
    });
  }

  void transform_output(const float* m, int64_t first, int64_t images, uint16_t* y) const {
    const int64_t rows = images * tiles();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<uint16_t> spill(oc);  // outputs past the map's edge (odd sides)
      uint16_t* out[4];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = first + t / tiles(), ty = t % tiles() / tiles_w, tx = t % tiles_w;
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) {
            const int64_t r = ty * 2 + i, c = tx * 2 + j;
            out[i * 2 + j] = r >= oh || c >= ow ? spill.data() : y + ((b * oh + r) * ow + c) * oc;
          }
        output_tile(m + t * kPoints * oc, oc, oc, bias.data_ptr<float>(), relu, out);
      }
    });
  }
};

bool WinogradBf16::supports(int64_t in_channels, int64_t out_channels, const int64_t kernel[2],
                            const int64_t stride[2], const int64_t padding[2]) {
  for (int d = 0; d < 2; ++d)
    if (kernel[d] != 3 || stride[d] != 1 || padding[d] < 0 || padding[d] > 2) return false;
  return has_avx512() && in_channels > 0 && out_channels > 0 && in_channels % kLanes == 0 &&
         out_channels % kLanes == 0;
}

bool WinogradBf16::pays_on_this_cpu() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16;
}

WinogradBf16::WinogradBf16(const torch::Tensor& weight, const torch::Tensor& bias, int64_t pad_h, int64_t pad_w,
                           bool relu, const dnnl::engine& engine)
    : impl_(std::make_unique<Impl>()) {
  const int64_t kernel[2] = {weight.dim() == 4 ? weight.size(2) : 0, weight.dim() == 4 ? weight.size(3) : 0};
  const int64_t stride[2] = {1, 1}, padding[2] = {pad_h, pad_w};
  TORCH_CHECK(weight.dim() == 4 && supports(weight.size(1), weight.size(0), kernel, stride, padding),
              "Winograd bf16: expected a (OC, IC, 3, 3) weight with channels in multiples of ", kLanes,
              ", padding 0 to 2 and AVX-512, got ", weight.sizes(), " and padding ", pad_h, "x", pad_w);
  auto& m = *impl_;
  m.oc = weight.size(0);
  m.ic = weight.size(1);
  m.pad_h = pad_h;
  m.pad_w = pad_w;
  m.relu = relu;
  m.engine = engine;
  const auto g = torch::tensor({1.0f, 0.0f, 0.0f, 0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f, 0.0f, 0.0f, 1.0f}).view({4, 3});
  const auto w = weight.detach().to(torch::kCPU, torch::kFloat);     // (OC, IC, 3, 3)
  const auto u = torch::matmul(torch::matmul(g, w), g.t());         // (OC, IC, 4, 4)
  m.u = u.permute({2, 3, 1, 0}).reshape({kPoints, m.ic, m.oc}).to(torch::kBFloat16).contiguous();
  m.bias = bias.detach().to(torch::kCPU, torch::kFloat).contiguous();
}

WinogradBf16::~WinogradBf16() = default;

WinogradBf16::Call WinogradBf16::prepare(int64_t n, int64_t h, int64_t w) {
  auto& layer = *impl_;
  auto c = std::make_shared<Call::Impl>();
  c->n = n;
  c->h = h;
  c->w = w;
  c->oh = h + 2 * layer.pad_h - 2;
  c->ow = w + 2 * layer.pad_w - 2;
  TORCH_CHECK(n >= 1 && c->oh >= 1 && c->ow >= 1, "Winograd bf16: input ", h, "x", w, " is too small");
  c->tiles_h = (c->oh + 1) / 2;
  c->tiles_w = (c->ow + 1) / 2;
  c->ic = layer.ic;
  c->oc = layer.oc;
  c->pad_h = layer.pad_h;
  c->pad_w = layer.pad_w;
  c->relu = layer.relu;
  c->bias = layer.bias;
  c->zeros.assign(layer.ic, 0);
  c->engine = layer.engine;
  c->chunk = std::clamp<int64_t>((kChunkTiles + c->tiles() - 1) / c->tiles(), 1, n);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  for (const int64_t images : {c->chunk, n % c->chunk}) {
    if (images == 0) continue;
    const int64_t rows = images * c->tiles();
    Call::Impl::Product p;
    // Tile-major (rows, 16, channels): each tile's 16 points side by side for the transforms.
    p.src = memory::desc({kPoints, rows, layer.ic}, Dt::bf16, Tag::bac);
    p.dst = memory::desc({kPoints, rows, layer.oc}, Dt::f32, Tag::bac);
    const memory::desc any_weights({kPoints, layer.ic, layer.oc}, Dt::bf16, Tag::any);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.src, any_weights, p.dst), attr, layer.engine);
    p.primitive = dnnl::matmul(pd);
    p.kernel = pd.impl_info_str();
    p.weights = layer.packed(pd.weights_desc());
    p.scratchpad = pd.scratchpad_desc();
    c->v_bytes = std::max(c->v_bytes, aligned(p.src.get_size()));
    c->m_bytes = std::max(c->m_bytes, aligned(p.dst.get_size()));
    c->pad_bytes = std::max(c->pad_bytes, aligned(p.scratchpad.get_size()));
    c->products.push_back(std::move(p));
  }
  Call call;
  call.impl_ = std::move(c);
  return call;
}

size_t WinogradBf16::Call::scratch_bytes() const { return impl_->v_bytes + impl_->m_bytes + impl_->pad_bytes; }

std::string WinogradBf16::Call::kernel() const {
  return impl_->products.front().kernel;
}

void WinogradBf16::Call::run(const void* x, void* y, void* scratch, dnnl::stream& stream) const {
  const Impl& c = *impl_;
  auto* bytes = static_cast<uint8_t*>(scratch);
  auto* v = reinterpret_cast<uint16_t*>(bytes);
  auto* m = reinterpret_cast<float*>(bytes + c.v_bytes);
  void* pad = bytes + c.v_bytes + c.m_bytes;
  for (int64_t first = 0; first < c.n; first += c.chunk) {
    const int64_t images = std::min(c.chunk, c.n - first);
    const auto& p = images == c.chunk ? c.products.front() : c.products.back();
    c.transform_input(static_cast<const uint16_t*>(x), first, images, v);
    p.primitive.execute(stream, {{DNNL_ARG_SRC, memory(p.src, c.engine, v)},
                                 {DNNL_ARG_WEIGHTS, p.weights},
                                 {DNNL_ARG_DST, memory(p.dst, c.engine, m)},
                                 {DNNL_ARG_SCRATCHPAD, memory(p.scratchpad, c.engine, pad)}});
    stream.wait();
    c.transform_output(m, first, images, static_cast<uint16_t*>(y));
  }
}

}  // namespace alexnet::onednn

#endif  // ALEXNET_HAVE_DNNL
