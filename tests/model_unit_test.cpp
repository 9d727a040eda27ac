// Unit tests of the AlexNet module and weight loading; no Python needed.
#include "model/alexnet.h"
#include "model/dropout.h"
#include "app/engine/sgd.h"
#include "model/weights.h"

#include <gtest/gtest.h>
#include <cstdio>
#include <torch/script.h>

#include <unistd.h>

namespace alexnet {
namespace {

TEST(AlexNetUnit, ParameterCountAt1000Classes) {
  AlexNet model;
  // torchvision's documented count for alexnet(): 61,100,840.
  EXPECT_EQ(count_parameters(*model), 61100840);
}

TEST(AlexNetUnit, ParameterNamesFollowTorchvision) {
  AlexNet model(AlexNetOptions().num_classes(10));
  std::vector<std::string> names;
  for (const auto& p : model->named_parameters()) names.push_back(p.key());
  const std::vector<std::string> expected = {
      "features.0.weight",   "features.0.bias",   "features.3.weight",   "features.3.bias",
      "features.6.weight",   "features.6.bias",   "features.8.weight",   "features.8.bias",
      "features.10.weight",  "features.10.bias",  "classifier.1.weight", "classifier.1.bias",
      "classifier.4.weight", "classifier.4.bias", "classifier.6.weight", "classifier.6.bias"};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(model->named_parameters()["classifier.6.weight"].sizes(),
            torch::IntArrayRef({10, 4096}));
}

TEST(AlexNetUnit, OutputShapesForAnyInputOfAtLeast63) {
  torch::NoGradGuard no_grad;
  AlexNet model(AlexNetOptions().num_classes(7));
  model->eval();
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{224, 224}, {63, 63}, {100, 150}, {300, 64}}) {
    auto y = model->forward(torch::randn({2, 3, h, w}));  // (2, 7)
    EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 7})) << h << "x" << w;
  }
}

TEST(AlexNetUnit, RejectsInputSmallerThan63) {
  AlexNet model;
  EXPECT_THROW(model->forward(torch::randn({1, 3, 62, 224})), c10::Error);
  EXPECT_THROW(model->forward(torch::randn({1, 1, 224, 224})), c10::Error);
}

TEST(AlexNetUnit, EvalIsDeterministicTrainAppliesDropout) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().num_classes(10));
  auto x = torch::randn({4, 3, 64, 64});
  model->eval();
  // Same input twice in eval mode: exactly equal (tolerance 0).
  EXPECT_TRUE(torch::equal(model->forward(x), model->forward(x)));
  model->train();
  // Dropout 0.5 on 4096 units: two train-mode passes differ, and differ from eval.
  auto a = model->forward(x), b = model->forward(x);
  EXPECT_FALSE(torch::equal(a, b));
  model->eval();
  EXPECT_FALSE(torch::allclose(a, model->forward(x)));
}

TEST(AlexNetUnit, DropoutZeroMakesTrainEqualEval) {
  torch::NoGradGuard no_grad;
  AlexNet model(AlexNetOptions().num_classes(10).dropout(0.0));
  auto x = torch::randn({2, 3, 64, 64});
  model->train();
  auto a = model->forward(x);
  model->eval();
  EXPECT_TRUE(torch::equal(a, model->forward(x)));
}

TEST(AlexNetUnit, InvalidOptionsThrow) {
  EXPECT_THROW(AlexNet(AlexNetOptions().num_classes(0)), c10::Error);
  EXPECT_THROW(AlexNet(AlexNetOptions().dropout(1.0)), c10::Error);
}

TEST(WeightsUnit, LoadNamedTensorsCopiesEveryValue) {
  AlexNet src(AlexNetOptions().num_classes(5)), dst(AlexNetOptions().num_classes(5));
  load_named_tensors(*dst, state_dict(*src), "test");
  for (const auto& p : src->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), dst->named_parameters()[p.key()])) << p.key();
}

