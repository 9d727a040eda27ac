// Winograd convolutions of the oneDNN plan's own (model/winograd.h): the weights transformed
// once, and per chunk of tiles an input transform, a*a oneDNN matmuls and an output transform.

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which
// -Wmaybe-uninitialized then reports inside the headers (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "model/winograd.h"

#ifdef ALEXNET_HAVE_DNNL

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::onednn {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

constexpr int kBf16Points = 16;  // bf16: the 4x4 transformed tile
constexpr int kBf16Lanes = 16;   // bf16: channels per step of the transforms
constexpr int kF32Side = 6;      // float32: the 6x6 transformed tile
constexpr int kF32Lanes = 8;     // float32: channels per step of the transforms
constexpr int kMaxPoints = kF32Side * kF32Side;
// Tiles per chunk (a chunk may end inside an image). bf16 (4 images at 13x13): the chunk's
// transformed input and float32 products (2.4 and 3.2 MB for conv4) stay in the caches between
// the three passes. At batch 64 on the Zen 4 EPYC, chunks of 196 tiles took 14% less time than
// chunks of 512 and 1024 (whose transforms ran 2x slower), and chunks of 49 (one image) made the
// matrix products 1.5x slower. float32 (conv2: 0.6 MB transformed input, 1.8 MB products): conv2
// took 76-79 ms at batch 64 in 3 of 3 rounds with chunks of 64 tiles, against 75-144 ms (2 of 3
// rounds above 137) with chunks of a whole 27x27 map's 196, the L3 shared with other tenants.
constexpr int64_t kBf16ChunkTiles = 196;
constexpr int64_t kF32ChunkTiles = 64;

// The transforms' arithmetic on kBf16Lanes channels at a time, in AVX-512 (F and BW: every CPU
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

// V = B^T d B for `channels` channels (a multiple of kBf16Lanes): d[16] points at the 4x4
// tile's pixels (row-major, each `channels` bf16 values, zeros for padding); v receives
// point k at v + k * point_stride.
ALEXNET_AVX512 void bf16_input_tile(const uint16_t* const* d, int64_t channels, uint16_t* v, int64_t point_stride) {
  using Vec = simd::Vec;
  for (int64_t c = 0; c < channels; c += kBf16Lanes) {
    Vec t[kBf16Points];  // B^T d: rows combined
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

// Y = A^T m A + bias (ReLU) for `channels` channels (a multiple of kBf16Lanes): point k of the
// products at m + k * point_stride; y[4] receives the 2x2 outputs (row-major), bf16.
ALEXNET_AVX512 void bf16_output_tile(const float* m, int64_t point_stride, int64_t channels, const float* bias, bool relu,
                                uint16_t* const* y) {
  using Vec = simd::Vec;
  for (int64_t c = 0; c < channels; c += kBf16Lanes) {
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

// float32 on the points 0, 1, -1, 2, -2 and infinity (a = 6). B^T is the same for every m.
constexpr float kBt6[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                              {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
constexpr double kPoints6[5] = {0, 1, -1, 2, -2};
// A^T of F(4x4, 3x3) and of F(2x2, 5x5): row i holds point^i, infinity only in the last row.
constexpr float kAt4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
constexpr float kAt2[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};

// G of F(m, r) on those points, (6, r), float64: row j is point_j^k / prod_{l != j}(point_j - point_l).
torch::Tensor f32_g(int64_t r) {
  auto g = torch::zeros({kF32Side, r}, torch::kDouble);
  auto acc = g.accessor<double, 2>();
  for (int j = 0; j < kF32Side - 1; ++j) {
    double f = 1;
    for (int l = 0; l < kF32Side - 1; ++l)
      if (l != j) f *= kPoints6[j] - kPoints6[l];
    for (int64_t k = 0; k < r; ++k) acc[j][k] = std::pow(kPoints6[j], static_cast<double>(k)) / f;
  }
  acc[kF32Side - 1][r - 1] = 1;
  return g;
}

#define ALEXNET_AVX2 __attribute__((target("avx2,fma")))

// out[i] = sum_j mat[i][j] * in[j], kF32Lanes channels at a time; zero coefficients skipped
// and +-1 as additions (the loops unroll, so the tests on constants fold away).
template <int Rows, int Cols>
ALEXNET_AVX2 inline void combine(const float (&mat)[Rows][Cols], const __m256* in, __m256* out) {
#pragma GCC unroll 8
  for (int i = 0; i < Rows; ++i) {
    __m256 acc = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int j = 0; j < Cols; ++j) {
      const float k = mat[i][j];
      if (k == 0.0f) continue;
      acc = k == 1.0f    ? _mm256_add_ps(acc, in[j])
            : k == -1.0f ? _mm256_sub_ps(acc, in[j])
                         : _mm256_fmadd_ps(_mm256_set1_ps(k), in[j], acc);
    }
    out[i] = acc;
  }
}

// V = B^T d B for `channels` channels (a multiple of kF32Lanes): d[36] points at the 6x6
// tile's pixels (row-major, zeros for padding); v receives point k at v + k * point_stride.
ALEXNET_AVX2 void f32_input_tile(const float* const* d, int64_t channels, float* v, int64_t point_stride) {
  for (int64_t c = 0; c < channels; c += kF32Lanes) {
    __m256 t[kF32Side][kF32Side];  // B^T d
    for (int j = 0; j < kF32Side; ++j) {
      __m256 column[kF32Side], combined[kF32Side];
      for (int i = 0; i < kF32Side; ++i) column[i] = _mm256_loadu_ps(d[i * kF32Side + j] + c);
      combine(kBt6, column, combined);
      for (int i = 0; i < kF32Side; ++i) t[i][j] = combined[i];
    }
    for (int i = 0; i < kF32Side; ++i) {  // (B^T d) B
      __m256 row[kF32Side];
      combine(kBt6, t[i], row);
      for (int j = 0; j < kF32Side; ++j) _mm256_storeu_ps(v + (i * kF32Side + j) * point_stride + c, row[j]);
    }
  }
}

// Y = A^T m A + bias (ReLU) for `channels` channels (a multiple of kF32Lanes): point k of the
// products at m + k * point_stride; y[M * M] receives the M x M outputs (row-major).
template <int M>
ALEXNET_AVX2 void f32_output_tile(const float (&at)[M][kF32Side], const float* m, int64_t point_stride,
                                  int64_t channels, const float* bias, bool relu, float* const* y) {
  for (int64_t c = 0; c < channels; c += kF32Lanes) {
    __m256 s[M][kF32Side];  // (m A)^T: s[j][i] = sum_l m[i][l] A^T[j][l]
    for (int i = 0; i < kF32Side; ++i) {
      __m256 row[kF32Side], combined[M];
      for (int l = 0; l < kF32Side; ++l) row[l] = _mm256_loadu_ps(m + (i * kF32Side + l) * point_stride + c);
      combine(at, row, combined);
      for (int j = 0; j < M; ++j) s[j][i] = combined[j];
    }
    const __m256 b = _mm256_loadu_ps(bias + c);
    for (int j = 0; j < M; ++j) {  // A^T (m A): column j
      __m256 column[M];
      combine(at, s[j], column);
      for (int i = 0; i < M; ++i) {
        __m256 out = _mm256_add_ps(column[i], b);
        if (relu) out = _mm256_max_ps(out, _mm256_setzero_ps());
        _mm256_storeu_ps(y[i * M + j] + c, out);
      }
    }
  }
}

bool has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return has;
}

bool has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

size_t aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }

// The geometry of a variant: outputs per tile side, kernel side, tile side.
struct Geometry {
  int64_t m = 0, r = 0, a = 0;
  int64_t points() const { return a * a; }
};

Geometry geometry_of(torch::ScalarType dtype, int64_t r) {
  if (dtype == torch::kBFloat16) return {2, 3, 4};
  return {kF32Side + 1 - r, r, kF32Side};
}

}  // namespace

struct Winograd::Impl {
  torch::ScalarType dtype = torch::kFloat;
  Geometry geo;
  int64_t ic = 0, oc = 0, pad_h = 0, pad_w = 0;
  bool relu = false;
  dnnl::engine engine;
  torch::Tensor u;     // (a*a, IC, OC) of the layer's dtype: U = G g G^T, point-major
  torch::Tensor bias;  // (OC) float32
  std::vector<std::pair<memory::desc, memory>> packs;  // u in each layout a matmul asked for

  Dt dt() const { return dtype == torch::kBFloat16 ? Dt::bf16 : Dt::f32; }

  memory packed(const memory::desc& want) {
    for (const auto& [desc, mem] : packs)
      if (desc == want) return mem;
    memory user({{geo.points(), ic, oc}, dt(), Tag::abc}, engine, u.data_ptr());
    if (want == user.get_desc()) {  // u itself (U is 4x a 3x3 layer's weights: no second copy)
      packs.emplace_back(want, user);
      return user;
    }
    memory pack(want, engine);
    dnnl::stream stream(engine);
    dnnl::reorder(user, pack).execute(stream, user, pack);
    stream.wait();
    packs.emplace_back(want, pack);
    return pack;
  }
};

struct Winograd::Call::Impl {
  int64_t n = 0, h = 0, w = 0, oh = 0, ow = 0, tiles_h = 0, tiles_w = 0;
  int64_t ic = 0, oc = 0, pad_h = 0, pad_w = 0;
  Geometry geo;
  torch::ScalarType dtype = torch::kFloat;
  bool relu = false;
  int64_t chunk = 1;  // tiles per chunk (of the batch's n * tiles())
  torch::Tensor bias;
  torch::Tensor zeros;  // one pixel of padding (IC values of the dtype)
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

  // Input tile t of the batch: the a x a pixels it reads (zeros outside).
  template <typename T>
  void gather(const T* x, int64_t t, const T** d) const {
    const T* zero = static_cast<const T*>(zeros.data_ptr());
    const int64_t b = t / tiles(), ty = t % tiles() / tiles_w, tx = t % tiles_w;
    for (int64_t i = 0; i < geo.a; ++i)
      for (int64_t j = 0; j < geo.a; ++j) {
        const int64_t r = ty * geo.m - pad_h + i, c = tx * geo.m - pad_w + j;
        d[i * geo.a + j] = r < 0 || r >= h || c < 0 || c >= w ? zero : x + ((b * h + r) * w + c) * ic;
      }
  }

  // Output tile t's m x m pixels in y; those past the map's edge (odd sides) go to `spill`.
  template <typename T>
  void scatter(T* y, int64_t t, T* spill, T** out) const {
    const int64_t b = t / tiles(), ty = t % tiles() / tiles_w, tx = t % tiles_w;
    for (int64_t i = 0; i < geo.m; ++i)
      for (int64_t j = 0; j < geo.m; ++j) {
        const int64_t r = ty * geo.m + i, c = tx * geo.m + j;
        out[i * geo.m + j] = r >= oh || c >= ow ? spill : y + ((b * oh + r) * ow + c) * oc;
      }
  }

  // Tiles first .. first + rows of the batch into v, row by row.
  void transform_input(const void* x, int64_t first, int64_t rows, void* v) const {
    const int64_t points = geo.points();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (dtype == torch::kBFloat16) {
          const uint16_t* d[kMaxPoints];
          gather(static_cast<const uint16_t*>(x), first + t, d);
          bf16_input_tile(d, ic, static_cast<uint16_t*>(v) + t * points * ic, ic);
        } else {
          const float* d[kMaxPoints];
          gather(static_cast<const float*>(x), first + t, d);
          f32_input_tile(d, ic, static_cast<float*>(v) + t * points * ic, ic);
        }
      }
    });
  }

  void transform_output(const float* m, int64_t first, int64_t rows, void* y) const {
    const int64_t points = geo.points();
    const float* b = bias.data_ptr<float>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      if (dtype == torch::kBFloat16) {
        std::vector<uint16_t> spill(oc);
        uint16_t* out[kMaxPoints];
        for (int64_t t = begin; t < end; ++t) {
          scatter(static_cast<uint16_t*>(y), first + t, spill.data(), out);
          bf16_output_tile(m + t * points * oc, oc, oc, b, relu, out);
        }
        return;
      }
      std::vector<float> spill(oc);
      float* out[kMaxPoints];
      for (int64_t t = begin; t < end; ++t) {
        scatter(static_cast<float*>(y), first + t, spill.data(), out);
        if (geo.m == 4)
          f32_output_tile(kAt4, m + t * points * oc, oc, oc, b, relu, out);
        else
          f32_output_tile(kAt2, m + t * points * oc, oc, oc, b, relu, out);
      }
    });
  }
};

