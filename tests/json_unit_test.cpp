// app/runtime/json: strings are valid JSON whatever their bytes (file names from clients and
// folders), checked against nlohmann-json's parser.
#include "app/runtime/json.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <initializer_list>
#include <string>

namespace alexnet::runtime {
namespace {

std::string parsed(const std::string& s) { return nlohmann::json::parse(json_string(s)).get<std::string>(); }

TEST(JsonString, WellFormedTextRoundTrips) {
  for (const std::string& s : std::initializer_list<std::string>{"", "plain", "quote \" backslash \\ slash /", "tab\tnewline\nreturn\r",
                              std::string("nul \0 bell \x07 escape \x1b", 22), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x88",
                              "\x7f"})
    EXPECT_EQ(parsed(s), s);
}

TEST(JsonString, EachByteOutsideWellFormedUtf8BecomesOneReplacement) {
  const std::string r = "\xef\xbf\xbd";  // U+FFFD
  EXPECT_EQ(parsed("Latin-1 caf\xe9.jpg"), "Latin-1 caf" + r + ".jpg");
  EXPECT_EQ(parsed("\xff\xfe"), r + r);
  EXPECT_EQ(parsed("\xc3"), r);                      // truncated at the end
  EXPECT_EQ(parsed("\xc3("), r + "(");               // bad continuation
  EXPECT_EQ(parsed("\xc0\xaf"), r + r);              // overlong '/'
  EXPECT_EQ(parsed("\xe0\x80\xaf"), r + r + r);      // overlong, three bytes
  EXPECT_EQ(parsed("\xed\xa0\x80"), r + r + r);      // a surrogate
  EXPECT_EQ(parsed("\xf4\x90\x80\x80"), r + r + r + r);  // past U+10FFFF
  EXPECT_EQ(parsed("\x80ok"), r + "ok");             // a lone continuation byte
  EXPECT_EQ(parsed("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");  // U+10FFFF itself
}

TEST(JsonString, ObjectsStayValidWithBadBytesInKeysAndValues) {
  const std::string json = JsonObject().str("image", "\xff.png").str("\xfe", "x").dump();
  const nlohmann::json j = nlohmann::json::parse(json);
  EXPECT_EQ(j["image"], "\xef\xbf\xbd.png");
}

}  // namespace
}  // namespace alexnet::runtime
