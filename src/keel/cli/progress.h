// Progress output for people watching the terminal: presentation, not library behaviour, so it
// lives with the `keel` binary rather than in keel_cqrs.
#pragma once

#include <string>

#include "keel/cqrs/projection_runner.h"

namespace keel::cli {

// "[############--------]  60%  600000/1000000": a projection's rebuild as people watch it.
std::string progress_bar(const cqrs::Progress& progress, int width = 40);

}  // namespace keel::cli
