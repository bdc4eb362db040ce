/*
 * kvmm test guest: small freestanding scenarios selected by "test=<name>" on
 * the kernel command line, each reporting on COM1 and ending with a power-off
 * (ACPI sleep control, port 0x600), a reset (i8042 0xFE) or a triple fault.
 *
 * Guest code at CPL0 may run through KVM's instruction emulator on hosts
 * without hardware virtualisation, so every loop here is short.
 */
#include <stdint.h>

#define COM1 0x3f8
#define POWER_CONTROL_PORT 0x600
#define BOOT_MARKER_PORT 0x440
#define LAPIC_BASE 0xfee00000u
#define IOAPIC_BASE 0xfec00000u
#define TRAMPOLINE_ADDRESS 0x70000u
#define SERIAL_VECTOR 0x30
#define TIMER_VECTOR 0x31

struct start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};

extern char ap_trampoline_start[], ap_trampoline_end[];
extern volatile uint32_t ap_counter;
extern void serial_interrupt(void);
extern void timer_interrupt(void);
volatile uint32_t serial_interrupt_count;
volatile uint32_t timer_interrupt_count;

static volatile uint32_t print_lock;
static volatile uint32_t aps_online;

static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" ::"a"(value), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}
static inline uint32_t inl(uint16_t port) {
    uint32_t value;
    __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}
static inline uint32_t mmio_read(uint32_t address) { return *(volatile uint32_t*)(uintptr_t)address; }
static inline void mmio_write(uint32_t address, uint32_t value) { *(volatile uint32_t*)(uintptr_t)address = value; }

static void lock(void) {
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        __asm__ volatile("pause");
}
static void unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

static void put_char(char c) {
    for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); ++i)
        ;
    outb(COM1, (uint8_t)c);
}
static void put_string(char const* text) {
    while (*text)
        put_char(*text++);
}
static void put_decimal(uint64_t value) {
    char digits[21];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (count)
        put_char(digits[--count]);
}
static void put_hex(uint64_t value) {
    put_string("0x");
    for (int shift = 60; shift >= 0; shift -= 4) {
        uint64_t nibble = (value >> shift) & 0xf;
        if (nibble || shift == 0 || value >> shift)
            put_char("0123456789abcdef"[nibble]);
    }
}
static void put_bcd(uint8_t value) {
    put_char((char)('0' + (value >> 4)));
    put_char((char)('0' + (value & 0xf)));
}

static __attribute__((noreturn)) void halt_forever(void) {
    for (;;)
        __asm__ volatile("cli; hlt");
}
static __attribute__((noreturn)) void power_off(void) {
    outb(POWER_CONTROL_PORT, 0x34); /* SLP_EN | SLP_TYP 5 */
    halt_forever();                 /* a VMM without the register: stay halted */
}
static __attribute__((noreturn)) void fail(char const* why) {
    put_string("kvmm-test: FAIL ");
    put_string(why);
    put_string("\n");
    power_off();
}

/* Finds "key=" in the command line and returns a pointer to its value, or 0. */
static char const* parameter(char const* cmdline, char const* key) {
    for (char const* word = cmdline; *word;) {
        char const* k = key;
        char const* p = word;
        while (*k && *p == *k) {
            ++k;
            ++p;
        }
        if (!*k && *p == '=')
            return p + 1;
        while (*word && *word != ' ')
            ++word;
        while (*word == ' ')
            ++word;
    }
    return 0;
}
static int value_is(char const* value, char const* expected) {
    while (*expected && *value == *expected) {
        ++value;
        ++expected;
    }
    return !*expected && (*value == 0 || *value == ' ');
}
static uint64_t value_number(char const* value) {
    uint64_t number = 0;
    while (value && *value >= '0' && *value <= '9')
        number = number * 10 + (uint64_t)(*value++ - '0');
    return number;
}

struct idt_entry {
    uint16_t offset_low, selector;
    uint8_t ist, type;
    uint16_t offset_middle;
    uint32_t offset_high, reserved;
} __attribute__((packed));
static struct idt_entry idt[256] __attribute__((aligned(16)));

