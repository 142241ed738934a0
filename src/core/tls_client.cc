#include "core/tls_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/cidr.h"

namespace gatehouse {

namespace {

tl::unexpected<Error> Unusable(const std::string& what, const std::string& path) {
  return tl::unexpected(Error{ErrorCode::kInvalidArgument,
                              "cannot use " + what + " " + path + ": " + TakeOpenSslError(),
                              {},
                              {}});
}

}  // namespace

std::string TakeOpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

Result<SSL_CTX*> MakeClientTlsContext(const ClientTlsFiles& files) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return Unusable("TLS", "");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  auto fail = [&](const std::string& what, const std::string& path) {
    auto error = Unusable(what, path);
    SSL_CTX_free(ctx);
    return error;
  };
  if (files.ca_file.empty()
          ? SSL_CTX_set_default_verify_paths(ctx) != 1
          : SSL_CTX_load_verify_locations(ctx, files.ca_file.c_str(), nullptr) != 1) {
    return fail("the CA certificates",
                files.ca_file.empty() ? std::string("of the system") : files.ca_file);
  }
  if (!files.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
      return fail("the client certificate", files.cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return fail("the client key", files.key_file);
    }
  }
  return ctx;
}

void ExpectPeerName(SSL* ssl, const std::string& name) {
  if (ParseIp(name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
    return;
  }
  SSL_set_tlsext_host_name(ssl, name.c_str());
  SSL_set1_host(ssl, name.c_str());
}

}  // namespace gatehouse
