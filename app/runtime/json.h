// JSON output: one object written key by key, in the order given, with the
// number formats each output promises (metrics.jsonl, --json of the commands).
#pragma once

#include <cstdint>
#include <string>

namespace alexnet::runtime {

/// s as a JSON string literal, quotes included: valid JSON for any bytes. Well-formed UTF-8 is
/// kept as it is; each byte that is not part of a well-formed sequence becomes U+FFFD.
std::string json_string(const std::string& s);

/// A finite number printed with a printf format ("%.9g": float32 values round-trip);
/// NaN and infinities as null, which JSON has instead.
std::string json_number(double v, const char* format = "%.9g");

/// {"key": value, ...}: keys appear once each, in the order they are added.
class JsonObject {
 public:
  JsonObject& str(const std::string& key, const std::string& value);
  JsonObject& integer(const std::string& key, int64_t value);
  JsonObject& number(const std::string& key, double value, const char* format = "%.9g");
  JsonObject& boolean(const std::string& key, bool value);
  JsonObject& null(const std::string& key);
  /// A value already written as JSON (an array, a nested object).
  JsonObject& raw(const std::string& key, const std::string& json);
  /// The object, braces included.
  std::string dump() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

}  // namespace alexnet::runtime