// The adopting constructor: parameters share the given storage (float32), are converted
// otherwise, the layers' options describe the adopted shapes, and the outputs are those
// of the model the tensors came from; for both architectures.
TEST(AlexNetUnit, AdoptingConstructorSharesTheTensors) {
  for (const Arch arch : {Arch::kTorchvision, Arch::kPaper2012}) {
    const auto options = AlexNetOptions().num_classes(7).in_channels(1).arch(arch);
    AlexNet src(options);
    src->eval();
    NamedTensors tensors = state_dict(*src);
    tensors[1].second = tensors[1].second.to(torch::kFloat64);  // features.0.bias: converted
    AlexNet adopted(options, tensors);
    adopted->eval();
    for (const auto& [name, t] : state_dict(*adopted)) {
      const torch::Tensor& given = src->named_parameters()[name];
      EXPECT_TRUE(torch::equal(t, given)) << name;
      EXPECT_EQ(t.scalar_type(), torch::kFloat) << name;
      if (name != "features.0.bias") EXPECT_EQ(t.data_ptr(), given.data_ptr()) << name;
    }
    for (const auto& m : adopted->modules(/*include_self=*/false)) {
      if (auto* c = m->as<torch::nn::Conv2d>()) {
        EXPECT_EQ(c->options.out_channels(), c->weight.size(0));
        EXPECT_EQ(c->options.in_channels(), c->weight.size(1) * c->options.groups());
      } else if (auto* l = m->as<torch::nn::Linear>()) {
        EXPECT_EQ(l->options.in_features(), l->weight.size(1));
        EXPECT_EQ(l->options.out_features(), l->weight.size(0));
      }
    }
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 1, 64, 64});
    EXPECT_TRUE(torch::equal(adopted->forward(x), src->forward(x))) << arch_name(arch);
    tensors.pop_back();
    EXPECT_THROW(AlexNet(options, tensors), c10::Error);  // a missing tensor
  }
}

