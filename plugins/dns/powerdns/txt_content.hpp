// TXT record data in the presentation format PowerDNS's API reads and writes: one or more
// quoted character-strings ("abc" "def"), with \" \\ and \DDD escapes inside.
#pragma once

#include <optional>
#include <string>

namespace certfleet::powerdns {

// The presentation form of `text`: quoted, escaped, and split into character-strings of at
// most 255 bytes as RFC 1035 requires.
std::string quoteTxt(const std::string& text);

// The text a presentation form carries, its character-strings joined; nullopt when
// `content` is not well-formed (PowerDNS never returns such a value, but a foreign writer
// might have stored one through the backend directly).
std::optional<std::string> unquoteTxt(const std::string& content);

}  // namespace certfleet::powerdns
