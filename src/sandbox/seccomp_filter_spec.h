// The seccomp filter of one thread role before it is compiled to BPF: a default action and a
// list of syscall rules, each allowed when all of its argument checks hold (several rules for
// one syscall are alternatives). Both sources of filters produce it: kvmm's own table
// (seccomp_table.h) and a --seccomp-filter file (seccomp_filter_file.h).
//
// Threading: plain values.
#pragma once

#include <cstdint>
#include <vector>

namespace kvmm {

struct SeccompAction {
    enum class Kind : uint8_t { Allow, Trap, Log, KillThread, KillProcess, Errno };
    Kind kind { Kind::Trap };
    uint16_t errno_value { 0 }; // for Errno

    friend bool operator==(SeccompAction const&, SeccompAction const&) = default;
};

struct SeccompArgumentCheck {
    enum class Operation : uint8_t { Equal, NotEqual, Less, LessOrEqual, Greater, GreaterOrEqual, MaskedEqual };
    unsigned index { 0 }; // 0..5, the syscall's argument
    Operation operation { Operation::Equal };
    uint64_t value { 0 };
    uint64_t mask { 0 };        // MaskedEqual: (argument & mask) == value
    bool low_32_bits { false }; // compare the low 32 bits only (an `int` or `unsigned int` argument)
};

struct SeccompSyscallRule {
    int syscall { -1 };
    SeccompAction action { SeccompAction::Kind::Allow };
    std::vector<SeccompArgumentCheck> checks; // all must hold
};

struct SeccompRoleFilter {
    SeccompAction default_action { SeccompAction::Kind::Trap };
    std::vector<SeccompSyscallRule> rules;
};

} // namespace kvmm
