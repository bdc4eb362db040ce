/*
 * Hostile drivers for the test guest: scenarios that try to hold kvmm's event
 * loop or grow its memory through virtio, for the KVM tier's hostile-guest
 * suite (tests/kvm/hostile_guest_test.cc). Each one runs until the host ends
 * the VM; what kvmm must do meanwhile (answer its API, honour SIGTERM, keep
 * its memory bounded) is checked from outside.
 *
 * The guest runs at CPL0, possibly through KVM's instruction emulator, so it
 * is slow; the attacks make kvmm's side expensive instead: large buffers,
 * descriptors that alias one buffer, indirect tables shared by every chain,
 * and buffers re-posted as soon as they come back. Included by guest.c after
 * virtio_driver.h.
 */
#define HOSTILE_QUEUE_SIZE 256
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTIO_F_INDIRECT_DESC (1u << 28)
/* Guest-physical scratch area for the large buffers (the guest image ends far below). */
#define HOSTILE_BUFFER 0x4000000u
#define HOSTILE_BUFFER_SIZE 0x4000000u /* 64 MiB; needs --memory 256M */
#define HOSTILE_TABLE 0x3000000u       /* indirect tables, 48 MiB */

struct hostile_queue {
    struct virtq_desc desc[HOSTILE_QUEUE_SIZE] __attribute__((aligned(16)));
    struct {
        uint16_t flags, idx, ring[HOSTILE_QUEUE_SIZE], used_event;
    } avail __attribute__((aligned(2)));
    struct {
        uint16_t flags, idx;
        struct {
            uint32_t id, len;
        } ring[HOSTILE_QUEUE_SIZE];
        uint16_t avail_event;
    } used __attribute__((aligned(4096)));
    uint16_t last_used;
} __attribute__((aligned(4096)));

static struct hostile_queue hostile_queues[2];

static void hostile_setup(uint32_t base, uint32_t index, struct hostile_queue* queue) {
    virtio_setup_queue(base, index, HOSTILE_QUEUE_SIZE, queue->desc, &queue->avail, &queue->used);
}

static void hostile_offer(struct hostile_queue* queue, uint16_t head) {
    queue->avail.ring[queue->avail.idx % HOSTILE_QUEUE_SIZE] = head;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    queue->avail.idx++;
}

/* Offers every head 0..255 (each a one-descriptor chain set up by the caller) and notifies. */
static void hostile_offer_all(uint32_t base, uint32_t index, struct hostile_queue* queue) {
    for (uint32_t head = 0; head < HOSTILE_QUEUE_SIZE; ++head)
        hostile_offer(queue, (uint16_t)head);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    virtio_write(base, 0x050, index);
}

/* Gives every chain the device returned straight back; returns how many. */
static uint32_t hostile_repost(uint32_t base, uint32_t index, struct hostile_queue* queue) {
    uint32_t reposted = 0;
    while (*(volatile uint16_t*)&queue->used.idx != queue->last_used) {
        uint16_t const head = (uint16_t)queue->used.ring[queue->last_used % HOSTILE_QUEUE_SIZE].id;
        queue->last_used++;
        hostile_offer(queue, head);
        ++reposted;
    }
    if (reposted) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        virtio_write(base, 0x050, index);
    }
    return reposted;
}

/* Prints a line every 256 re-posted chains, so the host sees that the attack runs. */
static void hostile_progress(uint64_t* total, uint32_t reposted) {
    uint64_t const before = *total;
    *total += reposted;
    if ((before >> 8) != (*total >> 8)) {
        put_string("hostile: ");
        put_decimal(*total);
        put_string(" chains\n");
    }
}

/* 256 writable 64 KiB buffers (all one region) on the entropy device, re-posted forever. */
static void hostile_rng_arm(uint32_t base) {
    struct hostile_queue* queue = &hostile_queues[0];
    virtio_negotiate(base, 4, 0);
    hostile_setup(base, 0, queue);
    virtio_driver_ok(base);
    for (int head = 0; head < HOSTILE_QUEUE_SIZE; ++head)
        queue->desc[head] = (struct virtq_desc) { HOSTILE_BUFFER, 64 * 1024, VIRTQ_DESC_F_WRITE, 0 };
    hostile_offer_all(base, 0, queue);
}

static void scenario_hostile_rng(void) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    hostile_rng_arm(base);
    put_string("kvmm-test: hostile-rng running\n");
    uint64_t total = 0;
    for (;;)
        hostile_progress(&total, hostile_repost(base, 0, &hostile_queues[0]));
}

/* The entropy flood above plus the second device (a virtio console) reset and re-activated
 * on every round: each reset and activation is work queued for kvmm's event loop. */
static void scenario_hostile_reset(void) {
    uint32_t const rng = VIRTIO_MMIO_BASE;
    uint32_t const console = VIRTIO_MMIO_BASE + VIRTIO_SLOT_SIZE;
    hostile_rng_arm(rng);
    put_string("kvmm-test: hostile-reset running\n");
    uint64_t total = 0;
    for (;;) {
        hostile_progress(&total, hostile_repost(rng, 0, &hostile_queues[0]));
        virtio_start(console, 3, virtio_queues, 2, 0);
    }
}

