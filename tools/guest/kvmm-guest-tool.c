// kvmm-guest-tool: a small static helper for kvmm's Linux-tier tests and benchmarks.
//
// It runs in two places: in the L2 test guest (initramfs /bin/kvmm-guest-tool, built by
// build-guest.sh with gcc -static) and in the test host's L1 (copied into /guest), where
// busybox has no AF_VSOCK client, no Unix-socket client and no netcat that reliably moves
// bulk data (busybox nc stops reading stdin once the peer half-closes).
//
// Subcommands (exit status 0 on success, 1 on a failed check or system call, 2 on usage):
//   vsock-echo-server PORT [COUNT]   listen on AF_VSOCK (any CID), echo COUNT connections
//   vsock-connect CID PORT           send stdin, copy what comes back to stdout
//   uds-connect PATH PORT            Firecracker hybrid vsock, host side: "CONNECT PORT\n",
//                                    expect "OK ...\n", then as vsock-connect; retries the
//                                    handshake for up to 60 s (kvmm or the guest's listener
//                                    may not be up yet)
//   uds-echo-server PATH [COUNT]     listen on a Unix socket, echo COUNT connections
//   tcp-sink PORT                    accept one TCP connection, count bytes until EOF
//   tcp-send HOST PORT MIB           connect (retrying for up to 60 s), send MIB MiB
//   fill FILE MIB SEED               write MIB MiB of deterministic data, fsync
//   verify FILE MIB SEED             check the data that fill wrote
//   alloc MIB [SECONDS]              touch MIB MiB of anonymous memory, hold it, free it
//   read-bench FILE MIB KIB seq|random
//                                    O_DIRECT reads of KIB KiB: the first MIB MiB in order,
//                                    or as many blocks at pseudo-random aligned offsets
//   api SOCKET METHOD PATH [BODY]    one HTTP/1.1 request to kvmm's API socket; prints the
//                                    status line and body; success when the status is 2xx
//
// Single-threaded; each subcommand is one process-lifetime operation.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)
#define CONNECT_RETRY_SECONDS 60
#define BUFFER_SIZE (64 * 1024)

static char const* g_program = "kvmm-guest-tool";

static int fail(char const* what)
{
    fprintf(stderr, "%s: %s: %s\n", g_program, what, strerror(errno));
    return 1;
}

static double now_seconds(void)
{
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec / 1e9;
}

static int parse_unsigned(char const* text, unsigned long* value)
{
    char* end = NULL;
    errno = 0;
    unsigned long const parsed = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        fprintf(stderr, "%s: '%s' is not an unsigned number\n", g_program, text);
        return -1;
    }
    *value = parsed;
    return 0;
}

static int write_all(int fd, char const* data, size_t size)
{
    while (size > 0) {
        ssize_t const written = write(fd, data, size);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += written;
        size -= (size_t)written;
    }
    return 0;
}

// Copies stdin to the socket and the socket to stdout at the same time. The socket is
// non-blocking and stdin is only read when the last chunk has gone out: an echoing peer
// answers while we still send, and a blocking write into a full socket would stop us from
// reading its answers, so both sides would wait for each other. stdin's EOF becomes a
// half-close (SHUT_WR); the socket's EOF ends the copy.
static int pump(int socket_fd)
{
    static char in_buffer[BUFFER_SIZE];
    static char out_buffer[BUFFER_SIZE];
    size_t pending = 0;
    size_t offset = 0;
    int stdin_open = 1;
    if (fcntl(socket_fd, F_SETFL, fcntl(socket_fd, F_GETFL) | O_NONBLOCK) < 0)
        return fail("fcntl(O_NONBLOCK)");
    for (;;) {
        struct pollfd fds[2] = {
            {.fd = socket_fd, .events = (short)(POLLIN | (pending > 0 ? POLLOUT : 0))},
            {.fd = 0, .events = POLLIN},
        };
        nfds_t const count = (stdin_open && pending == 0) ? 2 : 1;
        if (poll(fds, count, -1) < 0) {
            if (errno == EINTR)
                continue;
            return fail("poll");
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t const received = read(socket_fd, in_buffer, sizeof in_buffer);
            if (received < 0 && errno != EAGAIN && errno != EINTR)
                return fail("read from the socket");
            if (received == 0)
                return 0;
            if (received > 0 && write_all(1, in_buffer, (size_t)received) < 0)
                return fail("write to stdout");
        }
        if (pending > 0 && (fds[0].revents & POLLOUT)) {
            ssize_t const written = write(socket_fd, out_buffer + offset, pending);
            if (written < 0 && errno != EAGAIN && errno != EINTR)
                return fail("write to the socket");
            if (written > 0) {
                offset += (size_t)written;
                pending -= (size_t)written;
            }
        }
        if (count == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t const got = read(0, out_buffer, sizeof out_buffer);
            if (got < 0 && errno != EINTR)
                return fail("read from stdin");
            if (got == 0) {
                stdin_open = 0;
                if (shutdown(socket_fd, SHUT_WR) < 0)
                    return fail("shutdown(SHUT_WR)");
            } else if (got > 0) {
                pending = (size_t)got;
                offset = 0;
            }
        }
    }
}

