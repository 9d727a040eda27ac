// app/runtime: flag parsing, per-device resolution, the autocast guard and the
// inference conversion; app/engine's dynamic loss scaler.
#include "app/engine/loss_scaler.h"
#include "app/runtime/compute.h"
#include "app/runtime/cpu.h"
#include "app/runtime/machine.h"
#include "app/runtime/precision.h"
#include "model/fused.h"
#include "model/torch_compat.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <limits>

namespace alexnet::runtime {
namespace {

using engine::LossScaler;
using engine::LossScalerOptions;

TEST(Precision, ParsesItsNames) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16, Precision::kAuto})
    EXPECT_EQ(parse_precision(precision_name(p)), p);
  EXPECT_FALSE(parse_precision("fp8"));
  EXPECT_FALSE(parse_precision("FP32"));
  EXPECT_EQ(parse_channels_last("auto"), ChannelsLast::kAuto);
  EXPECT_EQ(parse_channels_last("on"), ChannelsLast::kOn);
  EXPECT_EQ(parse_channels_last("false"), ChannelsLast::kOff);
  EXPECT_FALSE(parse_channels_last("maybe"));
}

// What this test expects of the machine, stated apart from app/runtime/cpu: whether
// /proc/cpuinfo lists `flag`, and whether oneDNN's cap (ONEDNN_MAX_CPU_ISA, else
// DNNL_MAX_CPU_ISA) is one of the names that let AMX through.
bool cpuinfo_lists(const std::string& flag) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) return (line + " ").find(" " + flag + " ") != std::string::npos;
  return false;
}

// "" when no cap is set.
std::string cap_in_force() {
  const char* v = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (v == nullptr || *v == '\0') v = std::getenv("DNNL_MAX_CPU_ISA");
  std::string cap(v == nullptr ? "" : v);
  for (auto& c : cap) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return cap;
}

// oneDNN's names below AMX; any other value (its AMX names, ALL, or a name it does not know)
// leaves AMX in.
bool cap_allows_amx() {
  static const std::set<std::string> kBelowAmx = {
      "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_CORE",
      "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX10_2_512"};
  return kBelowAmx.count(cap_in_force()) == 0;
}

// oneDNN's names that remove AVX512-BF16.
bool cap_allows_avx512_bf16() {
  static const std::set<std::string> kBelowBf16 = {"SSE41",      "AVX",        "AVX2",           "AVX2_VNNI",
                                                   "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_CORE",
                                                   "AVX512_CORE_VNNI"};
  return kBelowBf16.count(cap_in_force()) == 0;
}

bool amd_cpu() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("vendor_id", 0) == 0) return line.find("AuthenticAMD") != std::string::npos;
  return false;
}

TEST(Precision, ResolvesOnTheCpu) {
  const torch::Device cpu(torch::kCPU);
  EXPECT_EQ(resolve_precision(Precision::kFp32, cpu, Workload::kInference), Precision::kFp32);
  // auto: bf16 only where AMX, or AMD's AVX512-BF16, makes it faster, and only where the cap
  // leaves them in.
  const bool amx = cpuinfo_lists("amx_bf16") && cap_allows_amx();
  const bool amd_bf16 = amd_cpu() && cpuinfo_lists("avx512_bf16") && cap_allows_avx512_bf16();
  const Precision automatic = resolve_precision(Precision::kAuto, cpu, Workload::kTraining);
  EXPECT_EQ(automatic, amx || amd_bf16 ? Precision::kBf16 : Precision::kFp32)
      << "amx_bf16 in /proc/cpuinfo: " << cpuinfo_lists("amx_bf16") << ", cap allows AMX: " << cap_allows_amx()
      << ", AMD with avx512_bf16: " << (amd_cpu() && cpuinfo_lists("avx512_bf16"))
      << ", cap allows it: " << cap_allows_avx512_bf16();
  EXPECT_EQ(resolve_precision(Precision::kAuto, cpu, Workload::kInference), automatic);
  // bf16 asked for, uncapped: kept with bf16 instructions, fp32 (with a warning) without.
  if (cap_in_force().empty())
    EXPECT_EQ(resolve_precision(Precision::kBf16, cpu, Workload::kInference),
              cpuinfo_lists("avx512_bf16") || cpuinfo_lists("amx_bf16") ? Precision::kBf16 : Precision::kFp32);
  EXPECT_THROW(resolve_precision(Precision::kFp16, cpu, Workload::kInference), c10::Error);
  EXPECT_TRUE(resolve_channels_last(ChannelsLast::kAuto, cpu, Precision::kFp32));
  EXPECT_FALSE(resolve_channels_last(ChannelsLast::kOff, cpu, Precision::kFp32));
}

