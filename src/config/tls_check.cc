#include "config/tls_check.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "core/tls_client.h"
#include "limits/redis_connection.h"

namespace gatehouse {

namespace {

using SslCtx = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

tl::unexpected<Error> Unusable(const std::string& where, const std::string& what,
                               const std::string& path) {
  // The file's name and OpenSSL's reason, which never quotes a key.
  return tl::unexpected(
      Error{ErrorCode::kInvalidArgument,
            where + ": cannot use " + what + " " + path + ": " + TakeOpenSslError(),
            {},
            {}});
}

// A certificate chain and the key that goes with it.
Result<void> CheckPair(SSL_CTX* ctx, const std::string& where, const std::string& cert_name,
                       const std::string& cert, const std::string& key_name,
                       const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return Unusable(where, cert_name, cert);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return Unusable(where, key_name, key);
  }
  return {};
}

}  // namespace

Result<void> CheckTlsMaterial(const Config& config) {
  ERR_clear_error();
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const ListenerConfig& l = config.listeners[i];
    if (l.tls_cert_file.empty()) continue;
    SslCtx ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    if (!ctx) return Unusable("listeners[" + std::to_string(i) + "]", "TLS", "");
    auto r = CheckPair(ctx.get(), "listeners[" + std::to_string(i) + "]", "tls_cert_file",
                       l.tls_cert_file, "tls_key_file", l.tls_key_file);
    if (!r) return r;
  }
  for (std::size_t i = 0; i < config.routes.size(); ++i) {
    const RouteConfig& route = config.routes[i];
    if (!route.upstream_tls) continue;
    auto ctx = MakeClientTlsContext(
        {route.upstream_tls_ca_file, route.upstream_tls_cert_file, route.upstream_tls_key_file});
    if (!ctx) {
      return tl::unexpected(
          Error{ErrorCode::kInvalidArgument,
                "routes[" + std::to_string(i) + "] (" + route.name + "): " + ctx.error().message,
                {},
                {}});
    }
    SSL_CTX_free(*ctx);
  }
  if (!config.rate_limits.redis.empty()) {
    auto address = SharedRedisAddress(config.rate_limits);
    if (address && address->tls) {
      auto loaded = RedisTlsContext::Load(*address);
      if (!loaded) {
        return tl::unexpected(
            Error{ErrorCode::kInvalidArgument, "rate_limits: " + loaded.error().message, {}, {}});
      }
    }
  }
  return {};
}

}  // namespace gatehouse