// Echoes one connection until the peer half-closes, then closes it.
static int echo_connection(int fd)
{
    static char buffer[BUFFER_SIZE];
    unsigned long total = 0;
    for (;;) {
        ssize_t const received = read(fd, buffer, sizeof buffer);
        if (received < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return fail("read from the connection");
        }
        if (received == 0)
            break;
        if (write_all(fd, buffer, (size_t)received) < 0) {
            close(fd);
            return fail("write to the connection");
        }
        total += (unsigned long)received;
    }
    close(fd);
    fprintf(stderr, "%s: echoed %lu bytes\n", g_program, total);
    return 0;
}

static int serve_echo(int listen_fd, unsigned long count)
{
    if (listen(listen_fd, 8) < 0)
        return fail("listen");
    for (unsigned long served = 0; served < count; ++served) {
        int const fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            return fail("accept");
        if (echo_connection(fd) != 0)
            return 1;
    }
    close(listen_fd);
    return 0;
}

static int vsock_echo_server(unsigned long port, unsigned long count)
{
    int const fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket(AF_VSOCK)");
    struct sockaddr_vm address = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)port};
    if (bind(fd, (struct sockaddr*)&address, sizeof address) < 0)
        return fail("bind(AF_VSOCK)");
    return serve_echo(fd, count);
}

static int vsock_connect(unsigned long cid, unsigned long port)
{
    int const fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket(AF_VSOCK)");
    struct sockaddr_vm address = {.svm_family = AF_VSOCK, .svm_cid = (unsigned)cid, .svm_port = (unsigned)port};
    if (connect(fd, (struct sockaddr*)&address, sizeof address) < 0)
        return fail("connect(AF_VSOCK)");
    int const status = pump(fd);
    close(fd);
    return status;
}

static int unix_address(char const* path, struct sockaddr_un* address)
{
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) {
        fprintf(stderr, "%s: Unix socket path '%s' is longer than %zu bytes\n", g_program, path,
            sizeof address->sun_path - 1);
        return -1;
    }
    strcpy(address->sun_path, path);
    return 0;
}

