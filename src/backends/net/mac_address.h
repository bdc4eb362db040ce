// Moved to config/mac_address.h (the config library); this forwarder keeps existing includes compiling.
#pragma once

#include "config/mac_address.h"
