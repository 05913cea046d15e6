#include "keel/kafka/broker.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "keel/core/hash.h"
#include "keel/core/log.h"
#include "keel/core/text.h"
#include "keel/core/uuid.h"
#include "keel/eventlog/errc.h"
#include "keel/kafka/metadata.h"
#include "keel/kafka/records.h"

namespace keel::kafka {

using eventlog::EventData;
using eventlog::ExpectedVersion;
using eventlog::RecordedEvent;
using json = nlohmann::json;

namespace {

constexpr std::string_view kTopicsStream = "$keel-kafka-topics";
constexpr std::string_view kOffsetsStream = "$keel-kafka-offsets";
constexpr std::string_view kProducersStream = "$keel-kafka-producers";
constexpr std::size_t kMaxProducerStates = 100000;  // (producer, partition) sequences kept
constexpr std::string_view kTypeHeader = "keel.type";
constexpr std::string_view kIdHeader = "keel.id";
constexpr std::uint64_t kOffsetSnapshotEvery = 10000;  // commits between offset snapshots

// The frame a response is written into: size, correlation id, body.
class Response {
 public:
  explicit Response(std::int32_t correlation_id) : w(out_) {
    size_at_ = w.placeholder_i32();
    w.i32(correlation_id);
  }
  Response(const Response&) = delete;
  Response& operator=(const Response&) = delete;
  std::string finish() {
    w.patch_i32(size_at_, static_cast<std::uint32_t>(out_.size() - 4));
    return std::move(out_);
  }

 private:
  std::string out_;

 public:
  Writer w;

