// Class names: the ImageNet list built into the binary, or a text file.
#pragma once

#include <string>
#include <vector>

namespace alexnet::data {

/// The 1000 ImageNet-1k class names in torchvision's order (index = class id).
const std::vector<std::string>& imagenet_labels();

/// One label per non-empty line. Throws naming the file when it cannot be read
/// (not a regular file: data/file.h), is larger than kMaxTextFileBytes
/// or holds no labels.
std::vector<std::string> read_labels_file(const std::string& path);

/// "imagenet" for the built-in list, anything else is a file path.
std::vector<std::string> load_labels(const std::string& spec);

}  // namespace alexnet::data
