#include "keel/http/client.h"

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <optional>
#include <utility>  // before Asio: Boost 1.74's headers use std::exchange without including it

#include "keel/core/error_category.h"

namespace keel::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

const char* describe(errc code) {
  switch (code) {
    case errc::invalid_url:
      return "invalid URL";
    case errc::connect_failed:
      return "cannot connect";
    case errc::timeout:
      return "timed out";
    case errc::cancelled:
      return "cancelled";
    case errc::closed:
      return "connection closed";
    case errc::bad_response:
      return "bad response";
  }
  return nullptr;
}

}  // namespace

const std::error_category& http_category() {
  static const ErrorCategory<errc> category("http", describe);
  return category;
}

Result<Url> parse_url(std::string_view text) {
  Url url;
  url.text = std::string(text);
  std::string_view rest = text;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.find("://") != std::string_view::npos) {
    return Error(errc::invalid_url, "'" + url.text + "': only http:// is supported");
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size() ||
      rest.find('/') != std::string_view::npos) {
    return Error(errc::invalid_url, "'" + url.text + "': expected http://HOST:PORT");
  }
  url.host = std::string(rest.substr(0, colon));
  url.port = std::string(rest.substr(colon + 1));
  for (char c : url.port) {
    if (c < '0' || c > '9') return Error(errc::invalid_url, "'" + url.text + "': bad port");
  }
  if (std::stoul(url.port) == 0 || std::stoul(url.port) > 65535) {
    return Error(errc::invalid_url, "'" + url.text + "': port out of range");
  }
  if (!url.text.starts_with("http://")) url.text = "http://" + url.text;
  return url;
}

struct Connection::Impl {
  explicit Impl(Url u) : url(std::move(u)) {}

  // Runs the operation `start` begins until it completes, on this thread.
  template <typename Start>
  beast::error_code await(Start&& start) {
    beast::error_code result;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  Error fail(beast::error_code ec, const std::string& doing) {
    broken = true;
    std::string where = url.text + ": " + doing + ": ";
    if (cancelled) return Error(errc::cancelled, where + "cancelled");
    if (ec == beast::error::timeout) return Error(errc::timeout, where + "timed out");
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == bhttp::error::partial_message) {
      return Error(errc::closed, where + "the server closed the connection");
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category()) {
      return Error(errc::bad_response, where + "not a valid HTTP response (" + ec.message() + ")");
    }
    return Error(errc::closed, where + ec.message());
  }

  Status send(std::string_view target, std::string_view body,
              bhttp::verb method = bhttp::verb::post,
              const std::vector<std::pair<std::string, std::string>>& fields = {}) {
    if (cancelled) return Error(errc::cancelled, url.text + ": cancelled");
    if (broken) return Error(errc::closed, url.text + ": connection no longer usable");
    bhttp::request<bhttp::string_body> request{
        method, beast::string_view(target.data(), target.size()), 11};
    request.set(bhttp::field::host, url.host + ":" + url.port);
    request.set(bhttp::field::content_type, "application/json");
    if (!authorization.empty()) request.set(bhttp::field::authorization, authorization);
    for (const auto& [name, value] : fields) request.set(name, value);
    request.keep_alive(true);
    request.body() = std::string(body);
    request.prepare_payload();
    auto ec = await([&](auto handler) { bhttp::async_write(stream, request, std::move(handler)); });
    if (ec) return fail(ec, std::string(bhttp::to_string(method)) + " " + std::string(target));
    return {};
  }

  Url url;
  std::string authorization;  // sent with every request when set
  asio::io_context ioc{1};
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  std::atomic<bool> cancelled{false};
  bool broken = false;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> streaming;
  char piece[16384];
};

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Connection::~Connection() = default;

const Url& Connection::url() const { return impl_->url; }

Result<std::unique_ptr<Connection>> Connection::open(const Url& url, Duration timeout) {
  auto impl = std::make_unique<Impl>(url);
  tcp::resolver resolver(impl->ioc);
  beast::error_code ec;
  auto endpoints = resolver.resolve(url.host, url.port, ec);
  if (ec) {
    return Error(errc::connect_failed,
                 url.text + ": cannot resolve '" + url.host + "': " + ec.message());
  }
  impl->stream.expires_after(timeout);
  ec =
      impl->await([&](auto handler) { impl->stream.async_connect(endpoints, std::move(handler)); });
  if (ec == beast::error::timeout) {
    return Error(errc::connect_failed, url.text + ": no answer to connect within " +
                                           std::to_string(timeout / 1ms) + " ms");
  }
  if (ec) return Error(errc::connect_failed, url.text + ": cannot connect: " + ec.message());
  impl->stream.socket().set_option(tcp::no_delay(true), ec);
  return std::unique_ptr<Connection>(new Connection(std::move(impl)));
}

