#include "manager/state_store.h"

#include "base/directory.h"
#include "base/file.h"
#include "base/unique_fd.h"
#include "manager/crash_point.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <system_error>

namespace kvmm {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view DEFINITION_SUFFIX = ".toml";
constexpr std::string_view RUNTIME_RECORD_NAME = "runtime.json";
constexpr std::string_view START_INTENT_NAME = "intent.json";
// Definitions and runtime records are small; anything bigger is not ours.
constexpr uint64_t MAX_STATE_FILE_SIZE = 1024 * 1024;

Expected<void> write_all(int fd, std::string_view contents, fs::path const& path) {
    while (!contents.empty()) {
        ssize_t const written = ::write(fd, contents.data(), contents.size());
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno(fmt::format("write {}", path.string()));
        }
        contents.remove_prefix(static_cast<size_t>(written));
    }
    return {};
}

Expected<void> fsync_directory(fs::path const& directory) {
    UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.is_valid())
        return Error::from_errno(fmt::format("open directory {}", directory.string()));
    if (::fsync(fd.get()) != 0)
        return Error::from_errno(fmt::format("fsync directory {}", directory.string()));
    return {};
}

// Creates `directory` (mode 0700) if missing; an existing one must be a directory.
Expected<void> make_private_directory(fs::path const& directory) {
    if (::mkdir(directory.c_str(), 0700) == 0)
        return {};
    if (errno != EEXIST)
        return Error::from_errno(fmt::format("mkdir {}", directory.string()));
    struct stat status {};
    if (::stat(directory.c_str(), &status) != 0)
        return Error::from_errno(fmt::format("stat {}", directory.string()));
    if (!S_ISDIR(status.st_mode))
        return Error::format("{} exists and is not a directory", directory.string());
    return {};
}

// Reads a small file; nullopt if it does not exist.
Expected<std::optional<std::string>> read_small_file(fs::path const& path) {
    auto contents = read_text_file(path.string(), MAX_STATE_FILE_SIZE);
    if (!contents) {
        if (contents.error().error_number() == ENOENT)
            return std::optional<std::string> {};
        return contents.release_error();
    }
    return std::optional<std::string> { std::move(*contents) };
}

} // namespace

Expected<void> atomic_write_file(fs::path const& path, std::string_view contents, mode_t mode) {
    fs::path temporary = path;
    temporary += ".tmp";
    {
        UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
        if (!fd.is_valid())
            return Error::from_errno(fmt::format("create {}", temporary.string()));
        // open() applies the umask; the caller asked for exactly `mode`.
        if (::fchmod(fd.get(), mode) != 0)
            return Error::from_errno(fmt::format("chmod {:o} {}", mode, temporary.string()));
        auto written = write_all(fd.get(), contents, temporary);
        if (written && ::fsync(fd.get()) != 0)
            written = Error::from_errno(fmt::format("fsync {}", temporary.string()));
        if (!written) {
            ::unlink(temporary.c_str());
            return written;
        }
    }
    crash_point(fmt::format("before-rename:{}", path.filename().string()));
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        auto error = Error::from_errno(fmt::format("rename {} to {}", temporary.string(), path.string()));
        ::unlink(temporary.c_str());
        return error;
    }
    auto const directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
    return fsync_directory(directory);
}

