// Parsers for the device flags of the command line (QEMU-style comma-separated
// key=value lists):
//   --disk path=P[,id=ID][,readonly=on][,cache=writeback|writethrough]
//          [,engine=io_uring|sync][,serial=S][,root=on][,record=PATH][,bw=SIZE][,bw_burst=SIZE][,iops=N][,iops_burst=N]
//   --net tap=NAME|fd=N[,id=ID][,mac=aa:bb:cc:dd:ee:ff][,rx_bw=SIZE][,tx_bw=SIZE]
//   --vsock cid=N,uds=PATH
//   --balloon size=SIZE[,deflate_on_oom=on][,stats=SECONDS][,free_page_reporting=on]
//   --rng [bw=SIZE][,bw_burst=SIZE]
// SIZE takes K/M/G suffixes (bytes, not MiB: `bw=10M` is 10 MiB per second). Every error
// names the flag, the key and the value. Cross-device rules (duplicate ids, one root disk)
// are checked by validate() in vm_config.h.
#pragma once

#include "base/expected.h"
#include "config/vm_config.h"

#include <string_view>
#include <utility>
#include <vector>

namespace kvmm {

// Splits "a=1,b=2" into ordered pairs; a bare word is a key with an empty value. Rejects
// empty keys and keys given twice.
Expected<std::vector<std::pair<std::string, std::string>>> parse_key_values(std::string_view flag,
                                                                            std::string_view text);

Expected<DiskConfig> parse_disk_option(std::string_view text, size_t index);
Expected<NetConfig> parse_net_option(std::string_view text, size_t index);
Expected<VsockConfig> parse_vsock_option(std::string_view text);
Expected<BalloonConfig> parse_balloon_option(std::string_view text);
Expected<RngConfig> parse_rng_option(std::string_view text);

} // namespace kvmm