std::string load_error(torch::nn::Module& module, const NamedTensors& tensors) {
  try {
    load_named_tensors(module, tensors, "file.pt");
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(WeightsUnit, ShapeMismatchNamesKeyAndBothShapes) {
  AlexNet model(AlexNetOptions().num_classes(5));
  auto tensors = state_dict(*model);
  for (auto& [name, t] : tensors)
    if (name == "features.3.weight") t = torch::zeros({192, 64, 3, 3});
  const std::string msg = load_error(*model, tensors);
  EXPECT_NE(msg.find("file.pt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("features.3.weight: expected shape [192, 64, 5, 5], got [192, 64, 3, 3]"),
            std::string::npos)
      << msg;
}

TEST(WeightsUnit, MissingAndUnexpectedKeysAreListed) {
  AlexNet model(AlexNetOptions().num_classes(5));
  auto tensors = state_dict(*model);
  for (auto& [name, t] : tensors)
    if (name == "classifier.4.bias") name = "classifier.5.bias";
  const std::string msg = load_error(*model, tensors);
  EXPECT_NE(msg.find("missing keys: classifier.4.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys: classifier.5.bias [4096]"), std::string::npos) << msg;
}

// A torch.save file with the names, shapes and floating-or-not dtypes of
// `tensors`, every value 0, opened: all WeightsFile checks. Floats are written
// as float16 to halve the bytes; the file is removed once opened (the
// WeightsFile keeps its mapping).
WeightsFile write_shapes(const NamedTensors& tensors, const std::string& name) {
  NamedTensors zeros;
  for (const auto& [key, t] : tensors)
    zeros.emplace_back(key, torch::zeros(t.sizes(), t.is_floating_point() ? torch::kHalf : t.scalar_type()));
  const std::string path = ::testing::TempDir() + "model_unit_" + name + ".pth";
  save_state_dict(zeros, path);
  WeightsFile file(path);
  std::remove(path.c_str());
  return file;
}

TEST(WeightsUnit, InferShapeReadsClassesAndChannels) {
  AlexNet model(AlexNetOptions().num_classes(12).in_channels(1));
  const auto shape = (write_shapes(state_dict(*model), "12cls")).options();
  EXPECT_EQ(shape.num_classes(), 12);
  EXPECT_EQ(shape.in_channels(), 1);
  EXPECT_THROW((write_shapes({{"fc.weight", torch::zeros({3, 3})}}, "fc")).options(),
               c10::Error);
}

TEST(WeightsUnit, MissingFileAndDirectoryAreErrors) {
  EXPECT_THROW(WeightsFile("/nonexistent/weights.pt"), c10::Error);
  EXPECT_THROW(WeightsFile("/tmp"), c10::Error);
}

TEST(WeightsUnit, MismatchIsReportedAgainstTheCloserArchitecture) {
  AlexNet model(AlexNetOptions().num_classes(5).arch(Arch::kPaper2012));
  auto tensors = state_dict(*model);
  for (auto& [name, t] : tensors)
    if (name == "features.8.weight") t = torch::zeros({384, 256, 5, 5});
  const WeightsFile shape = write_shapes(tensors, "paper_shape");
  EXPECT_FALSE(shape.fits());
  EXPECT_EQ(shape.mismatch(), shape.path() + ": weights do not fit AlexNet; shape mismatch: "
                              "features.8.weight: expected shape [384, 256, 3, 3], got [384, 256, 5, 5]");
  EXPECT_THROW(shape.options(), c10::Error);
  for (auto& [name, t] : tensors)
    if (name == "features.8.weight") t = torch::zeros({384, 256, 3, 3}, torch::kLong);
  const WeightsFile dtype = write_shapes(tensors, "paper_dtype");
  EXPECT_EQ(dtype.mismatch(), dtype.path() + ": key features.8.weight: expected a Float tensor, got Long");
  EXPECT_TRUE((write_shapes(state_dict(*model), "paper")).fits());
}

// train --weights with a reset classifier: every weight but the skipped ones,
// whatever shape those have in the module.
TEST(WeightsUnit, LoadIntoLeavesSkippedEntriesAsTheModuleHasThem) {
  AlexNet src(AlexNetOptions().num_classes(10).in_channels(1));
  const std::string path = ::testing::TempDir() + "model_unit_load_into.pth";
  save_state_dict(state_dict(*src), path);
  AlexNet dst(AlexNetOptions().num_classes(4).in_channels(1));
  const torch::Tensor head = dst->named_parameters()["classifier.6.weight"].clone();
  const WeightsFile file(path);
  std::remove(path.c_str());  // the WeightsFile keeps its mapping
  EXPECT_THROW(file.load_into(*dst), c10::Error);  // 10 classes into 4
  file.load_into(*dst, "classifier.6.");
  for (const auto& [name, t] : state_dict(*dst)) {
    if (name.rfind("classifier.6.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(t, src->named_parameters()[name])) << name;
  }
  EXPECT_TRUE(torch::equal(dst->named_parameters()["classifier.6.weight"], head));
}

// The TorchScript forward written from alexnet_layers() computes what the module
// does (the same ATen ops: max |difference| <= 1e-6, expected 0), and the archive
// loads back; the 2012 paper's network (LRN) is refused before anything is written.
TEST(WeightsUnit, TorchScriptExportRunsTheModulesForward) {
  torch::manual_seed(2);
  AlexNet model(AlexNetOptions().num_classes(3));
  model->eval();
  const std::string path = ::testing::TempDir() + "model_unit_export.pt";
  save_torchscript(state_dict(*model), path);
  torch::jit::Module scripted = torch::jit::load(path);
  scripted.eval();
  torch::NoGradGuard no_grad;
  for (const int64_t side : {64, 120}) {
    const auto x = torch::randn({2, 3, side, side});
    const auto want = model->forward(x);                             // (2, 3)
    const auto got = scripted.forward({x}).toTensor();               // (2, 3)
    EXPECT_LE((got - want).abs().max().item<float>(), 1e-6f) << side;
  }
  const WeightsFile file(path);
  std::remove(path.c_str());  // the WeightsFile keeps its mapping
  EXPECT_EQ(file.format(), WeightFormat::kTorchScript);
  EXPECT_TRUE(file.fits()) << file.mismatch();
  AlexNet loaded = file.load();
  for (const auto& [name, t] : state_dict(*loaded))
    EXPECT_TRUE(torch::equal(t, model->named_parameters()[name])) << name;

  AlexNet paper(AlexNetOptions().num_classes(3).arch(Arch::kPaper2012));
  const std::string refused = ::testing::TempDir() + "model_unit_paper.pt";
  try {
    save_torchscript(state_dict(*paper), refused);
    FAIL() << "the 2012 paper's network exported as TorchScript";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("TorchScript export covers torchvision's AlexNet"),
              std::string::npos) << e.what_without_backtrace();
  }
  EXPECT_NE(::access(refused.c_str(), F_OK), 0) << "nothing written";
}

}  // namespace
}  // namespace alexnet

namespace alexnet {
namespace {

TEST(AlexNet2012Unit, PaperLayoutWithGroupsAndLrn) {
  AlexNet model(AlexNetOptions().arch(Arch::kPaper2012));
  auto params = model->named_parameters();
  // 96-256-384-384-256 channels; conv2, conv4, conv5 split in two groups (half the inputs).
  EXPECT_EQ(params["features.0.weight"].sizes(), torch::IntArrayRef({96, 3, 11, 11}));
  EXPECT_EQ(params["features.4.weight"].sizes(), torch::IntArrayRef({256, 48, 5, 5}));
  EXPECT_EQ(params["features.8.weight"].sizes(), torch::IntArrayRef({384, 256, 3, 3}));
  EXPECT_EQ(params["features.10.weight"].sizes(), torch::IntArrayRef({384, 192, 3, 3}));
  EXPECT_EQ(params["features.12.weight"].sizes(), torch::IntArrayRef({256, 192, 3, 3}));
  EXPECT_TRUE(model->features[2]->as<torch::nn::LocalResponseNorm>() != nullptr);
  EXPECT_TRUE(model->features[6]->as<torch::nn::LocalResponseNorm>() != nullptr);
  torch::NoGradGuard no_grad;
  model->eval();
  EXPECT_EQ(model->forward(torch::randn({2, 3, 224, 224})).sizes(), torch::IntArrayRef({2, 1000}));
  EXPECT_EQ(model->forward(torch::randn({1, 3, 63, 63})).sizes(), torch::IntArrayRef({1, 1000}));
}

TEST(AlexNet2012Unit, PaperInitialisation) {
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().arch(Arch::kPaper2012));
  auto params = model->named_parameters();
  // N(0, 0.01): over >= 34k samples the sample std is within 2% of 0.01.
  for (const char* w : {"features.0.weight", "features.4.weight", "classifier.1.weight",
                        "classifier.6.weight"}) {
    const double std = params[w].std().item<double>();
    EXPECT_NEAR(std, 0.01, 2e-4) << w;
    EXPECT_NEAR(params[w].mean().item<double>(), 0.0, 2e-4) << w;
  }
  for (const char* b : {"features.4.bias", "features.10.bias", "features.12.bias",
                        "classifier.1.bias", "classifier.4.bias"})
    EXPECT_TRUE(torch::equal(params[b], torch::ones_like(params[b]))) << b;
  for (const char* b : {"features.0.bias", "features.8.bias", "classifier.6.bias"})
    EXPECT_TRUE(torch::equal(params[b], torch::zeros_like(params[b]))) << b;
}

TEST(AlexNet2012Unit, LrnMatchesThePaperFormula) {
  // b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta, k=2, alpha=1e-4, beta=0.75.
  AlexNet model(AlexNetOptions().arch(Arch::kPaper2012));
  auto x = torch::rand({1, 8, 2, 2}) * 50;
  auto y = model->features[2]->as<torch::nn::LocalResponseNorm>()->forward(x);
  auto sq = x.pow(2);
  for (int64_t c = 0; c < 8; ++c) {
    auto sum = sq.slice(1, std::max<int64_t>(0, c - 2), std::min<int64_t>(8, c + 3)).sum(1);
    auto want = x.select(1, c) / (2.0 + 1e-4 * sum).pow(0.75);
    EXPECT_LE((y.select(1, c) - want).abs().max().item<float>(), 1e-5f) << "channel " << c;
  }
}

}  // namespace
}  // namespace alexnet

namespace alexnet {
namespace {

TEST(AlexNetUnit, ParameterShapesTableMatchesTheBuiltModules) {
  // parameter_shapes() spares info the cost of building a model; it must describe
  // exactly what the constructor builds.
  for (Arch arch : {Arch::kTorchvision, Arch::kPaper2012}) {
    for (auto [classes, channels] : std::vector<std::pair<int64_t, int64_t>>{{1000, 3}, {10, 1}}) {
      const auto options = AlexNetOptions().num_classes(classes).in_channels(channels).arch(arch);
      AlexNet model(options);
      std::vector<std::pair<std::string, std::vector<int64_t>>> built;
      for (const auto& p : model->named_parameters()) built.emplace_back(p.key(), p.value().sizes().vec());
      EXPECT_EQ(parameter_shapes(options), built) << arch_name(arch) << " " << classes << " " << channels;
      const WeightsFile file = write_shapes(state_dict(*model), "fits");
      EXPECT_TRUE(file.fits()) << file.mismatch();
    }
  }
}

}  // namespace
}  // namespace alexnet

// The matrix form used on CUDA under --deterministic pools the same bins as
// adaptive_avg_pool2d, forward and backward, for maps smaller, equal and larger
// than 6x6 (AlexNet's feature map is 1x1 at 64 px, 6x6 at 224 px).
TEST(AlexNetUnit, DeterministicAdaptivePoolMatchesAdaptiveAvgPool) {
  torch::manual_seed(1);
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 3}, {5, 5},
                                                                      {6, 6}, {7, 9}, {13, 13}}) {
    auto a = torch::randn({2, 4, h, w}, torch::requires_grad());
    auto b = a.detach().clone().requires_grad_(true);
    const auto ya = torch::adaptive_avg_pool2d(a, {6, 6});
    const auto yb = alexnet::deterministic_adaptive_avg_pool(b, 6, 6);
    ASSERT_EQ(yb.sizes(), ya.sizes());
    EXPECT_LE((ya - yb).abs().max().item<float>(), 1e-6) << h << "x" << w;
    const auto g = torch::randn_like(ya);
    ya.backward(g);
    yb.backward(g);
    EXPECT_LE((a.grad() - b.grad()).abs().max().item<float>(), 1e-5) << h << "x" << w;
  }
}

