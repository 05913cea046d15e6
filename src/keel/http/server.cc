#include "keel/http/server.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <ctime>
#include <mutex>
#include <set>

#include "keel/core/log.h"
#include "keel/core/text.h"
#include "keel/http/worker.h"

namespace keel::http {

// ------------------------------------------------------------------ Request, Response

std::string_view Request::header(std::string_view name) const {
  for (const auto& [field, value] : headers) {
    if (h1::iequals(field, name)) return value;
  }
  return {};
}

std::optional<std::string> Request::param(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const auto equals = pair.find('=');
    auto key = percent_decode(pair.substr(0, equals), true);
    if (key && *key == name) {
      return percent_decode(equals == std::string_view::npos ? "" : pair.substr(equals + 1), true);
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  if (keel::percent_decode(text, plus_is_space, out)) return std::nullopt;
  return out;
}

Response Response::text(unsigned status, std::string body) {
  Response response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

Response Response::json(unsigned status, std::string body) {
  Response response;
  response.status = status;
  response.content_type = "application/json";
  response.body = std::move(body);
  return response;
}

// ------------------------------------------------------------------ Responder

// What a handler and the session share. The session runs on the worker's thread; the handler
// may answer from any thread, so everything here is under `mutex`, and the session is woken by
// a post to its worker that cancels its timer.
struct Responder::State {
  enum class Phase { kWaiting, kResponded, kStreaming, kEnded };

  std::mutex mutex;
  Worker* worker = nullptr;            // null once the session has ended (or the server stopped)
  net::steady_timer* timer = nullptr;  // the session's wait; touched on the worker thread only
  Phase phase = Phase::kWaiting;
  Response response;    // kResponded; for a stream, its head
  std::string queued;   // stream bytes the session has not taken yet
  bool closed = false;  // the client went away or the server is stopping
  std::function<void()> on_close;

  // With `mutex` held.
  void wake_locked(const std::shared_ptr<State>& self) {
    if (worker == nullptr) return;
    net::post(worker->io, [self] {
      if (self->timer != nullptr) self->timer->cancel();
    });
  }
};

Responder::Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}
Responder::Responder(Responder&&) noexcept = default;
Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    Responder dropped(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

Responder::~Responder() {
  if (!state_) return;
  std::lock_guard lock(state_->mutex);
  if (state_->phase == State::Phase::kWaiting) {
    state_->response = Response::text(500, "the handler gave no answer\n");
    state_->phase = State::Phase::kResponded;
  } else if (state_->phase == State::Phase::kStreaming) {
    state_->phase = State::Phase::kEnded;
  }
  state_->wake_locked(state_);
}

void Responder::respond(Response response) {
  std::lock_guard lock(state_->mutex);
  if (state_->phase != State::Phase::kWaiting) return;
  state_->response = std::move(response);
  state_->phase = State::Phase::kResponded;
  state_->wake_locked(state_);
}

void Responder::start_stream(unsigned status, std::string content_type, Fields headers) {
  std::lock_guard lock(state_->mutex);
  if (state_->phase != State::Phase::kWaiting) return;
  state_->response.status = status;
  state_->response.content_type = std::move(content_type);
  state_->response.headers = std::move(headers);
  state_->phase = State::Phase::kStreaming;
  state_->wake_locked(state_);
}

bool Responder::write(std::string_view bytes, std::size_t max_queued) {
  std::lock_guard lock(state_->mutex);
  if (state_->closed || state_->phase != State::Phase::kStreaming) return false;
  if (state_->queued.size() + bytes.size() > max_queued) return false;
  const bool was_empty = state_->queued.empty();
  state_->queued.append(bytes);
  if (was_empty) state_->wake_locked(state_);
  return true;
}

void Responder::end() {
  std::lock_guard lock(state_->mutex);
  if (state_->phase == State::Phase::kStreaming) state_->phase = State::Phase::kEnded;
  state_->wake_locked(state_);
}

bool Responder::closed() const {
  std::lock_guard lock(state_->mutex);
  return state_->closed;
}

std::size_t Responder::queued() const {
  std::lock_guard lock(state_->mutex);
  return state_->queued.size();
}

void Responder::on_close(std::function<void()> callback) {
  std::lock_guard lock(state_->mutex);
  state_->on_close = std::move(callback);
  if (state_->closed) state_->wake_locked(state_);
}

Handler respond_with(std::function<Response(const Request&)> handler) {
  return [handler = std::move(handler)](Request& request, Responder responder) {
    responder.respond(handler(request));
  };
}

// ------------------------------------------------------------------ Server

namespace {

using State = Responder::State;

using Exchanges = std::set<std::shared_ptr<State>>;

struct ServerWorker : Worker {
  ServerWorker(Clock& c, std::size_t i, Exchanges& exchanges) : Worker(c, i), open(exchanges) {}
  // Exchanges in progress; stop() closes their streams. Owned by the server and destroyed after
  // the worker: the io_context's destructor ends the sessions, whose exchanges leave this set.
  Exchanges& open;
  std::string date;  // the Date field's value, for `date_second`
  std::int64_t date_second = -1;
};

// "Tue, 03 Dec 2026 15:10:46 GMT" (RFC 9110 5.6.7), made once a second per worker.
const std::string& http_date(ServerWorker& worker) {
  const std::int64_t second = worker.clock->unix_now_ns() / 1'000'000'000;
  if (second != worker.date_second) {
    const std::time_t t = static_cast<std::time_t>(second);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[40];
    const std::size_t n = std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    worker.date.assign(text, n);
    worker.date_second = second;
  }
  return worker.date;
}

void append_head(std::string& out, ServerWorker& worker, unsigned version, const Response& r,
                 bool keep_alive) {
  out.append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  out.append(std::to_string(r.status)).push_back(' ');
  out.append(reason_phrase(r.status));
  out.append("\r\ndate: ").append(http_date(worker));
  if (!r.content_type.empty()) out.append("\r\ncontent-type: ").append(r.content_type);
  for (const auto& [name, value] : r.headers) {
    out.append("\r\n").append(name).append(": ").append(value);
  }
  if (!keep_alive) {
    out.append("\r\nconnection: close");
  } else if (version == 10) {
    out.append("\r\nconnection: keep-alive");
  }
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  Handler handler;
  Clock& clock;
  std::vector<std::unique_ptr<Exchanges>> exchanges;  // one per worker; outlives `workers`
  std::vector<std::unique_ptr<ServerWorker>> workers;
  HostPort bound;
  std::atomic<std::uint32_t> connections{0};
  std::atomic<bool> stopping{false};
  bool started = false;

  Impl(ServerOptions o, Handler h, Clock& c)
      : options(std::move(o)), handler(std::move(h)), clock(c) {}

  Task<void> accept_loop(ServerWorker& worker, tcp::acceptor& acceptor) {
    for (;;) {
      error_code ec;
      Socket socket = co_await acceptor.async_accept(worker.io.get_executor(),
                                                     net::redirect_error(use_task, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;  // EMFILE and friends: keep accepting
      }
      if (connections.load(std::memory_order_relaxed) >= options.limits.max_connections) {
        continue;  // over max_connections: the socket closes here
      }
      socket.set_option(tcp::no_delay(true), ec);
      net::co_spawn(worker.io, session(worker, std::move(socket)), net::detached);
    }
  }

  // The request's body into `body`: Content-Length bytes or a chunked body's data, up to
  // max_body_bytes. The status to answer when that failed (400, 408, 413), kClientGone when
  // the client closed or reset the connection first, or 0.
  static constexpr unsigned kClientGone = 1;
  Task<unsigned> read_body(Conn& conn, const h1::Head& head, std::string& body) {
    const ServerLimits& limits = options.limits;
    if (head.expect_continue && head.framing != h1::Framing::kNone && conn.in.size() == 0 &&
        head.version == 11) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      conn.expires_after(limits.idle_timeout);
      if (co_await send_all(conn, net::buffer(kContinue.data(), kContinue.size()))) {
        co_return kClientGone;
      }
    }
    if (head.framing == h1::Framing::kLength) {
      while (conn.in.size() < head.content_length) {
        conn.expires_after(limits.idle_timeout);
        if (auto ec = co_await read_some(conn))
          co_return ec == net::error::timed_out ? 408u : kClientGone;
      }
      body.assign(conn.in.view().substr(0, head.content_length));
      conn.in.consume(head.content_length);
      co_return 0u;
    }
    if (head.framing == h1::Framing::kChunked) {
      h1::ChunkedReader chunks;
      for (;;) {
        auto step = chunks.feed(conn.in.view(), [&](std::string_view data) {
          if (body.size() + data.size() <= limits.max_body_bytes) body.append(data);
        });
        if (step.error != nullptr) co_return 400u;
        if (chunks.data_bytes() > limits.max_body_bytes) co_return 413u;
        conn.in.consume(step.used);
        if (step.done) co_return 0u;
        conn.expires_after(limits.idle_timeout);
        if (auto ec = co_await read_some(conn))
          co_return ec == net::error::timed_out ? 408u : kClientGone;
      }
    }
    co_return 0u;
  }

  Task<bool> send_text(Conn& conn, ServerWorker& worker, unsigned version, unsigned status,
                       std::string text, bool keep_alive) {
    Response response = options.error_response ? options.error_response(status, text)
                                               : Response::text(status, std::move(text));
    co_return co_await send_response(conn, worker, version, response, keep_alive, false);
  }

  Task<bool> send_response(Conn& conn, ServerWorker& worker, unsigned version,
                           const Response& response, bool keep_alive, bool head_only) {
    std::string head;
    // 204 and 304 have no body, and no Content-Length either (RFC 9110 8.6).
    const bool bodiless = response.status == 204 || response.status == 304;
    append_head(head, worker, version, response, keep_alive);
    if (!bodiless) head.append("\r\ncontent-length: ").append(std::to_string(response.body.size()));
    head.append("\r\n\r\n");
    if (bodiless) head_only = true;
    conn.expires_after(options.limits.idle_timeout);
    const std::string_view body = head_only ? std::string_view() : response.body;
    const error_code ec =
        co_await send_all(conn, net::buffer(head), net::buffer(body.data(), body.size()));
    co_return !ec;
  }

  Task<void> session(ServerWorker& worker, Socket socket) {
    connections.fetch_add(1, std::memory_order_relaxed);
    ++worker.open_sessions;
    {
      Conn conn(worker, std::move(socket), true);
      std::string peer;
      {
        error_code ec;
        auto remote = conn.socket.remote_endpoint(ec);
        if (!ec) peer = remote.address().to_string();
      }
      h1::Head head;
      net::steady_timer timer(worker.io);
      bool lingering = false;
      while (!stopping.load(std::memory_order_relaxed)) {
        h1::ParseResult error;
        const HeadRead read = co_await read_request_head(conn, options.limits, head, error);
        if (read == HeadRead::kClosed) break;
        if (read == HeadRead::kError) {
          co_await send_text(conn, worker, 11, error.status,
                             std::string("bad request: ") + error.why + "\n", false);
          lingering = true;
          break;
        }
        Request request;
        request.method = head.method;
        request.target = head.target;
        request.version = head.version;
        request.peer = peer;
        const auto question = request.target.find('?');
        request.path = request.target.substr(0, question);
        if (question != std::string::npos) request.query = request.target.substr(question + 1);
        request.headers.reserve(head.fields.size());
        for (const auto& field : head.fields) {
          request.headers.emplace_back(ascii_lower(field.name), std::string(field.value));
        }
        const bool head_only = head.method == "HEAD";
        bool keep_alive = head.keep_alive;
        const std::size_t head_size = head.size;
        const h1::Head parsed = head;  // the body read below may move the buffer
        conn.in.consume(head_size);
        if (!options.any_method && !known_method(request.method)) {
          co_await send_text(conn, worker, head.version, 501, "method not supported\n", false);
          lingering = true;
          break;
        }
        if (const unsigned status = co_await read_body(conn, parsed, request.body)) {
          if (status == kClientGone) break;
          co_await send_text(conn, worker, head.version, status,
                             status == 413 ? "the request body is larger than max_body_bytes\n"
                                           : "bad request body\n",
                             false);
          lingering = true;
          break;
        }
        if (!conn.socket.is_open()) break;
        keep_alive = co_await exchange(worker, conn, timer, request, keep_alive, head_only);
        if (!keep_alive) {
          lingering = true;
          break;
        }
      }
      if (lingering) co_await linger_close(conn);
    }
    --worker.open_sessions;
    connections.fetch_sub(1, std::memory_order_relaxed);
  }

  // Runs the handler and sends its answer. False: close the connection.
  Task<bool> exchange(ServerWorker& worker, Conn& conn, net::steady_timer& timer, Request& request,
                      bool keep_alive, bool head_only) {
    auto state = std::make_shared<State>();
    state->worker = &worker;
    state->timer = &timer;
    worker.open.insert(state);
    // When the exchange ends however it ends. It holds the set, not the worker: a stream still
    // open when the server stops ends in the io_context's destructor, after the ServerWorker
    // part of its worker is gone (the set is the server's and outlives it).
    struct Detach {
      Exchanges& open;
      std::shared_ptr<State> state;
      ~Detach() {
        std::lock_guard lock(state->mutex);
        state->worker = nullptr;
        state->timer = nullptr;
        open.erase(state);
      }
    } detach{worker.open, state};
    conn.expires_never();  // the handler takes its time (a long poll); writes set deadlines
    handler(request, Responder(state));
    const unsigned version = request.version;
    bool streaming = false;  // the stream's head has been sent
    std::string out;
    for (;;) {
      State::Phase phase;
      std::string queued;
      bool closed = false;
      bool wait = false;
      std::function<void()> on_close;
      {
        std::lock_guard lock(state->mutex);
        phase = state->phase;
        queued.swap(state->queued);
        closed = state->closed;
        if (closed) on_close = std::exchange(state->on_close, nullptr);
        const bool news = phase == State::Phase::kResponded || phase == State::Phase::kEnded ||
                          closed || !queued.empty() ||
                          (phase == State::Phase::kStreaming && !streaming);
        // Nothing new: wait until the handler (or stop()) wakes us. The state is looked at
        // again after every send, before any wait, so a wake that came while a send was under
        // way (its cancel finding no wait) is not lost; and a wake after this check posts a
        // cancel that runs once this wait has begun (same thread).
        if (!news) {
          timer.expires_at(net::steady_timer::time_point::max());
          wait = true;
        }
      }
      if (wait) {
        error_code ec;
        co_await timer.async_wait(net::redirect_error(use_task, ec));
        continue;
      }
      if (on_close) on_close();
      if (phase == State::Phase::kResponded) {
        const bool sent =
            co_await send_response(conn, worker, version, state->response, keep_alive, head_only);
        co_return sent&& keep_alive;
      }
      if (phase == State::Phase::kWaiting) {  // closed: stopping, and no answer came
        co_await send_text(conn, worker, version, 503, "the server is shutting down\n", false);
        co_return false;
      }
      // A stream (kStreaming or kEnded).
      out.clear();
      if (!streaming) {
        // Its length is not known: chunked for HTTP/1.1, until the close for HTTP/1.0.
        if (version == 10) keep_alive = false;
        append_head(out, worker, version, state->response, keep_alive);
        if (version == 11) out.append("\r\ntransfer-encoding: chunked");
        out.append("\r\ncache-control: no-cache\r\n\r\n");
        streaming = true;
      }
      if (!queued.empty() && !head_only) {
        if (version == 11) {
          char size[20];
          const auto end = std::to_chars(size, size + sizeof size, queued.size(), 16).ptr;
          out.append(size, end).append("\r\n").append(queued).append("\r\n");
        } else {
          out.append(queued);
        }
      }
      const bool ended = phase == State::Phase::kEnded || closed;
      if (ended && version == 11 && !head_only) out.append("0\r\n\r\n");
      if (!out.empty()) {
        conn.expires_after(options.limits.idle_timeout);
        if (co_await send_all(conn, net::buffer(out))) {
          // The client went away (or stalled past the idle timeout): the handler stops.
          {
            std::lock_guard lock(state->mutex);
            state->closed = true;
            on_close = std::exchange(state->on_close, nullptr);
          }
          if (on_close) on_close();
          co_return false;
        }
      }
      if (ended) co_return keep_alive && !closed;
    }
  }

  // Streams never end by themselves: they are closed when the server stops. Requests waiting
  // for their answer get the drain time to finish.
  void close_streams(ServerWorker& worker) {
    for (const auto& state : worker.open) {
      std::lock_guard lock(state->mutex);
      if (state->phase != State::Phase::kStreaming) continue;
      state->closed = true;
      state->wake_locked(state);
    }
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { stop(0ms); }

Result<std::unique_ptr<Server>> Server::bind(ServerOptions options, Handler handler, Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler), clock);
  auto host = resolve(impl->options.address.to_string());
  if (!host) return host.error();
  tcp::endpoint at = *host;
  const std::uint32_t count = std::max<std::uint32_t>(1, impl->options.workers);
  for (std::uint32_t w = 0; w < count; ++w) {
    auto& exchanges = *impl->exchanges.emplace_back(std::make_unique<Exchanges>());
    auto worker = std::make_unique<ServerWorker>(clock, w, exchanges);
    auto acceptor = listen_on(worker->io, at);
    if (!acceptor) {
      return Error(acceptor.error().code(),
                   impl->options.name + " listener: " + acceptor.error().message());
    }
    at = acceptor->local_endpoint();  // port 0 is bound once; the others reuse the port
    worker->acceptors.push_back(std::move(*acceptor));
    impl->workers.push_back(std::move(worker));
  }
  impl->bound = HostPort{at.address().to_string(), at.port()};
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::start() {
  if (impl_->started) return;
  impl_->started = true;
  for (auto& worker : impl_->workers) {
    net::co_spawn(worker->io, impl_->accept_loop(*worker, worker->acceptors[0]), net::detached);
    worker->start();
  }
}

void Server::stop(Duration drain) {
  if (impl_->stopping.exchange(true)) return;
  for (auto& worker : impl_->workers) {
    worker->close_acceptors();
    worker->close_idle();
    ServerWorker* w = worker.get();
    net::post(w->io, [this, w] { impl_->close_streams(*w); });
  }
  if (impl_->started) {
    const TimePoint deadline = impl_->clock.now() + drain;
    for (auto& worker : impl_->workers) {
      while (impl_->clock.now() < deadline) {
        auto open = worker->sessions();
        if (!open || *open == 0) break;
        std::this_thread::sleep_for(10ms);
      }
    }
  }
  for (auto& worker : impl_->workers) {
    worker->stop();
    // The thread is gone: what a handler still holds must not reach this worker again.
    for (const auto& state : worker->open) {
      std::lock_guard lock(state->mutex);
      state->worker = nullptr;
      state->timer = nullptr;
      state->closed = true;
    }
  }
}

HostPort Server::bound() const { return impl_->bound; }

}  // namespace keel::http
