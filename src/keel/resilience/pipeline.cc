#include "keel/resilience/pipeline.h"

namespace keel::resilience {

Pipeline::Pipeline(std::string name, PipelineParts parts, Clock& clock, std::uint64_t seed)
    : name_(std::move(name)), parts_(std::move(parts)), clock_(clock), seed_(seed) {}

Error Pipeline::timeout_error(const CallContext& context, Duration took) const {
  return Error(errc::timeout, "'" + name_ + "': attempt " + std::to_string(context.attempt) +
                                  " took " + std::to_string(static_cast<long long>(to_ms(took))) +
                                  " ms and passed its deadline");
}

Error Pipeline::refused_retry(errc reason, std::uint32_t attempts, const Error& last) const {
  return Error(reason, "'" + name_ + "': " + make_error_code(reason).message() + " after " +
                           std::to_string(attempts) +
                           " attempt(s); last error: " + last.to_string());
}

}  // namespace keel::resilience