Result<Reply> Connection::post(std::string_view target, std::string_view body, Duration timeout) {
  return exchange("POST", target, body, timeout);
}

Result<Reply> Connection::get(std::string_view target, Duration timeout) {
  return exchange("GET", target, {}, timeout);
}

Result<Reply> Connection::request(std::string_view method, std::string_view target,
                                  std::string_view body, Duration timeout) {
  return exchange(method, target, body, timeout);
}

void Connection::set_authorization(std::string value) { impl_->authorization = std::move(value); }

Result<Reply> Connection::exchange(std::string_view method, std::string_view target,
                                   std::string_view body, Duration timeout) {
  Impl& impl = *impl_;
  const bhttp::verb verb = bhttp::string_to_verb(beast::string_view(method.data(), method.size()));
  if (verb == bhttp::verb::unknown) {
    return Error(errc::bad_response, "unknown method " + std::string(method));
  }
  impl.stream.expires_after(timeout);
  if (auto sent = impl.send(target, body, verb); !sent) return sent.error();
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(kMaxBody);
  auto ec = impl.await([&](auto handler) {
    bhttp::async_read(impl.stream, impl.buffer, parser, std::move(handler));
  });
  if (ec) {
    return impl.fail(ec,
                     "reading the answer to " + std::string(method) + " " + std::string(target));
  }
  auto& message = parser.get();
  if (!message.keep_alive()) impl.broken = true;
  Reply response;
  response.status = message.result_int();
  response.content_type = std::string(message[bhttp::field::content_type]);
  response.body = std::move(message.body());
  return response;
}

Result<unsigned> Connection::start_stream(std::string_view target, std::string_view body,
                                          Duration timeout) {
  return start_stream("POST", target, body, {}, timeout);
}

Result<unsigned> Connection::start_stream(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& fields, Duration timeout) {
  Impl& impl = *impl_;
  const bhttp::verb verb = bhttp::string_to_verb(beast::string_view(method.data(), method.size()));
  if (verb == bhttp::verb::unknown) {
    return Error(errc::bad_response, "unknown method " + std::string(method));
  }
  impl.stream.expires_after(timeout);
  if (auto sent = impl.send(target, body, verb, fields); !sent) return sent.error();
  impl.streaming.emplace();
  // No limit on a streamed body; not boost::none, which Boost 1.74's parser compares as less
  // than any Content-Length, so every answer with one (a 4xx before the stream) failed.
  impl.streaming->body_limit(std::numeric_limits<std::uint64_t>::max());
  auto ec = impl.await([&](auto handler) {
    bhttp::async_read_header(impl.stream, impl.buffer, *impl.streaming, std::move(handler));
  });
  if (ec)
    return impl.fail(ec,
                     "reading the answer to " + std::string(method) + " " + std::string(target));
  impl.stream.expires_never();
  return impl.streaming->get().result_int();
}

Result<bool> Connection::read_some(std::string& out, Duration idle) {
  Impl& impl = *impl_;
  if (!impl.streaming) return Error(errc::closed, impl.url.text + ": no stream started");
  auto& parser = *impl.streaming;
  if (impl.cancelled) return Error(errc::cancelled, impl.url.text + ": cancelled");
  if (parser.is_done()) return false;
  parser.get().body().data = impl.piece;
  parser.get().body().size = sizeof impl.piece;
  if (idle > Duration::zero()) impl.stream.expires_after(idle);
  auto ec = impl.await([&](auto handler) {
    bhttp::async_read_some(impl.stream, impl.buffer, parser, std::move(handler));
  });
  impl.stream.expires_never();
  if (ec == bhttp::error::need_buffer) ec = {};
  if (ec) return impl.fail(ec, "reading a streamed answer");
  out.append(impl.piece, sizeof impl.piece - parser.get().body().size);
  if (parser.is_done()) {
    if (!parser.get().keep_alive()) impl.broken = true;
    impl.streaming.reset();
    return false;
  }
  return true;
}

void Connection::cancel() {
  Impl* impl = impl_.get();
  impl->cancelled = true;
  asio::post(impl->ioc, [impl] { impl->stream.cancel(); });
}

bool Connection::usable() const { return !impl_->broken && !impl_->cancelled; }

}  // namespace keel::http
