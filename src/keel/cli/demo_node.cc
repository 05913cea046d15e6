// `keel demo --only node`: a `keel node` process driven from the shell, as a user would: each
// step prints the command line (`keel ctl …` or `curl …`) and what it answered. Appends, a
// version conflict, an idempotent retry, reads, a live tail, a consumer group polled and acked
// with curl, and the node's own metrics.

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "keel/cli/demo.h"
#include "keel/http/client.h"
#include "keel/node/client.h"
#include "keel/testing/subprocess.h"

namespace keel::cli {

DemoChild::~DemoChild() {
  if (!process) return;
  process->signal(SIGTERM);
  (void)process->wait(10s);
}

Result<std::string> start_demo_node(const std::string& dir, DemoChild& node) {
  std::error_code error;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
  if (error)
    return Error(std::make_error_code(std::errc::io_error), "/proc/self/exe: " + error.message());
  auto port = testing::free_loopback_port();
  if (!port) return port.error();
  const std::string url = "http://127.0.0.1:" + std::to_string(*port);
  auto started = testing::Subprocess::spawn_to_file(
      {self, "--log-level", "warn", "node", "--data-dir", dir + "/node", "--listen",
       "127.0.0.1:" + std::to_string(*port)},
      dir + "/node.log");
  if (!started) return Error(started.error().code(), "keel node: " + started.error().message());
  node.process = std::move(*started);
  auto ready = testing::wait_until_ready(*node.process, 10s, [&] {
    auto client = NodeClient::connect({.url = url, .timeout = 1s});
    return client && (*client)->next_position().ok();
  });
  if (ready != testing::Readiness::kReady) {
    return Error(std::make_error_code(std::errc::io_error),
                 "keel node did not start:\n" + testing::file_tail(dir + "/node.log", 2000));
  }
  return url;
}

namespace {

// A command the demo runs and shows: its output, collected until it ends (or is stopped).
class Shown {
 public:
  static std::unique_ptr<Shown> start(const std::string& shown_as, std::vector<std::string> argv) {
    std::printf("\n$ %s\n", shown_as.c_str());
    auto shown = std::unique_ptr<Shown>(new Shown());
    auto started = testing::Subprocess::spawn(std::move(argv), [raw = shown.get()](auto line) {
      std::lock_guard lock(raw->mutex_);
      raw->lines_.emplace_back(line);
    });
    if (!started) {
      std::printf("  (could not start: %s)\n", started.error().message().c_str());
      return nullptr;
    }
    shown->process_ = std::move(*started);
    return shown;
  }
  // Waits for it to end (SIGTERM first when `stop`), then prints what it wrote, indented, and
  // returns it.
  std::string finish(bool stop = false) {
    if (stop) process_->signal(SIGTERM);
    (void)process_->wait(10s);
    process_.reset();  // SIGKILLs it if it is still running, and joins the reader
    std::string all;
    for (const auto& line : lines_) {
      std::printf("  %s\n", line.c_str());
      all += line + "\n";
    }
    return all;
  }