std::optional<uint64_t> process_start_time(pid_t pid) {
    if (pid <= 0)
        return std::nullopt;
    auto const contents = read_small_file(fmt::format("/proc/{}/stat", pid));
    if (!contents || !contents->has_value())
        return std::nullopt;
    std::string_view const stat = **contents;
    // Field 2 (comm) is in parentheses and may itself contain spaces and ')', so the fields after
    // it are counted from the last ')' (proc(5)). That ')' ends field 2; field 3 follows.
    auto const close = stat.rfind(')');
    if (close == std::string_view::npos)
        return std::nullopt;
    std::string_view rest = stat.substr(close + 1);
    int field = 2;
    while (!rest.empty()) {
        auto const start = rest.find_first_not_of(' ');
        if (start == std::string_view::npos)
            break;
        rest.remove_prefix(start);
        auto const end = std::min(rest.find(' '), rest.size());
        ++field;
        if (field == 22) {
            uint64_t value = 0;
            auto const text = rest.substr(0, end);
            auto [parsed_end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
            if (error != std::errc() || parsed_end != text.data() + text.size())
                return std::nullopt;
            return value;
        }
        rest.remove_prefix(end);
    }
    return std::nullopt;
}

bool is_same_process(RuntimeRecord const& record) {
    auto const start_time = process_start_time(record.pid);
    return start_time && *start_time == record.start_time;
}

std::string runtime_record_to_json(RuntimeRecord const& record) {
    nlohmann::json const json = {
        { "pid", record.pid },
        { "start_time", record.start_time },
        { "api_socket", record.api_socket },
        { "console_socket", record.console_socket },
        { "state", record.state },
    };
    return json.dump(2) + "\n";
}

Expected<RuntimeRecord> runtime_record_from_json(std::string_view text) {
    auto const json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.is_object())
        return Error("runtime record is not a JSON object");
    RuntimeRecord record;
    auto const field = [&](char const* name) -> Expected<nlohmann::json const*> {
        auto const found = json.find(name);
        if (found == json.end())
            return Error::format("runtime record has no '{}'", name);
        return &*found;
    };
    auto const* pid = TRY(field("pid"));
    if (!pid->is_number_integer() || pid->get<int64_t>() <= 0 || pid->get<int64_t>() > INT32_MAX)
        return Error::format("runtime record: 'pid' = {} is not a process id", pid->dump());
    record.pid = static_cast<pid_t>(pid->get<int64_t>());
    auto const* start_time = TRY(field("start_time"));
    if (!start_time->is_number_unsigned())
        return Error::format("runtime record: 'start_time' = {} is not a non-negative integer", start_time->dump());
    record.start_time = start_time->get<uint64_t>();
    for (auto const& [name, target] :
         { std::pair { "api_socket", &record.api_socket }, std::pair { "console_socket", &record.console_socket },
           std::pair { "state", &record.state } }) {
        auto const* value = TRY(field(name));
        if (!value->is_string())
            return Error::format("runtime record: '{}' = {} is not a string", name, value->dump());
        *target = value->get<std::string>();
    }
    return record;
}

Expected<StateStore> StateStore::open(fs::path root) {
    if (root.empty())
        return Error("state directory: empty path");
    std::error_code error;
    fs::create_directories(root, error);
    if (error)
        return Error(fmt::format("create state directory {}: {}", root.string(), error.message()), error.value());
    TRY(make_private_directory(root));
    for (char const* sub : { "definitions", "runtime", "logs", "saved", "snapshots" })
        TRY(make_private_directory(root / sub));
    return StateStore(std::move(root));
}

fs::path StateStore::definition_path(std::string const& name) const {
    return m_root / "definitions" / (name + std::string(DEFINITION_SUFFIX));
}

Expected<Directory> StateStore::directory(std::string_view sub) const {
    auto root = TRY(Directory::open(m_root));
    return root.subdirectory(sub);
}

Expected<Directory> StateStore::runtime_directory(std::string const& name) const {
    TRY(validate_vm_name(name));
    auto runtime = TRY(directory("runtime"));
    return runtime.subdirectory(name, mode_t { 0700 });
}

Expected<void> StateStore::save_definition(VmDefinition const& definition) {
    TRY(validate_definition(definition));
    auto definitions = TRY(directory("definitions"));
    auto const file_name = definition.name + std::string(DEFINITION_SUFFIX);
    return definitions.write_atomically(file_name, to_toml(definition), 0600,
                                        [&] { crash_point(fmt::format("before-rename:{}", file_name)); });
}

