// kvmmctl's vol verbs and clone against a real kvmmd and the test guest: images kvmmctl makes
// pass `qemu-img check`, images qemu-img makes are listed and stacked on, and a clone's
// overlay takes the guest's writes while the source VM's disk stays unchanged and protected.
#include "manager_fixture.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace kvmm {
namespace {

bool have_qemu_img() { return std::system("qemu-img --version >/dev/null 2>&1") == 0; }

#define REQUIRE_QEMU_IMG()                                                                                             \
    if (!have_qemu_img())                                                                                              \
    GTEST_SKIP() << "qemu-img is not installed (Debian package qemu-utils; tools/install-deps.sh installs it)"

class VolumeTest : public ManagerTest {
protected:
    std::string volumes() const { return m_state_dir + "/volumes"; }

    // The raw disk the test guest's block scenario expects: "KVMM-DISK-TEST" in sector 0.
    std::string write_base_disk(std::string const& name) {
        std::string const path = m_state_dir + "/" + name;
        std::string contents(1 << 20, '\0');
        contents.replace(0, 14, "KVMM-DISK-TEST");
        std::ofstream(path, std::ios::binary) << contents;
        return path;
    }

    static std::string sector(std::string const& path, int index) {
        std::ifstream file(path, std::ios::binary);
        std::string bytes(512, '\0');
        file.seekg(index * 512);
        file.read(bytes.data(), 512);
        return bytes;
    }

