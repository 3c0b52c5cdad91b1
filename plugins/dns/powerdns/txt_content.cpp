#include "txt_content.hpp"

#include <cstddef>

namespace certfleet::powerdns {
namespace {

constexpr std::size_t kMaxCharacterString = 255;

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

}  // namespace

std::string quoteTxt(const std::string& text) {
  std::string content;
  std::size_t in_string = 0;
  content += '"';
  for (char c : text) {
    if (in_string == kMaxCharacterString) {
      content += "\" \"";
      in_string = 0;
    }
    if (c == '"' || c == '\\') {
      content += '\\';
      content += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      // Decimal escapes keep control and non-ASCII bytes intact through PowerDNS's parser.
      unsigned value = static_cast<unsigned char>(c);
      content += '\\';
      content += static_cast<char>('0' + value / 100);
      content += static_cast<char>('0' + value / 10 % 10);
      content += static_cast<char>('0' + value % 10);
    } else {
      content += c;
    }
    ++in_string;
  }
  content += '"';
  return content;
}

std::optional<std::string> unquoteTxt(const std::string& content) {
  std::string text;
  std::size_t i = 0;
  bool any = false;
  while (i < content.size()) {
    if (content[i] == ' ' || content[i] == '\t') {
      ++i;
      continue;
    }
    if (content[i] != '"') {
      return std::nullopt;
    }
    ++i;
    bool closed = false;
    while (i < content.size()) {
      char c = content[i];
      if (c == '"') {
        closed = true;
        ++i;
        break;
      }
      if (c != '\\') {
        text += c;
        ++i;
        continue;
      }
      if (i + 1 >= content.size()) {
        return std::nullopt;
      }
      if (i + 3 < content.size() && isDigit(content[i + 1]) && isDigit(content[i + 2]) &&
          isDigit(content[i + 3])) {
        int value =
            (content[i + 1] - '0') * 100 + (content[i + 2] - '0') * 10 + (content[i + 3] - '0');
        if (value > 255) {
          return std::nullopt;
        }
        text += static_cast<char>(value);
        i += 4;
        continue;
      }
      text += content[i + 1];
      i += 2;
    }
    if (!closed) {
      return std::nullopt;
    }
    any = true;
  }
  if (!any) {
    return std::nullopt;
  }
  return text;
}

}  // namespace certfleet::powerdns
