// `keel` subcommands other than the demo. Each is added to the parser by its constructor and
// run after parsing; run() returns the process's exit code.
#pragma once

#include <iosfwd>
#include <memory>

namespace CLI {
class App;
}

namespace keel {
class NodeClient;
}

namespace keel::cli {

// `keel eventlog verify|dump|repair DIR`: offline tools for an event store's directory (see
// keel/eventlog/inspect.h and docs/formats/eventlog.md). verify and dump only read; repair takes
// the store's LOCK. Exit codes: 0 fine, 1 damage found or the tool failed, 2 a usage error.
class EventlogCommand {
 public:
  explicit EventlogCommand(CLI::App& parent);
  ~EventlogCommand();
  EventlogCommand(const EventlogCommand&) = delete;
  EventlogCommand& operator=(const EventlogCommand&) = delete;

  // True when the command line named `eventlog`, also when its own arguments were wrong (so
  // the caller can turn a parse error into exit code 2).
  bool parsed() const;
  int run(std::ostream& out, std::ostream& err) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// `keel ctl elect|leader|members|join` against a given etcd (--endpoints or
// $KEEL_ETCD_ENDPOINTS). `elect` prints one line per event ("elected token=...", "write ...
// accepted|rejected", "lost ...", "resigned ...") for people and for scripts. Exit codes: 0
// fine, 1 etcd could not be reached or refused, 2 a usage error, 3 no leader / leadership or
// membership lost (with --once).
class CtlCommand {
 public:
  explicit CtlCommand(CLI::App& parent);
  ~CtlCommand();
  CtlCommand(const CtlCommand&) = delete;
  CtlCommand& operator=(const CtlCommand&) = delete;

  bool parsed() const;
  int run(std::ostream& out, std::ostream& err) const;
  struct State;

 private:
  std::unique_ptr<State> state_;
};

// `keel proxy -c FILE`: the Ambassador / edge proxy (keel/proxy/server.h). Runs until SIGINT or
// SIGTERM (then drains), reloads the file on SIGHUP. `--check` only checks the config. Exit
// codes: 0 fine, 1 the config or a listener failed, 2 a usage error.
class ProxyCommand {
 public:
  explicit ProxyCommand(CLI::App& parent);
  ~ProxyCommand();
  ProxyCommand(const ProxyCommand&) = delete;
  ProxyCommand& operator=(const ProxyCommand&) = delete;

  bool parsed() const;
  int run(std::ostream& out, std::ostream& err) const;
  struct State;

 private:
  std::unique_ptr<State> state_;
};

// `keel node [-c FILE] [--data-dir DIR] [--listen HOST:PORT]`: the event store as a network
// service (keel/node/node.h). Runs until SIGINT or SIGTERM (then drains: no new requests,
// appends in flight finish, subscriptions get a final event), re-reads the file on SIGHUP.
// Exit codes: 0 fine, 1 the config, the store or a listener failed, 2 a usage error.
class NodeCommand {
 public:
  explicit NodeCommand(CLI::App& parent);
  ~NodeCommand();
  NodeCommand(const NodeCommand&) = delete;
  NodeCommand& operator=(const NodeCommand&) = delete;

  bool parsed() const;
  int run(std::ostream& out, std::ostream& err) const;
  struct State;

 private:
  std::unique_ptr<State> state_;
};

// `keel ctl append | read | tail | groups`: a keel node's API from the command line, through
// keel::NodeClient; part of `keel ctl` (its parent here is the ctl subcommand). `--node URL`
// (default $KEEL_NODE, else http://127.0.0.1:2113); a readable table by default, `--output
// json` for the node's JSON (one event per line for tail).
class NodeCtl {
 public:
  explicit NodeCtl(CLI::App& ctl);
  ~NodeCtl();
  NodeCtl(const NodeCtl&) = delete;
  NodeCtl& operator=(const NodeCtl&) = delete;

  bool parsed() const;
  int run(std::ostream& out, std::ostream& err) const;
  struct State;

 private:
  int projections(NodeClient& client, bool json, std::ostream& out, std::ostream& err) const;
  int cluster(NodeClient& client, bool json, std::ostream& out, std::ostream& err) const;
  std::unique_ptr<State> state_;
};

}  // namespace keel::cli
