// The int8 scales file (model/int8.h): Int8Scales as JSON, format
// "alexnet-int8-scales" version 1, and back, refusing anything else by path.
#include "model/int8.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <stdexcept>

namespace alexnet {

std::string int8_scales_json(const Int8Scales& s) {
  nlohmann::ordered_json j;
  j["format"] = "alexnet-int8-scales";
  j["version"] = 1;
  j["weights_sha256"] = s.weights_sha256;
  j["calibration"] = {{"data", s.data}, {"images", s.images}};
  j["input"] = {{"min", s.input.min}, {"max", s.input.max}};
  auto layers = nlohmann::ordered_json::array();
  for (const auto& [name, r] : s.layers) layers.push_back({{"name", name}, {"min", r.min}, {"max", r.max}});
  j["layers"] = layers;
  if (s.agreement.images > 0) {
    j["agreement"] = {{"images", s.agreement.images}, {"int8_top1", s.agreement.int8}};
    if (s.agreement.bf16 >= 0) j["agreement"]["bf16_top1"] = s.agreement.bf16;
  }
  return j.dump(2) + "\n";
}

Int8Scales parse_int8_scales(const std::string& text, const std::string& path) {
  const auto fail = [&](const std::string& why) -> void {
    throw std::invalid_argument(path + ": not an int8 scales file (" + why + ")");
  };
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail("not a JSON object");
  if (j.value("format", "") != "alexnet-int8-scales") fail("format is not alexnet-int8-scales");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int64_t>() != 1)
    fail("version is not 1");
  const auto range = [&](const nlohmann::json& o, const std::string& what) {
    if (!o.is_object() || !o.contains("min") || !o.contains("max") || !o["min"].is_number() ||
        !o["max"].is_number())
      fail(what + " needs numbers min and max");
    ActivationRange r{o["min"].get<double>(), o["max"].get<double>()};
    if (!std::isfinite(r.min) || !std::isfinite(r.max) || r.min > r.max) fail(what + ": bad range");
    return r;
  };
  Int8Scales s;
  if (j.contains("weights_sha256") && j["weights_sha256"].is_string()) s.weights_sha256 = j["weights_sha256"];
  if (j.contains("calibration") && j["calibration"].is_object()) {
    const auto& c = j["calibration"];
    if (c.contains("data") && c["data"].is_string()) s.data = c["data"];
    if (c.contains("images") && c["images"].is_number_integer()) s.images = c["images"];
  }
  if (j.contains("agreement")) {  // optional: files calibrated before it was measured lack it
    const auto& a = j["agreement"];
    const auto fraction = [&](const char* key) {
      if (!a[key].is_number() || !(a[key].get<double>() >= 0 && a[key].get<double>() <= 1))
        fail(std::string("agreement: ") + key + " is not a fraction");
      return a[key].get<double>();
    };
    if (!a.is_object() || !a.contains("images") || !a["images"].is_number_integer() ||
        a["images"].get<int64_t>() < 1 || !a.contains("int8_top1"))
      fail("agreement needs a positive images count and int8_top1");
    s.agreement.images = a["images"].get<int64_t>();
    s.agreement.int8 = fraction("int8_top1");
    if (a.contains("bf16_top1")) s.agreement.bf16 = fraction("bf16_top1");
  }
  if (!j.contains("input")) fail("no input range");
  s.input = range(j["input"], "input");
  if (!j.contains("layers") || !j["layers"].is_array()) fail("no layers");
  for (const auto& l : j["layers"]) {
    if (!l.is_object() || !l.contains("name") || !l["name"].is_string()) fail("a layer without a name");
    const std::string name = l["name"];
    s.layers.emplace_back(name, range(l, name));
  }
  return s;
}

}  // namespace alexnet
