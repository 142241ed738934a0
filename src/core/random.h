// Every random value in gatehouse comes from here, and here comes only from the OS CSPRNG
// (getrandom(2)); a failure aborts rather than return weak bytes.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace gatehouse {

void FillRandom(std::span<unsigned char> out);

// `length` characters drawn uniformly from [0-9A-Za-z] by rejection sampling (no modulo bias).
std::string RandomBase62(std::size_t length);
// The same into a caller's buffer, for ids made on every request without an allocation.
void FillRandomBase62(std::span<char> out);

// A prefixed opaque id such as "org_4Qx...". 20 base62 characters (~119 bits) make ids
// unguessable, so that knowing an id never helps an attacker enumerate.
std::string NewId(std::string_view prefix);

}  // namespace gatehouse
