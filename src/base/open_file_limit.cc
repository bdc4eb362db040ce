#include "base/open_file_limit.h"

#include <sys/resource.h>

namespace kvmm {

Expected<OpenFileLimit> raise_open_file_limit() {
    rlimit limit {};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return Error::from_errno("getrlimit(RLIMIT_NOFILE)");
    OpenFileLimit result { limit.rlim_cur, limit.rlim_cur, limit.rlim_max };
    if (limit.rlim_cur == limit.rlim_max)
        return result;
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0)
        return Error::from_errno("setrlimit(RLIMIT_NOFILE)");
    result.soft = limit.rlim_cur;
    return result;
}

} // namespace kvmm
