// AlexNet against torchvision, with reference data written by tests/make_reference.py
// at test time (ctest runs it first as the `reference` fixture).
#include "data/image.h"
#include "model/alexnet.h"
#include "model/onednn_linear.h"
#include "model/onednn_plan.h"
#include "model/weights.h"
#include "tests/fixture.h"

#ifdef ALEXNET_HAVE_OPENCV
#include "data/decode.h"
#endif

#include <gtest/gtest.h>

#include <fstream>

namespace alexnet {
namespace {

using testing::read_fixture;
using testing::reference_path;

const std::map<std::string, torch::Tensor>& model_fixture() {
  static const auto fixture = read_fixture(reference_path("model.bin"));
  return fixture;
}

float max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<float>();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(AlexNetReference, ParameterNamesShapesAndCountEqualTorchvision) {
  AlexNet model;
  std::vector<std::pair<std::string, torch::IntArrayRef>> ours, theirs;
  int64_t their_count = 0;
  for (const auto& p : model->named_parameters()) ours.emplace_back(p.key(), p.value().sizes());
  for (const auto& [key, t] : model_fixture()) {
    if (key.rfind("param/", 0) != 0) continue;
    their_count += t.numel();
  }
  // Order: the fixture map is sorted, so compare as sorted sets plus an exact count.
  std::map<std::string, std::vector<int64_t>> a, b;
  for (const auto& [k, s] : ours) a[k] = s.vec();
  for (const auto& [key, t] : model_fixture())
    if (key.rfind("param/", 0) == 0) b[key.substr(6)] = t.sizes().vec();
  EXPECT_EQ(a, b);
  EXPECT_EQ(count_parameters(*model), their_count);
}

TEST(AlexNetReference, DefaultInitialisationEqualsTorchvisionForTheSameSeed) {
  // Same generator, same construction order, same kaiming-uniform draws: the
  // initial weights are identical (tolerance 0), not just equally distributed.
  torch::manual_seed(0);
  AlexNet model;
  for (const auto& p : model->named_parameters()) {
    const auto& ref = model_fixture().at("param/" + p.key());
    EXPECT_TRUE(torch::equal(p.value(), ref)) << p.key() << " max |diff| "
                                              << max_abs_diff(p.value(), ref);
  }
}

void expect_logits_match(AlexNet& model) {
  torch::NoGradGuard no_grad;
  model->eval();
  for (const char* key : {"224_b1", "224_b8", "63_b1", "63_b8", "nonsquare_b1", "nonsquare_b8"}) {
    const auto& x = model_fixture().at(std::string("input/") + key);
    const auto& want = model_fixture().at(std::string("logits/") + key);
    const auto got = model->forward(x);
    ASSERT_EQ(got.sizes(), want.sizes()) << key;
    const float diff = max_abs_diff(got, want);
    EXPECT_LE(diff, 1e-5f) << key << ": max |C++ - torchvision| logits";
    std::printf("  %-13s max |diff| %.3g\n", key, diff);
  }
}

// The oneDNN plan (model/onednn_plan.h) in place of the features Sequential, and
// its classifier (model/onednn_linear.h) in place of the classifier's at batch 1,
// against torchvision's logits for the same weights and inputs. Direct kernels
// differ from PyTorch's layer-by-layer calls only in summation order, Winograd's
// transforms also round differently; both bounds are relative to the logits' scale.
void expect_plan_gives_torchvision_logits(ConvAlgorithm algorithm) {
  const bool wino = algorithm == ConvAlgorithm::kWinograd;
  AlexNet model = load_alexnet(reference_path("alexnet_seed0_script.pt"));
  model->eval();
  torch::NoGradGuard no_grad;
  model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, algorithm));
  // With its classifier, which takes the batches of 1 (OneDnnClassifier::kMaxBatch) and leaves those of 8.
  model->set_inference_classifier(std::make_shared<OneDnnClassifier>(model->classifier));
  for (const char* key : {"224_b1", "224_b8", "63_b1", "63_b8", "nonsquare_b1", "nonsquare_b8"}) {
    const auto& x = model_fixture().at(std::string("input/") + key);
    const auto& want = model_fixture().at(std::string("logits/") + key);
    for (const bool channels_last : {false, true}) {
      const auto input = channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
      const auto got = model->forward(input);
      ASSERT_FALSE(model->inference_plan()->describe().empty()) << key << ": the plan did not run";
      // The path this test is named after: conv2-5 as Winograd (conv1 too where oneDNN has none),
      // or none of them.
      EXPECT_EQ(model->inference_plan()->winograd_layers(),
                wino ? (OneDnnFeatures::onednn_winograd_available() ? 4 : 5) : 0)
          << key;
      ASSERT_EQ(got.sizes(), want.sizes()) << key;
      const float diff = max_abs_diff(got, want);
      const float scale = want.abs().max().item<float>();
      // Relative to the logits' scale (0.03 here); measured 8e-7 for both.
      const float tolerance = 2e-5f * scale;
      EXPECT_LE(diff, tolerance) << key << (wino ? " winograd" : " direct")
                                 << (channels_last ? " channels-last" : " NCHW")
                                 << ": max |plan - torchvision| logits (scale " << scale << ")";
      std::printf("  %-9s %-13s %-13s max |diff| %.3g (max |logit| %.3g), %d convolution(s) as Winograd\n",
                  wino ? "winograd" : "direct", key, channels_last ? "channels-last" : "NCHW", diff, scale,
                  model->inference_plan()->winograd_layers());
    }
  }
  model->set_inference_plan(nullptr);
  model->set_inference_classifier(nullptr);
}

