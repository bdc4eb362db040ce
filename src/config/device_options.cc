#include "config/device_options.h"

#include "base/path.h"
#include "config/mac_address.h"

#include <cctype>
#include <charconv>
#include <fmt/format.h>

namespace kvmm {

namespace {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

Expected<bool> parse_switch(std::string_view flag, std::string_view key, std::string_view value) {
    if (value == "on" || value == "true" || value == "yes" || value.empty())
        return true;
    if (value == "off" || value == "false" || value == "no")
        return false;
    return Error::format("{}: {}={} is not on or off", flag, key, value);
}

Expected<uint64_t> parse_number(std::string_view flag, std::string_view key, std::string_view value) {
    uint64_t number = 0;
    auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (error != std::errc() || end != value.data() + value.size() || value.empty())
        return Error::format("{}: {}={} is not a non-negative integer", flag, key, value);
    return number;
}

// Bytes with an optional K/M/G/T suffix (a bare number is bytes here, unlike --memory).
Expected<uint64_t> parse_bytes(std::string_view flag, std::string_view key, std::string_view value) {
    bool const bare = !value.empty() && (std::isdigit(static_cast<unsigned char>(value.back())) != 0);
    auto const bytes = bare ? parse_number(flag, key, value) : parse_memory_size(value);
    if (!bytes)
        return Error::format("{}: {}={}: {}", flag, key, value, bytes.error().message());
    return *bytes;
}

// A bucket refilled once per second: `per_second` tokens and an optional one-time burst.
TokenBucketConfig per_second_bucket(uint64_t per_second, uint64_t burst) {
    return TokenBucketConfig { per_second, burst, 1000 };
}

Error unknown_key(std::string_view flag, std::string_view key, std::string_view known) {
    return Error::format("{}: unknown key '{}' (known: {})", flag, key, known);
}

} // namespace

Expected<KeyValues> parse_key_values(std::string_view flag, std::string_view text) {
    KeyValues pairs;
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find(',', start);
        if (end == std::string_view::npos)
            end = text.size();
        auto const item = text.substr(start, end - start);
        if (item.empty()) {
            if (text.empty())
                break;
            return Error::format("{}: empty item in '{}'", flag, text);
        }
        auto const equals = item.find('=');
        std::string key(item.substr(0, equals));
        std::string value(equals == std::string_view::npos ? std::string_view {} : item.substr(equals + 1));
        if (key.empty())
            return Error::format("{}: item '{}' has no key", flag, item);
        for (auto const& [existing, unused] : pairs) {
            if (existing == key)
                return Error::format("{}: key '{}' given twice", flag, key);
        }
        pairs.emplace_back(std::move(key), std::move(value));
        start = end + 1;
    }
    return pairs;
}

Expected<DiskConfig> parse_disk_option(std::string_view text, size_t index) {
    constexpr std::string_view flag = "--disk";
    DiskConfig disk;
    std::optional<uint64_t> bandwidth, bandwidth_burst, iops, iops_burst;
    for (auto const& [key, value] : TRY(parse_key_values(flag, text))) {
        if (key == "path") {
            TRY(check_path_characters(value, "--disk path="));
            disk.path = value;
        } else if (key == "id")
            disk.id = value;
        else if (key == "readonly")
            disk.read_only = TRY(parse_switch(flag, key, value));
        else if (key == "root")
            disk.is_root_device = TRY(parse_switch(flag, key, value));
        else if (key == "serial")
            disk.serial = value;
        else if (key == "cache") {
            if (value == "writeback")
                disk.cache = DiskConfig::CacheMode::WriteBack;
            else if (value == "writethrough")
                disk.cache = DiskConfig::CacheMode::WriteThrough;
            else
                return Error::format("{}: cache={} is not writeback or writethrough", flag, value);
        } else if (key == "engine") {
            if (value == "io_uring")
                disk.engine = DiskConfig::Engine::IoUring;
            else if (value == "sync")
                disk.engine = DiskConfig::Engine::Sync;
            else
                return Error::format("{}: engine={} is not io_uring or sync", flag, value);
        } else if (key == "format") {
            if (value == "raw")
                disk.format = DiskConfig::Format::Raw;
            else if (value == "qcow2")
                disk.format = DiskConfig::Format::Qcow2;
            else
                return Error::format("{}: format={} is not raw or qcow2", flag, value);
        } else if (key == "record") {
            TRY(check_path_characters(value, "--disk record="));
            if (value.empty())
                return Error::format("{}: record= needs the path of a new recording file", flag);
            disk.record_path = value;
        } else if (key == "bw")
            bandwidth = TRY(parse_bytes(flag, key, value));
        else if (key == "bw_burst")
            bandwidth_burst = TRY(parse_bytes(flag, key, value));
        else if (key == "iops")
            iops = TRY(parse_number(flag, key, value));
        else if (key == "iops_burst")
            iops_burst = TRY(parse_number(flag, key, value));
        else
            return unknown_key(
                flag, key,
                "path, id, readonly, root, serial, cache, engine, format, record, bw, bw_burst, iops, iops_burst");
    }
    if (disk.path.empty())
        return Error::format("{} '{}' needs path=FILE", flag, text);
    if (disk.id.empty())
        disk.id = fmt::format("disk{}", index);
    if (bandwidth_burst && !bandwidth)
        return Error::format("{}: bw_burst needs bw", flag);
    if (iops_burst && !iops)
        return Error::format("{}: iops_burst needs iops", flag);
    if (bandwidth)
        disk.rate_limit.bandwidth = per_second_bucket(*bandwidth, bandwidth_burst.value_or(0));
    if (iops)
        disk.rate_limit.ops = per_second_bucket(*iops, iops_burst.value_or(0));
    return disk;
}

