// The `keel` binary: one executable, one subcommand per server or tool.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "keel/cli/commands.h"
#include "keel/cli/demo.h"
#include "keel/core/log.h"
#include "keel/core/version.h"

int main(int argc, char** argv) {
  CLI::App app{"Keel: distributed-system patterns as production building blocks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("keel ") + keel::kVersion,
                       "Print the version and exit");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off");

  CLI::App* version = app.add_subcommand("version", "Print the version and exit");

  keel::cli::DemoOptions demo_options;
  CLI::App* demo = app.add_subcommand("demo", "Show the patterns working, with faults injected");
  demo->add_option("--seconds", demo_options.seconds, "How long the resilience part runs")
      ->check(CLI::Range(3, 3600));
  demo->add_option("--seed", demo_options.seed, "Seed for the injected faults");
  demo->add_option("--config", demo_options.config_path,
                   "YAML with the policies' settings (see examples/demo/resilience.yaml)");
  demo->add_flag("--console", demo_options.console,
                 "After the parts, keep a proxy and a node running with faults injected and "
                 "print their consoles' URLs (Ctrl-C stops)");
  demo->add_option("--only", demo_options.only, "Run one part only")
      ->check(CLI::IsMember({"resilience", "balance", "eventlog", "node", "cqrs", "proxy",
                             "strangler", "election", "cluster", "console"}));

  // Hidden: the CQRS demo's projection process.
  std::string projection_node, projection_db;
  CLI::App* projection =
      app.add_subcommand("orders-projection", "The orders projection, following a node")->group("");
  projection->add_option("--node", projection_node, "The node's URL")->required();
  projection->add_option("--db", projection_db, "The SQLite read model")->required();

  keel::cli::EventlogCommand eventlog(app);
  keel::cli::CtlCommand ctl(app);
  keel::cli::ProxyCommand proxy(app);
  keel::cli::NodeCommand node(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    // `keel eventlog` promises 2 for usage errors (CLI11's own codes are 100 and up).
    return code != 0 && (eventlog.parsed() || ctl.parsed() || proxy.parsed() || node.parsed())
               ? 2
               : code;
  }
  if (auto status = keel::log::set_level(log_level); !status) {
    std::fprintf(stderr, "keel: %s\n", status.error().message().c_str());
    return 2;
  }
  if (version->parsed()) {
    std::printf("keel %s\n", keel::kVersion);
    return 0;
  }
  if (demo->parsed()) {
    // Line by line even into a pipe, so that the demo's lines and the log lines on stderr come
    // out in the order they happened.
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (demo_options.only == "console") demo_options.console = true;
    const std::pair<const char*, int (*)(const keel::cli::DemoOptions&)> parts[] = {
        {"resilience", keel::cli::run_resilience_demo},
        {"balance", keel::cli::run_balance_demo},
        {"eventlog", keel::cli::run_eventlog_demo},
        {"node", keel::cli::run_node_demo},
        {"cqrs", keel::cli::run_cqrs_demo},
        {"proxy", keel::cli::run_proxy_demo},
        {"strangler", keel::cli::run_strangler_demo},
        {"election", keel::cli::run_election_demo},
        {"cluster", keel::cli::run_cluster_demo}};
    for (const auto& [name, run] : parts) {
      if (!demo_options.only.empty() && demo_options.only != name) continue;
      if (int code = run(demo_options); code != 0) return code;
    }
    return demo_options.console ? keel::cli::run_console_demo(demo_options) : 0;
  }
  if (projection->parsed()) return keel::cli::run_orders_projection(projection_node, projection_db);
  if (eventlog.parsed()) return eventlog.run(std::cout, std::cerr);
  if (ctl.parsed()) return ctl.run(std::cout, std::cerr);
  if (proxy.parsed()) return proxy.run(std::cout, std::cerr);
  if (node.parsed()) return node.run(std::cout, std::cerr);
  return 0;
}
