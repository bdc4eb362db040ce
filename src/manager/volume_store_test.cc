// VolumeStore against Debian's qemu-img: volumes it creates pass `qemu-img check` and
// `qemu-img info` agrees with vol-info; images qemu-img made are described and stacked on.
#include "manager/volume_store.h"

#include "base/testing/temporary_directory.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sys/stat.h>

namespace kvmm {
namespace {

using testing::TemporaryDirectory;

bool have_qemu_img() { return std::system("qemu-img --version >/dev/null 2>&1") == 0; }

#define REQUIRE_QEMU_IMG()                                                                                             \
    if (!have_qemu_img())                                                                                              \
    GTEST_SKIP() << "qemu-img is not installed (Debian package qemu-utils; tools/install-deps.sh installs it)"

// Runs `command`; its exit status, with stdout in `output`.
int run(std::string const& command, std::string* output = nullptr) {
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr)
        return -1;
    std::string text;
    char buffer[4096];
    while (size_t const got = std::fread(buffer, 1, sizeof(buffer), pipe))
        text.append(buffer, got);
    int const status = ::pclose(pipe);
    if (output)
        *output = text;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

nlohmann::json qemu_img_info(std::string const& path) {
    std::string text;
    EXPECT_EQ(run("qemu-img info --output=json '" + path + "'", &text), 0) << text;
    return nlohmann::json::parse(text, nullptr, false);
}

TEST(VolumeNameTest, SlashesDotFilesEmptyAndLongNamesAreRefused) {
    EXPECT_TRUE(validate_volume_name("disk-1.qcow2"));
    for (std::string const& bad :
         std::vector<std::string> { "", "a/b", "../x", ".hidden", ".", "..", "sp ace", std::string(65, 'a') }) {
        auto const result = validate_volume_name(bad);
        ASSERT_FALSE(result) << bad;
        EXPECT_NE(result.error().message().find("volume name"), std::string::npos) << result.error().message();
    }
}

TEST(VolumeSizeTest, BytesAndSuffixesParse_ZeroUnalignedAndUnknownSuffixesAreRefused) {
    EXPECT_EQ(*parse_volume_size("4096"), 4096u);
    EXPECT_EQ(*parse_volume_size("64M"), 64ull << 20);
    EXPECT_EQ(*parse_volume_size("10GiB"), 10ull << 30);
    EXPECT_EQ(*parse_volume_size("1t"), 1ull << 40);
    for (char const* bad : { "0", "1000", "12X", "G", "-5", "99999999999999999999", "64P" }) {
        auto const result = parse_volume_size(bad);
        ASSERT_FALSE(result) << bad;
        EXPECT_NE(result.error().message().find(bad), std::string::npos) << result.error().message();
    }
}

TEST(VolumeStoreTest, CreatedVolumes_AreListedWithFormatCapacityAndBacking) {
    TemporaryDirectory directory;
    auto store = *VolumeStore::open(directory / "volumes");
    auto const raw = *store.create({ "base", 8 << 20, VolumeFormat::Raw, std::nullopt });
    EXPECT_EQ(raw.format, VolumeFormat::Raw);
    EXPECT_EQ(raw.capacity, 8u << 20);
    EXPECT_EQ(raw.allocation, 0u); // sparse
    auto const overlay =
        *store.create({ "top", 8 << 20, VolumeFormat::Qcow2, BackingLink { raw.path, VolumeFormat::Raw } });
    EXPECT_EQ(overlay.format, VolumeFormat::Qcow2);
    EXPECT_EQ(overlay.capacity, 8u << 20);
    EXPECT_EQ(overlay.backing_file, raw.path);
    EXPECT_EQ(overlay.backing_format, VolumeFormat::Raw);
    EXPECT_EQ(overlay.cluster_size, 65536u);

    auto const listed = *store.list();
    ASSERT_EQ(listed.size(), 2u); // the records (dot-files) are not volumes
    EXPECT_EQ(listed[0].name, "base");
    EXPECT_EQ(listed[1].name, "top");

    auto const chain = *backing_chain(overlay.path, VolumeFormat::Qcow2);
    ASSERT_EQ(chain.size(), 1u);
    EXPECT_EQ(chain[0].path, raw.path);

    auto again = store.create({ "top", 4096, VolumeFormat::Raw, std::nullopt });
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().message().find("already exists"), std::string::npos);
    EXPECT_EQ(store.info("top")->format, VolumeFormat::Qcow2); // untouched

    ASSERT_TRUE(store.remove("top"));
    EXPECT_FALSE(store.info("top"));
    EXPECT_FALSE(std::filesystem::exists(directory / "volumes/.top.json"));
}

TEST(VolumeStoreTest, AFailedCreate_LeavesNoVolumeRecordOrPartialImage) {
    TemporaryDirectory directory;
    auto store = *VolumeStore::open(directory / "volumes");
    // A backing name longer than the header cluster can hold: qcow2::create_image refuses it.
    auto const failed = store.create(
        { "long", 1 << 20, VolumeFormat::Qcow2, BackingLink { "/" + std::string(2000, 'b'), VolumeFormat::Raw } });
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().message().find("volume 'long'"), std::string::npos) << failed.error().message();
    EXPECT_TRUE(std::filesystem::is_empty(store.directory()));
}

