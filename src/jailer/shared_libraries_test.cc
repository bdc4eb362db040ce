#include "jailer/shared_libraries.h"

#include "base/testing/temporary_directory.h"
#include "base/unique_fd.h"

#include <gtest/gtest.h>

#include <fcntl.h>

#include <algorithm>
#include <fstream>

namespace kvmm::jailer {
namespace {

TEST(LoaderList, PathsAreTakenFromEachKindOfLine) {
    auto const paths = MUST(parse_loader_list("\tlinux-vdso.so.1 (0x00007ffd1)\n"
                                              "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f2)\n"
                                              "\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n"));
    EXPECT_EQ(paths, (std::vector<std::string> { "/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2" }));
}

TEST(LoaderList, MissingLibraryIsAnError) {
    auto const paths = parse_loader_list("\tlibgone.so.3 => not found\n");
    ASSERT_FALSE(paths.has_value());
    EXPECT_NE(paths.error().message().find("libgone.so.3"), std::string::npos);
}

TEST(LoaderList, LibraryPathWithDotDotIsRefused) {
    auto const paths = parse_loader_list("\tlibx.so => /opt/app/bin/../lib/libx.so (0x1)\n");
    ASSERT_FALSE(paths.has_value());
    EXPECT_NE(paths.error().message().find("not in normal form"), std::string::npos);
}

TEST(ElfInterpreter, ThisTestProgramHasTheSystemLoader) {
    UniqueFd fd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
    auto const interpreter = MUST(elf_interpreter(fd.get(), "self"));
    ASSERT_TRUE(interpreter.has_value());
    EXPECT_EQ(interpreter->front(), '/');
}

TEST(ElfInterpreter, NonElfFileIsRefused) {
    kvmm::testing::TemporaryDirectory directory("jail-elf");
    std::ofstream(directory / "script") << "#!/bin/sh\n" << std::string(100, '#') << "\necho hi\n";
    UniqueFd fd(::open((directory / "script").c_str(), O_RDONLY | O_CLOEXEC));
    auto const interpreter = elf_interpreter(fd.get(), "script");
    ASSERT_FALSE(interpreter.has_value());
    EXPECT_NE(interpreter.error().message().find("not a 64-bit ELF"), std::string::npos);
}

TEST(SharedLibraries, DynamicProgramNeedsLoaderAndLibc) {
    UniqueFd fd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
    auto const libraries = MUST(shared_libraries("/proc/self/exe", fd.get()));
    auto const has = [&](std::string_view part) {
        return std::any_of(libraries.begin(), libraries.end(),
                           [&](std::string const& path) { return path.find(part) != std::string::npos; });
    };
    EXPECT_TRUE(has("libc.so")) << libraries.size();
    EXPECT_TRUE(has("ld-linux"));
    EXPECT_TRUE(has("libstdc++"));
}

} // namespace
} // namespace kvmm::jailer