// A Sapphire Rapids' flags as /proc/cpuinfo lists them (the ones that matter, and a few others).
const std::set<std::string> kSapphireRapids = {"fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                                               "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                                               "amx_tile", "amx_bf16", "amx_int8", "sse4_2"};

TEST(CpuIsa, ReadsTheFlags) {
  const CpuIsa spr = isa_from_flags(kSapphireRapids);
  EXPECT_EQ(spr.class_name(), "AMX");
  EXPECT_EQ(spr.flag_names(), "AVX2 AVX512F AVX512-VNNI AVX-VNNI AVX512-BF16 AMX-BF16 AMX-INT8");
  const CpuIsa epyc = isa_from_flags({"fma", "avx2", "sse4_2"});  // Zen 2: AVX2 only
  EXPECT_EQ(epyc.class_name(), "AVX2");
  EXPECT_FALSE(epyc.vnni());
  EXPECT_EQ(isa_from_flags({"fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}).class_name(),
            "AVX-512 VNNI");
  EXPECT_EQ(isa_from_flags({"avx2"}).class_name(), "pre-AVX2");  // AVX2 without FMA: not oneDNN's avx2
  EXPECT_EQ(isa_from_flags({}).class_name(), "pre-AVX2");
}

TEST(CpuIsa, CapLowersTheClassAsOneDnnDoes) {
  const CpuIsa spr = isa_from_flags(kSapphireRapids);
  // Each cap gives the class a CPU of that generation has, and auto and int8 follow it.
  struct Case {
    const char* cap;
    const char* cls;
    bool vnni, any_bf16;
    Precision automatic;
  };
  for (const Case& c : {Case{"AVX2", "AVX2", false, false, Precision::kFp32},
                        Case{"AVX2_VNNI", "AVX2", true, false, Precision::kFp32},
                        Case{"AVX512_CORE", "AVX-512", false, false, Precision::kFp32},
                        Case{"AVX512_CORE_VNNI", "AVX-512 VNNI", true, false, Precision::kFp32},
                        Case{"AVX512_CORE_BF16", "AVX-512 VNNI", true, true, Precision::kFp32},
                        Case{"AVX512_CORE_AMX", "AMX", true, true, Precision::kBf16},
                        Case{"ALL", "AMX", true, true, Precision::kBf16},
                        Case{"", "AMX", true, true, Precision::kBf16},
                        Case{"AVX3", "AMX", true, true, Precision::kBf16}}) {
    const CpuIsa capped = capped_isa(spr, c.cap);
    EXPECT_EQ(capped.class_name(), c.cls) << c.cap;
    EXPECT_EQ(capped.vnni(), c.vnni) << c.cap;
    EXPECT_EQ(capped.any_bf16(), c.any_bf16) << c.cap;
    EXPECT_EQ(auto_cpu_precision(capped), c.automatic) << c.cap;
  }
  // AMD's Zen 4 (AVX512-BF16, no AMX): auto is bf16 until a cap removes AVX512-BF16; the same
  // flags on an Intel CPU keep fp32.
  const std::set<std::string> zen4 = {"fma",         "avx2",        "avx512f", "avx512bw", "avx512vl",
                                      "avx512dq",    "avx512_vnni", "avx512_bf16", "sse4_2"};
  for (const auto& [cap, automatic] : std::vector<std::pair<const char*, Precision>>{
           {"", Precision::kBf16},
           {"AVX512_CORE_BF16", Precision::kBf16},
           {"AVX512_CORE_VNNI", Precision::kFp32},
           {"AVX2", Precision::kFp32}}) {
    const CpuIsa amd = capped_isa(isa_from_flags(zen4, "AuthenticAMD"), cap);
    EXPECT_EQ(amd.class_name(), std::string(cap) == "AVX2" ? "AVX2" : "AVX-512 VNNI") << cap;
    EXPECT_EQ(auto_cpu_precision(amd), automatic) << "AMD, cap " << cap;
    EXPECT_EQ(auto_cpu_precision(capped_isa(isa_from_flags(zen4, "GenuineIntel"), cap)), Precision::kFp32)
        << "Intel, cap " << cap;
  }
  // AVX512_CORE_VNNI keeps AVX512-VNNI but not AVX-VNNI (not below it in oneDNN's order).
  EXPECT_FALSE(capped_isa(spr, "AVX512_CORE_VNNI").avx_vnni);
  EXPECT_FALSE(known_isa_cap("AVX3"));
  EXPECT_FALSE(known_isa_cap("avx2"));  // cpu_isa_cap() upper-cases before asking
  EXPECT_TRUE(known_isa_cap("AVX512_CORE_AMX"));
  // A cap never adds what the CPU lacks.
  EXPECT_EQ(capped_isa(isa_from_flags({"fma", "avx2"}), "ALL").class_name(), "AVX2");
}

TEST(AutocastGuard, NestsAndRestores) {
  const torch::Device cpu(torch::kCPU);
  ASSERT_FALSE(alexnet::compat::autocast_enabled(/*cuda=*/false));
  {
    const AutocastGuard outer(cpu, Precision::kBf16);
    EXPECT_TRUE(alexnet::compat::autocast_enabled(/*cuda=*/false));
    {
      const AutocastGuard fp32(cpu, Precision::kFp32);  // fp32: no change
      EXPECT_TRUE(alexnet::compat::autocast_enabled(/*cuda=*/false));
      const AutocastGuard inner(cpu, Precision::kBf16);
      const auto a = torch::randn({4, 8}), b = torch::randn({8, 3});  // (4, 8), (8, 3)
      EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);
    }
    EXPECT_TRUE(alexnet::compat::autocast_enabled(/*cuda=*/false));
  }
  EXPECT_FALSE(alexnet::compat::autocast_enabled(/*cuda=*/false));
  EXPECT_EQ(torch::mm(torch::randn({2, 2}), torch::randn({2, 2})).scalar_type(), torch::kFloat32);
}

TEST(Inference, ConvertsWeightsAndInput) {
  AlexNet model(AlexNetOptions().num_classes(10));
  ComputeConfig cfg = inference_config(torch::kCPU, Precision::kBf16, /*channels_last=*/true);
  EXPECT_TRUE(cfg.low_precision_weights);
  // Where LibTorch has the fused operators (2.x) bf16 inference runs through FusedAlexNet.
  EXPECT_EQ(cfg.fused, FusedAlexNet::available());
  if (cfg.fused) {
    // LibTorch's fused operators, or the oneDNN plan (with bf16 Winograd where it pays).
    const std::string want = FusedAlexNet::winograd(std::nullopt)
                                 ? "bf16 weights, oneDNN plan with conv3-5 as Winograd F(2x2,3x3), "
                                 : "bf16 weights, ";
    EXPECT_EQ(cfg.describe().rfind(want, 0), 0u) << cfg.describe();
    EXPECT_EQ(cfg.describe(), "bf16 weights, " + FusedAlexNet::backend(std::nullopt) + ", channels-last");
  } else {
    EXPECT_EQ(cfg.describe(), "bf16 weights, channels-last");
  }
  prepare_for_inference(model, cfg);
  EXPECT_EQ(model->engine() != nullptr, cfg.fused);
  EXPECT_FALSE(model->is_training());
  for (const auto& p : model->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
    if (p.dim() == 4) EXPECT_TRUE(p.is_contiguous(torch::MemoryFormat::ChannelsLast));
  }
  const auto images = torch::randn({2, 3, 64, 64});  // (2, 3, 64, 64)
  const auto x = prepare_input(images, cfg);
  // The engine rounds the images itself, in one pass; layer by layer they come converted.
  EXPECT_EQ(cfg.input_as_is, cfg.fused);
  if (cfg.input_as_is) {
    EXPECT_TRUE(x.is_same(images));
  } else {
    EXPECT_EQ(x.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(x.is_contiguous(torch::MemoryFormat::ChannelsLast));
  }
  c10::InferenceMode inference;
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(Inference, SmallestFirstConversionEqualsModuleTo) {
  torch::manual_seed(0);
  AlexNet a(AlexNetOptions().num_classes(10));
  AlexNet b(AlexNetOptions().num_classes(10));
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < a->parameters().size(); ++i) b->parameters()[i].copy_(a->parameters()[i]);
  }
  a->to(torch::kBFloat16);
  convert_smallest_first(*b, torch::kBFloat16);
  const auto want = a->named_parameters(), got = b->named_parameters();
  ASSERT_EQ(want.size(), got.size());
  for (const auto& p : want) {
    ASSERT_EQ(got[p.key()].scalar_type(), torch::kBFloat16) << p.key();
    EXPECT_TRUE(torch::equal(got[p.key()], p.value())) << p.key() << ": not the same rounding";  // exact
  }
}

TEST(LossScaler, SkipsOverflowsBacksOffAndGrows) {
  auto w = torch::ones({3}, torch::requires_grad());
  const std::vector<torch::Tensor> params = {w};
  LossScaler scaler(LossScalerOptions().init_scale(8).growth_interval(2));
  EXPECT_EQ(scaler.current_scale(), 8);

  // Finite: the gradient comes back unscaled (d(8 * sum(2w))/dw / 8 = 2) and the step runs.
  scaler.scale((2 * w).sum()).backward();
  int steps = 0;
  EXPECT_TRUE(scaler.step(params, [&] { ++steps; }));
  EXPECT_TRUE(torch::allclose(w.grad(), torch::full({3}, 2.0f)));
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(scaler.current_scale(), 8);  // one finite step of the 2 before growth

  // An inf gradient: no step, scale halved, counted.
  w.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_FALSE(scaler.step(params, [&] { ++steps; }));
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(scaler.current_scale(), 4);
  EXPECT_EQ(scaler.skipped_steps(), 1);

  // growth_interval finite steps in a row double it.
  for (int i = 0; i < 2; ++i) {
    w.mutable_grad() = torch::ones({3});
    EXPECT_TRUE(scaler.step(params, [&] { ++steps; }));
  }
  EXPECT_EQ(scaler.current_scale(), 8);
  EXPECT_EQ(steps, 3);

  // NaN is an overflow too.
  w.mutable_grad() = torch::full({3}, std::nanf(""));
  EXPECT_FALSE(scaler.step(params, [] {}));

  // Disabled (fp32/bf16): scale 1, always steps, gradients untouched.
  LossScaler off(LossScalerOptions().enabled(false));
  w.mutable_grad() = torch::full({3}, 5.0f);
  EXPECT_TRUE(off.step(params, [] {}));
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({3}, 5.0f)));
  EXPECT_EQ(off.scale(torch::tensor(3.0f)).item<float>(), 3.0f);
}

}  // namespace
}  // namespace alexnet::runtime
