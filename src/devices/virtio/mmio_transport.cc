#include "devices/virtio/mmio_transport.h"

#include <spdlog/spdlog.h>

#include <bit>
#include <cstring>

namespace kvmm::virtio {

namespace {

// Register offsets, virtio 1.2 section 4.2.2, table "MMIO Device Register Layout".
enum Register : uint64_t {
    MAGIC_VALUE = 0x000,
    VERSION = 0x004,
    DEVICE_ID = 0x008,
    VENDOR_ID = 0x00c,
    DEVICE_FEATURES = 0x010,
    DEVICE_FEATURES_SEL = 0x014,
    DRIVER_FEATURES = 0x020,
    DRIVER_FEATURES_SEL = 0x024,
    QUEUE_SEL = 0x030,
    QUEUE_NUM_MAX = 0x034,
    QUEUE_NUM = 0x038,
    QUEUE_READY = 0x044,
    QUEUE_NOTIFY = 0x050,
    INTERRUPT_STATUS = 0x060,
    INTERRUPT_ACK = 0x064,
    STATUS = 0x070,
    QUEUE_DESC_LOW = 0x080,
    QUEUE_DESC_HIGH = 0x084,
    QUEUE_DRIVER_LOW = 0x090,
    QUEUE_DRIVER_HIGH = 0x094,
    QUEUE_DEVICE_LOW = 0x0a0,
    QUEUE_DEVICE_HIGH = 0x0a4,
    SHM_SEL = 0x0ac,
    SHM_LEN_LOW = 0x0b0,
    SHM_LEN_HIGH = 0x0b4,
    SHM_BASE_LOW = 0x0b8,
    SHM_BASE_HIGH = 0x0bc,
    CONFIG_GENERATION = 0x0fc,
};

constexpr uint32_t MAGIC = 0x74726976; // "virt"
constexpr uint32_t MMIO_VERSION = 2;
constexpr uint32_t VENDOR = 0x4d4d564b; // "KVMM"

void set_low(uint64_t& field, uint32_t value) { field = (field & 0xffff'ffff'0000'0000ull) | value; }
void set_high(uint64_t& field, uint32_t value) { field = (field & 0xffff'ffffull) | (uint64_t { value } << 32); }

} // namespace

Expected<std::unique_ptr<MmioTransport>> MmioTransport::create(std::string name, std::unique_ptr<VirtioDevice> device,
                                                               GuestMemory const& memory, InterruptLine& line,
                                                               EventLoop& event_loop) {
    auto const sizes = device->queue_max_sizes();
    if (sizes.empty())
        return Error::format("virtio device {} has no queues", name);
    auto control = TRY(EventFd::create());
    std::vector<EventFd> notify;
    for (size_t i = 0; i < sizes.size(); ++i)
        notify.push_back(TRY(EventFd::create()));
    std::unique_ptr<MmioTransport> transport(new MmioTransport(std::move(name), std::move(device), memory, line,
                                                               event_loop, std::move(control), std::move(notify)));
    auto* self = transport.get();
    TRY(event_loop.add(self->m_control.fd(), [self] { self->run_commands(); }));
    for (size_t i = 0; i < self->m_notify.size(); ++i)
        TRY(event_loop.add(self->m_notify[i].fd(), [self, i] { self->on_notify(i); }));
    return transport;
}

MmioTransport::MmioTransport(std::string name, std::unique_ptr<VirtioDevice> device, GuestMemory const& memory,
                             InterruptLine& line, EventLoop& event_loop, EventFd control, std::vector<EventFd> notify)
    : m_name(std::move(name)), m_device(std::move(device)), m_memory(memory), m_interrupt(line),
      m_event_loop(event_loop), m_control(std::move(control)), m_notify(std::move(notify)),
      m_offered_features(m_device->features() | feature_bit(FEATURE_VERSION_1)) {
    for (auto max_size : m_device->queue_max_sizes())
        m_queue_registers.push_back(QueueRegisters { max_size, max_size, false, 0, 0, 0 });
}

MmioTransport::~MmioTransport() {
    m_event_loop.remove(m_control.fd());
    for (auto const& notify : m_notify)
        m_event_loop.remove(notify.fd());
    if (m_active)
        m_device->reset();
}

uint32_t MmioTransport::status() const {
    MutexLock guard(m_lock);
    return m_status;
}

uint64_t MmioTransport::commands_coalesced() const {
    MutexLock guard(m_lock);
    return m_commands_coalesced;
}

uint64_t MmioTransport::commands_posted() const {
    MutexLock guard(m_lock);
    return m_commands_posted;
}

size_t MmioTransport::pending_commands() const {
    MutexLock guard(m_lock);
    return m_commands.size();
}

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
    if (offset >= CONFIG_OFFSET) {
        m_device->read_config(offset - CONFIG_OFFSET, data);
        return;
    }
    // 4.2.2.2: the driver MUST use 32-bit aligned 32-bit accesses for the registers.
    if (data.size() != 4 || offset % 4 != 0) {
        std::memset(data.data(), 0xff, data.size());
        guest_error(fmt::format("{}-byte read at register offset {:#x}", data.size(), offset));
        return;
    }
    uint32_t const value = read_register(offset);
    std::memcpy(data.data(), &value, sizeof(value));
}

void MmioTransport::write(uint64_t offset, std::span<uint8_t const> data) {
    if (offset >= CONFIG_OFFSET) {
        m_device->write_config(offset - CONFIG_OFFSET, data);
        return;
    }
    if (data.size() != 4 || offset % 4 != 0) {
        guest_error(fmt::format("{}-byte write at register offset {:#x}", data.size(), offset));
        return;
    }
    uint32_t value = 0;
    std::memcpy(&value, data.data(), sizeof(value));
    write_register(offset, value);
}

uint32_t MmioTransport::read_register(uint64_t offset) {
    switch (offset) {
    case MAGIC_VALUE:
        return MAGIC;
    case VERSION:
        return MMIO_VERSION;
    case DEVICE_ID:
        return static_cast<uint32_t>(m_device->type());
    case VENDOR_ID:
        return VENDOR;
    case INTERRUPT_STATUS:
        return m_interrupt.status();
    case CONFIG_GENERATION:
        return m_device->config_generation();
    case SHM_LEN_LOW:
    case SHM_LEN_HIGH:
    case SHM_BASE_LOW:
    case SHM_BASE_HIGH:
        return 0xffff'ffff; // no shared memory regions (4.2.2: length -1 means none)
    default:
        break;
    }
    MutexLock guard(m_lock);
    switch (offset) {
    case DEVICE_FEATURES:
        if (m_device_features_select > 1)
            return 0;
        return static_cast<uint32_t>(m_offered_features >> (32 * m_device_features_select));
    case QUEUE_NUM_MAX:
        return m_queue_select < m_queue_registers.size() ? m_queue_registers[m_queue_select].max_size : 0;
    case QUEUE_READY:
        return m_queue_select < m_queue_registers.size() && m_queue_registers[m_queue_select].ready ? 1 : 0;
    case STATUS:
        return m_status;
    default:
        return 0;
    }
}

void MmioTransport::write_register(uint64_t offset, uint32_t value) {
    switch (offset) {
    case QUEUE_NOTIFY:
        // Normally caught by the KVM ioeventfd; this path serves hosts/tests without one.
        if (value < m_notify.size())
            (void)m_notify[value].signal();
        else
            guest_error(fmt::format("notification for queue {} of {}", value, m_notify.size()));
        return;
    case INTERRUPT_ACK:
        m_interrupt.acknowledge(value);
        return;
    default:
        break;
    }
    MutexLock guard(m_lock);
    if (offset == STATUS) {
        write_status(value);
        return;
    }
    bool const driver_ok = (m_status & STATUS_DRIVER_OK) != 0;
    bool const features_ok = (m_status & STATUS_FEATURES_OK) != 0;
    switch (offset) {
    case DEVICE_FEATURES_SEL:
        m_device_features_select = value;
        return;
    case DRIVER_FEATURES_SEL:
        m_driver_features_select = value;
        return;
    case DRIVER_FEATURES:
        if (features_ok || !(m_status & STATUS_DRIVER)) {
            guest_error("driver features written outside feature negotiation");
            return;
        }
        if (m_driver_features_select == 0)
            set_low(m_driver_features, value);
        else if (m_driver_features_select == 1)
            set_high(m_driver_features, value);
        else if (value != 0) {
            guest_error(fmt::format("driver features {:#x} in unknown word {}", value, m_driver_features_select));
        }
        return;
    case QUEUE_SEL:
        m_queue_select = value;
        return;
    default:
        break;
    }
    // Everything else configures the selected queue.
    if (m_queue_select >= m_queue_registers.size()) {
        guest_error(fmt::format("write to register {:#x} of queue {}, which does not exist", offset, m_queue_select));
        return;
    }
    auto& queue = m_queue_registers[m_queue_select];
    bool const frozen = driver_ok || (queue.ready && offset != QUEUE_READY);
    if (frozen) {
        guest_error(fmt::format("write to register {:#x} of queue {} after it was made ready", offset, m_queue_select));
        return;
    }
    switch (offset) {
    case QUEUE_NUM:
        // Checked (power of two, at most QueueNumMax) when the queue is handed to the device.
        queue.size = value > queue.max_size ? 0 : static_cast<uint16_t>(value);
        return;
    case QUEUE_READY:
        queue.ready = (value & 1) != 0;
        return;
    case QUEUE_DESC_LOW:
        return set_low(queue.descriptor_table, value);
    case QUEUE_DESC_HIGH:
        return set_high(queue.descriptor_table, value);
    case QUEUE_DRIVER_LOW:
        return set_low(queue.available_ring, value);
    case QUEUE_DRIVER_HIGH:
        return set_high(queue.available_ring, value);
    case QUEUE_DEVICE_LOW:
        return set_low(queue.used_ring, value);
    case QUEUE_DEVICE_HIGH:
        return set_high(queue.used_ring, value);
    default:
        guest_error(fmt::format("write of {:#x} to unknown register {:#x}", value, offset));
        return;
    }
}

// Called with m_lock held.
void MmioTransport::write_status(uint32_t value) {
    if (value == 0) {
        reset_registers();
        post(Command { Command::Kind::Reset, {}, m_epoch });
        return;
    }
    // 2.1: DEVICE_NEEDS_RESET is set only by the device; a driver that writes back what it read
    // (read-modify-write, as Linux's virtio core does) may carry it, so it is dropped, not refused.
    value &= ~STATUS_DEVICE_NEEDS_RESET;
    // The other bits are reserved (2.1, "Bits marked reserved ... MUST NOT be set"); a write
    // setting one is a driver error and is ignored whole, so no reserved bit is ever stored
    // and read back, or carried into a snapshot that restore would then refuse.
    if (value & ~STATUS_DRIVER_WRITABLE) {
        guest_error(fmt::format("status {:#x} sets reserved bits {:#x}", value, value & ~STATUS_DRIVER_WRITABLE));
        return;
    }
    if (value & STATUS_FAILED) { // the driver gave up (3.1.1 step 8): keep the bit, do nothing else
        m_status |= STATUS_FAILED;
        return;
    }
    uint32_t const kept = m_status & ~STATUS_DEVICE_NEEDS_RESET;
    uint32_t const added = value & ~kept;
    // 2.1.2: the driver never clears a bit except by reset; bits are set in the order of 3.1.1.
    if ((value & kept) != kept) {
        guest_error(fmt::format("status {:#x} clears bits of {:#x} without a reset", value, m_status));
        return;
    }
    auto const order_ok = [&](uint32_t bit, uint32_t required) {
        return !(added & bit) || (value & required) == required;
    };
    if (!order_ok(STATUS_DRIVER, STATUS_ACKNOWLEDGE) ||
        !order_ok(STATUS_FEATURES_OK, STATUS_ACKNOWLEDGE | STATUS_DRIVER) ||
        !order_ok(STATUS_DRIVER_OK, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)) {
        guest_error(fmt::format("status {:#x} sets bits out of order (was {:#x})", value, m_status));
        return;
    }
    if (added & STATUS_FEATURES_OK) {
        // 3.1.1 step 5-6: refuse feature sets the device did not offer or without VERSION_1
        // by leaving FEATURES_OK clear; the driver reads it back and gives up.
        bool const subset = (m_driver_features & ~m_offered_features) == 0;
        if (!subset || !has_feature(m_driver_features, FEATURE_VERSION_1)) {
            guest_error(fmt::format("driver features {:#x} refused (offered {:#x}; VERSION_1 is required)",
                                    m_driver_features, m_offered_features));
            value &= ~STATUS_FEATURES_OK;
        }
    }
    // DRIVER_OK needs FEATURES_OK; written together with a FEATURES_OK just refused, it goes too,
    // or the device would be activated with features it never offered.
    if (!(value & STATUS_FEATURES_OK))
        value &= ~STATUS_DRIVER_OK;
    m_status = value | (m_status & STATUS_DEVICE_NEEDS_RESET);
    if (added & value & STATUS_DRIVER_OK) {
        auto context = make_activation_context(m_queue_registers, m_driver_features, m_epoch);
        if (!context) {
            m_status |= STATUS_DEVICE_NEEDS_RESET;
            m_interrupt.signal_config_change();
            guest_error(fmt::format("not activated: {}", context.error().message()));
            return;
        }
        post(Command { Command::Kind::Activate, std::move(*context), m_epoch });
    }
}

Expected<ActivationContext> MmioTransport::make_activation_context(std::span<QueueRegisters const> queues,
                                                                   uint64_t features, uint64_t epoch) {
    ActivationContext context;
    context.features = features;
    context.memory = &m_memory;
    context.interrupt = &m_interrupt;
    for (size_t i = 0; i < queues.size(); ++i) {
        auto const& registers = queues[i];
        if (!registers.ready) {
            context.queues.emplace_back(std::nullopt);
            continue;
        }
        QueueConfig const config { registers.size, GuestAddress(registers.descriptor_table),
                                   GuestAddress(registers.available_ring), GuestAddress(registers.used_ring) };
        auto queue = Queue::create(m_memory, config, features);
        if (!queue)
            return Error::format("queue {}: {}", i, queue.error().message());
        context.queues.emplace_back(std::move(*queue));
    }
    context.fail = [this, epoch](Error const& error) { fail(epoch, error); };
    // The queue's notify eventfd stays readable, so the level-triggered loop comes back to
    // it only after serving the other fds that were ready in the same round.
    context.reschedule = [this](size_t queue_index) {
        if (queue_index < m_notify.size())
            (void)m_notify[queue_index].signal();
    };
    return context;
}

// Called with m_lock held. 4.2.2.1: on reset the device clears InterruptStatus and every
// QueueReady; the driver then renegotiates from scratch.
void MmioTransport::reset_registers() {
    m_status = 0;
    m_device_features_select = 0;
    m_driver_features_select = 0;
    m_driver_features = 0;
    m_queue_select = 0;
    for (auto& queue : m_queue_registers)
        queue = QueueRegisters { queue.max_size, queue.max_size, false, 0, 0, 0 };
    m_interrupt.reset();
    ++m_epoch;
}

// Called with m_lock held. A driver can reset and re-activate a device from a vCPU as fast as
// it likes, faster than the event loop runs commands, so the queue is coalesced instead of
// growing: a reset supersedes everything still pending (a pending activation is stale once the
// driver has reset, and two resets do what one does). DRIVER_OK is only accepted after a reset,
// so at most [Reset, Activate] is ever queued.
void MmioTransport::post(Command command) {
    ++m_commands_posted;
    if (command.kind == Command::Kind::Reset) {
        m_commands_coalesced += m_commands.size();
        m_commands.clear();
    }
    m_commands.push_back(std::move(command));
    (void)m_control.signal();
}

void MmioTransport::run_commands() {
    (void)m_control.consume();
    while (true) {
        std::optional<Command> command;
        bool stale = false;
        {
            MutexLock guard(m_lock);
            if (m_commands.empty())
                return;
            command.emplace(std::move(m_commands.front()));
            m_commands.pop_front();
            stale = command->epoch != m_epoch;
        }
        // An activation the driver has already reset away must not touch its old rings.
        if (command->kind == Command::Kind::Activate && stale)
            continue;
        if (command->kind == Command::Kind::Reset) {
            if (m_active)
                m_device->reset();
            m_active = false;
            m_failed = false;
            continue;
        }
        if (m_active) { // a DRIVER_OK without a reset in between is refused by write_status
            m_device->reset();
            m_active = false;
        }
        auto const queue_count = command->context.queues.size();
        m_failed = false;
        m_active = true;
        ++m_activations;
        auto activated = m_device->activate(std::move(command->context));
        if (!activated) {
            m_active = false;
            fail(command->epoch, activated.error());
            continue;
        }
        // Notifications that raced with the activation found the device inactive: poll once.
        for (size_t i = 0; i < queue_count && m_active && !m_failed; ++i)
            m_device->process_queue(i);
    }
}

void MmioTransport::on_notify(size_t index) {
    (void)m_notify[index].consume();
    if (m_active && !m_failed)
        m_device->process_queue(index);
}

void MmioTransport::fail(uint64_t epoch, Error const& error) {
    {
        MutexLock guard(m_lock);
        if (epoch != m_epoch)
            return; // the driver has reset the device since
        m_status |= STATUS_DEVICE_NEEDS_RESET;
    }
    m_failed = true;
    m_interrupt.signal_config_change();
    guest_error(fmt::format("device needs reset: {}", error.message()));
}

void MmioTransportState::encode(StateWriter& writer) const {
    writer.begin_section(SECTION, VERSION);
    writer.u32(device_type);
    writer.u32(status);
    writer.u32(device_features_select);
    writer.u32(driver_features_select);
    writer.u64(driver_features);
    writer.u32(queue_select);
    writer.u32(interrupt_status);
    writer.boolean(active);
    writer.boolean(failed);
    writer.u64(queues.size());
    for (auto const& queue : queues) {
        writer.u16(queue.max_size);
        writer.u16(queue.size);
        writer.boolean(queue.ready);
        writer.u64(queue.descriptor_table);
        writer.u64(queue.available_ring);
        writer.u64(queue.used_ring);
    }
    writer.end_section();
}

Expected<MmioTransportState> MmioTransportState::decode(StateReader& reader) {
    TRY(reader.begin_section(SECTION, VERSION));
    MmioTransportState state;
    state.device_type = TRY(reader.u32("device_type"));
    state.status = TRY(reader.u32("status"));
    state.device_features_select = TRY(reader.u32("device_features_select"));
    state.driver_features_select = TRY(reader.u32("driver_features_select"));
    state.driver_features = TRY(reader.u64("driver_features"));
    state.queue_select = TRY(reader.u32("queue_select"));
    state.interrupt_status = TRY(reader.u32("interrupt_status"));
    state.active = TRY(reader.boolean("active"));
    state.failed = TRY(reader.boolean("failed"));
    auto const count = TRY(reader.u64_in_range("queue_count", 0, MAX_QUEUES));
    state.queues.resize(static_cast<size_t>(count));
    for (size_t i = 0; i < state.queues.size(); ++i) {
        auto& queue = state.queues[i];
        auto const field = [i](std::string_view name) { return fmt::format("queue{}.{}", i, name); };
        queue.max_size = TRY(reader.u16(field("max_size")));
        queue.size = TRY(reader.u16(field("size")));
        queue.ready = TRY(reader.boolean(field("ready")));
        queue.descriptor_table = TRY(reader.u64(field("descriptor_table")));
        queue.available_ring = TRY(reader.u64(field("available_ring")));
        queue.used_ring = TRY(reader.u64(field("used_ring")));
    }
    TRY(reader.end_section());
    return state;
}

MmioTransportState MmioTransport::save() const {
    MmioTransportState state;
    state.device_type = static_cast<uint32_t>(m_device->type());
    state.interrupt_status = m_interrupt.status();
    state.active = m_active;
    state.failed = m_failed;
    MutexLock guard(m_lock);
    state.status = m_status;
    state.device_features_select = m_device_features_select;
    state.driver_features_select = m_driver_features_select;
    state.driver_features = m_driver_features;
    state.queue_select = m_queue_select;
    state.queues = m_queue_registers;
    return state;
}

Expected<void> MmioTransport::save_state(StateWriter& writer) const {
    if (size_t const pending = pending_commands(); pending > 0)
        return Error::format("virtio {}: {} reset or activation command(s) from the driver have not run yet; "
                             "run them (run_pending_commands) before saving",
                             m_name, pending);
    save().encode(writer);
    return m_device->save_state(writer);
}

namespace {

template <typename... Arguments>
Error refuse(std::string_view field, fmt::format_string<Arguments...> format, Arguments&&... arguments) {
    return Error::format("saved state {}/{}: {}", MmioTransportState::SECTION, field,
                         fmt::format(format, std::forward<Arguments>(arguments)...));
}

} // namespace

// Only states that the registers and run_commands() can reach are accepted, so a restored
// transport never holds a combination its own code assumes impossible.
Expected<void> MmioTransport::check_state(MmioTransportState const& state) const {
    if (state.device_type != static_cast<uint32_t>(m_device->type()))
        return refuse("device_type", "{} but this transport's device is type {}", state.device_type,
                      static_cast<uint32_t>(m_device->type()));
    if (state.queues.size() != m_queue_registers.size())
        return refuse("queue_count", "{} but this device has {} queues", state.queues.size(), m_queue_registers.size());
    bool const serving = state.active && !state.failed;
    for (size_t i = 0; i < state.queues.size(); ++i) {
        auto const& queue = state.queues[i];
        uint16_t const max_size = m_queue_registers[i].max_size;
        if (queue.max_size != max_size)
            return refuse(fmt::format("queue{}.max_size", i), "{} but this device's queue {} holds {}", queue.max_size,
                          i, max_size);
        // A QueueNum above QueueNumMax is stored as 0, so a larger size was never in the register.
        if (queue.size > max_size)
            return refuse(fmt::format("queue{}.size", i), "{} is more than the maximum {}", queue.size, max_size);
        // Until DRIVER_OK any size the driver wrote is kept (and checked then); a queue that an
        // active device uses passed Queue::create.
        if (serving && queue.ready && !std::has_single_bit(queue.size))
            return refuse(fmt::format("queue{}.size", i), "{} is not a power of two, but the device uses the queue",
                          queue.size);
    }
    uint32_t const known = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK |
                           STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED;
    uint32_t const status = state.status;
    auto const has = [status](uint32_t bits) { return (status & bits) == bits; };
    if (status & ~known)
        return refuse("status", "{:#x} has bits no device status has", status);
    if ((has(STATUS_DRIVER) && !has(STATUS_ACKNOWLEDGE)) ||
        (has(STATUS_FEATURES_OK) && !has(STATUS_ACKNOWLEDGE | STATUS_DRIVER)) ||
        (has(STATUS_DRIVER_OK) && !has(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)))
        return refuse("status", "{:#x} sets bits out of the initialization order", status);
    if (has(STATUS_DEVICE_NEEDS_RESET) && !has(STATUS_DRIVER_OK))
        return refuse("status", "{:#x}: DEVICE_NEEDS_RESET is only set after DRIVER_OK", status);
    // The driver's proposal is checked at FEATURES_OK; a well-behaved driver only proposes bits
    // it was offered, so unoffered bits here mean the state comes from another device
    // configuration.
    if (state.driver_features & ~m_offered_features)
        return refuse("driver_features", "{:#x} has bits this device does not offer ({:#x})", state.driver_features,
                      m_offered_features);
    if (has(STATUS_FEATURES_OK) && !has_feature(state.driver_features, FEATURE_VERSION_1))
        return refuse("driver_features", "{:#x} lacks VERSION_1 but FEATURES_OK is set", state.driver_features);
    if (state.interrupt_status & ~(INTERRUPT_USED_BUFFER | INTERRUPT_CONFIG_CHANGE))
        return refuse("interrupt_status", "{:#x} has bits no interrupt status has", state.interrupt_status);
    // With no command queued (save_state refuses otherwise): DRIVER_OK either activated the
    // device or put it into DEVICE_NEEDS_RESET, and a device failure always sets that bit.
    if (state.active && !has(STATUS_DRIVER_OK))
        return refuse("active", "the device is active without DRIVER_OK (status {:#x})", status);
    if (state.failed && !has(STATUS_DEVICE_NEEDS_RESET))
        return refuse("failed", "the device failed without DEVICE_NEEDS_RESET (status {:#x})", status);
    if (has(STATUS_DRIVER_OK) && !has(STATUS_DEVICE_NEEDS_RESET) && !serving)
        return refuse("active", "DRIVER_OK is set (status {:#x}) but the device is not serving its queues", status);
    if (has(STATUS_DEVICE_NEEDS_RESET) && serving)
        return refuse("failed", "DEVICE_NEEDS_RESET is set but the device is serving its queues");
    return {};
}

// Event-loop thread, vCPUs stopped: no register access runs concurrently, so checking and
// then applying under m_lock sees no change in between.
Expected<void> MmioTransport::restore_state(StateReader& reader) {
    uint64_t epoch = 0;
    {
        MutexLock guard(m_lock);
        if (!m_commands.empty() || m_active)
            return Error::format("virtio {}: restore into a transport whose device is in use (active or with "
                                 "commands queued); restore into one just created or reset",
                                 m_name);
        epoch = m_epoch + 1; // callbacks of anything handed out before the restore stay inert
    }
    auto const state = TRY(MmioTransportState::decode(reader));
    TRY(check_state(state));
    bool const serving = state.active && !state.failed;
    std::optional<ActivationContext> context;
    if (serving) {
        auto made = make_activation_context(state.queues, state.driver_features, epoch);
        if (!made)
            return Error::format("saved state {}: {}", MmioTransportState::SECTION, made.error().message());
        context.emplace(std::move(*made));
    }
    // The device checks its section and changes nothing when it refuses; after it accepts, the
    // registers follow and nothing below can fail.
    TRY(m_device->restore_state(reader, std::move(context)));
    {
        MutexLock guard(m_lock);
        m_status = state.status;
        m_device_features_select = state.device_features_select;
        m_driver_features_select = state.driver_features_select;
        m_driver_features = state.driver_features;
        m_queue_select = state.queue_select;
        m_queue_registers = state.queues;
        m_epoch = epoch;
    }
    m_interrupt.restore_status(state.interrupt_status);
    m_active = state.active;
    m_failed = state.failed;
    // Poll every queue the device serves once, as run_commands() does after an activation: a
    // notification the guest sent after the device's last look (an ioeventfd count, a
    // reschedule at the work budget) is not part of any state, so it would otherwise be lost.
    // Polling a queue with nothing new pops nothing and returns, so this is always safe. The
    // polls go through the notify eventfds rather than running here, so the device's first
    // work happens on the event loop's next round, after the rest of the machine is restored.
    if (serving) {
        for (size_t i = 0; i < state.queues.size(); ++i)
            if (state.queues[i].ready)
                (void)m_notify[i].signal();
    }
    return {};
}

void MmioTransport::guest_error(std::string const& message) {
    // One line per second per device at most: a hostile driver must not flood the log.
    m_guest_log.warn("virtio {}: {}", m_name, message);
}

} // namespace kvmm::virtio
