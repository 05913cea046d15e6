#include "keel/coord/etcd_coordinator.h"

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "keel/core/log.h"
#include "keel/core/text.h"
#include "keel/http/client.h"

namespace keel::coord {

using nlohmann::json;

// ---------------------------------------------------------------------------- encoding

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

namespace {

// Zero-valued fields are omitted by the gateway and 64-bit integers arrive as strings (lease
// ids exceed 2^53): read them as integers, never through a double.
std::int64_t integer(const json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (it->is_string()) {
    const auto& text = it->get_ref<const std::string&>();
    std::int64_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error == std::errc() && end == text.data() + text.size()) return value;
  }
  return 0;
}

std::string bytes(const json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end() || !it->is_string()) return {};
  auto decoded = base64_decode(it->get_ref<const std::string&>());
  return decoded ? std::move(*decoded) : std::string();
}

KeyValue key_value(const json& object) {
  KeyValue kv;
  kv.key = bytes(object, "key");
  kv.value = bytes(object, "value");
  kv.create_revision = integer(object, "create_revision");
  kv.mod_revision = integer(object, "mod_revision");
  kv.version = integer(object, "version");
  kv.lease = integer(object, "lease");
  return kv;
}

std::vector<KeyValue> key_values(const json& object, const char* field) {
  std::vector<KeyValue> kvs;
  auto it = object.find(field);
  if (it == object.end() || !it->is_array()) return kvs;
  for (const auto& item : *it) kvs.push_back(key_value(item));
  return kvs;
}

Revision header_revision(const json& object) {
  auto it = object.find("header");
  return it == object.end() ? 0 : integer(*it, "revision");
}

json range_request(std::string_view key, bool prefix) {
  json request = {{"key", base64_encode(key)}};
  if (prefix) request["range_end"] = base64_encode(prefix_end(key));
  return request;
}

json operation_json(const Operation& operation) {
  json request = range_request(operation.key, operation.prefix);
  switch (operation.kind) {
    case Operation::Kind::kPut:
      request = {{"key", base64_encode(operation.key)}, {"value", base64_encode(operation.value)}};
      if (operation.lease != 0) request["lease"] = std::to_string(operation.lease);
      return {{"request_put", request}};
    case Operation::Kind::kDelete:
      request["prev_kv"] = true;
      return {{"request_delete_range", request}};
    case Operation::Kind::kGet:
      return {{"request_range", request}};
  }
  return {};
}

json compare_json(const Compare& compare) {
  static constexpr const char* kResults[] = {"EQUAL", "NOT_EQUAL", "LESS", "GREATER"};
  json object = {{"key", base64_encode(compare.key)},
                 {"result", kResults[static_cast<int>(compare.op)]}};
  switch (compare.target) {
    case Compare::Target::kCreateRevision:
      object["target"] = "CREATE";
      object["create_revision"] = std::to_string(compare.number);
      break;
    case Compare::Target::kModRevision:
      object["target"] = "MOD";
      object["mod_revision"] = std::to_string(compare.number);
      break;
    case Compare::Target::kVersion:
      object["target"] = "VERSION";
      object["version"] = std::to_string(compare.number);
      break;
    case Compare::Target::kValue:
      object["target"] = "VALUE";
      object["value"] = base64_encode(compare.value);
      break;
  }
  return object;
}

// gRPC status codes the gateway reports, as our errors.
Error grpc_error(std::int64_t code, const std::string& message, const std::string& where) {
  const std::string text = where + ": etcd says: " + message;
  if (message.find("lease not found") != std::string::npos) {
    return Error(errc::lease_not_found, text);
  }
  switch (code) {
    case 11:
      return Error(errc::compacted, text);  // OUT_OF_RANGE
    case 3:                                 // INVALID_ARGUMENT
    case 9:                                 // FAILED_PRECONDITION
      return Error(errc::invalid_argument, text);
    default:
      return Error(errc::unavailable, text);
  }
}

enum class Retry { kIfNotSent, kAlways };

}  // namespace

// ---------------------------------------------------------------------------- the backend

struct WatchState;

struct EtcdCoordinator::Impl {
  EtcdOptions options;
  std::vector<http::Url> urls;
  std::string version;