bool Winograd::supports(torch::ScalarType dtype, int64_t in_channels, int64_t out_channels, const int64_t kernel[2],
                        const int64_t stride[2], const int64_t padding[2]) {
  const bool bf16 = dtype == torch::kBFloat16;
  if (!bf16 && dtype != torch::kFloat) return false;
  const int64_t r = kernel[0];
  if (bf16 ? r != 3 : r != 3 && r != 5) return false;
  for (int d = 0; d < 2; ++d)
    if (kernel[d] != r || stride[d] != 1 || padding[d] < 0 || padding[d] >= r) return false;
  const int64_t lanes = bf16 ? kBf16Lanes : kF32Lanes;
  return (bf16 ? has_avx512() : has_avx2_fma()) && in_channels > 0 && out_channels > 0 &&
         in_channels % lanes == 0 && out_channels % lanes == 0;
}

bool Winograd::bf16_pays_on_this_cpu() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16;
}

Winograd::Winograd(const torch::Tensor& weight, const torch::Tensor& bias, int64_t pad_h, int64_t pad_w, bool relu,
                   const dnnl::engine& engine)
    : impl_(std::make_unique<Impl>()) {
  const auto dtype = weight.scalar_type();
  const int64_t kernel[2] = {weight.dim() == 4 ? weight.size(2) : 0, weight.dim() == 4 ? weight.size(3) : 0};
  const int64_t stride[2] = {1, 1}, padding[2] = {pad_h, pad_w};
  TORCH_CHECK(weight.dim() == 4 && supports(dtype, weight.size(1), weight.size(0), kernel, stride, padding),
              "Winograd: no variant for a ", dtype, " weight of ", weight.sizes(), " with padding ", pad_h, "x",
              pad_w, " on this CPU");
  auto& m = *impl_;
  m.dtype = dtype;
  m.geo = geometry_of(dtype, kernel[0]);
  m.oc = weight.size(0);
  m.ic = weight.size(1);
  m.pad_h = pad_h;
  m.pad_w = pad_w;
  m.relu = relu;
  m.engine = engine;
  const torch::Tensor g =
      dtype == torch::kBFloat16
          ? torch::tensor({1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 1.0}, torch::kDouble).view({4, 3})
          : f32_g(kernel[0]);
  // bf16's U in float32 (its products' operands are rounded to bf16 anyway), float32's in float64.
  const auto wide = dtype == torch::kBFloat16 ? torch::kFloat : torch::kDouble;
  const auto gw = g.to(wide), gt = gw.t();
  // U a block of output channels at a time: the float64 temporaries of a whole layer (conv4:
  // 28 MB each) would raise the peak memory of a batch-1 process by about 100 MiB.
  m.u = torch::empty({m.geo.points(), m.ic, m.oc}, dtype);
  constexpr int64_t kBlock = 32;
  for (int64_t o = 0; o < m.oc; o += kBlock) {
    const int64_t end = std::min(m.oc, o + kBlock);
    const auto w = weight.detach().slice(0, o, end).to(torch::kCPU, wide);  // (block, IC, r, r)
    const auto u = torch::matmul(torch::matmul(gw, w), gt);                 // (block, IC, a, a)
    m.u.slice(2, o, end).copy_(u.permute({2, 3, 1, 0}).reshape({m.geo.points(), m.ic, end - o}));
  }
  m.bias = bias.detach().to(torch::kCPU, torch::kFloat).contiguous();
}

