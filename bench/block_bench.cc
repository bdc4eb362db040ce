// Benchmark of the virtio-blk device model, driven from the driver's side: a
// DriverQueue with 32 requests in flight, each re-posted as soon as its
// completion comes back, on a 1 GiB image file.
//
// What is measured: request parsing and validation, host_ranges translation,
// the io_uring engine (buffered I/O: the image goes through the host page
// cache, and after it is written once the reads are page-cache hits), the
// completion path and the used ring - the VMM's per-request cost with the
// storage taken out. No guest runs, so VM exits and interrupt delivery are not
// part of it. bench/block_bench.sh runs the same workloads with fio on the same
// file for comparison.
//
// The image is $KVMM_BLOCK_BENCH_IMAGE when set (and at least 1 GiB), else a
// temporary file that is written once and removed at exit.
//
// Each workload runs on the raw image (argument 0) and on a qcow2 image with
// the same content, every cluster allocated (argument 1), so the ratio is the
// qcow2 layer's cost; BM_RandomWrite4KiBEmptyOverlay fills an empty qcow2
// overlay of the raw image (every first write to a cluster allocates it and
// copies the rest of the cluster from the backing file).
#include "backends/disk/qcow2_image.h"
#include "devices/legacy/recording_interrupt_line.h"
#include "devices/virtio/block/block_device.h"
#include "devices/virtio/testing/mmio_driver.h"
#include "hypervisor/kvm/kvm_ioctl_groups.h"
#include "sandbox/seccomp_filter.h"
#include "sandbox/seccomp_table.h"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace kvmm;
using namespace kvmm::virtio;

constexpr uint64_t IMAGE_SIZE = uint64_t { 1 } << 30;
constexpr unsigned QUEUE_DEPTH = 32;
constexpr uint64_t MAX_REQUEST = 1 << 20;

class InterruptCounter final : public InterruptLine {
public:
    void set_level(bool) override {}
};

// The image file, created (sparse, then written once so reads hit real blocks) on first use.
class BenchImage {
public:
    static BenchImage& get() {
        static BenchImage image;
        return image;
    }
    std::string const& path() const { return m_path; }
    ~BenchImage() {
        if (m_remove)
            ::unlink(m_path.c_str());
    }

private:
    BenchImage() {
        if (char const* path = std::getenv("KVMM_BLOCK_BENCH_IMAGE")) {
            struct stat info {};
            if (::stat(path, &info) == 0 && static_cast<uint64_t>(info.st_size) >= IMAGE_SIZE) {
                m_path = path;
                return;
            }
        }
        char name[] = "/var/tmp/kvmm-block-bench-XXXXXX";
        int const fd = ::mkstemp(name);
        if (fd < 0)
            throw std::runtime_error("mkstemp failed");
        m_path = name;
        m_remove = true;
        std::vector<uint8_t> chunk(MAX_REQUEST);
        for (size_t i = 0; i < chunk.size(); ++i)
            chunk[i] = static_cast<uint8_t>(i * 31 + 7);
        for (uint64_t offset = 0; offset < IMAGE_SIZE; offset += chunk.size()) {
            if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(offset)) !=
                static_cast<ssize_t>(chunk.size()))
                throw std::runtime_error("writing the benchmark image failed");
        }
        ::close(fd);
    }

    std::string m_path;
    bool m_remove { false };
};

// A qcow2 image (64 KiB clusters) with the raw image's content, every cluster allocated and in
// order, written once through the qcow2 layer; or an empty overlay of the raw image.
class Qcow2BenchImage {
public:
    static Qcow2BenchImage& allocated() {
        static Qcow2BenchImage image(false);
        return image;
    }
    // One overlay, empty at first and filled as the benchmark runs (its repetitions included).
    static std::string new_overlay() {
        static Qcow2BenchImage image(true);
        return image.m_path;
    }
    std::string const& path() const { return m_path; }
    ~Qcow2BenchImage() { ::unlink(m_path.c_str()); }

private:
    explicit Qcow2BenchImage(bool overlay) {
        char name[] = "/var/tmp/kvmm-block-bench-qcow2-XXXXXX";
        int const fd = ::mkstemp(name);
        if (fd < 0)
            throw std::runtime_error("mkstemp failed");
        ::close(fd);
        ::unlink(name);
        m_path = name;
        qcow2::CreateOptions options;
        if (overlay) {
            options.backing_file = BenchImage::get().path();
            options.backing_format = qcow2::BackingFormat::Raw;
        }
        if (auto created = qcow2::Image::create(m_path, IMAGE_SIZE, options); !created)
            throw std::runtime_error(created.error().message());
        if (overlay)
            return;
        auto image = DiskImage::open(m_path, false, DiskFormat::Qcow2);
        if (!image)
            throw std::runtime_error(image.error().message());
        std::vector<uint8_t> chunk(MAX_REQUEST);
        for (size_t i = 0; i < chunk.size(); ++i)
            chunk[i] = static_cast<uint8_t>(i * 31 + 7);
        iovec const buffer { chunk.data(), chunk.size() };
        for (uint64_t offset = 0; offset < IMAGE_SIZE; offset += chunk.size())
            if (image->qcow2()->write(offset, std::span(&buffer, 1)) != static_cast<int32_t>(chunk.size()))
                throw std::runtime_error("writing the qcow2 benchmark image failed");
        if (image->qcow2()->flush() != 0)
            throw std::runtime_error("flushing the qcow2 benchmark image failed");
    }

