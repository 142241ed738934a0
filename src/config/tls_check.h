// The TLS material a configuration names, loaded as the server would load it: listener
// certificates and keys, upstream CAs and client certificates, Redis's. `gatehouse config check`
// and the start of `serve` run it, so that a key that does not match its certificate, or a file
// that is not PEM, stops the start instead of failing the first request that needs it.
#pragma once

#include "config/config.h"
#include "core/error.h"

namespace gatehouse {

Result<void> CheckTlsMaterial(const Config& config);

}  // namespace gatehouse
