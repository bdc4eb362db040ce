#include "cli/snapshot_rebase_command.h"

#include "base/unique_fd.h"
#include "memory/memory_file_diff.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <fcntl.h>

#include <cstdio>
#include <string>
#include <vector>

namespace kvmm {

namespace {

int fail(std::string const& message) {
    std::fprintf(stderr, "kvmm snapshot-rebase: error: %s\n", message.c_str());
    return 1;
}

} // namespace

int run_snapshot_rebase(int argc, char** argv) {
    CLI::App app { "Apply Diff snapshots' memory files onto a base memory file, in order", "kvmm snapshot-rebase" };
    std::string base;
    std::vector<std::string> diffs;
    app.add_option("--base-memory", base, "The memory file of the snapshot the chain starts from (changed in place)")
        ->required();
    app.add_option("--diff-memory", diffs, "A Diff snapshot's memory file; repeat for a chain, oldest first")
        ->required();
    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        return fail(e.what());
    }
    UniqueFd base_fd(::open(base.c_str(), O_RDWR | O_CLOEXEC));
    if (!base_fd.is_valid())
        return fail(Error::from_errno(fmt::format("cannot open base memory file '{}'", base)).message());
    // Every diff is opened and checked before the base is written, so a missing one changes
    // nothing.
    std::vector<UniqueFd> diff_fds;
    for (auto const& diff : diffs) {
        UniqueFd fd(::open(diff.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.is_valid())
            return fail(Error::from_errno(fmt::format("cannot open diff memory file '{}'", diff)).message());
        diff_fds.push_back(std::move(fd));
    }
    for (size_t index = 0; index < diffs.size(); ++index) {
        auto const applied = apply_diff_memory_file(base_fd.get(), diff_fds[index].get(), fmt::format("'{}'", base),
                                                    fmt::format("'{}'", diffs[index]));
        if (!applied)
            return fail(applied.error().message());
        std::printf("%s: %llu bytes in %llu extents applied onto %s\n", diffs[index].c_str(),
                    static_cast<unsigned long long>(applied->bytes_copied),
                    static_cast<unsigned long long>(applied->extents), base.c_str());
    }
    return 0;
}

} // namespace kvmm
