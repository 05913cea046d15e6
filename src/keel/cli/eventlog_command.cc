#include <CLI/CLI.hpp>
#include <cstdint>
#include <ostream>
#include <string>

#include "keel/cli/commands.h"
#include "keel/eventlog/inspect.h"

namespace keel::cli {

struct EventlogCommand::State {
  CLI::App* eventlog = nullptr;
  CLI::App* verify = nullptr;
  CLI::App* dump = nullptr;
  CLI::App* repair = nullptr;
  std::string directory;
  eventlog::DumpOptions dump_options;
  CLI::Option* from = nullptr;
  std::uint64_t from_position = 0;
  bool no_data = false;
  bool truncate_at_first_error = false;
};

namespace {

void print_problems(std::ostream& out, const eventlog::VerifyReport& report) {
  for (const auto& problem : report.errors) out << "error: " << problem.to_string() << "\n";
  if (report.errors_not_listed > 0)
    out << "error: ... and " << report.errors_not_listed << " more errors not listed\n";
  for (const auto& problem : report.warnings) out << "warning: " << problem.to_string() << "\n";
  if (report.warnings_not_listed > 0)
    out << "warning: ... and " << report.warnings_not_listed << " more warnings not listed\n";
}

int run_verify(const std::string& directory, std::ostream& out, std::ostream& err) {
  auto report = eventlog::verify_store(directory);
  if (!report) {
    err << "keel eventlog verify: " << report.error().message() << "\n";
    return 1;
  }
  print_problems(out, *report);
  out << directory << ": " << report->summary() << "\n";
  if (report->ok()) {
    out << "OK: no damage"
        << (report->warnings.empty() ? "" : " (warnings are handled by open() or harmless)")
        << "\n";
    return 0;
  }
  out << "DAMAGED: see docs/formats/eventlog.md, \"Repair\", for what to do\n";
  return 1;
}

int run_dump(const std::string& directory, const eventlog::DumpOptions& options, std::ostream& out,
             std::ostream& err) {
  auto dumped = eventlog::dump_store(directory, out, options);
  if (!dumped) {
    out.flush();
    err << "keel eventlog dump: " << dumped.error().message() << "\n";
    return 1;
  }
  return 0;
}

int run_repair(const std::string& directory, std::ostream& out, std::ostream& err) {
  auto repaired = eventlog::repair_truncate_at_first_error(directory);
  if (!repaired) {
    err << "keel eventlog repair: " << repaired.error().message() << "\n";
    return 1;
  }
  if (!repaired->changed) {
    out << directory << ": no errors, nothing to repair\n";
  } else {
    if (!repaired->cut_file.empty()) {
      out << "first error: " << repaired->first_error << "\n"
          << "cut " << repaired->cut_file << " at offset " << repaired->cut_offset << ": kept "
          << repaired->events_kept << " events; positions from "
          << repaired->first_lost_position.value_or(0) << " on are gone ("
          << repaired->readable_events_lost
          << " readable events after the cut, plus whatever the damaged records held); new "
             "appends reuse those positions\n";
    }
    for (const auto& moved : repaired->quarantined) {
      out << "moved aside: " << directory << "/" << moved << "\n";
    }
  }
  print_problems(out, repaired->after);
  out << "after repair: " << repaired->after.summary() << "\n";
  if (!repaired->after.ok()) {
    err << "keel eventlog repair: errors remain; see docs/formats/eventlog.md, \"Repair\"\n";
    return 1;
  }
  return 0;
}

}  // namespace

EventlogCommand::EventlogCommand(CLI::App& parent) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.eventlog = parent.add_subcommand("eventlog", "Check, list or repair an event store's files");
  s.eventlog->require_subcommand(1);

  s.verify = s.eventlog->add_subcommand(
      "verify", "Check every record, the index checkpoint and the snapshots; read-only");
  s.verify->add_option("DIR", s.directory, "The store's directory")
      ->required()
      ->check(CLI::ExistingDirectory);

  s.dump = s.eventlog->add_subcommand("dump", "List the events, one a line; read-only");
  s.dump->add_option("DIR", s.directory, "The store's directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  s.dump->add_option("--stream", s.dump_options.stream, "Only this stream");
  s.from = s.dump->add_option("--from", s.from_position, "From this global position on");
  s.dump->add_option("--limit", s.dump_options.limit, "At most this many events")
      ->check(CLI::NonNegativeNumber);
  s.dump->add_flag("--no-data", s.no_data, "Leave out the events' data");

  s.repair = s.eventlog->add_subcommand(
      "repair", "Cut the log back to its last good append, moving the rest into DIR/quarantine/");
  s.repair->add_option("DIR", s.directory, "The store's directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  s.repair
      ->add_flag("--truncate-at-first-error", s.truncate_at_first_error,
                 "Required: the only repair there is (see docs/formats/eventlog.md)")
      ->required();
}

EventlogCommand::~EventlogCommand() = default;

bool EventlogCommand::parsed() const { return state_->eventlog->parsed(); }

int EventlogCommand::run(std::ostream& out, std::ostream& err) const {
  const State& s = *state_;
  if (s.verify->parsed()) return run_verify(s.directory, out, err);
  if (s.dump->parsed()) {
    eventlog::DumpOptions options = s.dump_options;
    if (s.from->count() > 0) options.from_position = s.from_position;
    options.data = !s.no_data;
    return run_dump(s.directory, options, out, err);
  }
  if (s.repair->parsed()) return run_repair(s.directory, out, err);
  return 2;
}

}  // namespace keel::cli
