// Moved to config/resource_parsers.h (the config library); this forwarder keeps existing includes compiling.
#pragma once

#include "config/resource_parsers.h"
