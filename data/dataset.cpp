#include "data/dataset.h"

#include "data/cifar_file.h"
#include "data/file.h"
#include "data/idx_file.h"

#ifdef ALEXNET_HAVE_OPENCV
#include "data/decode.h"
#endif

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

namespace alexnet::data {

const std::vector<std::string> kImageExtensions = {".jpg", ".jpeg", ".png", ".ppm", ".bmp",
                                                   ".pgm", ".tif",  ".tiff", ".webp"};

bool has_image_extension(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const auto& ext : kImageExtensions) {
    if (lower.size() >= ext.size() && lower.compare(lower.size() - ext.size(), ext.size(), ext) == 0)
      return true;
  }
  return false;
}

const char* const kDataSpecHelp =
    "DIR (image folder, with train/ and val/ subfolders or one folder for all splits), "
    "fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR";

namespace {

// ---------------------------------------------------------------- file system

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);  // follows symlinks
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Something other than a folder is there: a file, or a FIFO or device that
// the readers then refuse by name rather than report missing.
bool is_non_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// Entries of a folder split like os.scandir + entry.is_dir(): directories
// (symlinks followed) and everything else. "." and ".." excluded.
struct Listing {
  std::vector<std::string> dirs;
  std::vector<std::string> files;
};

Listing list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  TORCH_CHECK(d != nullptr, "image folder ", dir, ": cannot list (", std::strerror(errno), ")");
  Listing out;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    (is_dir(join(dir, name)) ? out.dirs : out.files).push_back(name);
  }
  ::closedir(d);
  return out;
}


// os.walk(top, followlinks=True): (folder, file names) for top and every folder
// below it. A symlink cycle would make Python recurse until the path is too
// long; here a folder already visited (same device and inode) is skipped.
void walk(const std::string& top, std::set<std::pair<dev_t, ino_t>>& seen,
          std::vector<std::pair<std::string, std::vector<std::string>>>& out) {
  struct stat st {};
  if (::stat(top.c_str(), &st) != 0) return;
  if (!seen.insert({st.st_dev, st.st_ino}).second) return;
  Listing listing = list_dir(top);
  out.emplace_back(top, std::move(listing.files));
  for (const auto& sub : listing.dirs) walk(join(top, sub), seen, out);
}

// --------------------------------------------------------------- binary files

std::vector<std::string> read_lines(const std::string& path) {
  const std::vector<uint8_t> bytes = read_regular_file(path, kMaxTextFileBytes, "class names file");
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// ------------------------------------------------------------------- names

// torchvision.datasets.MNIST.classes / FashionMNIST.classes / CIFAR10 / CIFAR100 meta.
const std::vector<std::string> kMnistClasses = {
    "0 - zero", "1 - one", "2 - two",   "3 - three", "4 - four",
    "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"};
const std::vector<std::string> kFashionMnistClasses = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
const std::vector<std::string> kCifar10Classes = {"airplane", "automobile", "bird",  "cat",
                                                  "deer",     "dog",        "frog",  "horse",
                                                  "ship",     "truck"};
const std::vector<std::string> kCifar100Classes = {
    "apple",        "aquarium_fish", "baby",       "bear",       "beaver",      "bed",
    "bee",          "beetle",        "bicycle",    "bottle",     "bowl",        "boy",
    "bridge",       "bus",           "butterfly",  "camel",      "can",         "castle",
    "caterpillar",  "cattle",        "chair",      "chimpanzee", "clock",       "cloud",
    "cockroach",    "couch",         "crab",       "crocodile",  "cup",         "dinosaur",
    "dolphin",      "elephant",      "flatfish",   "forest",     "fox",         "girl",
    "hamster",      "house",         "kangaroo",   "keyboard",   "lamp",        "lawn_mower",
    "leopard",      "lion",          "lizard",     "lobster",    "man",         "maple_tree",
    "motorcycle",   "mountain",      "mouse",      "mushroom",   "oak_tree",    "orange",
    "orchid",       "otter",         "palm_tree",  "pear",       "pickup_truck", "pine_tree",
    "plain",        "plate",         "poppy",      "porcupine",  "possum",      "rabbit",
    "raccoon",      "ray",           "road",       "rocket",     "rose",        "sea",
    "seal",         "shark",         "shrew",      "skunk",      "skyscraper",  "snail",
    "snake",        "spider",        "squirrel",   "streetcar",  "sunflower",   "sweet_pepper",
    "table",        "tank",          "telephone",  "television", "tiger",       "tractor",
    "train",        "trout",         "tulip",      "turtle",     "wardrobe",    "whale",
    "willow_tree",  "wolf",          "woman",      "worm"};

std::string kind_name(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kImageFolder: return "image folder";
    case DatasetKind::kMnist: return "mnist";
    case DatasetKind::kFashionMnist: return "fashion-mnist";
    case DatasetKind::kCifar10: return "cifar10";
    case DatasetKind::kCifar100: return "cifar100";
  }
  return "dataset";
}

