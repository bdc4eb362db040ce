// BlockState: save -> encode -> decode -> restore into a fresh device on the same image, and the
// refusals (requests in flight, another image, bad blobs), each naming what it refuses.
#include "devices/virtio/block/block_device.h"

#include "base/testing/state_round_trip.h"

#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "devices/virtio/testing/state_expectations.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace kvmm::virtio {
namespace {

using testing::DriverBuffer;
using testing::DriverQueue;
using testing::MmioDriver;

constexpr uint64_t SECTOR = BlockDevice::SECTOR_SIZE;
constexpr uint64_t FEATURES = feature_bit(FEATURE_RING_EVENT_IDX) | feature_bit(FEATURE_VERSION_1);

// A temporary image of `size` zero bytes, removed at the end of the test.
class ScratchImage {
public:
    explicit ScratchImage(uint64_t size) {
        char name[] = "/tmp/kvmm-block-state-XXXXXX";
        int const fd = ::mkstemp(name);
        if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0)
            throw std::runtime_error("cannot create a scratch image");
        ::close(fd);
        m_path = name;
    }
    ~ScratchImage() { ::unlink(m_path.c_str()); }
    std::string const& path() const { return m_path; }

private:
    std::string m_path;
};

class BlockStateTest : public ::testing::Test {
protected:
    // A device behind a transport, brought up by the mock driver.
    void bring_up(bool read_only = false) {
        auto opened = MUST(DiskImage::open(image.path(), read_only));
        auto device = MUST(BlockDevice::create(std::move(opened), loop, {}));
        block = device.get();
        transport = MUST(MmioTransport::create("blk", std::move(device), memory, line, loop));
        driver.emplace(*transport, loop);
        ASSERT_EQ(driver->initialize(FEATURES, { &queue }) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    }

    // A device built from the same configuration, not attached to anything, as a restore sees it.
    std::unique_ptr<BlockDevice> fresh_device(std::string const& path, bool read_only = false) {
        auto opened = MUST(DiskImage::open(path, read_only));
        return MUST(BlockDevice::create(std::move(opened), loop, {}));
    }

    // What the transport hands a device it restores as active: the queue re-created from the
    // registers (here: the mock driver's layout) and the negotiated features.
    ActivationContext context(uint64_t features = FEATURES) {
        ActivationContext result;
        result.features = features;
        result.queues.emplace_back(MUST(Queue::create(memory, queue.config(), features)));
        result.memory = &memory;
        result.interrupt = &interrupt;
        result.fail = [this](Error const& error) { failures.push_back(error.message()); };
        result.reschedule = [this](size_t index) { rescheduled.push_back(index); };
        return result;
    }

    uint16_t request(uint32_t type, uint64_t sector, std::vector<DriverBuffer> data, GuestAddress& status) {
        BlockRequestHeader const header { type, 0, sector };
        data.insert(data.begin(), queue.buffer(std::as_bytes(std::span(&header, 1))));
        auto const status_buffer = queue.writable_buffer(1);
        MUST(memory.write_obj(status_buffer.address, uint8_t { 0xff }));
        data.push_back(status_buffer);
        status = status_buffer.address;
        return queue.add_chain(data);
    }

    // Runs the loop until a used element is back (or a generous deadline passes).
    std::optional<UsedElement> wait_used() {
        auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (std::chrono::steady_clock::now() < deadline) {
            if (auto used = queue.pop_used())
                return used;
            (void)loop.run_once(std::chrono::milliseconds(10));
        }
        return std::nullopt;
    }

    ScratchImage image { 1 << 20 };
    GuestMemory memory = *GuestMemory::create({ { GuestAddress(0), 16 << 20 } });
    EventLoop loop = *EventLoop::create();
    RecordingInterruptLine line;
    RecordingInterruptLine restored_line;
    VirtioInterrupt interrupt { restored_line };
    BlockDevice* block { nullptr };
    std::unique_ptr<MmioTransport> transport;
    std::optional<MmioDriver> driver;
    DriverQueue queue { memory, GuestAddress(0x10000), BlockDevice::QUEUE_SIZE };
    std::vector<std::string> failures;
    std::vector<size_t> rescheduled;
};

TEST_F(BlockStateTest, SaveRestoreSave_GivesTheSameState_AndAReadAfterRestoreReturnsTheData) {
    bring_up();
    std::vector<uint8_t> written(2 * SECTOR);
    for (size_t i = 0; i < written.size(); ++i)
        written[i] = static_cast<uint8_t>(i * 31 + 7);
    GuestAddress status;
    request(BLOCK_REQUEST_OUT, 10, { queue.buffer(std::as_bytes(std::span(written))) }, status);
    driver->notify(0);
    ASSERT_TRUE(wait_used());
    EXPECT_EQ(MUST(memory.read_obj<uint8_t>(status)), BLOCK_STATUS_OK);

    auto const saved = MUST(block->save());
    ASSERT_TRUE(saved.active);
    EXPECT_EQ(saved.capacity_sectors, (1u << 20) / SECTOR);
    EXPECT_EQ(saved.active->features, FEATURES);
    ASSERT_EQ(saved.active->queues.size(), 1u);
    ASSERT_TRUE(saved.active->queues[0]);
    EXPECT_EQ(saved.active->queues[0]->next_available, 1u);
    EXPECT_EQ(saved.active->queues[0]->next_used, 1u);

    // Through the sealed format, as a snapshot file carries it.
    StateWriter writer;
    MUST(block->save_state(writer));
    auto const blob = seal_state(writer.payload());
    transport.reset(); // the old device and its image lock go, as with the old process

    auto restored = fresh_device(image.path());
    StateReader reader(MUST(open_state(blob)));
    MUST(restored->restore_state(reader, context()));
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(MUST(restored->save()), saved);
    EXPECT_EQ(rescheduled, std::vector<size_t> { 0 }) << "the restored device asks for a turn of its queue";

    std::vector<std::byte> data_bytes(2 * SECTOR);
    auto const data = queue.writable_buffer(static_cast<uint32_t>(data_bytes.size()));
    uint16_t const head = request(BLOCK_REQUEST_IN, 10, { data }, status);
    queue.set_used_event(1); // the driver asks for an interrupt after the next used buffer
    restored->process_queue(0);
    auto const used = wait_used();
    ASSERT_TRUE(used) << "the restored device did not answer";
    EXPECT_EQ(used->id, head);
    EXPECT_EQ(used->length, written.size() + 1);
    EXPECT_EQ(MUST(memory.read_obj<uint8_t>(status)), BLOCK_STATUS_OK);
    auto const read_back = queue.read(data.address, data.length);
    EXPECT_EQ(std::memcmp(read_back.data(), written.data(), written.size()), 0);
    EXPECT_TRUE(failures.empty());
    EXPECT_FALSE(restored_line.levels.empty()) << "no interrupt for the answer the driver asked to hear of";
}

TEST_F(BlockStateTest, DeviceNotActivated_RoundTripsWithoutContext) {
    auto device = fresh_device(image.path());
    auto const saved = MUST(device->save());
    EXPECT_FALSE(saved.active);
    auto const payload = kvmm::testing::encode_payload(saved);
    StateReader reader(payload);
    device.reset();
    auto restored = fresh_device(image.path());
    MUST(restored->restore_state(reader, std::nullopt));
    EXPECT_EQ(MUST(restored->save()), saved);
}

TEST_F(BlockStateTest, SaveWithARequestInFlight_IsRefusedSayingHowMany_UntilItCompletes) {
    bring_up();
    GuestAddress status;
    request(BLOCK_REQUEST_IN, 0, { queue.writable_buffer(4096) }, status);
    driver->notify(0);
    ASSERT_TRUE(loop.run_once(std::chrono::milliseconds(0))); // submitted, its completion not yet reaped
    auto const refused = block->save();
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("1 request(s) still in flight"), std::string::npos)
        << refused.error().message();
    StateWriter writer;
    EXPECT_FALSE(block->save_state(writer));

