// Moved to config/device_options.h (the config library); this forwarder keeps existing includes compiling.
#pragma once

#include "config/device_options.h"
