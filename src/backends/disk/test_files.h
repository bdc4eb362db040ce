// Test support for the disk backend's tests: helpers to make and inspect image files in a
// TemporaryDirectory (base/testing/temporary_directory.h). Not part of kvmm_disk.
//
// Threading: none.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvmm::testing {

// Byte `index` of the test pattern: varies with the position and `seed` so that misplaced
// data is caught.
inline std::byte pattern_byte(uint64_t index, uint8_t seed) {
    return static_cast<std::byte>((index * 131 + index / 4096 + seed) & 0xff);
}

inline std::vector<std::byte> make_pattern(size_t size, uint8_t seed) {
    std::vector<std::byte> data(size);
    for (size_t i = 0; i < size; ++i)
        data[i] = pattern_byte(i, seed);
    return data;
}

// Creates `path` holding `content`.
inline void write_file(std::string const& path, std::vector<std::byte> const& content) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pwrite(fd, content.data(), content.size(), 0), static_cast<ssize_t>(content.size()));
    ::close(fd);
}

inline std::vector<std::byte> read_range(std::string const& path, uint64_t offset, size_t size) {
    std::vector<std::byte> data(size);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path;
    auto const got = ::pread(fd, data.data(), size, static_cast<off_t>(offset));
    EXPECT_EQ(got, static_cast<ssize_t>(size));
    ::close(fd);
    return data;
}

inline bool all_zero(std::vector<std::byte> const& data) {
    for (auto byte : data)
        if (byte != std::byte { 0 })
            return false;
    return true;
}

inline uint64_t allocated_bytes(std::string const& path) {
    struct stat status {};
    EXPECT_EQ(::stat(path.c_str(), &status), 0);
    return static_cast<uint64_t>(status.st_blocks) * 512;
}

} // namespace kvmm::testing