Expected<VmDefinition> StateStore::load_definition(std::string const& name) const {
    TRY(validate_vm_name(name));
    auto const path = definition_path(name);
    auto definitions = TRY(directory("definitions"));
    auto const contents = TRY(definitions.read_file(name + std::string(DEFINITION_SUFFIX), MAX_STATE_FILE_SIZE));
    if (!contents)
        return Error::format("no VM named '{}' is defined", name);
    auto definition = TRY(parse_definition(*contents).with_context(path.string()));
    if (definition.name != name)
        return Error::format("{}: holds VM '{}', not '{}'", path.string(), definition.name, name);
    return definition;
}

Expected<std::vector<std::string>> StateStore::list() const {
    std::vector<std::string> names;
    std::error_code error;
    for (fs::directory_iterator it(m_root / "definitions", error), end; !error && it != end; it.increment(error)) {
        auto const file_name = it->path().filename().string();
        if (!file_name.ends_with(DEFINITION_SUFFIX))
            continue; // NAME.toml.tmp left by a crash, or a stranger
        auto name = file_name.substr(0, file_name.size() - DEFINITION_SUFFIX.size());
        if (validate_vm_name(name))
            names.push_back(std::move(name));
    }
    if (error)
        return Error(fmt::format("list {}: {}", (m_root / "definitions").string(), error.message()), error.value());
    std::sort(names.begin(), names.end());
    return names;
}

Expected<void> StateStore::remove_definition(std::string const& name) {
    TRY(validate_vm_name(name));
    auto const path = definition_path(name);
    if (::unlink(path.c_str()) != 0) {
        if (errno == ENOENT)
            return Error::format("no VM named '{}' is defined", name);
        return Error::from_errno(fmt::format("remove {}", path.string()));
    }
    return fsync_directory(path.parent_path());
}

bool StateStore::has_definition(std::string const& name) const {
    if (!validate_vm_name(name))
        return false;
    struct stat status {};
    return ::stat(definition_path(name).c_str(), &status) == 0;
}

fs::path StateStore::runtime_dir(std::string const& name) const {
    auto const directory = m_root / "runtime" / name;
    // Best effort: a failure shows up as a clear error when the caller uses the directory.
    (void)make_private_directory(directory);
    return directory;
}

fs::path StateStore::log_path(std::string const& name) const { return m_root / "logs" / (name + ".log"); }

Expected<void> StateStore::write_runtime_record(std::string const& name, RuntimeRecord const& record) {
    return write_runtime_file(name, RUNTIME_RECORD_NAME, runtime_record_to_json(record));
}

Expected<void> StateStore::write_runtime_file(std::string const& name, std::string_view file_name,
                                              std::string_view contents) {
    auto runtime = TRY(runtime_directory(name));
    return runtime.write_atomically(file_name, contents, 0600,
                                    [&] { crash_point(fmt::format("before-rename:{}", file_name)); });
}

