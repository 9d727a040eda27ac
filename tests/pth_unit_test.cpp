// The checkpoint reader and writer without Python: round trips through our own
// writer, the committed fuzz seeds, and hostile inputs (truncated, corrupted,
// random, crafted). Every comparison is exact (bit-identical) unless stated.
#include "model/pth/checkpoint_io.h"
#include "model/pth/safetensors.h"
#include "model/pth/unpickler.h"
#include "model/weights.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

namespace alexnet {
namespace {

using pth::Value;

// A folder of this process's own, removed with everything in it when the process exits: ctest
// runs each test as a process of its own, and a checkpoint left behind by each fills the disk.
std::string temp_dir() {
  struct Dir {
    std::string path;
    Dir() {
      std::string d = ::testing::TempDir() + "pth_unit_XXXXXX";
      if (::mkdtemp(d.data()) == nullptr) throw std::runtime_error("mkdtemp " + d + " failed");
      path = d;
    }
    ~Dir() { std::filesystem::remove_all(path); }
  };
  static Dir dir;
  return dir.path;
}

// The seeds tests/fuzz/make_corpus.py writes for a fuzz target.
std::string corpus_dir(const std::string& target = "pth") { return std::string(ALEXNET_CORPUS_DIR) + "/" + target; }

// A target's valid seeds, or with `attacks` its attack_* ones (each of which some check must refuse).
std::vector<std::string> corpus_files(bool attacks = false, const std::string& target = "pth") {
  std::vector<std::string> files;
  const std::string dir = corpus_dir(target);
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name[0] != '.' && (name.rfind("attack_", 0) == 0) == attacks) files.push_back(dir + "/" + name);
    }
    ::closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Parses bytes; returns "" on success or the FormatError message. Anything else fails the test.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    pth::read_weights({nullptr, bytes.data(), bytes.size()}, "mem");
    return "";
  } catch (const pth::FormatError& e) {
    return e.what();
  }
}

// A string literal with its embedded NUL bytes.
template <size_t N>
std::string bytes(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

std::string unpickle_error(const std::string& pickle) {
  const pth::StorageLoader load = [](const pth::PersistentId& id) {
    auto s = std::make_shared<pth::Storage>();
    s->key = id.key;
    s->dtype = id.dtype;
    s->numel = id.numel;
    return std::shared_ptr<const pth::Storage>(s);
  };
  try {
    pth::unpickle(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), load, "mem");
    return "";
  } catch (const pth::FormatError& e) {
    return e.what();
  }
}

TEST(PthWriter, ValueTreeRoundTripsExactly) {
  const torch::Tensor flat = torch::arange(24, torch::kFloat32);  // one storage, three views
  Value root = Value::dict("dict");
  Value model = Value::dict("collections.OrderedDict");
  model.set(Value::string("a"), tensor_value(flat.slice(0, 2, 8)));
  model.set(Value::string("b"), tensor_value(flat.view({4, 6}).t()));
  model.set(Value::string("half"), tensor_value(torch::randn({3, 5}).to(torch::kFloat16)));
  model.set(Value::string("long"), tensor_value(torch::tensor({int64_t{-5}, int64_t{1} << 40})));
  root.set(Value::string("model"), model);
  Value state = Value::dict();
  state.set(Value::integer(0), Value::dict("dict", {{Value::string("step"), Value::integer(7)}}));
  root.set(Value::string("optimizer"), state);
  Value args = Value::dict("argparse.Namespace");
  args.set(Value::string("lr"), Value::floating(0.1));
  args.set(Value::string("resume"), Value::none());
  args.set(Value::string("steps"), Value::list({Value::integer(-1), Value::integer(70000),
                                                Value::integer(-(1LL << 62))}));
  root.set(Value::string("args"), args);
  root.set(Value::string("pair"), Value::tuple({Value::boolean(true), Value::string("x")}));

  const std::string path = temp_dir() + "/tree.pth";
  pth::write_checkpoint(path, root);
  const auto [format, back] = pth::read_weights(pth::read_file(path), path);
  ASSERT_EQ(format, WeightFormat::kPthZip);
  const Value& m = *back.root.find("model");
  EXPECT_EQ(m.type_name(), "collections.OrderedDict");
  EXPECT_TRUE(torch::equal(to_tensor(m.find("a")->as_tensor()), flat.slice(0, 2, 8)));
  EXPECT_TRUE(torch::equal(to_tensor(m.find("b")->as_tensor()), flat.view({4, 6}).t()));
  EXPECT_EQ(m.find("a")->as_tensor().storage.get(), m.find("b")->as_tensor().storage.get())
      << "views of one storage must stay one storage";
  EXPECT_EQ(to_tensor(m.find("half")->as_tensor()).scalar_type(), torch::kFloat16);
  EXPECT_EQ(to_tensor(m.find("long")->as_tensor())[1].item<int64_t>(), 1LL << 40);
  EXPECT_EQ(back.root.find("optimizer")->find(0)->find("step")->as_int(), 7);
  const Value& a = *back.root.find("args");
  EXPECT_EQ(a.type_name(), "argparse.Namespace");
  EXPECT_EQ(a.find("lr")->as_float(), 0.1);
  EXPECT_TRUE(a.find("resume")->is_none());
  EXPECT_EQ(a.find("steps")->items()[2].as_int(), -(1LL << 62));
  EXPECT_TRUE(back.root.find("pair")->items()[0].as_bool());
}