static void set_gate(int vector, void (*handler)(void)) {
    uint64_t address = (uint64_t)(uintptr_t)handler;
    idt[vector] = (struct idt_entry) { (uint16_t)address,         0x08, 0, 0x8e, (uint16_t)(address >> 16),
                                       (uint32_t)(address >> 32), 0 };
}
static void load_idt(void* base, uint16_t limit) {
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) pointer = { limit, (uint64_t)(uintptr_t)base };
    __asm__ volatile("lidt %0" ::"m"(pointer));
}
static void ioapic_route(uint32_t pin, uint8_t vector) {
    mmio_write(IOAPIC_BASE, 0x10 + 2 * pin + 1);
    mmio_write(IOAPIC_BASE + 0x10, 0); /* destination APIC ID 0 */
    mmio_write(IOAPIC_BASE, 0x10 + 2 * pin);
    mmio_write(IOAPIC_BASE + 0x10, vector); /* fixed, physical, edge, active high, unmasked */
}
static void enable_lapic(void) { mmio_write(LAPIC_BASE + 0xf0, 0x1ff); }

static uint32_t apic_id(void) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    return b >> 24;
}

void ap_main(void) {
    lock();
    put_string("cpu ");
    put_decimal(apic_id());
    put_string(" online\n");
    unlock();
    __atomic_add_fetch(&aps_online, 1, __ATOMIC_SEQ_CST);
    halt_forever();
}

static void scenario_hello(void) {
    put_string("kvmm-test-guest: hello\n");
    outb(BOOT_MARKER_PORT, 123);
    put_string("kvmm-test: hello ok\n");
}

static void scenario_echo(void) {
    char line[128];
    unsigned length = 0;
    put_string("ready\n");
    for (;;) {
        if (!(inb(COM1 + 5) & 0x01))
            continue;
        char c = (char)inb(COM1);
        if (c == '\r' || c == '\n') {
            line[length] = 0;
            if (length == 4 && line[0] == 'q' && line[1] == 'u' && line[2] == 'i' && line[3] == 't')
                break;
            put_string("echo: ");
            put_string(line);
            put_string("\n");
            length = 0;
        } else if (length + 1 < sizeof(line)) {
            line[length++] = c;
        }
    }
    put_string("kvmm-test: echo ok\n");
}

static uint8_t cmos(uint8_t index) {
    outb(0x70, index);
    return inb(0x71);
}

static void scenario_io(void) {
    if (inb(0x2f8) != 0xff || inl(0x2f8) != 0xffffffffu)
        fail("unclaimed port did not read all-ones");
    put_string("io: unclaimed port reads all-ones\n");
    if (mmio_read(0xd0000000u) != 0xffffffffu)
        fail("unclaimed MMIO did not read all-ones");
    mmio_write(0xd0000000u, 0x12345678u);
    put_string("io: unclaimed MMIO reads all-ones, write ignored\n");
    outb(0x64, 0xaa);
    int waited = 0;
    while (!(inb(0x64) & 0x01) && ++waited < 1000)
        ;
    if (inb(0x60) != 0x55)
        fail("i8042 self test did not answer 0x55");
    put_string("io: i8042 self test passed\n");
    uint8_t year = cmos(0x09), month = cmos(0x08), day = cmos(0x07);
    uint8_t hour = cmos(0x04), minute = cmos(0x02), second = cmos(0x00);
    if (month == 0 || month > 0x12 || day == 0 || day > 0x31 || hour > 0x23 || second > 0x59)
        fail("RTC returned an impossible date");
    put_string("io: rtc 20");
    put_bcd(year);
    put_char('-');
    put_bcd(month);
    put_char('-');
    put_bcd(day);
    put_char(' ');
    put_bcd(hour);
    put_char(':');
    put_bcd(minute);
    put_char(':');
    put_bcd(second);
    put_string("\nkvmm-test: io ok\n");
}

/* Runs until Ctrl+Alt+Del arrives on the i8042 (scan code set 1: 0x1d Ctrl make), printing
 * one "tick" per second of the RTC so a pause is visible from outside; gives up after 60. */
static void scenario_keyboard_wait(void) {
    put_string("kvmm-test: waiting for ctrl-alt-del\n");
    uint8_t last_second = cmos(0x00);
    for (int ticks = 0; ticks < 60;) {
        if (inb(0x64) & 0x01) {
            if (inb(0x60) == 0x1d) {
                put_string("kvmm-test: ctrl-alt-del received\n");
                return;
            }
        }
        uint8_t const second = cmos(0x00);
        if (second != last_second) {
            last_second = second;
            ++ticks;
            put_string("tick\n");
        }
    }
    fail("no ctrl-alt-del within 60 ticks");
}