// PyTorch's single-tensor SGD formula, as tensor ops (torch.optim.SGD, dampening 0).
static void reference_sgd_step(std::vector<torch::Tensor>& ps, std::vector<torch::Tensor>& bufs,
                               const std::vector<torch::Tensor>& grads, double lr,
                               const alexnet::engine::SgdOptions& o) {
  for (size_t i = 0; i < ps.size(); ++i) {
    torch::Tensor d = grads[i];
    if (o.weight_decay() != 0) d = d.add(ps[i], o.weight_decay());
    if (o.momentum() != 0) {
      if (!bufs[i].defined()) bufs[i] = d.clone();
      else bufs[i].mul_(o.momentum()).add_(d);
      d = o.nesterov() ? d.add(bufs[i], o.momentum()) : bufs[i];
    }
    ps[i].add_(d, -lr);
  }
}

TEST(SgdUnit, FusedStepMatchesTheTensorFormula) {
  // Float32 CPU parameters take the fused one-pass loop; it must compute what the
  // tensor ops compute, for every option, contiguous or channels-last.
  for (double momentum : {0.0, 0.9})
    for (double wd : {0.0, 5e-4})
      for (bool nesterov : {false, true})
        for (bool channels_last : {false, true}) {
          if (nesterov && momentum == 0) continue;
          SCOPED_TRACE("momentum " + std::to_string(momentum) + " wd " + std::to_string(wd) +
                       " nesterov " + std::to_string(nesterov) + " channels_last " +
                       std::to_string(channels_last));
          torch::manual_seed(3);
          std::vector<torch::Tensor> ours = {torch::randn({70000}), torch::randn({16, 3, 11, 11})};
          if (channels_last) ours[1] = ours[1].contiguous(torch::MemoryFormat::ChannelsLast);
          std::vector<torch::Tensor> ref = {ours[0].clone(), ours[1].clone()};
          const auto o = alexnet::engine::SgdOptions().momentum(momentum).weight_decay(wd).nesterov(nesterov);
          alexnet::engine::Sgd sgd(ours, o);
          std::vector<torch::Tensor> ref_bufs(2);
          for (int step = 0; step < 3; ++step) {
            std::vector<torch::Tensor> grads = {torch::randn({70000}), torch::randn({16, 3, 11, 11})};
            if (channels_last) grads[1] = grads[1].contiguous(torch::MemoryFormat::ChannelsLast);
            for (size_t i = 0; i < ours.size(); ++i) ours[i].mutable_grad() = grads[i].clone();
            sgd.step(0.05);
            reference_sgd_step(ref, ref_bufs, grads, 0.05, o);
          }
          for (size_t i = 0; i < ours.size(); ++i) {
            // Float rounding differs only where the compiler fuses a multiply-add.
            EXPECT_TRUE(torch::allclose(ours[i], ref[i], 1e-6, 1e-7))
                << "parameter " << i << " max diff " << (ours[i] - ref[i]).abs().max().item<float>();
            if (momentum != 0) {
              EXPECT_TRUE(torch::allclose(sgd.momentum_buffers()[i], ref_bufs[i], 1e-6, 1e-7));
              EXPECT_EQ(sgd.momentum_buffers()[i].strides(), ours[i].strides());
            }
          }
        }
}

