#include "keel/kafka/listener.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <mutex>

#include "keel/core/log.h"
#include "keel/http/worker.h"

namespace keel::kafka {

using http::Conn;
using http::error_code;
using http::Socket;
using http::Task;
using http::tcp;
using http::Worker;
namespace net = http::net;

namespace {

// Where answers from other threads go: the worker while it runs, nothing after.
struct Gate {
  std::mutex mutex;
  Worker* worker = nullptr;
};

struct KafkaWorker : Worker {
  KafkaWorker(Clock& c, std::size_t i) : Worker(c, i), gate(std::make_shared<Gate>()) {
    gate->worker = this;
  }
  std::shared_ptr<Gate> gate;
};

// One connection: its socket and the answers owed, in request order. Worker thread only.
struct Session {
  Session(Worker& w, Socket s) : conn(w, std::move(s), true), wake(w.io) {}
  Conn conn;
  struct Owed {
    bool ready = false;
    std::optional<std::string> bytes;
  };
  std::deque<Owed> owed;
  std::uint64_t first_seq = 0;  // the sequence number of owed.front()
  std::uint64_t next_seq = 0;
  bool writing = false;
  bool closed = false;
  net::steady_timer wake;  // the reader waits on it while max_in_flight answers are owed
};

}  // namespace

struct Listener::Impl {
  ListenerOptions options;
  Broker& broker;
  Clock& clock;
  std::vector<std::unique_ptr<KafkaWorker>> workers;
  http::HostPort bound;
  std::atomic<std::uint64_t> connections{0};
  bool started = false;
  bool stopped = false;

  Impl(ListenerOptions o, Broker& b, Clock& c) : options(o), broker(b), clock(c) {}