/* Prints numbered lines to COM1 for ever, as fast as the host takes them: a page of lines at a
 * time through one string instruction, whose port writes KVM hands to the VMM in batches, and no
 * LSR polling (the host's UART transmits at once), so a host sink that nobody reads fills up.
 * Only the host ends it. */
static void scenario_serial_flood(void) {
    static char page[4096];
    uint64_t line = 0;
    for (;;) {
        uint64_t length = 0;
        while (length < sizeof(page) - 64) {
            for (char const* text = "kvmm-test: serial flood line "; *text;)
                page[length++] = *text++;
            char digits[21];
            int count = 0;
            uint64_t value = line++;
            do {
                digits[count++] = (char)('0' + value % 10);
                value /= 10;
            } while (value);
            while (count)
                page[length++] = digits[--count];
            page[length++] = '\n';
        }
        char const* from = page;
        __asm__ volatile("rep outsb" : "+S"(from), "+c"(length) : "d"((uint16_t)COM1) : "memory");
    }
}

static void wait_for(volatile uint32_t* counter, char const* what) {
    for (int i = 0; i < 200000 && *counter == 0; ++i)
        __asm__ volatile("pause");
    if (*counter == 0)
        fail(what);
}

static void scenario_irq(void) {
    set_gate(SERIAL_VECTOR, serial_interrupt);
    set_gate(TIMER_VECTOR, timer_interrupt);
    load_idt(idt, sizeof(idt) - 1);
    /* Mask the 8259s: the PIT also drives the PIC's IRQ 0, which would arrive through LINT0
     * (ExtINT) with a vector nobody programmed. */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    enable_lapic();
    ioapic_route(4, SERIAL_VECTOR);
    ioapic_route(2, TIMER_VECTOR); /* the PIT's IRQ 0 arrives on GSI 2 (MADT override) */
    __asm__ volatile("sti");
    outb(COM1 + 4, 0x08); /* OUT2: let the UART interrupt reach the interrupt controller */
    outb(COM1 + 1, 0x02); /* interrupt when the transmitter is empty */
    wait_for(&serial_interrupt_count, "no serial interrupt arrived through the IOAPIC");
    outb(COM1 + 1, 0x00);
    put_string("irq: serial interrupt delivered\n");
    outb(0x43, 0x34); /* PIT channel 0, lobyte/hibyte, rate generator */
    outb(0x40, 0x9c);
    outb(0x40, 0x2e); /* 11932: 100 Hz */
    wait_for(&timer_interrupt_count, "no PIT interrupt arrived through the IOAPIC");
    __asm__ volatile("cli");
    put_string("irq: timer interrupt delivered\nkvmm-test: irq ok\n");
}

static void scenario_smp(char const* cmdline) {
    uint64_t cpus = value_number(parameter(cmdline, "cpus"));
    if (cpus == 0)
        cpus = 1;
    if (cpus > 65)
        fail("at most 65 cpus: one per AP stack");
    enable_lapic();
    char* destination = (char*)(uintptr_t)TRAMPOLINE_ADDRESS;
    for (char* source = ap_trampoline_start; source < ap_trampoline_end; ++source)
        *destination++ = *source;
    if (cpus > 1) {
        mmio_write(LAPIC_BASE + 0x310, 0);
        mmio_write(LAPIC_BASE + 0x300, 0x000c4500); /* INIT to all excluding self */
        for (int i = 0; i < 2; ++i)
            mmio_write(LAPIC_BASE + 0x300, 0x000c4600 | (TRAMPOLINE_ADDRESS >> 12)); /* SIPI */
    }
    for (int i = 0; i < 2000000 && aps_online < cpus - 1; ++i)
        __asm__ volatile("pause");
    if (aps_online != cpus - 1)
        fail("not every AP came online");
    lock();
    put_string("smp: ");
    put_decimal(cpus);
    put_string(" cpus online\nkvmm-test: smp ok\n");
    unlock();
}