Winograd::~Winograd() = default;

Winograd::Call Winograd::prepare(int64_t n, int64_t h, int64_t w) {
  auto& layer = *impl_;
  auto c = std::make_shared<Call::Impl>();
  c->geo = layer.geo;
  c->dtype = layer.dtype;
  c->n = n;
  c->h = h;
  c->w = w;
  c->oh = h + 2 * layer.pad_h - layer.geo.r + 1;
  c->ow = w + 2 * layer.pad_w - layer.geo.r + 1;
  TORCH_CHECK(n >= 1 && c->oh >= 1 && c->ow >= 1, "Winograd: input ", h, "x", w, " is too small");
  c->tiles_h = (c->oh + layer.geo.m - 1) / layer.geo.m;
  c->tiles_w = (c->ow + layer.geo.m - 1) / layer.geo.m;
  c->ic = layer.ic;
  c->oc = layer.oc;
  c->pad_h = layer.pad_h;
  c->pad_w = layer.pad_w;
  c->relu = layer.relu;
  c->bias = layer.bias;
  c->zeros = torch::zeros({layer.ic}, layer.dtype);
  c->engine = layer.engine;
  const int64_t chunk_tiles = layer.dtype == torch::kBFloat16 ? kBf16ChunkTiles : kF32ChunkTiles;
  const int64_t total = n * c->tiles();
  c->chunk = std::min(chunk_tiles, total);
  const int64_t points = layer.geo.points();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  for (const int64_t rows : {c->chunk, total % c->chunk}) {
    if (rows == 0) continue;
    Call::Impl::Product p;
    // Tile-major (rows, points, channels): each tile's points side by side for the transforms.
    p.src = memory::desc({points, rows, layer.ic}, layer.dt(), Tag::bac);
    p.dst = memory::desc({points, rows, layer.oc}, Dt::f32, Tag::bac);
    const memory::desc any_weights({points, layer.ic, layer.oc}, layer.dt(), Tag::any);
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

size_t Winograd::Call::scratch_bytes() const { return impl_->v_bytes + impl_->m_bytes + impl_->pad_bytes; }

std::string Winograd::Call::description() const {
  const Impl& c = *impl_;
  const std::string m = std::to_string(c.geo.m), r = std::to_string(c.geo.r);
  return "winograd F(" + m + "x" + m + "," + r + "x" + r + ") " + (c.dtype == torch::kBFloat16 ? "bf16" : "f32") +
         ", matmul " + c.products.front().kernel;
}

void Winograd::Call::run(const void* x, void* y, void* scratch, dnnl::stream& stream) const {
  const Impl& c = *impl_;
  auto* bytes = static_cast<uint8_t*>(scratch);
  void* v = bytes;
  auto* m = reinterpret_cast<float*>(bytes + c.v_bytes);
  void* pad = bytes + c.v_bytes + c.m_bytes;
  const int64_t total = c.n * c.tiles();
  for (int64_t first = 0; first < total; first += c.chunk) {
    const int64_t rows = std::min(c.chunk, total - first);
    const auto& p = rows == c.chunk ? c.products.front() : c.products.back();
    c.transform_input(x, first, rows, v);
    p.primitive.execute(stream, {{DNNL_ARG_SRC, memory(p.src, c.engine, v)},
                                 {DNNL_ARG_WEIGHTS, p.weights},
                                 {DNNL_ARG_DST, memory(p.dst, c.engine, m)},
                                 {DNNL_ARG_SCRATCHPAD, memory(p.scratchpad, c.engine, pad)}});
    stream.wait();
    c.transform_output(m, first, rows, y);
  }
}

}  // namespace alexnet::onednn

#endif  // ALEXNET_HAVE_DNNL