TEST(PthWriter, AlexNetStateDictRoundTripsThroughLoadAlexnet) {
  AlexNet model(AlexNetOptions().num_classes(10));
  const std::string path = temp_dir() + "/alexnet10.pth";
  save_state_dict(state_dict(*model), path);
  AlexNet loaded = load_alexnet(path);
  EXPECT_EQ(loaded->options().num_classes(), 10);
  const auto want = state_dict(*model);
  const auto got = state_dict(*loaded);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(torch::equal(want[i].second, got[i].second)) << want[i].first << " (exact)";
  EXPECT_EQ(WeightsFile(path).format(), WeightFormat::kPthZip);
}

TEST(PthWriter, ClassNamesTravelInEveryFormat) {
  AlexNet model(AlexNetOptions().num_classes(3));
  const std::vector<std::string> names = {"cat", "dog \"big\"", "\xc3\xa9t\xc3\xa9"};  // quotes, UTF-8
  const std::string pth = temp_dir() + "/named.pth", pt = temp_dir() + "/named.pt",
                    st = temp_dir() + "/named.safetensors";
  InputTransform transform;
  transform.resize_size = 72;
  transform.crop_size = 64;
  transform.mean = {0.2860000014305115, 0.25, -1.5};
  transform.std = {0.353, 1e-3, 7};
  const WeightsInfo info{names, transform};
  save_state_dict(state_dict(*model), pth, info);
  save_torchscript(state_dict(*model), pt, info);
  save_safetensors(state_dict(*model), st, info);
  for (const auto& path : {pth, pt, st}) {
    EXPECT_EQ(WeightsFile(path).class_names(), names) << path;
    EXPECT_TRUE(WeightsFile(path).input_transform() == transform) << path << " (exact)";
  }
  // The names sit in the state_dict's attributes, never among its tensors.
  const WeightsFile file(pth);
  EXPECT_EQ(file.entries().size(), state_dict(*model).size());
  EXPECT_EQ(file.root().attributes()->find("_metadata")->find("")->find("version")->as_int(), 1);
  // Without names, no attributes and no extra file: nothing to read back.
  save_state_dict(state_dict(*model), pth);
  save_torchscript(state_dict(*model), pt);
  EXPECT_EQ(WeightsFile(pth).root().attributes(), nullptr);
  for (const auto& path : {pth, pt}) {
    EXPECT_TRUE(WeightsFile(path).class_names().empty()) << path;
    EXPECT_FALSE(WeightsFile(path).input_transform().has_value()) << path;
  }
  // A count that is not the number of classes is refused when writing.
  EXPECT_THROW(save_state_dict(state_dict(*model), pth, WeightsInfo{{"one"}, std::nullopt}), c10::Error);
  // A malformed transform is an error naming the file, not a crash.
  EXPECT_THROW(InputTransform::from_json("{\"resize_size\": 0}", "x"), c10::Error);
  EXPECT_THROW(InputTransform::from_json("[1, 2]", "x"), c10::Error);
  EXPECT_THROW(InputTransform::from_json("not json", "x"), c10::Error);
}

