/*
 * A minimal virtio-mmio driver for the test guest (virtio 1.2 sections 3.1.1,
 * 4.2.3 and 2.7): one split queue of 8 descriptors per queue index, polled or
 * interrupt-driven, enough to exercise kvmm's transport, ioeventfd/irqfd paths
 * and devices from real guest code. Included by guest.c after its console and
 * MMIO helpers (the guest is a single translation unit on purpose: no libc,
 * no linker tricks).
 */
#define VIRTIO_MMIO_BASE 0xd0000000u
#define VIRTIO_SLOT_SIZE 0x1000u
#define VIRTIO_VECTOR 0x32
#define VIRTIO_QUEUE_SIZE 8
#define VIRTIO_FIRST_GSI 5

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq {
    struct virtq_desc desc[VIRTIO_QUEUE_SIZE] __attribute__((aligned(16)));
    struct {
        uint16_t flags, idx, ring[VIRTIO_QUEUE_SIZE], used_event;
    } avail __attribute__((aligned(2)));
    struct {
        uint16_t flags, idx;
        struct {
            uint32_t id, len;
        } ring[VIRTIO_QUEUE_SIZE];
        uint16_t avail_event;
    } used __attribute__((aligned(4096)));
    uint16_t last_used;
} __attribute__((aligned(4096)));

extern void virtio_interrupt(void);
volatile uint32_t virtio_interrupt_count;

static uint32_t virtio_read(uint32_t base, uint32_t offset) { return mmio_read(base + offset); }
static void virtio_write(uint32_t base, uint32_t offset, uint32_t value) { mmio_write(base + offset, value); }

/* 3.1.1 up to FEATURES_OK: reset, ACKNOWLEDGE, DRIVER, features (VERSION_1 and features_low). */
static void virtio_negotiate(uint32_t base, uint32_t device_id, uint32_t features_low) {
    if (virtio_read(base, 0x000) != 0x74726976 || virtio_read(base, 0x004) != 2)
        fail("no virtio-mmio v2 device");
    if (virtio_read(base, 0x008) != device_id)
        fail("unexpected virtio device id");
    virtio_write(base, 0x070, 0);
    virtio_write(base, 0x070, 1);
    virtio_write(base, 0x070, 3);
    virtio_write(base, 0x014, 1);
    if (!(virtio_read(base, 0x010) & 1))
        fail("device does not offer VIRTIO_F_VERSION_1");
    virtio_write(base, 0x014, 0);
    features_low &= virtio_read(base, 0x010);
    virtio_write(base, 0x024, 0);
    virtio_write(base, 0x020, features_low);
    virtio_write(base, 0x024, 1);
    virtio_write(base, 0x020, 1);
    virtio_write(base, 0x070, 3 | 8);
    if (!(virtio_read(base, 0x070) & 8))
        fail("FEATURES_OK refused");
}

/* 4.2.3.2: one queue of `size` entries whose three parts are at the given addresses. */
static void virtio_setup_queue(uint32_t base, uint32_t index, uint32_t size, void const* descriptors,
                               void const* available, void const* used) {
    virtio_write(base, 0x030, index);
    if (virtio_read(base, 0x034) < size)
        fail("queue too small");
    virtio_write(base, 0x038, size);
    virtio_write(base, 0x080, (uint32_t)(uintptr_t)descriptors);
    virtio_write(base, 0x084, 0);
    virtio_write(base, 0x090, (uint32_t)(uintptr_t)available);
    virtio_write(base, 0x094, 0);
    virtio_write(base, 0x0a0, (uint32_t)(uintptr_t)used);
    virtio_write(base, 0x0a4, 0);
    virtio_write(base, 0x044, 1);
}

static void virtio_driver_ok(uint32_t base) {
    virtio_write(base, 0x070, 3 | 8 | 4);
    if (virtio_read(base, 0x070) & 0x40)
        fail("device needs reset right after DRIVER_OK");
}

/* 3.1.1: reset, ACKNOWLEDGE, DRIVER, features (VERSION_1 only), FEATURES_OK, queues, DRIVER_OK. */
static void virtio_start(uint32_t base, uint32_t device_id, struct virtq* queues, int queue_count,
                         uint32_t features_low) {
    virtio_negotiate(base, device_id, features_low);
    for (int i = 0; i < queue_count; ++i)
        virtio_setup_queue(base, (uint32_t)i, VIRTIO_QUEUE_SIZE, queues[i].desc, &queues[i].avail, &queues[i].used);
    virtio_driver_ok(base);
}

/* Offers a chain of `count` buffers (readable first) on queue `index`, and notifies. */
static void virtio_submit(uint32_t base, struct virtq* queue, int index, void* const* buffers, uint32_t const* lengths,
                          uint16_t const* writable, int count) {
    for (int i = 0; i < count; ++i) {
        queue->desc[i].addr = (uint64_t)(uintptr_t)buffers[i];
        queue->desc[i].len = lengths[i];
        queue->desc[i].flags =
            (uint16_t)((writable[i] ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0));
        queue->desc[i].next = (uint16_t)(i + 1);
    }
    queue->avail.ring[queue->avail.idx % VIRTIO_QUEUE_SIZE] = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    queue->avail.idx++;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    virtio_write(base, 0x050, (uint32_t)index); /* a KVM ioeventfd catches this write */
}

/* Waits for the used ring to move (the interrupt arrives too); returns the used length. */
static uint32_t virtio_wait_used(struct virtq* queue, char const* what) {
    for (int i = 0; i < 2000000 && *(volatile uint16_t*)&queue->used.idx == queue->last_used; ++i)
        __asm__ volatile("pause");
    if (*(volatile uint16_t*)&queue->used.idx == queue->last_used)
        fail(what);
    uint32_t length = queue->used.ring[queue->last_used % VIRTIO_QUEUE_SIZE].len;
    queue->last_used++;
    return length;
}