    MUST(block->complete_in_flight());
    EXPECT_TRUE(queue.pop_used()) << "the request was answered";
    EXPECT_TRUE(block->save());
}

TEST_F(BlockStateTest, RestoreOntoAnImageOfAnotherSize_IsRefusedWithBothSizes) {
    bring_up();
    auto const saved = MUST(block->save());
    transport.reset();
    ScratchImage larger { 2 << 20 };
    auto other = fresh_device(larger.path());
    auto const before = MUST(other->save());
    auto const refused = other->restore(saved, context());
    ASSERT_FALSE(refused);
    auto const& message = refused.error().message();
    EXPECT_NE(message.find("virtio-blk/capacity_sectors"), std::string::npos) << message;
    EXPECT_NE(message.find("2048"), std::string::npos) << message;
    EXPECT_NE(message.find("4096"), std::string::npos) << message;
    EXPECT_EQ(MUST(other->save()), before) << "a refused restore changes nothing";
    EXPECT_TRUE(rescheduled.empty());
}

TEST_F(BlockStateTest, RestoreOntoAReadOnlyDrive_IsRefusedAsAnotherConfiguration) {
    bring_up();
    auto const saved = MUST(block->save());
    transport.reset();
    auto read_only = fresh_device(image.path(), true);
    auto const refused = read_only->restore(saved, context());
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("virtio-blk/offered_features"), std::string::npos)
        << refused.error().message();
}

