#include "data/labels.h"

#include "data/file.h"

#include <torch/torch.h>

#include <sstream>

namespace alexnet::data {

extern const char* const kImageNetClassesText;  // generated from imagenet_classes.txt

namespace {

std::vector<std::string> split_lines(std::istream& in) {
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

}  // namespace

const std::vector<std::string>& imagenet_labels() {
  static const std::vector<std::string> labels = [] {
    std::istringstream in(kImageNetClassesText);
    return split_lines(in);
  }();
  return labels;
}

std::vector<std::string> read_labels_file(const std::string& path) {
  const std::vector<uint8_t> bytes = read_regular_file(path, kMaxTextFileBytes, "labels file");
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  auto labels = split_lines(in);
  TORCH_CHECK(!labels.empty(), path, ": labels file holds no labels");
  return labels;
}

std::vector<std::string> load_labels(const std::string& spec) {
  if (spec == "imagenet") return imagenet_labels();
  return read_labels_file(spec);
}

}  // namespace alexnet::data
