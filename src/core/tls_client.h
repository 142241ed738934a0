// TLS for gatehouse's own outgoing connections (https upstreams, Redis): the peer's certificate
// verified against a CA file or the system's CAs, TLS 1.2 at least, and a client certificate
// presented when one is configured.
#pragma once

#include <string>

#include "core/error.h"

struct ssl_ctx_st;
struct ssl_st;

namespace gatehouse {

struct ClientTlsFiles {
  std::string ca_file;    // empty: the system's CAs
  std::string cert_file;  // with key_file, or both empty
  std::string key_file;
};

// A new context, which the caller owns (SSL_CTX_free), or why the files cannot be used: their
// names and OpenSSL's reason, which never quotes a key.
Result<ssl_ctx_st*> MakeClientTlsContext(const ClientTlsFiles& files);

// The oldest error in this thread's OpenSSL queue, as text for a message; the queue is emptied.
std::string TakeOpenSslError();

// Makes `ssl` accept only a certificate for `name`, and send it as SNI unless it is an address.
void ExpectPeerName(ssl_st* ssl, const std::string& name);

}  // namespace gatehouse
