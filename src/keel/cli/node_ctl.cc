#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "keel/cli/commands.h"
#include "keel/cli/stop_signal.h"
#include "keel/node/api.h"
#include "keel/node/client.h"

namespace keel::cli {

using Json = nlohmann::json;

struct NodeCtl::State {
  CLI::App* append = nullptr;
  CLI::App* read = nullptr;
  CLI::App* tail = nullptr;
  CLI::App* groups = nullptr;
  CLI::App* projections = nullptr;
  CLI::App* cluster = nullptr;
  std::string cluster_arg;
  std::string to;
  bool wait = false;
  std::string node = "http://127.0.0.1:2113";
  std::string output = "table";
  std::string stream;
  std::string type;
  std::string data;
  std::string metadata;
  std::string expected = "any";
  std::string from;
  std::size_t limit = 20;
  bool backwards = false;
  bool all = false;
  std::vector<std::string> categories, types, prefixes;
  std::string action = "list";
  std::string group;
  std::string definition;
};

NodeCtl::NodeCtl(CLI::App& ctl) : state_(std::make_unique<State>()) {
  State& s = *state_;
  if (const char* env = std::getenv("KEEL_NODE"); env != nullptr && *env != '\0') s.node = env;
  s.append = ctl.add_subcommand("append", "Append an event to a stream of a keel node");
  s.append->add_option("stream", s.stream, "Stream name")->required();
  s.append->add_option("--type", s.type, "Event type")->required();
  s.append
      ->add_option("--data", s.data,
                   "The event's data: JSON or text, @FILE to read a file, - for stdin")
      ->required();
  s.append->add_option("--metadata", s.metadata, "A JSON object");
  s.append->add_option("--expected-version", s.expected,
                       "any, no_stream, stream_exists or the stream's current version");

  s.read = ctl.add_subcommand("read", "Read a page of a stream, or of $all with --all");
  s.read->add_option("stream", s.stream, "Stream name");
  s.tail = ctl.add_subcommand("tail", "Follow a stream, or $all with --all, as events arrive");
  s.tail->add_option("stream", s.stream, "Stream name");
  for (CLI::App* command : {s.read, s.tail}) {
    command->add_flag("--all", s.all, "The whole log ($all), with the filters below");
    command->add_option("--from", s.from, "A version (stream) or position ($all); start, end");
    command->add_option("--category", s.categories, "$all: streams of this category");
    command->add_option("--type", s.types, "$all: events of this type");
    command->add_option("--prefix", s.prefixes, "$all: streams starting with this");
  }
  s.read->add_option("--limit", s.limit, "Events in the page")->check(CLI::Range(1, 1000));
  s.read->add_flag("--backwards", s.backwards, "Newest first");

  s.groups = ctl.add_subcommand("groups", "Consumer groups of a keel node");
  s.groups->add_option("action", s.action, "list, create, stats, delete or replay-parked")
      ->check(CLI::IsMember({"list", "create", "stats", "delete", "replay-parked"}));
  s.groups->add_option("group", s.group, "The group's name");
  s.groups->add_option("--definition", s.definition,
                       "create: the group as JSON, e.g. {\"categories\":[\"order\"]}");

  s.projections = ctl.add_subcommand(
      "projections", "Projections that report their progress to a keel node (list, delete)");
  s.projections->add_option("action", s.action, "list or delete")
      ->check(CLI::IsMember({"list", "delete"}));
  s.projections->add_option("projection", s.group, "delete: the projection's name");

  s.cluster = ctl.add_subcommand(
      "cluster", "A keel cluster: status, move SLOTS --to NODE, rebalance, drain NODE");
  s.cluster->add_option("action", s.action, "status, move, rebalance or drain")
      ->check(CLI::IsMember({"status", "move", "rebalance", "drain"}));
  s.cluster->add_option("target", s.cluster_arg,
                        "move: slots (\"12\" or \"0-15\"); drain: the node");
  s.cluster->add_option("--to", s.to, "move: the node that takes the slots");
  s.cluster->add_flag("--wait", s.wait,
                      "move, rebalance, drain: wait until the map has reached the goal");

  for (CLI::App* command : {s.append, s.read, s.tail, s.groups, s.projections, s.cluster}) {
    command->add_option("--node", s.node,
                        "The node's API (default $KEEL_NODE, else http://127.0.0.1:2113)");
    command->add_option("--output", s.output, "table or json")
        ->check(CLI::IsMember({"table", "json"}));
  }
}

NodeCtl::~NodeCtl() = default;

bool NodeCtl::parsed() const {
  const State& s = *state_;
  return s.append->parsed() || s.read->parsed() || s.tail->parsed() || s.groups->parsed() ||
         s.projections->parsed() || s.cluster->parsed();
}

namespace {

Result<std::string> read_data(const std::string& data) {
  if (data == "-" || (!data.empty() && data[0] == '@')) {
    std::stringstream text;
    if (data == "-") {
      text << std::cin.rdbuf();
    } else {
      std::ifstream file(data.substr(1), std::ios::binary);
      if (!file) return Error(errc::io_error, "cannot open " + data.substr(1));
      text << file.rdbuf();
    }
    return text.str();
  }
  return data;
}

Result<eventlog::ExpectedVersion> expected_version(const std::string& text) {
  if (text == "any") return eventlog::ExpectedVersion::any();
  if (text == "no_stream") return eventlog::ExpectedVersion::no_stream();
  if (text == "stream_exists") return eventlog::ExpectedVersion::stream_exists();
  try {
    std::size_t used = 0;
    const unsigned long long version = std::stoull(text, &used);
    if (used == text.size()) return eventlog::ExpectedVersion::exact(version);
  } catch (const std::exception&) {
  }
  return Error(
      errc::invalid_argument,
      "--expected-version must be any, no_stream, stream_exists or a version, not " + text);
}

std::string one_line(std::string text, std::size_t width) {
  for (char& c : text) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (text.size() > width) text = text.substr(0, width - 3) + "...";
  return text;
}

void print_event(const eventlog::RecordedEvent& event, bool json, std::ostream& out) {
  if (json) {  // the node's own form of an event (docs/api.md), one per line
    out << node::event_json(event) << std::endl;
    return;
  }
  out << std::left << std::setw(10) << event.position << std::setw(24) << one_line(event.stream, 23)
      << std::setw(8) << event.version << std::setw(22) << one_line(event.type, 21)
      << one_line(event.data, 60) << std::endl;
}

// A projection's status in a word, as the console shows it.
std::string projection_status(const Json& p) {
  if (!p.value("error", Json()).is_null()) return "stopped";
  if (p.value("stale", false)) return "silent";
  if (p.value("paused", false)) return "paused";
  return p.value("live", false) ? "live" : "catching-up";
}

std::uint64_t parse_from(const std::string& from, std::uint64_t fallback) {
  if (from.empty() || from == "start") return from.empty() ? fallback : 0;
  if (from == "end") return UINT64_MAX;
  return std::stoull(from);
}

}  // namespace

int NodeCtl::projections(NodeClient& client, bool json, std::ostream& out,
                         std::ostream& err) const {
  const State& s = *state_;
  if (s.action == "delete") {
    if (s.group.empty()) {
      err << "keel ctl projections delete: name the projection\n";
      return 2;
    }
    auto gone = client.delete_projection(s.group);
    if (!gone) {
      err << "keel ctl projections: " << gone.error().message() << "\n";
      return 1;
    }
    out << "deleted " << s.group << "\n";
    return 0;
  }
  auto answer = client.projections();
  if (!answer) {
    err << "keel ctl projections: " << answer.error().message() << "\n";
    return 1;
  }
  if (json) {
    out << *answer << "\n";
    return 0;
  }
  const Json parsed = Json::parse(*answer, nullptr, false);
  out << std::left << std::setw(24) << "PROJECTION" << std::setw(13) << "STATUS" << std::setw(12)
      << "POSITION" << std::setw(10) << "LAG" << std::setw(12) << "APPLIED" << std::setw(10)
      << "AGE"
      << "STATE\n";
  for (const auto& p : parsed.value("projections", Json::array())) {
    const Json state = p.value("state", Json());
    out << std::setw(24) << one_line(p.value("name", "?"), 23) << std::setw(13)
        << projection_status(p) << std::setw(12) << p.value("position", 0) << std::setw(10)
        << p.value("lag", 0) << std::setw(12) << p.value("applied", 0) << std::setw(10)
        << (std::to_string(p.value("age_ms", 0) / 1000) + " s")
        << one_line(state.is_null() ? "" : state.dump(), 50) << "\n";
    if (!p.value("error", Json()).is_null())
      out << "  error: " << one_line(p["error"].get<std::string>(), 100) << "\n";
  }
  return 0;
}

int NodeCtl::run(std::ostream& out, std::ostream& err) const {
  const State& s = *state_;
  const bool json = s.output == "json";
  const char* name = s.append->parsed()    ? "append"
                     : s.read->parsed()    ? "read"
                     : s.tail->parsed()    ? "tail"
                     : s.groups->parsed()  ? "groups"
                     : s.cluster->parsed() ? "cluster"
                                           : "projections";
  auto fail = [&](const Error& error) {
    err << "keel ctl " << name << ": " << error.message() << "\n";
    return 1;
  };
  auto client = NodeClient::connect({.url = s.node});
  if (!client) return fail(client.error());
  pubsub::Filter filter{s.categories, s.types, s.prefixes, false};

  if (s.append->parsed()) {
    auto data = read_data(s.data);
    if (!data) return fail(data.error());
    auto expected = expected_version(s.expected);
    if (!expected) return fail(expected.error());
    eventlog::EventData event{Uuid::random_v4(), s.type, *data, s.metadata};
    auto appended = (*client)->append(s.stream, *expected, {&event, 1});
    if (!appended) return fail(appended.error());
    if (json) {
      out << Json{{"stream", s.stream},
                  {"version", appended->last_version},
                  {"position", appended->last_position},
                  {"duplicate", appended->duplicate}}
                 .dump()
          << "\n";
    } else {
      out << s.stream << " version " << appended->last_version << ", position "
          << appended->last_position << (appended->duplicate ? " (already there)" : "") << "\n";
    }
    return 0;
  }

  if (s.read->parsed() || s.tail->parsed()) {
    if (s.stream.empty() == !s.all) {
      err << "keel ctl " << name << ": name a stream or give --all\n";
      return 2;
    }
  }
  if (s.read->parsed()) {
    const auto direction =
        s.backwards ? eventlog::Direction::kBackward : eventlog::Direction::kForward;
    const std::uint64_t from = parse_from(s.from, s.backwards ? UINT64_MAX : 0);
    auto page = s.all ? (*client)->read_all(from, s.limit, filter, direction)
                      : (*client)->read_stream(s.stream, from, s.limit, direction);
    if (!page) return fail(page.error());
    if (!json) {
      out << std::left << std::setw(10) << "POSITION" << std::setw(24) << "STREAM" << std::setw(8)
          << "VERSION" << std::setw(22) << "TYPE"
          << "DATA\n";
    }
    for (const auto& event : page->events) print_event(event, json, out);
    if (!json && page->next) out << "(more: --from " << *page->next << ")\n";
    return 0;
  }

  if (s.tail->parsed()) {
    std::uint64_t from = parse_from(s.from, 0);
    if (from == UINT64_MAX) {
      // "end": what is there now is skipped.
      auto last =
          s.all ? (*client)->read_all(UINT64_MAX, 1, {}, eventlog::Direction::kBackward)
                : (*client)->read_stream(s.stream, UINT64_MAX, 1, eventlog::Direction::kBackward);
      if (!last) return fail(last.error());
      from = last->events.empty()
                 ? 0
                 : (s.all ? last->events[0].position : last->events[0].version) + 1;
    }
    NodeClient* tailing = client->get();
    StopSignal stop([tailing] { tailing->cancel(); });
    auto status = tailing->subscribe(s.all ? "" : s.stream, from, filter,
                                     [&](const eventlog::RecordedEvent& event) {
                                       print_event(event, json, out);
                                       return true;
                                     });
    if (!status && !stop.stopping()) return fail(status.error());
    return 0;
  }

  if (s.projections->parsed()) return projections(**client, json, out, err);
  if (s.cluster->parsed()) return cluster(**client, json, out, err);

  // groups
  if (s.action != "list" && s.group.empty()) {
    err << "keel ctl groups " << s.action << ": name the group\n";
    return 2;
  }
  Result<std::string> answer = std::string();
  if (s.action == "list") {
    answer = (*client)->groups();
  } else if (s.action == "create") {
    answer = (*client)->create_group(s.group, s.definition.empty() ? "{}" : s.definition);
  } else if (s.action == "stats") {
    answer = (*client)->group(s.group);
  } else if (s.action == "delete") {
    auto removed = (*client)->delete_group(s.group);
    if (!removed) return fail(removed.error());
    out << "deleted " << s.group << "\n";
    return 0;
  } else {
    auto replayed = (*client)->replay_parked(s.group);
    if (!replayed) return fail(replayed.error());
    out << "replaying " << *replayed << " parked events of " << s.group << "\n";
    return 0;
  }
  if (!answer) return fail(answer.error());
  if (json) {
    out << *answer << "\n";
    return 0;
  }
  auto parsed = Json::parse(*answer, nullptr, false);
  std::vector<Json> list;
  if (parsed.contains("groups")) {
    for (const auto& group : parsed["groups"]) list.push_back(group);
  } else {
    list.push_back(parsed);
  }
  out << std::left << std::setw(20) << "GROUP" << std::setw(20) << "STRATEGY" << std::setw(10)
      << "LAG" << std::setw(10) << "IN FLIGHT" << std::setw(8) << "PARKED" << std::setw(10)
      << "ACKED"
      << "MEMBERS\n";
  for (const auto& group : list) {
    const auto& stats = group["stats"];
    std::string members;
    for (const auto& member : group["members"]) {
      if (!members.empty()) members += ", ";
      members += member.value("name", "?");
    }
    out << std::setw(20) << group.value("name", "?") << std::setw(20)
        << group.value("strategy", "?") << std::setw(10) << stats.value("lag", 0) << std::setw(10)
        << stats.value("in_flight", 0) << std::setw(8) << stats.value("parked", 0) << std::setw(10)
        << stats.value("acked", 0) << members << "\n";
  }
  return 0;
}

}  // namespace keel::cli