 private:
  Shown() = default;
  std::mutex mutex_;
  std::vector<std::string> lines_;
  std::unique_ptr<testing::Subprocess> process_;
};

std::string run(const std::string& shown_as, std::vector<std::string> argv) {
  auto shown = Shown::start(shown_as, std::move(argv));
  return shown ? shown->finish() : std::string();
}

// `curl`, shown with $KEEL_NODE for the node's URL; its output.
std::string curl(const std::string& url, const std::string& method, const std::string& path,
                 const std::string& body = "") {
  std::vector<std::string> argv = {"curl", "-sS", "-X", method, url + path};
  std::string shown = "curl -X " + method + " $KEEL_NODE" + path;
  if (!body.empty()) {
    argv.insert(argv.end(), {"-H", "content-type: application/json", "-d", body});
    shown += " -H 'content-type: application/json' -d '" + body + "'";
  }
  argv.emplace_back("-w");
  argv.emplace_back("\n(HTTP %{http_code})");
  return run(shown, std::move(argv));
}

// Until the node has `count` open SSE subscriptions (its gauge), or a few seconds.
void wait_for_subscribers(const std::string& url, int count) {
  auto parsed = http::parse_url(url);
  if (!parsed) return;
  const std::string wanted = "keel_node_subscribers " + std::to_string(count) + "\n";
  for (int i = 0; i < 300; ++i) {
    if (auto connection = http::Connection::open(*parsed, 1s)) {
      auto metrics = (*connection)->get("/metrics", 1s);
      if (metrics && metrics->body.find(wanted) != std::string::npos) return;
    }
    std::this_thread::sleep_for(10ms);
  }
}

}  // namespace

int run_node_demo(const DemoOptions&) {
  std::printf("\n=== keel node: the event store as a network service ===\n");
  const std::string dir = (std::filesystem::temp_directory_path() / "keel-demo-node").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  DemoChild node;
  auto url = start_demo_node(dir, node);
  if (!url) {
    std::fprintf(stderr, "demo: %s\n", url.error().message().c_str());
    return 1;
  }
  std::printf("  keel node pid %d on %s (data in %s/node); KEEL_NODE=%s\n", node.process->pid(),
              url->c_str(), dir.c_str(), url->c_str());
  std::error_code error;
  const std::string keel = std::filesystem::read_symlink("/proc/self/exe", error).string();
  // `keel ctl ARGS --node URL`, shown as `keel ctl ARGS` (the node is $KEEL_NODE).
  auto ctl_argv = [&](const std::vector<std::string>& args, std::string& shown) {
    std::vector<std::string> argv = {keel, "ctl"};
    shown = "keel ctl";
    for (const auto& arg : args) {
      argv.push_back(arg);
      shown += " " + (arg.find_first_of(" {\"$") == std::string::npos ? arg : "'" + arg + "'");
    }
    argv.insert(argv.end(), {"--node", *url});
    return argv;
  };
  auto ctl = [&](const std::vector<std::string>& args) {
    std::string shown;
    auto argv = ctl_argv(args, shown);
    run(shown, std::move(argv));
  };
  const bool have_curl = std::system("command -v curl >/dev/null 2>&1") == 0;  // NOLINT

  ctl({"append", "order-1", "--type", "OrderPlaced", "--data",
       R"({"customer":"ada","total":1350})"});
  if (have_curl) {
    curl(*url, "POST", "/v1/streams/order-2",
         R"({"type":"OrderPlaced","data":{"customer":"grace","total":450}})");
    std::printf(
        "\nthe same append again with the same event id is answered with the first result:");
    const std::string retried =
        R"({"events":[{"id":"0192a7c0-0000-7000-8000-000000000001","type":"OrderShipped","data":{}}]})";
    curl(*url, "POST", "/v1/streams/order-2", retried);
    curl(*url, "POST", "/v1/streams/order-2", retried);
    std::printf("\nan append that expects an older version is refused with the actual one:");
    curl(*url, "POST", "/v1/streams/order-2?expected_version=0",
         R"({"type":"OrderCancelled","data":{}})");
  } else {
    std::printf("\n(curl is not installed: `scripts/install-deps demo` adds it)\n");
  }
  ctl({"read", "--all", "--category", "order"});

  std::printf("\nfollowing the order category live, while two more orders come in:");
  std::string tail_shown;
  auto tail_argv = ctl_argv({"tail", "--all", "--category", "order", "--from", "end"}, tail_shown);
  auto tail = Shown::start(tail_shown, std::move(tail_argv));
  if (tail) {
    wait_for_subscribers(*url, 1);  // the tail is live once the node counts its subscription
    ctl({"append", "order-3", "--type", "OrderPlaced", "--data",
         R"({"customer":"linus","total":99})"});
    ctl({"append", "order-4", "--type", "OrderPlaced", "--data",
         R"({"customer":"barbara","total":7})"});
    std::printf("\n(the tail, stopped with SIGTERM, had printed:)\n");
    tail->finish(true);
  }

  ctl({"groups", "create", "shipping", "--definition",
       R"({"categories":["order"],"strategy":"pinned"})"});
  if (have_curl) {
    const std::string polled = curl(*url, "POST", "/v1/groups/shipping/poll",
                                    R"({"member":"worker-1","max":2,"wait_ms":1000})");
    // The body is the first line; "(HTTP 200)" follows.
    auto deliveries = nlohmann::json::parse(polled.substr(0, polled.find('\n')), nullptr, false);
    if (deliveries.is_object() && deliveries.contains("deliveries") &&
        !deliveries["deliveries"].empty()) {
      const std::string id = deliveries["deliveries"][0]["id"].dump();
      std::printf("\nworker-1 acks the first delivery (id %s) and leaves the other in flight:",
                  id.c_str());
      curl(*url, "POST", "/v1/groups/shipping/ack", R"({"member":"worker-1","ids":[)" + id + "]}");
    }
  }
  ctl({"groups", "stats", "shipping"});
  if (have_curl) {
    run("curl -s $KEEL_NODE/metrics | grep -E '^keel_eventlog_(appends|syncs)_total'",
        {"sh", "-c",
         "curl -sS " + *url + "/metrics | grep -E '^keel_eventlog_(appends|syncs)_total'"});
  }
  std::printf("\n  stopping the node (SIGTERM: it drains and exits 0)\n");
  node.process->signal(SIGTERM);
  auto code = node.process->wait(10s);
  node.process.reset();
  std::printf("  keel node exited with %s\n",
              code ? std::to_string(*code).c_str() : "nothing: killed after 10 s");
  return code == 0 ? 0 : 1;
}

}  // namespace keel::cli