TEST(AlexNetReference, OneDnnPlanDirectGivesTorchvisionLogits) {
  if (!OneDnnFeatures::compiled()) GTEST_SKIP() << "built without oneDNN's headers: no plan";
  expect_plan_gives_torchvision_logits(ConvAlgorithm::kDirect);
}

TEST(AlexNetReference, OneDnnPlanWinogradGivesTorchvisionLogits) {
  if (!OneDnnFeatures::compiled()) GTEST_SKIP() << "built without oneDNN's headers: no plan";
  // Without a Winograd kernel, ConvAlgorithm::kWinograd runs direct kernels: this test would
  // check the direct path under Winograd's name.
  if (!OneDnnFeatures::winograd_available())
    GTEST_SKIP() << "oneDNN has no Winograd convolution on this CPU, " << testing::cpu_description()
                 << "; OneDnnPlanDirectGivesTorchvisionLogits covers the plan here";
  expect_plan_gives_torchvision_logits(ConvAlgorithm::kWinograd);
}

TEST(AlexNetReference, ScriptedArchiveGivesTorchvisionLogits) {
  AlexNet model = load_alexnet(reference_path("alexnet_seed0_script.pt"));
  EXPECT_EQ(model->options().num_classes(), 1000);
  expect_logits_match(model);
}

TEST(AlexNetReference, TracedArchiveGivesTorchvisionLogits) {
  AlexNet model = load_alexnet(reference_path("alexnet_seed0_trace.pt"));
  expect_logits_match(model);
}

TEST(AlexNetReference, ClassCountIsReadFromTheArchive) {
  AlexNet model = load_alexnet(reference_path("alexnet_seed1_10cls_script.pt"));
  EXPECT_EQ(model->options().num_classes(), 10);
  const std::string msg =
      error_of([] { load_alexnet(reference_path("alexnet_seed1_10cls_script.pt"), 1000); });
  EXPECT_NE(msg.find("weights have 10 classes but 1000 were asked for"), std::string::npos) << msg;
}

TEST(AlexNetReference, WrongShapeArchiveNamesKeyAndShapes) {
  const std::string msg = error_of([] { load_alexnet(reference_path("wrong_shape.pt")); });
  EXPECT_NE(msg.find("wrong_shape.pt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("features.0.weight: expected shape [64, 3, 11, 11], got [64, 3, 5, 5]"),
            std::string::npos)
      << msg;
}

TEST(AlexNetReference, WrongNameArchiveListsKeys) {
  const std::string msg = error_of([] { load_alexnet(reference_path("wrong_name.pt")); });
  EXPECT_NE(msg.find("wrong_name.pt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an AlexNet state_dict"), std::string::npos) << msg;
}

TEST(AlexNetReference, OtherModelAndNonArchiveAreRefused) {
  std::string msg = error_of([] { load_alexnet(reference_path("other_model.pt")); });
  EXPECT_NE(msg.find("other_model.pt: not an AlexNet"), std::string::npos) << msg;
  msg = error_of([] { load_alexnet(reference_path("not_an_archive.pt")); });
  EXPECT_NE(msg.find("not_an_archive.pt"), std::string::npos) << msg;
}

#ifdef ALEXNET_HAVE_OPENCV
TEST(PredictReference, EvalTransformAndLogitsMatchTorchvisionOnPhotographs) {
  const auto fixture = read_fixture(reference_path("photos.bin"));
  std::ifstream list(reference_path("photos.txt"));
  std::vector<std::string> paths;
  for (std::string line; std::getline(list, line);)
    if (!line.empty()) paths.push_back(line);
  ASSERT_GE(paths.size(), 5u);

  AlexNet model = load_alexnet(reference_path("alexnet_seed0_script.pt"));
  model->eval();
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < paths.size(); ++i) {
    const auto image = data::decode_image_file(paths[i]);
    const auto ours = data::eval_transform(image);  // (3, 224, 224)
    const auto& theirs = fixture.at("pre/" + std::to_string(i));
    ASSERT_EQ(ours.sizes(), theirs.sizes()) << paths[i];
    // In [0, 1] units before normalisation: mean |diff| must be within 1/255
    // (the bound); the PIL port aims at 0.
    const auto std_ = torch::tensor({0.229f, 0.224f, 0.225f}).view({3, 1, 1});
    const auto pixel_diff = ((ours - theirs) * std_).abs();
    const float mean_diff = pixel_diff.mean().item<float>();
    const float max_diff = pixel_diff.max().item<float>();
    EXPECT_LE(mean_diff, 1.0f / 255) << paths[i];
    // End to end: identical inputs would give the model tolerance (1e-5); allow
    // 1e-4 on logits so one-level pixel differences (|d| <= 1/255 at a few
    // pixels) stay within it through the 0.7 GMAC network.
    const auto logits = model->forward(ours.unsqueeze(0))[0];
    const float logit_diff = max_abs_diff(logits, fixture.at("logits/" + std::to_string(i)));
    EXPECT_LE(logit_diff, 1e-4f) << paths[i];
    std::printf("  %-24s mean |pixel diff| %.3g  max %.3g  max |logit diff| %.3g\n",
                paths[i].substr(paths[i].rfind('/') + 1).c_str(), mean_diff, max_diff, logit_diff);
  }
}
#endif

}  // namespace
}  // namespace alexnet
