// The `keel` binary: one executable, one subcommand per server or tool.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "keel/core/log.h"

#ifndef KEEL_VERSION
#define KEEL_VERSION "0.1.0"
#endif

int main(int argc, char** argv) {
  CLI::App app{"Keel: distributed-system patterns as production building blocks"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off");

  CLI::App* version = app.add_subcommand("version", "Print the version and exit");
  version->callback([] { std::printf("keel %s\n", KEEL_VERSION); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