// A stream connection to the Unix socket at `path`: the fd, or -1 (said on stderr if `report`).
static int uds_open(char const* path, int report)
{
    struct sockaddr_un address;
    if (unix_address(path, &address) < 0)
        return -1;
    int const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (report)
            fail("socket(AF_UNIX)");
        return -1;
    }
    if (connect(fd, (struct sockaddr*)&address, sizeof address) < 0) {
        if (report)
            fprintf(stderr, "%s: connect to %s: %s\n", g_program, path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

// One attempt at the hybrid vsock handshake (Firecracker docs/vsock.md, "host-initiated
// connections"): returns the connected fd, or -1 with errno set / the reply printed.
static int uds_handshake(char const* path, unsigned long port, int report)
{
    int const fd = uds_open(path, report);
    if (fd < 0)
        return -1;
    char request[32];
    int const length = snprintf(request, sizeof request, "CONNECT %lu\n", port);
    if (write_all(fd, request, (size_t)length) < 0) {
        close(fd);
        return -1;
    }
    // Read the reply a byte at a time so that no payload after the newline is consumed.
    char reply[64];
    size_t used = 0;
    while (used + 1 < sizeof reply) {
        ssize_t const received = read(fd, reply + used, 1);
        if (received <= 0)
            break;
        if (reply[used++] == '\n')
            break;
    }
    reply[used] = '\0';
    if (strncmp(reply, "OK ", 3) != 0 || used == 0 || reply[used - 1] != '\n') {
        if (report)
            fprintf(stderr, "%s: CONNECT %lu to %s: reply '%s' instead of 'OK <port>'\n", g_program, port, path,
                reply);
        close(fd);
        return -1;
    }
    return fd;
}

static int uds_connect(char const* path, unsigned long port)
{
    double const deadline = now_seconds() + CONNECT_RETRY_SECONDS;
    int fd;
    while ((fd = uds_handshake(path, port, now_seconds() >= deadline)) < 0) {
        if (now_seconds() >= deadline)
            return 1;
        usleep(200 * 1000);
    }
    int const status = pump(fd);
    close(fd);
    return status;
}

static int uds_echo_server(char const* path, unsigned long count)
{
    struct sockaddr_un address;
    if (unix_address(path, &address) < 0)
        return 1;
    int const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket(AF_UNIX)");
    unlink(path);
    if (bind(fd, (struct sockaddr*)&address, sizeof address) < 0)
        return fail("bind(AF_UNIX)");
    return serve_echo(fd, count);
}

static int tcp_sink(unsigned long port)
{
    int const listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
        return fail("socket(AF_INET)");
    int const one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(listen_fd, (struct sockaddr*)&address, sizeof address) < 0)
        return fail("bind(AF_INET)");
    if (listen(listen_fd, 1) < 0)
        return fail("listen");
    int const fd = accept(listen_fd, NULL, NULL);
    if (fd < 0)
        return fail("accept");
    static char buffer[BUFFER_SIZE];
    unsigned long long total = 0;
    double const start = now_seconds();
    for (;;) {
        ssize_t const received = read(fd, buffer, sizeof buffer);
        if (received < 0)
            return fail("read from the connection");
        if (received == 0)
            break;
        total += (unsigned long long)received;
    }
    double const seconds = now_seconds() - start;
    close(fd);
    close(listen_fd);
    printf("tcp-sink: received=%llu seconds=%.3f MBps=%.1f\n", total, seconds,
        seconds > 0 ? (double)total / 1e6 / seconds : 0.0);
    return 0;
}

static int tcp_send(char const* host, unsigned long port, unsigned long mib)
{
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "%s: '%s' is not an IPv4 address\n", g_program, host);
        return 2;
    }
    double const deadline = now_seconds() + CONNECT_RETRY_SECONDS;
    int fd;
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return fail("socket(AF_INET)");
        if (connect(fd, (struct sockaddr*)&address, sizeof address) == 0)
            break;
        close(fd);
        if (now_seconds() >= deadline)
            return fail("connect (retried for 60 s)");
        usleep(200 * 1000);
    }
    static char buffer[BUFFER_SIZE];
    memset(buffer, 0x5a, sizeof buffer);
    double const start = now_seconds();
    unsigned long long const total = (unsigned long long)mib * MIB;
    for (unsigned long long sent = 0; sent < total; sent += sizeof buffer) {
        if (write_all(fd, buffer, sizeof buffer) < 0)
            return fail("write to the connection");
    }
    if (shutdown(fd, SHUT_WR) < 0)
        return fail("shutdown(SHUT_WR)");
    // Wait for the sink to close: then every byte has been read on the other side.
    while (read(fd, buffer, sizeof buffer) > 0) {
    }
    double const seconds = now_seconds() - start;
    close(fd);
    printf("tcp-send: sent=%llu seconds=%.3f MBps=%.1f\n", total, seconds,
        seconds > 0 ? (double)total / 1e6 / seconds : 0.0);
    return 0;
}

