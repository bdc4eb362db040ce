// VsockState: save -> encode -> decode -> restore into a fresh device at the same socket path;
// the restored device tells the guest of the transport reset, answers packets of the dropped
// connections with RST and takes new ones; the refusals name what they refuse.
#include "devices/virtio/vsock/vsock_test_fixture.h"

#include "base/testing/state_round_trip.h"
#include "devices/virtio/testing/state_expectations.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvmm::virtio::vsock {
namespace {

using namespace test_support;

constexpr uint64_t FEATURES = feature_bit(FEATURE_RING_EVENT_IDX) | feature_bit(FEATURE_VERSION_1);

class VsockStateTest : public VsockDeviceTest {
protected:
    ActivationContext context(uint64_t features = FEATURES) {
        ActivationContext result;
        result.features = features;
        for (DriverQueue* queue : { &rx, &tx, &event })
            result.queues.emplace_back(MUST(Queue::create(memory, queue->config(), features)));
        result.memory = &memory;
        result.interrupt = &restored_interrupt;
        result.fail = [this](Error const& error) { failures.push_back(error.message()); };
        result.reschedule = [this](size_t index) { rescheduled.push_back(index); };
        return result;
    }

    // Posts an event buffer (from rx's data area, the only one that hands out buffers).
    uint16_t post_event_buffer(uint32_t length = 4) {
        auto const buffer = rx.writable_buffer(length);
        uint16_t const head = event.add_chain({ buffer });
        event_buffers[head] = buffer.address;
        return head;
    }

    // The event loop with the turns a restored device asks for served, as its transport would.
    void pump(VsockDevice& device, int rounds = 5) {
        for (int i = 0; i < rounds; ++i) {
            (void)loop.run_once(std::chrono::milliseconds(10));
            auto const turns = std::exchange(rescheduled, {});
            for (size_t const index : turns)
                device.process_queue(index);
        }
    }

    // Packets the restored device wrote into rx buffers.
    std::vector<PacketHeader> restored_packets() {
        std::vector<PacketHeader> headers;
        while (auto const used = rx.pop_used()) {
            auto const bytes = rx.read(rx_buffers.at(static_cast<uint16_t>(used->id)), used->length);
            if (bytes.size() >= HEADER_SIZE)
                headers.push_back(decode_header(std::span(bytes).first<HEADER_SIZE>()));
        }
        return headers;
    }

    // Takes the device under test down as the end of the old process would.
    void retire_original() {
        driver.reset();
        transport.reset();
        vsock = nullptr;
    }

    RecordingInterruptLine restored_line;
    VirtioInterrupt restored_interrupt { restored_line };
    std::map<uint16_t, GuestAddress> event_buffers;
    std::vector<std::string> failures;
    std::vector<size_t> rescheduled;
};

TEST_F(VsockStateTest, SaveRestoreSave_GivesTheSameState_AndTheGuestGetsATransportReset) {
    activate();
    post_rx_buffers(16);
    UniqueFd listener;
    auto server = guest_connect(1025, 52, listener);
    uint16_t const event_head = post_event_buffer();
    driver->notify(VsockDevice::EVENT_QUEUE);
    run();
    ASSERT_EQ(vsock->active_connections(), 1u);

    auto const saved = vsock->save();
    EXPECT_EQ(saved.guest_cid, GUEST_CID);
    ASSERT_TRUE(saved.active);
    ASSERT_EQ(saved.active->queues.size(), 3u);
    for (auto const& queue : saved.active->queues) {
        ASSERT_TRUE(queue);
        EXPECT_TRUE(queue->in_flight_heads.empty());
    }
    EXPECT_EQ(vsock->active_connections(), 1u) << "saving leaves the running device's connections alone";

    StateWriter writer;
    MUST(vsock->save_state(writer));
    auto const blob = seal_state(writer.payload());
    retire_original();
    EXPECT_TRUE(at_end_of_stream(server.get())) << "the old device's host socket is closed with it";

    auto restored = MUST(VsockDevice::create(loop, GUEST_CID, uds_path));
    StateReader reader(MUST(open_state(blob)));
    MUST(restored->restore_state(reader, context()));
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(restored->save(), saved);
    EXPECT_TRUE(restored->transport_reset_pending());
    EXPECT_EQ(event.used_index(), 0u) << "nothing is sent during the restore itself";
    EXPECT_FALSE(rescheduled.empty()) << "the restored device asks for its turn";

    pump(*restored);
    auto const reset_event = event.pop_used();
    ASSERT_TRUE(reset_event) << "no transport reset reached the guest";
    EXPECT_EQ(reset_event->id, event_head);
    EXPECT_EQ(reset_event->length, 4u);
    auto const id = event.read(event_buffers.at(event_head), 4);
    uint32_t value = 0xffffffff;
    std::memcpy(&value, id.data(), sizeof(value));
    EXPECT_EQ(value, EVENT_TRANSPORT_RESET);
    EXPECT_FALSE(restored->transport_reset_pending());
    EXPECT_EQ(restored->transport_resets_sent(), 1u);

    // A packet of the connection the guest had is answered with RST: it is gone.
    auto const head = encode_header(guest_header(Operation::ReadWrite, 1025, 52, 2));
    std::vector<std::byte> packet(head.begin(), head.end());
    packet.push_back(std::byte { 'h' });
    packet.push_back(std::byte { 'i' });
    tx.add_chain({ rx.buffer(packet) });
    restored->process_queue(VsockDevice::TX_QUEUE);
    pump(*restored, 1);
    auto const answers = restored_packets();
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers[0].operation, static_cast<uint16_t>(Operation::Reset));
    EXPECT_EQ(answers[0].destination_port, 1025u);

