// Helpers for tests that talk to the local environment (tests/env/start-env): reading the
// connection details it writes to DIR/env.sh, and picking a port nothing listens on.
//
//   std::map<std::string, std::string> env = certfleet::testing::readEnvFile(dir / "env.sh");
//   std::uint16_t port = certfleet::testing::unusedLoopbackPort();  // 0 if none could be had
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

namespace certfleet::testing {

// The variables of an env.sh: `export NAME='value'` lines, quoted for a POSIX shell.
std::map<std::string, std::string> readEnvFile(const std::filesystem::path& path);

// A TCP port on 127.0.0.1 with no listener: the kernel picks it, and it is closed again
// at once. 0 when the kernel gave none.
std::uint16_t unusedLoopbackPort();

}  // namespace certfleet::testing