  mutable std::mutex mutex;
  std::size_t current = 0;                              // index into urls
  std::vector<std::unique_ptr<http::Connection>> idle;  // to urls[current]
  std::map<LeaseId, Duration> lease_ttls;               // leases granted here, for timeouts
  std::list<std::weak_ptr<WatchState>> watches;

  // A connection to endpoint `index`: an idle one, else a new one (within `connect_timeout`).
  struct Lease {
    std::unique_ptr<http::Connection> connection;
    std::size_t index;
    bool reused;
  };
  Result<Lease> take(std::size_t index, Duration connect_timeout) {
    {
      std::lock_guard lock(mutex);
      if (index == current && !idle.empty()) {
        auto connection = std::move(idle.back());
        idle.pop_back();
        return Lease{std::move(connection), index, true};
      }
    }
    auto opened = http::Connection::open(urls[index], connect_timeout);
    if (!opened) return opened.error();
    return Lease{std::move(*opened), index, false};
  }
  void give_back(Lease lease) {
    std::lock_guard lock(mutex);
    if (lease.index == current && lease.connection->usable() &&
        idle.size() < options.max_idle_connections) {
      idle.push_back(std::move(lease.connection));
    }
  }
  // Moves on from endpoint `index` (if it is still the current one).
  void fail_over(std::size_t index) {
    std::lock_guard lock(mutex);
    if (index != current) return;
    current = (current + 1) % urls.size();
    idle.clear();
    if (urls.size() > 1) log::get("coord")->warn("etcd: switching to {}", urls[current].text);
  }

  // POSTs `request` to `path` and returns the answer's JSON object. Retries on the next
  // endpoint when the request was not sent, or always with Retry::kAlways (safe to repeat).
  // `timeout` bounds each attempt (default: the request timeout). With `until`, the whole call
  // — every attempt, connecting included — also ends by then: the caller's own deadline, which
  // a retry on another endpoint must not run past either.
  Result<json> call(std::string_view path, const json& request, Retry retry,
                    std::optional<Duration> timeout = std::nullopt,
                    std::optional<std::chrono::steady_clock::time_point> until = std::nullopt) {
    const std::string body = request.dump();
    std::string failures;
    auto add_failure = [&](const Error& error) {
      failures += (failures.empty() ? "" : "; ") + error.message();
    };
    // Real time, not an injected clock: these bound socket calls (see etcd_coordinator.h).
    auto out_of_time = [&] { return until && std::chrono::steady_clock::now() >= *until; };
    auto bounded = [&](Duration limit) {
      if (!until) return limit;
      return std::min<Duration>(limit, *until - std::chrono::steady_clock::now());
    };
    std::size_t unreachable = 0;  // endpoints that refused or timed out the connection
    bool retried_stale = false;
    bool maybe_sent = false;
    while (unreachable < urls.size()) {
      if (out_of_time()) {
        return Error(errc::unavailable,
                     "POST " + std::string(path) + ": timed out at the caller's deadline" +
                         (failures.empty() ? "" : " (" + failures + ")") +
                         (maybe_sent ? "; the request may or may not have been applied"
                                     : "; it was not sent"));
      }
      const std::size_t index = current_index();
      auto lease = take(index, bounded(options.connect_timeout));
      if (!lease) {  // nothing was sent: the next endpoint may take it
        add_failure(lease.error());
        fail_over(index);
        ++unreachable;
        continue;
      }
      maybe_sent = true;
      auto response =
          lease->connection->post(path, body, bounded(timeout.value_or(options.request_timeout)));
      if (!response) {
        add_failure(response.error());
        // An idle connection the server had closed: the request never reached it.
        if (lease->reused && response.error().is(http::errc::closed) && !retried_stale) {
          retried_stale = true;
          continue;
        }
        fail_over(index);
        ++unreachable;
        if (retry == Retry::kAlways) continue;
        return Error(errc::unavailable,
                     failures + " (the request may or may not have been applied)");
      }
      const std::string where = urls[index].text + " POST " + std::string(path);
      const unsigned status = response->status;
      give_back(std::move(*lease));
      json answer = json::parse(response->body, nullptr, false);
      if (answer.is_object() && answer.contains("error")) {
        const json& error = answer["error"];
        if (error.is_object()) {  // an error inside a stream: {"error":{"grpc_code":..}}
          return grpc_error(integer(error, "grpc_code"), error.value("message", ""), where);
        }
        return grpc_error(integer(answer, "code"), answer.value("message", error.dump()), where);
      }
      if (status != 200 || !answer.is_object()) {
        std::string excerpt = response->body.substr(0, 120);
        std::replace(excerpt.begin(), excerpt.end(), '\n', ' ');
        return Error(errc::unavailable, where + ": not an etcd v3 JSON gateway (HTTP " +
                                            std::to_string(status) + ": " + excerpt + ")");
      }
      return answer;
    }
    return Error(errc::unavailable, failures);
  }

