#include "data/labels.h"

#include <torch/torch.h>

#include <fstream>
#include <sstream>
#include <sys/stat.h>

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
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, path, ": no such labels file");
  TORCH_CHECK(S_ISREG(st.st_mode), path, ": labels file is not a regular file");
  std::ifstream in(path);
  TORCH_CHECK(in.good(), path, ": cannot open labels file");
  auto labels = split_lines(in);
  TORCH_CHECK(!labels.empty(), path, ": labels file holds no labels");
  return labels;
}

std::vector<std::string> load_labels(const std::string& spec) {
  if (spec == "imagenet") return imagenet_labels();
  return read_labels_file(spec);
}

}  // namespace alexnet::data