void check_split(const std::string& split) {
  TORCH_CHECK(split == "train" || split == "val" || split == "test", "dataset: unknown split '",
              split, "' (expected train, val or test)");
}

// The first of dir, dir/sub1, dir/sub2, ... that holds `file`; empty if none.
std::string find_holder(const std::string& dir, const std::vector<std::string>& subs,
                        const std::vector<std::string>& files) {
  std::vector<std::string> candidates = {dir};
  for (const auto& s : subs) candidates.push_back(join(dir, s));
  for (const auto& c : candidates)
    for (const auto& f : files)
      if (is_non_dir(join(c, f))) return c;
  return "";
}

}  // namespace

// ------------------------------------------------------------------ ImageFolder

ImageFolder::ImageFolder(const std::string& root) : root_(root) {
  TORCH_CHECK(is_dir(root_), "image folder ", root_, ": no such folder");
  // torchvision's find_classes: sorted names of the subfolders.
  classes_ = list_dir(root_).dirs;
  std::sort(classes_.begin(), classes_.end());
  TORCH_CHECK(!classes_.empty(), "image folder ", root_,
              ": no class folders (expected one subfolder of images per class)");

  // torchvision's make_dataset: for each class, sorted(os.walk(class_dir)) orders
  // folders by their full path; files are sorted within each folder.
  std::vector<std::string> empty;
  for (size_t c = 0; c < classes_.size(); ++c) {
    const std::string class_dir = join(root_, classes_[c]);
    std::set<std::pair<dev_t, ino_t>> seen;
    std::vector<std::pair<std::string, std::vector<std::string>>> folders;
    walk(class_dir, seen, folders);
    std::sort(folders.begin(), folders.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    const size_t before = samples_.size();
    for (auto& [folder, files] : folders) {
      std::sort(files.begin(), files.end());
      for (const auto& f : files)
        if (has_image_extension(f)) samples_.push_back({join(folder, f), static_cast<int64_t>(c)});
    }
    if (samples_.size() == before) empty.push_back(class_dir);
  }
  if (!empty.empty()) {
    std::string list;
    for (const auto& e : empty) list += (list.empty() ? "" : ", ") + e;
    std::string exts;
    for (const auto& e : kImageExtensions) exts += (exts.empty() ? "" : " ") + e;
    TORCH_CHECK(false, "image folder ", root_, ": no image in class folder(s) ", list,
                " (extensions: ", exts, ")");
  }
}

int64_t ImageFolder::label(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < size(), "image folder ", root_, ": index ", i, " out of range");
  return samples_[i].label;
}

const std::string& ImageFolder::path(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < size(), "image folder ", root_, ": index ", i, " out of range");
  return samples_[i].path;
}

std::string ImageFolder::name(int64_t i) const { return path(i); }

torch::Tensor ImageFolder::load(int64_t i) const {
#ifdef ALEXNET_HAVE_OPENCV
  return decode_image_file(path(i));  // (H, W, 3) uint8
#else
  TORCH_CHECK(false, path(i), ": this build has no image decoding (configure with OpenCV)");
#endif
}

// ----------------------------------------------------------------- TensorDataset

TensorDataset::TensorDataset(DatasetKind kind, std::string description, torch::Tensor images,
                             torch::Tensor labels, std::vector<std::string> class_names)
    : kind_(kind),
      description_(std::move(description)),
      images_(images.contiguous()),
      labels_(labels.to(torch::kInt64).contiguous()),
      classes_(std::move(class_names)) {
  TORCH_CHECK(images_.dim() == 4 && images_.scalar_type() == torch::kUInt8, description_,
              ": expected (N, H, W, C) uint8 images, got ", images_.sizes());
  TORCH_CHECK(labels_.dim() == 1 && labels_.size(0) == images_.size(0), description_, ": ",
              images_.size(0), " images but ", labels_.numel(), " labels");
  TORCH_CHECK(images_.size(0) > 0, description_, ": no samples");
  label_ptr_ = labels_.data_ptr<int64_t>();
  const int64_t max_label = labels_.max().item<int64_t>();
  const int64_t min_label = labels_.min().item<int64_t>();
  TORCH_CHECK(min_label >= 0 && max_label < num_classes(), description_, ": label ",
              min_label < 0 ? min_label : max_label, " outside [0, ", num_classes(), ")");
}

