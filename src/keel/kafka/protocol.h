// The Kafka requests `keel node` answers, decoded from their wire form into views of the
// request's bytes. Only the non-flexible versions are taken (no tagged fields): every client
// in use negotiates down to them through ApiVersions (docs/kafka.md lists what each API takes).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "keel/kafka/wire.h"

namespace keel::kafka {

enum class ApiKey : std::int16_t {
  kProduce = 0,
  kFetch = 1,
  kListOffsets = 2,
  kMetadata = 3,
  kOffsetCommit = 8,
  kOffsetFetch = 9,
  kFindCoordinator = 10,
  kJoinGroup = 11,
  kHeartbeat = 12,
  kLeaveGroup = 13,
  kSyncGroup = 14,
  kDescribeGroups = 15,
  kListGroups = 16,
  kApiVersions = 18,
  kCreateTopics = 19,
  kDeleteTopics = 20,
  kInitProducerId = 22,
  kDescribeConfigs = 32,
};

struct VersionRange {
  ApiKey key;
  std::int16_t min;
  std::int16_t max;
};
// Every API this listener answers, with the versions it takes.
std::span<const VersionRange> supported_apis();
// The range for `key`, or nullopt for an API this listener does not answer.
std::optional<VersionRange> supported(std::int16_t key);

struct RequestHeader {
  std::int16_t api_key = 0;
  std::int16_t api_version = 0;
  std::int32_t correlation_id = 0;
  std::optional<std::string_view> client_id;
};
// Request header v1 (key, version, correlation id, client id): every non-flexible request.
RequestHeader read_header(Reader& r);

struct ProduceRequest {
  struct Partition {
    std::int32_t index = 0;
    std::optional<std::string_view> records;
  };
  struct Topic {
    std::string_view name;
    std::vector<Partition> partitions;
  };
  std::optional<std::string_view> transactional_id;
  std::int16_t acks = 1;
  std::int32_t timeout_ms = 0;
  std::vector<Topic> topics;
};

struct FetchRequest {
  struct Partition {
    std::int32_t index = 0;
    std::int64_t offset = 0;
    std::int32_t max_bytes = 0;
  };
  struct Topic {
    std::string_view name;
    std::vector<Partition> partitions;
  };
  std::int32_t max_wait_ms = 0;
  std::int32_t min_bytes = 0;
  std::int32_t max_bytes = 0x7fffffff;
  std::int8_t isolation_level = 0;
  std::int32_t session_id = 0;
  std::int32_t session_epoch = -1;
  std::vector<Topic> topics;
};

struct ListOffsetsRequest {
  struct Partition {
    std::int32_t index = 0;
    std::int64_t timestamp = 0;  // -1 latest, -2 earliest, else a time in ms
  };
  struct Topic {
    std::string_view name;
    std::vector<Partition> partitions;
  };
  std::vector<Topic> topics;
};

struct MetadataRequest {
  std::optional<std::vector<std::string_view>> topics;  // nullopt: every topic
  bool allow_auto_topic_creation = true;
};

struct OffsetCommitRequest {
  struct Partition {
    std::int32_t index = 0;
    std::int64_t offset = 0;
    std::optional<std::string_view> metadata;
  };
  struct Topic {
    std::string_view name;
    std::vector<Partition> partitions;
  };
  std::string_view group_id;
  std::int32_t generation_id = -1;
  std::string_view member_id;
  std::optional<std::string_view> group_instance_id;
  std::vector<Topic> topics;
};

struct OffsetFetchRequest {
  struct Topic {
    std::string_view name;
    std::vector<std::int32_t> partitions;
  };
  std::string_view group_id;
  std::optional<std::vector<Topic>> topics;  // nullopt: every committed offset of the group
};

struct FindCoordinatorRequest {
  std::string_view key;
  std::int8_t key_type = 0;  // 0 group, 1 transaction
};

struct JoinGroupRequest {
  struct Protocol {
    std::string_view name;
    std::string_view metadata;
  };
  std::string_view group_id;
  std::int32_t session_timeout_ms = 0;
  std::int32_t rebalance_timeout_ms = -1;
  std::string_view member_id;
  std::optional<std::string_view> group_instance_id;
  std::string_view protocol_type;
  std::vector<Protocol> protocols;
};

struct HeartbeatRequest {
  std::string_view group_id;
  std::int32_t generation_id = 0;
  std::string_view member_id;
};

struct LeaveGroupRequest {
  std::string_view group_id;
  std::vector<std::string_view> member_ids;
};

struct SyncGroupRequest {
  struct Assignment {
    std::string_view member_id;
    std::string_view assignment;
  };
  std::string_view group_id;
  std::int32_t generation_id = 0;
  std::string_view member_id;
  std::vector<Assignment> assignments;
};

struct DescribeGroupsRequest {
  std::vector<std::string_view> groups;
};

struct CreateTopicsRequest {
  struct Config {
    std::string_view name;
    std::optional<std::string_view> value;
  };
  struct Topic {
    std::string_view name;
    std::int32_t partitions = -1;
    std::int16_t replication_factor = -1;
    std::int32_t assignments = 0;
    std::vector<Config> configs;
  };
  std::vector<Topic> topics;
  std::int32_t timeout_ms = 0;
  bool validate_only = false;
};

struct DeleteTopicsRequest {
  std::vector<std::string_view> names;
};

struct InitProducerIdRequest {
  std::optional<std::string_view> transactional_id;
  std::int32_t transaction_timeout_ms = 0;
};

struct DescribeConfigsRequest {
  struct Resource {
    std::int8_t type = 0;  // 2 topic, 4 broker
    std::string_view name;
    std::optional<std::vector<std::string_view>> keys;
  };
  std::vector<Resource> resources;
};

// Each decodes the body after the header for `version` (a version supported() gives); false
// with the reader's error when the bytes do not hold the request or bytes are left over.
bool decode(Reader& r, std::int16_t version, ProduceRequest& out);
bool decode(Reader& r, std::int16_t version, FetchRequest& out);
bool decode(Reader& r, std::int16_t version, ListOffsetsRequest& out);
bool decode(Reader& r, std::int16_t version, MetadataRequest& out);
bool decode(Reader& r, std::int16_t version, OffsetCommitRequest& out);
bool decode(Reader& r, std::int16_t version, OffsetFetchRequest& out);
bool decode(Reader& r, std::int16_t version, FindCoordinatorRequest& out);
bool decode(Reader& r, std::int16_t version, JoinGroupRequest& out);
bool decode(Reader& r, std::int16_t version, HeartbeatRequest& out);
bool decode(Reader& r, std::int16_t version, LeaveGroupRequest& out);
bool decode(Reader& r, std::int16_t version, SyncGroupRequest& out);
bool decode(Reader& r, std::int16_t version, DescribeGroupsRequest& out);
bool decode(Reader& r, std::int16_t version, CreateTopicsRequest& out);
bool decode(Reader& r, std::int16_t version, DeleteTopicsRequest& out);
bool decode(Reader& r, std::int16_t version, DescribeConfigsRequest& out);
bool decode(Reader& r, std::int16_t version, InitProducerIdRequest& out);

}  // namespace keel::kafka
