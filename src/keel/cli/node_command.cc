#include <CLI/CLI.hpp>
#include <iostream>
#include <mutex>
#include <ostream>

#include "keel/cli/commands.h"
#include "keel/cli/stop_signal.h"
#include "keel/node/node.h"

namespace keel::cli {

struct NodeCommand::State {
  CLI::App* node = nullptr;
  std::string config_path;
  std::string data_dir;
  std::string listen;
  std::string admin;
  std::string durability;
  std::string kafka;
  std::string join;
  std::string id;
  bool check_only = false;
};

NodeCommand::NodeCommand(CLI::App& parent) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.node = parent.add_subcommand(
      "node", "Run the event store as a network service (HTTP/JSON, SSE, consumer groups)");
  s.node->add_option("-c,--config", s.config_path, "YAML config (see examples/node/node.yaml)");
  s.node->add_option("--data-dir", s.data_dir, "Where the store lives (over the config's)");
  s.node->add_option("--listen", s.listen, "host:port of the API (over the config's)");
  s.node->add_option("--admin", s.admin, "host:port of /metrics, /healthz, /ready alone");
  s.node->add_option("--durability", s.durability, "every_commit, interval or none")
      ->check(CLI::IsMember({"every_commit", "interval", "none"}));
  s.node->add_option("--kafka", s.kafka,
                     "host:port of a Kafka protocol listener (over the config's; docs/kafka.md)");
  s.node->add_option("--join", s.join,
                     "Join the cluster coordinated by these etcd endpoints (comma-separated; "
                     "over the config's cluster.etcd)");
  s.node->add_option("--id", s.id, "The node's id in the cluster (default: its API address)");
  s.node->add_flag("--check", s.check_only, "Check the config, print what is wrong, and exit");
}

NodeCommand::~NodeCommand() = default;

bool NodeCommand::parsed() const { return state_->node->parsed(); }

namespace {

// The file's settings, then the flags over them (the same checks as the file's).
Result<node::NodeConfig> read_config(const NodeCommand::State& s) {
  std::string yaml;
  if (!s.data_dir.empty()) yaml += "data_dir: \"" + s.data_dir + "\"\n";
  if (!s.listen.empty()) yaml += "listen: \"" + s.listen + "\"\n";
  if (!s.admin.empty()) yaml += "admin: \"" + s.admin + "\"\n";
  if (!s.durability.empty()) yaml += "durability: " + s.durability + "\n";
  if (!s.kafka.empty()) yaml += "kafka:\n  listen: \"" + s.kafka + "\"\n";
  if (!s.join.empty()) {
    yaml += "cluster:\n  etcd: \"" + s.join + "\"\n";
    if (!s.id.empty()) yaml += "  id: \"" + s.id + "\"\n";
  }
  auto flags = node::parse_config(yaml.empty() ? "{}" : yaml, "the command line");
  if (!flags) return flags.error();
  if (s.config_path.empty()) return flags;
  auto config = node::load_config(s.config_path);
  if (!config) return config.error();
  if (!s.data_dir.empty()) config->data_dir = flags->data_dir;
  if (!s.listen.empty()) config->listen = flags->listen;
  if (!s.admin.empty()) config->admin = flags->admin;
  if (!s.durability.empty()) config->store.durability = flags->store.durability;
  if (!s.kafka.empty()) {
    if (!config->kafka) config->kafka.emplace();
    config->kafka->listen = flags->kafka->listen;
  }
  if (!s.join.empty()) {
    if (!config->cluster) config->cluster.emplace();
    config->cluster->etcd = flags->cluster->etcd;
  }
  if (!s.id.empty()) {
    if (!config->cluster)
      return Error(errc::invalid_argument, "--id needs --join or a cluster: section");
    config->cluster->id = s.id;
  }
  return config;
}

}  // namespace

int NodeCommand::run(std::ostream& out, std::ostream& err) const {
  const State& s = *state_;
  node::Node* running = nullptr;
  std::mutex mutex;
  // SIGHUP re-reads the file; what needs a restart is refused and the node keeps its settings.
  auto reload = [&] {
    std::lock_guard lock(mutex);
    if (running == nullptr) return;
    auto config = read_config(s);
    Status status = config ? running->reload(std::move(*config)) : Status(config.error());
    if (status) {
      err << "keel node: reloaded "
          << (s.config_path.empty() ? "(no config file: the flags, unchanged)" : s.config_path)
          << "\n";
    } else {
      err << "keel node: reload refused, keeping the running settings:\n"
          << status.error().message() << "\n";
    }
  };
  StopSignal stop(nullptr, reload);  // first: the node's threads inherit its mask
  auto config = read_config(s);
  if (!config) {
    err << "keel node: " << config.error().message() << "\n";
    return 1;
  }
  if (s.check_only) {
    out << (s.config_path.empty() ? "flags" : s.config_path) << ": ok (data dir "
        << config->data_dir << ", API on " << config->listen.to_string() << ")\n";
    return 0;
  }
  SteadyClock clock;
  auto node = node::Node::start(*config, clock);
  if (!node) {
    err << "keel node: " << node.error().message() << "\n";
    return 1;
  }
  err << "keel node: serving " << config->data_dir << " on " << (*node)->api().to_string() << "\n";
  if (auto admin = (*node)->admin()) err << "keel node: admin on " << admin->to_string() << "\n";
  if (auto kafka = (*node)->kafka()) err << "keel node: kafka on " << kafka->to_string() << "\n";
  if (config->cluster) err << "keel node: joined the cluster " << config->cluster->prefix << "\n";
  {
    std::lock_guard lock(mutex);
    running = node->get();
  }
  stop.wait([] { return false; });
  {
    std::lock_guard lock(mutex);
    running = nullptr;
  }
  err << "keel node: stopping (draining for up to "
      << std::chrono::duration_cast<std::chrono::milliseconds>(config->drain).count() << " ms)\n";
  (*node)->stop();
  err << "keel node: stopped\n";
  return 0;
}

}  // namespace keel::cli
