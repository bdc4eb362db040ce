#include "base/error.h"

#include <cerrno>
#include <cstring>

namespace kvmm {

Error Error::from_errno(std::string_view what) { return from_errno(what, errno); }

Error Error::from_errno(std::string_view what, int error_number) {
    return Error(fmt::format("{}: {}", what, std::strerror(error_number)), error_number);
}

Error Error::with_context(std::string_view context) const {
    return Error(fmt::format("{}: {}", context, m_message), m_errno);
}

} // namespace kvmm