TEST(PthWriter, FailedWriteLeavesExistingFileAndNoTemporary) {
  const std::string path = temp_dir() + "/keep.pth";
  std::ofstream(path) << "old contents";
  EXPECT_THROW(pth::write_atomically(path, [](int) { throw pth::FormatError("boom"); }), pth::FormatError);
  std::ifstream in(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "old contents");
  int leftovers = 0;
  DIR* d = ::opendir(temp_dir().c_str());
  while (dirent* e = ::readdir(d)) leftovers += std::string(e->d_name).find(".tmp-") != std::string::npos;
  ::closedir(d);
  EXPECT_EQ(leftovers, 0);
  try {
    pth::write_checkpoint("/nonexistent-dir/x.pth", Value::none());
    FAIL() << "writing into a missing directory must fail";
  } catch (const pth::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.pth: "), std::string::npos) << e.what();
  }
}

TEST(PthReader, CorpusSeedsParse) {
  const auto files = corpus_files();
  ASSERT_GE(files.size(), 12u) << "seed corpus missing under " << corpus_dir();
  for (const auto& f : files) {
    EXPECT_EQ(parse_error(slurp(f)), "") << f;
    EXPECT_NO_THROW(pth::read_weights(pth::map_file(f), f)) << f;
  }
}

TEST(PthReader, AttackSeedsAreRefused) {
  // The reader refuses what it can see in the file's structure; a view that reads
  // one element for many (stride 0, overlapping rows) is refused by WeightsFile.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"attack_duplicate_key.pth", "'classifier.6.bias' appears twice in one dict"},
      {"attack_duplicate_key_legacy.pth", "'classifier.6.bias' appears twice in one dict"},
      {"attack_zip_alias.pth", "overlap"},
      {"attack_setstate.pt", "has a custom state"},
      {"attack_stride0.pth", ""},
      {"attack_overlap_view.pth", ""}};
  ASSERT_EQ(corpus_files(/*attacks=*/true).size(), cases.size()) << "an attack seed without a case here";
  for (const auto& [name, error] : cases) {
    const std::string path = corpus_dir() + "/" + name;
    const std::string got = parse_error(slurp(path));
    if (!error.empty()) {
      EXPECT_NE(got.find(error), std::string::npos) << name << ": " << got;
      continue;
    }
    EXPECT_EQ(got, "") << name;
    try {
      WeightsFile file(path);
      ADD_FAILURE() << name << " accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find("is a view whose elements overlap"), std::string::npos)
          << e.what_without_backtrace();
    }
  }
}

// Returns "" on success or the FormatError message; the seeds in any other state fail the test.
std::string safetensors_error(const std::vector<uint8_t>& bytes) {
  try {
    pth::parse_safetensors(bytes.data(), bytes.size(), nullptr, "mem");
    return "";
  } catch (const pth::FormatError& e) {
    return e.what();
  }
}

TEST(SafetensorsReader, FuzzSeedsReadOrAreRefused) {
  const auto valid = corpus_files(/*attacks=*/false, "safetensors");
  const auto attacks = corpus_files(/*attacks=*/true, "safetensors");
  ASSERT_GE(valid.size(), 3u) << "seed corpus missing under " << corpus_dir("safetensors");
  ASSERT_GE(attacks.size(), 18u);
  for (const auto& f : valid) EXPECT_EQ(safetensors_error(slurp(f)), "") << f;
  for (const auto& f : attacks) {
    const std::string error = safetensors_error(slurp(f));
    EXPECT_EQ(error.rfind("mem: safetensors: ", 0), 0u) << f << ": " << error;
  }
  const auto bytes = slurp(corpus_dir("safetensors") + "/valid.safetensors");
  const auto file = pth::parse_safetensors(bytes.data(), bytes.size(), nullptr, "mem");
  EXPECT_EQ(file.tensors.entries().size(), 6u);  // six dtypes
  EXPECT_EQ(file.metadata.size(), 2u);
}