  Task<void> accept_loop(KafkaWorker& worker, tcp::acceptor& acceptor) {
    for (;;) {
      error_code ec;
      Socket socket = co_await acceptor.async_accept(worker.io.get_executor(),
                                                     net::redirect_error(http::use_task, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;
      }
      if (connections.load(std::memory_order_relaxed) >= options.max_connections) continue;
      socket.set_option(tcp::no_delay(true), ec);
      auto session = std::make_shared<Session>(worker, std::move(socket));
      net::co_spawn(worker.io, read_loop(worker, session), net::detached);
    }
  }

  // Sends every answer that is ready at the front, in order; one writer at a time.
  void pump(KafkaWorker& worker, const std::shared_ptr<Session>& s) {
    if (s->writing || s->closed) return;
    std::string out;
    while (!s->owed.empty() && s->owed.front().ready) {
      if (s->owed.front().bytes) out += *s->owed.front().bytes;
      s->owed.pop_front();
      ++s->first_seq;
    }
    s->wake.cancel();  // room for the reader again
    if (out.empty()) return;
    s->writing = true;
    net::co_spawn(worker.io, write(worker, s, std::move(out)), net::detached);
  }

  Task<void> write(KafkaWorker& worker, std::shared_ptr<Session> s, std::string out) {
    s->conn.expires_after(options.idle_timeout);
    const error_code ec = co_await http::send_all(s->conn, net::buffer(out));
    s->writing = false;
    if (ec) {
      close(*s);
      co_return;
    }
    pump(worker, s);
  }

  static void close(Session& s) {
    if (s.closed) return;
    s.closed = true;
    error_code ignored;
    s.conn.socket.shutdown(tcp::socket::shutdown_both, ignored);
    s.conn.socket.close(ignored);
    s.wake.cancel();
  }

  Task<void> read_loop(KafkaWorker& worker, std::shared_ptr<Session> s) {
    connections.fetch_add(1, std::memory_order_relaxed);
    ++worker.open_sessions;
    Conn& conn = s->conn;
    while (!s->closed) {
      if (s->owed.size() >= options.max_in_flight) {
        s->wake.expires_after(std::chrono::hours(24));
        error_code ignored;
        co_await s->wake.async_wait(net::redirect_error(http::use_task, ignored));
        continue;
      }
      while (conn.in.size() < 4) {
        conn.expires_after(options.idle_timeout);
        conn.idle = s->owed.empty();
        const error_code ec = co_await http::read_some(conn);
        conn.idle = false;
        if (ec) goto done;
      }
      {
        const std::string_view head = conn.in.view();
        const std::uint32_t size = static_cast<std::uint32_t>(
            static_cast<unsigned char>(head[0]) << 24 | static_cast<unsigned char>(head[1]) << 16 |
            static_cast<unsigned char>(head[2]) << 8 | static_cast<unsigned char>(head[3]));
        if (size > options.max_request_bytes || size < 8) {
          log::get("kafka")->debug("closing a connection: a {} byte frame", size);
          break;
        }
        while (conn.in.size() < 4 + static_cast<std::size_t>(size)) {
          conn.expires_after(options.idle_timeout);
          const error_code ec = co_await http::read_some(
              conn, std::max<std::size_t>(http::kChunk, 4 + size - conn.in.size()));
          if (ec) goto done;
        }
        std::string frame(conn.in.view().substr(4, size));
        conn.in.consume(4 + size);
        const std::uint64_t seq = s->next_seq++;
        s->owed.emplace_back();
        std::weak_ptr<Session> weak = s;
        std::shared_ptr<Gate> gate = worker.gate;
        KafkaWorker* w = &worker;
        auto deliver = [this, w, weak, seq](std::optional<std::string> response, bool fatal) {
          auto session = weak.lock();
          if (!session || session->closed || seq < session->first_seq) return;
          if (fatal) {
            close(*session);
            return;
          }
          Session::Owed& slot = session->owed[seq - session->first_seq];
          slot.ready = true;
          slot.bytes = std::move(response);
          pump(*w, session);
        };
        auto post = [gate, deliver](std::optional<std::string> response, bool fatal) {
          std::lock_guard lock(gate->mutex);
          if (gate->worker == nullptr) return;
          net::post(gate->worker->io, [deliver, response = std::move(response), fatal]() mutable {
            deliver(std::move(response), fatal);
          });
        };
        broker.handle(
            std::move(frame),
            [post](std::optional<std::string> response) { post(std::move(response), false); },
            [post](std::string why) {
              log::get("kafka")->info("closing a connection: {}", why);
              post(std::nullopt, true);
            });
      }
    }
  done:
    close(*s);
    connections.fetch_sub(1, std::memory_order_relaxed);
    --worker.open_sessions;
  }
};

Listener::Listener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Listener::~Listener() { stop(); }

Result<std::unique_ptr<Listener>> Listener::bind(ListenerOptions options, Broker& broker,
                                                 Clock& clock) {
  auto impl = std::make_unique<Impl>(options, broker, clock);
  auto host = http::resolve(options.address.to_string());
  if (!host) return host.error();
  tcp::endpoint at = *host;
  for (std::uint32_t i = 0; i < std::max<std::uint32_t>(1, options.workers); ++i) {
    auto worker = std::make_unique<KafkaWorker>(clock, i);
    auto acceptor = http::listen_on(worker->io, at);
    if (!acceptor)
      return Error(acceptor.error().code(), "kafka listener: " + acceptor.error().message());
    at = acceptor->local_endpoint();
    worker->acceptors.push_back(std::move(*acceptor));
    impl->workers.push_back(std::move(worker));
  }
  impl->bound = http::HostPort{at.address().to_string(), at.port()};
  return std::unique_ptr<Listener>(new Listener(std::move(impl)));
}

void Listener::start() {
  if (impl_->started) return;
  impl_->started = true;
  for (auto& worker : impl_->workers) {
    net::co_spawn(worker->io, impl_->accept_loop(*worker, worker->acceptors[0]), net::detached);
    worker->start();
  }
}

void Listener::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  for (auto& worker : impl_->workers) {
    worker->close_acceptors();
    {
      std::lock_guard lock(worker->gate->mutex);
      worker->gate->worker = nullptr;
    }
    worker->stop();
  }
}

http::HostPort Listener::bound() const { return impl_->bound; }
std::uint64_t Listener::connections() const { return impl_->connections.load(); }

}  // namespace keel::kafka
