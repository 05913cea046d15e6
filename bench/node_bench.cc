// Load generator for bench/node.sh: `keel node` over HTTP/JSON beside Redis Streams and NATS
// JetStream, each a server already running on 127.0.0.1 (node.sh starts them). Every mode
// prints one JSON object of figures as its last stdout line; node.sh makes the table.
//
//   node_bench append --target keel|redis|jetstream --port P --clients C --batch B --size S
//                     --seconds T [--prefix NAME]
//       C connections, each appending to its own stream, B events per request (Keel: one
//       POST /v1/streams/{stream} on a keep-alive connection; Redis: B XADDs pipelined;
//       JetStream: a window of B async publishes waited for together, or js_Publish for B = 1),
//       S bytes of payload per event, for T seconds. events/s and request latency.
//   node_bench e2e --target keel|redis --port P --rate R --seconds T [--producers K]
//       K producer connections append single events at R/K events/s each, the send time in the
//       payload; one subscriber (Keel: SSE on /v1/all/subscribe?from=end&category=tick; Redis:
//       XREADGROUP BLOCK + XACK) takes each event's latency. p50/p99/p99.9/max.
//   node_bench group --target keel|redis|jetstream --port P --events N [--members 3]
//       N events loaded first, then a consumer group read by M member PROCESSES (this program
//       run again as `member`) that ack every event: Keel PUT /v1/groups/g, POST poll (max,
//       wait_ms), POST ack with the ids of each poll; Redis XREADGROUP COUNT + XACK with the ids
//       of each read; JetStream a durable pull consumer, Fetch + an ack per message. events/s
//       from the members' start until every event is acked.
//   node_bench idle --target keel|redis --port P --pid PID --count N
//       The server's RSS (VmRSS of PID) before and after N idle subscriptions (Keel: SSE on
//       /v1/all/subscribe?from=end; Redis: XREAD BLOCK 0 on a stream nobody writes).
//
// Plain POSIX sockets: a tiny HTTP/1.1 keep-alive client (Content-Length and chunked bodies)
// and a RESP client; libnats for JetStream when the build found it (KEEL_NODE_BENCH_NATS).
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "redis_client.h"
#include "socket.h"

#ifdef KEEL_NODE_BENCH_NATS
#include <nats/nats.h>
#endif

extern char** environ;

namespace {

using keel::bench::now_ns;
using keel::bench::percentile;
using keel::bench::seconds_since;
using keel::bench::Wall;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "node_bench: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}
void note(const std::string& what) { std::fprintf(stderr, "node_bench: %s\n", what.c_str()); }

// The figures of one mode, printed as one JSON object.
std::map<std::string, double> figures;
void figure(const std::string& name, double value) { figures[name] = value; }
void print_figures() { keel::bench::print_figures_line(figures); }

using keel::bench::Closed;
using keel::bench::closing_is_expected;
using keel::bench::Socket;

// ---- a tiny HTTP/1.1 keep-alive client ----

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

class Http {
 public:
  explicit Http(int port) : socket_(port, "node_bench") {}

  struct Response {
    int status = 0;
    std::string body;
  };

  // One request and its whole response. `body` empty: no body sent.
  Response request(std::string_view method, std::string_view target, std::string_view body = {}) {
    std::string head;
    head.reserve(160);
    head.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if (!body.empty() || method == "POST" || method == "PUT") {
      head.append("Content-Type: application/json\r\nContent-Length: ")
          .append(std::to_string(body.size()))
          .append("\r\n");
    }
    head.append("\r\n");
    socket_.write_all(head, body);
    Response response;
    response.status = read_head();
    if (chunked_) {
      while (read_chunk(response.body)) {
      }
    } else {
      response.body = socket_.read_bytes(length_);
    }
    return response;
  }

  // A GET whose body streams (SSE): returns the status once the head is in; then read_some().
  int start_stream(std::string_view target) {
    std::string head;
    head.append("GET ").append(target).append(
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
    socket_.write_all(head);
    return read_head();
  }
  // Appends the next piece of a chunked body to `out`; false once the body has ended.
  bool read_some(std::string& out) { return read_chunk(out); }
  Socket& socket() { return socket_; }

 private:
  int read_head() {
    std::string status_line = socket_.read_line();
    if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0)
      die("not an HTTP response: " + status_line);
    const int status = std::atoi(status_line.c_str() + 9);
    chunked_ = false;
    length_ = 0;
    chunk_left_ = 0;
    after_chunk_ = false;
    for (std::string line = socket_.read_line(); !line.empty(); line = socket_.read_line()) {
      if (iequals_prefix(line, "content-length:"))
        length_ = std::strtoull(line.c_str() + 15, nullptr, 10);
      else if (iequals_prefix(line, "transfer-encoding:") &&
               line.find("chunked") != std::string::npos)
        chunked_ = true;
    }
    return status;
  }
  bool read_chunk(std::string& out) {
    if (chunk_left_ == 0) {
      if (after_chunk_) {
        (void)socket_.read_line();  // the CRLF after a chunk's data
        after_chunk_ = false;
      }
      const std::string size = socket_.read_line();
      chunk_left_ = std::strtoull(size.c_str(), nullptr, 16);
      if (chunk_left_ == 0) {
        while (!socket_.read_line().empty()) {  // trailer fields, then the empty line
        }
        return false;
      }
    }
    if (socket_.buffered() == 0) socket_.must_fill();
    const std::size_t n = std::min(chunk_left_, socket_.buffered());
    out.append(socket_.data(), n);
    socket_.consume(n);
    chunk_left_ -= n;
    if (chunk_left_ == 0) after_chunk_ = true;
    return true;
  }

