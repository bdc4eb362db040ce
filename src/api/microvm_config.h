// Moved to config/microvm_config.h (the config library); this forwarder keeps existing includes compiling.
#pragma once

#include "config/microvm_config.h"
