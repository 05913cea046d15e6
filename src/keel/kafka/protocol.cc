#include "keel/kafka/protocol.h"

#include <array>

namespace keel::kafka {

namespace {

constexpr std::array<VersionRange, 18> kApis{{
    {ApiKey::kProduce, 3, 8},
    {ApiKey::kFetch, 4, 11},
    {ApiKey::kListOffsets, 1, 5},
    {ApiKey::kMetadata, 0, 8},
    {ApiKey::kOffsetCommit, 0, 7},
    {ApiKey::kOffsetFetch, 0, 5},
    {ApiKey::kFindCoordinator, 0, 2},
    {ApiKey::kJoinGroup, 0, 5},
    {ApiKey::kHeartbeat, 0, 3},
    {ApiKey::kLeaveGroup, 0, 3},
    {ApiKey::kSyncGroup, 0, 3},
    {ApiKey::kDescribeGroups, 0, 4},
    {ApiKey::kListGroups, 0, 2},
    {ApiKey::kApiVersions, 0, 2},
    {ApiKey::kCreateTopics, 0, 4},
    {ApiKey::kDeleteTopics, 0, 3},
    {ApiKey::kInitProducerId, 0, 1},
    {ApiKey::kDescribeConfigs, 0, 2},
}};

bool done(Reader& r) {
  if (r.ok() && r.remaining() != 0) r.fail("bytes left over after the request");
  return r.ok();
}

std::vector<std::string_view> strings(Reader& r) {
  std::vector<std::string_view> out(static_cast<std::size_t>(r.array(2)));
  for (auto& s : out) s = r.string();
  return out;
}

}  // namespace

std::span<const VersionRange> supported_apis() { return kApis; }

std::optional<VersionRange> supported(std::int16_t key) {
  for (const VersionRange& range : kApis) {
    if (static_cast<std::int16_t>(range.key) == key) return range;
  }
  return std::nullopt;
}

RequestHeader read_header(Reader& r) {
  RequestHeader h;
  h.api_key = r.i16();
  h.api_version = r.i16();
  h.correlation_id = r.i32();
  h.client_id = r.nullable_string();
  return h;
}

bool decode(Reader& r, std::int16_t, ProduceRequest& out) {
  out.transactional_id = r.nullable_string();
  out.acks = r.i16();
  out.timeout_ms = r.i32();
  out.topics.resize(static_cast<std::size_t>(r.array(6)));
  for (auto& topic : out.topics) {
    topic.name = r.string();
    topic.partitions.resize(static_cast<std::size_t>(r.array(8)));
    for (auto& p : topic.partitions) {
      p.index = r.i32();
      p.records = r.nullable_bytes();
    }
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, FetchRequest& out) {
  r.i32();  // replica id
  out.max_wait_ms = r.i32();
  out.min_bytes = r.i32();
  if (v >= 3) out.max_bytes = r.i32();
  if (v >= 4) out.isolation_level = r.i8();
  if (v >= 7) {
    out.session_id = r.i32();
    out.session_epoch = r.i32();
  }
  out.topics.resize(static_cast<std::size_t>(r.array(6)));
  for (auto& topic : out.topics) {
    topic.name = r.string();
    topic.partitions.resize(static_cast<std::size_t>(r.array(16)));
    for (auto& p : topic.partitions) {
      p.index = r.i32();
      if (v >= 9) r.i32();  // current leader epoch
      p.offset = r.i64();
      if (v >= 5) r.i64();  // log start offset (followers only)
      p.max_bytes = r.i32();
    }
  }
  if (v >= 7) {
    const std::int32_t forgotten = r.array(6);
    for (std::int32_t i = 0; i < forgotten && r.ok(); ++i) {
      r.string();
      const std::int32_t n = r.array(4);
      for (std::int32_t k = 0; k < n && r.ok(); ++k) r.i32();
    }
  }
  if (v >= 11) r.string();  // rack id
  return done(r);
}

bool decode(Reader& r, std::int16_t v, ListOffsetsRequest& out) {
  r.i32();             // replica id
  if (v >= 2) r.i8();  // isolation level: no transactions here, so both read the same
  out.topics.resize(static_cast<std::size_t>(r.array(6)));
  for (auto& topic : out.topics) {
    topic.name = r.string();
    topic.partitions.resize(static_cast<std::size_t>(r.array(12)));
    for (auto& p : topic.partitions) {
      p.index = r.i32();
      if (v >= 4) r.i32();  // current leader epoch
      p.timestamp = r.i64();
    }
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, MetadataRequest& out) {
  auto count = r.nullable_array(2);
  if (count && (*count > 0 || v == 0)) {
    std::vector<std::string_view> topics(static_cast<std::size_t>(*count));
    for (auto& t : topics) t = r.string();
    if (!topics.empty()) out.topics = std::move(topics);  // v0: an empty list means all
  } else if (count) {
    out.topics.emplace();  // v1+: an empty list means none
  }
  if (v >= 4) out.allow_auto_topic_creation = r.boolean();
  if (v >= 8) {
    r.boolean();  // include cluster authorized operations
    r.boolean();  // include topic authorized operations
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, OffsetCommitRequest& out) {
  out.group_id = r.string();
  if (v >= 1) {
    out.generation_id = r.i32();
    out.member_id = r.string();
  }
  if (v >= 7) out.group_instance_id = r.nullable_string();
  if (v >= 2 && v <= 4) r.i64();  // retention time: offsets are kept until the group is deleted
  out.topics.resize(static_cast<std::size_t>(r.array(6)));
  for (auto& topic : out.topics) {
    topic.name = r.string();
    topic.partitions.resize(static_cast<std::size_t>(r.array(14)));
    for (auto& p : topic.partitions) {
      p.index = r.i32();
      p.offset = r.i64();
      if (v >= 6) r.i32();  // leader epoch
      if (v == 1) r.i64();  // commit timestamp
      p.metadata = r.nullable_string();
    }
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, OffsetFetchRequest& out) {
  out.group_id = r.string();
  auto count = r.nullable_array(6);
  if (count) {
    out.topics.emplace(static_cast<std::size_t>(*count));
    for (auto& topic : *out.topics) {
      topic.name = r.string();
      topic.partitions.resize(static_cast<std::size_t>(r.array(4)));
      for (auto& p : topic.partitions) p = r.i32();
    }
  } else if (!count && v < 2) {
    r.fail("a null topic list before version 2");
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, FindCoordinatorRequest& out) {
  out.key = r.string();
  if (v >= 1) out.key_type = r.i8();
  return done(r);
}

bool decode(Reader& r, std::int16_t v, JoinGroupRequest& out) {
  out.group_id = r.string();
  out.session_timeout_ms = r.i32();
  out.rebalance_timeout_ms = v >= 1 ? r.i32() : out.session_timeout_ms;
  out.member_id = r.string();
  if (v >= 5) out.group_instance_id = r.nullable_string();
  out.protocol_type = r.string();
  out.protocols.resize(static_cast<std::size_t>(r.array(6)));
  for (auto& p : out.protocols) {
    p.name = r.string();
    p.metadata = r.bytes();
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, HeartbeatRequest& out) {
  out.group_id = r.string();
  out.generation_id = r.i32();
  out.member_id = r.string();
  if (v >= 3) r.nullable_string();  // group instance id
  return done(r);
}

bool decode(Reader& r, std::int16_t v, LeaveGroupRequest& out) {
  out.group_id = r.string();
  if (v < 3) {
    out.member_ids.push_back(r.string());
  } else {
    out.member_ids.resize(static_cast<std::size_t>(r.array(4)));
    for (auto& m : out.member_ids) {
      m = r.string();
      r.nullable_string();  // group instance id
    }
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, SyncGroupRequest& out) {
  out.group_id = r.string();
  out.generation_id = r.i32();
  out.member_id = r.string();
  if (v >= 3) r.nullable_string();  // group instance id
  out.assignments.resize(static_cast<std::size_t>(r.array(6)));
  for (auto& a : out.assignments) {
    a.member_id = r.string();
    a.assignment = r.bytes();
  }
  return done(r);
}

bool decode(Reader& r, std::int16_t v, DescribeGroupsRequest& out) {
  out.groups = strings(r);
  if (v >= 3) r.boolean();  // include authorized operations
  return done(r);
}

bool decode(Reader& r, std::int16_t v, CreateTopicsRequest& out) {
  out.topics.resize(static_cast<std::size_t>(r.array(14)));
  for (auto& topic : out.topics) {
    topic.name = r.string();
    topic.partitions = r.i32();
    topic.replication_factor = r.i16();
    topic.assignments = r.array(8);
    for (std::int32_t i = 0; i < topic.assignments && r.ok(); ++i) {
      r.i32();
      const std::int32_t brokers = r.array(4);
      for (std::int32_t b = 0; b < brokers && r.ok(); ++b) r.i32();
    }
    topic.configs.resize(static_cast<std::size_t>(r.array(4)));
    for (auto& c : topic.configs) {
      c.name = r.string();
      c.value = r.nullable_string();
    }
  }
  out.timeout_ms = r.i32();
  if (v >= 1) out.validate_only = r.boolean();
  return done(r);
}

bool decode(Reader& r, std::int16_t, DeleteTopicsRequest& out) {
  out.names = strings(r);
  r.i32();  // timeout
  return done(r);
}

bool decode(Reader& r, std::int16_t v, DescribeConfigsRequest& out) {
  out.resources.resize(static_cast<std::size_t>(r.array(7)));
  for (auto& resource : out.resources) {
    resource.type = r.i8();
    resource.name = r.string();
    auto keys = r.nullable_array(2);
    if (keys) {
      resource.keys.emplace(static_cast<std::size_t>(*keys));
      for (auto& k : *resource.keys) k = r.string();
    }
  }
  if (v >= 1) r.boolean();  // include synonyms
  return done(r);
}

bool decode(Reader& r, std::int16_t, InitProducerIdRequest& out) {
  out.transactional_id = r.nullable_string();
  out.transaction_timeout_ms = r.i32();
  return done(r);
}

}  // namespace keel::kafka