// What the reader accepts, the writer writes back unchanged; tensors of no elements
// (shapes [0, 3] and [0, 0], whose row-major strides torch leaves at 1) included.
TEST(SafetensorsReader, ValidSeedsWriteBackTheSame) {
  for (const auto& f : corpus_files(/*attacks=*/false, "safetensors")) {
    const auto bytes = slurp(f);
    const auto file = pth::parse_safetensors(bytes.data(), bytes.size(), nullptr, "mem");
    std::vector<pth::NamedRecord> records;
    for (const auto& [name, tensor] : file.tensors.entries()) records.emplace_back(name.as_string(), tensor.as_tensor());
    const std::string path = temp_dir() + "/again.safetensors";
    ASSERT_NO_THROW(pth::write_safetensors(path, records, file.metadata)) << f;
    const auto again = slurp(path);
    const auto back = pth::parse_safetensors(again.data(), again.size(), nullptr, "again");
    ASSERT_EQ(back.tensors.entries().size(), records.size()) << f;
    for (const auto& [name, tensor] : back.tensors.entries()) {
      const auto same = std::find_if(records.begin(), records.end(),
                                     [&](const pth::NamedRecord& r) { return r.first == name.as_string(); });
      ASSERT_NE(same, records.end()) << f << ": " << name.as_string();
      EXPECT_EQ(tensor.as_tensor().sizes, same->second.sizes) << f << ": " << name.as_string();
      ASSERT_EQ(tensor.as_tensor().dtype(), same->second.dtype()) << f << ": " << name.as_string();
      const auto bytes_of = [](const pth::TensorRecord& r) {
        const size_t size = pth::element_size(r.dtype());
        const uint8_t* begin = r.storage->data + r.offset * size;
        return std::vector<uint8_t>(begin, begin + r.numel() * size);
      };
      EXPECT_EQ(bytes_of(tensor.as_tensor()), bytes_of(same->second)) << f << ": " << name.as_string();
    }
  }
}

// .pt2 (torch.export.save): every seed is read or refused by the .pt2 reader; the valid one
// reads back as written by tests/fuzz/make_corpus.py (exact values).
TEST(Pt2Reader, FuzzSeedsReadOrAreRefused) {
  const auto valid = corpus_files(/*attacks=*/false, "pt2");
  const auto attacks = corpus_files(/*attacks=*/true, "pt2");
  ASSERT_GE(valid.size(), 2u) << "seed corpus missing under " << corpus_dir("pt2");
  ASSERT_GE(attacks.size(), 13u);
  for (const auto& f : valid) {
    EXPECT_EQ(parse_error(slurp(f)), "") << f;
    EXPECT_EQ(pth::read_weights(pth::map_file(f), f).first, WeightFormat::kPt2) << f;
  }
  for (const auto& f : attacks) {
    const std::string error = parse_error(slurp(f));
    EXPECT_EQ(error.rfind("mem: pt2: ", 0), 0u) << f << ": " << error;
  }
  const std::string path = corpus_dir("pt2") + "/valid.pt2";
  const auto [format, contents] = pth::read_weights(pth::map_file(path), path);
  ASSERT_EQ(contents.records.size(), 4u);
  const std::vector<std::string> names = {"w", "b", "c", "n"};  // the config's order
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(contents.records[i].first, names[i]);
  const torch::Tensor all = torch::tensor({0.5f, -1.0f, 2.0f, 3.5f, -4.25f, 8.0f});
  EXPECT_TRUE(torch::equal(to_tensor(*contents.records[0].second), all.view({2, 3})));
  EXPECT_TRUE(torch::equal(to_tensor(*contents.records[1].second), all.slice(0, 3)));
  EXPECT_TRUE(torch::equal(to_tensor(*contents.records[2].second), all.slice(0, 0, 6, 2)));
  EXPECT_EQ(contents.records[1].second->storage.get(), contents.records[2].second->storage.get())
      << "entries naming one record share one storage";
  EXPECT_TRUE(torch::equal(to_tensor(*contents.records[3].second), torch::tensor({int64_t{7}, -(int64_t{1} << 40)})));
  ASSERT_TRUE(contents.class_names.has_value());
  EXPECT_EQ(*contents.class_names, (std::vector<std::string>{"x", "y"}));
}

