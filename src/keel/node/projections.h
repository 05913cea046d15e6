// The projections that report to a node (PUT /v1/projections/{name}): the latest report of
// each, in memory, at most kMaxProjections. A projection's checkpoint lives in its own read
// model; this table is what the console and GET /v1/projections show of it.
//
//   ProjectionTable table(clock);
//   table.report({.name = "orders", .position = 1200, .live = true});
//   for (const ProjectionView& p : table.list()) ... p.report.position, p.age ...
//
// Thread-safety: every method from any thread.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/node/api.h"

namespace keel::node {

class ProjectionTable {
 public:
  explicit ProjectionTable(Clock& clock) : clock_(clock) {}

  // Keeps the report as the projection's latest. A new name when the table is full takes the
  // place of the stalest stale projection; errc::conflict when none is stale.
  Status report(ProjectionReport report);
  // By name, each with its age.
  std::vector<ProjectionView> list() const;
  // errc::not_found when no projection of that name has reported.
  Result<ProjectionView> get(std::string_view name) const;
  Status remove(std::string_view name);

 private:
  struct Entry {
    ProjectionReport report;
    TimePoint at;
    std::int64_t at_unix_ms = 0;
  };
  ProjectionView view(const Entry& entry, TimePoint now) const;

  Clock& clock_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace keel::node