 private:
  std::size_t size_at_ = 0;
};

// Whether the consumer-group or topic name may be stored: what Kafka allows.
bool valid_group_id(std::string_view id) { return !id.empty() && id.size() <= 255; }

}  // namespace

std::string partition_stream(std::string_view topic, std::int32_t partition) {
  std::string stream(topic);
  stream += '-';
  stream += std::to_string(partition);
  return stream;
}

bool valid_topic_name(std::string_view name) {
  if (name.empty() || name.size() > 249 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

struct Broker::Impl {
  eventlog::EventStore& store;
  Clock& clock;
  BrokerOptions options;
  const PartitionOwners* owners = nullptr;  // in a cluster: who leads each partition

  // Whether this broker leads `stream`'s partition (always, outside a cluster).
  bool leads(std::string_view stream) const {
    return owners == nullptr || owners->owner(stream) == options.node_id;
  }
  GroupCoordinator coordinator;

  mutable std::mutex topics_mutex;
  std::map<std::string, std::int32_t, std::less<>> topics;  // name → partitions

  struct Committed {
    std::int64_t offset = -1;
    std::string metadata;
  };
  using GroupOffsets = std::map<std::pair<std::string, std::int32_t>, Committed>;
  std::mutex offsets_mutex;
  std::map<std::string, GroupOffsets, std::less<>> offsets;
  std::uint64_t commits_since_snapshot = 0;
  std::atomic<std::uint64_t> truncate_offsets_before{0};  // set by a durable snapshot

  // The idempotent producer: the last sequence appended per (producer id, partition stream).
  struct Sequence {
    std::int16_t epoch = 0;
    std::int32_t last = -1;
  };
  std::mutex producers_mutex;
  std::map<std::pair<std::int64_t, std::string>, Sequence> sequences;

  struct Waiter {
    std::shared_ptr<const std::string> frame;
    RequestHeader header;
    FetchRequest request;
    Reply reply;
    TimePoint deadline;
  };
  std::mutex waiters_mutex;
  std::condition_variable wake;
  std::vector<std::unique_ptr<Waiter>> waiters;
  std::uint64_t commit_seen = 0;  // the store's next position when waiters were last checked
  std::atomic<std::uint64_t> committed_position{0};
  std::uint64_t listener = 0;
  bool stopping = false;
  std::thread timer;

  metrics::Registry& registry;
  metrics::Counter* records_in = nullptr;
  metrics::Counter* records_out = nullptr;
  metrics::Counter* produce_errors = nullptr;
  std::map<std::int16_t, metrics::Counter*> requests;

  Impl(eventlog::EventStore& s, Clock& c, BrokerOptions o, metrics::Registry& r)
      : store(s), clock(c), options(std::move(o)), coordinator(c, options.groups), registry(r) {
    records_in = &registry.counter("keel_kafka_records_produced_total",
                                   "Records appended through Kafka Produce");
    records_out = &registry.counter("keel_kafka_records_fetched_total",
                                    "Records sent in Kafka Fetch responses");
    produce_errors = &registry.counter("keel_kafka_produce_errors_total",
                                       "Produce partitions answered with an error");
    for (const VersionRange& api : supported_apis()) {
      requests[static_cast<std::int16_t>(api.key)] =
          &registry.counter("keel_kafka_requests_total", "Kafka requests by API key",
                            {{"api_key", std::to_string(static_cast<int>(api.key))}});
    }
  }

  // ---- topics ----

  std::optional<std::int32_t> partitions_of(std::string_view topic) const {
    std::lock_guard lock(topics_mutex);
    auto it = topics.find(topic);
    if (it == topics.end()) return std::nullopt;
    return it->second;
  }

  Code create_topic(std::string_view name, std::int32_t partitions, std::string* message) {
    if (!valid_topic_name(name)) {
      *message = "topic names are 1 to 249 of a-z A-Z 0-9 . _ -";
      return Code::kInvalidTopic;
    }
    if (partitions < 1 || partitions > options.max_partitions) {
      *message = "partitions must be 1 to " + std::to_string(options.max_partitions);
      return Code::kInvalidPartitions;
    }
    std::lock_guard lock(topics_mutex);
    if (topics.count(name) != 0) {
      *message = "topic '" + std::string(name) + "' already exists";
      return Code::kTopicAlreadyExists;
    }
    json body = {{"topic", name}, {"partitions", partitions}};
    auto appended =
        store.append_system(kTopicsStream, ExpectedVersion::any(),
                            {EventData{Uuid::random_v4(), "TopicCreated", body.dump(), ""}});
    if (!appended) {
      *message = appended.error().message();
      return Code::kKafkaStorageError;
    }
    topics.emplace(std::string(name), partitions);
    return Code::kNone;
  }

  Code delete_topic(std::string_view name) {
    std::int32_t partitions = 0;
    {
      std::lock_guard lock(topics_mutex);
      auto it = topics.find(name);
      if (it == topics.end()) return Code::kUnknownTopicOrPartition;
      partitions = it->second;
      json body = {{"topic", name}};
      auto appended =
          store.append_system(kTopicsStream, ExpectedVersion::any(),
                              {EventData{Uuid::random_v4(), "TopicDeleted", body.dump(), ""}});
      if (!appended) return Code::kKafkaStorageError;
      topics.erase(it);
    }
    for (std::int32_t p = 0; p < partitions; ++p) {
      // Soft: a topic created again under the name goes on from the offsets it had.
      (void)store.delete_stream(partition_stream(name, p), ExpectedVersion::any(), false);
    }
    return Code::kNone;
  }

  // Replays the topic registry and the committed offsets.
  Status load() {
    for (std::uint64_t from = 0;;) {
      auto page = store.read_stream(kTopicsStream, from, 1000);
      if (!page) return page.error();
      for (const RecordedEvent& e : *page) {
        json body = json::parse(e.data, nullptr, false);
        if (!body.is_object() || !body.contains("topic")) continue;
        const std::string name = body.value("topic", "");
        if (e.type == "TopicCreated") topics[name] = body.value("partitions", 1);
        if (e.type == "TopicDeleted") topics.erase(name);
      }
      if (page->size() < 1000) break;
      from = page->back().version + 1;
    }
    for (std::uint64_t from = 0;;) {
      auto page = store.read_stream(kOffsetsStream, from, 1000);
      if (!page) return page.error();
      for (const RecordedEvent& e : *page) apply_offsets_event(e);
      if (page->size() < 1000) break;
      from = page->back().version + 1;
    }
    return {};
  }

  // ---- committed offsets ----

  void apply_offsets_event(const RecordedEvent& e) {
    json body = json::parse(e.data, nullptr, false);
    if (!body.is_object()) return;
    if (e.type == "OffsetSnapshot") offsets.clear();
    for (const json& group : body.value("groups", json::array())) {
      auto& map = offsets[group.value("group", "")];
      for (const json& o : group.value("offsets", json::array())) {
        map[{o.value("topic", ""), o.value("partition", 0)}] = {o.value("offset", std::int64_t{-1}),
                                                                o.value("metadata", "")};
      }
    }
  }

  static json group_json(std::string_view group, const GroupOffsets& map) {
    json list = json::array();
    for (const auto& [tp, c] : map) {
      list.push_back({{"topic", tp.first},
                      {"partition", tp.second},
                      {"offset", c.offset},
                      {"metadata", c.metadata}});
    }
    return {{"group", group}, {"offsets", std::move(list)}};
  }

  // ---- fetch ----

  // The response to `request`, or nullopt while it has fewer than min_bytes to give and may
  // still wait.
  std::optional<std::string> fetch(const RequestHeader& header, const FetchRequest& request,
                                   bool final) {
    const std::int16_t v = header.api_version;
    Response response(header.correlation_id);
    Writer& w = response.w;
    w.i32(0);  // throttle
    if (v >= 7) {
      w.code(Code::kNone);
      w.i32(0);  // no fetch session: every request is a full one
    }
    std::int64_t budget = std::max<std::int32_t>(request.max_bytes, 1);
    std::size_t record_bytes = 0;
    bool any_error = false;
    bool first_data = true;
    std::uint64_t records = 0;
    w.array(request.topics.size());
    std::string batch;
    for (const auto& topic : request.topics) {
      w.string(topic.name);
      w.array(topic.partitions.size());
      const auto partitions = partitions_of(topic.name);
      for (const auto& p : topic.partitions) {
        w.i32(p.index);
        Code code = Code::kNone;
        std::int64_t high = 0;
        std::int64_t log_start = 0;
        batch.clear();
        if (!partitions || p.index < 0 || p.index >= *partitions) {
          code = Code::kUnknownTopicOrPartition;
        } else if (!leads(partition_stream(topic.name, p.index))) {
          code = Code::kNotLeaderOrFollower;
        } else {
          const std::string stream = partition_stream(topic.name, p.index);
          auto last = store.stream_version(stream);
          high = last ? static_cast<std::int64_t>(*last) + 1 : 0;
          log_start = static_cast<std::int64_t>(store.metadata(stream).truncate_before.value_or(0));
          log_start = std::min(log_start, high);
          if (p.offset < 0 || p.offset > high) {
            code = Code::kOffsetOutOfRange;
          } else if (p.offset < high && budget > 0) {
            const std::int64_t limit = std::min<std::int64_t>(std::max(p.max_bytes, 1), budget);
            auto read = read_records(stream, static_cast<std::uint64_t>(p.offset), limit,
                                     first_data, batch, records);
            if (read == Code::kOffsetOutOfRange) {
              code = read;
            } else if (!batch.empty()) {
              first_data = false;
              budget -= static_cast<std::int64_t>(batch.size());
              record_bytes += batch.size();
            }
          }
        }
        any_error = any_error || code != Code::kNone;
        w.code(code);
        w.i64(high);
        w.i64(high);  // last stable offset: no transactions, so the high watermark
        if (v >= 5) w.i64(log_start);
        w.array(0);              // aborted transactions
        if (v >= 11) w.i32(-1);  // preferred read replica
        w.bytes(batch);
      }
    }
    if (!final && !any_error &&
        record_bytes < static_cast<std::size_t>(std::max(request.min_bytes, 1))) {
      return std::nullopt;
    }
    records_out->inc(records);
    return response.finish();
  }

  // Appends a record batch of `stream`'s events from `offset` to `out`, up to `limit` bytes
  // (at least one record when `must_fill`, KIP-74). OFFSET_OUT_OF_RANGE when `offset` is below
  // what the stream still has.
  Code read_records(const std::string& stream, std::uint64_t offset, std::int64_t limit,
                    bool must_fill, std::string& out, std::uint64_t& records) {
    std::vector<OutRecord> batch;
    std::deque<std::string> owned;  // keys and header values that are not in the events
    std::deque<std::vector<Header>> headers;
    std::vector<std::vector<RecordedEvent>> pages;
    std::int64_t size = 61;
    std::uint64_t next = offset;
    bool full = false;
    while (!full) {
      auto page = store.read_stream(stream, next, options.max_read_events);
      if (!page || page->empty()) break;
      if (batch.empty() && page->front().version != offset) return Code::kOffsetOutOfRange;
      pages.push_back(std::move(*page));
      for (const RecordedEvent& e : pages.back()) {
        OutRecord r;
        r.offset = static_cast<std::int64_t>(e.version);
        r.timestamp = e.timestamp_ns / 1000000;
        r.value = e.data;
        std::int64_t cost = 24 + static_cast<std::int64_t>(e.data.size());
        if (auto fields = kafka_fields(e.metadata)) {
          if (fields->timestamp >= 0) r.timestamp = fields->timestamp;
          if (fields->key) {
            r.key = owned.emplace_back(std::move(*fields->key));
            cost += static_cast<std::int64_t>(r.key->size());
          }
          if (fields->null_value) r.value = std::nullopt;
          auto& list = headers.emplace_back();
          for (auto& [k, value] : fields->headers) {
            Header h;
            h.key = owned.emplace_back(std::move(k));
            if (value) h.value = owned.emplace_back(std::move(*value));
            cost += static_cast<std::int64_t>(h.key.size() + h.value.value_or("").size() + 4);
            list.push_back(h);
          }
          r.headers = list;
        } else {
          auto& list = headers.emplace_back();
          list.push_back({kTypeHeader, std::string_view(e.type)});
          list.push_back({kIdHeader, std::string_view(owned.emplace_back(e.id.to_string()))});
          cost += static_cast<std::int64_t>(e.type.size() + 36 + 24);
          r.headers = list;
        }
        if (size + cost > limit && !(batch.empty() && must_fill)) {
          full = true;
          break;
        }
        size += cost;
        batch.push_back(r);
      }
      if (pages.back().size() < options.max_read_events) break;
      next = pages.back().back().version + 1;
    }
    if (batch.empty()) return Code::kNone;
    records += batch.size();
    append_batch(out, batch);
    return Code::kNone;
  }

  void park_or_answer(std::shared_ptr<const std::string> frame, const RequestHeader& header,
                      FetchRequest request, Reply reply) {
    if (auto response = fetch(header, request, request.max_wait_ms <= 0)) {
      reply(std::move(response));
      return;
    }
    std::unique_lock lock(waiters_mutex);
    if (stopping || waiters.size() >= options.max_waiting_fetches) {
      lock.unlock();
      reply(fetch(header, request, true));
      return;
    }
    auto waiter = std::make_unique<Waiter>();
    waiter->frame = std::move(frame);
    waiter->header = header;
    waiter->request = std::move(request);
    waiter->reply = std::move(reply);
    waiter->deadline = clock.now() + std::chrono::milliseconds(waiter->request.max_wait_ms);
    waiters.push_back(std::move(waiter));
  }

  void timer_loop() {
    std::unique_lock lock(waiters_mutex);
    while (!stopping) {
      wake.wait_for(lock, 5ms);
      if (stopping) break;
      lock.unlock();
      coordinator.tick();
      apply_offset_truncation();
      lock.lock();
      const std::uint64_t position = committed_position.load();
      const bool new_data = position != commit_seen;
      commit_seen = position;
      const TimePoint now = clock.now();
      std::vector<std::unique_ptr<Waiter>> check;
      for (auto& w : waiters) {
        if (new_data || w->deadline <= now) check.push_back(std::move(w));
      }
      std::erase(waiters, nullptr);
      lock.unlock();
      for (auto& w : check) {
        if (auto response = fetch(w->header, w->request, w->deadline <= now)) {
          w->reply(std::move(response));
          w.reset();
        }
      }
      lock.lock();
      for (auto& w : check) {
        if (w) waiters.push_back(std::move(w));
      }
    }
    auto left = std::move(waiters);
    lock.unlock();
    for (auto& w : left) w->reply(fetch(w->header, w->request, true));
  }

  void apply_offset_truncation() {
    if (const std::uint64_t before = truncate_offsets_before.exchange(0); before > 0) {
      eventlog::StreamMetadata metadata;
      metadata.truncate_before = before;
      if (auto set = store.set_system_metadata(kOffsetsStream, metadata); !set) {
        log::get("kafka")->warn("truncating {}: {}", kOffsetsStream, set.error().message());
      }
    }
  }

  // ---- the requests ----

  void api_versions(const RequestHeader& h, const Reply& reply) {
    Response response(h.correlation_id);
    Writer& w = response.w;
    const auto range = supported(h.api_key);
    // A version past ours gets our list in the v0 form with UNSUPPORTED_VERSION, and the
    // client asks again with one we take (KIP-511).
    const bool known = range && h.api_version <= range->max;
    w.code(known ? Code::kNone : Code::kUnsupportedVersion);
    w.array(supported_apis().size());
    for (const VersionRange& api : supported_apis()) {
      w.i16(static_cast<std::int16_t>(api.key));
      w.i16(api.min);
      w.i16(api.max);
    }
    if (known && h.api_version >= 1) w.i32(0);
    reply(response.finish());
  }

  void metadata(const RequestHeader& h, const MetadataRequest& request, const Reply& reply) {
    const std::int16_t v = h.api_version;
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 3) w.i32(0);
    std::vector<PartitionOwners::BrokerAddress> brokers;
    if (owners != nullptr) brokers = owners->brokers();
    if (brokers.empty()) {
      brokers.push_back({options.node_id, options.advertised_host, options.advertised_port});
    }
    w.array(brokers.size());
    for (const auto& broker : brokers) {
      w.i32(broker.id);
      w.string(broker.host);
      w.i32(broker.port);
      if (v >= 1) w.nullable_string(std::nullopt);  // rack
    }
    if (v >= 2) w.nullable_string(options.cluster_id);
    if (v >= 1) w.i32(options.node_id);  // controller
    std::vector<std::pair<std::string, std::pair<Code, std::int32_t>>> answer;
    if (!request.topics) {
      std::lock_guard lock(topics_mutex);
      for (const auto& [name, partitions] : topics) {
        answer.push_back({name, {Code::kNone, partitions}});
      }
    } else {
      for (std::string_view name : *request.topics) {
        auto partitions = partitions_of(name);
        Code code = Code::kNone;
        if (!partitions && !valid_topic_name(name)) {
          code = Code::kInvalidTopic;
        } else if (!partitions && options.auto_create_topics && request.allow_auto_topic_creation) {
          std::string message;
          code = create_topic(name, options.default_partitions, &message);
          if (code == Code::kTopicAlreadyExists) code = Code::kNone;
          partitions = partitions_of(name);
        } else if (!partitions) {
          code = Code::kUnknownTopicOrPartition;
        }
        answer.push_back(
            {std::string(name), {code, code == Code::kNone ? partitions.value_or(0) : 0}});
      }
    }
    w.array(answer.size());
    for (const auto& [name, result] : answer) {
      w.code(result.first);
      w.string(name);
      if (v >= 1) w.boolean(false);  // internal
      w.array(static_cast<std::size_t>(result.second));
      for (std::int32_t p = 0; p < result.second; ++p) {
        const std::int32_t leader =
            owners == nullptr ? options.node_id : owners->owner(partition_stream(name, p));
        w.code(leader < 0 ? Code::kLeaderNotAvailable : Code::kNone);
        w.i32(p);
        w.i32(leader);
        if (v >= 7) w.i32(0);  // leader epoch
        w.array(1);
        w.i32(leader);  // replicas
        w.array(1);
        w.i32(leader);           // in sync
        if (v >= 5) w.array(0);  // offline
      }
      if (v >= 8) w.i32(std::numeric_limits<std::int32_t>::min());
    }
    if (v >= 8) w.i32(std::numeric_limits<std::int32_t>::min());
    reply(response.finish());
  }

  struct ProduceResult {
    std::string topic;
    std::int32_t partition = 0;
    Code code = Code::kNone;
    std::int64_t base_offset = -1;
    std::string message;
  };

  void produce(const RequestHeader& h, const ProduceRequest& request, Reply reply) {
    struct State {
      std::vector<ProduceResult> results;
      std::atomic<int> pending{1};
      Reply reply;
      RequestHeader header;
      std::int16_t acks;
    };
    auto state = std::make_shared<State>();
    state->reply = std::move(reply);
    state->header = h;
    state->acks = request.acks;
    for (const auto& topic : request.topics) {
      for (const auto& p : topic.partitions) {
        state->results.push_back({std::string(topic.name), p.index, Code::kNone, -1, {}});
      }
    }
    auto finish = [this, state] {
      if (state->pending.fetch_sub(1) != 1) return;
      if (state->acks == 0) {
        state->reply(std::nullopt);
        return;
      }
      const std::int16_t v = state->header.api_version;
      Response response(state->header.correlation_id);
      Writer& w = response.w;
      // Results are grouped by topic in request order.
      std::vector<std::vector<const ProduceResult*>> by_topic;
      for (const ProduceResult& r : state->results) {
        if (by_topic.empty() || by_topic.back().front()->topic != r.topic) by_topic.emplace_back();
        by_topic.back().push_back(&r);
      }
      w.array(by_topic.size());
      for (const auto& list : by_topic) {
        w.string(list.front()->topic);
        w.array(list.size());
        for (const ProduceResult* r : list) {
          if (r->code != Code::kNone) produce_errors->inc();
          w.i32(r->partition);
          w.code(r->code);
          w.i64(r->base_offset);
          w.i64(-1);  // log append time: records keep their create time
          if (v >= 5) w.i64(0);
          if (v >= 8) {
            w.array(0);  // record errors
            w.nullable_string(r->message.empty() ? std::nullopt
                                                 : std::optional<std::string_view>(r->message));
          }
        }
      }
      w.i32(0);  // throttle
      state->reply(response.finish());
    };
    std::size_t i = 0;
    for (const auto& topic : request.topics) {
      const auto partitions = partitions_of(topic.name);
      for (const auto& p : topic.partitions) {
        ProduceResult& result = state->results[i++];
        auto fail = [&](Code code, std::string message) {
          result.code = code;
          result.message = std::move(message);
        };
        if (request.acks != 0 && request.acks != 1 && request.acks != -1) {
          fail(Code::kInvalidRequiredAcks, "acks must be -1, 0 or 1");
          continue;
        }
        if (request.transactional_id) {
          fail(Code::kInvalidRequest, "transactions are not supported");
          continue;
        }
        if (!partitions || p.index < 0 || p.index >= *partitions) {
          fail(Code::kUnknownTopicOrPartition, "no such topic or partition");
          continue;
        }
        if (!leads(partition_stream(topic.name, p.index))) {
          fail(Code::kNotLeaderOrFollower, "another broker of the cluster leads this partition");
          continue;
        }
        const std::string_view set = p.records.value_or(std::string_view());
        if (set.size() > options.max_message_bytes) {
          fail(Code::kMessageTooLarge, "the record set is " + std::to_string(set.size()) +
                                           " bytes; the limit is " +
                                           std::to_string(options.max_message_bytes));
          continue;
        }
        std::vector<RecordBatch> batches;
        BatchError error;
        if (!decode_batches(set, options.max_inflated_bytes, batches, error)) {
          fail(error.code, std::move(error.message));
          continue;
        }
        const std::string stream = partition_stream(topic.name, p.index);
        std::vector<EventData> events;
        for (const RecordBatch& batch : batches) {
          if (batch.producer_id >= 0) {
            if (const Code checked = check_sequence(stream, batch); checked != Code::kNone) {
              fail(checked, "producer " + std::to_string(batch.producer_id) + " epoch " +
                                std::to_string(batch.producer_epoch) + " sequence " +
                                std::to_string(batch.base_sequence) + " does not follow");
              break;
            }
          }
          for (const Record& r : batch.records) events.push_back(event_of(r, batch, stream));
        }
        if (result.code != Code::kNone) continue;
        const std::uint32_t max_event = store.options().max_event_bytes;
        if (std::any_of(events.begin(), events.end(), [max_event](const EventData& e) {
              return e.type.size() + e.data.size() + e.metadata.size() > max_event;
            })) {
          fail(Code::kMessageTooLarge, "a record is over max_event_bytes");
          continue;
        }
        if (events.empty()) {
          fail(Code::kCorruptMessage, "no records");
          continue;
        }
        records_in->inc(events.size());
        const std::size_t chunk = std::max<std::size_t>(1, store.options().max_append_events);
        for (std::size_t from = 0; from < events.size(); from += chunk) {
          const std::size_t n = std::min(chunk, events.size() - from);
          const bool first = from == 0;
          state->pending.fetch_add(1);
          store.append_async(
              stream, ExpectedVersion::any(), std::span<const EventData>(events.data() + from, n),
              [&result, first, finish](Result<eventlog::AppendResult> appended) {
                if (!appended) {
                  result.code = Code::kKafkaStorageError;
                  result.message = appended.error().message();
                } else if (first) {
                  result.base_offset = static_cast<std::int64_t>(appended->first_version);
                }
                finish();
              });
        }
      }
    }
    finish();
  }

  // Whether `batch` of an idempotent producer may be appended to `stream`: the next sequence,
  // or a retry of one appended already (its event ids then find the first append); notes it.
  Code check_sequence(const std::string& stream, const RecordBatch& batch) {
    if (batch.producer_epoch < 0 || batch.base_sequence < 0) return Code::kInvalidRecord;
    const std::int32_t last = batch.base_sequence + batch.last_offset_delta;
    std::lock_guard lock(producers_mutex);
    auto key = std::pair{batch.producer_id, stream};
    auto it = sequences.find(key);
    if (it == sequences.end()) {
      // A new producer, or one from before a restart: the event ids still catch a retry.
      if (sequences.size() >= kMaxProducerStates) sequences.clear();
      sequences.emplace(std::move(key), Sequence{batch.producer_epoch, last});
      return Code::kNone;
    }
    Sequence& seen = it->second;
    if (batch.producer_epoch < seen.epoch) return Code::kInvalidProducerEpoch;
    if (batch.producer_epoch > seen.epoch) {
      if (batch.base_sequence != 0) return Code::kOutOfOrderSequenceNumber;
      seen = {batch.producer_epoch, last};
      return Code::kNone;
    }
    if (batch.base_sequence <= seen.last) return Code::kNone;  // a retry
    if (batch.base_sequence != seen.last + 1) return Code::kOutOfOrderSequenceNumber;
    seen.last = last;
    return Code::kNone;
  }

  // The event id of an idempotent producer's record: the same for every retry of it, so the
  // store's idempotency window appends it once, across restarts too.
  static Uuid producer_record_id(const RecordBatch& batch, std::string_view stream,
                                 std::int32_t sequence) {
    std::string key = std::to_string(batch.producer_id) + "/" +
                      std::to_string(batch.producer_epoch) + "/" + std::to_string(sequence) + "/";
    key += stream;
    std::uint8_t bytes[16];
    const std::uint64_t high = hash64(key, 0x6b65656c6b61666bULL);
    const std::uint64_t low = hash64(key, 0x70726f6475636572ULL);
    for (int i = 0; i < 8; ++i) {
      bytes[i] = static_cast<std::uint8_t>(high >> (56 - 8 * i));
      bytes[8 + i] = static_cast<std::uint8_t>(low >> (56 - 8 * i));
    }
    bytes[6] = static_cast<std::uint8_t>((bytes[6] & 0x0f) | 0x80);  // version 8: custom
    bytes[8] = static_cast<std::uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 9562 variant
    return Uuid::from_bytes(bytes);
  }

  static EventData event_of(const Record& r, const RecordBatch& batch, std::string_view stream) {
    EventData e;
    e.type = "kafka";
    bool have_id = false;
    for (const Header& h : r.headers) {
      if (h.key == kTypeHeader && h.value && !h.value->empty()) e.type = std::string(*h.value);
      if (h.key == kIdHeader && h.value) {
        if (auto id = Uuid::parse(*h.value)) {
          e.id = *id;
          have_id = true;
        }
      }
    }
    if (!have_id) {
      e.id = batch.producer_id >= 0
                 ? producer_record_id(batch, stream, batch.base_sequence + r.offset_delta)
                 : Uuid::random_v4();
    }
    e.data = std::string(r.value.value_or(std::string_view()));
    e.metadata = record_metadata(r);
    return e;
  }

  void init_producer_id(const RequestHeader& h, const InitProducerIdRequest& request, Reply reply) {
    auto answer = [correlation = h.correlation_id](Code code, std::int64_t id) {
      Response response(correlation);
      response.w.i32(0);
      response.w.code(code);
      response.w.i64(id);
      response.w.i16(code == Code::kNone ? 0 : -1);
      return response.finish();
    };
    if (request.transactional_id) {
      // Transactions are not supported: refused before anything is written.
      reply(answer(Code::kUnsupportedVersion, -1));
      return;
    }
    // Ids are the versions of a stream that is never deleted: unique across restarts.
    EventData allocated{Uuid::random_v4(), "ProducerIdAllocated", "{}", ""};
    store.append_system_async(
        kProducersStream, ExpectedVersion::any(), {&allocated, 1},
        [reply = std::move(reply), answer](auto appended) {
          if (!appended) {
            reply(answer(Code::kKafkaStorageError, -1));
            return;
          }
          reply(answer(Code::kNone, static_cast<std::int64_t>(appended->first_version) + 1));
        });
  }

  void list_offsets(const RequestHeader& h, const ListOffsetsRequest& request, const Reply& reply) {
    const std::int16_t v = h.api_version;
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 2) w.i32(0);
    w.array(request.topics.size());
    for (const auto& topic : request.topics) {
      w.string(topic.name);
      w.array(topic.partitions.size());
      const auto partitions = partitions_of(topic.name);
      for (const auto& p : topic.partitions) {
        w.i32(p.index);
        const bool known = partitions && p.index >= 0 && p.index < *partitions;
        if (!known || !leads(partition_stream(topic.name, p.index))) {
          w.code(known ? Code::kNotLeaderOrFollower : Code::kUnknownTopicOrPartition);
          w.i64(-1);
          w.i64(-1);
          if (v >= 4) w.i32(-1);
          continue;
        }
        const std::string stream = partition_stream(topic.name, p.index);
        auto [offset, timestamp] = offset_for(stream, p.timestamp);
        w.code(Code::kNone);
        w.i64(timestamp);
        w.i64(offset);
        if (v >= 4) w.i32(0);
      }
    }
    reply(response.finish());
  }

  static std::int64_t timestamp_of(const RecordedEvent& e) {
    if (auto fields = kafka_fields(e.metadata); fields && fields->timestamp >= 0) {
      return fields->timestamp;
    }
    return e.timestamp_ns / 1000000;
  }

  // -1 latest, -2 earliest, else the first offset whose timestamp is at or after `time`
  // (the high watermark when none is): offset and that record's timestamp.
  std::pair<std::int64_t, std::int64_t> offset_for(const std::string& stream, std::int64_t time) {
    auto last = store.stream_version(stream);
    const std::int64_t high = last ? static_cast<std::int64_t>(*last) + 1 : 0;
    if (time == -1) return {high, -1};
    for (std::uint64_t from = 0;;) {
      auto page = store.read_stream(stream, from, 1000);
      if (!page || page->empty()) return {high, -1};
      if (time == -2) return {static_cast<std::int64_t>(page->front().version), -1};
      for (const RecordedEvent& e : *page) {
        if (const std::int64_t ts = timestamp_of(e); ts >= time) {
          return {static_cast<std::int64_t>(e.version), ts};
        }
      }
      from = page->back().version + 1;
    }
  }

  void offset_commit(const RequestHeader& h, const OffsetCommitRequest& request, Reply reply) {
    const std::int16_t v = h.api_version;
    Code code =
        valid_group_id(request.group_id)
            ? coordinator.can_commit(request.group_id, request.generation_id, request.member_id)
            : Code::kInvalidGroupId;
    std::vector<std::vector<Code>> codes;
    GroupOffsets accepted;
    for (const auto& topic : request.topics) {
      auto& list = codes.emplace_back();
      const auto partitions = partitions_of(topic.name);
      for (const auto& p : topic.partitions) {
        Code c = code;
        if (c == Code::kNone && (!partitions || p.index < 0 || p.index >= *partitions)) {
          c = Code::kUnknownTopicOrPartition;
        }
        if (c == Code::kNone) {
          accepted[{std::string(topic.name), p.index}] = {
              p.offset, std::string(p.metadata.value_or(std::string_view()))};
        }
        list.push_back(c);
      }
    }
    auto answer = [v, h, codes, &request](Code storage) {
      Response response(h.correlation_id);
      Writer& w = response.w;
      if (v >= 3) w.i32(0);
      w.array(request.topics.size());
      for (std::size_t t = 0; t < request.topics.size(); ++t) {
        w.string(request.topics[t].name);
        w.array(request.topics[t].partitions.size());
        for (std::size_t i = 0; i < request.topics[t].partitions.size(); ++i) {
          w.i32(request.topics[t].partitions[i].index);
          w.code(codes[t][i] == Code::kNone ? storage : codes[t][i]);
        }
      }
      return response.finish();
    };
    if (accepted.empty()) {
      reply(answer(Code::kNone));
      return;
    }
    // The answer is encoded now, while `request` (views into the frame) is alive.
    auto ok = std::make_shared<std::string>(answer(Code::kNone));
    auto failed = std::make_shared<std::string>(answer(Code::kKafkaStorageError));
    std::lock_guard lock(offsets_mutex);
    auto& group = offsets[std::string(request.group_id)];
    for (const auto& [tp, c] : accepted) group[tp] = c;
    json body = {{"groups", json::array({group_json(request.group_id, accepted)})}};
    EventData event{Uuid::random_v4(), "OffsetCommit", body.dump(), ""};
    store.append_system_async(kOffsetsStream, ExpectedVersion::any(), {&event, 1},
                              [reply = std::move(reply), ok, failed](auto appended) {
                                reply(appended ? std::move(*ok) : std::move(*failed));
                              });
    if (++commits_since_snapshot >= kOffsetSnapshotEvery) {
      commits_since_snapshot = 0;
      json groups = json::array();
      for (const auto& [id, map] : offsets) groups.push_back(group_json(id, map));
      EventData snapshot{Uuid::random_v4(), "OffsetSnapshot",
                         json{{"groups", std::move(groups)}}.dump(), ""};
      store.append_system_async(kOffsetsStream, ExpectedVersion::any(), {&snapshot, 1},
                                [this](auto appended) {
                                  if (appended) {
                                    truncate_offsets_before = appended->first_version;
                                  }
                                });
    }
  }

  void offset_fetch(const RequestHeader& h, const OffsetFetchRequest& request, const Reply& reply) {
    const std::int16_t v = h.api_version;
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 3) w.i32(0);
    std::lock_guard lock(offsets_mutex);
    auto group = offsets.find(request.group_id);
    auto committed = [&](std::string_view topic, std::int32_t partition) -> const Committed* {
      if (group == offsets.end()) return nullptr;
      auto it = group->second.find({std::string(topic), partition});
      return it == group->second.end() ? nullptr : &it->second;
    };
    auto put = [&](std::int32_t partition, const Committed* c) {
      w.i32(partition);
      w.i64(c != nullptr ? c->offset : -1);
      if (v >= 5) w.i32(-1);
      w.nullable_string(c != nullptr ? std::string_view(c->metadata) : std::string_view());
      w.code(Code::kNone);
    };
    if (request.topics) {
      w.array(request.topics->size());
      for (const auto& topic : *request.topics) {
        w.string(topic.name);
        w.array(topic.partitions.size());
        for (std::int32_t p : topic.partitions) put(p, committed(topic.name, p));
      }
    } else {
      std::map<std::string, std::vector<std::pair<std::int32_t, const Committed*>>> all;
      if (group != offsets.end()) {
        for (const auto& [tp, c] : group->second) all[tp.first].emplace_back(tp.second, &c);
      }
      w.array(all.size());
      for (const auto& [topic, list] : all) {
        w.string(topic);
        w.array(list.size());
        for (const auto& [p, c] : list) put(p, c);
      }
    }
    if (v >= 2) w.code(valid_group_id(request.group_id) ? Code::kNone : Code::kInvalidGroupId);
    reply(response.finish());
  }