  std::size_t current_index() const {
    std::lock_guard lock(mutex);
    return current;
  }
};

EtcdCoordinator::EtcdCoordinator(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<EtcdCoordinator>> EtcdCoordinator::connect(EtcdOptions options) {
  if (options.endpoints.empty()) {
    return Error(errc::invalid_argument, "etcd: no endpoints given");
  }
  auto impl = std::make_shared<Impl>();
  for (const auto& endpoint : options.endpoints) {
    auto url = http::parse_url(endpoint);
    if (!url) return Error(errc::invalid_argument, "etcd endpoint " + url.error().message());
    impl->urls.push_back(*url);
  }
  impl->options = std::move(options);
  // Find an endpoint that answers as etcd: /v3/maintenance/status reports the version.
  std::string failures;
  for (std::size_t i = 0; i < impl->urls.size(); ++i) {
    impl->current = i;
    impl->idle.clear();
    auto status = impl->call("/v3/maintenance/status", json::object(), Retry::kIfNotSent);
    if (status && status->contains("version")) {
      impl->version = status->value("version", "");
      return std::unique_ptr<EtcdCoordinator>(new EtcdCoordinator(std::move(impl)));
    }
    std::string why = status ? impl->urls[i].text + " answered without an etcd version"
                             : status.error().message();
    failures += (failures.empty() ? "" : "; ") + why;
  }
  return Error(errc::unavailable, "cannot reach etcd: " + failures);
}

std::string EtcdCoordinator::endpoint() const { return impl_->urls[impl_->current_index()].text; }
const std::string& EtcdCoordinator::server_version() const { return impl_->version; }

Result<LeaseId> EtcdCoordinator::grant(Duration ttl) {
  // etcd counts whole seconds (and may raise a TTL to its minimum); round up, never down.
  const auto seconds = std::max<std::int64_t>(1, (ttl + 999ms) / 1s);
  auto answer = impl_->call("/v3/lease/grant", {{"TTL", std::to_string(seconds)}},
                            Retry::kAlways);  // a lost grant only leaks a lease that expires
  if (!answer) return answer.error();
  const LeaseId id = integer(*answer, "ID");
  if (id == 0) return Error(errc::unavailable, "etcd granted no lease: " + answer->dump());
  std::lock_guard lock(impl_->mutex);
  impl_->lease_ttls[id] = ttl;
  return id;
}

Result<Duration> EtcdCoordinator::keep_alive(LeaseId lease) {
  // A renewal slower than a third of the TTL is worth nothing: give up on it by then, so that
  // the holder's local deadline is not held up behind it.
  std::optional<Duration> timeout;
  {
    std::lock_guard lock(impl_->mutex);
    if (auto it = impl_->lease_ttls.find(lease); it != impl_->lease_ttls.end()) {
      timeout = std::min(impl_->options.request_timeout, it->second / 3);
    }
  }
  auto answer =
      impl_->call("/v3/lease/keepalive", {{"ID", std::to_string(lease)}}, Retry::kAlways, timeout);
  if (!answer) return answer.error();
  const json result = answer->value("result", json::object());
  const std::int64_t ttl = integer(result, "TTL");  // omitted (zero) once the lease is gone
  if (ttl <= 0) {
    return Error(errc::lease_not_found, "lease " + std::to_string(lease) + " has expired");
  }
  return Duration(std::chrono::seconds(ttl));
}

Status EtcdCoordinator::revoke(LeaseId lease) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->lease_ttls.erase(lease);
  }
  auto answer = impl_->call("/v3/lease/revoke", {{"ID", std::to_string(lease)}}, Retry::kAlways);
  if (!answer) return answer.error();
  return {};
}