TEST(SgdUnit, OtherDtypesUseTheTensorFormulaExactly) {
  torch::manual_seed(4);
  std::vector<torch::Tensor> ours = {torch::randn({100}, torch::kFloat64)};
  std::vector<torch::Tensor> ref = {ours[0].clone()}, bufs(1);
  const auto o = alexnet::engine::SgdOptions().momentum(0.9).weight_decay(1e-3).nesterov(true);
  alexnet::engine::Sgd sgd(ours, o);
  for (int step = 0; step < 3; ++step) {
    auto g = torch::randn({100}, torch::kFloat64);
    ours[0].mutable_grad() = g.clone();
    sgd.step(0.1);
    reference_sgd_step(ref, bufs, {g}, 0.1, o);
  }
  EXPECT_TRUE(torch::equal(ours[0], ref[0]));
  EXPECT_TRUE(torch::equal(sgd.momentum_buffers()[0], bufs[0]));
}

TEST(DropoutUnit, HashedMaskHasTheRateAndScaleOfDropout) {
  const auto x = torch::rand({1 << 20}) + 0.5;  // no zeros of its own
  for (double p : {0.1, 0.5}) {
    const auto y = alexnet::hashed_dropout(x, p, 12345);
    const auto dropped = y.eq(0);
    // 2^20 Bernoulli draws: the rate is within 0.003 (6 standard deviations) of p.
    EXPECT_NEAR(dropped.to(torch::kFloat64).mean().item<double>(), p, 0.003);
    // Neighbours are independent: both dropped about p^2 of the time.
    const auto both = dropped.slice(0, 1).logical_and(dropped.slice(0, 0, -1));
    EXPECT_NEAR(both.to(torch::kFloat64).mean().item<double>(), p * p, 0.003);
    // The kept elements are scaled exactly as torch's dropout scales them.
    const auto kept = dropped.logical_not();
    const auto scale = static_cast<float>(1.0 / (1.0 - p));
    EXPECT_TRUE(torch::equal(y.masked_select(kept), x.masked_select(kept) * scale));
    // Another key, another mask.
    EXPECT_FALSE(torch::equal(alexnet::hashed_dropout(x, p, 12346).eq(0), dropped));
  }
}