  void find_coordinator(const RequestHeader& h, const FindCoordinatorRequest& request,
                        const Reply& reply) {
    const std::int16_t v = h.api_version;
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 1) w.i32(0);
    const bool group = request.key_type == 0;
    w.code(group ? Code::kNone : Code::kCoordinatorNotAvailable);
    if (v >= 1) {
      w.nullable_string(group ? std::nullopt
                              : std::optional<std::string_view>("transactions are not supported"));
    }
    // In a cluster the group's coordinator is the broker that owns the group's key.
    PartitionOwners::BrokerAddress coordinator_at{options.node_id, options.advertised_host,
                                                  options.advertised_port};
    if (group && owners != nullptr) {
      const std::int32_t id = owners->owner("__consumer_group-" + std::string(request.key));
      for (const auto& broker : owners->brokers()) {
        if (broker.id == id) coordinator_at = broker;
      }
    }
    w.i32(group ? coordinator_at.id : -1);
    w.string(group ? std::string_view(coordinator_at.host) : std::string_view());
    w.i32(group ? coordinator_at.port : -1);
    reply(response.finish());
  }

  void join_group(const RequestHeader& h, const JoinGroupRequest& request, Reply reply) {
    const std::int16_t v = h.api_version;
    coordinator.join(request, v, h.client_id.value_or(""),
                     [v, correlation = h.correlation_id, reply = std::move(reply)](JoinResult r) {
                       Response response(correlation);
                       Writer& w = response.w;
                       if (v >= 2) w.i32(0);
                       w.code(r.error);
                       w.i32(r.generation);
                       w.string(r.protocol_name);
                       w.string(r.leader);
                       w.string(r.member_id);
                       w.array(r.members.size());
                       for (const auto& [id, metadata] : r.members) {
                         w.string(id);
                         if (v >= 5) w.nullable_string(std::nullopt);
                         w.bytes(metadata);
                       }
                       reply(response.finish());
                     });
  }

  void sync_group(const RequestHeader& h, const SyncGroupRequest& request, Reply reply) {
    const std::int16_t v = h.api_version;
    coordinator.sync(request, [v, correlation = h.correlation_id, reply = std::move(reply)](
                                  Code code, std::string assignment) {
      Response response(correlation);
      Writer& w = response.w;
      if (v >= 1) w.i32(0);
      w.code(code);
      w.bytes(assignment);
      reply(response.finish());
    });
  }

  void heartbeat(const RequestHeader& h, const HeartbeatRequest& request, const Reply& reply) {
    Response response(h.correlation_id);
    if (h.api_version >= 1) response.w.i32(0);
    response.w.code(coordinator.heartbeat(request));
    reply(response.finish());
  }

  void leave_group(const RequestHeader& h, const LeaveGroupRequest& request, const Reply& reply) {
    const std::int16_t v = h.api_version;
    const std::vector<Code> codes = coordinator.leave(request.group_id, request.member_ids);
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 1) w.i32(0);
    if (v < 3) {
      w.code(codes.front());
    } else {
      w.code(Code::kNone);
      w.array(codes.size());
      for (std::size_t i = 0; i < codes.size(); ++i) {
        w.string(request.member_ids[i]);
        w.nullable_string(std::nullopt);
        w.code(codes[i]);
      }
    }
    reply(response.finish());
  }

  void describe_groups(const RequestHeader& h, const DescribeGroupsRequest& request,
                       const Reply& reply) {
    const std::int16_t v = h.api_version;
    const auto groups = coordinator.describe();
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 1) w.i32(0);
    w.array(request.groups.size());
    for (std::string_view id : request.groups) {
      auto it = std::find_if(groups.begin(), groups.end(),
                             [id](const GroupSummary& g) { return g.group_id == id; });
      w.code(Code::kNone);
      w.string(id);
      if (it == groups.end()) {
        w.string("Dead");
        w.string("");
        w.string("");
        w.array(0);
      } else {
        w.string(it->state);
        w.string(it->protocol_type);
        w.string(it->protocol);
        w.array(it->members.size());
        for (const auto& m : it->members) {
          w.string(m.member_id);
          if (v >= 4) w.nullable_string(std::nullopt);
          w.string(m.client_id);
          w.string("");  // client host
          w.bytes(m.metadata);
          w.bytes(m.assignment);
        }
      }
      if (v >= 3) w.i32(std::numeric_limits<std::int32_t>::min());
    }
    reply(response.finish());
  }

  void list_groups(const RequestHeader& h, const Reply& reply) {
    const auto groups = coordinator.describe();
    std::set<std::string> ids;
    for (const auto& g : groups) ids.insert(g.group_id);
    {
      std::lock_guard lock(offsets_mutex);
      for (const auto& [id, map] : offsets) ids.insert(id);
    }
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (h.api_version >= 1) w.i32(0);
    w.code(Code::kNone);
    w.array(ids.size());
    for (const auto& id : ids) {
      w.string(id);
      w.string("consumer");
    }
    reply(response.finish());
  }

  void create_topics(const RequestHeader& h, const CreateTopicsRequest& request,
                     const Reply& reply) {
    const std::int16_t v = h.api_version;
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (v >= 2) w.i32(0);
    w.array(request.topics.size());
    for (const auto& topic : request.topics) {
      std::string message;
      Code code = Code::kNone;
      const std::int32_t partitions =
          topic.partitions == -1 ? options.default_partitions : topic.partitions;
      if (topic.assignments > 0) {
        code = Code::kInvalidRequest;
        message = "replica assignments are not supported: give a partition count";
      } else if (topic.replication_factor != -1 && topic.replication_factor != 1) {
        code = Code::kInvalidReplicationFactor;
        message = "a single node keeps one copy: the replication factor must be 1 (or -1)";
      } else if (request.validate_only) {
        if (!valid_topic_name(topic.name))
          code = Code::kInvalidTopic;
        else if (partitions_of(topic.name))
          code = Code::kTopicAlreadyExists;
      } else {
        code = create_topic(topic.name, partitions, &message);
      }
      w.string(topic.name);
      w.code(code);
      if (v >= 1) {
        w.nullable_string(message.empty() ? std::nullopt
                                          : std::optional<std::string_view>(message));
      }
    }
    reply(response.finish());
  }

  void delete_topics(const RequestHeader& h, const DeleteTopicsRequest& request,
                     const Reply& reply) {
    Response response(h.correlation_id);
    Writer& w = response.w;
    if (h.api_version >= 1) w.i32(0);
    w.array(request.names.size());
    for (std::string_view name : request.names) {
      w.string(name);
      w.code(delete_topic(name));
    }
    reply(response.finish());
  }

  void describe_configs(const RequestHeader& h, const DescribeConfigsRequest& request,
                        const Reply& reply) {
    const std::int16_t v = h.api_version;
    Response response(h.correlation_id);
    Writer& w = response.w;
    w.i32(0);
    w.array(request.resources.size());
    const std::string max_message = std::to_string(options.max_message_bytes);
    const std::string default_partitions = std::to_string(options.default_partitions);
    for (const auto& resource : request.resources) {
      std::vector<std::pair<std::string_view, std::string_view>> configs;
      Code code = Code::kNone;
      if (resource.type == 2) {  // topic
        if (!partitions_of(resource.name)) code = Code::kUnknownTopicOrPartition;
        configs = {{"cleanup.policy", "delete"},
                   {"retention.ms", "-1"},
                   {"max.message.bytes", max_message},
                   {"message.timestamp.type", "CreateTime"},
                   {"min.insync.replicas", "1"}};
      } else if (resource.type == 4) {  // broker
        configs = {{"message.max.bytes", max_message},
                   {"auto.create.topics.enable", options.auto_create_topics ? "true" : "false"},
                   {"num.partitions", default_partitions}};
      } else {
        code = Code::kInvalidRequest;
      }
      if (resource.keys) {
        std::erase_if(configs, [&](const auto& c) {
          return std::find(resource.keys->begin(), resource.keys->end(), c.first) ==
                 resource.keys->end();
        });
      }
      if (code != Code::kNone) configs.clear();
      w.code(code);
      w.nullable_string(std::nullopt);
      w.i8(resource.type);
      w.string(resource.name);
      w.array(configs.size());
      for (const auto& [name, value] : configs) {
        w.string(name);
        w.nullable_string(value);
        w.boolean(true);  // read only: set in node.yaml
        if (v == 0) {
          w.boolean(false);  // is default
        } else {
          w.i8(5);  // config source: DEFAULT_CONFIG
        }
        w.boolean(false);        // sensitive
        if (v >= 1) w.array(0);  // synonyms
      }
    }
    reply(response.finish());
  }
};

