// Datasets: image folders (torchvision's ImageFolder), MNIST and Fashion-MNIST
// (IDX files), CIFAR-10/100 (binary version). Every dataset hands out 8-bit
// images as (H, W, C) uint8 tensors plus an integer label; transforms.h turns
// them into model inputs and loader.h batches them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace alexnet::data {

/// Which family a dataset belongs to; picks the default transform recipe.
enum class DatasetKind { kImageFolder, kMnist, kFashionMnist, kCifar10, kCifar100 };

/// Random access to labelled images. Implementations must allow concurrent
/// calls to load() and label() from several threads.
class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual DatasetKind kind() const = 0;
  /// Number of samples.
  virtual int64_t size() const = 0;
  /// Class names, indexed by label.
  virtual const std::vector<std::string>& class_names() const = 0;
  int64_t num_classes() const { return static_cast<int64_t>(class_names().size()); }
  /// Label of sample i, in [0, num_classes()).
  virtual int64_t label(int64_t i) const = 0;
  /// Channels load() returns: 1 for (Fashion-)MNIST, 3 otherwise.
  virtual int64_t channels() const = 0;
  /// Sample i as (H, W, channels()) uint8. Throws an error naming the file when
  /// it cannot be read or decoded.
  virtual torch::Tensor load(int64_t i) const = 0;
  /// What to call sample i in messages: its path, or "file[index]".
  virtual std::string name(int64_t i) const = 0;
  /// Where the data came from (a folder or file), for logs.
  virtual std::string description() const = 0;
};

/// torchvision's ImageFolder: classes are the sorted names of root's
/// subfolders (symlinks followed); each class's files are collected walking
/// its folder recursively, folders in sorted path order and files sorted
/// within each, keeping those whose extension (any case) is one of
/// kImageExtensions. Images are decoded on load() to RGB like PIL's
/// convert("RGB"). Throws when there is no class folder or a class has no image.
/// An entry that is not a regular file (a FIFO, a socket) is kept as a sample
/// whose load() throws naming it, like any unreadable image (data/file.h).
class ImageFolder : public Dataset {
 public:
  explicit ImageFolder(const std::string& root);

  DatasetKind kind() const override { return DatasetKind::kImageFolder; }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  const std::vector<std::string>& class_names() const override { return classes_; }
  int64_t label(int64_t i) const override;
  int64_t channels() const override { return 3; }
  torch::Tensor load(int64_t i) const override;
  std::string name(int64_t i) const override;
  std::string description() const override { return "image folder " + root_; }

  const std::string& root() const { return root_; }
  /// Path of sample i.
  const std::string& path(int64_t i) const;

 private:
  struct Sample {
    std::string path;
    int64_t label;
  };
  std::string root_;
  std::vector<std::string> classes_;
  std::vector<Sample> samples_;
};

/// torchvision's IMG_EXTENSIONS, lower case.
extern const std::vector<std::string> kImageExtensions;
/// Whether a file name ends in one of kImageExtensions, in any case (ImageFolder's test).
bool has_image_extension(const std::string& name);

/// A dataset held decoded in memory: images (N, H, W, C) uint8 and labels (N,) int64.
class TensorDataset : public Dataset {
 public:
  TensorDataset(DatasetKind kind, std::string description, torch::Tensor images,
                torch::Tensor labels, std::vector<std::string> class_names);

  DatasetKind kind() const override { return kind_; }
  int64_t size() const override { return images_.size(0); }
  const std::vector<std::string>& class_names() const override { return classes_; }
  int64_t label(int64_t i) const override;
  int64_t channels() const override { return images_.size(3); }
  torch::Tensor load(int64_t i) const override;
  std::string name(int64_t i) const override;
  std::string description() const override { return description_; }

  /// (N, H, W, C) uint8.
  const torch::Tensor& images() const { return images_; }
  /// (N,) int64.
  const torch::Tensor& labels() const { return labels_; }

 private:
  DatasetKind kind_;
  std::string description_;
  torch::Tensor images_;  // (N, H, W, C) uint8
  torch::Tensor labels_;  // (N,) int64
  const int64_t* label_ptr_ = nullptr;
  std::vector<std::string> classes_;
};

/// read_idx (data/idx_file.h) as a tensor: (N,) or (N, rows, cols) uint8,
/// holding the bytes read without a copy. Errors as read_idx's (DataError).
torch::Tensor read_idx_file(const std::string& path);

/// MNIST-style folder (train-images-idx3-ubyte[.gz] etc.; also accepts the
/// files under DIR/raw or DIR/<Name>/raw as torchvision lays them out).
/// split: "train", or "test"/"val" for the t10k files.
std::shared_ptr<TensorDataset> load_mnist(const std::string& dir, const std::string& split,
                                          DatasetKind kind);

/// CIFAR-10 (data_batch_1..5.bin / test_batch.bin) or CIFAR-100 (train.bin /
/// test.bin, fine labels) binary version, in dir or its cifar-10-batches-bin /
/// cifar-100-binary subfolder. Class names come from batches.meta.txt /
/// fine_label_names.txt when present as regular files. A batch file's size must
/// be a whole number of records, checked before it is read.
std::shared_ptr<TensorDataset> load_cifar(const std::string& dir, const std::string& split,
                                          DatasetKind kind);

/// Where `fashion-mnist` with no folder looks (Debian's dataset-fashion-mnist).
constexpr const char* kSystemFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Opens the dataset a --data spec names, for a split ("train", "val" or "test"):
///   DIR                   an image folder; when DIR holds train/ and val/ (or
///                         test/) subfolders they are the splits, otherwise DIR
///                         itself serves every split
///   fashion-mnist[:DIR]   Fashion-MNIST IDX files (default kSystemFashionMnistDir)
///   mnist:DIR             MNIST IDX files
///   cifar10:DIR           CIFAR-10 binary version
///   cifar100:DIR          CIFAR-100 binary version
std::shared_ptr<Dataset> open_dataset(const std::string& spec, const std::string& split);

/// Human-readable list of the spec forms above, for --help.
extern const char* const kDataSpecHelp;

}  // namespace alexnet::data