TEST(VolumeStoreTest, RawVolumeWithAQcow2LookingContent_StaysRaw) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    auto store = *VolumeStore::open(directory / "volumes");
    auto const raw = *store.create({ "guest", 1 << 20, VolumeFormat::Raw, std::nullopt });
    // What a guest could write into its raw disk: a qcow2 header naming a backing file.
    std::string const fake = directory / "fake.qcow2";
    ASSERT_EQ(run("qemu-img create -q -f qcow2 -b /etc/hostname -F raw '" + fake + "' 1M"), 0);
    ASSERT_EQ(run("dd if='" + fake + "' of='" + raw.path + "' conv=notrunc status=none"), 0);
    auto const described = *store.info("guest");
    EXPECT_EQ(described.format, VolumeFormat::Raw);
    EXPECT_TRUE(described.format_recorded);
    EXPECT_FALSE(described.backing_file);
    EXPECT_TRUE(backing_chain(raw.path, VolumeFormat::Raw)->empty());
}

TEST(VolumeStoreTest, Qcow2Volumes_PassQemuImgCheckAndInfoAgrees) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    auto store = *VolumeStore::open(directory / "volumes");
    auto const base = *store.create({ "base.qcow2", 1ull << 30, VolumeFormat::Qcow2, std::nullopt });
    auto const top =
        *store.create({ "top", 2ull << 30, VolumeFormat::Qcow2, BackingLink { base.path, VolumeFormat::Qcow2 } });
    for (auto const& volume : { base, top }) {
        std::string output;
        EXPECT_EQ(run("qemu-img check -f qcow2 '" + volume.path + "'", &output), 0) << output;
        auto const info = qemu_img_info(volume.path);
        EXPECT_EQ(info["format"], "qcow2");
        EXPECT_EQ(info["virtual-size"].get<uint64_t>(), volume.capacity);
        EXPECT_EQ(info["cluster-size"].get<uint64_t>(), 65536u);
        EXPECT_EQ(info["format-specific"]["data"]["compat"], "1.1");
    }
    auto const info = qemu_img_info(top.path);
    EXPECT_EQ(info["backing-filename"], base.path);
    EXPECT_EQ(info["backing-filename-format"], "qcow2");
    // qemu-img writes through the chain, and the result stays consistent.
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' '" + top.path + "'"), 0);
    std::string output;
    EXPECT_EQ(run("qemu-img check -f qcow2 '" + top.path + "'", &output), 0) << output;
}

TEST(VolumeStoreTest, ImageMadeByQemuImg_IsDescribedAsDetectedAndItsChainIsFollowed) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    auto store = *VolumeStore::open(directory / "volumes");
    std::string const base = store.path_of("cloud").string();
    std::string const top = store.path_of("cloud-top").string();
    ASSERT_EQ(run("qemu-img create -q -f qcow2 -o cluster_size=4096 '" + base + "' 100M"), 0);
    ASSERT_EQ(run("cd '" + store.directory().string() + "' && qemu-img create -q -f qcow2 -b cloud -F qcow2 cloud-top"),
              0);
    auto const described = *store.info("cloud");
    EXPECT_EQ(described.format, VolumeFormat::Qcow2);
    EXPECT_FALSE(described.format_recorded);
    EXPECT_EQ(described.capacity, 100u << 20);
    EXPECT_EQ(described.cluster_size, 4096u);
    // A relative backing name resolves against the overlay's directory.
    auto const chain = *backing_chain(top, VolumeFormat::Qcow2);
    ASSERT_EQ(chain.size(), 1u);
    EXPECT_EQ(chain[0].path, base);
    EXPECT_EQ(chain[0].format, VolumeFormat::Qcow2);
    // Stacking kvmm's overlay on qemu-img's image.
    auto const mine = *store.create(
        { "mine", described.capacity, VolumeFormat::Qcow2, BackingLink { described.path, VolumeFormat::Qcow2 } });
    std::string output;
    EXPECT_EQ(run("qemu-img check -f qcow2 '" + mine.path + "'", &output), 0) << output;
    EXPECT_EQ(run("qemu-img compare '" + mine.path + "' '" + base + "'", &output), 0) << output;
}

TEST(VolumeStoreTest, BackingLoopsAndCorruptHeaders_AreErrorsThatNameTheFile) {
    REQUIRE_QEMU_IMG();
    TemporaryDirectory directory;
    std::string const a = directory / "a", b = directory / "b";
    ASSERT_EQ(run("qemu-img create -q -f qcow2 '" + a + "' 1M"), 0);
    ASSERT_EQ(run("qemu-img create -q -f qcow2 -b '" + a + "' -F qcow2 '" + b + "'"), 0);
    ASSERT_EQ(run("qemu-img rebase -u -f qcow2 -b '" + b + "' -F qcow2 '" + a + "'"), 0);
    auto const loop = backing_chain(b, VolumeFormat::Qcow2);
    ASSERT_FALSE(loop);
    EXPECT_NE(loop.error().message().find("loop"), std::string::npos) << loop.error().message();

    std::string const corrupt = directory / "corrupt";
    std::ofstream(corrupt) << std::string("QFI\xfb", 4) << std::string(200, '\x7f');
    auto const bad = backing_chain(corrupt, VolumeFormat::Qcow2);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find(corrupt), std::string::npos) << bad.error().message();
}

} // namespace
} // namespace kvmm