int64_t TensorDataset::label(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < size(), description_, ": index ", i, " out of range");
  return label_ptr_[i];
}

torch::Tensor TensorDataset::load(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < size(), description_, ": index ", i, " out of range");
  return images_[i];  // (H, W, C) view, no copy
}

std::string TensorDataset::name(int64_t i) const {
  return description_ + "[" + std::to_string(i) + "]";
}

// -------------------------------------------------------------------- IDX files

torch::Tensor read_idx_file(const std::string& path) {
  IdxData idx = read_idx(path);
  if (idx.bytes.empty()) return torch::empty(idx.sizes, torch::kUInt8);
  // The tensor takes the bytes over: no copy.
  auto owned = std::make_unique<std::vector<uint8_t>>(std::move(idx.bytes));
  std::vector<uint8_t>* bytes = owned.get();
  torch::Tensor out = torch::from_blob(
      bytes->data(), idx.sizes, [bytes](void*) { delete bytes; }, torch::kUInt8);
  owned.release();  // the tensor's storage deletes it
  return out;
}

std::shared_ptr<TensorDataset> load_mnist(const std::string& dir, const std::string& split,
                                          DatasetKind kind) {
  check_split(split);
  TORCH_CHECK(kind == DatasetKind::kMnist || kind == DatasetKind::kFashionMnist,
              "load_mnist: not an MNIST kind");
  const std::string name = kind_name(kind);
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string images_file = prefix + "-images-idx3-ubyte";
  const std::string labels_file = prefix + "-labels-idx1-ubyte";
  // torchvision downloads into ROOT/MNIST/raw or ROOT/FashionMNIST/raw.
  const std::string holder =
      find_holder(dir, {"raw", "MNIST/raw", "FashionMNIST/raw"}, {images_file, images_file + ".gz"});
  if (holder.empty()) {
    const bool system = kind == DatasetKind::kFashionMnist && dir == kSystemFashionMnistDir;
    TORCH_CHECK(false, name, ": no ", images_file, "[.gz] in ", dir,
                system ? " (install Debian's dataset-fashion-mnist package)" : "");
  }
  auto pick = [&](const std::string& file) {
    const std::string plain = join(holder, file);
    return is_non_dir(plain) ? plain : plain + ".gz";
  };
  const std::string images_path = pick(images_file);
  const std::string labels_path = pick(labels_file);
  torch::Tensor images = read_idx_file(images_path);  // (N, 28, 28) uint8
  torch::Tensor labels = read_idx_file(labels_path);  // (N,) uint8
  TORCH_CHECK(images.dim() == 3, images_path, ": expected an images file (3 dimensions), got ",
              images.dim());
  TORCH_CHECK(labels.dim() == 1, labels_path, ": expected a labels file (1 dimension), got ",
              labels.dim());
  TORCH_CHECK(images.size(0) == labels.size(0), images_path, " has ", images.size(0),
              " images but ", labels_path, " has ", labels.size(0), " labels");
  TORCH_CHECK(labels.numel() == 0 || labels.max().item<int64_t>() < 10, labels_path,
              ": label ", labels.max().item<int64_t>(), " outside [0, 10)");
  return std::make_shared<TensorDataset>(
      kind, name + " " + split + " (" + images_path + ")", images.unsqueeze(3), labels,
      kind == DatasetKind::kMnist ? kMnistClasses : kFashionMnistClasses);
}

// -------------------------------------------------------------------- CIFAR

