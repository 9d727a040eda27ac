#include "app/runtime/cpu.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace alexnet::runtime {

namespace {

// What each of oneDNN's cap names lets through, of the instruction sets in CpuIsa (oneDNN's
// "CPU Dispatcher Control" page; its ISAs are only partially ordered: AVX2_VNNI is not below
// AVX512_CORE, and AVX512_CORE_AMX includes every AVX-512 extension before it).
struct CapRow {
  const char* name;
  CpuIsa allows;
};

// Fields: avx2, avx512, avx512_vnni, avx_vnni, avx512_bf16, amx_bf16, amx_int8 (avx512_bf16_fast
// follows avx512_bf16).
constexpr CpuIsa kNone{};
constexpr CpuIsa kAvx2{true, false, false, false, false, false, false};
constexpr CpuIsa kAvx2Vnni{true, false, false, true, false, false, false};
constexpr CpuIsa kAvx512{true, true, false, false, false, false, false};
constexpr CpuIsa kAvx512Vnni{true, true, true, false, false, false, false};
constexpr CpuIsa kAvx512Bf16{true, true, true, false, true, false, false};
constexpr CpuIsa kAvx512Fp16{true, true, true, true, true, false, false};  // 3.x: with AVX2_VNNI_2
constexpr CpuIsa kAll{true, true, true, true, true, true, true};

constexpr CapRow kCaps[] = {
    {"SSE41", kNone},
    {"AVX", kNone},
    {"AVX2", kAvx2},
    {"AVX2_VNNI", kAvx2Vnni},
    {"AVX2_VNNI_2", kAvx2Vnni},
    {"AVX512_MIC", kAvx2},  // Xeon Phi: none of avx512_core's extensions
    {"AVX512_MIC_4OPS", kAvx2},
    {"AVX512_CORE", kAvx512},
    {"AVX512_CORE_VNNI", kAvx512Vnni},
    {"AVX512_CORE_BF16", kAvx512Bf16},
    {"AVX512_CORE_FP16", kAvx512Fp16},
    {"AVX10_1_512", kAvx512Fp16},  // oneDNN 3.x's name for AVX512_CORE_FP16
    {"AVX10_2_512", kAvx512Fp16},
    {"AVX512_CORE_AMX", kAll},
    {"AVX512_CORE_AMX_FP16", kAll},
    {"AVX10_1_512_AMX", kAll},
    {"AVX10_1_512_AMX_FP16", kAll},

    {"AVX10_2_512_AMX_2", kAll},
    {"ALL", kAll},
    {"DEFAULT", kAll},
};

// The cap variable's value as oneDNN reads it (ONEDNN_ first), upper-cased; "" when unset.
std::string cap_value() {
  for (const char* name : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    std::string s(v);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
    return s;
  }
  return "";
}

const CapRow* find_cap(const std::string& value) {
  for (const auto& row : kCaps)
    if (value == row.name) return &row;
  return nullptr;
}

bool same(const CpuIsa& a, const CpuIsa& b) {
  return a.avx2 == b.avx2 && a.avx512 == b.avx512 && a.avx512_vnni == b.avx512_vnni && a.avx_vnni == b.avx_vnni &&
         a.avx512_bf16 == b.avx512_bf16 && a.amx_bf16 == b.amx_bf16 && a.amx_int8 == b.amx_int8 &&
         a.avx512_bf16_fast == b.avx512_bf16_fast;
}

// The value of /proc/cpuinfo's first `key : value` line ("" where absent).
std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) return "";
    const auto start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

std::string cpu_model_name() { return cpuinfo_field("model name"); }

}  // namespace

std::string CpuIsa::class_name() const {
  if (amx_bf16 && amx_int8) return "AMX";
  if (avx512 && vnni()) return "AVX-512 VNNI";
  if (avx512) return "AVX-512";
  if (avx2) return "AVX2";
  return "pre-AVX2";
}

