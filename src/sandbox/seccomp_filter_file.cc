#include "sandbox/seccomp_filter_file.h"

#include "base/file.h"

#include <nlohmann/json.hpp>
#include <seccomp.h>

#include <optional>

namespace kvmm {

namespace {

constexpr uint64_t MAX_FILTER_FILE_SIZE = 1 << 20;

using Json = nlohmann::json;

Expected<void> only_keys(Json const& object, std::initializer_list<char const*> allowed, std::string const& where) {
    for (auto const& [key, value] : object.items()) {
        bool known = false;
        for (char const* name : allowed)
            known = known || key == name;
        if (!known)
            return Error::format("{}: unknown key '{}'", where, key);
    }
    return {};
}

Expected<SeccompAction> parse_action(Json const& value, std::string const& where) {
    if (value.is_object()) {
        TRY(only_keys(value, { "errno" }, where));
        auto const found = value.find("errno");
        if (found == value.end() || !found->is_number_unsigned() || found->get<uint64_t>() > 4095)
            return Error::format("{}: expected {{\"errno\": N}} with N from 0 to 4095, got {}", where, value.dump());
        return SeccompAction { SeccompAction::Kind::Errno, static_cast<uint16_t>(found->get<uint64_t>()) };
    }
    if (!value.is_string())
        return Error::format("{}: expected an action name, got {}", where, value.dump());
    auto const name = value.get<std::string>();
    using Kind = SeccompAction::Kind;
    if (name == "allow")
        return SeccompAction { Kind::Allow };
    if (name == "trap")
        return SeccompAction { Kind::Trap };
    if (name == "log")
        return SeccompAction { Kind::Log };
    if (name == "kill_thread" || name == "kill")
        return SeccompAction { Kind::KillThread };
    if (name == "kill_process")
        return SeccompAction { Kind::KillProcess };
    return Error::format("{}: unknown action '{}' (allow, trap, log, kill_thread, kill_process, {{\"errno\": N}})",
                         where, name);
}

Expected<SeccompArgumentCheck> parse_check(Json const& value, std::string const& where) {
    if (!value.is_object())
        return Error::format("{}: expected an object, got {}", where, value.dump());
    TRY(only_keys(value, { "index", "type", "op", "val", "comment" }, where));
    SeccompArgumentCheck check;
    auto const index = value.find("index");
    if (index == value.end() || !index->is_number_unsigned() || index->get<uint64_t>() > 5)
        return Error::format("{}: \"index\" must be an argument number from 0 to 5", where);
    check.index = static_cast<unsigned>(index->get<uint64_t>());
    auto const type = value.find("type");
    if (type == value.end() || !type->is_string() || (*type != "dword" && *type != "qword"))
        return Error::format("{}: \"type\" must be \"dword\" or \"qword\"", where);
    check.low_32_bits = *type == "dword";
    auto const val = value.find("val");
    if (val == value.end() || !val->is_number_unsigned())
        return Error::format("{}: \"val\" must be an unsigned number", where);
    check.value = val->get<uint64_t>();
    if (check.low_32_bits && check.value > UINT32_MAX)
        return Error::format("{}: \"val\" {} does not fit a dword", where, check.value);
    auto const op = value.find("op");
    if (op == value.end())
        return Error::format("{}: \"op\" is missing", where);
    using Operation = SeccompArgumentCheck::Operation;
    if (op->is_object()) {
        TRY(only_keys(*op, { "masked_eq" }, where + ".op"));
        auto const mask = op->find("masked_eq");
        if (mask == op->end() || !mask->is_number_unsigned())
            return Error::format("{}: \"op\" {{\"masked_eq\": MASK}} needs an unsigned MASK", where);
        check.operation = Operation::MaskedEqual;
        check.mask = mask->get<uint64_t>();
        if (check.low_32_bits)
            check.mask &= 0xFFFF'FFFFu;
        return check;
    }
    static constexpr std::pair<char const*, Operation> OPERATIONS[] = {
        { "eq", Operation::Equal },       { "ne", Operation::NotEqual }, { "lt", Operation::Less },
        { "le", Operation::LessOrEqual }, { "gt", Operation::Greater },  { "ge", Operation::GreaterOrEqual },
    };
    if (op->is_string()) {
        for (auto const& [name, operation] : OPERATIONS) {
            if (*op == name) {
                check.operation = operation;
                return check;
            }
        }
    }
    return Error::format("{}: unknown \"op\" {} (eq, ne, lt, le, gt, ge, {{\"masked_eq\": MASK}})", where, op->dump());
}

Expected<SeccompRoleFilter> parse_role(Json const& value, std::string const& where) {
    if (!value.is_object())
        return Error::format("{}: expected an object, got {}", where, value.dump());
    TRY(only_keys(value, { "default_action", "filter_action", "filter" }, where));
    SeccompRoleFilter filter;
    auto const default_action = value.find("default_action");
    if (default_action == value.end())
        return Error::format("{}: \"default_action\" is missing", where);
    filter.default_action = TRY(parse_action(*default_action, where + ".default_action"));
    auto const filter_action = value.find("filter_action");
    if (filter_action == value.end())
        return Error::format("{}: \"filter_action\" is missing", where);
    SeccompAction const action = TRY(parse_action(*filter_action, where + ".filter_action"));
    auto const rules = value.find("filter");
    if (rules == value.end() || !rules->is_array())
        return Error::format("{}: \"filter\" must be an array of rules", where);
    for (size_t i = 0; i < rules->size(); ++i) {
        auto const& rule = (*rules)[i];
        std::string const rule_where = fmt::format("{}.filter[{}]", where, i);
        if (!rule.is_object())
            return Error::format("{}: expected an object, got {}", rule_where, rule.dump());
        TRY(only_keys(rule, { "syscall", "args", "comment" }, rule_where));
        auto const syscall = rule.find("syscall");
        if (syscall == rule.end() || !syscall->is_string())
            return Error::format("{}: \"syscall\" must be a system call name", rule_where);
        auto const name = syscall->get<std::string>();
        int const number = seccomp_syscall_resolve_name(name.c_str());
        if (number == __NR_SCMP_ERROR || number < 0)
            return Error::format("{}: unknown system call '{}'", rule_where, name);
        SeccompSyscallRule parsed { number, action, {} };
        if (auto const args = rule.find("args"); args != rule.end()) {
            if (!args->is_array() || args->size() > 6)
                return Error::format("{}: \"args\" must be an array of at most 6 checks", rule_where);
            for (size_t j = 0; j < args->size(); ++j)
                parsed.checks.push_back(TRY(parse_check((*args)[j], fmt::format("{}.args[{}]", rule_where, j))));
        }
        filter.rules.push_back(std::move(parsed));
    }
    return filter;
}

} // namespace

Expected<SeccompRoleFilters> parse_seccomp_filter_file(std::string_view text) {
    Json const document = Json::parse(text, nullptr, false);
    if (document.is_discarded())
        return Error("not valid JSON");
    if (!document.is_object())
        return Error::format("expected a JSON object with one filter per thread role, got {}", document.type_name());
    for (auto const& [key, value] : document.items()) {
        if (!thread_role_from_name(key))
            return Error::format("unknown thread role '{}' (vmm, vcpu, api, config_boot)", key);
    }
    SeccompRoleFilters filters;
    for (ThreadRole role : ALL_THREAD_ROLES) {
        std::string const name(thread_role_name(role));
        auto const found = document.find(name);
        if (found == document.end()) {
            if (role == ThreadRole::ConfigBoot)
                continue; // takes the api filter below
            return Error::format("the filter of thread role '{}' is missing", name);
        }
        filters[static_cast<size_t>(role)] = TRY(parse_role(*found, name));
    }
    if (!document.contains(std::string(thread_role_name(ThreadRole::ConfigBoot))))
        filters[static_cast<size_t>(ThreadRole::ConfigBoot)] = filters[static_cast<size_t>(ThreadRole::Api)];
    return filters;
}

Expected<SeccompRoleFilters> load_seccomp_filter_file(std::string const& path) {
    auto const bytes = TRY(read_file(path, MAX_FILTER_FILE_SIZE));
    return parse_seccomp_filter_file(std::string_view(reinterpret_cast<char const*>(bytes.data()), bytes.size()))
        .with_context(fmt::format("seccomp filter file {}", path));
}

} // namespace kvmm