Expected<UniqueFd> StateStore::open_kvmm_log(std::string const& name) {
    TRY(validate_vm_name(name));
    auto logs = TRY(directory("logs"));
    return logs.open_file(name + ".kvmm.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
}

Expected<std::optional<RuntimeRecord>> StateStore::read_runtime_record(std::string const& name) const {
    TRY(validate_vm_name(name));
    auto const path = m_root / "runtime" / name / RUNTIME_RECORD_NAME;
    auto runtime = directory("runtime");
    if (!runtime)
        return runtime.release_error();
    auto vm_runtime = runtime->subdirectory(name);
    if (!vm_runtime) {
        if (vm_runtime.error().error_number() == ENOENT)
            return std::optional<RuntimeRecord> {};
        return vm_runtime.release_error();
    }
    auto const contents = TRY(vm_runtime->read_file(RUNTIME_RECORD_NAME, MAX_STATE_FILE_SIZE));
    if (!contents)
        return std::optional<RuntimeRecord> {};
    return std::optional<RuntimeRecord> { TRY(runtime_record_from_json(*contents).with_context(path.string())) };
}

Expected<void> StateStore::clear_runtime_record(std::string const& name) {
    TRY(validate_vm_name(name));
    auto const path = m_root / "runtime" / name / RUNTIME_RECORD_NAME;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return Error::from_errno(fmt::format("remove {}", path.string()));
    return {};
}

Expected<void> StateStore::write_saved_record(std::string const& name, SavedRecord const& record) {
    TRY(validate_vm_name(name));
    nlohmann::json const json = { { "snapshot_path", record.snapshot_path }, { "memory_path", record.memory_path } };
    return atomic_write_file(m_root / "saved" / (name + ".json"), json.dump(2) + "\n", 0600);
}

Expected<std::optional<SavedRecord>> StateStore::read_saved_record(std::string const& name) const {
    TRY(validate_vm_name(name));
    auto const path = m_root / "saved" / (name + ".json");
    auto const contents = TRY(read_small_file(path));
    if (!contents)
        return std::optional<SavedRecord> {};
    auto const json = nlohmann::json::parse(*contents, nullptr, false);
    SavedRecord record;
    for (auto const& [field, target] :
         { std::pair { "snapshot_path", &record.snapshot_path }, std::pair { "memory_path", &record.memory_path } }) {
        if (!json.is_object() || !json.contains(field) || !json[field].is_string() ||
            json[field].get<std::string>().empty())
            return Error::format("{}: '{}' is missing or not a path", path.string(), field);
        *target = json[field].get<std::string>();
    }
    return std::optional<SavedRecord>(std::move(record));
}

Expected<void> StateStore::clear_saved_record(std::string const& name) {
    TRY(validate_vm_name(name));
    auto const path = m_root / "saved" / (name + ".json");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return Error::from_errno(fmt::format("remove {}", path.string()));
    return fsync_directory(path.parent_path());
}

Expected<fs::path> StateStore::snapshot_dir(std::string const& name) const {
    TRY(validate_vm_name(name));
    auto const path = m_root / "snapshots" / name;
    TRY(make_private_directory(path));
    return path;
}

Expected<void> StateStore::write_start_intent(std::string const& name, pid_t daemon_pid) {
    TRY(validate_vm_name(name));
    nlohmann::json const intent = { { "operation", "start" }, { "daemon_pid", daemon_pid } };
    return write_runtime_file(name, START_INTENT_NAME, intent.dump() + "\n");
}

bool StateStore::has_start_intent(std::string const& name) const {
    if (!validate_vm_name(name))
        return false;
    struct stat status {};
    return ::lstat((m_root / "runtime" / name / START_INTENT_NAME).c_str(), &status) == 0;
}

Expected<void> StateStore::clear_start_intent(std::string const& name) {
    TRY(validate_vm_name(name));
    auto const path = m_root / "runtime" / name / START_INTENT_NAME;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return Error::from_errno(fmt::format("remove {}", path.string()));
    // Durable like the write: a crash right after must not bring the intent back.
    return fsync_directory(path.parent_path());
}

void StateStore::remove_temporary_files(std::string const& name) {
    if (!validate_vm_name(name))
        return;
    std::error_code error;
    for (fs::directory_iterator it(m_root / "runtime" / name, error), end; !error && it != end; it.increment(error)) {
        if (it->path().extension() == ".tmp")
            ::unlink(it->path().c_str());
    }
}

Expected<void> StateStore::clear_runtime_dir(std::string const& name) {
    TRY(validate_vm_name(name));
    auto const directory = m_root / "runtime" / name;
    std::error_code error;
    for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
        if (::unlink(it->path().c_str()) != 0 && errno != ENOENT)
            return Error::from_errno(fmt::format("remove {}", it->path().string()));
    }
    if (error && error != std::errc::no_such_file_or_directory)
        return Error(fmt::format("list {}: {}", directory.string(), error.message()), error.value());
    return {};
}

} // namespace kvmm