  Socket socket_;
  bool chunked_ = false;
  std::size_t length_ = 0;
  std::size_t chunk_left_ = 0;
  bool after_chunk_ = false;
};

using keel::bench::for_each_entry;
using keel::bench::Redis;

// Keel event data of exactly `size` bytes of JSON: {"p":"xxxx"}.
std::string keel_data(std::size_t size) {
  const std::size_t pad = size > 8 ? size - 8 : 1;
  return "{\"p\":\"" + std::string(pad, 'x') + "\"}";
}

#ifdef KEEL_NODE_BENCH_NATS
// ---- NATS JetStream through libnats ----

struct Nats {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  Nats(int port, std::int64_t max_pending) {
    const std::string url = "nats://127.0.0.1:" + std::to_string(port);
    natsStatus s = natsConnection_ConnectTo(&nc, url.c_str());
    if (s != NATS_OK) die("nats: cannot connect to " + url + ": " + natsStatus_GetText(s));
    jsOptions options;
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = max_pending;
    options.Wait = 30000;
    s = natsConnection_JetStream(&js, nc, &options);
    if (s != NATS_OK) die(std::string("nats: JetStream context: ") + natsStatus_GetText(s));
  }
  ~Nats() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  Nats(const Nats&) = delete;
  Nats& operator=(const Nats&) = delete;
};

// A fresh file-backed stream NAME on SUBJECT (deleted first if it exists).
void jetstream_fresh_stream(int port, const char* name, const char* subject) {
  Nats n(port, 1);
  js_DeleteStream(n.js, name, nullptr, nullptr);
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name;
  const char* subjects[] = {subject};
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(nullptr, n.js, &config, nullptr, &jerr);
  if (s != NATS_OK)
    die(std::string("nats: add stream: ") + natsStatus_GetText(s) + " (" +
        std::to_string(static_cast<int>(jerr)) + ")");
}
void jetstream_delete_stream(int port, const char* name) {
  Nats n(port, 1);
  js_DeleteStream(n.js, name, nullptr, nullptr);
}
#endif

// ---- append throughput ----

struct AppendOptions {
  std::string target;
  int port = 0;
  int clients = 1;
  int batch = 1;
  std::size_t size = 100;
  double seconds = 3;
  std::string prefix = "a";
};

void append_mode(const AppendOptions& o) {
  const auto n_clients = static_cast<std::size_t>(o.clients);
  std::vector<std::uint64_t> events(n_clients, 0), requests(n_clients, 0);
  std::vector<std::vector<double>> latencies(n_clients);
  std::vector<std::map<int, std::uint64_t>> failures(n_clients);
  std::vector<double> ends(n_clients, 0);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Wall::time_point start;
  Wall::time_point deadline;
#ifdef KEEL_NODE_BENCH_NATS
  if (o.target == "jetstream") jetstream_fresh_stream(o.port, "BENCH", "bench.>");
#else
  if (o.target == "jetstream") {
    note("built without libnats: no JetStream");
    std::exit(3);
  }
#endif
  auto wait_for_go = [&] {
    ++ready;
    while (!go.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
  };
  auto timed = [&](std::size_t c, const std::function<void()>& one_request) {
    while (Wall::now() < deadline) {
      const std::int64_t t0 = now_ns();
      one_request();
      latencies[c].push_back(static_cast<double>(now_ns() - t0) / 1e6);
      ++requests[c];
    }
    ends[c] = seconds_since(start);
  };

  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < n_clients; ++c) {
    threads.emplace_back([&, c] {
      const std::string stream = o.prefix + "-c" + std::to_string(c);
      latencies[c].reserve(1 << 16);
      if (o.target == "keel") {
        Http http(o.port);
        const std::string target = "/v1/streams/" + stream;
        const std::string one = "{\"type\":\"Bench\",\"data\":" + keel_data(o.size) + "}";
        std::string body;
        if (o.batch == 1) {
          body = one;
        } else {
          body = "{\"events\":[";
          for (int i = 0; i < o.batch; ++i) body += (i ? "," : "") + one;
          body += "]}";
        }
        wait_for_go();
        timed(c, [&] {
          auto response = http.request("POST", target, body);
          if (response.status == 200)
            events[c] += static_cast<std::uint64_t>(o.batch);
          else
            ++failures[c][response.status];
        });
      } else if (o.target == "redis") {
        Redis redis(o.port);
        std::string pipeline;
        for (int i = 0; i < o.batch; ++i)
          Redis::encode(pipeline, {"XADD", stream, "*", "f", std::string(o.size, 'v')});
        wait_for_go();
        timed(c, [&] {
          redis.send_raw(pipeline);
          for (int i = 0; i < o.batch; ++i) {
            auto reply = redis.read();
            if (reply.type == '-')
              ++failures[c][0];
            else
              ++events[c];
          }
        });
      } else {
#ifdef KEEL_NODE_BENCH_NATS
        Nats nats(o.port, o.batch);
        const std::string subject = "bench." + stream;
        const std::string payload(o.size, 'x');
        jsPubOptions complete;
        jsPubOptions_Init(&complete);
        complete.MaxWait = 60000;
        wait_for_go();
        timed(c, [&] {
          natsStatus s = NATS_OK;
          if (o.batch == 1) {
            s = js_Publish(nullptr, nats.js, subject.c_str(), payload.data(),
                           static_cast<int>(payload.size()), nullptr, nullptr);
          } else {
            for (int i = 0; i < o.batch && s == NATS_OK; ++i)
              s = js_PublishAsync(nats.js, subject.c_str(), payload.data(),
                                  static_cast<int>(payload.size()), nullptr);
            if (s == NATS_OK) s = js_PublishAsyncComplete(nats.js, &complete);
          }
          if (s == NATS_OK)
            events[c] += static_cast<std::uint64_t>(o.batch);
          else
            ++failures[c][static_cast<int>(s)];
        });
#endif
      }
    });
  }
  while (ready.load() < o.clients) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  start = Wall::now();
  deadline = start + std::chrono::nanoseconds(static_cast<std::int64_t>(o.seconds * 1e9));
  go = true;
  for (auto& t : threads) t.join();

  std::uint64_t total = 0, total_requests = 0;
  std::vector<double> all;
  std::map<int, std::uint64_t> failed;
  for (std::size_t c = 0; c < n_clients; ++c) {
    total += events[c];
    total_requests += requests[c];
    all.insert(all.end(), latencies[c].begin(), latencies[c].end());
    for (auto [status, count] : failures[c]) failed[status] += count;
  }
  const double elapsed = *std::max_element(ends.begin(), ends.end());
  std::sort(all.begin(), all.end());
  figure("events", static_cast<double>(total));
  figure("requests", static_cast<double>(total_requests));
  figure("seconds", elapsed);
  figure("events_per_s", static_cast<double>(total) / elapsed);
  figure("request_p50_ms", percentile(all, 0.5));
  figure("request_p99_ms", percentile(all, 0.99));
  std::uint64_t failed_total = 0;
  for (auto [status, count] : failed) {
    figure("failed_status_" + std::to_string(status), static_cast<double>(count));
    failed_total += count;
  }
  figure("failed", static_cast<double>(failed_total));
#ifdef KEEL_NODE_BENCH_NATS
  if (o.target == "jetstream") jetstream_delete_stream(o.port, "BENCH");
#endif
  if (o.target == "redis") {
    Redis redis(o.port);
    for (std::size_t c = 0; c < n_clients; ++c)
      redis.command({"DEL", o.prefix + "-c" + std::to_string(c)});
  }
  print_figures();
}

// ---- end-to-end latency append → subscriber ----

struct E2eOptions {
  std::string target;
  int port = 0;
  double rate = 10000;
  double seconds = 5;
  int producers = 16;
  std::size_t size = 100;
};

// Each producer k sends at rate/K, offset by k/K of an interval so that they interleave; a late
// producer catches up (the rate holds on average). `send(ts)` returns false on a failed append.
void produce(const E2eOptions& o, std::atomic<std::uint64_t>& sent,
             std::atomic<std::uint64_t>& failed,
             const std::function<std::function<bool(std::int64_t)>(int)>& make_sender) {
  std::vector<std::thread> threads;
  const auto interval =
      std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * o.producers / o.rate));
  const auto start = Wall::now() + std::chrono::milliseconds(50);
  const auto end = start + std::chrono::nanoseconds(static_cast<std::int64_t>(o.seconds * 1e9));
  // How long each append took to be acknowledged: a stall on the append side shows here.
  std::vector<std::vector<double>> acks(static_cast<std::size_t>(o.producers));
  for (int k = 0; k < o.producers; ++k) {
    threads.emplace_back([&, k] {
      auto send = make_sender(k);
      auto& mine = acks[static_cast<std::size_t>(k)];
      auto next = start + interval * k / o.producers;
      while (next < end) {
        std::this_thread::sleep_until(next);
        const std::int64_t ts = now_ns();
        if (send(ts))
          ++sent;
        else
          ++failed;
        mine.push_back(static_cast<double>(now_ns() - ts) / 1e6);
        next += interval;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (const auto& mine : acks) all.insert(all.end(), mine.begin(), mine.end());
  std::sort(all.begin(), all.end());
  figure("append_p99_ms", percentile(all, 0.99));
  figure("append_max_ms", all.empty() ? 0 : all.back());
}

void report_latencies(std::vector<double>& latencies, std::uint64_t sent, std::uint64_t failed,
                      double rate, double seconds, double produce_seconds) {
  std::sort(latencies.begin(), latencies.end());
  figure("sent", static_cast<double>(sent));
  figure("failed", static_cast<double>(failed));
  figure("received", static_cast<double>(latencies.size()));
  figure("rate_events_per_s", rate);
  figure("achieved_events_per_s", static_cast<double>(sent) / produce_seconds);
  figure("seconds", seconds);
  figure("p50_ms", percentile(latencies, 0.5));
  figure("p99_ms", percentile(latencies, 0.99));
  figure("p999_ms", percentile(latencies, 0.999));
  figure("max_ms", latencies.empty() ? 0 : latencies.back());
  print_figures();
}

void e2e_mode(const E2eOptions& o) {
  std::atomic<std::uint64_t> sent{0}, failed{0};
  std::atomic<bool> producing{true};
  std::mutex mutex;
  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(o.rate * o.seconds) + 1024);
  const std::string pad(o.size > 40 ? o.size - 40 : 1, 'x');
  auto finished = [&] {
    std::lock_guard lock(mutex);
    return !producing && latencies.size() >= sent.load();
  };
  auto record = [&](std::int64_t ts) {
    const double ms = static_cast<double>(now_ns() - ts) / 1e6;
    std::lock_guard lock(mutex);
    latencies.push_back(ms);
  };
  std::thread consumer;
  std::atomic<bool> subscribed{false};
  std::atomic<bool> give_up{false};
  std::atomic<int> subscriber_fd{-1};
  if (o.target == "keel") {
    consumer = std::thread([&] {
      Http http(o.port);
      const int status = http.start_stream("/v1/all/subscribe?from=end&category=tick");
      if (status != 200) die("subscribe answered " + std::to_string(status));
      subscriber_fd = http.socket().fd();
      closing_is_expected = true;
      subscribed = true;
      std::string body;
      std::size_t start = 0;
      while (!finished() && !give_up) {
        try {
          if (!http.read_some(body)) die("the node ended the subscription");
        } catch (const Closed&) {
          if (finished() || give_up) break;
          die("the node closed the subscription");
        }
        std::size_t end;
        while ((end = body.find('\n', start)) != std::string::npos) {
          std::string_view line(body.data() + start, end - start);
          start = end + 1;
          if (line.starts_with("data: ")) {
            const auto at = line.find("\"ts\":");
            if (at == std::string_view::npos) die("an event without ts: " + std::string(line));
            record(std::strtoll(line.data() + at + 5, nullptr, 10));
          } else if (line.starts_with("event: dropped")) {
            die("the node dropped the subscriber (slow_consumer)");
          }
        }
        if (start > (1 << 20)) {
          body.erase(0, start);
          start = 0;
        }
      }
    });
  } else {
    Redis admin(o.port);
    admin.command({"DEL", "live"});
    admin.command({"XGROUP", "CREATE", "live", "g", "$", "MKSTREAM"});
    consumer = std::thread([&] {
      Redis redis(o.port);
      subscribed = true;
      while (!finished() && !give_up) {
        auto reply = redis.command({"XREADGROUP", "GROUP", "g", "c", "COUNT", "100", "BLOCK", "100",
                                    "STREAMS", "live", ">"});
        std::vector<std::string> ack = {"XACK", "live", "g"};
        for_each_entry(reply, [&](const std::string& id, const Redis::Reply& fields) {
          record(std::stoll(fields.items[1].text));
          ack.push_back(id);
        });
        if (ack.size() > 3) redis.command(ack);
      }
    });
  }
  while (!subscribed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the subscription is in place
  const auto start = Wall::now();
  produce(o, sent, failed, [&](int k) -> std::function<bool(std::int64_t)> {
    if (o.target == "keel") {
      auto http = std::make_shared<Http>(o.port);
      auto target = std::make_shared<std::string>("/v1/streams/tick-" + std::to_string(k));
      return [&, http, target](std::int64_t ts) {
        const std::string body = "{\"type\":\"Tick\",\"data\":{\"ts\":" + std::to_string(ts) +
                                 ",\"p\":\"" + pad + "\"}}";
        return http->request("POST", *target, body).status == 200;
      };
    }
    auto redis = std::make_shared<Redis>(o.port);
    return [&, redis](std::int64_t ts) {
      redis->send({"XADD", "live", "*", "ts", std::to_string(ts), "p", pad});
      return redis->read().type != '-';
    };
  });
  const double produce_seconds = seconds_since(start) - 0.05;
  producing = false;
  const auto drain_until = Wall::now() + std::chrono::seconds(10);
  while (!finished() && Wall::now() < drain_until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!finished()) {
    note("e2e: " + std::to_string(sent.load() - latencies.size()) +
         " events had not arrived 10 s after the last append");
    give_up = true;
  }
  const double elapsed = seconds_since(start);
  // The SSE subscriber waits in read() for the next frame: end it.
  if (subscriber_fd.load() >= 0) ::shutdown(subscriber_fd.load(), SHUT_RDWR);
  consumer.join();
  if (o.target == "redis") Redis(o.port).command({"DEL", "live"});
  report_latencies(latencies, sent, failed, o.rate, elapsed, produce_seconds);
}

// ---- consumer groups: member processes ----

struct Shared {
  std::atomic<std::uint64_t> acked;
  std::atomic<std::uint64_t> failed;
  std::atomic<std::uint64_t> polls_503;
  std::atomic<std::uint32_t> ready;
  std::atomic<std::uint32_t> go;
  std::atomic<std::uint32_t> stop;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

Shared* map_shared(int fd) {
  void* memory = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (memory == MAP_FAILED) die(std::string("mmap: ") + std::strerror(errno));
  return static_cast<Shared*>(memory);
}

struct MemberOptions {
  std::string target;
  int port = 0;
  std::string name;
  int shm_fd = -1;
  int max = 100;
};

// Counts the unsigned integers in a JSON array that starts at `at` (the '[').
std::size_t count_array(std::string_view body, std::size_t at) {
  if (at == std::string_view::npos || at + 1 >= body.size() || body[at + 1] == ']') return 0;
  const auto end = body.find(']', at);
  return static_cast<std::size_t>(std::count(body.begin() + static_cast<long>(at),
                                             body.begin() + static_cast<long>(end), ',')) +
         1;
}

void member_mode(const MemberOptions& o) {
  Shared* shared = map_shared(o.shm_fd);
  auto start_when_told = [&] {
    ++shared->ready;
    while (!shared->go.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  };
  if (o.target == "keel") {
    Http http(o.port);
    const std::string poll =
        "{\"member\":\"" + o.name + "\",\"max\":" + std::to_string(o.max) + ",\"wait_ms\":100}";
    const std::string ack_head = "{\"member\":\"" + o.name + "\",\"ids\":[";
    start_when_told();
    while (!shared->stop.load()) {
      auto polled = http.request("POST", "/v1/groups/g/poll", poll);
      if (polled.status != 200) {
        // 503: the node's poll queue is full; retry after a short backoff, as the API says.
        if (polled.status == 503)
          ++shared->polls_503;
        else
          ++shared->failed;
        if (shared->polls_503 + shared->failed <= 3)
          note(o.name + ": poll answered " + std::to_string(polled.status) + " " + polled.body);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      // Deliveries are {"id":N,"attempt":…,"event":{"id":"uuid",…}}: a number after {"id": is a
      // delivery id, a string an event id.
      std::string ack = ack_head;
      std::size_t ids = 0;
      for (std::size_t at = polled.body.find("{\"id\":"); at != std::string::npos;
           at = polled.body.find("{\"id\":", at + 6)) {
        const char c = polled.body[at + 6];
        if (c < '0' || c > '9') continue;
        const auto end = polled.body.find_first_not_of("0123456789", at + 6);
        if (ids++) ack += ',';
        ack.append(polled.body, at + 6, end - at - 6);
      }
      if (ids == 0) continue;
      ack += "]}";
      auto acked = http.request("POST", "/v1/groups/g/ack", ack);
      if (acked.status != 200) {
        note(o.name + ": ack answered " + std::to_string(acked.status) + " " + acked.body);
        shared->failed += ids;
        continue;
      }
      const std::string_view body = acked.body;
      shared->acked += count_array(body, body.find('[', body.find("\"settled\"")));
      shared->failed += count_array(body, body.find('[', body.find("\"failed\"")));
    }
  } else if (o.target == "redis") {
    Redis redis(o.port);
    start_when_told();
    while (!shared->stop.load()) {
      auto reply = redis.command({"XREADGROUP", "GROUP", "g", o.name, "COUNT",
                                  std::to_string(o.max), "BLOCK", "100", "STREAMS", "grp", ">"});
      std::vector<std::string> ack = {"XACK", "grp", "g"};
      for_each_entry(reply, [&](const std::string& id, const Redis::Reply&) { ack.push_back(id); });
      if (ack.size() == 3) continue;
      auto acked = redis.command(ack);
      shared->acked += std::stoull(acked.text);
    }
  } else {
#ifdef KEEL_NODE_BENCH_NATS
    Nats nats(o.port, 1);
    jsSubOptions options;
    jsSubOptions_Init(&options);
    options.Stream = "GRP";
    options.Consumer = "g";
    natsSubscription* sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_PullSubscribe(&sub, nats.js, "grp.>", "g", nullptr, &options, &jerr);
    if (s != NATS_OK) die(std::string("nats: pull subscribe: ") + natsStatus_GetText(s));
    start_when_told();
    while (!shared->stop.load()) {
      natsMsgList list{nullptr, 0};
      s = natsSubscription_Fetch(&list, sub, o.max, 100, &jerr);
      if (s == NATS_TIMEOUT) continue;
      if (s != NATS_OK) {
        note(o.name + ": fetch: " + natsStatus_GetText(s));
        ++shared->failed;
        continue;
      }
      std::uint64_t acked = 0;
      for (int i = 0; i < list.Count; ++i)
        if (natsMsg_Ack(list.Msgs[i], nullptr) == NATS_OK) ++acked;
      natsMsgList_Destroy(&list);
      shared->acked += acked;
    }
    natsConnection_FlushTimeout(nats.nc, 5000);
    natsSubscription_Destroy(sub);
#endif
  }
}

struct GroupOptions {
  std::string target;
  int port = 0;
  std::uint64_t events = 200000;
  int members = 3;
  int max = 100;
  std::size_t size = 100;
  double timeout_s = 300;
};

void group_mode(const GroupOptions& o, const char* self) {
#ifndef KEEL_NODE_BENCH_NATS
  if (o.target == "jetstream") {
    note("built without libnats: no JetStream");
    std::exit(3);
  }
#endif
  // Load the events.
  const auto load_start = Wall::now();
  if (o.target == "keel") {
    Http http(o.port);
    const std::string one = "{\"type\":\"Bench\",\"data\":" + keel_data(o.size) + "}";
    for (std::uint64_t i = 0; i < o.events;) {
      const std::uint64_t n = std::min<std::uint64_t>(1000, o.events - i);
      std::string body = "{\"events\":[";
      for (std::uint64_t j = 0; j < n; ++j) body += (j ? "," : "") + one;
      body += "]}";
      auto response =
          http.request("POST", "/v1/streams/grp-" + std::to_string((i / 1000) % 100), body);
      if (response.status != 200)
        die("loading: append answered " + std::to_string(response.status) + " " + response.body);
      i += n;
    }
    auto created =
        http.request("PUT", "/v1/groups/g",
                     "{\"categories\":[\"grp\"],\"max_in_flight\":256,\"buffer_events\":4096}");
    if (created.status != 200)
      die("PUT /v1/groups/g answered " + std::to_string(created.status) + " " + created.body);
  } else if (o.target == "redis") {
    Redis redis(o.port);
    redis.command({"DEL", "grp"});
    std::string pipeline;
    for (int j = 0; j < 1000; ++j)
      Redis::encode(pipeline, {"XADD", "grp", "*", "f", std::string(o.size, 'v')});
    for (std::uint64_t i = 0; i < o.events; i += 1000) {
      redis.send_raw(pipeline);
      for (int j = 0; j < 1000; ++j)
        if (redis.read().type == '-') die("loading: XADD failed");
    }
    redis.command({"XGROUP", "CREATE", "grp", "g", "0"});
  } else {
#ifdef KEEL_NODE_BENCH_NATS
    jetstream_fresh_stream(o.port, "GRP", "grp.>");
    {
      Nats nats(o.port, 1000);
      const std::string payload(o.size, 'x');
      jsPubOptions complete;
      jsPubOptions_Init(&complete);
      complete.MaxWait = 60000;
      for (std::uint64_t i = 0; i < o.events; i += 1000) {
        for (int j = 0; j < 1000; ++j)
          if (js_PublishAsync(nats.js, "grp.x", payload.data(), static_cast<int>(payload.size()),
                              nullptr) != NATS_OK)
            die("loading: publish failed");
        if (js_PublishAsyncComplete(nats.js, &complete) != NATS_OK) die("loading: no acks");
      }
      jsConsumerConfig config;
      jsConsumerConfig_Init(&config);
      config.Durable = "g";
      config.AckPolicy = js_AckExplicit;
      config.MaxAckPending = 256 * o.members;  // as Keel's max_in_flight 256 per member
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_AddConsumer(nullptr, nats.js, "GRP", &config, nullptr, &jerr);
      if (s != NATS_OK) die(std::string("nats: add consumer: ") + natsStatus_GetText(s));
    }
#endif
  }
  const double load_seconds = seconds_since(load_start);

  // The members, as processes.
  const int fd = ::memfd_create("node_bench", 0);
  if (fd < 0 || ::ftruncate(fd, 4096) != 0) die("memfd");
  Shared* shared = map_shared(fd);
  std::vector<pid_t> pids;
  for (int m = 0; m < o.members; ++m) {
    std::vector<std::string> args = {self,       "member",
                                     "--target", o.target,
                                     "--port",   std::to_string(o.port),
                                     "--name",   "m" + std::to_string(m),
                                     "--shm-fd", std::to_string(fd),
                                     "--max",    std::to_string(o.max)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0)
      die("cannot start a member process");
    pids.push_back(pid);
  }
  while (shared->ready.load() < static_cast<std::uint32_t>(o.members))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto start = Wall::now();
  shared->go = 1;
  bool complete = true;
  while (shared->acked.load() < o.events) {
    if (seconds_since(start) > o.timeout_s) {
      note("group: timed out with " + std::to_string(shared->acked.load()) + " of " +
           std::to_string(o.events) + " acked");
      complete = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  double elapsed = seconds_since(start);
  shared->stop = 1;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) note("a member process failed");
  }
  // What the server says was acknowledged.
  double server_acked = -1;
  if (o.target == "keel") {
    Http http(o.port);
    auto group = http.request("GET", "/v1/groups/g");
    const auto at = group.body.find("\"acked\":");
    if (at != std::string::npos) server_acked = std::strtod(group.body.c_str() + at + 8, nullptr);
  } else if (o.target == "redis") {
    Redis redis(o.port);
    auto pending = redis.command({"XPENDING", "grp", "g"});
    if (!pending.items.empty())
      server_acked = static_cast<double>(o.events) - std::stod(pending.items[0].text);
    redis.command({"DEL", "grp"});
  } else {
#ifdef KEEL_NODE_BENCH_NATS
    // Acks are sent without waiting for an answer: the clock stops when the server has them.
    Nats nats(o.port, 1);
    for (;;) {
      jsConsumerInfo* info = nullptr;
      if (js_GetConsumerInfo(&info, nats.js, "GRP", "g", nullptr, nullptr) != NATS_OK) break;
      const std::uint64_t floor = info->AckFloor.Stream;
      jsConsumerInfo_Destroy(info);
      if (floor >= o.events || !complete) {
        server_acked = static_cast<double>(floor);
        break;
      }
      if (seconds_since(start) > o.timeout_s) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    elapsed = seconds_since(start);
    jetstream_delete_stream(o.port, "GRP");
#endif
  }
  figure("events", static_cast<double>(o.events));
  figure("acked", static_cast<double>(shared->acked.load()));
  figure("server_acked", server_acked);
  figure("failed", static_cast<double>(shared->failed.load()));
  figure("polls_503", static_cast<double>(shared->polls_503.load()));
  figure("members", o.members);
  figure("complete", complete ? 1 : 0);
  figure("seconds", elapsed);
  figure("events_per_s", static_cast<double>(std::min(shared->acked.load(), o.events)) / elapsed);
  figure("load_events_per_s", static_cast<double>(o.events) / load_seconds);
  print_figures();
}

// ---- memory of idle subscriptions ----

long rss_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  die("no VmRSS for pid " + std::to_string(pid));
}

struct IdleOptions {
  std::string target;
  int port = 0;
  int pid = 0;
  int count = 1000;
  double settle_s = 2;
};

void idle_mode(const IdleOptions& o) {
  // One subscription opened and closed first, so that what the first one allocates once (the
  // hub's structures, a worker's buffers) is not counted against the N.
  // It stays open (the server may not notice a closed one until its next heartbeat), so the
  // server should report count + 1 open.
  std::unique_ptr<Http> warm_http;
  std::unique_ptr<Redis> warm_redis;
  if (o.target == "keel") {
    warm_http = std::make_unique<Http>(o.port);
    if (warm_http->start_stream("/v1/all/subscribe?from=end") != 200) die("subscribe refused");
  } else {
    warm_redis = std::make_unique<Redis>(o.port);
    warm_redis->send({"XREAD", "BLOCK", "0", "STREAMS", "idle", "$"});
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(o.settle_s * 1000)));
  const long before = rss_kib(o.pid);
  std::vector<std::unique_ptr<Http>> https;
  std::vector<std::unique_ptr<Redis>> redises;
  for (int i = 0; i < o.count; ++i) {
    if (o.target == "keel") {
      https.push_back(std::make_unique<Http>(o.port));
      const int status = https.back()->start_stream("/v1/all/subscribe?from=end");
      if (status != 200)
        die("subscription " + std::to_string(i) + " answered " + std::to_string(status));
    } else {
      redises.push_back(std::make_unique<Redis>(o.port));
      redises.back()->send({"XREAD", "BLOCK", "0", "STREAMS", "idle", "$"});
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(o.settle_s * 1000)));
  double open = -1;
  if (o.target == "keel") {
    Http http(o.port);
    auto metrics = http.request("GET", "/metrics");
    const auto at = metrics.body.find("\nkeel_node_subscribers ");
    if (at != std::string::npos) open = std::strtod(metrics.body.c_str() + at + 23, nullptr);
  } else {
    Redis redis(o.port);
    auto info = redis.command({"INFO", "clients"});
    const auto at = info.text.find("blocked_clients:");
    if (at != std::string::npos) open = std::strtod(info.text.c_str() + at + 16, nullptr);
  }
  const long after = rss_kib(o.pid);
  figure("count", o.count);
  figure("open_by_server", open - 1);  // less the warm-up one
  figure("rss_before_kib", static_cast<double>(before));
  figure("rss_after_kib", static_cast<double>(after));
  figure("kib_each", static_cast<double>(after - before) / o.count);
  print_figures();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel node load generator beside Redis Streams and NATS JetStream"};
  app.require_subcommand(1);
  const std::vector<std::string> all_targets = {"keel", "redis", "jetstream"};

  AppendOptions append;
  auto* a = app.add_subcommand("append", "Append throughput");
  a->add_option("--target", append.target)->required()->check(CLI::IsMember(all_targets));
  a->add_option("--port", append.port)->required();
  a->add_option("--clients", append.clients)->check(CLI::Range(1, 1024));
  a->add_option("--batch", append.batch)->check(CLI::Range(1, 10000));
  a->add_option("--size", append.size, "Payload bytes per event")->check(CLI::Range(8, 1 << 20));
  a->add_option("--seconds", append.seconds)->check(CLI::PositiveNumber);
  a->add_option("--prefix", append.prefix, "Stream names: PREFIX-cN");

  E2eOptions e2e;
  auto* e = app.add_subcommand("e2e", "Append → subscriber latency at a fixed rate");
  e->add_option("--target", e2e.target)->required()->check(CLI::IsMember({"keel", "redis"}));
  e->add_option("--port", e2e.port)->required();
  e->add_option("--rate", e2e.rate)->check(CLI::PositiveNumber);
  e->add_option("--seconds", e2e.seconds)->check(CLI::PositiveNumber);
  e->add_option("--producers", e2e.producers)->check(CLI::Range(1, 256));
  e->add_option("--size", e2e.size)->check(CLI::Range(8, 1 << 20));

  GroupOptions group;
  auto* g = app.add_subcommand("group", "Consumer-group throughput, member processes");
  g->add_option("--target", group.target)->required()->check(CLI::IsMember(all_targets));
  g->add_option("--port", group.port)->required();
  g->add_option("--events", group.events)->check(CLI::Range(1000, 100000000));
  g->add_option("--members", group.members)->check(CLI::Range(1, 64));
  g->add_option("--max", group.max, "Events per poll / read / fetch")->check(CLI::Range(1, 1000));
  g->add_option("--size", group.size)->check(CLI::Range(8, 1 << 20));
  g->add_option("--timeout", group.timeout_s)->check(CLI::PositiveNumber);

  MemberOptions member;
  auto* m = app.add_subcommand("member", "One group member (started by `group`)");
  m->group("");  // internal
  m->add_option("--target", member.target)->required();
  m->add_option("--port", member.port)->required();
  m->add_option("--name", member.name)->required();
  m->add_option("--shm-fd", member.shm_fd)->required();
  m->add_option("--max", member.max);

  IdleOptions idle;
  auto* i = app.add_subcommand("idle", "Server RSS per idle subscription");
  i->add_option("--target", idle.target)->required()->check(CLI::IsMember({"keel", "redis"}));
  i->add_option("--port", idle.port)->required();
  i->add_option("--pid", idle.pid, "The server's process id")->required();
  i->add_option("--count", idle.count)->check(CLI::Range(1, 100000));
  i->add_option("--settle", idle.settle_s, "Seconds to wait before each RSS reading");

  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
#ifdef KEEL_NODE_BENCH_NATS
  const bool uses_nats = (a->parsed() && append.target == "jetstream") ||
                         (g->parsed() && group.target == "jetstream") ||
                         (m->parsed() && member.target == "jetstream");
  if (uses_nats) nats_Open(-1);
#endif
  if (a->parsed()) append_mode(append);
  if (e->parsed()) e2e_mode(e2e);
  if (g->parsed()) group_mode(group, argv[0]);
  if (m->parsed()) member_mode(member);
  if (i->parsed()) idle_mode(idle);
  std::fflush(stdout);
  // Skip destructors of libnats' globals and detached threads: the figures are out.
  std::_Exit(0);
}