std::string CpuIsa::flag_names() const {
  std::string s;
  const auto add = [&](bool on, const char* name) {
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add(avx2, "AVX2");
  add(avx512, "AVX512F");
  add(avx512_vnni, "AVX512-VNNI");
  add(avx_vnni, "AVX-VNNI");
  add(avx512_bf16, "AVX512-BF16");
  add(amx_bf16, "AMX-BF16");
  add(amx_int8, "AMX-INT8");
  return s.empty() ? "none of AVX2, AVX512F, VNNI, AVX512-BF16, AMX" : s;
}

const std::string& cpu_vendor() {
  static const std::string vendor = cpuinfo_field("vendor_id");
  return vendor;
}

CpuIsa isa_from_flags(const std::set<std::string>& f, const std::string& vendor) {
  const auto has = [&](const char* name) { return f.count(name) > 0; };
  CpuIsa s;
  s.avx2 = has("avx2") && has("fma");
  s.avx512 = has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq");
  s.avx512_vnni = has("avx512_vnni");
  s.avx_vnni = has("avx_vnni");
  s.avx512_bf16 = has("avx512_bf16");
  s.amx_bf16 = has("amx_bf16");
  s.amx_int8 = has("amx_int8");
  s.avx512_bf16_fast = s.avx512_bf16 && vendor == "AuthenticAMD";
  return s;
}

bool known_isa_cap(const std::string& cap) { return find_cap(cap) != nullptr; }

CpuIsa capped_isa(const CpuIsa& a, const std::string& cap) {
  const CapRow* row = find_cap(cap);
  if (row == nullptr) return a;
  const CpuIsa& b = row->allows;
  return {a.avx2 && b.avx2,
          a.avx512 && b.avx512,
          a.avx512_vnni && b.avx512_vnni,
          a.avx_vnni && b.avx_vnni,
          a.avx512_bf16 && b.avx512_bf16,
          a.amx_bf16 && b.amx_bf16,
          a.amx_int8 && b.amx_int8,
          a.avx512_bf16_fast && b.avx512_bf16};
}

const std::set<std::string>& cpu_flags() {
  static const std::set<std::string> flags = [] {
    std::set<std::string> f;
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string flag;
      while (words >> flag) f.insert(flag);
      break;  // every core reports the same flags
    }
    return f;
  }();
  return flags;
}

const CpuIsa& cpu_hardware_isa() {
  static const CpuIsa isa = isa_from_flags(cpu_flags(), cpu_vendor());
  return isa;
}

const std::string& cpu_isa_cap() {
  static const std::string cap = [] {
    const std::string v = cap_value();
    return known_isa_cap(v) ? v : std::string();
  }();
  return cap;
}

const CpuIsa& cpu_isa() {
  static const CpuIsa isa = capped_isa(cpu_hardware_isa(), cpu_isa_cap());
  return isa;
}

std::string capped_note() {
  return same(cpu_isa(), cpu_hardware_isa()) ? "" : ", capped at " + cpu_isa_cap();
}

std::string apply_cpu_isa_cap() {
  const std::string value = cap_value();
  if (value.empty()) return "";
  if (!known_isa_cap(value))
    return "ONEDNN_MAX_CPU_ISA=" + value + " is not one of oneDNN's ISA names (AVX2, AVX512_CORE, "
           "AVX512_CORE_VNNI, AVX512_CORE_BF16, AVX512_CORE_AMX, ...): ignored, as oneDNN ignores it";
  // ATen dispatches its own kernels (pooling, ReLU, the optimizer's arithmetic) by CPU
  // capability, read once from ATEN_CPU_CAPABILITY at the first operation.
  if (std::getenv("ATEN_CPU_CAPABILITY") == nullptr && !cpu_isa().avx512)
    ::setenv("ATEN_CPU_CAPABILITY", cpu_isa().avx2 ? "avx2" : "default", 1);
  return "";
}

std::string cpu_summary() {
  const std::string model = cpu_model_name();
  std::string s = "cpu: " + (model.empty() ? std::string("unknown model") : model) + ": class " +
                  cpu_isa().class_name() + " (" + cpu_isa().flag_names() + ")";
  if (!capped_note().empty())
    s += ", capped at " + cpu_isa_cap() + " (hardware: class " + cpu_hardware_isa().class_name() + ")";
  else if (!cpu_isa_cap().empty())
    s += ", cap " + cpu_isa_cap() + " (no effect here)";
  // ATen's choice is not exported by every LibTorch: what it was told is.
  const char* aten = std::getenv("ATEN_CPU_CAPABILITY");
  return aten != nullptr ? s + ", ATEN_CPU_CAPABILITY=" + aten : s;
}

}  // namespace alexnet::runtime
