#include <CLI/CLI.hpp>
#include <iostream>
#include <ostream>

#include "keel/cli/commands.h"
#include "keel/cli/stop_signal.h"
#include "keel/proxy/server.h"

namespace keel::cli {

struct ProxyCommand::State {
  CLI::App* proxy = nullptr;
  std::string config_path;
  bool check_only = false;
  int drain_ms = 5000;
};

ProxyCommand::ProxyCommand(CLI::App& parent) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.proxy = parent.add_subcommand(
      "proxy", "Run the Ambassador / edge proxy: routes, load balancing, retries, breakers");
  s.proxy->add_option("-c,--config", s.config_path, "YAML config (see examples/proxy/)")
      ->required();
  s.proxy->add_flag("--check", s.check_only, "Check the config, print what is wrong, and exit");
  s.proxy->add_option("--drain-ms", s.drain_ms, "On SIGTERM, let requests in flight finish")
      ->check(CLI::Range(0, 600000));
}

ProxyCommand::~ProxyCommand() = default;

bool ProxyCommand::parsed() const { return state_->proxy->parsed(); }

int ProxyCommand::run(std::ostream& out, std::ostream& err) const {
  const State& s = *state_;
  proxy::Server* running = nullptr;
  std::mutex mutex;
  // SIGHUP and POST /reload re-read the file; a bad config is refused and the running one keeps
  // serving.
  auto reload = [&]() -> Status {
    std::lock_guard lock(mutex);
    if (running == nullptr) return Error(errc::io_error, "the proxy is not running");
    auto config = proxy::load_config(s.config_path);
    Status status = config ? running->reload(std::move(*config)) : Status(config.error());
    if (status) {
      err << "keel proxy: reloaded " << s.config_path << "\n";
    } else {
      err << "keel proxy: reload refused, still serving the previous config:\n"
          << status.error().message() << "\n";
    }
    return status;
  };
  StopSignal stop(nullptr, [&] { (void)reload(); });  // first: the workers inherit its mask
  auto config = proxy::load_config(s.config_path);
  if (!config) {
    err << "keel proxy: " << config.error().message() << "\n";
    return 1;
  }
  if (s.check_only) {
    out << s.config_path << ": ok (" << config->listeners.size() << " listeners, "
        << config->clusters.size() << " clusters)\n";
    return 0;
  }
  SteadyClock clock;
  auto server = proxy::Server::start(std::move(*config), clock, &out);
  if (!server) {
    err << "keel proxy: " << server.error().message() << "\n";
    return 1;
  }
  for (const auto& address : (*server)->listening()) {
    err << "keel proxy: listening on " << address.to_string() << "\n";
  }
  if (auto admin = (*server)->admin()) err << "keel proxy: admin on " << admin->to_string() << "\n";
  {
    std::lock_guard lock(mutex);
    running = server->get();
  }
  (*server)->on_admin_reload(reload);
  stop.wait([] { return false; });
  {
    std::lock_guard lock(mutex);
    running = nullptr;
  }
  err << "keel proxy: stopping (draining for up to " << s.drain_ms << " ms)\n";
  (*server)->stop(std::chrono::milliseconds(s.drain_ms));
  return 0;
}

}  // namespace keel::cli
