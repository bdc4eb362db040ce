// Moved to config/vm_config.h (the config library); this forwarder keeps existing includes
// compiling, and checks that the config library's memory bounds are the architecture's.
#pragma once

#include "arch/x86_64/layout.h"
#include "config/vm_config.h"

static_assert(kvmm::MIN_GUEST_MEMORY_SIZE == kvmm::x86_64::MIN_MEMORY_SIZE);
static_assert(kvmm::MAX_GUEST_MEMORY_SIZE == kvmm::x86_64::MAX_MEMORY_SIZE);
