// Helpers for the ACME plugin's contract tests that start servers of their own (a private
// Pebble, the ACME test double): temp folders, a throw-away PKI for 127.0.0.1 listeners,
// child processes stopped by pid, CSRs and chains. Header-only; the tests link OpenSSL.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

namespace certfleet::acme_test {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "certfleet-acme-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data()) != nullptr ? fs::path(pattern) : fs::path();
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline std::string readText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A tiny CA (ca.pem) and a certificate for 127.0.0.1 it signed (listener.pem/.key) under
// `dir`, made with the openssl command as tests/env/start-env does. False on failure.
inline bool makeListenerPki(const fs::path& dir) {
  std::ofstream(dir / "openssl.cnf") << "[req]\ndistinguished_name = dn\nprompt = no\n"
                                        "[dn]\nCN = certfleet acme test CA\n"
                                        "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
                                        "keyUsage = critical,keyCertSign\n"
                                        "subjectKeyIdentifier = hash\n"
                                        "[v3_listener]\nbasicConstraints = critical,CA:FALSE\n"
                                        "extendedKeyUsage = serverAuth\n"
                                        "subjectAltName = IP:127.0.0.1\n";
  const std::string d = dir.string();
  const std::string script =
      "set -e; cd '" + d +
      "'; "
      "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null; "
      "openssl req -config openssl.cnf -new -x509 -key ca.key -days 2 -extensions v3_ca "
      "-out ca.pem; "
      "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out listener.key "
      "2>/dev/null; "
      "openssl req -config openssl.cnf -new -key listener.key -subj /CN=127.0.0.1 "
      "-out listener.csr; "
      "openssl x509 -req -in listener.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile openssl.cnf -extensions v3_listener -out listener.pem 2>/dev/null";
  return std::system(("bash -c \"" + script + "\"").c_str()) == 0;
}

// A TCP port on 127.0.0.1 that nobody listened on a moment ago.
inline int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

// A server run as a child process, stopped by its pid when this object goes.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { stop(); }

  // Starts `argv` with exactly `env`, its output in `log`.
  bool start(const std::vector<std::string>& argv,
             const std::vector<std::string>& env,
             const fs::path& log) {
    std::vector<char*> args;
    for (const std::string& arg : argv) {
      args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& entry : env) {
      envp.push_back(const_cast<char*>(entry.c_str()));
    }
    envp.push_back(nullptr);

    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int in = ::open("/dev/null", O_RDONLY);
      if (out >= 0 && in >= 0) {
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
      ::execve(args[0], args.data(), envp.data());
      ::_exit(127);
    }
    return pid_ > 0;
  }

  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

  void stop() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) != 0) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* value) const { Free(value); }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509, X509_free>>;

inline std::string csrFor(const std::vector<std::string>& names) {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ReqPtr request(X509_REQ_new());
  X509_REQ_set_pubkey(request.get(), key.get());
  X509_NAME* subject = X509_REQ_get_subject_name(request.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(names.front().c_str()), -1, -1,
                             0);
  std::string san;
  for (const std::string& name : names) {
    san += (san.empty() ? "DNS:" : ",DNS:") + name;
  }
  STACK_OF(X509_EXTENSION)* extensions = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(extensions,
                         X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str()));
  X509_REQ_add_extensions(request.get(), extensions);
  sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
  X509_REQ_sign(request.get(), key.get(), EVP_sha256());

  BioPtr out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(out.get(), request.get());
  char* data = nullptr;
  long length = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<std::size_t>(length));
}

inline std::vector<CertPtr> parseChain(const std::string& pem) {
  std::vector<CertPtr> chain;
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (X509* cert = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr)) {
    chain.emplace_back(cert);
  }
  return chain;
}

// The first certificate of a PEM chain, as PEM.
inline std::string leafOf(const std::string& chain_pem) {
  const std::string end = "-----END CERTIFICATE-----";
  std::size_t at = chain_pem.find(end);
  return at == std::string::npos ? std::string() : chain_pem.substr(0, at + end.size()) + "\n";
}

inline std::string commonName(const X509_NAME* name) {
  char text[256] = {};
  X509_NAME_get_text_by_NID(const_cast<X509_NAME*>(name), NID_commonName, text, sizeof(text));
  return text;
}

// RFC 9773's certificate ID, computed here without the plugin's code: the AKI through
// X509V3's decoded extension, the serial through a BIGNUM with the DER sign byte added back.
inline std::string expectedCertificateId(const std::string& pem) {
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  CertPtr cert(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return {};
  }
  auto* aki = static_cast<AUTHORITY_KEYID*>(
      X509_get_ext_d2i(cert.get(), NID_authority_key_identifier, nullptr, nullptr));
  if (aki == nullptr || aki->keyid == nullptr) {
    AUTHORITY_KEYID_free(aki);
    return {};
  }
  std::string key_id(reinterpret_cast<const char*>(aki->keyid->data),
                     static_cast<std::size_t>(aki->keyid->length));
  AUTHORITY_KEYID_free(aki);

  BIGNUM* number = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr);
  std::string serial(static_cast<std::size_t>(BN_num_bytes(number)), '\0');
  BN_bn2bin(number, reinterpret_cast<unsigned char*>(serial.data()));
  BN_free(number);
  if (serial.empty() || (static_cast<unsigned char>(serial[0]) & 0x80) != 0) {
    serial.insert(serial.begin(), '\0');
  }

  auto encode = [](const std::string& bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                 reinterpret_cast<const unsigned char*>(bytes.data()),
                                 static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(length));
    while (!out.empty() && out.back() == '=') {
      out.pop_back();
    }
    for (char& c : out) {
      c = c == '+' ? '-' : (c == '/' ? '_' : c);
    }
    return out;
  };
  return encode(key_id) + "." + encode(serial);
}

}  // namespace certfleet::acme_test
