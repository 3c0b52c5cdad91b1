// What the plugin reads from certificates and dates: the DER of a PEM certificate, the
// RFC 9773 certificate ID, the issuer at the top of a chain, and RFC 3339 timestamps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet::acme {

// The DER bytes of the first certificate in `pem`.
Result<std::string> certificateDer(const std::string& pem);

// RFC 9773 section 4.1: base64url(authority key identifier) "." base64url(serial number),
// the serial as the content octets of its DER INTEGER (a leading zero kept).
Result<std::string> certificateId(const std::string& pem);

// The issuer CN of the last certificate in a PEM chain: the root the chain leads to.
// Empty when the chain holds no certificate or that issuer has no CN.
std::string topIssuerCommonName(const std::string& chain_pem);

// "2026-12-03T20:00:00Z", "2026-12-03T21:00:00.5+01:00" -> unix seconds.
std::optional<std::int64_t> parseRfc3339(std::string_view text);

// Unix seconds -> "2026-12-03T20:00:00Z".
std::string formatRfc3339(std::int64_t unix_seconds);

// The URL targets of RFC 8288 Link header values whose rel includes `relation`.
std::vector<std::string> linkTargets(const std::vector<std::string>& link_values,
                                     std::string_view relation);

}  // namespace certfleet::acme