    // A host program connects afresh: the guest gets its REQUEST.
    auto client = connect_blocking(uds_path);
    send_all(client.get(), "CONNECT 7\n");
    std::vector<PacketHeader> requests;
    for (int i = 0; i < 50 && requests.empty(); ++i) {
        pump(*restored, 1);
        requests = restored_packets();
    }
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].operation, static_cast<uint16_t>(Operation::Request));
    EXPECT_EQ(requests[0].destination_port, 7u);
    EXPECT_TRUE(failures.empty());
}

TEST_F(VsockStateTest, TransportReset_WaitsForTheDriversEventBuffer) {
    activate();
    auto const saved = vsock->save();
    retire_original();
    auto restored = MUST(VsockDevice::create(loop, GUEST_CID, uds_path));
    MUST(restored->restore(saved, context()));
    pump(*restored);
    EXPECT_TRUE(restored->transport_reset_pending()) << "no event buffer posted yet";
    EXPECT_EQ(event.used_index(), 0u);
    uint16_t const small = post_event_buffer(2);
    uint16_t const enough = post_event_buffer(4);
    restored->process_queue(VsockDevice::EVENT_QUEUE); // the driver's notification
    auto const first = event.pop_used();
    auto const second = event.pop_used();
    ASSERT_TRUE(first && second);
    EXPECT_EQ(first->id, small);
    EXPECT_EQ(first->length, 0u) << "a buffer too small for the event goes back empty";
    EXPECT_EQ(second->id, enough);
    EXPECT_EQ(second->length, 4u);
    EXPECT_FALSE(restored->transport_reset_pending());
    EXPECT_FALSE(event.pop_used()) << "one reset, once";
}

TEST_F(VsockStateTest, DeviceNotActivated_RestoresWithoutAReset) {
    auto const saved = vsock->save();
    EXPECT_FALSE(saved.active);
    retire_original();
    auto restored = MUST(VsockDevice::create(loop, GUEST_CID, uds_path));
    auto const payload = kvmm::testing::encode_payload(saved);
    StateReader reader(payload);
    MUST(restored->restore_state(reader, std::nullopt));
    EXPECT_EQ(restored->save(), saved);
    EXPECT_FALSE(restored->transport_reset_pending());
    EXPECT_TRUE(rescheduled.empty());
}

TEST_F(VsockStateTest, BadStates_AreRefusedNamingTheField_AndChangeNothing) {
    activate();
    auto const saved = vsock->save();
    retire_original();
    auto device = MUST(VsockDevice::create(loop, GUEST_CID, uds_path));
    auto refuse = [&](std::vector<std::byte> const& payload, std::optional<ActivationContext> with,
                      std::string const& expected) {
        testing::expect_restore_refused(
            *device, [](auto& state_of) { return state_of.save(); }, payload, std::move(with), expected);
        EXPECT_FALSE(device->transport_reset_pending());
    };

    VsockState other_cid = saved;
    other_cid.guest_cid = GUEST_CID + 1;
    refuse(kvmm::testing::encode_payload(other_cid), context(),
           "virtio-vsock/guest_cid: the saved device had cid 4, this one has 3");

    VsockState reserved_cid = saved;
    reserved_cid.guest_cid = 2;
    refuse(kvmm::testing::encode_payload(reserved_cid), context(),
           "virtio-vsock/guest_cid: 2 is outside [3, 4294967295]");

    VsockState held_event = saved;
    held_event.active->queues[VsockDevice::EVENT_QUEUE]->in_flight_heads = { 0 };
    held_event.active->queues[VsockDevice::EVENT_QUEUE]->next_available = 1;
    refuse(kvmm::testing::encode_payload(held_event), context(), "virtio-vsock/queue2.in_flight_heads");

    VsockState far_ahead = saved;
    far_ahead.active->queues[VsockDevice::RX_QUEUE]->next_available = 300;
    refuse(kvmm::testing::encode_payload(far_ahead), context(), "virtio-vsock/queue0");

    refuse(kvmm::testing::encode_payload(saved), std::nullopt, "virtio-vsock/active");
    refuse(kvmm::testing::encode_payload(saved), context(FEATURES | feature_bit(FEATURE_RING_INDIRECT_DESC)),
           "virtio-vsock/features");

    auto wrong_version = kvmm::testing::encode_payload(saved);
    wrong_version[2 + VsockState::SECTION.size()] = std::byte { 2 };
    refuse(wrong_version, context(), "version 2");

    auto truncated = kvmm::testing::encode_payload(saved);
    truncated.resize(20);
    refuse(truncated, context(), "virtio-vsock");

    EXPECT_TRUE(rescheduled.empty());
    auto const payload = kvmm::testing::encode_payload(saved);
    StateReader reader(payload);
    MUST(device->restore_state(reader, context()));
    EXPECT_EQ(device->save(), saved);
    EXPECT_TRUE(device->transport_reset_pending());
}

} // namespace
} // namespace kvmm::virtio::vsock