Result<Duration> EtcdCoordinator::time_to_live(LeaseId lease) {
  auto answer =
      impl_->call("/v3/lease/timetolive", {{"ID", std::to_string(lease)}}, Retry::kAlways);
  if (!answer) return answer.error();
  const std::int64_t ttl = integer(*answer, "TTL");  // -1 when the lease is gone
  if (ttl <= 0) return Error(errc::lease_not_found, "lease " + std::to_string(lease) + " is gone");
  return Duration(std::chrono::seconds(ttl));
}

Result<TransactionResult> EtcdCoordinator::transact(const Transaction& transaction) {
  json request = {
      {"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& compare : transaction.compare)
    request["compare"].push_back(compare_json(compare));
  bool read_only = true;
  for (const auto& operation : transaction.success) {
    request["success"].push_back(operation_json(operation));
    read_only = read_only && operation.kind == Operation::Kind::kGet;
  }
  for (const auto& operation : transaction.failure) {
    request["failure"].push_back(operation_json(operation));
    read_only = read_only && operation.kind == Operation::Kind::kGet;
  }
  // A caller's own timeout (a fenced write's time left until its local deadline) bounds the
  // whole call, retries included, as well as the request timeout does.
  std::optional<Duration> timeout;
  std::optional<std::chrono::steady_clock::time_point> until;
  if (transaction.timeout) {
    timeout = std::min(impl_->options.request_timeout, *transaction.timeout);
    until = std::chrono::steady_clock::now() + *timeout;
  }
  auto answer = impl_->call("/v3/kv/txn", request, read_only ? Retry::kAlways : Retry::kIfNotSent,
                            timeout, until);
  if (!answer) return answer.error();
  TransactionResult result;
  result.succeeded = answer->value("succeeded", false);  // omitted when false
  result.revision = header_revision(*answer);
  for (const auto& response : answer->value("responses", json::array())) {
    if (auto range = response.find("response_range"); range != response.end()) {
      result.kvs.push_back(key_values(*range, "kvs"));
    } else if (auto deleted = response.find("response_delete_range"); deleted != response.end()) {
      result.kvs.push_back(key_values(*deleted, "prev_kvs"));
    } else {
      result.kvs.emplace_back();
    }
  }
  return result;
}

Result<std::pair<std::vector<KeyValue>, Revision>> EtcdCoordinator::range(std::string_view key,
                                                                          bool prefix) {
  auto answer = impl_->call("/v3/kv/range", range_request(key, prefix), Retry::kAlways);
  if (!answer) return answer.error();
  return std::make_pair(key_values(*answer, "kvs"), header_revision(*answer));
}

// ---------------------------------------------------------------------------- watches

struct WatchState : std::enable_shared_from_this<WatchState> {
  static constexpr std::size_t kMaxLine = 64 << 20;

  std::shared_ptr<EtcdCoordinator::Impl> owner;
  std::string key;
  bool prefix = false;
  Revision next = 0;  // the first revision not yet delivered
  std::function<void(const WatchEvent&)> on_event;

  std::mutex mutex;
  std::condition_variable wake;
  bool cancelled = false;
  http::Connection* streaming = nullptr;  // the connection a read may be blocked on
  std::thread thread;

  bool stopped() {
    std::lock_guard lock(mutex);
    return cancelled;
  }

  // Opens a watch stream from `next`.
  Result<std::unique_ptr<http::Connection>> open() {
    std::size_t index = owner->current_index();
    auto connection = http::Connection::open(owner->urls[index], owner->options.connect_timeout);
    if (!connection) {
      owner->fail_over(index);
      return connection.error();
    }
    json create = range_request(key, prefix);
    create["start_revision"] = std::to_string(next);
    auto status = (*connection)
                      ->start_stream("/v3/watch", json{{"create_request", create}}.dump(),
                                     owner->options.request_timeout);
    if (!status) {
      owner->fail_over(index);
      return status.error();
    }
    if (*status != 200) {
      return Error(errc::unavailable, owner->urls[index].text +
                                          " POST /v3/watch: not an etcd v3 gateway (HTTP " +
                                          std::to_string(*status) + ")");
    }
    return std::move(*connection);
  }

  // Handles one line of the stream. False: the stream must be reopened (from `next`).
  bool handle(const std::string& line) {
    json message = json::parse(line, nullptr, false);
    if (!message.is_object() || !message.contains("result")) return false;
    const json& result = message["result"];
    if (result.value("canceled", false)) {
      if (integer(result, "compact_revision") > 0) resync();
      return false;
    }
    for (const auto& item : result.value("events", json::array())) {
      WatchEvent event;
      event.type = item.value("type", "PUT") == "DELETE" ? WatchEvent::Type::kDelete
                                                         : WatchEvent::Type::kPut;
      event.kv = key_value(item.value("kv", json::object()));
      if (event.kv.mod_revision < next) continue;  // seen before a reconnect
      if (stopped()) return false;
      next = event.kv.mod_revision + 1;
      on_event(event);
    }
    return true;
  }

  // The revisions we needed were compacted: hand over the state now and go on from there.
  void resync() {
    auto listing = owner->call("/v3/kv/range", range_request(key, prefix), Retry::kAlways);
    if (!listing || stopped()) return;  // reopened from `next`, compacted again: we try again
    WatchEvent event;
    event.type = WatchEvent::Type::kResync;
    event.snapshot = key_values(*listing, "kvs");
    event.kv.mod_revision = header_revision(*listing);
    next = event.kv.mod_revision + 1;
    on_event(event);
  }

  void run(std::unique_ptr<http::Connection> connection) {
    Duration backoff = owner->options.watch_retry_min;
    std::string buffer;
    while (true) {
      if (!connection) {
        {
          std::unique_lock lock(mutex);
          wake.wait_for(lock, backoff, [&] { return cancelled; });
          if (cancelled) return;
        }
        backoff = std::min(backoff * 2, owner->options.watch_retry_max);
        auto opened = open();
        if (!opened) continue;
        std::lock_guard lock(mutex);
        if (cancelled) return;
        connection = std::move(*opened);
        streaming = connection.get();
        buffer.clear();
      }
      auto more = connection->read_some(buffer);
      bool keep = more && *more;
      std::size_t start = 0;
      for (auto end = buffer.find('\n'); end != std::string::npos; end = buffer.find('\n', start)) {
        if (!handle(buffer.substr(start, end - start))) {
          keep = false;
          break;
        }
        start = end + 1;
        backoff = owner->options.watch_retry_min;
      }
      buffer.erase(0, start);
      if (buffer.size() > kMaxLine) keep = false;
      if (!keep) {
        std::lock_guard lock(mutex);
        if (cancelled) return;
        streaming = nullptr;
        connection.reset();
      }
    }
  }

  void cancel() {
    {
      std::lock_guard lock(mutex);
      if (cancelled) return;
      cancelled = true;
      if (streaming != nullptr) streaming->cancel();
    }
    wake.notify_all();
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();  // cancelled from its own callback: it returns when the callback does
    } else if (thread.joinable()) {
      thread.join();
    }
  }
};

namespace {
class EtcdWatchHandle final : public WatchHandle {
 public:
  explicit EtcdWatchHandle(std::shared_ptr<WatchState> state) : state_(std::move(state)) {}
  ~EtcdWatchHandle() override { cancel(); }
  void cancel() override { state_->cancel(); }

 private:
  std::shared_ptr<WatchState> state_;
};
}  // namespace

Result<std::unique_ptr<WatchHandle>> EtcdCoordinator::watch(
    std::string_view key, bool prefix, Revision after_revision,
    std::function<void(const WatchEvent&)> on_event) {
  auto state = std::make_shared<WatchState>();
  state->owner = impl_;
  state->key = std::string(key);
  state->prefix = prefix;
  state->next = after_revision + 1;
  state->on_event = std::move(on_event);
  auto connection = state->open();
  if (!connection) return connection.error();
  state->streaming = connection->get();
  state->thread = std::thread(
      [state, first = std::move(*connection)]() mutable { state->run(std::move(first)); });
  {
    std::lock_guard lock(impl_->mutex);
    impl_->watches.remove_if([](const std::weak_ptr<WatchState>& w) { return w.expired(); });
    impl_->watches.push_back(state);
  }
  return std::unique_ptr<WatchHandle>(std::make_unique<EtcdWatchHandle>(state));
}

EtcdCoordinator::~EtcdCoordinator() {
  std::list<std::weak_ptr<WatchState>> watches;
  {
    std::lock_guard lock(impl_->mutex);
    watches.swap(impl_->watches);
  }
  for (auto& weak : watches) {
    if (auto state = weak.lock()) state->cancel();
  }
}

}  // namespace keel::coord
