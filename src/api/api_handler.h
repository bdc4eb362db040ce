// ApiHandler: what the ApiServer calls for every complete HTTP request.
//
// Threading: handle() runs on the server's thread, one request at a time, so an
// implementation needs no locking of its own state against the server.
#pragma once

#include "api/http_message.h"

namespace kvmm {

class ApiHandler {
public:
    virtual ~ApiHandler() = default;
    virtual HttpResponse handle(HttpRequest const& request) = 0;
};

} // namespace kvmm
