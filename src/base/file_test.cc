#include "base/file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace kvmm {
namespace {

TEST(ReadFile, MissingFileErrorNamesPath) {
    auto result = read_file("/nonexistent/kvmm-test-file", 1024);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("/nonexistent/kvmm-test-file"), std::string::npos);
}

TEST(ReadFile, DirectoryIsRejected) {
    auto result = read_file("/", 1024);
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("not a regular file"), std::string::npos);
}

TEST(ReadFile, OversizedFileIsRejectedAndSmallFileIsRead) {
    std::string path = ::testing::TempDir() + "kvmm-read-file-test";
    {
        std::ofstream out(path, std::ios::binary);
        out << "0123456789";
    }
    EXPECT_FALSE(read_file(path, 9).has_value());
    auto content = read_file(path, 10);
    ASSERT_TRUE(content.has_value());
    EXPECT_EQ(content->size(), 10u);
    std::remove(path.c_str());
}

} // namespace
} // namespace kvmm