static void scenario_memory(struct start_info const* info) {
    /* Sum the RAM entries of the PVH memory map and touch the last page of each. */
    struct entry {
        uint64_t address, size;
        uint32_t type, reserved;
    } const* map = (struct entry const*)(uintptr_t)info->memmap_paddr;
    uint64_t total = 0;
    for (uint32_t i = 0; i < info->memmap_entries; ++i) {
        if (map[i].type != 1)
            continue;
        total += map[i].size;
        uint64_t last = map[i].address + map[i].size - 8;
        if (last < 0x100000000ull) {
            *(volatile uint64_t*)(uintptr_t)last = 0x6b766d6dull;
            if (*(volatile uint64_t*)(uintptr_t)last != 0x6b766d6dull)
                fail("RAM at the top of a region did not keep a value");
        }
    }
    put_string("memory: ");
    put_decimal(total >> 20);
    put_string(" MiB in the memory map\nkvmm-test: memory ok\n");
}

/* kvmclock (KVM's paravirtual clock): the host keeps this structure current for the vCPU. */
struct pvclock_time_info {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags, pad[2];
} __attribute__((packed));
static volatile struct pvclock_time_info kvmclock __attribute__((aligned(32)));

static inline uint64_t rdtsc(void) {
    uint32_t low, high;
    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
}
static inline void wrmsr(uint32_t index, uint64_t value) {
    __asm__ volatile("wrmsr" ::"c"(index), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)));
}

/* Turns kvmclock on where the hypervisor offers it (CPUID 0x40000000 "KVMKVMKVM", feature
 * CLOCKSOURCE2); returns 0 without it. */
static int kvmclock_enable(void) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
    if (b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d)
        return 0;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000001), "c"(0));
    if (!(a & (1u << 3)))
        return 0;
    wrmsr(0x4b564d01, (uint64_t)(uintptr_t)&kvmclock | 1); /* MSR_KVM_SYSTEM_TIME_NEW, enabled */
    return 1;
}

/* Guest time in ns since the VM was created, as Linux's kvm-clock computes it. */
static uint64_t kvmclock_ns(void) {
    uint32_t version;
    uint64_t ns;
    do {
        version = kvmclock.version;
        __asm__ volatile("" ::: "memory");
        uint64_t delta = rdtsc() - kvmclock.tsc_timestamp;
        if (kvmclock.tsc_shift >= 0)
            delta <<= kvmclock.tsc_shift;
        else
            delta >>= -kvmclock.tsc_shift;
        ns = kvmclock.system_time + (uint64_t)(((unsigned __int128)delta * kvmclock.tsc_to_system_mul) >> 32);
        __asm__ volatile("" ::: "memory");
    } while ((version & 1) || version != kvmclock.version);
    return ns;
}

/* Counts for ever, printing "counter N clock_ns T" every period_us (kvmclock time; default 20 ms,
 * 0: as fast as the serial port goes), so that a snapshot taken at any moment and restored any
 * number of times shows where the guest goes on from. Each tick also writes the counter into one
 * page of a 1 MiB pattern at 8 MiB and first checks what that page held: the value written one
 * round (256 ticks) earlier, so RAM that a restore lost or mixed up is reported. Only the host
 * ends it. */