TEST(DropoutUnit, BackwardUsesTheForwardMask) {
  const auto x = (torch::rand({64, 300}) + 0.5).requires_grad_();
  const auto w = torch::randn({64, 300});
  const auto y = alexnet::hashed_dropout(x, 0.3, 7);
  (y * w).sum().backward();
  const auto expected = y.detach().ne(0).to(torch::kFloat32) * static_cast<float>(1.0 / 0.7) * w;
  EXPECT_TRUE(torch::allclose(x.grad(), expected, 1e-6, 0));
}

TEST(DropoutUnit, ModuleFollowsTorchGeneratorAndModes) {
  alexnet::Dropout drop(0.5);
  const auto x = torch::rand({1000}) + 0.5;
  torch::manual_seed(1);
  const auto a = drop->forward(x);
  torch::manual_seed(1);
  EXPECT_TRUE(torch::equal(drop->forward(x), a));  // reproducible from the seed
  EXPECT_FALSE(torch::equal(drop->forward(x), a));  // a new mask each call
  drop->eval();
  EXPECT_TRUE(torch::equal(drop->forward(x), x));
  drop->train();
  EXPECT_TRUE(torch::equal(alexnet::Dropout(0.0)->forward(x), x));
  // Tensors the hash does not cover take torch's dropout.
  const auto d = drop->forward(x.to(torch::kFloat64));
  EXPECT_EQ(d.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(d.eq(0).to(torch::kFloat64).mean().item<double>(), 0.5, 0.1);
}

// at::parallel_for shares a loop among LibTorch's threads only in code compiled with OpenMP
// (ATen/ParallelOpenMP.h tests _OPENMP); without it, our own loops (Winograd transforms,
// quantization, pooling, the optimizer step, dropout) ran on one thread whatever --threads
// said. This file is compiled with the flags of model/ and app/ (CMakeLists.txt).
TEST(Threads, OurParallelLoopsRunOnLibTorchsThreads) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  std::vector<int> thread_of(2, -1);
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) thread_of[i] = at::get_thread_num();
  });
  at::set_num_threads(before);
  EXPECT_EQ(thread_of[0], 0);
  EXPECT_EQ(thread_of[1], 1) << "at::parallel_for ran both halves on one thread: compiled without OpenMP?";
}