TEST(PthReader, TruncatedAtEveryOffsetFailsCleanly) {
  const auto start = std::chrono::steady_clock::now();
  for (const auto& f : corpus_files()) {
    const auto bytes = slurp(f);
    for (size_t n = 0; n < bytes.size(); ++n) {
      const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
      EXPECT_NE(parse_error(cut), "") << f << " truncated to " << n << " bytes parsed";
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 30.0) << "tolerance: 30 s for all truncations of all seeds";
}

TEST(PthReader, CorruptedBytesNeverCrash) {
  std::mt19937 rng(0);
  int rejected = 0, total = 0;
  for (const auto& f : corpus_files()) {
    const auto bytes = slurp(f);
    for (size_t i = 0; i < bytes.size(); ++i) {
      auto bad = bytes;
      bad[i] ^= static_cast<uint8_t>(1 + rng() % 255);
      rejected += parse_error(bad) != "";  // accepted is fine when the byte was not significant
      ++total;
    }
  }
  EXPECT_GT(rejected, total / 4) << "most single-byte corruptions should be detected (CRC, structure)";
}

TEST(PthReader, RandomAndEmptyInputsFailCleanly) {
  std::mt19937 rng(1);
  EXPECT_NE(parse_error({}).find("empty"), std::string::npos);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> bytes(rng() % 512);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    if (i % 3 == 1 && bytes.size() >= 4) bytes[0] = 'P', bytes[1] = 'K', bytes[2] = 3, bytes[3] = 4;
    const std::string error = parse_error(bytes);
    EXPECT_NE(error, "") << "random input " << i << " parsed";
    EXPECT_EQ(error.rfind("mem: ", 0), 0u) << error;
  }
}

TEST(PthReader, CraftedPicklesGiveNamedErrors) {
  const std::string proto = "\x80\x02";
  EXPECT_NE(unpickle_error(proto + "cos\nsystem\n.").find("unsupported global 'os.system'"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "\xff.").find("unsupported opcode 0xff"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + std::string(100000, ']') + std::string(99999, 'a') + ".").find("nesting deeper"),
            std::string::npos);
  EXPECT_NE(unpickle_error(proto + bytes("]q\x00h\x00" "a.")).find("nesting deeper"), std::string::npos)  // a cycle
      << "a list containing itself";
  // 64 tuples each holding the previous one twice: 2^64 values if expanded.
  std::string dag = proto + "]";
  for (int i = 0; i < 64; ++i) dag += "2\x86";
  EXPECT_NE(unpickle_error(dag + ".").find("limit"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "X\xff\xff\xff\x7f" "abc.").find("truncated"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "h\x05.").find("never stored"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "a.").find("underflow"), std::string::npos);

  // _rebuild_tensor_v2(storage of 4 floats, offset, size, stride, False, OrderedDict())
  auto tensor = [&](const std::string& offset_size_stride) {
    return proto + bytes("ctorch._utils\n_rebuild_tensor_v2\n((X\x07\0\0\0storagectorch\nFloatStorage\nX\x01\0\0\0" "0X\x03\0\0\0cpuK\x04tQ") +
           offset_size_stride + "\x89" "ccollections\nOrderedDict\n)Rt" "R.";
  };
  EXPECT_EQ(unpickle_error(tensor(bytes("K\x00K\x04\x85K\x01\x85"))), "");
  EXPECT_NE(unpickle_error(tensor(bytes("K\x00K\x05\x85K\x01\x85"))).find("reaches element 4"), std::string::npos);
  EXPECT_NE(unpickle_error(tensor(bytes("K\x03K\x02\x85K\x01\x85"))).find("reaches element 4"), std::string::npos);
  EXPECT_NE(unpickle_error(tensor(bytes("K\x00K\x02\x85J\xff\xff\xff\xff\x85"))).find("negative"), std::string::npos);
  EXPECT_NE(unpickle_error(tensor(bytes("K\x00\x8a\x08\0\0\0\0\0\0\0\x40K\x02\x86K\x01K\x01\x86")))
                .find("overflows"), std::string::npos);
}

TEST(PthReader, ErrorsNameTheFile) {
  const std::string path = temp_dir() + "/garbage.pth";
  std::ofstream(path) << "definitely not a checkpoint";
  try {
    WeightsFile file(path);
    FAIL() << "garbage accepted";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()).find(path + ": "), 0u) << e.what();
  }
}

}  // namespace
}  // namespace alexnet