/* Routes the first virtio slot's GSI to VIRTIO_VECTOR and enables interrupts. */
static void virtio_enable_interrupts(void) {
    set_gate(VIRTIO_VECTOR, virtio_interrupt);
    load_idt(idt, sizeof(idt) - 1);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    enable_lapic();
    ioapic_route(VIRTIO_FIRST_GSI, VIRTIO_VECTOR);
    __asm__ volatile("sti");
}

static struct virtq virtio_queues[2];
static uint8_t virtio_buffer[4096] __attribute__((aligned(4096)));

static void scenario_virtio_rng(void) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    virtio_enable_interrupts();
    virtio_start(base, 4, virtio_queues, 1, 0);
    void* buffers[1] = { virtio_buffer };
    uint32_t lengths[1] = { 64 };
    uint16_t writable[1] = { 1 };
    virtio_submit(base, &virtio_queues[0], 0, buffers, lengths, writable, 1);
    uint32_t const length = virtio_wait_used(&virtio_queues[0], "the entropy device returned nothing");
    if (length != 64)
        fail("the entropy device returned a short buffer");
    wait_for(&virtio_interrupt_count, "no virtio interrupt arrived through the irqfd");
    if (!(virtio_read(base, 0x060) & 1))
        fail("interrupt status lacks the used-buffer bit");
    virtio_write(base, 0x064, 1);
    int nonzero = 0;
    for (int i = 0; i < 64; ++i)
        nonzero += virtio_buffer[i] != 0;
    if (nonzero < 32)
        fail("entropy looks constant");
    __asm__ volatile("cli");
    put_string("kvmm-test: virtio-rng ok\n");
}

static void scenario_virtio_console(void) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    virtio_start(base, 3, virtio_queues, 2, 0);
    static char const message[] = "kvmm-test: hello through hvc0\n";
    void* buffers[1] = { (void*)message };
    uint32_t lengths[1] = { sizeof(message) - 1 };
    uint16_t writable[1] = { 0 };
    virtio_submit(base, &virtio_queues[1], 1, buffers, lengths, writable, 1);
    virtio_wait_used(&virtio_queues[1], "the console did not return the transmit buffer");
}

/* virtio-blk (virtio 1.2 section 5.2.6): header, data, status byte. */
struct virtio_blk_request_header {
    uint32_t type, reserved;
    uint64_t sector;
};
static struct virtio_blk_request_header blk_header;
static uint8_t blk_status;

/* One request; returns the status byte the device wrote (0xff if it wrote none). */
static uint8_t blk_request(uint32_t base, uint32_t type, uint64_t sector, void* data, uint32_t length,
                           int data_writable) {
    blk_header.type = type;
    blk_header.reserved = 0;
    blk_header.sector = sector;
    blk_status = 0xff;
    void* buffers[3] = { &blk_header, data, &blk_status };
    uint32_t lengths[3] = { sizeof(blk_header), length, 1 };
    uint16_t writable[3] = { 0, (uint16_t)data_writable, 1 };
    if (length == 0) { /* FLUSH: header and status only */
        buffers[1] = &blk_status;
        lengths[1] = 1;
        writable[1] = 1;
    }
    virtio_submit(base, &virtio_queues[0], 0, buffers, lengths, writable, length == 0 ? 2 : 3);
    virtio_wait_used(&virtio_queues[0], "the block device did not complete a request");
    return *(volatile uint8_t*)&blk_status;
}

static int bytes_equal(uint8_t const* a, char const* b, int length) {
    for (int i = 0; i < length; ++i)
        if (a[i] != (uint8_t)b[i])
            return 0;
    return 1;
}

static void scenario_virtio_blk(char const* cmdline) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    int const read_only = value_is(parameter(cmdline, "readonly"), "1");
    virtio_start(base, 2, virtio_queues, 1, 1u << 9 /* VIRTIO_BLK_F_FLUSH */);
    uint64_t const capacity = (uint64_t)virtio_read(base, 0x100) | ((uint64_t)virtio_read(base, 0x104) << 32);
    if (blk_request(base, 0 /* IN */, 0, virtio_buffer, 512, 1) != 0)
        fail("reading sector 0 failed");
    if (!bytes_equal(virtio_buffer, "KVMM-DISK-TEST", 14))
        fail("sector 0 does not hold the test pattern");
    put_string("virtio-blk: sector 0 read\n");
    static char const message[] = "written by the guest";
    for (int i = 0; i < 512; ++i)
        virtio_buffer[i] = i < (int)sizeof(message) ? (uint8_t)message[i] : 0;
    uint8_t const write_status = blk_request(base, 1 /* OUT */, 1, virtio_buffer, 512, 0);
    if (read_only ? write_status != 1 : write_status != 0)
        fail(read_only ? "a write to a read-only disk did not fail with IOERR" : "writing sector 1 failed");
    if (!read_only && blk_request(base, 4 /* FLUSH */, 0, 0, 0, 0) != 0)
        fail("flush failed");
    for (int i = 0; i < 20; ++i)
        virtio_buffer[i] = 0;
    if (blk_request(base, 8 /* GET_ID */, 0, virtio_buffer, 20, 1) != 0)
        fail("GET_ID failed");
    put_string("virtio-blk: serial ");
    for (int i = 0; i < 20 && virtio_buffer[i]; ++i)
        put_char((char)virtio_buffer[i]);
    put_char('\n');
    if (blk_request(base, 0 /* IN */, capacity, virtio_buffer, 512, 1) != 1)
        fail("a read past the end did not fail with IOERR");
    put_string("kvmm-test: virtio-blk ok\n");
}