TEST_F(BlockStateTest, BadBlobs_AreRefusedNamingTheField) {
    bring_up();
    auto const saved = MUST(block->save());
    transport.reset();
    auto device = fresh_device(image.path());
    auto const fresh = MUST(device->save());
    auto refuse = [&](std::vector<std::byte> const& payload, std::optional<ActivationContext> with,
                      std::string const& expected) {
        testing::expect_restore_refused(
            *device, [](auto& state_of) { return MUST(state_of.save()); }, payload, std::move(with), expected);
    };

    auto wrong_version = kvmm::testing::encode_payload(saved);
    wrong_version[2 + BlockState::SECTION.size()] = std::byte { 2 }; // u16 name length, name, u32 version
    refuse(wrong_version, context(), "version 2");

    auto truncated = kvmm::testing::encode_payload(saved);
    truncated.resize(truncated.size() - 3);
    refuse(truncated, context(), "virtio-blk (section): body of");
    // Cut inside the section, with its length fixed up: the field that runs out is named.
    StateWriter short_section;
    short_section.begin_section(BlockState::SECTION, BlockState::VERSION);
    short_section.u64(saved.offered_features);
    short_section.u64(saved.capacity_sectors);
    short_section.u16(0);
    short_section.end_section();
    refuse(short_section.payload(), std::nullopt, "virtio-blk/config_generation: truncated");

    BlockState bad_features = saved;
    bad_features.active->features |= feature_bit(BLOCK_FEATURE_RO);
    refuse(kvmm::testing::encode_payload(bad_features), context(bad_features.active->features), "virtio-blk/features");

    BlockState other_features = saved;
    refuse(kvmm::testing::encode_payload(other_features), context(FEATURES | feature_bit(FEATURE_RING_INDIRECT_DESC)),
           "virtio-blk/features");

    BlockState held = saved;
    held.active->queues[0]->in_flight_heads = { 3 };
    held.active->queues[0]->next_available = 2;
    refuse(kvmm::testing::encode_payload(held), context(), "virtio-blk/queue0.in_flight_heads");

    BlockState runaway = saved;
    runaway.active->queues[0]->next_available = 1000;
    refuse(kvmm::testing::encode_payload(runaway), context(), "virtio-blk/queue0");

    refuse(kvmm::testing::encode_payload(saved), std::nullopt, "virtio-blk/active");
    refuse(kvmm::testing::encode_payload(fresh), context(), "virtio-blk/active");

    StateWriter too_many_queues;
    too_many_queues.begin_section(BlockState::SECTION, BlockState::VERSION);
    too_many_queues.u64(saved.offered_features);
    too_many_queues.u64(saved.capacity_sectors);
    too_many_queues.u32(0);
    too_many_queues.boolean(true);
    too_many_queues.u64(FEATURES);
    too_many_queues.u64(2);
    too_many_queues.end_section();
    refuse(too_many_queues.payload(), context(), "virtio-blk/queues: 2 is outside [1, 1]");

    StateWriter not_a_boolean;
    not_a_boolean.begin_section(BlockState::SECTION, BlockState::VERSION);
    not_a_boolean.u64(saved.offered_features);
    not_a_boolean.u64(saved.capacity_sectors);
    not_a_boolean.u32(0);
    not_a_boolean.u8(7);
    not_a_boolean.end_section();
    refuse(not_a_boolean.payload(), std::nullopt, "virtio-blk/active: 7 is not a boolean");

    EXPECT_TRUE(rescheduled.empty());
    EXPECT_TRUE(failures.empty());
    // After all those refusals the device still takes its real state.
    auto const payload = kvmm::testing::encode_payload(saved);
    StateReader reader(payload);
    MUST(device->restore_state(reader, context()));
    EXPECT_EQ(MUST(device->save()), saved);
}

TEST_F(BlockStateTest, RestoreIntoAnActiveDevice_IsRefused) {
    bring_up();
    auto const saved = MUST(block->save());
    auto const refused = block->restore(saved, context());
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("active"), std::string::npos) << refused.error().message();
    EXPECT_EQ(MUST(block->save()), saved);
}

} // namespace
} // namespace kvmm::virtio
