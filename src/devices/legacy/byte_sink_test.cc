#include "devices/legacy/byte_sink.h"

#include <gtest/gtest.h>

#include <cstdlib>
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

TEST(FileSink, TruncatesExistingFileAndWritesBytesWithMode0644) {
    std::string const path = temporary_path("file");
    {
        std::ofstream old(path);
        old << "previous contents that must disappear";
    }
    {
        auto sink = MUST(make_file_sink(path));
        std::string_view const text = "hello\nworld";
        sink->write(std::span(reinterpret_cast<uint8_t const*>(text.data()), text.size()));
        sink->write(std::span<uint8_t const>());
    }
    EXPECT_EQ(contents_of(path), "hello\nworld");
    ::unlink(path.c_str());
}

TEST(FileSink, CreatesNewFileWithMode0644) {
    std::string const path = temporary_path("mode");
    ::unlink(path.c_str());
    mode_t const previous_umask = ::umask(0);
    auto sink = make_file_sink(path);
    ::umask(previous_umask);
    ASSERT_TRUE(sink.has_value()) << sink.error().message();
    struct stat status {};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 0777, 0644u);
    ::unlink(path.c_str());
}

TEST(FileSink, OpenFailureNamesThePath) {
    std::string const path = "/nonexistent-directory-for-kvmm/console.log";
    auto sink = make_file_sink(path);
    ASSERT_FALSE(sink.has_value());
    EXPECT_NE(sink.error().message().find(path), std::string::npos);
}

} // namespace
} // namespace kvmm
