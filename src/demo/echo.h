// The built-in demo upstream: answers every request with a JSON description of what it received,
// identity headers included, so that a newcomer can see the whole gateway path with `make run`.
#pragma once

#include "http/router.h"

namespace gatehouse {

void RegisterEchoRoutes(Router& router);

}  // namespace gatehouse