#define PATTERN_BASE 0x800000u
#define PATTERN_PAGES 256u
static volatile uint64_t counter;
static void scenario_counter(char const* cmdline) {
    char const* period_text = parameter(cmdline, "period_us");
    uint64_t const period_ns = (period_text ? value_number(period_text) : 20000) * 1000;
    /* fill_mib=N: first writes N MiB from 16 MiB on with data, so that a snapshot has that much
     * memory that is not zeros (for benchmarks of snapshot creation). */
    uint64_t const fill_bytes = value_number(parameter(cmdline, "fill_mib")) << 20;
    if (fill_bytes) {
        void* destination = (void*)(uintptr_t)0x1000000u;
        uint64_t words = fill_bytes / 8;
        __asm__ volatile("rep stosq" : "+D"(destination), "+c"(words) : "a"(0x6b766d6d6b766d6dull) : "memory");
        put_string("kvmm-test: filled ");
        put_decimal(fill_bytes >> 20);
        put_string(" MiB\n");
    }
    int const clock = kvmclock_enable();
    put_string(clock ? "kvmm-test: counter with kvmclock\n" : "kvmm-test: counter without kvmclock\n");
    uint64_t next = clock ? kvmclock_ns() : 0;
    for (;;) {
        uint64_t const value = counter;
        volatile uint64_t* page = (volatile uint64_t*)(uintptr_t)(PATTERN_BASE + (value % PATTERN_PAGES) * 4096);
        /* The first round finds the pages as RAM starts: zeros. */
        uint64_t const expected = value >= PATTERN_PAGES ? value - PATTERN_PAGES : 0;
        uint64_t const expected_end = value >= PATTERN_PAGES ? ~expected : 0;
        if (page[0] != expected || page[511] != expected_end) {
            put_string("kvmm-test: FAIL pattern page holds ");
            put_decimal(page[0]);
            put_string(" at counter ");
            put_decimal(value);
            put_string("\n");
            halt_forever();
        }
        page[0] = value;
        page[511] = ~value;
        uint64_t const now = clock ? kvmclock_ns() : 0;
        put_string("kvmm-test: counter ");
        put_decimal(value);
        put_string(" clock_ns ");
        put_decimal(now);
        put_string("\n");
        counter = value + 1;
        if (clock) {
            next += period_ns;
            if (next < now) /* the guest fell behind (or time jumped): no burst of catch-up ticks */
                next = now;
            while (kvmclock_ns() < next)
                __asm__ volatile("pause");
        }
    }
}

#include "virtio_driver.h"

/* After the driver it builds on. */
#include "hostile.h"

void guest_main(struct start_info const* info) {
    if (info->magic != 0x336ec578)
        fail("bad hvm_start_info magic");
    char const* cmdline = info->cmdline_paddr ? (char const*)(uintptr_t)info->cmdline_paddr : "";
    char const* test = parameter(cmdline, "test");
    if (!test || value_is(test, "hello"))
        scenario_hello();
    else if (value_is(test, "echo"))
        scenario_echo();
    else if (value_is(test, "io"))
        scenario_io();
    else if (value_is(test, "irq"))
        scenario_irq();
    else if (value_is(test, "smp"))
        scenario_smp(cmdline);
    else if (value_is(test, "memory"))
        scenario_memory(info);
    else if (value_is(test, "keyboard-wait"))
        scenario_keyboard_wait();
    else if (value_is(test, "counter"))
        scenario_counter(cmdline);
    else if (value_is(test, "serial-flood"))
        scenario_serial_flood();
    else if (value_is(test, "virtio-rng"))
        scenario_virtio_rng();
    else if (value_is(test, "virtio-blk"))
        scenario_virtio_blk(cmdline);
    else if (value_is(test, "virtio-console"))
        scenario_virtio_console();
    else if (value_is(test, "hostile-rng"))
        scenario_hostile_rng();
    else if (value_is(test, "hostile-reset"))
        scenario_hostile_reset();
    else if (value_is(test, "hostile-console"))
        scenario_hostile_console();
    else if (value_is(test, "hostile-blk"))
        scenario_hostile_blk(cmdline);
    else if (value_is(test, "hostile-vsock"))
        scenario_hostile_vsock(cmdline);
    else if (value_is(test, "vsock-collide"))
        scenario_vsock_collide(cmdline);
    else if (value_is(test, "reset")) {
        put_string("kvmm-test: resetting\n");
        outb(0x64, 0xfe);
        halt_forever();
    } else if (value_is(test, "triple-fault")) {
        put_string("kvmm-test: triple fault next\n");
        load_idt(0, 0);
        __asm__ volatile("ud2");
    } else if (value_is(test, "busy")) {
        /* Spins for ever without a single exit, so all of the vCPU thread's CPU time is guest
         * time: the manager's CPU-weight test compares two of these. */
        put_string("kvmm-test: busy\n");
        for (;;)
            __asm__ volatile("pause");
    } else if (value_is(test, "idle")) {
        /* Halts for ever with interrupts off: the vCPU sleeps in the kernel and costs no CPU,
         * so a test can keep many VMs running at once; only the host ends it. */
        put_string("kvmm-test: idle\n");
        halt_forever();
    } else if (value_is(test, "poweroff")) {
        put_string("kvmm-test: powering off\n");
    } else {
        fail("unknown test");
    }
    (void)put_hex;
    power_off();
}
