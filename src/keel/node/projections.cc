#include "keel/node/projections.h"

namespace keel::node {

namespace {

Error unknown(std::string_view name) {
  return Error(errc::not_found, "no projection named \"" + std::string(name) +
                                    "\" has reported to this node (GET /v1/projections lists "
                                    "those that have)");
}

}  // namespace

ProjectionView ProjectionTable::view(const Entry& entry, TimePoint now) const {
  return {.report = entry.report, .reported_at_ms = entry.at_unix_ms, .age = now - entry.at};
}

Status ProjectionTable::report(ProjectionReport report) {
  const TimePoint now = clock_.now();
  const std::int64_t unix_ms = clock_.unix_now_ns() / 1'000'000;
  std::lock_guard lock(mutex_);
  auto found = entries_.find(report.name);
  if (found == entries_.end() && entries_.size() >= kMaxProjections) {
    auto stalest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (projection_stale(view(it->second, now)) &&
          (stalest == entries_.end() || it->second.at < stalest->second.at)) {
        stalest = it;
      }
    }
    if (stalest == entries_.end()) {
      return Error(errc::conflict, "the node keeps the reports of at most " +
                                       std::to_string(kMaxProjections) +
                                       " projections and every one is live; DELETE "
                                       "/v1/projections/{name} those that are gone");
    }
    entries_.erase(stalest);
  }
  std::string name = report.name;
  entries_.insert_or_assign(std::move(name),
                            Entry{.report = std::move(report), .at = now, .at_unix_ms = unix_ms});
  return {};
}

std::vector<ProjectionView> ProjectionTable::list() const {
  const TimePoint now = clock_.now();
  std::lock_guard lock(mutex_);
  std::vector<ProjectionView> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(view(entry, now));
  return out;
}

Result<ProjectionView> ProjectionTable::get(std::string_view name) const {
  const TimePoint now = clock_.now();
  std::lock_guard lock(mutex_);
  auto found = entries_.find(name);
  if (found == entries_.end()) return unknown(name);
  return view(found->second, now);
}

Status ProjectionTable::remove(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto found = entries_.find(name);
  if (found == entries_.end()) return unknown(name);
  entries_.erase(found);
  return {};
}

}  // namespace keel::node
