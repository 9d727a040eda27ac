// What this CPU can run, as the project's choices see it: /proc/cpuinfo's instruction-set flags,
// lowered by oneDNN's standard cap, ONEDNN_MAX_CPU_ISA (oneDNN 2.x also reads DNNL_MAX_CPU_ISA),
// so that one machine can behave as a lower CPU class: an AMX Xeon as an AVX-512 one or an AVX2
// EPYC. Precision "auto", the int8 activation width and the logs read cpu_isa(); oneDNN reads the
// cap itself, and apply_cpu_isa_cap() passes it on to ATen.
#pragma once

#include <set>
#include <string>

namespace alexnet::runtime {

/// The instruction sets that change what the project chooses.
struct CpuIsa {
  bool avx2 = false;         // AVX2 and FMA
  bool avx512 = false;       // AVX-512 F, BW, VL, DQ (oneDNN's avx512_core): Winograd convolutions
  bool avx512_vnni = false;  // 8-bit dot products into 32 bits, in AVX-512 registers
  bool avx_vnni = false;     // the same in AVX2 registers (AVX-VNNI)
  bool avx512_bf16 = false;  // VDPBF16PS: bf16 dot products in AVX-512 registers
  bool amx_bf16 = false;     // AMX tiles: bf16 matrix products, several times fp32's rate
  bool amx_int8 = false;     // AMX tiles: int8 matrix products
  /// AVX512-BF16 on an AMD CPU (Zen 4 and later), whose VDPBF16PS runs AlexNet's bf16
  /// layers 1.5-2x faster than fp32's FMA; Intel's without AMX ran them at about 0.6x
  /// (BENCHMARKS.md). Only with avx512_bf16 (a cap that removes it removes this).
  bool avx512_bf16_fast = false;

  /// 8-bit activations without 16-bit overflow (model/int8.h): any of the three.
  bool vnni() const { return avx512_vnni || avx_vnni || amx_int8; }
  bool any_bf16() const { return avx512_bf16 || amx_bf16; }
  /// "AMX", "AVX-512 VNNI", "AVX-512", "AVX2" or "pre-AVX2": the classes the project is tested on.
  std::string class_name() const;
  /// The set flags, named as in the logs: "AVX2 AVX512F VNNI AVX512-BF16 AMX-BF16 AMX-INT8".
  std::string flag_names() const;
};

/// The flags /proc/cpuinfo lists for this CPU (empty where unreadable); read once.
const std::set<std::string>& cpu_flags();

/// The CPU's vendor as /proc/cpuinfo names it ("GenuineIntel", "AuthenticAMD"; "" where unreadable).
const std::string& cpu_vendor();

/// The instruction sets named by /proc/cpuinfo flags ("avx2", "amx_bf16", ...), of a CPU from
/// this vendor.
CpuIsa isa_from_flags(const std::set<std::string>& flags, const std::string& vendor = "");

/// What oneDNN lets through of `isa` under a cap (one of its names, upper case: "AVX2",
/// "AVX512_CORE_VNNI", ...); an empty or unknown cap removes nothing.
CpuIsa capped_isa(const CpuIsa& isa, const std::string& cap);

/// Whether `cap` is one of oneDNN's ISA names (upper case).
bool known_isa_cap(const std::string& cap);

/// The CPU's own instruction sets, before any cap: isa_from_flags(cpu_flags()).
const CpuIsa& cpu_hardware_isa();

/// The cap in force, as oneDNN reads it: ONEDNN_MAX_CPU_ISA, else DNNL_MAX_CPU_ISA, upper-cased
/// ("AVX2", "AVX512_CORE_VNNI", ...); "" when neither is set or the value is not one of oneDNN's
/// names (oneDNN then ignores it too).
const std::string& cpu_isa_cap();

/// What the project uses: capped_isa(cpu_hardware_isa(), cpu_isa_cap()).
const CpuIsa& cpu_isa();

/// ", capped at AVX2" when the cap removed something this CPU has, else "": appended to the
/// reason of each logged choice that depends on the CPU.
std::string capped_note();

/// Call at the start of main(), before any ATen operation: where the cap is below AVX-512, sets
/// ATEN_CPU_CAPABILITY (avx2 or default) unless the environment sets it, so that ATen's own
/// kernels are capped as oneDNN's are. Returns a warning for a cap oneDNN would ignore ("" if none).
std::string apply_cpu_isa_cap();

/// One line for --version and the logs: the CPU's model, its class, the flags that matter, the
/// cap and ATEN_CPU_CAPABILITY where set. "cpu: Intel(R) Xeon(R) ...: class AMX (AVX2 AVX512F ...)".
std::string cpu_summary();

}  // namespace alexnet::runtime
