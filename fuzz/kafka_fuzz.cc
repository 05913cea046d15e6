// Feeds arbitrary bytes to the Kafka listener's decoders and handlers: as a request frame (the
// bytes after the size) to a Broker on a scratch store, as every request body at every version
// the listener takes, and as a Produce record set. Any input must end in a response frame whose
// size and correlation id are right, or in the connection being closed — never a crash, a hang
// or a read past the input.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/eventlog/event_store.h"
#include "keel/kafka/broker.h"
#include "keel/kafka/protocol.h"
#include "keel/kafka/records.h"

namespace kafka = keel::kafka;

namespace {

void check(bool condition) {
  if (!condition) __builtin_trap();
}

struct Scratch {
  keel::SteadyClock clock;
  keel::metrics::Registry registry;
  std::unique_ptr<keel::eventlog::EventStore> store;
  std::unique_ptr<kafka::Broker> broker;

  Scratch() {
    const auto dir =
        std::filesystem::temp_directory_path() / ("keel_kafka_fuzz_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    keel::eventlog::StoreOptions options;
    options.durability = keel::eventlog::Durability::kNone;
    auto opened = keel::eventlog::EventStore::open(dir.string(), options, clock);
    check(static_cast<bool>(opened));
    store = std::move(*opened);
    kafka::BrokerOptions broker_options;
    broker_options.max_inflated_bytes = 1 << 20;
    broker = std::make_unique<kafka::Broker>(*store, clock, broker_options, registry);
    check(static_cast<bool>(broker->start()));
    // A topic the inputs can reach: Metadata creates it.
    std::string frame("\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x01t\x01", 19);
    broker->handle(
        frame, [](auto) {}, [](auto) {});
  }
};

template <typename Request>
void decode_every_version(std::string_view body, kafka::ApiKey key) {
  const auto range = kafka::supported(static_cast<std::int16_t>(key));
  for (std::int16_t v = range->min; v <= range->max; ++v) {
    kafka::Reader r(body);
    Request request;
    (void)kafka::decode(r, v, request);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Scratch scratch;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  using kafka::ApiKey;
  decode_every_version<kafka::ProduceRequest>(bytes, ApiKey::kProduce);
  decode_every_version<kafka::FetchRequest>(bytes, ApiKey::kFetch);
  decode_every_version<kafka::ListOffsetsRequest>(bytes, ApiKey::kListOffsets);
  decode_every_version<kafka::MetadataRequest>(bytes, ApiKey::kMetadata);
  decode_every_version<kafka::OffsetCommitRequest>(bytes, ApiKey::kOffsetCommit);
  decode_every_version<kafka::OffsetFetchRequest>(bytes, ApiKey::kOffsetFetch);
  decode_every_version<kafka::JoinGroupRequest>(bytes, ApiKey::kJoinGroup);
  decode_every_version<kafka::SyncGroupRequest>(bytes, ApiKey::kSyncGroup);
  decode_every_version<kafka::LeaveGroupRequest>(bytes, ApiKey::kLeaveGroup);
  decode_every_version<kafka::CreateTopicsRequest>(bytes, ApiKey::kCreateTopics);
  decode_every_version<kafka::DescribeConfigsRequest>(bytes, ApiKey::kDescribeConfigs);

  std::vector<kafka::RecordBatch> batches;
  kafka::BatchError error;
  if (kafka::decode_batches(bytes, 1 << 20, batches, error)) {
    for (const auto& batch : batches) {
      for (const auto& record : batch.records) {
        check(record.offset_delta >= 0 && record.offset_delta <= batch.last_offset_delta);
      }
    }
  } else {
    check(error.code != kafka::Code::kNone && !error.message.empty());
  }

  // As a whole request: answered with a well-formed frame, or refused.
  kafka::Reader header(bytes);
  const kafka::RequestHeader h = kafka::read_header(header);
  std::string frame(bytes);
  const std::size_t max_wait_at = header.offset() + 4;  // after the replica id
  if (header.ok() && h.api_key == 1 && frame.size() >= max_wait_at + 4) {
    frame.replace(max_wait_at, 4, std::string(4, '\0'));  // no long polls: answer at once
  }
  // Joins and syncs may answer later, from the coordinator's thread: capture by value.
  scratch.broker->handle(
      frame,
      [correlation = h.correlation_id](std::optional<std::string> response) {
        if (!response) return;
        kafka::Reader r(*response);
        check(static_cast<std::size_t>(r.i32()) == response->size() - 4);
        check(r.i32() == correlation);
      },
      [](std::string why) { check(!why.empty()); });
  return 0;
}
