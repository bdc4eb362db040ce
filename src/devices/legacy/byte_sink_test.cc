#include "devices/legacy/byte_sink.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace kvmm {
namespace {

std::string temporary_path(char const* name) {
    char const* directory = std::getenv("TMPDIR");
    return std::string(directory ? directory : "/tmp") + "/kvmm_byte_sink_test_" + std::to_string(::getpid()) + "_" +
           name;
}

std::string contents_of(std::string const& path) {
    std::ifstream file(path, std::ios::binary);
    std::ostringstream buffer;
    buffer << file.rdbuf();
    return buffer.str();
}

TEST(ConsoleFile, TruncatesAnExistingFile) {
    std::string const path = temporary_path("file");
    {
        std::ofstream old(path);
        old << "previous contents that must disappear";
    }
    {
        auto fd = MUST(open_console_file(path));
        std::string_view const text = "hello\nworld";
        ASSERT_EQ(::write(fd.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
        EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
    }
    EXPECT_EQ(contents_of(path), "hello\nworld");
    ::unlink(path.c_str());
}

TEST(ConsoleFile, CreatesANewFileOwnerOnlyEvenUnderAnOpenUmask) {
    std::string const path = temporary_path("mode");
    ::unlink(path.c_str());
    mode_t const previous_umask = ::umask(0);
    auto fd = open_console_file(path);
    ::umask(previous_umask);
    ASSERT_TRUE(fd.has_value()) << fd.error().message();
    struct stat status {};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 07777, 0600u);
    ::unlink(path.c_str());
}

TEST(ConsoleFile, AnExistingWorldReadableFileIsMadeOwnerOnly) {
    std::string const path = temporary_path("existing-mode");
    { std::ofstream old(path); }
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    auto fd = MUST(open_console_file(path));
    struct stat status {};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 07777, 0600u);
    ::unlink(path.c_str());
}

TEST(ConsoleFile, OpenFailureNamesThePath) {
    std::string const path = "/nonexistent-directory-for-kvmm/console.log";
    auto fd = open_console_file(path);
    ASSERT_FALSE(fd.has_value());
    EXPECT_NE(fd.error().message().find(path), std::string::npos);
}

} // namespace
} // namespace kvmm