Expected<NetConfig> parse_net_option(std::string_view text, size_t index) {
    constexpr std::string_view flag = "--net";
    NetConfig net;
    for (auto const& [key, value] : TRY(parse_key_values(flag, text))) {
        if (key == "tap") {
            if (value.empty())
                return Error::format("{}: tap= needs an interface name", flag);
            TRY(check_path_characters(value, "--net tap="));
            net.tap_name = value;
        } else if (key == "fd")
            net.tap_fd = static_cast<int>(TRY(parse_number(flag, key, value)));
        else if (key == "id")
            net.id = value;
        else if (key == "mac")
            net.mac = TRY(parse_mac_address(value).with_context(std::string(flag)));
        else if (key == "rx_bw")
            net.rx_rate_limit.bandwidth = per_second_bucket(TRY(parse_bytes(flag, key, value)), 0);
        else if (key == "tx_bw")
            net.tx_rate_limit.bandwidth = per_second_bucket(TRY(parse_bytes(flag, key, value)), 0);
        else
            return unknown_key(flag, key, "tap, fd, id, mac, rx_bw, tx_bw");
    }
    if (net.tap_name.empty() == !net.tap_fd)
        return Error::format("{} '{}' needs exactly one of tap=NAME or fd=N", flag, text);
    if (net.id.empty())
        net.id = fmt::format("net{}", index);
    return net;
}

Expected<VsockConfig> parse_vsock_option(std::string_view text) {
    constexpr std::string_view flag = "--vsock";
    VsockConfig vsock;
    bool have_cid = false;
    for (auto const& [key, value] : TRY(parse_key_values(flag, text))) {
        if (key == "cid") {
            auto const cid = TRY(parse_number(flag, key, value));
            if (cid < 3 || cid > UINT32_MAX)
                return Error::format("{}: cid={} is reserved or too large (guest CIDs are 3 to 4294967295)", flag,
                                     value);
            vsock.guest_cid = static_cast<uint32_t>(cid);
            have_cid = true;
        } else if (key == "uds") {
            TRY(check_path_characters(value, "--vsock uds="));
            vsock.uds_path = value;
        } else
            return unknown_key(flag, key, "cid, uds");
    }
    if (!have_cid || vsock.uds_path.empty())
        return Error::format("{} '{}' needs cid=N and uds=PATH", flag, text);
    return vsock;
}

Expected<BalloonConfig> parse_balloon_option(std::string_view text) {
    constexpr std::string_view flag = "--balloon";
    BalloonConfig balloon;
    for (auto const& [key, value] : TRY(parse_key_values(flag, text))) {
        if (key == "size")
            balloon.target_mib = TRY(parse_memory_size(value).with_context(std::string(flag))) >> 20;
        else if (key == "deflate_on_oom")
            balloon.deflate_on_oom = TRY(parse_switch(flag, key, value));
        else if (key == "stats") {
            auto const seconds = TRY(parse_number(flag, key, value));
            if (seconds > 86400)
                return Error::format("{}: stats={} seconds is more than a day", flag, value);
            balloon.stats_polling_interval_s = static_cast<uint32_t>(seconds);
        } else if (key == "free_page_reporting")
            balloon.free_page_reporting = TRY(parse_switch(flag, key, value));
        else
            return unknown_key(flag, key, "size, deflate_on_oom, stats, free_page_reporting");
    }
    return balloon;
}

Expected<RngConfig> parse_rng_option(std::string_view text) {
    constexpr std::string_view flag = "--rng";
    RngConfig rng;
    std::optional<uint64_t> burst;
    for (auto const& [key, value] : TRY(parse_key_values(flag, text))) {
        if (key == "on" && value.empty())
            continue;
        if (key == "bw")
            rng.rate_limit.bandwidth = per_second_bucket(TRY(parse_bytes(flag, key, value)), 0);
        else if (key == "bw_burst")
            burst = TRY(parse_bytes(flag, key, value));
        else
            return unknown_key(flag, key, "bw, bw_burst");
    }
    if (burst) {
        if (!rng.rate_limit.bandwidth)
            return Error::format("{}: bw_burst needs bw", flag);
        rng.rate_limit.bandwidth->one_time_burst = *burst;
    }
    return rng;
}

} // namespace kvmm
