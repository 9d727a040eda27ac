#include "app/runtime/json.h"

#include <cmath>
#include <cstdio>

namespace alexnet::runtime {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v, const char* format) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

JsonObject& JsonObject::raw(const std::string& key, const std::string& json) {
  body_ += (body_.empty() ? "" : ", ") + json_string(key) + ": " + json;
  return *this;
}

JsonObject& JsonObject::str(const std::string& key, const std::string& value) {
  return raw(key, json_string(value));
}

JsonObject& JsonObject::integer(const std::string& key, int64_t value) {
  return raw(key, std::to_string(value));
}

JsonObject& JsonObject::number(const std::string& key, double value, const char* format) {
  return raw(key, json_number(value, format));
}

JsonObject& JsonObject::boolean(const std::string& key, bool value) {
  return raw(key, value ? "true" : "false");
}

JsonObject& JsonObject::null(const std::string& key) { return raw(key, "null"); }

}  // namespace alexnet::runtime
