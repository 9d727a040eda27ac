// Reads the versioned tensor fixtures written by tests/fixture.py, and the CPU as the
// tests expect oneDNN to see it.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

namespace alexnet::testing {

constexpr uint32_t kFixtureVersion = 1;

/// Directory the reference generator wrote to (ctest sets ALEXNET_REFERENCE_DIR).
inline std::string reference_dir() {
  const char* dir = std::getenv("ALEXNET_REFERENCE_DIR");
#ifdef ALEXNET_TEST_REFERENCE_DIR
  return dir ? dir : ALEXNET_TEST_REFERENCE_DIR;
#else
  return dir ? dir : "build/reference";
#endif
}

inline std::string reference_path(const std::string& name) { return reference_dir() + "/" + name; }

/// name -> tensor. Throws with a regeneration hint when the file is missing or stale.
inline std::map<std::string, torch::Tensor> read_fixture(const std::string& path) {
  const std::string hint =
      " (regenerate with: ctest -R reference_data, or /usr/bin/python3 tests/make_reference.py "
      "--out DIR)";
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "fixture ", path, ": cannot open", hint);
  char magic[8];
  in.read(magic, 8);
  TORCH_CHECK(in && std::string(magic, 8) == std::string("ALXREF\0\0", 8), "fixture ", path,
              ": bad magic", hint);
  uint32_t version = 0, count = 0;
  in.read(reinterpret_cast<char*>(&version), 4);
  in.read(reinterpret_cast<char*>(&count), 4);
  TORCH_CHECK(version == kFixtureVersion, "fixture ", path, ": version ", version, ", expected ",
              kFixtureVersion, hint);
  std::map<std::string, torch::Tensor> out;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = 0, code = 0, ndim = 0;
    in.read(reinterpret_cast<char*>(&len), 4);
    std::string name(len, '\0');
    in.read(name.data(), len);
    in.read(reinterpret_cast<char*>(&code), 4);
    in.read(reinterpret_cast<char*>(&ndim), 4);
    std::vector<int64_t> sizes(ndim);
    in.read(reinterpret_cast<char*>(sizes.data()), 8 * ndim);
    const torch::ScalarType types[] = {torch::kFloat32, torch::kInt64, torch::kUInt8,
                                       torch::kFloat64};
    TORCH_CHECK(in && code < 4, "fixture ", path, ": corrupt entry ", i, hint);
    torch::Tensor t = torch::empty(sizes, types[code]);
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    TORCH_CHECK(in, "fixture ", path, ": truncated at ", name, hint);
    out.emplace(name, t);
  }
  return out;
}

/// oneDNN's cap in force, upper-cased: ONEDNN_MAX_CPU_ISA, else DNNL_MAX_CPU_ISA (oneDNN 2.x reads
/// both, in that order); "" when neither is set.
inline std::string onednn_isa_cap() {
  for (const char* name : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    std::string s(v);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
    return s;
  }
  return "";
}

/// What oneDNN's cap does to its avx512_core kernels (the Winograd convolutions need them):
/// its names at or above AVX512_CORE let them through; its names below (SSE41, AVX, AVX2,
/// AVX2_VNNI, AVX2_VNNI_2, and the Xeon Phi's AVX512_MIC, AVX512_MIC_4OPS, which lack
/// avx512_core's BW, DQ and VL) exclude them; a name it does not know, it ignores.
enum class CapEffect { kNone, kAllows, kExcludes, kUnknownName };
inline CapEffect onednn_cap_effect_on_avx512_core() {
  static const std::set<std::string> kWithAvx512Core = {
      "AVX512_CORE",     "AVX512_CORE_VNNI",     "AVX512_CORE_BF16", "AVX512_CORE_FP16",
      "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",      "AVX10_1_512_AMX",
      "AVX10_1_512_AMX_FP16", "AVX10_2_512",     "AVX10_2_512_AMX_2", "ALL", "DEFAULT"};
  static const std::set<std::string> kBelowAvx512Core = {
      "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS"};
  const std::string cap = onednn_isa_cap();
  if (cap.empty()) return CapEffect::kNone;
  if (kWithAvx512Core.count(cap) != 0) return CapEffect::kAllows;
  if (kBelowAvx512Core.count(cap) != 0) return CapEffect::kExcludes;
  return CapEffect::kUnknownName;
}

/// Whether oneDNN may run its avx512_core kernels here, stated apart from app/runtime/cpu and
/// from oneDNN: /proc/cpuinfo lists AVX-512 F, CD, BW, DQ and VL, and the cap lets them through.
inline bool cpu_has_avx512_core() {
  if (onednn_cap_effect_on_avx512_core() == CapEffect::kExcludes) return false;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    int found = 0;
    for (std::string w; words >> w;)
      found += w == "avx512f" || w == "avx512cd" || w == "avx512bw" || w == "avx512dq" || w == "avx512vl";
    return found == 5;
  }
  return false;
}

/// Whether /proc/cpuinfo lists AVX2 and FMA: the plan's own float32 Winograd (model/winograd.h),
/// which checks the CPU itself and is not capped by ONEDNN_MAX_CPU_ISA.
inline bool cpu_has_avx2_fma() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    int found = 0;
    for (std::string w; words >> w;) found += w == "avx2" || w == "fma";
    return found == 2;
  }
  return false;
}

/// For skip reasons and messages: the CPU's model name, whether oneDNN may use avx512_core, and
/// the cap, e.g. "Intel(R) Xeon(R) Platinum 8480+ (AVX-512: no, oneDNN capped at AVX2)".
inline std::string cpu_description() {
  std::string model = "unknown model";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon != std::string::npos && colon + 2 <= line.size()) model = line.substr(colon + 2);
    break;
  }
  std::string cap;
  switch (onednn_cap_effect_on_avx512_core()) {
    case CapEffect::kNone: break;
    case CapEffect::kUnknownName: cap = ", oneDNN cap " + onednn_isa_cap() + " ignored (not one of its names)"; break;
    default: cap = ", oneDNN capped at " + onednn_isa_cap();
  }
  return model + " (AVX-512: " + (cpu_has_avx512_core() ? "yes" : "no") + cap + ")";
}

}  // namespace alexnet::testing
