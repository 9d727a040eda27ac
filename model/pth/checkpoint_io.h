// Writing torch.save's zip format (what torch.load reads back), atomically.
// Reading it is read_torch_save.cpp's job, through formats.h.
#pragma once

#include "model/pth/file_io.h"
#include "model/pth/pth_value.h"

#include <string>

namespace alexnet::pth {

/// Writes `root` as torch.save's zip format: <name>/data.pkl, <name>/data/<key>,
/// <name>/version "3", <name>/byteorder "little", records 64-byte aligned.
/// Atomic: see write_atomically.
void write_checkpoint(const std::string& path, const Value& root);

}  // namespace alexnet::pth