    std::string m_path;
};

// 32 request slots with fixed descriptors (slot s: descriptors 3s, 3s+1, 3s+2) and buffers.
class BlockHarness {
public:
    BlockHarness(uint32_t request_bytes, std::string const& path, DiskFormat format, uint32_t type)
        : m_request_bytes(request_bytes), m_type(type) {
        auto image = DiskImage::open(path, type == BLOCK_REQUEST_IN, format);
        if (!image)
            throw std::runtime_error(image.error().message());
        BlockOptions options;
        options.engine = DiskEngineKind::IoUring;
        auto device = BlockDevice::create(std::move(*image), m_loop, std::move(options));
        if (!device)
            throw std::runtime_error(device.error().message());
        m_device = device->get();
        m_transport = *MmioTransport::create("blk", std::move(*device), m_memory, m_line, m_loop);
        m_driver.emplace(*m_transport, m_loop);
        m_driver->initialize(feature_bit(FEATURE_RING_EVENT_IDX), { &m_queue });
        for (unsigned slot = 0; slot < QUEUE_DEPTH; ++slot) {
            m_headers.push_back(m_queue.allocate(16));
            m_data.push_back(m_queue.allocate(MAX_REQUEST));
            m_status.push_back(m_queue.allocate(1));
        }
    }

    void post(unsigned slot, uint64_t sector) {
        BlockRequestHeader const header { m_type, 0, sector };
        (void)m_memory.write_obj(m_headers[slot], header);
        auto const first = static_cast<uint16_t>(3 * slot);
        m_queue.write_descriptor(first, Descriptor { m_headers[slot].value(), 16, DESCRIPTOR_F_NEXT,
                                                     static_cast<uint16_t>(first + 1) });
        uint16_t const direction = m_type == BLOCK_REQUEST_IN ? DESCRIPTOR_F_WRITE : 0;
        m_queue.write_descriptor(first + 1, Descriptor { m_data[slot].value(), m_request_bytes,
                                                         static_cast<uint16_t>(DESCRIPTOR_F_NEXT | direction),
                                                         static_cast<uint16_t>(first + 2) });
        m_queue.write_descriptor(first + 2, Descriptor { m_status[slot].value(), 1, DESCRIPTOR_F_WRITE, 0 });
        m_queue.offer(first);
    }

    // Waits for at least one completion and appends the finished slots to `done`.
    void wait(std::vector<unsigned>& done) {
        while (done.empty()) {
            (void)m_loop.run_once(std::chrono::milliseconds(1000));
            while (auto used = m_queue.pop_used()) {
                uint32_t const expected = m_type == BLOCK_REQUEST_IN ? m_request_bytes + 1 : 1;
                if (used->length != expected)
                    throw std::runtime_error("a benchmark request failed");
                done.push_back(used->id / 3);
            }
        }
    }
    void notify() { m_driver->notify(0); }
    BlockDevice& device() { return *m_device; }

private:
    uint32_t m_request_bytes;
    uint32_t m_type;
    GuestMemory m_memory = *GuestMemory::create({ { GuestAddress(0), 64 << 20 } });
    EventLoop m_loop = *EventLoop::create();
    InterruptCounter m_line;
    testing::DriverQueue m_queue { m_memory, GuestAddress(0x10000), BlockDevice::QUEUE_SIZE };
    BlockDevice* m_device { nullptr };
    std::unique_ptr<MmioTransport> m_transport;
    std::optional<testing::MmioDriver> m_driver;
    std::vector<GuestAddress> m_headers, m_data, m_status;
};

enum class Target { Raw, Qcow2, EmptyOverlay };

