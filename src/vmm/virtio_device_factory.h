// Builds the virtio device models a configuration asks for, each with its host resources
// (disk image, io_uring, TAP, vsock listening socket), and adds them to the DeviceManager in
// the guest's probe order: disks first (the first disk is /dev/vda), then network interfaces,
// entropy, console, vsock, balloon. This is the "acquire" half of device creation: nothing is
// attached to the guest yet (DeviceManager::attach_virtio_devices does that after the sandbox
// is entered), so every host resource is open before it.
//
// Threading: the builder thread; the devices then run on `event_loop`.
#pragma once

#include "base/event_loop.h"
#include "base/expected.h"
#include "devices/legacy/byte_sink.h"
#include "vmm/device_manager.h"
#include "vmm/vm_config.h"

#include <memory>

namespace kvmm {

// `console_output` is where a virtio console writes (used only when config.virtio_console).
Expected<void> acquire_virtio_devices(VmConfig const& config, DeviceManager& devices, EventLoop& event_loop,
                                      std::shared_ptr<ByteSink> console_output);

} // namespace kvmm
