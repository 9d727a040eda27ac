// Reads the versioned tensor fixtures written by tests/fixture.py.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

namespace alexnet::testing {

constexpr uint32_t kFixtureVersion = 1;

/// Directory the reference generator wrote to (ctest sets ALEXNET_REFERENCE_DIR).
inline std::string reference_dir() {
  const char* dir = std::getenv("ALEXNET_REFERENCE_DIR");
#ifdef ALEXNET_TEST_REFERENCE_DIR
  return dir ? dir : ALEXNET_TEST_REFERENCE_DIR;
#else
  return dir ? dir : "build/reference";
#endif
}

inline std::string reference_path(const std::string& name) { return reference_dir() + "/" + name; }

/// name -> tensor. Throws with a regeneration hint when the file is missing or stale.
inline std::map<std::string, torch::Tensor> read_fixture(const std::string& path) {
  const std::string hint =
      " (regenerate with: ctest -R reference_data, or /usr/bin/python3 tests/make_reference.py "
      "--out DIR)";
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "fixture ", path, ": cannot open", hint);
  char magic[8];
  in.read(magic, 8);
  TORCH_CHECK(in && std::string(magic, 8) == std::string("ALXREF\0\0", 8), "fixture ", path,
              ": bad magic", hint);
  uint32_t version = 0, count = 0;
  in.read(reinterpret_cast<char*>(&version), 4);
  in.read(reinterpret_cast<char*>(&count), 4);
  TORCH_CHECK(version == kFixtureVersion, "fixture ", path, ": version ", version, ", expected ",
              kFixtureVersion, hint);
  std::map<std::string, torch::Tensor> out;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = 0, code = 0, ndim = 0;
    in.read(reinterpret_cast<char*>(&len), 4);
    std::string name(len, '\0');
    in.read(name.data(), len);
    in.read(reinterpret_cast<char*>(&code), 4);
    in.read(reinterpret_cast<char*>(&ndim), 4);
    std::vector<int64_t> sizes(ndim);
    in.read(reinterpret_cast<char*>(sizes.data()), 8 * ndim);
    const torch::ScalarType types[] = {torch::kFloat32, torch::kInt64, torch::kUInt8,
                                       torch::kFloat64};
    TORCH_CHECK(in && code < 4, "fixture ", path, ": corrupt entry ", i, hint);
    torch::Tensor t = torch::empty(sizes, types[code]);
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    TORCH_CHECK(in, "fixture ", path, ": truncated at ", name, hint);
    out.emplace(name, t);
  }
  return out;
}

}  // namespace alexnet::testing