Broker::Broker(eventlog::EventStore& store, Clock& clock, BrokerOptions options,
               metrics::Registry& registry)
    : impl_(std::make_unique<Impl>(store, clock, std::move(options), registry)) {}

Broker::~Broker() { stop(); }

const BrokerOptions& Broker::options() const { return impl_->options; }

void Broker::set_owners(std::int32_t node_id, const PartitionOwners* owners) {
  impl_->options.node_id = node_id;
  impl_->owners = owners;
}

void Broker::advertise(std::string host, std::int32_t port) {
  impl_->options.advertised_host = std::move(host);
  impl_->options.advertised_port = port;
}

Status Broker::start() {
  Impl& b = *impl_;
  if (auto loaded = b.load(); !loaded) {
    return Error(loaded.error().code(),
                 "kafka: reading topics and offsets: " + loaded.error().message());
  }
  // Only the latest producer id matters (the next is its version + 1): keep the stream short.
  eventlog::StreamMetadata producers;
  producers.max_count = 1000;
  if (auto kept = b.store.set_system_metadata(kProducersStream, producers); !kept) {
    return Error(kept.error().code(), "kafka: " + kept.error().message());
  }
  b.committed_position = b.store.next_position();
  b.commit_seen = b.committed_position;
  b.listener = b.store.add_commit_listener([&b](std::uint64_t position) {
    b.committed_position = position;
    b.wake.notify_one();
  });
  b.timer = std::thread([&b] { b.timer_loop(); });
  return {};
}