template <bool RANDOM>
void run_requests(benchmark::State& state, uint32_t request_bytes, Target target, uint32_t type) {
    std::string const path = target == Target::Raw     ? BenchImage::get().path()
                             : target == Target::Qcow2 ? Qcow2BenchImage::allocated().path()
                                                       : Qcow2BenchImage::new_overlay();
    BlockHarness harness(request_bytes, path, target == Target::Raw ? DiskFormat::Raw : DiskFormat::Qcow2, type);
    uint64_t const sectors_per_request = request_bytes / BlockDevice::SECTOR_SIZE;
    uint64_t const slots_in_image = IMAGE_SIZE / request_bytes;
    std::mt19937_64 random(42);
    uint64_t next_sequential = 0;
    auto next_sector = [&] {
        uint64_t const index = RANDOM ? random() % slots_in_image : next_sequential++ % slots_in_image;
        return index * sectors_per_request;
    };
    for (unsigned slot = 0; slot < QUEUE_DEPTH; ++slot)
        harness.post(slot, next_sector());
    harness.notify();
    std::vector<unsigned> done;
    for (auto _ : state) {
        harness.wait(done);
        unsigned const slot = done.back();
        done.pop_back();
        harness.post(slot, next_sector());
        if (done.empty())
            harness.notify();
    }
    // The requests still in flight finish in the device's destructor (it waits for them).
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request_bytes));
    state.counters["errors"] = static_cast<double>(harness.device().errors());
    // create_engine() falls back to synchronous I/O where io_uring is unavailable; say which ran.
    std::string const engine = harness.device().engine_kind() == DiskEngineKind::IoUring ? "io_uring" : "sync";
    state.SetLabel(engine + (target == Target::Raw ? " raw" : " qcow2"));
}

Target target_of(benchmark::State const& state) { return state.range(0) == 0 ? Target::Raw : Target::Qcow2; }

void BM_RandomRead4KiB(benchmark::State& state) { run_requests<true>(state, 4096, target_of(state), BLOCK_REQUEST_IN); }
void BM_SequentialRead1MiB(benchmark::State& state) {
    run_requests<false>(state, 1 << 20, target_of(state), BLOCK_REQUEST_IN);
}
void BM_RandomWrite4KiB(benchmark::State& state) {
    run_requests<true>(state, 4096, target_of(state), BLOCK_REQUEST_OUT);
}
void BM_SequentialWrite1MiB(benchmark::State& state) {
    run_requests<false>(state, 1 << 20, target_of(state), BLOCK_REQUEST_OUT);
}
void BM_RandomWrite4KiBEmptyOverlay(benchmark::State& state) {
    run_requests<true>(state, 4096, Target::EmptyOverlay, BLOCK_REQUEST_OUT);
}

// Argument: 0 raw, 1 qcow2.
BENCHMARK(BM_RandomRead4KiB)->Arg(0)->Arg(1)->MinTime(5)->UseRealTime();
BENCHMARK(BM_SequentialRead1MiB)->Arg(0)->Arg(1)->MinTime(5)->UseRealTime();
BENCHMARK(BM_RandomWrite4KiB)->Arg(0)->Arg(1)->MinTime(5)->UseRealTime();
BENCHMARK(BM_SequentialWrite1MiB)->Arg(0)->Arg(1)->MinTime(5)->UseRealTime();
BENCHMARK(BM_RandomWrite4KiBEmptyOverlay)->MinTime(5)->UseRealTime();

} // namespace

// KVMM_BLOCK_BENCH_SECCOMP=1: the benchmark thread runs under the event loop's seccomp filter,
// as the device model does in kvmm, to measure the filter's cost on the same requests. The
// harness's own calls that the event loop never makes (getrusage, ...) are logged, not
// trapped: the default action is SECCOMP_RET_LOG instead of TRAP, which changes nothing for the
// calls the table lists.
int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    if (char const* seccomp = std::getenv("KVMM_BLOCK_BENCH_SECCOMP"); seccomp && std::string(seccomp) == "1") {
        namespace groups = kvmm::kvm_ioctl_groups;
        kvmm::KvmIoctls const kvm { groups::vcpu_run(),      groups::vcpu_diagnostics(), groups::interrupt_line(),
                                    groups::device_wiring(), groups::save_state(),       groups::dirty_log() };
        std::array<kvmm::SeccompRoleFilter, kvmm::ALL_THREAD_ROLES.size()> filters;
        for (kvmm::ThreadRole role : kvmm::ALL_THREAD_ROLES) {
            auto filter = kvmm::build_role_filter(role, kvm);
            if (!filter) {
                std::fprintf(stderr, "block_bench: %s\n", filter.error().message().c_str());
                return 1;
            }
            filter->default_action = { kvmm::SeccompAction::Kind::Log };
            filters[static_cast<size_t>(role)] = std::move(*filter);
        }
        auto compiled = kvmm::SeccompFilters::compile(filters);
        if (!compiled) {
            std::fprintf(stderr, "block_bench: %s\n", compiled.error().message().c_str());
            return 1;
        }
        if (auto installed = compiled->install(kvmm::ThreadRole::Vmm, "block_bench"); !installed) {
            std::fprintf(stderr, "block_bench: %s\n", installed.error().message().c_str());
            return 1;
        }
        std::fprintf(stderr, "block_bench: running under the event loop's seccomp filter (%zu BPF instructions)\n",
                     compiled->instruction_count(kvmm::ThreadRole::Vmm));
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
