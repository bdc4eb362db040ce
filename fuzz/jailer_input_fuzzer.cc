// libFuzzer target: kvmm-jailer's text parsers, which run as root before any privilege is
// dropped: the command line (NUL-separated arguments), the dynamic loader's --list output and the
// mount table. None may crash; an accepted command line must satisfy the rules the jail relies
// on (an id of 1-64 letters, digits and hyphens, an absolute chroot base, an exec file that names
// a file, no uid 0 without --allow-root).
#include "jailer/jail_cgroups.h"
#include "jailer/jailer_options.h"
#include "jailer/shared_libraries.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size) {
    std::string_view const input(reinterpret_cast<char const*>(data), size);
    std::vector<std::string> arguments;
    size_t start = 0;
    while (start <= input.size()) {
        auto end = input.find('\0', start);
        if (end == std::string_view::npos)
            end = input.size();
        arguments.emplace_back(input.substr(start, end - start));
        start = end + 1;
    }
    auto const parsed = kvmm::jailer::parse_command_line(arguments);
    if (parsed && parsed->request == kvmm::jailer::JailerRequest::Run) {
        auto const& options = parsed->options;
        if (!kvmm::jailer::check_id(options.id) || options.exec_file.empty() || options.chroot_base.empty() ||
            options.chroot_base[0] != '/' || options.exec_name().empty() ||
            ((options.uid == 0 || options.gid == 0) && !options.allow_root))
            std::abort();
    }
    auto const libraries = kvmm::jailer::parse_loader_list(input);
    if (libraries) {
        for (auto const& path : *libraries)
            if (path.empty() || path[0] != '/' || path.find("/../") != std::string::npos)
                std::abort();
    }
    (void)kvmm::jailer::parse_cgroup_mounts(input);
    return 0;
}
