#include "app/engine/layer_profile.h"

#include "app/engine/machine_peaks.h"

#include "app/runtime/precision.h"
#include "model/fused.h"
#include "model/int8.h"
#include "model/onednn_plan.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

namespace alexnet::engine {

namespace {

using Clock = std::chrono::steady_clock;
using Kind = LayerSpec::Kind;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string describe(const LayerSpec& s) {
  const auto k = std::to_string(s.kernel) + "x" + std::to_string(s.kernel);
  switch (s.kind) {
    case Kind::kConv:
      return "conv " + k + "/" + std::to_string(s.stride) + ", " + std::to_string(s.in) + "->" + std::to_string(s.out);
    case Kind::kReLU: return "ReLU";
    case Kind::kMaxPool: return "max-pool " + k + "/" + std::to_string(s.stride);
    case Kind::kLrn: return "LRN";
    case Kind::kDropout: return "dropout";
    case Kind::kLinear: return "linear " + std::to_string(s.in) + "->" + std::to_string(s.out);
  }
  return "?";
}

// Multiply-adds x 2 of a conv or linear layer producing `out` from `in`.
double layer_flop(const LayerSpec& s, const torch::Tensor& in, const torch::Tensor& out) {
  if (s.kind == Kind::kConv)
    return 2.0 * out.numel() * (s.in / s.groups) * s.kernel * s.kernel;
  if (s.kind == Kind::kLinear) return 2.0 * out.numel() * in.size(1);
  return 0.0;
}

double bytes_of(const torch::Tensor& t) { return static_cast<double>(t.numel()) * t.element_size(); }

// Bytes of a conv or Linear layer's parameters at `element` bytes each (0 for other layers).
double weight_bytes(const LayerSpec& s, double element) {
  if (s.kind == Kind::kConv) return element * (s.out * (s.in / s.groups) * s.kernel * s.kernel + s.out);
  if (s.kind == Kind::kLinear) return element * (s.out * s.in + s.out);
  return 0.0;
}

// The model-only setup of bench_model: seed 0, the model, then the random batch.
AlexNet make_model(const BenchOptions& p, BenchSetup& info) {
  torch::manual_seed(0);
  const auto base = AlexNetOptions().dropout(p.recipe.dropout);
  AlexNet model = p.weights.empty() ? AlexNet(AlexNetOptions(base).num_classes(info.num_classes))
                                    : load_alexnet(p.weights, std::nullopt, base);
  info.num_classes = model->options().num_classes();
  return model;
}

struct Walk {
  std::vector<LayerTime> layers;
  std::map<std::string, std::vector<double>> forward, backward;
};

void infer_layers(AlexNet& model, const torch::Tensor& x0, int64_t warmup, int64_t iters, LayerProfile& prof) {
  const AlexNetLayers specs = alexnet_layers(model->options());
  std::vector<double> whole;
  for (int64_t i = 0; i < warmup + iters; ++i) {
    const auto start = Clock::now();
    model->forward(x0);
    if (i >= warmup) whole.push_back(since(start));
  }
  prof.step_s = median(whole);
  auto x = x0;
  const auto time_layer = [&](const std::string& name, const std::string& what, const LayerSpec* spec,
                              const std::function<torch::Tensor(const torch::Tensor&)>& run) {
    std::vector<double> s;
    torch::Tensor out;
    for (int64_t i = 0; i < warmup + iters; ++i) {
      const auto start = Clock::now();
      out = run(x);
      if (i >= warmup) s.push_back(since(start));
    }
    LayerTime t;
    t.name = name;
    t.what = what;
    t.forward_s = median(s);
    t.flop = spec ? layer_flop(*spec, x, out) : 0.0;
    t.bytes = bytes_of(x) + bytes_of(out);
    t.weight_bytes = spec ? weight_bytes(*spec, static_cast<double>(x.element_size())) : 0.0;
    prof.layers.push_back(t);
    x = out;
  };
  size_t i = 0;
  for (auto& layer : *model->features) {
    const auto& spec = specs.features[i];
    // (Dropout is the identity in inference: not listed.) ReLU is in place in the module; timing it on a copy would time the copy too.
    time_layer("features." + std::to_string(i), describe(spec), &spec, [&](const torch::Tensor& in) {
      return spec.kind == Kind::kReLU ? torch::relu(in) : layer.forward(in);
    });
    ++i;
  }
  time_layer("avgpool", "adaptive avg-pool to 6x6, flatten", nullptr,
             [&](const torch::Tensor& in) { return model->pool(in); });
  i = 0;
  for (auto& layer : *model->classifier) {
    const auto& spec = specs.classifier[i];
    if (spec.kind != Kind::kDropout)
      time_layer("classifier." + std::to_string(i), describe(spec), &spec, [&](const torch::Tensor& in) {
        return spec.kind == Kind::kReLU ? torch::relu(in) : layer.forward(in);
      });
    ++i;
  }
}

// Whose stages engine_layers reads: an inference engine's (int8, fused bf16), or the fp32
// oneDNN plan's (its features; the rest of the pass, the classifier, as one row).
enum class Stages { kInt8, kBf16, kFp32Plan };

// Per-stage seconds of whole passes, in the order the stages first ran.
struct StageTimes {
  std::map<std::string, std::vector<double>> per;
  std::vector<std::string> order;
  std::vector<double> whole;
};

StageTimes time_stages(AlexNet& model, const torch::Tensor& x0, int64_t warmup, int64_t iters, bool plan) {
  std::vector<std::pair<std::string, double>> sink;
  const auto set_profile = [&](std::vector<std::pair<std::string, double>>* to) {
    if (plan)
      model->inference_plan()->set_profile(to);
    else
      model->engine()->set_profile(to);
  };
  StageTimes t;
  set_profile(&sink);
  for (int64_t i = 0; i < warmup + iters; ++i) {
    sink.clear();
    const auto start = Clock::now();
    model->forward(x0);
    if (i < warmup) continue;
    t.whole.push_back(since(start));
    double staged = 0;
    for (const auto& [name, s] : sink) {
      if (!t.per.count(name)) t.order.push_back(name);
      t.per[name].push_back(s);
      staged += s;
    }
    if (plan) t.per["classifier"].push_back(t.whole.back() - staged);  // the pass after the plan's features
  }
  set_profile(nullptr);
  if (plan) t.order.push_back("classifier");
  return t;
}

// The work of each layer of the float32 module on x0's shape: multiply-adds x 2, activation
// bytes in and out at `element` bytes a value, and (plan) the classifier's row: its Linear layers'.
struct Work {
  std::map<std::string, std::pair<const LayerSpec*, double>> flop;
  std::map<std::string, double> bytes;
  double classifier_flop = 0, classifier_weights = 0;
};

Work work_of(AlexNet& model, const AlexNetLayers& specs, const torch::Tensor& x0, double element) {
  Work work;
  auto x = x0.to(model->features->parameters().front().scalar_type());  // the module's own type
  size_t i = 0;
  for (auto& layer : *model->features) {
    const auto& spec = specs.features[i];
    const auto out = spec.kind == Kind::kReLU ? torch::relu(x) : layer.forward(x);
    work.flop["features." + std::to_string(i)] = {&spec, layer_flop(spec, x, out)};
    work.bytes["features." + std::to_string(i)] = element * static_cast<double>(x.numel() + out.numel());
    x = out;
    ++i;
  }
  work.bytes["quantize"] = static_cast<double>(x0.numel()) * 5;                     // float32 in, uint8 out
  work.bytes["convert"] = static_cast<double>(x0.numel()) * (x0.element_size() + 2);  // to bf16
  x = model->pool(x);
  i = 0;
  for (auto& layer : *model->classifier) {
    const auto& spec = specs.classifier[i];
    const auto out = spec.kind == Kind::kReLU ? torch::relu(x) : layer.forward(x);
    work.flop["classifier." + std::to_string(i)] = {&spec, layer_flop(spec, x, out)};
    work.classifier_flop += layer_flop(spec, x, out);
    work.classifier_weights += weight_bytes(spec, element);
    x = out;
    ++i;
  }
  return work;
}

// The layers the plan ran as Winograd (oneDNN's or its own), from its description.
std::map<std::string, bool> plan_winograd_layers(const AlexNet& model) {
  std::map<std::string, bool> layers;
  for (const auto& line : model->inference_plan()->describe()) {
    const auto colon = line.find(':');
    if (colon != std::string::npos && line.find("wino", colon) != std::string::npos)
      layers[line.substr(0, colon)] = true;
  }
  return layers;
}

// The stages of a pipeline, timed within whole passes. winograd: the bf16 engine runs its 3x3
// convolutions as Winograd (the fp32 plan says per layer what it ran).
void engine_layers(AlexNet& model, const torch::Tensor& x0, int64_t warmup, int64_t iters, Stages stages,
                   bool winograd, LayerProfile& prof) {
  const bool int8 = stages == Stages::kInt8, plan = stages == Stages::kFp32Plan;
  StageTimes times = time_stages(model, x0, warmup, iters, plan);
  prof.step_s = median(times.whole);
  const auto plan_winograd = plan ? plan_winograd_layers(model) : std::map<std::string, bool>{};
  const double element = int8 ? 1.0 : plan ? 4.0 : 2.0;  // bytes of an activation or weight
  const std::string type = int8 ? "int8" : plan ? "fp32" : "bf16";
  // Shapes for the work counts: the float32 layers' outputs (the same shapes). work points into specs.
  const AlexNetLayers specs = alexnet_layers(model->options());
  Work work = work_of(model, specs, x0, element);
  for (const auto& name : times.order) {
    LayerTime t;
    t.name = name;
    t.forward_s = median(times.per[name]);
    const auto it = work.flop.find(name);
    if (name == "classifier" && plan) {
      t.what = "the rest of the pass: avg-pool, 3 linear + ReLU, fp32";
      t.flop = work.classifier_flop;
      t.weight_bytes = work.classifier_weights;
    } else if (it != work.flop.end()) {
      t.what = describe(*it->second.first);
      t.flop = it->second.second;
      const std::string fused = " + ReLU, " + type;
      if (it->second.first->kind == Kind::kConv) {
        t.what += fused;
        // The rate column counts a direct convolution's multiply-adds (1.94x Winograd's at 13x13).
        const LayerSpec& spec = *it->second.first;
        if (plan ? plan_winograd.count(name) != 0 : winograd && !int8 && spec.kernel == 3 && spec.stride == 1)
          t.what += ", Winograd";
      }
      if (name == "classifier.1" || name == "classifier.4") t.what += fused;
      if (name == "classifier.6") t.what += int8 ? ", int8, float32 out" : ", bf16";
      t.weight_bytes = weight_bytes(*it->second.first, element);  // int8 one byte, bf16 two, fp32 four
    } else {
      // Into what features.0 reads: channels-last, or its 4x4 tiles (model/quantize.h).
      t.what = name == "quantize" ? "fp32 -> uint8, features.0's layout"
               : name == "convert" ? "fp32 -> bf16, features.0's layout"
                                   : "flatten (avg-pool when not 6x6)";
    }
    if (t.flop == 0 && name.rfind("features.", 0) == 0) t.what += int8 ? ", uint8" : ", " + type;
    if (work.bytes.count(name)) t.bytes = work.bytes[name];
    prof.layers.push_back(t);
  }
}

void train_layers(AlexNet& model, const torch::Tensor& x0, const torch::Tensor& y, double label_smoothing,
                  int64_t warmup, int64_t iters, LayerProfile& prof) {
  const AlexNetLayers specs = alexnet_layers(model->options());
  model->train();
  std::vector<std::string> names, whats;
  std::vector<const LayerSpec*> spec_of;
  for (size_t i = 0; i < specs.features.size(); ++i) {
    names.push_back("features." + std::to_string(i));
    spec_of.push_back(&specs.features[i]);
  }
  names.push_back("avgpool");
  spec_of.push_back(nullptr);
  for (size_t i = 0; i < specs.classifier.size(); ++i) {
    names.push_back("classifier." + std::to_string(i));
    spec_of.push_back(&specs.classifier[i]);
  }
  std::vector<std::function<torch::Tensor(const torch::Tensor&)>> run;
  {
    size_t i = 0;
    for (auto& layer : *model->features) {
      const bool relu = specs.features[i++].kind == Kind::kReLU;
      run.emplace_back([&layer, relu](const torch::Tensor& in) { return relu ? torch::relu(in) : layer.forward(in); });
    }
    run.emplace_back([&model](const torch::Tensor& in) { return model->pool(in); });
    i = 0;
    for (auto& layer : *model->classifier) {
      const bool relu = specs.classifier[i++].kind == Kind::kReLU;
      run.emplace_back([&layer, relu](const torch::Tensor& in) { return relu ? torch::relu(in) : layer.forward(in); });
    }
  }
  const size_t n = run.size();
  std::vector<std::vector<double>> fwd(n), bwd(n);
  std::vector<double> flop(n, 0.0), bytes(n, 0.0);
  for (int64_t it = 0; it < warmup + iters; ++it) {
    std::vector<torch::Tensor> ins(n), outs(n);
    auto x = x0;
    for (size_t l = 0; l < n; ++l) {
      // Each layer's input a leaf of its own, so that its backward can be timed alone; the
      // image itself needs no gradient, as in the step.
      ins[l] = l == 0 ? x : x.detach().requires_grad_(true);
      const auto start = Clock::now();
      outs[l] = run[l](ins[l]);
      if (it >= warmup) fwd[l].push_back(since(start));
      if (it == 0 && spec_of[l]) flop[l] = layer_flop(*spec_of[l], ins[l], outs[l]);
      if (it == 0) bytes[l] = bytes_of(ins[l]) + bytes_of(outs[l]);
      x = outs[l];
    }
    const auto logits = outs.back().detach().requires_grad_(true);
    const auto loss = torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
    loss.backward();
    auto grad = logits.grad();
    for (size_t l = n; l-- > 0;) {
      const auto start = Clock::now();
      outs[l].backward(grad);
      if (it >= warmup) bwd[l].push_back(since(start));
      if (l > 0) grad = ins[l].grad();
    }
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  }
  for (size_t l = 0; l < n; ++l) {
    LayerTime t;
    t.name = names[l];
    t.what = spec_of[l] ? describe(*spec_of[l]) : "adaptive avg-pool to 6x6 (1x1: broadcast), flatten";
    t.forward_s = median(fwd[l]);
    t.backward_s = median(bwd[l]);
    t.flop = flop[l];
    t.bytes = bytes[l];
    prof.layers.push_back(t);
  }
}

}  // namespace

LayerProfile profile_layers(const BenchOptions& p, BenchSetup& info, bool train) {
  TORCH_CHECK(info.device.is_cpu(), "bench --layers: the CPU only (per-layer times need no device queue)");
  AlexNet model = make_model(p, info);
  const auto input = torch::randn({info.batch_size, 3, info.image_size, info.image_size});  // (B, 3, S, S)
  LayerProfile prof;
  const bool int8 = info.cfg.precision == runtime::Precision::kInt8;
  const Peak peak = measure_peak(info.cfg.precision, train);
  prof.peak_gflops = peak.gflops;
  prof.peak_what = peak.what;
  if (train) {
    torch::manual_seed(1);
    const auto y = torch::randint(info.num_classes, {info.batch_size}, torch::kInt64);  // (B,)
    auto x = input;
    if (info.cfg.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    if (info.cfg.channels_last) runtime::to_channels_last(*model);
    train_layers(model, x, y, p.recipe.label_smoothing, p.warmup, p.iters, prof);
    return prof;
  }
  // A quarter of the last-level cache (at most 16 MiB: a virtual machine may report its host's),
  // and 512 MiB or twice the cache.
  const long cache = sysconf(_SC_LEVEL3_CACHE_SIZE) > 0 ? sysconf(_SC_LEVEL3_CACHE_SIZE) : (32L << 20);
  prof.cache_buffer = std::min<int64_t>(cache / 4, int64_t{16} << 20);
  prof.dram_buffer = std::min<int64_t>(std::max<int64_t>(2 * int64_t{cache}, int64_t{512} << 20), int64_t{2} << 30);
  prof.cache_gbps = read_gbps(prof.cache_buffer);
  prof.dram_gbps = read_gbps(prof.dram_buffer);
  if (p.before_inference) p.before_inference(model, info.cfg, input, nullptr);
  // The fp32 plan is timed by its own stages; without it, LibTorch's layers one at a time.
  if (!info.cfg.plan) info.cfg.plan_classifier = false;
  runtime::prepare_for_inference(model, info.cfg);
  c10::InferenceMode inference;
  const auto x = runtime::prepare_input(input, info.cfg);
  if (model->engine())
    engine_layers(model, x, p.warmup, p.iters, int8 ? Stages::kInt8 : Stages::kBf16,
                  FusedAlexNet::winograd(info.cfg.bf16_winograd), prof);
  else if (model->inference_plan())
    engine_layers(model, x, p.warmup, p.iters, Stages::kFp32Plan, false, prof);
  else
    infer_layers(model, x, p.warmup, p.iters, prof);
  return prof;
}

std::string layer_table(const LayerProfile& prof, bool train, int64_t batch_size) {
  std::string out;
  char line[512];
  const auto rate = [&](const LayerTime& t, double seconds, double factor) {
    char buf[64];
    if (seconds <= 0) return std::string("");
    if (t.flop > 0) {
      const double g = factor * t.flop / seconds / 1e9;
      std::snprintf(buf, sizeof buf, "%.0f GFLOP/s (%.0f%%)", g, 100 * g / prof.peak_gflops);
    } else {
      std::snprintf(buf, sizeof buf, "%.1f GB/s", factor * t.bytes / seconds / 1e9);
    }
    return std::string(buf);
  };
  // Inference: the bytes each layer moves (activations in and out, parameters) per second,
  // against the DRAM read bandwidth measured in the same run.
  const auto memory = [&](const LayerTime& t) {
    char buf[64];
    if (t.forward_s <= 0 || prof.dram_gbps <= 0) return std::string("");
    const double g = (t.bytes + t.weight_bytes) / t.forward_s / 1e9;
    std::snprintf(buf, sizeof buf, "%.1f GB/s (%.0f%%)", g, 100 * g / prof.dram_gbps);
    return std::string(buf);
  };
  out += train ? "| layer | what | forward ms | forward rate (% of peak) | backward ms | backward rate (% of peak) |\n"
                 "|---|---|---|---|---|---|\n"
               : "| layer | what | ms | rate (% of peak) | memory traffic (% of DRAM read) | share of the pass |\n"
                 "|---|---|---|---|---|---|\n";
  double sum = 0, flop = 0;
  for (const auto& t : prof.layers) {
    sum += t.forward_s + t.backward_s;
    flop += t.flop * (train ? 3 : 1);
    if (train) {
      const std::string forward = rate(t, t.forward_s, 1);
      const std::string backward = rate(t, t.backward_s, t.name == "features.0" ? 1 : 2);
      std::snprintf(line, sizeof line, "| %s | %s | %.2f | %s | %.2f | %s |\n", t.name.c_str(), t.what.c_str(),
                    1000 * t.forward_s, forward.c_str(), 1000 * t.backward_s, backward.c_str());
      out += line;
    } else {
      const std::string r = rate(t, t.forward_s, 1);
      std::snprintf(line, sizeof line, "| %s | %s | %.2f | %s | %s | %.1f%% |\n", t.name.c_str(), t.what.c_str(),
                    1000 * t.forward_s, r.c_str(), memory(t).c_str(), 100 * t.forward_s / prof.step_s);
      out += line;
    }
  }
  std::snprintf(line, sizeof line,
                "\nlayers %.1f ms in all (%.0f GFLOP/s of conv + linear work), the whole %s %.1f ms per batch of "
                "%lld (%.1f img/s); peak: %s %.0f GFLOP/s\n",
                1000 * sum, flop / sum / 1e9, train ? "layer-by-layer step" : "forward pass",
                1000 * (train ? sum : prof.step_s), static_cast<long long>(batch_size),
                batch_size / (train ? sum : prof.step_s), prof.peak_what.c_str(), prof.peak_gflops);
  out += line;
  double conv_s = 0, conv_flop = 0;  // the convolutions together: what the peak target speaks of
  for (const auto& t : prof.layers)
    if (t.what.rfind("conv", 0) == 0) {
      conv_s += t.forward_s;
      conv_flop += t.flop;
    }
  if (!train && conv_s > 0 && prof.peak_gflops > 0) {
    std::snprintf(line, sizeof line, "convolutions: %.1f ms, %.0f GFLOP/s in all (%.0f%% of the peak)\n",
                  1000 * conv_s, conv_flop / conv_s / 1e9, 100 * conv_flop / conv_s / 1e9 / prof.peak_gflops);
    out += line;
  }
  if (!train && prof.dram_gbps > 0) {
    std::snprintf(line, sizeof line, "memory read: %.1f GB/s from cache (a %lld MiB buffer), %.1f GB/s from DRAM "
                  "(%lld MiB)\n", prof.cache_gbps, static_cast<long long>(prof.cache_buffer >> 20), prof.dram_gbps,
                  static_cast<long long>(prof.dram_buffer >> 20));
    out += line;
  }
  return out;
}

}  // namespace alexnet::engine