/* Transmit chains of 256 x 64 MiB (16 GiB each) through one shared indirect table, on every
 * head of the console's transmit queue, re-posted forever. */
static void scenario_hostile_console(void) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    struct hostile_queue* transmit = &hostile_queues[0];
    struct virtq_desc* table = (struct virtq_desc*)(uintptr_t)HOSTILE_TABLE;
    for (int i = 0; i < HOSTILE_QUEUE_SIZE; ++i)
        table[i] =
            (struct virtq_desc) { HOSTILE_BUFFER, HOSTILE_BUFFER_SIZE,
                                  (uint16_t)(i + 1 < HOSTILE_QUEUE_SIZE ? VIRTQ_DESC_F_NEXT : 0), (uint16_t)(i + 1) };
    virtio_negotiate(base, 3, VIRTIO_F_INDIRECT_DESC);
    virtio_setup_queue(base, 0, VIRTIO_QUEUE_SIZE, virtio_queues[0].desc, &virtio_queues[0].avail,
                       &virtio_queues[0].used);
    hostile_setup(base, 1, transmit);
    virtio_driver_ok(base);
    for (int head = 0; head < HOSTILE_QUEUE_SIZE; ++head)
        transmit->desc[head] = (struct virtq_desc) { HOSTILE_TABLE, 16 * HOSTILE_QUEUE_SIZE, VIRTQ_DESC_F_INDIRECT, 0 };
    hostile_offer_all(base, 1, transmit);
    for (;;)
        hostile_repost(base, 1, transmit);
}

/* Block reads of `segments` x `segment_kib` KiB (default 31 x 64 MiB, about 2 GiB) into one
 * aliased buffer, on all 256 heads through one shared indirect table, re-posted forever. */
static void scenario_hostile_blk(char const* cmdline) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    uint64_t segments = value_number(parameter(cmdline, "segments"));
    uint64_t segment_kib = value_number(parameter(cmdline, "segment_kib"));
    if (segments == 0 || segments > HOSTILE_QUEUE_SIZE - 2)
        segments = 31;
    if (segment_kib == 0 || segment_kib * 1024 > HOSTILE_BUFFER_SIZE)
        segment_kib = HOSTILE_BUFFER_SIZE / 1024;
    struct hostile_queue* queue = &hostile_queues[0];
    struct virtq_desc* table = (struct virtq_desc*)(uintptr_t)HOSTILE_TABLE;
    uint32_t const count = (uint32_t)segments + 2;
    table[0] = (struct virtq_desc) { (uint64_t)(uintptr_t)&blk_header, sizeof(blk_header), VIRTQ_DESC_F_NEXT, 1 };
    for (uint32_t i = 1; i <= segments; ++i)
        table[i] = (struct virtq_desc) { HOSTILE_BUFFER, (uint32_t)(segment_kib * 1024),
                                         VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1) };
    table[count - 1] = (struct virtq_desc) { (uint64_t)(uintptr_t)&blk_status, 1, VIRTQ_DESC_F_WRITE, 0 };
    blk_header.type = 0; /* IN */
    blk_header.sector = 0;
    virtio_negotiate(base, 2, VIRTIO_F_INDIRECT_DESC);
    hostile_setup(base, 0, queue);
    virtio_driver_ok(base);
    for (int head = 0; head < HOSTILE_QUEUE_SIZE; ++head)
        queue->desc[head] = (struct virtq_desc) { HOSTILE_TABLE, 16 * count, VIRTQ_DESC_F_INDIRECT, 0 };
    hostile_offer_all(base, 0, queue);
    put_string("kvmm-test: hostile-blk running\n");
    uint64_t total = 0;
    for (;;)
        hostile_progress(&total, hostile_repost(base, 0, queue));
}

/* virtio-vsock (5.10.6): a guest that opens `connections` (default 1100) stream connections to
 * host port `port` (default 1234) and never sends data; the host side listens and never
 * accepts. Receive buffers are re-posted forever, so every answer reaches the guest. */
