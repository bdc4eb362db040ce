#include "sandbox/seccomp_filter.h"

#include "base/unique_fd.h"
#include "sandbox/sigsys_report.h"

#include <seccomp.h>

#include <cerrno>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>

namespace kvmm {

namespace {

uint32_t action_value(SeccompAction const& action) {
    switch (action.kind) {
    case SeccompAction::Kind::Allow:
        return SCMP_ACT_ALLOW;
    case SeccompAction::Kind::Trap:
        return SCMP_ACT_TRAP;
    case SeccompAction::Kind::Log:
        return SCMP_ACT_LOG;
    case SeccompAction::Kind::KillThread:
        return SCMP_ACT_KILL_THREAD;
    case SeccompAction::Kind::KillProcess:
        return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::Kind::Errno:
        return SCMP_ACT_ERRNO(action.errno_value);
    }
    return SCMP_ACT_KILL_PROCESS;
}

scmp_compare compare_of(SeccompArgumentCheck::Operation operation) {
    using Operation = SeccompArgumentCheck::Operation;
    switch (operation) {
    case Operation::Equal:
        return SCMP_CMP_EQ;
    case Operation::NotEqual:
        return SCMP_CMP_NE;
    case Operation::Less:
        return SCMP_CMP_LT;
    case Operation::LessOrEqual:
        return SCMP_CMP_LE;
    case Operation::Greater:
        return SCMP_CMP_GT;
    case Operation::GreaterOrEqual:
        return SCMP_CMP_GE;
    case Operation::MaskedEqual:
        return SCMP_CMP_MASKED_EQ;
    }
    return SCMP_CMP_EQ;
}

std::string syscall_name(int number) {
    std::unique_ptr<char, decltype(&::free)> name(seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number), &::free);
    return name ? std::string(name.get()) : std::to_string(number);
}

struct ContextDeleter {
    void operator()(void* context) const { seccomp_release(context); }
};

} // namespace

Expected<std::vector<sock_filter>> compile_role_filter(SeccompRoleFilter const& filter, std::string_view role_name) {
    std::unique_ptr<void, ContextDeleter> context(seccomp_init(action_value(filter.default_action)));
    if (!context)
        return Error::format("seccomp filter '{}': libseccomp cannot start a filter", role_name);
    // A binary search over syscall numbers instead of one comparison per listed syscall: the
    // event loop's hot calls (io_uring_enter, read, write, epoll_wait) pass in a few jumps.
    if (int const result = seccomp_attr_set(context.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); result < 0)
        return Error::from_errno(fmt::format("seccomp filter '{}': binary-tree optimisation", role_name), -result);
    for (auto const& rule : filter.rules) {
        // A rule whose action is the default one changes nothing (and libseccomp refuses it).
        if (rule.action == filter.default_action)
            continue;
        std::vector<scmp_arg_cmp> comparisons;
        for (auto const& check : rule.checks) {
            if (check.index > 5)
                return Error::format("seccomp filter '{}': {}: argument index {} (0 to 5)", role_name,
                                     syscall_name(rule.syscall), check.index);
            if (check.operation == SeccompArgumentCheck::Operation::MaskedEqual)
                comparisons.push_back({ check.index, SCMP_CMP_MASKED_EQ, check.mask, check.value });
            else if (check.low_32_bits && check.operation == SeccompArgumentCheck::Operation::Equal)
                // A 32-bit argument: the kernel ignores the upper half, so the filter does too.
                comparisons.push_back({ check.index, SCMP_CMP_MASKED_EQ, 0xFFFF'FFFFu, check.value & 0xFFFF'FFFFu });
            else
                comparisons.push_back({ check.index, compare_of(check.operation), check.value, 0 });
        }
        int const result = seccomp_rule_add_array(context.get(), action_value(rule.action), rule.syscall,
                                                  static_cast<unsigned>(comparisons.size()), comparisons.data());
        if (result < 0)
            return Error::from_errno(fmt::format("seccomp filter '{}': rule for {} ({} argument checks)", role_name,
                                                 syscall_name(rule.syscall), comparisons.size()),
                                     -result);
    }
    // Export to an anonymous file and read the program back: libseccomp 2.5 writes BPF to a
    // descriptor only.
    UniqueFd memory(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
    if (!memory.is_valid())
        return Error::from_errno("memfd_create for the seccomp program");
    if (int const result = seccomp_export_bpf(context.get(), memory.get()); result < 0)
        return Error::from_errno(fmt::format("seccomp filter '{}': exporting BPF", role_name), -result);
    off_t const size = ::lseek(memory.get(), 0, SEEK_END);
    if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
        return Error::format("seccomp filter '{}': libseccomp exported {} bytes of BPF", role_name, size);
    std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
    if (::pread(memory.get(), program.data(), static_cast<size_t>(size), 0) != size)
        return Error::from_errno(fmt::format("seccomp filter '{}': reading the exported BPF", role_name));
    if (program.size() > BPF_MAXINSNS)
        return Error::format("seccomp filter '{}' has {} BPF instructions; the kernel takes at most {}", role_name,
                             program.size(), BPF_MAXINSNS);
    return program;
}

Expected<SeccompFilters> SeccompFilters::compile(std::array<SeccompRoleFilter, ALL_THREAD_ROLES.size()> const& filters,
                                                 std::span<ThreadRole const> roles) {
    SeccompFilters compiled;
    for (ThreadRole role : roles) {
        auto const index = static_cast<size_t>(role);
        compiled.m_programs[index] = TRY(compile_role_filter(filters[index], thread_role_name(role)));
    }
    return compiled;
}

Expected<SeccompFilters> SeccompFilters::from_table(KvmIoctls const& kvm, std::span<ThreadRole const> roles) {
    std::array<SeccompRoleFilter, ALL_THREAD_ROLES.size()> filters;
    for (ThreadRole role : roles)
        filters[static_cast<size_t>(role)] = TRY(build_role_filter(role, kvm));
    return compile(filters, roles);
}

Expected<void> set_no_new_privileges() {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return Error::from_errno("prctl(PR_SET_NO_NEW_PRIVS)");
    return {};
}

Expected<void> SeccompFilters::install(ThreadRole role, std::string_view thread_name) const {
    auto const& program = m_programs[static_cast<size_t>(role)];
    if (program.empty())
        return Error::format("the seccomp filter of role '{}' was not compiled", thread_role_name(role));
    TRY(set_no_new_privileges());
    set_thread_role_for_report(role, thread_name);
    sock_fprog const fprog { static_cast<unsigned short>(program.size()), const_cast<sock_filter*>(program.data()) };
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0)
        return Error::from_errno(fmt::format("installing the seccomp filter of role '{}' ({} instructions)",
                                             thread_role_name(role), program.size()));
    return {};
}

} // namespace kvmm
