#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <thread>

#include "keel/cli/commands.h"
#include "keel/cli/stop_signal.h"
#include "keel/console/console.h"
#include "keel/coord/election.h"
#include "keel/coord/etcd_coordinator.h"
#include "keel/coord/membership.h"
#include "keel/http/client.h"
#include "keel/http/server.h"

namespace keel::cli {

struct CtlCommand::State {
  CLI::App* ctl = nullptr;
  CLI::App* elect = nullptr;
  CLI::App* leader = nullptr;
  CLI::App* members = nullptr;
  CLI::App* join = nullptr;
  CLI::App* migrate = nullptr;
  CLI::App* migration = nullptr;
  std::string admin = "http://127.0.0.1:9901";  // keel proxy's admin listener
  std::string admin_token;                      // its admin.token, when it has one
  std::string stage;
  double percent = 0;
  std::vector<std::string> endpoints;
  int timeout_ms = 5000;
  std::string name;
  std::string value;
  int ttl_ms = 2000;
  std::string fenced_key;
  int write_interval_ms = 50;
  int writes_after_loss = 0;
  std::string elect_admin;  // elect --admin: where the console's election view is served
  bool once = false;
  bool watch = false;
  std::string members_prefix = "keel/members";
  coord::Member member;
  std::unique_ptr<NodeCtl> node;  // append, read, tail, groups
};

namespace {

// The etcd client for `keel ctl <command>`; on failure, says why on `err` and returns null.
std::unique_ptr<coord::EtcdCoordinator> connect(const CtlCommand::State& state, const char* command,
                                                std::ostream& err) {
  coord::EtcdOptions options;
  options.endpoints = state.endpoints;
  options.request_timeout = std::chrono::milliseconds(state.timeout_ms);
  auto etcd = coord::EtcdCoordinator::connect(options);
  if (!etcd) {
    err << "keel ctl " << command << ": " << etcd.error().message() << "\n";
    return nullptr;
  }
  return std::move(*etcd);
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One line per event, flushed at once: other programs read this output as it comes.
class Lines {
 public:
  explicit Lines(std::ostream& out) : out_(out) {}
  template <typename... Parts>
  void print(const Parts&... parts) {
    std::lock_guard lock(mutex_);
    out_ << "t=" << now_ms() << " ";
    (out_ << ... << parts);
    out_ << std::endl;
  }

 private:
  std::ostream& out_;
  std::mutex mutex_;
};

// A bad election name is a usage error (exit 2), found before etcd is asked anything.
bool valid_name(const CtlCommand::State& state, const char* command, std::ostream& err) {
  auto valid = coord::validate_election_name(state.name);
  if (!valid) err << "keel ctl " << command << ": " << valid.error().message() << "\n";
  return valid.ok();
}

// `keel ctl elect --admin HOST:PORT`: the console's election view of this campaign (who leads,
// with which token, since when, and this process's part), plus /healthz.
class ElectionConsole {
 public:
  ElectionConsole(std::string election, std::string me, Clock& clock)
      : election_(std::move(election)),
        me_(std::move(me)),
        clock_(clock),
        feed_(clock, {}, [this] { return sample(); }) {}
  ~ElectionConsole() { stop(); }

  Status start(const std::string& address, coord::Elector& elector) {
    auto at = http::parse_host_port(address);
    if (!at) return at.error();
    auto watch = elector.observe([this](const std::optional<coord::KeyValue>& leader) {
      std::lock_guard lock(mutex_);
      leader_ = leader ? leader->value : "";
      token_ = leader ? leader->create_revision : 0;
      since_ms_ = leader ? clock_.unix_now_ns() / 1'000'000 : 0;
    });
    if (!watch) return watch.error();
    watch_ = std::move(*watch);
    auto server = http::Server::bind(
        {.address = *at, .name = "admin"},
        [this](http::Request& request, http::Responder responder) {
          if (request.path == "/console/events") return feed_.subscribe(std::move(responder));
          if (auto file = console::asset(request.path)) return responder.respond(std::move(*file));
          if (request.path == "/healthz")
            return responder.respond(http::Response::text(200, "ok\n"));
          if (request.path != "/") {
            return responder.respond(http::Response::text(404, "not found; try / or /healthz\n"));
          }
          http::Response page = http::Response::text(
              200, console::page("keel election " + election_, "election", first_paint()));
          page.content_type = "text/html; charset=utf-8";
          responder.respond(std::move(page));
        },
        clock_);
    if (!server) return server.error();
    server_ = std::move(*server);
    feed_.start();
    server_->start();
    return {};
  }
  http::HostPort bound() const { return server_->bound(); }
  void set_role(const char* role) {
    std::lock_guard lock(mutex_);
    role_ = role;
  }
  void stop() {
    feed_.stop();
    if (server_) server_->stop(0ms);
    watch_.reset();
  }

 private:
  std::string sample() const {
    std::lock_guard lock(mutex_);
    return nlohmann::json{
        {"t", clock_.unix_now_ns() / 1'000'000},
        {"kind", "election"},
        {"election",
         {{"name", election_},
          {"leader", leader_.empty() ? nlohmann::json(nullptr) : nlohmann::json(leader_)},
          {"token", token_ == 0 ? nlohmann::json(nullptr) : nlohmann::json(token_)},
          {"since", since_ms_ == 0 ? nlohmann::json(nullptr) : nlohmann::json(since_ms_)},
          {"me", me_},
          {"role", role_}}}}
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string first_paint() const {
    std::lock_guard lock(mutex_);
    using console::escape_html;
    return "<section id=election><h2>election " + escape_html(election_) +
           "</h2><table><tr><th>leader</th><td data-leader=\"" + escape_html(leader_) + "\">" +
           (leader_.empty() ? "none" : escape_html(leader_)) +
           "</td></tr><tr><th>fencing token</th><td>" +
           (token_ == 0 ? "–" : std::to_string(token_)) +
           "</td></tr><tr><th>this process</th><td>" + escape_html(me_) + " " + role_ +
           "</td></tr></table></section>";
  }

  const std::string election_;
  const std::string me_;
  Clock& clock_;
  mutable std::mutex mutex_;
  std::string leader_;
  std::int64_t token_ = 0;
  std::int64_t since_ms_ = 0;
  const char* role_ = "candidate";
  console::Feed feed_;
  std::unique_ptr<coord::WatchHandle> watch_;
  std::unique_ptr<http::Server> server_;
};

int run_elect(const CtlCommand::State& state, std::ostream& out, std::ostream& err) {
  if (!valid_name(state, "elect", err)) return 2;
  coord::CancelToken cancel;
  StopSignal stop([&] { cancel.cancel(); });  // first: the threads started later inherit its mask
  auto etcd = connect(state, "elect", err);
  if (!etcd) return 1;
  SteadyClock clock;
  coord::Elector elector(*etcd, clock, state.name,
                         {.ttl = std::chrono::milliseconds(state.ttl_ms)});
  Lines lines(out);
  const std::string value = state.value.empty() ? "pid-" + std::to_string(::getpid()) : state.value;
  std::optional<ElectionConsole> console;
  if (!state.elect_admin.empty()) {
    console.emplace(state.name, value, clock);
    if (auto started = console->start(state.elect_admin, elector); !started) {
      err << "keel ctl elect: --admin " << state.elect_admin << ": " << started.error().message()
          << "\n";
      return 2;
    }
    lines.print("admin on ", console->bound().to_string());
  }
  std::uint64_t sequence = 0;
  // One term of leadership, as the loss report sees it. The report runs on whichever thread
  // notices the loss (the deadline's timer, the key's watch), not on the loop below, so
  // `lost` is printed at the deadline even while a write is in flight. It waits for that write
  // (which ends by the deadline: fenced_transact's timeout) so that every write line before
  // `lost` was sent before the loss and every one after it, after.
  struct Term {
    std::mutex writing;  // held by a write from before it is sent until its line is printed
    std::atomic<bool> resigning{false};
    std::atomic<bool> reported{false};
  };
  // A fenced write carrying `leadership`'s token; prints whether etcd accepted it.
  auto write = [&](Term& term, const coord::Leadership& leadership) {
    std::lock_guard lock(term.writing);
    const std::string tag =
        "token=" + std::to_string(leadership.token()) + " seq=" + std::to_string(++sequence);
    auto written = coord::fenced_transact(
        *etcd, leadership,
        {{coord::Operation::Kind::kPut, state.fenced_key, value + " " + tag, 0, false}});
    if (written) {
      lines.print("write ", tag, " accepted revision=", written->revision);
    } else {
      lines.print("write ", tag, " rejected: ", written.error().message());
    }
  };
  // The same write with the old token after the loss, sent on purpose although the local
  // deadline has passed (fenced_transact would not send it): it shows etcd's own fence refusing
  // a deposed leader.
  auto write_after_loss = [&](const coord::Leadership& leadership) {
    const std::string tag =
        "token=" + std::to_string(leadership.token()) + " seq=" + std::to_string(++sequence);
    auto written = etcd->transact(coord::fenced_transaction(
        leadership,
        {{coord::Operation::Kind::kPut, state.fenced_key, value + " " + tag, 0, false}}));
    if (written && written->succeeded) {
      lines.print("write ", tag, " accepted revision=", written->revision);
    } else {
      lines.print("write ", tag, " rejected: ",
                  written ? "fenced write refused by etcd: " + leadership.key() +
                                " no longer leads with token " + std::to_string(leadership.token())
                          : written.error().message());
    }
  };
  Duration retry = 100ms;
  while (!stop.stopping()) {
    lines.print("campaigning election=", state.name, " value=", value);
    Term term;  // outlives the leadership below, whose loss report refers to it
    auto leadership = elector.campaign(value, &cancel);
    if (!leadership) {
      if (leadership.error().is(coord::errc::cancelled)) break;
      lines.print("campaign failed: ", leadership.error().message());
      stop.wait_for(retry, [] { return false; });
      retry = std::min<Duration>(retry * 2, 2s);
      continue;
    }
    retry = 100ms;
    auto& leader = **leadership;
    const auto elected_at = std::chrono::steady_clock::now();
    lines.print("elected token=", leader.token(), " key=", leader.key(), " lease=", leader.lease());
    if (console) console->set_role("leader");
    leader.on_lost([&term, &lines, &stop, &leader, &console, elected_at] {
      if (!term.resigning) {
        std::lock_guard wait_for_the_write(term.writing);
        const auto held = std::chrono::steady_clock::now() - elected_at;
        lines.print("lost token=", leader.token(), " held_ms=", held / 1ms);
        term.reported = true;
      }
      if (console) console->set_role("candidate");
      stop.notify();
    });
    while (!stop.stopping() && !leader.lost()) {
      if (!state.fenced_key.empty()) write(term, leader);
      const Duration pause = state.fenced_key.empty()
                                 ? Duration(1s)
                                 : std::chrono::milliseconds(state.write_interval_ms);
      stop.wait_for(pause, [&] { return leader.lost(); });
    }
    if (stop.stopping()) {
      term.resigning = true;
      if (!term.reported) {
        auto resigned = leader.resign();
        lines.print("resigned token=", leader.token(),
                    resigned ? "" : " (revoke failed: " + resigned.error().message() + ")");
      }
      break;
    }
    // lost() turns true at the deadline by itself; the report follows from the deadline's timer.
    if (stop.wait([&] { return term.reported.load(); })) break;
    for (int i = 0; i < state.writes_after_loss && !state.fenced_key.empty(); ++i) {
      write_after_loss(leader);
    }
    if (state.once) return 3;
  }
  return 0;
}

int run_leader(const CtlCommand::State& state, std::ostream& out, std::ostream& err) {
  if (!valid_name(state, "leader", err)) return 2;
  auto etcd = connect(state, "leader", err);
  if (!etcd) return 1;
  SteadyClock clock;
  coord::Elector elector(*etcd, clock, state.name);
  auto describe = [](const std::optional<coord::KeyValue>& leader) {
    if (!leader) return std::string("no leader");
    return "leader value=" + leader->value + " token=" + std::to_string(leader->create_revision) +
           " key=" + leader->key;
  };
  if (!state.watch) {
    auto leader = elector.leader();
    if (!leader) {
      err << "keel ctl leader: " << leader.error().message() << "\n";
      return 1;
    }
    out << describe(*leader) << "\n";
    return leader->has_value() ? 0 : 3;
  }
  Lines lines(out);
  StopSignal stop;
  auto watch = elector.observe(
      [&](const std::optional<coord::KeyValue>& leader) { lines.print(describe(leader)); });
  if (!watch) {
    err << "keel ctl leader: " << watch.error().message() << "\n";
    return 1;
  }
  stop.wait([] { return false; });
  return 0;
}

int run_members(const CtlCommand::State& state, std::ostream& out, std::ostream& err) {
  auto etcd = connect(state, "members", err);
  if (!etcd) return 1;
  SteadyClock clock;
  coord::Membership membership(*etcd, clock, state.members_prefix);
  auto members = membership.list();
  if (!members) {
    err << "keel ctl members: " << members.error().message() << "\n";
    return 1;
  }
  for (const auto& member : *members) {
    out << member.id << "\t" << member.address << "\t" << member.metadata << "\n";
  }
  if (members->empty()) out << "no members under " << state.members_prefix << "/\n";
  return 0;
}

int run_join(const CtlCommand::State& state, std::ostream& out, std::ostream& err) {
  StopSignal stop;  // first: the threads started later inherit its mask
  auto etcd = connect(state, "join", err);
  if (!etcd) return 1;
  SteadyClock clock;
  coord::Membership membership(*etcd, clock, state.members_prefix,
                               std::chrono::milliseconds(state.ttl_ms));
  auto registration = membership.join(state.member);
  if (!registration) {
    err << "keel ctl join: " << registration.error().message() << "\n";
    return 1;
  }
  Lines lines(out);
  lines.print("joined id=", state.member.id, " lease=", (*registration)->lease());
  (*registration)->on_lost([&] { stop.notify(); });
  if (!stop.wait([&] { return (*registration)->lost(); })) {
    lines.print("lost id=", state.member.id, ": the registration's lease expired");
    return 3;
  }
  lines.print("left id=", state.member.id);
  return 0;
}

// GET or POST `target` on keel proxy's admin listener; the body, or an error naming the address.
Result<std::string> ask_proxy(const CtlCommand::State& state, bool post,
                              const std::string& target) {
  auto url = http::parse_url(state.admin);
  if (!url) return url.error();
  auto connection = http::Connection::open(*url, std::chrono::milliseconds(state.timeout_ms));
  if (!connection) return connection.error();
  if (!state.admin_token.empty()) (*connection)->set_authorization("Bearer " + state.admin_token);
  const Duration timeout = std::chrono::milliseconds(state.timeout_ms);
  auto answer =
      post ? (*connection)->post(target, "", timeout) : (*connection)->get(target, timeout);
  if (!answer) return answer.error();
  if (answer->status != 200) {
    return Error(coord::errc::invalid_argument,
                 state.admin + " answered " + std::to_string(answer->status) + ": " + answer->body);
  }
  return answer->body;
}

// One line per migrating route: its stage, the share modern serves, diffs, legacy's traffic.
void print_migration(const nlohmann::json& route, std::ostream& out) {
  char line[512];
  std::snprintf(line, sizeof line, "%-20s %-8s %6.1f%% %9.1f%% %9llu %9llu %8.2f%% %9llu\n",
                route.value("route", "").c_str(), route.value("stage", "").c_str(),
                route.value("percent", 0.0), 100 * route.value("modern_share", 0.0),
                route.value("legacy_answers", 0ULL), route.value("modern_answers", 0ULL),
                100 * route.value("diff_rate", 0.0),
                route.value("legacy_answers_since_modern", 0ULL));
  out << line;
}

int run_migration(const CtlCommand::State& state, std::ostream& out, std::ostream& err) {
  const bool change = state.migrate->parsed();
  std::string target = "/migration";
  if (change) {
    char percent[32];
    std::snprintf(percent, sizeof percent, "%g", state.percent);
    target += "?route=" + state.name + "&stage=" + state.stage + "&percent=" + percent;
  }
  auto body = ask_proxy(state, change, target);
  if (!body) {
    err << "keel ctl " << (change ? "migrate" : "migration") << ": " << body.error().message()
        << "\n";
    return 1;
  }
  auto report = nlohmann::json::parse(*body, nullptr, false);
  if (report.is_discarded()) {
    err << "keel ctl: " << state.admin << " did not answer with JSON\n";
    return 1;
  }
  out << "route                stage    percent  modern%    legacy    modern    diff%  "
         "legacy-since-modern\n";
  if (report.is_array()) {
    for (const auto& route : report) print_migration(route, out);
    if (report.empty()) out << "(no migrating routes)\n";
  } else {
    print_migration(report, out);
  }
  return 0;
}

}  // namespace

CtlCommand::CtlCommand(CLI::App& parent) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.ctl = parent.add_subcommand(
      "ctl", "Talk to Keel: a node's events and groups, a proxy's migrations, etcd's elections");
  s.ctl->require_subcommand(1);
  s.ctl->fallthrough();  // --endpoints may come after the subcommand too
  if (const char* env = std::getenv("KEEL_ETCD_ENDPOINTS"); env != nullptr && *env != '\0') {
    s.endpoints = CLI::detail::split(env, ',');
  } else {
    s.endpoints = {"http://127.0.0.1:2379"};
  }
  s.ctl
      ->add_option("--endpoints", s.endpoints,
                   "etcd client URLs, comma-separated (default $KEEL_ETCD_ENDPOINTS, else "
                   "http://127.0.0.1:2379)")
      ->delimiter(',');
  s.ctl->add_option("--timeout-ms", s.timeout_ms, "Per-request timeout")
      ->check(CLI::Range(1, 600000));

  s.elect = s.ctl->add_subcommand(
      "elect", "Campaign in election NAME and hold leadership until SIGINT/SIGTERM (resigns)");
  s.elect->add_option("name", s.name, "Election name (a key prefix in etcd)")->required();
  s.elect->add_option("value", s.value, "What observers see for this leader (default pid-N)");
  s.elect->add_option("--ttl-ms", s.ttl_ms, "Lease TTL; etcd rounds up to whole seconds")
      ->check(CLI::Range(1000, 3600000));
  s.elect->add_option("--fenced-key", s.fenced_key,
                      "While leading, write this key with fenced transactions");
  s.elect->add_option("--write-interval-ms", s.write_interval_ms, "Between fenced writes")
      ->check(CLI::Range(1, 60000));
  s.elect
      ->add_option("--writes-after-loss", s.writes_after_loss,
                   "After losing, try this many more fenced writes with the old token, sent "
                   "although the local deadline has passed (etcd must reject them all)")
      ->check(CLI::Range(0, 1000));
  s.elect->add_option("--admin", s.elect_admin,
                      "host:port of the console's election view (who leads, token, since when)");
  s.elect->add_flag("--once", s.once,
                    "Exit (code 3) when leadership is lost instead of "
                    "campaigning again");

  s.leader = s.ctl->add_subcommand("leader", "Print election NAME's leader (exit 3: none)");
  s.leader->add_option("name", s.name, "Election name")->required();
  s.leader->add_flag("--watch", s.watch, "Print every change of leader until SIGINT/SIGTERM");

  s.members = s.ctl->add_subcommand("members", "List the registered members");
  s.members->add_option("--prefix", s.members_prefix, "Membership key prefix");

  s.migrate = s.ctl->add_subcommand(
      "migrate",
      "Move a keel proxy migration route to a stage (legacy, shadow, canary, modern, "
      "retired)");
  s.migrate->add_option("route", s.name, "Route name")->required();
  s.migrate->add_option("stage", s.stage, "The stage")
      ->required()
      ->check(CLI::IsMember({"legacy", "shadow", "canary", "modern", "retired"}));
  s.migrate->add_option("--percent", s.percent, "Canary share")->check(CLI::Range(0.0, 100.0));
  s.migration = s.ctl->add_subcommand("migration", "Print keel proxy's migration report");
  for (CLI::App* command : {s.migrate, s.migration}) {
    command->add_option("--admin", s.admin,
                        "keel proxy's admin listener (default $KEEL_PROXY_ADMIN, else "
                        "http://127.0.0.1:9901)");
    command->add_option("--admin-token", s.admin_token,
                        "The proxy's admin.token, needed to change a stage (default "
                        "$KEEL_PROXY_ADMIN_TOKEN)");
  }
  if (const char* env = std::getenv("KEEL_PROXY_ADMIN"); env != nullptr && *env != '\0') {
    s.admin = env;
  }
  if (const char* env = std::getenv("KEEL_PROXY_ADMIN_TOKEN"); env != nullptr) s.admin_token = env;

  s.join =
      s.ctl->add_subcommand("join", "Register as a member under a lease, until SIGINT/SIGTERM");
  s.join->add_option("id", s.member.id, "Member id")->required();
  s.join->add_option("address", s.member.address, "Member address")->required();
  s.join->add_option("--metadata", s.member.metadata, "Free-form metadata");
  s.join->add_option("--prefix", s.members_prefix, "Membership key prefix");
  s.join->add_option("--ttl-ms", s.ttl_ms, "Lease TTL")->check(CLI::Range(1000, 3600000));
  s.node = std::make_unique<NodeCtl>(*s.ctl);
}

CtlCommand::~CtlCommand() = default;

bool CtlCommand::parsed() const { return state_->ctl->parsed(); }

int CtlCommand::run(std::ostream& out, std::ostream& err) const {
  const State& s = *state_;
  if (s.elect->parsed()) return run_elect(s, out, err);
  if (s.leader->parsed()) return run_leader(s, out, err);
  if (s.members->parsed()) return run_members(s, out, err);
  if (s.join->parsed()) return run_join(s, out, err);
  if (s.migrate->parsed() || s.migration->parsed()) return run_migration(s, out, err);
  if (s.node->parsed()) return s.node->run(out, err);
  return 2;
}

}  // namespace keel::cli
