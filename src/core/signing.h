// Ed25519 signatures (RFC 8032) through libsodium, for statements that someone who does not
// hold gatehouse's secrets must be able to check: an auditor verifies a signed audit head or
// checkpoint with the public key that /.well-known/jwks.json publishes (RFC 8037 OKP keys).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/crypto.h"

namespace gatehouse {

using Ed25519PublicKey = std::array<unsigned char, 32>;
using Ed25519Signature = std::array<unsigned char, 64>;

// base64url without padding (RFC 4648 section 5), as JOSE writes keys and signatures.
std::string Base64UrlEncode(const unsigned char* data, std::size_t size);
// Refuses padding, characters outside the alphabet and non-canonical trailing bits.
std::optional<std::string> Base64UrlDecode(std::string_view text);

// The RFC 7638 JWK thumbprint of a public key, base64url: the `kid` a verifier looks up.
std::string Ed25519KeyId(const Ed25519PublicKey& key);
// {"keys":[…]}: each key as an OKP JWK with its kid, in the order given.
std::string Ed25519Jwks(const std::vector<Ed25519PublicKey>& keys);
// A JWK's `x` (the base64url public key) as a key; nullopt unless it is a point of the curve.
std::optional<Ed25519PublicKey> Ed25519KeyFromJwkX(std::string_view x);

class Ed25519Signer {
 public:
  // The same seed always gives the same key pair, so every node that shares the deployment's
  // secret signs with the same key and no key file has to be distributed. The seed is wiped
  // here, so that the derived secret lives only inside the signer.
  explicit Ed25519Signer(Digest32&& seed);
  ~Ed25519Signer();
  Ed25519Signer(const Ed25519Signer&) = delete;
  Ed25519Signer& operator=(const Ed25519Signer&) = delete;

  Ed25519Signature Sign(std::string_view message) const;
  const Ed25519PublicKey& public_key() const { return public_key_; }
  // The RFC 7638 JWK thumbprint of the public key, base64url: the `kid` a verifier looks up.
  const std::string& key_id() const { return key_id_; }
  // {"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"use":"sig","alg":"EdDSA"}]}
  std::string JwksJson() const { return Ed25519Jwks({public_key_}); }

 private:
  std::array<unsigned char, 64> secret_key_{};  // libsodium's seed ‖ public key form
  Ed25519PublicKey public_key_{};
  std::string key_id_;
};

bool VerifyEd25519(const Ed25519PublicKey& key, std::string_view message,
                   const Ed25519Signature& signature);

}  // namespace gatehouse
