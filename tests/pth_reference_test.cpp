// Every torch.save shape written by tests/make_pth_reference.py loads into the
// C++ AlexNet and gives torchvision's logits (max |difference| <= 1e-5).
#include "model/weights.h"
#include "tests/fixture.h"

#include <gtest/gtest.h>

#include <string>

namespace alexnet {
namespace {

constexpr double kLogitTolerance = 1e-5;  // max |C++ - torchvision| over all logits

std::string pth_path(const std::string& name) { return testing::reference_path("pth/" + name + ".pth"); }

const std::map<std::string, torch::Tensor>& fixture() {
  static const auto f = testing::read_fixture(testing::reference_path("pth/pth.bin"));
  return f;
}

class PthVariant : public ::testing::TestWithParam<std::string> {};

TEST_P(PthVariant, LogitsMatchTorchvision) {
  const std::string name = GetParam();
  AlexNet model = load_alexnet(pth_path(name));
  EXPECT_EQ(model->options().num_classes(), 10) << "classes detected from classifier.6.weight";
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model->forward(fixture().at("x"));  // (2, 10)
  const double diff = (logits - fixture().at("logits_" + name)).abs().max().item<double>();
  EXPECT_LE(diff, kLogitTolerance) << name << ": max |difference| " << diff;
}

INSTANTIATE_TEST_SUITE_P(AllShapes, PthVariant,
                         ::testing::Values("zip", "legacy", "train", "module", "compiled", "float16",
                                           "bfloat16", "float64", "shared"));

TEST(PthFormats, DetectedByContent) {
  EXPECT_EQ(WeightsFile(pth_path("zip")).format(), WeightFormat::kPthZip);
  EXPECT_EQ(WeightsFile(pth_path("legacy")).format(), WeightFormat::kPthLegacy);
  EXPECT_EQ(WeightsFile(pth_path("module")).format(), WeightFormat::kPthLegacy);
}

TEST(PthFormats, DtypeOfTheFileIsKept) {
  for (const auto& [name, type] : {std::pair<std::string, torch::ScalarType>{"float16", torch::kFloat16},
                                   {"bfloat16", torch::kBFloat16}, {"float64", torch::kFloat64}}) {
    for (const auto& [key, t] : WeightsFile(pth_path(name)).tensors()) EXPECT_EQ(t.scalar_type(), type) << key;
  }
}

TEST(PthFormats, NumClassesConflictIsRefused) {
  try {
    load_alexnet(pth_path("zip"), 1000);
    FAIL() << "10-class weights accepted for 1000 classes";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("have 10 classes but 1000"), std::string::npos)
        << e.what_without_backtrace();
  }
}

TEST(PthFormats, TrainingCheckpointTreeIsReadable) {
  const auto [format, c] = pth::read_weights(pth::read_file(pth_path("train")), pth_path("train"));
  EXPECT_EQ(format, WeightFormat::kPthZip);
  EXPECT_EQ(c.root.find("epoch")->as_int(), 3);
  const pth::Value& args = *c.root.find("args");
  EXPECT_EQ(args.type_name(), "argparse.Namespace");
  EXPECT_EQ(args.find("model")->as_string(), "alexnet");
  EXPECT_EQ(args.find("lr")->as_float(), 0.01);
  EXPECT_TRUE(args.find("weights")->is_none());
  EXPECT_EQ(args.find("lr_steps")->items()[1].as_int(), 22);
  const pth::Value& optimizer = *c.root.find("optimizer");
  const pth::Value& groups = *optimizer.find("param_groups");
  EXPECT_EQ(groups.items()[0].find("momentum")->as_float(), 0.9);
  EXPECT_EQ(groups.items()[0].find("params")->items().size(), 16u);
  const pth::Value* buffer = optimizer.find("state")->find(0)->find("momentum_buffer");
  ASSERT_NE(buffer, nullptr) << "optimizer state is keyed by parameter index (int)";
  EXPECT_EQ(to_tensor(buffer->as_tensor()).sizes(), torch::IntArrayRef({64, 3, 11, 11}));
  EXPECT_EQ(c.root.find("lr_scheduler")->find("step_size")->as_int(), 30);
}

}  // namespace
}  // namespace alexnet
