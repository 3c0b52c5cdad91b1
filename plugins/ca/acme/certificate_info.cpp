#include "certificate_info.hpp"

#include <time.h>

#include <array>
#include <cctype>
#include <ctime>
#include <memory>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "jws.hpp"

namespace certfleet::acme {
namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

X509Ptr readCertificate(const std::string& pem) {
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    return nullptr;
  }
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// The content octets of a DER TLV: the bytes after its tag and length.
std::optional<std::string> derContent(const std::string& der) {
  if (der.size() < 2) {
    return std::nullopt;
  }
  auto first = static_cast<unsigned char>(der[1]);
  std::size_t header = 2;
  if ((first & 0x80) != 0) {
    header += first & 0x7f;
  }
  if (header > der.size()) {
    return std::nullopt;
  }
  return der.substr(header);
}

bool digits(std::string_view text, std::size_t at, std::size_t count, int& value) {
  if (at + count > text.size()) {
    return false;
  }
  value = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (std::isdigit(static_cast<unsigned char>(text[i])) == 0) {
      return false;
    }
    value = value * 10 + (text[i] - '0');
  }
  return true;
}

}  // namespace

Result<std::string> certificateDer(const std::string& pem) {
  X509Ptr cert = readCertificate(pem);
  if (!cert) {
    return invalidArgument("not a PEM certificate");
  }
  unsigned char* der = nullptr;
  int length = i2d_X509(cert.get(), &der);
  if (length <= 0) {
    return internalError("certificate cannot be encoded as DER");
  }
  std::string bytes(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  return bytes;
}

Result<std::string> certificateId(const std::string& pem) {
  X509Ptr cert = readCertificate(pem);
  if (!cert) {
    return invalidArgument("not a PEM certificate");
  }
  const ASN1_OCTET_STRING* key_id = X509_get0_authority_key_id(cert.get());
  if (key_id == nullptr || ASN1_STRING_length(key_id) <= 0) {
    return invalidArgument("the certificate has no authority key identifier");
  }
  std::string aki(reinterpret_cast<const char*>(ASN1_STRING_get0_data(key_id)),
                  static_cast<std::size_t>(ASN1_STRING_length(key_id)));

  unsigned char* der = nullptr;
  int length = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert.get()), &der);
  if (length <= 0) {
    return internalError("the certificate's serial number cannot be encoded");
  }
  std::string serial_der(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  std::optional<std::string> serial = derContent(serial_der);
  if (!serial || serial->empty()) {
    return internalError("the certificate's serial number is malformed");
  }
  return base64url(aki) + "." + base64url(*serial);
}

std::string topIssuerCommonName(const std::string& chain_pem) {
  std::unique_ptr<BIO, BioDeleter> bio(
      BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size())));
  if (!bio) {
    return {};
  }
  X509Ptr last;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    last.reset(cert);
  }
  if (!last) {
    return {};
  }
  const X509_NAME* issuer = X509_get_issuer_name(last.get());
  int index = X509_NAME_get_index_by_NID(issuer, NID_commonName, -1);
  if (index < 0) {
    return {};
  }
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(issuer, index));
  unsigned char* utf8 = nullptr;
  int length = ASN1_STRING_to_UTF8(&utf8, value);
  if (length < 0) {
    return {};
  }
  std::string name(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  return name;
}

std::optional<std::int64_t> parseRfc3339(std::string_view text) {
  std::tm when{};
  int year = 0;
  int month = 0;
  int day = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
  if (!digits(text, 0, 4, year) || text.size() < 19 || text[4] != '-' ||
      !digits(text, 5, 2, month) || text[7] != '-' || !digits(text, 8, 2, day) ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || !digits(text, 11, 2, hour) ||
      text[13] != ':' || !digits(text, 14, 2, minute) || text[16] != ':' ||
      !digits(text, 17, 2, second)) {
    return std::nullopt;
  }
  std::size_t at = 19;
  // Fractions of a second do not matter for renewal windows.
  if (at < text.size() && text[at] == '.') {
    ++at;
    while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])) != 0) {
      ++at;
    }
  }
  std::int64_t offset = 0;
  if (at < text.size() && (text[at] == 'Z' || text[at] == 'z')) {
    ++at;
  } else if (at < text.size() && (text[at] == '+' || text[at] == '-')) {
    int offset_hours = 0;
    int offset_minutes = 0;
    if (!digits(text, at + 1, 2, offset_hours) || at + 3 >= text.size() || text[at + 3] != ':' ||
        !digits(text, at + 4, 2, offset_minutes)) {
      return std::nullopt;
    }
    offset = (offset_hours * 60 + offset_minutes) * 60;
    if (text[at] == '+') {
      offset = -offset;
    }
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != text.size() || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
      minute > 59 || second > 60) {
    return std::nullopt;
  }
  when.tm_year = year - 1900;
  when.tm_mon = month - 1;
  when.tm_mday = day;
  when.tm_hour = hour;
  when.tm_min = minute;
  when.tm_sec = second;
  return static_cast<std::int64_t>(::timegm(&when)) + offset;
}

std::string formatRfc3339(std::int64_t unix_seconds) {
  auto seconds = static_cast<std::time_t>(unix_seconds);
  std::tm when{};
  ::gmtime_r(&seconds, &when);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &when);
  return text.data();
}

std::vector<std::string> linkTargets(const std::vector<std::string>& link_values,
                                     std::string_view relation) {
  std::vector<std::string> targets;
  for (const std::string& value : link_values) {
    // One header may carry several links: <a>;rel="x", <b>;rel="y".
    std::size_t position = 0;
    while (position < value.size()) {
      std::size_t open = value.find('<', position);
      if (open == std::string::npos) {
        break;
      }
      std::size_t close = value.find('>', open);
      if (close == std::string::npos) {
        break;
      }
      std::string target = value.substr(open + 1, close - open - 1);
      std::size_t next = value.find('<', close);
      std::string params =
          value.substr(close + 1, next == std::string::npos ? std::string::npos : next - close - 1);
      position = next == std::string::npos ? value.size() : next;

      std::size_t rel = params.find("rel=");
      if (rel == std::string::npos) {
        continue;
      }
      std::string rel_value = params.substr(rel + 4);
      if (!rel_value.empty() && rel_value.front() == '"') {
        std::size_t end = rel_value.find('"', 1);
        rel_value = rel_value.substr(1, end == std::string::npos ? std::string::npos : end - 1);
      } else {
        rel_value = rel_value.substr(0, rel_value.find_first_of(";, "));
      }
      // rel may list several relation types separated by spaces.
      std::size_t start = 0;
      while (start <= rel_value.size()) {
        std::size_t space = rel_value.find(' ', start);
        std::string_view type = std::string_view(rel_value).substr(
            start, space == std::string::npos ? std::string::npos : space - start);
        if (type == relation) {
          targets.push_back(target);
          break;
        }
        if (space == std::string::npos) {
          break;
        }
        start = space + 1;
      }
    }
  }
  return targets;
}

}  // namespace certfleet::acme