    static int shell(std::string const& command) {
        int const status = std::system((command + " >/dev/null 2>&1").c_str());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    // Starts `name` (the block scenario powers off by itself) and waits for it to stop.
    void run_to_power_off(std::string const& name) {
        auto started = ctl({ "start", name });
        ASSERT_EQ(started.exit_status, 0) << started.standard_error;
        auto const stopped = wait_for(
            name, [](json const& vm) { return vm["state"] != "running"; }, 20s);
        EXPECT_EQ(stopped["state"], "shut off") << stopped.dump();
        EXPECT_NE(ctl({ "logs", name }).standard_output.find("kvmm-test: virtio-blk ok"), std::string::npos);
    }
};

TEST_F(VolumeTest, VolCreateListInfoDelete_ImagesPassQemuImgCheckAndInterchangeWithQemuImg) {
    REQUIRE_QEMU_IMG();
    auto created = ctl({ "vol-create", "data", "1G" });
    ASSERT_EQ(created.exit_status, 0) << created.standard_error;
    EXPECT_NE(created.standard_output.find("Volume 'data' created (qcow2, 1.00 GiB)"), std::string::npos);
    ASSERT_EQ(ctl({ "vol-create", "scratch", "64M", "--format", "raw" }).exit_status, 0);
    EXPECT_EQ(shell("qemu-img check -f qcow2 '" + volumes() + "/data'"), 0);

    // An image qemu-img made, placed in the storage directory by hand, and an overlay of it.
    ASSERT_EQ(shell("qemu-img create -q -f qcow2 '" + volumes() + "/cloud' 256M"), 0);
    ASSERT_EQ(shell("qemu-io -f qcow2 -c 'write -P 0x33 1M 64k' '" + volumes() + "/cloud'"), 0);
    auto overlay = ctl({ "vol-create", "cloud-vm1", "--backing", "cloud" });
    ASSERT_EQ(overlay.exit_status, 0) << overlay.standard_error;
    EXPECT_EQ(shell("qemu-img check -f qcow2 '" + volumes() + "/cloud-vm1'"), 0);
    EXPECT_EQ(shell("qemu-img compare '" + volumes() + "/cloud-vm1' '" + volumes() + "/cloud'"), 0);

    auto listed = json::parse(ctl({ "vol-list", "--json" }).standard_output);
    ASSERT_EQ(listed["volumes"].size(), 4u) << listed.dump();
    std::map<std::string, json> by_name;
    for (auto const& volume : listed["volumes"])
        by_name[volume["name"].get<std::string>()] = volume;
    EXPECT_EQ(by_name["data"]["format"], "qcow2");
    EXPECT_EQ(by_name["data"]["capacity"], 1ull << 30);
    EXPECT_EQ(by_name["scratch"]["format"], "raw");
    EXPECT_EQ(by_name["cloud"]["format_recorded"], false);
    EXPECT_EQ(by_name["cloud-vm1"]["capacity"], 256ull << 20);
    EXPECT_EQ(by_name["cloud-vm1"]["backing_file"], volumes() + "/cloud");
    EXPECT_NE(ctl({ "vol-list" }).standard_output.find("qcow2 (detected)"), std::string::npos);
    auto info = ctl({ "vol-info", "cloud-vm1" });
    EXPECT_NE(info.standard_output.find("Backing file:    " + volumes() + "/cloud (qcow2)"), std::string::npos)
        << info.standard_output;

    // Refusals: exit 1, one error line, nothing changed.
    for (auto const& arguments : std::vector<std::vector<std::string>> {
             { "vol-delete", "cloud" },                  // the backing file of cloud-vm1
             { "vol-create", "../escape", "1G" },        // not a name
             { "vol-create", ".hidden", "1G" },          // a dot-file
             { "vol-create", "data", "1G" },             // exists
             { "vol-create", "odd", "1000" },            // not a multiple of 512
             { "vol-create", "x", "--backing", "nope" }, // no such base
             { "vol-create", "y", "--backing", "data", "--format", "raw" },
             { "vol-delete", "nope" },
         }) {
        auto const result = ctl(arguments);
        EXPECT_EQ(result.exit_status, 1) << arguments[1];
        EXPECT_EQ(result.standard_error.rfind("kvmmctl: error: ", 0), 0u) << result.standard_error;
    }
    EXPECT_EQ(json::parse(ctl({ "vol-list", "--json" }).standard_output)["volumes"].size(), 4u);
    EXPECT_FALSE(fs::exists(m_state_dir + "/escape"));

    // A volume a VM uses is not deleted; once the VM is gone it is.
    ASSERT_EQ(ctl({ "define", write_definition("user", "hello",
                                               "[[disk]]\npath = \"" + volumes() + "/data\"\nformat = \"qcow2\"\n") })
                  .exit_status,
              0);
    auto in_use = ctl({ "vol-delete", "data" });
    EXPECT_EQ(in_use.exit_status, 1);
    EXPECT_NE(in_use.standard_error.find("VM 'user'"), std::string::npos) << in_use.standard_error;
    EXPECT_NE(ctl({ "vol-info", "data" }).standard_output.find("VM 'user'"), std::string::npos);
    ASSERT_EQ(ctl({ "undefine", "user" }).exit_status, 0);
    EXPECT_EQ(ctl({ "vol-delete", "cloud-vm1" }).exit_status, 0);
    EXPECT_EQ(ctl({ "vol-delete", "cloud" }).exit_status, 0);
    EXPECT_EQ(ctl({ "vol-delete", "data" }).exit_status, 0);
    EXPECT_FALSE(fs::exists(volumes() + "/data"));
}

TEST_F(VolumeTest, Clone_GuestWritesLandInTheOverlayAndTheSourceDiskIsProtected) {
    REQUIRE_QEMU_IMG();
    std::string const base = write_base_disk("base.raw");
    ASSERT_EQ(ctl({ "define",
                    write_definition("source", "virtio-blk", "[[disk]]\npath = \"" + base + "\"\nid = \"root\"\n") })
                  .exit_status,
              0);
    auto cloned = ctl({ "clone", "source", "copy", "--json" });
    ASSERT_EQ(cloned.exit_status, 0) << cloned.standard_error;
    auto const answer = json::parse(cloned.standard_output);
    ASSERT_EQ(answer["volumes"], json::array({ "copy-root" }));
    std::string const overlay = volumes() + "/copy-root";
    auto const definition = json::parse(ctl({ "--json", "vol-info", "copy-root" }).standard_output);
    EXPECT_EQ(definition["backing_file"], base);
    EXPECT_EQ(definition["backing_format"], "raw");

    auto const base_before = sector(base, 1);
    run_to_power_off("copy");
    EXPECT_EQ(sector(base, 1), base_before) << "the source's disk must not change";
    EXPECT_EQ(shell("qemu-img check -f qcow2 '" + overlay + "'"), 0);
    std::string const flat = m_state_dir + "/flat.raw";
    ASSERT_EQ(shell("qemu-img convert -f qcow2 -O raw '" + overlay + "' '" + flat + "'"), 0);
    EXPECT_EQ(sector(flat, 0).rfind("KVMM-DISK-TEST", 0), 0u) << "the overlay reads the base";
    EXPECT_EQ(sector(flat, 1).rfind("written by the guest", 0), 0u) << "the guest's write is in the overlay";

    // The source's disk is the clone's backing file: the source may not write it.
    auto refused = ctl({ "start", "source" });
    EXPECT_EQ(refused.exit_status, 1);
    EXPECT_NE(refused.standard_error.find("is the backing file of volume 'copy-root'"), std::string::npos)
        << refused.standard_error;
    EXPECT_EQ(info("source")["state"], "shut off");
    // The overlay is the clone's disk; once the clone and its overlay are gone, the source runs.
    EXPECT_EQ(ctl({ "vol-delete", "copy-root" }).exit_status, 1);
    ASSERT_EQ(ctl({ "undefine", "copy" }).exit_status, 0);
    auto still = ctl({ "start", "source" });
    EXPECT_EQ(still.exit_status, 1) << "the overlay volume still stacks on the disk";
    EXPECT_NE(still.standard_error.find("volume 'copy-root'"), std::string::npos) << still.standard_error;
    ASSERT_EQ(ctl({ "vol-delete", "copy-root" }).exit_status, 0);
    run_to_power_off("source");
    EXPECT_EQ(sector(base, 1).rfind("written by the guest", 0), 0u);
}

TEST_F(VolumeTest, Clone_OfARunningVmOrOntoAnExistingName_IsRefusedAndCreatesNothing) {
    // A raw disk placed in the storage directory by hand: a volume too.
    std::string const base = write_base_disk("volumes/busy-disk");
    ASSERT_EQ(ctl({ "define",
                    write_definition("busy", "keyboard-wait", "[[disk]]\npath = \"" + base + "\"\nid = \"root\"\n") })
                  .exit_status,
              0);
    ASSERT_EQ(ctl({ "define", write_definition("taken", "hello") }).exit_status, 0);
    auto onto_existing = ctl({ "clone", "busy", "taken" });
    EXPECT_EQ(onto_existing.exit_status, 1);
    EXPECT_NE(onto_existing.standard_error.find("already defined"), std::string::npos) << onto_existing.standard_error;
    auto bad_name = ctl({ "clone", "busy", "../x" });
    EXPECT_EQ(bad_name.exit_status, 1);

    ASSERT_EQ(ctl({ "start", "busy" }).exit_status, 0);
    auto running = ctl({ "clone", "busy", "copy" });
    EXPECT_EQ(running.exit_status, 1);
    EXPECT_NE(running.standard_error.find("shut off"), std::string::npos) << running.standard_error;
    EXPECT_EQ(json::parse(ctl({ "vol-list", "--json" }).standard_output)["volumes"].size(), 1u);
    EXPECT_NE(ctl({ "list", "--all" }).standard_output.find("busy"), std::string::npos);
    EXPECT_EQ(ctl({ "list", "--all" }).standard_output.find("copy"), std::string::npos);
    // An overlay of a disk that a running VM writes is refused too: the base would change under it.
    auto over_running = ctl({ "vol-create", "over", "--backing", "busy-disk" });
    EXPECT_EQ(over_running.exit_status, 1);
    EXPECT_NE(over_running.standard_error.find("running"), std::string::npos) << over_running.standard_error;
    EXPECT_FALSE(fs::exists(volumes() + "/over"));
    ASSERT_EQ(ctl({ "destroy", "busy" }).exit_status, 0);
    EXPECT_EQ(ctl({ "vol-create", "over", "--backing", "busy-disk" }).exit_status, 0);
}

} // namespace
} // namespace kvmm