namespace keel::cli {
namespace {

void print_cluster(const Json& status, std::ostream& out) {
  out << "cluster: map epoch " << status.value("epoch", 0) << ", " << status.value("slot_count", 0)
      << " slots, controller "
      << (status["controller"].is_string() ? status["controller"].get<std::string>() : "(none)");
  if (status.contains("controller_status")) {
    out << " (" << status["controller_status"].get<std::string>() << ")";
  }
  out << "\n\n";
  out << std::left << std::setw(24) << "NODE" << std::setw(28) << "API" << std::setw(8) << "SLOTS"
      << "KAFKA\n";
  for (const auto& member : status["members"]) {
    out << std::setw(24) << member.value("id", "?") << std::setw(28) << member.value("api", "?")
        << std::setw(8) << member.value("slots", 0)
        << (member["kafka"].is_string() ? member["kafka"].get<std::string>() : "-") << "\n";
  }
  out << "\n"
      << std::setw(16) << "SLOTS"
      << "OWNER\n";
  for (const auto& range : status["ranges"]) {
    const std::string slots =
        std::to_string(range.value("first", 0)) + "-" + std::to_string(range.value("last", 0));
    out << std::setw(16) << slots << range.value("owner", "?") << "\n";
  }
  out << "\n";
  if (status["move"].is_object()) {
    const auto& move = status["move"];
    out << "moving slots " << move.value("first", 0) << "-" << move.value("last", 0) << " from "
        << move.value("from", "?") << " to " << move.value("to", "?") << " ("
        << move.value("phase", "?") << ")\n";
  }
  out << status.value("slots_to_move", 0) << " slots left to move\n";
}

// "12" or "0-15".
std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_slots(const std::string& text) {
  try {
    std::size_t used = 0;
    const std::size_t dash = text.find('-');
    const std::uint64_t first = std::stoull(text.substr(0, dash), &used);
    if (used != text.substr(0, dash).size()) return std::nullopt;
    if (dash == std::string::npos) return std::pair{first, first};
    const std::string rest = text.substr(dash + 1);
    const std::uint64_t last = std::stoull(rest, &used);
    if (used != rest.size() || last < first) return std::nullopt;
    return std::pair{first, last};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

int NodeCtl::cluster(NodeClient& client, bool json, std::ostream& out, std::ostream& err) const {
  const State& s = *state_;
  const std::string action = s.action == "list" ? "status" : s.action;
  auto fail = [&](const Error& error) {
    err << "keel ctl cluster " << action << ": " << error.message() << "\n";
    return 1;
  };
  if (action != "status") {
    Json body = Json::object();
    if (action == "move") {
      auto slots = parse_slots(s.cluster_arg);
      if (!slots || s.to.empty()) {
        err << "keel ctl cluster move: give the slots (\"12\" or \"0-15\") and --to NODE\n";
        return 2;
      }
      body = {{"first", slots->first}, {"last", slots->second}, {"to", s.to}};
    } else if (action == "drain") {
      if (s.cluster_arg.empty()) {
        err << "keel ctl cluster drain: name the node\n";
        return 2;
      }
      body = {{"node", s.cluster_arg}};
    }
    auto changed = client.change_cluster(action, body.dump());
    if (!changed) return fail(changed.error());
    auto answer = Json::parse(*changed, nullptr, false);
    if (json) {
      out << *changed << "\n";
    } else {
      out << "goal set: " << answer.value("slots_to_move", 0) << " slots to move\n";
    }
    if (!s.wait) return 0;
    SteadyClock clock;
    for (;;) {
      auto status = client.cluster();
      if (!status) return fail(status.error());
      auto parsed = Json::parse(*status, nullptr, false);
      if (parsed.value("revision", std::uint64_t{0}) >=
              answer.value("revision", std::uint64_t{0}) &&
          parsed.value("slots_to_move", 1) == 0 && !parsed["move"].is_object()) {
        break;
      }
      sleep_until(clock, clock.now() + 200ms);
    }
    if (!json) out << "done: the map has reached the goal\n";
    return 0;
  }
  auto status = client.cluster();
  if (!status) return fail(status.error());
  if (json) {
    out << *status << "\n";
    return 0;
  }
  auto parsed = Json::parse(*status, nullptr, false);
  if (!parsed.is_object())
    return fail(Error(errc::invalid_argument, "the node's answer is not JSON"));
  print_cluster(parsed, out);
  return 0;
}

}  // namespace keel::cli