// xorshift64* (Marsaglia 2003; Vigna 2016): cheap, deterministic, and seeded per MiB so
// that verify can name the first MiB that differs.
static uint64_t next_random(uint64_t* state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

static void pattern_block(uint64_t* block, unsigned long index, unsigned long seed)
{
    uint64_t state = ((uint64_t)seed << 32) ^ (index + 1) ^ 0x9E3779B97F4A7C15ULL;
    for (size_t word = 0; word < MIB / sizeof(uint64_t); ++word)
        block[word] = next_random(&state);
}

static int fill(char const* path, unsigned long mib, unsigned long seed)
{
    int const fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail("open for writing");
    uint64_t* block = malloc(MIB);
    if (block == NULL)
        return fail("malloc");
    double const start = now_seconds();
    for (unsigned long index = 0; index < mib; ++index) {
        pattern_block(block, index, seed);
        if (write_all(fd, (char const*)block, MIB) < 0)
            return fail("write");
    }
    if (fsync(fd) < 0)
        return fail("fsync");
    if (close(fd) < 0)
        return fail("close");
    double const seconds = now_seconds() - start;
    free(block);
    printf("fill: wrote=%luMiB seed=%lu seconds=%.3f\n", mib, seed, seconds);
    return 0;
}

static int verify(char const* path, unsigned long mib, unsigned long seed)
{
    int const fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open for reading");
    uint64_t* expected = malloc(MIB);
    uint64_t* actual = malloc(MIB);
    if (expected == NULL || actual == NULL)
        return fail("malloc");
    for (unsigned long index = 0; index < mib; ++index) {
        size_t done = 0;
        while (done < MIB) {
            ssize_t const got = read(fd, (char*)actual + done, MIB - done);
            if (got < 0)
                return fail("read");
            if (got == 0) {
                printf("verify: MISMATCH file ends inside MiB %lu\n", index);
                return 1;
            }
            done += (size_t)got;
        }
        pattern_block(expected, index, seed);
        if (memcmp(expected, actual, MIB) != 0) {
            size_t word = 0;
            while (expected[word] == actual[word])
                ++word;
            printf("verify: MISMATCH in MiB %lu at byte offset %lu\n", index, index * MIB + word * 8);
            return 1;
        }
    }
    close(fd);
    free(expected);
    free(actual);
    printf("verify: ok=%luMiB seed=%lu\n", mib, seed);
    return 0;
}

static int alloc_memory(unsigned long mib, unsigned long hold_seconds)
{
    size_t const size = mib * MIB;
    char* memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        return fail("mmap");
    long const page = sysconf(_SC_PAGESIZE);
    // A non-zero byte per page: the page is really backed, not the shared zero page.
    for (size_t offset = 0; offset < size; offset += (size_t)page)
        memory[offset] = (char)(offset / (size_t)page + 1);
    printf("alloc: touched=%luMiB\n", mib);
    fflush(stdout);
    if (hold_seconds > 0)
        sleep((unsigned)hold_seconds);
    munmap(memory, size);
    return 0;
}

// Reads with O_DIRECT so that every block goes to the device, not the guest's page cache.
static int read_bench(char const* path, unsigned long mib, unsigned long kib, int random_order)
{
    size_t const block = kib * 1024;
    unsigned long const blocks = mib * 1024 / kib;
    if (block == 0 || blocks == 0) {
        fprintf(stderr, "%s: read-bench needs a block size and area of at least 1 KiB\n", g_program);
        return 2;
    }
    int const fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
        return fail("open with O_DIRECT");
    void* buffer = NULL;
    if (posix_memalign(&buffer, 4096, block) != 0)
        return fail("posix_memalign");
    uint64_t state = 0x853C49E6748FEA9BULL;
    double const start = now_seconds();
    for (unsigned long index = 0; index < blocks; ++index) {
        unsigned long const which = random_order ? (unsigned long)(next_random(&state) % blocks) : index;
        if (pread(fd, buffer, block, (off_t)(which * block)) != (ssize_t)block)
            return fail("pread");
    }
    double const seconds = now_seconds() - start;
    close(fd);
    free(buffer);
    printf("read-bench: pattern=%s block=%luKiB bytes=%lu seconds=%.3f MBps=%.1f iops=%.0f\n",
        random_order ? "random" : "seq", kib, blocks * block, seconds, (double)(blocks * block) / 1e6 / seconds,
        (double)blocks / seconds);
    return 0;
}

// One request on its own connection (Connection: close), the response read to EOF.
static int api_request(char const* socket_path, char const* method, char const* path, char const* body)
{
    // The same connection as the hybrid vsock handshake, without its CONNECT line.
    int const fd = uds_open(socket_path, 1);
    if (fd < 0)
        return 1;
    size_t const body_length = body ? strlen(body) : 0;
    char head[512];
    int const head_length = snprintf(head, sizeof head,
        "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n"
        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
        method, path, body_length);
    if (head_length < 0 || (size_t)head_length >= sizeof head) {
        fprintf(stderr, "%s: request line for '%s' is too long\n", g_program, path);
        return 2;
    }
    if (write_all(fd, head, (size_t)head_length) < 0 || (body_length && write_all(fd, body, body_length) < 0))
        return fail("write to the API socket");
    static char response[BUFFER_SIZE];
    size_t used = 0;
    ssize_t received;
    while (used + 1 < sizeof response && (received = read(fd, response + used, sizeof response - 1 - used)) > 0)
        used += (size_t)received;
    close(fd);
    response[used] = '\0';
    char const* const line_end = strstr(response, "\r\n");
    char const* const body_start = strstr(response, "\r\n\r\n");
    if (!line_end || strncmp(response, "HTTP/1.1 ", 9) != 0) {
        fprintf(stderr, "%s: not an HTTP response: '%.80s'\n", g_program, response);
        return 1;
    }
    printf("api: %.*s %s\n", (int)(line_end - response), response, body_start ? body_start + 4 : "");
    return response[9] == '2' ? 0 : 1;
}

static int usage(void)
{
    fprintf(stderr,
        "usage: %s vsock-echo-server PORT [COUNT] | vsock-connect CID PORT | uds-connect PATH PORT |\n"
        "       uds-echo-server PATH [COUNT] | tcp-sink PORT | tcp-send HOST PORT MIB |\n"
        "       fill FILE MIB SEED | verify FILE MIB SEED | alloc MIB [SECONDS] |\n"
        "       read-bench FILE MIB KIB seq|random | api SOCKET METHOD PATH [BODY]\n",
        g_program);
    return 2;
}

int main(int argc, char** argv)
{
    if (argc < 2)
        return usage();
    char const* command = argv[1];
    int const count = argc - 2;
    char** const args = argv + 2;
    unsigned long a = 0;
    unsigned long b = 1;
    unsigned long c = 0;
    if (strcmp(command, "vsock-echo-server") == 0 && (count == 1 || count == 2)) {
        if (parse_unsigned(args[0], &a) < 0 || (count == 2 && parse_unsigned(args[1], &b) < 0))
            return 2;
        return vsock_echo_server(a, b);
    }
    if (strcmp(command, "vsock-connect") == 0 && count == 2) {
        if (parse_unsigned(args[0], &a) < 0 || parse_unsigned(args[1], &b) < 0)
            return 2;
        return vsock_connect(a, b);
    }
    if (strcmp(command, "uds-connect") == 0 && count == 2) {
        if (parse_unsigned(args[1], &a) < 0)
            return 2;
        return uds_connect(args[0], a);
    }
    if (strcmp(command, "uds-echo-server") == 0 && (count == 1 || count == 2)) {
        if (count == 2 && parse_unsigned(args[1], &b) < 0)
            return 2;
        return uds_echo_server(args[0], b);
    }
    if (strcmp(command, "tcp-sink") == 0 && count == 1) {
        if (parse_unsigned(args[0], &a) < 0)
            return 2;
        return tcp_sink(a);
    }
    if (strcmp(command, "tcp-send") == 0 && count == 3) {
        if (parse_unsigned(args[1], &a) < 0 || parse_unsigned(args[2], &b) < 0)
            return 2;
        return tcp_send(args[0], a, b);
    }
    if ((strcmp(command, "fill") == 0 || strcmp(command, "verify") == 0) && count == 3) {
        if (parse_unsigned(args[1], &a) < 0 || parse_unsigned(args[2], &c) < 0)
            return 2;
        return command[0] == 'f' ? fill(args[0], a, c) : verify(args[0], a, c);
    }
    if (strcmp(command, "alloc") == 0 && (count == 1 || count == 2)) {
        b = 0;
        if (parse_unsigned(args[0], &a) < 0 || (count == 2 && parse_unsigned(args[1], &b) < 0))
            return 2;
        return alloc_memory(a, b);
    }
    if (strcmp(command, "read-bench") == 0 && count == 4) {
        if (parse_unsigned(args[1], &a) < 0 || parse_unsigned(args[2], &b) < 0)
            return 2;
        if (strcmp(args[3], "seq") != 0 && strcmp(args[3], "random") != 0)
            return usage();
        return read_bench(args[0], a, b, strcmp(args[3], "random") == 0);
    }
    if (strcmp(command, "api") == 0 && (count == 3 || count == 4))
        return api_request(args[0], args[1], args[2], count == 4 ? args[3] : NULL);
    return usage();
}
