// `keel eventlog dump`: the log as text, one line per event of a complete append, in the order
// of the walk open() uses (LogChecker), with damage noted inline.
#include <cstdio>
#include <ctime>

#include "keel/eventlog/errc.h"
#include "keel/eventlog/inspect.h"
#include "keel/eventlog/log_check.h"

namespace keel::eventlog {
namespace {

constexpr std::size_t kDumpFieldChars = 200;

// Printable ASCII as is; other bytes escaped. Stops after about `max_chars` characters.
std::string escape(std::string_view bytes, std::size_t max_chars, bool escape_space) {
  std::string out;
  std::size_t i = 0;
  for (; i < bytes.size() && out.size() < max_chars; ++i) {
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7f || (escape_space && c == ' ')) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i < bytes.size()) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

std::string iso8601(std::int64_t unix_ns) {
  constexpr std::int64_t kBillion = 1000000000;
  std::int64_t seconds = unix_ns / kBillion;
  std::int64_t nanos = unix_ns % kBillion;
  if (nanos < 0) {
    nanos += kBillion;
    --seconds;
  }
  auto time = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (::gmtime_r(&time, &tm) == nullptr || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
    return std::to_string(unix_ns) + "ns";
  }
  char text[48];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(nanos / 1000));
  return text;
}

}  // namespace

Status dump_store(const std::string& directory, std::ostream& out, const DumpOptions& options) {
  auto listing = list_store(directory);
  if (!listing) return listing.error();
  if (options.limit == 0) return {};
  bool damaged = false;
  for (const std::string& name : listing->misnamed) {
    out << "# warning: " << path_in(directory, name)
        << ": named like a segment but not NNNNNNNN.seg; not read\n";
  }
  std::size_t printed = 0;
  std::uint64_t next_position = 0;  // after the last event seen, of any stream
  FindingSink sink = [&](Finding finding) {
    damaged = damaged || finding.error;
    out << (finding.error ? "# error: " : "# warning: ") << finding.problem.to_string() << "\n";
  };
  LogChecker log(*listing, sink, [&](const ScannedAppend& append) {
    for (const ScannedRecord& record : append.records) {
      if (record.is_removed) {
        next_position = record.removed.first_position + record.removed.count;
        if (options.from_position && next_position <= *options.from_position) continue;
        if (!options.stream.empty()) continue;
        out << "- removed positions " << record.removed.first_position << " to "
            << next_position - 1 << " (scavenged)\n";
        continue;
      }
      if (!record.is_event) {
        if (options.from_position && next_position < *options.from_position) continue;
        if (!options.stream.empty() && record.metadata.stream != options.stream) continue;
        out << "- " << escape(record.metadata.stream, kDumpFieldChars, true) << " metadata "
            << escape(record.metadata.json, kDumpFieldChars, false) << "\n";
        continue;
      }
      const RecordedEvent& event = record.event;
      next_position = std::max(next_position, event.position + 1);
      if (options.from_position && event.position < *options.from_position) continue;
      if (!options.stream.empty() && event.stream != options.stream) continue;
      out << event.position << ' ' << escape(event.stream, kDumpFieldChars, true) << '@'
          << event.version << ' ' << escape(event.type, kDumpFieldChars, true) << ' '
          << event.id.to_string() << ' ' << iso8601(event.timestamp_ns);
      if (options.data) out << ' ' << escape(event.data, kDumpFieldChars, false);
      out << '\n';
      if (++printed >= options.limit) return false;
    }
    return true;
  });
  log.run();
  out.flush();
  if (damaged) {
    return Error(errc::corrupt, "the log in " + directory +
                                    " is damaged (see the lines starting with '# error'); run "
                                    "`keel eventlog verify " +
                                    directory + "`");
  }
  return {};
}

}  // namespace keel::eventlog
