// Crash states of a write recording (write_log_format.h): the disk images a power loss could
// leave, built from the drive's starting contents and the recording, each checked.
//
// The model (docs/crash_states.md):
//   - A power loss happens after the first `cut` records completed (0 <= cut <= records).
//   - Records before the "durable point" survive: the largest flush coverage of the flush
//     records among the first `cut` (a flush makes the records completed before it was
//     submitted durable, virtio 1.2 5.2.6.2).
//   - Every other completed write, discard and write-zeroes may each be present or missing,
//     independently; present ones are applied in completion order. A sector is written
//     atomically, and the subsets include every reordering of writes to different sectors.
//     Not modelled: requests still in flight at the cut (their submission order is not
//     recorded), a torn sector, a failed write that changed part of its range, and an older
//     write landing over a newer one to the same sector (a drive's cache keeps the newest).
//   - Discard and write-zeroes leave zeros (what kvmm's engines give on raw and qcow2).
// States checked: at every flush point (cut just after a flush) the image with every completed
// record and, where it differs, the one with the durable records only; and, between
// consecutive flush points, `samples_per_interval` states with a random cut and a random subset,
// from a PRNG seeded by `seed`, so a failure is reproducible.
//
// Checks per state: the built-in records check (below) and an optional command.
//
// Records check: the guest application writes numbered records 1, 2, 3 ... each starting at a
// sector boundary with the header {magic "KVMMREC1", u64 number, u32 payload length, u32 CRC-32
// of the payload} followed by the payload; after its fsync (or O_DIRECT write + flush) returns
// for record N it writes an acknowledgement sector {magic "KVMMACK1", u64 N, u32 CRC-32 of
// bytes 0..15} anywhere on the disk. An acknowledgement write's completion marks when the
// application reported records 1..N durable; at a cut after it, records 1..N must each be
// somewhere in the image with an intact payload. The check scans the image, so it works for
// records inside a file system as long as a record starts at a sector boundary.
//
// Threading: single-threaded.
#pragma once

#include "backends/disk/write_log_format.h"
#include "base/expected.h"

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace kvmm {

inline constexpr char CRASH_RECORD_MAGIC[8] = { 'K', 'V', 'M', 'M', 'R', 'E', 'C', '1' };
inline constexpr char CRASH_ACK_MAGIC[8] = { 'K', 'V', 'M', 'M', 'A', 'C', 'K', '1' };
inline constexpr size_t CRASH_RECORD_HEADER_SIZE = 24;

// Encoders for the application's sectors (tests and guest tools use the same layout).
std::vector<std::byte> encode_crash_record(uint64_t number, std::span<std::byte const> payload);
std::vector<std::byte> encode_crash_ack(uint64_t number); // one 512-byte sector

struct CrashState {
    uint64_t cut { 0 };           // records completed before the power loss
    uint64_t durable { 0 };       // records [0, durable) are present for sure
    std::vector<uint64_t> maybes; // records in [durable, cut) that are present in this state
    std::string kind;             // "flush point", "flush point, durable only", "sampled"
};

struct CrashCheckOptions {
    uint64_t seed { 1 };
    unsigned samples_per_interval { 8 };
    bool check_records { true };
    // Called with the path of a scratch copy of each state's image (which it may change, e.g.
    // a journal replay); an Error fails the state.
    std::function<Expected<void>(std::string const& image_path)> check_image;
    // Where the working image and the scratch copies go.
    std::string work_directory { "/tmp" };
};

struct CrashFailure {
    CrashState state;
    std::string reason;
};

struct CrashCheckReport {
    uint64_t states_checked { 0 };
    uint64_t flush_points { 0 };
    uint64_t records { 0 };
    std::vector<CrashFailure> failures;
};

// The states to check, in increasing cut order (see the model above).
std::vector<CrashState> plan_crash_states(ParsedWriteLog const& log, CrashCheckOptions const& options);

// Builds and checks every planned state. `base_image` is the raw image the recording started
// from; it is not changed. Errors are for the run itself (unreadable files, a base smaller than
// the recording's capacity); a state that fails its checks is a CrashFailure in the report.
Expected<CrashCheckReport> check_crash_states(std::string const& base_image, ParsedWriteLog const& log,
                                              CrashCheckOptions const& options);

// The records check alone, on one image: every record 1..acknowledged is present and intact.
// Returns the numbers missing or damaged (at most `limit` of them).
std::vector<uint64_t> missing_crash_records(std::span<std::byte const> image, uint64_t acknowledged, size_t limit = 16);

std::string describe_crash_state(CrashState const& state);

} // namespace kvmm
