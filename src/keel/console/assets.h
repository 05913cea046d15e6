// The console's browser files, compiled in from assets/ by embed.cmake (assets.cc is generated
// in the build directory).
#pragma once

#include <string_view>

namespace keel::console::assets {

extern const std::string_view kConsoleJs;
extern const std::string_view kConsoleCss;

}  // namespace keel::console::assets