std::shared_ptr<TensorDataset> load_cifar(const std::string& dir, const std::string& split,
                                          DatasetKind kind) {
  check_split(split);
  TORCH_CHECK(kind == DatasetKind::kCifar10 || kind == DatasetKind::kCifar100,
              "load_cifar: not a CIFAR kind");
  const bool c100 = kind == DatasetKind::kCifar100;
  const std::string name = kind_name(kind);
  std::vector<std::string> files;
  if (c100) {
    files = {split == "train" ? "train.bin" : "test.bin"};
  } else if (split == "train") {
    for (int b = 1; b <= 5; ++b) files.push_back("data_batch_" + std::to_string(b) + ".bin");
  } else {
    files = {"test_batch.bin"};
  }
  const std::string holder =
      find_holder(dir, {c100 ? "cifar-100-binary" : "cifar-10-batches-bin"}, {files[0]});
  TORCH_CHECK(!holder.empty(), name, ": no ", files[0], " in ", dir, " or its ",
              c100 ? "cifar-100-binary" : "cifar-10-batches-bin",
              " folder (expected the CIFAR binary version)");

  const CifarFormat& format = c100 ? kCifar100Format : kCifar10Format;
  std::vector<std::vector<uint8_t>> contents;
  int64_t total = 0;
  for (const auto& f : files) {
    contents.push_back(read_cifar_batch(join(holder, f), format));
    total += static_cast<int64_t>(contents.back().size()) / format.record_bytes();
  }
  torch::Tensor planar = torch::empty({total, 3, 32, 32}, torch::kUInt8);  // (N, 3, 32, 32)
  torch::Tensor labels = torch::empty({total}, torch::kInt64);
  uint8_t* img = planar.data_ptr<uint8_t>();
  int64_t* lab = labels.data_ptr<int64_t>();
  int64_t n = 0;
  for (const std::vector<uint8_t>& bytes : contents) {
    for (size_t at = 0; at < bytes.size(); at += format.record_bytes(), ++n) {
      lab[n] = bytes[at + format.label_bytes - 1];  // CIFAR-100: coarse, then fine
      std::memcpy(img + n * kCifarImageBytes, bytes.data() + at + format.label_bytes,
                  kCifarImageBytes);
    }
  }
  std::vector<std::string> classes = c100 ? kCifar100Classes : kCifar10Classes;
  const std::string names_file = join(holder, c100 ? "fine_label_names.txt" : "batches.meta.txt");
  if (is_file(names_file)) {
    std::vector<std::string> lines = read_lines(names_file);
    if (static_cast<int64_t>(lines.size()) == format.num_classes) classes = std::move(lines);
  }
  return std::make_shared<TensorDataset>(
      kind, name + " " + split + " (" + holder + ")",
      planar.permute({0, 2, 3, 1}).contiguous(), labels, std::move(classes));
}

// ---------------------------------------------------------------- open_dataset

std::shared_ptr<Dataset> open_dataset(const std::string& spec, const std::string& split) {
  check_split(split);
  TORCH_CHECK(!spec.empty(), "dataset: empty --data spec (expected ", kDataSpecHelp, ")");
  const auto colon = spec.find(':');
  const std::string scheme = colon == std::string::npos ? spec : spec.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  auto need_dir = [&](const std::string& what) {
    TORCH_CHECK(!arg.empty(), "dataset: ", what, " needs a folder: ", what, ":DIR");
    return arg;
  };
  if (scheme == "fashion-mnist")
    return load_mnist(arg.empty() ? kSystemFashionMnistDir : arg, split, DatasetKind::kFashionMnist);
  if (scheme == "mnist") return load_mnist(need_dir("mnist"), split, DatasetKind::kMnist);
  if (scheme == "cifar10") return load_cifar(need_dir("cifar10"), split, DatasetKind::kCifar10);
  if (scheme == "cifar100") return load_cifar(need_dir("cifar100"), split, DatasetKind::kCifar100);

  TORCH_CHECK(is_dir(spec), "dataset: ", spec, " is neither a folder nor one of ", kDataSpecHelp);
  if (!is_dir(join(spec, "train"))) return std::make_shared<ImageFolder>(spec);
  if (split == "train") return std::make_shared<ImageFolder>(join(spec, "train"));
  // Evaluation prefers the split asked for, then the other held-out one.
  const std::string first = join(spec, split);
  const std::string second = join(spec, split == "val" ? "test" : "val");
  if (is_dir(first)) return std::make_shared<ImageFolder>(first);
  TORCH_CHECK(is_dir(second), "dataset: ", spec, " has a train/ folder but no val/ or test/ folder");
  return std::make_shared<ImageFolder>(second);
}

}  // namespace alexnet::data
