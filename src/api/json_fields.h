// Moved to config/json_fields.h (the config library); this forwarder keeps existing includes compiling.
#pragma once

#include "config/json_fields.h"
