// Ctrl-C and SIGTERM end a run cleanly: the runner stops starting new work, plugins see
// their deadline reached, and the cleanup of DNS records and rollbacks still happen.
#pragma once

namespace certfleet {

void installInterruptHandlers();
bool interrupted();

}  // namespace certfleet