struct vsock_header {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static void vsock_request(struct vsock_header* header, uint64_t guest_cid, uint32_t src_port, uint32_t dst_port) {
    *header = (struct vsock_header) { guest_cid,      2 /* the host */, src_port, dst_port, 0,
                                      1 /* STREAM */, 1 /* REQUEST */,  0,        65536,    0 };
}

static void scenario_hostile_vsock(char const* cmdline) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    uint64_t connections = value_number(parameter(cmdline, "connections"));
    uint64_t port = value_number(parameter(cmdline, "port"));
    if (connections == 0)
        connections = 1100;
    if (port == 0)
        port = 1234;
    struct hostile_queue* receive = &hostile_queues[0];
    struct hostile_queue* transmit = &hostile_queues[1];
    struct vsock_header* headers = (struct vsock_header*)(uintptr_t)HOSTILE_TABLE; /* one per head */
    virtio_negotiate(base, 19, 0);
    uint64_t const guest_cid = (uint64_t)virtio_read(base, 0x100) | ((uint64_t)virtio_read(base, 0x104) << 32);
    hostile_setup(base, 0, receive);
    hostile_setup(base, 1, transmit);
    virtio_setup_queue(base, 2, VIRTIO_QUEUE_SIZE, virtio_queues[0].desc, &virtio_queues[0].avail,
                       &virtio_queues[0].used);
    virtio_driver_ok(base);
    for (int head = 0; head < HOSTILE_QUEUE_SIZE; ++head)
        receive->desc[head] =
            (struct virtq_desc) { HOSTILE_BUFFER + (uint64_t)head * 4096, 4096, VIRTQ_DESC_F_WRITE, 0 };
    hostile_offer_all(base, 0, receive);
    uint64_t sent = 0;
    for (int head = 0; head < HOSTILE_QUEUE_SIZE && sent < connections; ++head, ++sent) {
        vsock_request(&headers[head], guest_cid, (uint32_t)(40000 + sent), (uint32_t)port);
        transmit->desc[head] = (struct virtq_desc) { (uint64_t)(uintptr_t)&headers[head], sizeof(headers[head]), 0, 0 };
        hostile_offer(transmit, (uint16_t)head);
    }
    virtio_write(base, 0x050, 1);
    put_string("kvmm-test: hostile-vsock running\n");
    uint64_t answered = 0;
    for (;;) {
        hostile_progress(&answered, hostile_repost(base, 0, receive));
        /* Each transmit head that came back carries the next connection request. */
        uint32_t offered = 0;
        while (sent < connections && *(volatile uint16_t*)&transmit->used.idx != transmit->last_used) {
            uint16_t const head = (uint16_t)transmit->used.ring[transmit->last_used % HOSTILE_QUEUE_SIZE].id;
            transmit->last_used++;
            vsock_request(&headers[head], guest_cid, (uint32_t)(40000 + sent), (uint32_t)port);
            hostile_offer(transmit, head);
            ++sent;
            ++offered;
        }
        if (offered) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            virtio_write(base, 0x050, 1);
        }
    }
}

/* Host-initiated connections to guest port `port` (default 5000) must keep working after the
 * guest opens its own connection with the key the host side would use next: guest port `port`
 * to host port 2^30 (kvmm's first port for host-initiated connections). The guest answers
 * every connection request it receives. */
static void scenario_vsock_collide(char const* cmdline) {
    uint32_t const base = VIRTIO_MMIO_BASE;
    uint64_t port = value_number(parameter(cmdline, "port"));
    if (port == 0)
        port = 5000;
    struct hostile_queue* receive = &hostile_queues[0];
    struct hostile_queue* transmit = &hostile_queues[1];
    struct vsock_header* replies = (struct vsock_header*)(uintptr_t)HOSTILE_TABLE;
    virtio_negotiate(base, 19, 0);
    uint64_t const guest_cid = (uint64_t)virtio_read(base, 0x100) | ((uint64_t)virtio_read(base, 0x104) << 32);
    hostile_setup(base, 0, receive);
    hostile_setup(base, 1, transmit);
    virtio_setup_queue(base, 2, VIRTIO_QUEUE_SIZE, virtio_queues[0].desc, &virtio_queues[0].avail,
                       &virtio_queues[0].used);
    virtio_driver_ok(base);
    for (int head = 0; head < HOSTILE_QUEUE_SIZE; ++head) {
        receive->desc[head] =
            (struct virtq_desc) { HOSTILE_BUFFER + (uint64_t)head * 4096, 4096, VIRTQ_DESC_F_WRITE, 0 };
        transmit->desc[head] = (struct virtq_desc) { (uint64_t)(uintptr_t)&replies[head], sizeof(replies[head]), 0, 0 };
    }
    hostile_offer_all(base, 0, receive);
    /* Transmit heads are used round-robin; the queue is far larger than what is in flight. */
    uint16_t next_transmit = 0;
    vsock_request(&replies[next_transmit], guest_cid, (uint32_t)port, 1u << 30);
    hostile_offer(transmit, next_transmit++);
    virtio_write(base, 0x050, 1);
    put_string("kvmm-test: vsock-collide running\n");
    for (;;) {
        while (*(volatile uint16_t*)&receive->used.idx != receive->last_used) {
            uint16_t const head = (uint16_t)receive->used.ring[receive->last_used % HOSTILE_QUEUE_SIZE].id;
            receive->last_used++;
            struct vsock_header const* packet = (struct vsock_header const*)(uintptr_t)(HOSTILE_BUFFER + head * 4096u);
            if (packet->op == 1 /* REQUEST */) {
                struct vsock_header* reply = &replies[next_transmit % HOSTILE_QUEUE_SIZE];
                vsock_request(reply, guest_cid, packet->dst_port, packet->src_port);
                reply->op = 2; /* RESPONSE */
                hostile_offer(transmit, (uint16_t)(next_transmit++ % HOSTILE_QUEUE_SIZE));
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                virtio_write(base, 0x050, 1);
                put_string("vsock-collide: answered a connection request\n");
            }
            hostile_offer(receive, head);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            virtio_write(base, 0x050, 0);
        }
    }
}