void Broker::stop() {
  Impl& b = *impl_;
  {
    std::lock_guard lock(b.waiters_mutex);
    if (b.stopping) return;
    b.stopping = true;
  }
  b.wake.notify_all();
  if (b.timer.joinable()) b.timer.join();
  if (b.listener != 0) b.store.remove_commit_listener(b.listener);
  b.coordinator.close();
}

void Broker::handle(std::string frame, Reply reply, std::function<void(std::string)> malformed) {
  Impl& b = *impl_;
  auto bytes = std::make_shared<const std::string>(std::move(frame));
  Reader r(*bytes);
  const RequestHeader h = read_header(r);
  if (!r.ok()) return malformed(std::string("request header: ") + r.error());
  if (auto counter = b.requests.find(h.api_key); counter != b.requests.end()) {
    counter->second->inc();
  }
  const auto range = supported(h.api_key);
  if (h.api_key == static_cast<std::int16_t>(ApiKey::kApiVersions)) {
    return b.api_versions(h, reply);  // any version: the answer says which we take
  }
  if (!range || h.api_version < range->min || h.api_version > range->max) {
    return malformed("API key " + std::to_string(h.api_key) + " version " +
                     std::to_string(h.api_version) + " is not supported (see ApiVersions)");
  }
  auto bad = [&](const char* name) {
    malformed(std::string(name) + " v" + std::to_string(h.api_version) + ": " + r.error());
  };
  const std::int16_t v = h.api_version;
  switch (static_cast<ApiKey>(h.api_key)) {
    case ApiKey::kProduce: {
      ProduceRequest request;
      if (!decode(r, v, request)) return bad("Produce");
      return b.produce(h, request, std::move(reply));
    }
    case ApiKey::kFetch: {
      FetchRequest request;
      if (!decode(r, v, request)) return bad("Fetch");
      return b.park_or_answer(bytes, h, std::move(request), std::move(reply));
    }
    case ApiKey::kListOffsets: {
      ListOffsetsRequest request;
      if (!decode(r, v, request)) return bad("ListOffsets");
      return b.list_offsets(h, request, reply);
    }
    case ApiKey::kMetadata: {
      MetadataRequest request;
      if (!decode(r, v, request)) return bad("Metadata");
      return b.metadata(h, request, reply);
    }
    case ApiKey::kOffsetCommit: {
      OffsetCommitRequest request;
      if (!decode(r, v, request)) return bad("OffsetCommit");
      return b.offset_commit(h, request, std::move(reply));
    }
    case ApiKey::kOffsetFetch: {
      OffsetFetchRequest request;
      if (!decode(r, v, request)) return bad("OffsetFetch");
      return b.offset_fetch(h, request, reply);
    }
    case ApiKey::kFindCoordinator: {
      FindCoordinatorRequest request;
      if (!decode(r, v, request)) return bad("FindCoordinator");
      return b.find_coordinator(h, request, reply);
    }
    case ApiKey::kJoinGroup: {
      JoinGroupRequest request;
      if (!decode(r, v, request)) return bad("JoinGroup");
      return b.join_group(h, request, std::move(reply));
    }
    case ApiKey::kHeartbeat: {
      HeartbeatRequest request;
      if (!decode(r, v, request)) return bad("Heartbeat");
      return b.heartbeat(h, request, reply);
    }
    case ApiKey::kLeaveGroup: {
      LeaveGroupRequest request;
      if (!decode(r, v, request)) return bad("LeaveGroup");
      if (request.member_ids.empty()) return malformed("LeaveGroup: no members");
      return b.leave_group(h, request, reply);
    }
    case ApiKey::kSyncGroup: {
      SyncGroupRequest request;
      if (!decode(r, v, request)) return bad("SyncGroup");
      return b.sync_group(h, request, std::move(reply));
    }
    case ApiKey::kDescribeGroups: {
      DescribeGroupsRequest request;
      if (!decode(r, v, request)) return bad("DescribeGroups");
      return b.describe_groups(h, request, reply);
    }
    case ApiKey::kListGroups:
      if (r.remaining() != 0) return malformed("ListGroups: bytes left over");
      return b.list_groups(h, reply);
    case ApiKey::kCreateTopics: {
      CreateTopicsRequest request;
      if (!decode(r, v, request)) return bad("CreateTopics");
      return b.create_topics(h, request, reply);
    }
    case ApiKey::kDeleteTopics: {
      DeleteTopicsRequest request;
      if (!decode(r, v, request)) return bad("DeleteTopics");
      return b.delete_topics(h, request, reply);
    }
    case ApiKey::kDescribeConfigs: {
      DescribeConfigsRequest request;
      if (!decode(r, v, request)) return bad("DescribeConfigs");
      return b.describe_configs(h, request, reply);
    }
    case ApiKey::kInitProducerId: {
      InitProducerIdRequest request;
      if (!decode(r, v, request)) return bad("InitProducerId");
      return b.init_producer_id(h, request, std::move(reply));
    }
    case ApiKey::kApiVersions:
      break;
  }
  malformed("unreachable API key");
}

}  // namespace keel::kafka
