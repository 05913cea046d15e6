// keel node's Kafka listener (in this process, on a temp dir and free ports): raw-socket protocol
// cases (ApiVersions fallback, malformed frames closing the connection, the error codes of
// Produce, Fetch and Metadata, a long poll woken by a produce), then librdkafka's own producer
// and consumer: acks=all with every delivery report checked, a consumer group reading it all
// back in order, and committed offsets that mean the same records after a restart.
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "keel/kafka/protocol.h"
#include "keel/kafka/records.h"
#include "keel/kafka/wire.h"
#include "keel/node/node.h"
#include "keel/testing/scripted_server.h"

namespace keel::kafka {
namespace {

using testing::connect_to;
using testing::send_all;

class KafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("keel_kafka_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    config_.data_dir = dir_.string();
    config_.listen = {"127.0.0.1", 0};
    config_.store.durability = eventlog::Durability::kNone;  // the e2e crash test covers fsync
    node::KafkaConfig kafka;
    kafka.listen = {"127.0.0.1", 0};
    kafka.default_partitions = 2;
    kafka.max_message_bytes = 64 * 1024;
    kafka.initial_rebalance_delay = 100ms;
    config_.kafka = kafka;
    start();
  }
  void TearDown() override {
    if (node_) node_->stop();
    std::filesystem::remove_all(dir_);
  }
  void start() {
    auto started = node::Node::start(config_, clock_);
    ASSERT_TRUE(started) << started.error().message();
    node_ = std::move(*started);
    port_ = node_->kafka()->port;
    config_.kafka->listen.port = port_;  // a restart keeps the address clients know
  }
  void restart() {
    node_->stop();
    node_.reset();
    start();
  }

  // A request frame: size, header v1 (key, version, correlation id, client id), body.
  static std::string frame(ApiKey key, std::int16_t version, const std::string& body,
                           std::int32_t correlation = 7) {
    std::string out;
    Writer w(out);
    const std::size_t size_at = w.placeholder_i32();
    w.i16(static_cast<std::int16_t>(key));
    w.i16(version);
    w.i32(correlation);
    w.string("test");
    w.raw(body);
    w.patch_i32(size_at, static_cast<std::uint32_t>(out.size() - 4));
    return out;
  }
  // One response's body after the correlation id, or nullopt when the connection closed.
  static std::optional<std::string> read_response(int fd, int timeout_ms = 10000) {
    std::string in;
    while (true) {
      if (in.size() >= 4) {
        Reader r(in);
        const auto size = static_cast<std::size_t>(r.i32());
        if (in.size() >= 4 + size) return in.substr(8, size - 4);
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
      char buffer[65536];
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return std::nullopt;
      in.append(buffer, static_cast<std::size_t>(n));
    }
  }
  std::optional<std::string> call(const std::string& request, int fd = -1) {
    const bool own = fd < 0;
    if (own) fd = connect_to(port_);
    EXPECT_TRUE(send_all(fd, request));
    auto response = read_response(fd);
    if (own) ::close(fd);
    return response;
  }
  // Whether the server closed `fd` (EOF) within a few seconds.
  static bool closed(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return false;
    char c;
    return ::recv(fd, &c, 1, 0) == 0;
  }

  static std::string produce_body(std::string_view topic, std::int32_t partition,
                                  std::string_view records, std::int16_t acks = -1) {
    std::string body;
    Writer w(body);
    w.nullable_string(std::nullopt);
    w.i16(acks);
    w.i32(5000);
    w.array(1);
    w.string(topic);
    w.array(1);
    w.i32(partition);
    w.bytes(records);
    return body;
  }
  // Produce v7: the partition's error code and base offset.
  std::pair<Code, std::int64_t> produce(std::string_view topic, std::int32_t partition,
                                        std::string_view records) {
    auto response = call(frame(ApiKey::kProduce, 7, produce_body(topic, partition, records)));
    EXPECT_TRUE(response);
    Reader r(*response);
    EXPECT_EQ(r.array(), 1);
    r.string();
    EXPECT_EQ(r.array(), 1);
    r.i32();
    const auto code = static_cast<Code>(r.i16());
    const std::int64_t base = r.i64();
    return {code, base};
  }
  static std::string records(std::initializer_list<std::string_view> values,
                             BatchProducer producer = {}) {
    std::vector<OutRecord> list;
    std::int64_t offset = 0;
    for (std::string_view v : values) {
      OutRecord r;
      r.offset = offset++;
      r.timestamp = 1700000000000;
      r.value = v;
      list.push_back(r);
    }
    std::string out;
    append_batch(out, list, Compression::kNone, producer);
    return out;
  }
  std::string fetch_body(std::string_view topic, std::int32_t partition, std::int64_t offset,
                         std::int32_t max_wait_ms = 0, std::int32_t min_bytes = 1) {
    std::string body;
    Writer w(body);
    w.i32(-1);
    w.i32(max_wait_ms);
    w.i32(min_bytes);
    w.i32(1 << 20);
    w.i8(0);
    w.i32(0);
    w.i32(-1);
    w.array(1);
    w.string(topic);
    w.array(1);
    w.i32(partition);
    w.i32(-1);
    w.i64(offset);
    w.i64(-1);
    w.i32(1 << 20);
    w.array(0);
    w.string("");
    return body;
  }
  struct Fetched {
    Code code = Code::kNone;
    std::int64_t high_watermark = -1;
    std::vector<std::pair<std::int64_t, std::string>> records;  // offset, value
  };
  static Fetched parse_fetch(const std::string& response) {
    Fetched out;
    Reader r(response);
    r.i32();  // throttle
    r.i16();
    r.i32();
    EXPECT_EQ(r.array(), 1);
    r.string();
    EXPECT_EQ(r.array(), 1);
    r.i32();
    out.code = static_cast<Code>(r.i16());
    out.high_watermark = r.i64();
    r.i64();
    r.i64();
    r.array();
    r.i32();
    std::string_view set = r.bytes();
    std::vector<RecordBatch> batches;
    BatchError error;
    EXPECT_TRUE(decode_batches(set, 1 << 24, batches, error)) << error.message;
    for (const auto& b : batches) {
      for (const auto& record : b.records) {
        out.records.emplace_back(b.base_offset + record.offset_delta,
                                 std::string(record.value.value_or("")));
      }
    }
    return out;
  }
  void create_topic(std::string_view name, std::int32_t partitions) {
    std::string body;
    Writer w(body);
    w.array(1);
    w.string(name);
    w.i32(partitions);
    w.i16(1);
    w.array(0);
    w.array(0);
    w.i32(5000);
    w.boolean(false);
    auto response = call(frame(ApiKey::kCreateTopics, 4, body));
    ASSERT_TRUE(response);
    Reader r(*response);
    r.i32();
    ASSERT_EQ(r.array(), 1);
    r.string();
    ASSERT_EQ(static_cast<Code>(r.i16()), Code::kNone);
  }

  std::filesystem::path dir_;
  SteadyClock clock_;
  node::NodeConfig config_;
  std::unique_ptr<node::Node> node_;
  std::uint16_t port_ = 0;
};

TEST_F(KafkaTest, ApiVersionsListsWhatIsTakenAndAnsweresANewerVersionWithTheFallback) {
  auto response = call(frame(ApiKey::kApiVersions, 2, ""));
  ASSERT_TRUE(response);
  Reader r(*response);
  EXPECT_EQ(static_cast<Code>(r.i16()), Code::kNone);
  std::map<std::int16_t, std::pair<std::int16_t, std::int16_t>> apis;
  for (std::int32_t n = r.array(); n > 0; --n) {
    const std::int16_t key = r.i16();
    const std::int16_t min = r.i16();
    apis[key] = {min, r.i16()};
  }
  EXPECT_EQ(apis[0], (std::pair<std::int16_t, std::int16_t>{3, 8}));   // Produce
  EXPECT_EQ(apis[22], (std::pair<std::int16_t, std::int16_t>{0, 1}));  // InitProducerId

  // v3 is flexible (a tagged header): the answer is the v0 form with UNSUPPORTED_VERSION.
  response = call(frame(ApiKey::kApiVersions, 3, std::string("\x00\x00\x00", 3)));
  ASSERT_TRUE(response);
  Reader v3(*response);
  EXPECT_EQ(static_cast<Code>(v3.i16()), Code::kUnsupportedVersion);
  EXPECT_EQ(static_cast<std::size_t>(v3.array()), apis.size());
}

TEST_F(KafkaTest, MalformedFramesCloseTheConnectionAndTheNodeGoesOn) {
  for (const std::string& bad : {std::string("\x00\x00\x00\x02\x00\x00", 6),  // under a header
                                 std::string("\x7f\xff\xff\xff", 4),          // over the limit
                                 frame(ApiKey::kProduce, 99, ""),             // no such version
                                 frame(static_cast<ApiKey>(999), 0, ""),      // no such API
                                 frame(ApiKey::kMetadata, 1,
                                       "\x00\x00\x00\x09"
                                       "ab"),  // short
                                 frame(ApiKey::kFetch, 11, "\x01")}) {
    const int fd = connect_to(port_);
    ASSERT_TRUE(send_all(fd, bad));
    EXPECT_TRUE(closed(fd)) << ::testing::PrintToString(bad);
    ::close(fd);
  }
  EXPECT_TRUE(call(frame(ApiKey::kApiVersions, 0, "")));
}

TEST_F(KafkaTest, ProduceErrorsHaveTheirKafkaCodes) {
  create_topic("orders", 2);
  EXPECT_EQ(produce("orders", 2, records({"x"})).first, Code::kUnknownTopicOrPartition);
  EXPECT_EQ(produce("nope", 0, records({"x"})).first, Code::kUnknownTopicOrPartition);
  std::string corrupt = records({"x", "y"});
  corrupt.back() ^= 1;
  EXPECT_EQ(produce("orders", 0, corrupt).first, Code::kCorruptMessage);
  const std::string big(70 * 1024, 'b');
  EXPECT_EQ(produce("orders", 0, records({big})).first, Code::kMessageTooLarge);
  // None of those wrote anything: the first good batch is offset 0.
  EXPECT_EQ(produce("orders", 0, records({"a", "b"})), (std::pair{Code::kNone, std::int64_t{0}}));
  EXPECT_EQ(produce("orders", 0, records({"c"})), (std::pair{Code::kNone, std::int64_t{2}}));
  auto fetched = parse_fetch(*call(frame(ApiKey::kFetch, 11, fetch_body("orders", 0, 0))));
  EXPECT_EQ(fetched.high_watermark, 3);
  ASSERT_EQ(fetched.records.size(), 3u);
  EXPECT_EQ(fetched.records[2], (std::pair<std::int64_t, std::string>{2, "c"}));
  EXPECT_EQ(parse_fetch(*call(frame(ApiKey::kFetch, 11, fetch_body("orders", 0, 4)))).code,
            Code::kOffsetOutOfRange);
  EXPECT_TRUE(
      parse_fetch(*call(frame(ApiKey::kFetch, 11, fetch_body("orders", 0, 3)))).records.empty());
}

TEST_F(KafkaTest, AnIdempotentProducersRetryIsAppendedOnceAndGapsAreRefused) {
  create_topic("idem", 1);
  std::string body;
  Writer(body).nullable_string(std::nullopt);
  Writer(body).i32(60000);
  auto response = call(frame(ApiKey::kInitProducerId, 1, body));
  ASSERT_TRUE(response);
  Reader r(*response);
  r.i32();
  ASSERT_EQ(static_cast<Code>(r.i16()), Code::kNone);
  const std::int64_t id = r.i64();
  EXPECT_GE(id, 0);
  auto again = call(frame(ApiKey::kInitProducerId, 1, body));
  Reader r2(*again);
  r2.i32();
  r2.i16();
  EXPECT_NE(r2.i64(), id) << "each producer gets its own id";

  const BatchProducer first{id, 0, 0};
  EXPECT_EQ(produce("idem", 0, records({"a", "b"}, first)),
            (std::pair{Code::kNone, std::int64_t{0}}));
  // The same batch again (a retry after a lost answer): the first result, nothing appended.
  EXPECT_EQ(produce("idem", 0, records({"a", "b"}, first)),
            (std::pair{Code::kNone, std::int64_t{0}}));
  EXPECT_EQ(produce("idem", 0, records({"c"}, {id, 0, 2})),
            (std::pair{Code::kNone, std::int64_t{2}}));
  EXPECT_EQ(produce("idem", 0, records({"e"}, {id, 0, 4})).first,
            Code::kOutOfOrderSequenceNumber);  // sequence 3 is missing
  EXPECT_EQ(produce("idem", 0, records({"x"}, {id, 1, 0})).first, Code::kNone);  // a new epoch
  EXPECT_EQ(produce("idem", 0, records({"y"}, {id, 0, 5})).first, Code::kInvalidProducerEpoch);
  auto fetched = parse_fetch(*call(frame(ApiKey::kFetch, 11, fetch_body("idem", 0, 0))));
  std::vector<std::string> values;
  for (const auto& [offset, value] : fetched.records) values.push_back(value);
  EXPECT_EQ(values, (std::vector<std::string>{"a", "b", "c", "x"}));

  // After a restart the sequences are gone, but a retry still finds its first append.
  restart();
  EXPECT_EQ(produce("idem", 0, records({"c"}, {id, 0, 2})),
            (std::pair{Code::kNone, std::int64_t{2}}));

  // Transactions are refused before anything is written.
  std::string transactional;
  Writer(transactional).nullable_string("tx-1");
  Writer(transactional).i32(60000);
  auto refusal = call(frame(ApiKey::kInitProducerId, 1, transactional));
  ASSERT_TRUE(refusal);
  Reader refused(*refusal);
  refused.i32();
  EXPECT_EQ(static_cast<Code>(refused.i16()), Code::kUnsupportedVersion);
}

TEST_F(KafkaTest, MetadataCreatesTopicsItIsAskedAboutAndRefusesBadNames) {
  std::string body;
  Writer w(body);
  w.array(2);
  w.string("fresh");
  w.string("bad name!");
  w.boolean(true);
  auto response = call(frame(ApiKey::kMetadata, 4, body));
  ASSERT_TRUE(response);
  Reader r(*response);
  r.i32();
  EXPECT_EQ(r.array(), 1);  // one broker
  r.i32();
  r.string();
  EXPECT_EQ(r.i32(), port_);
  r.nullable_string();
  r.nullable_string();
  r.i32();
  ASSERT_EQ(r.array(), 2);
  EXPECT_EQ(static_cast<Code>(r.i16()), Code::kNone);
  EXPECT_EQ(r.string(), "fresh");
  r.boolean();
  EXPECT_EQ(r.array(), 2);  // default_partitions
}

TEST_F(KafkaTest, ALongPollIsAnsweredWhenARecordArrives) {
  create_topic("waits", 1);
  const int fd = connect_to(port_);
  ASSERT_TRUE(send_all(fd, frame(ApiKey::kFetch, 11, fetch_body("waits", 0, 0, 30000))));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(produce("waits", 0, records({"late"})).first, Code::kNone);
  auto response = read_response(fd, 20000);  // well before the 30 s max wait
  ::close(fd);
  ASSERT_TRUE(response);
  auto fetched = parse_fetch(*response);
  ASSERT_EQ(fetched.records.size(), 1u);
  EXPECT_EQ(fetched.records[0].second, "late");
}

TEST_F(KafkaTest, PipelinedRequestsAreAnsweredInOrder) {
  create_topic("pipe", 1);
  const int fd = connect_to(port_);
  std::string burst;
  for (int i = 0; i < 50; ++i) {
    burst += frame(ApiKey::kProduce, 7, produce_body("pipe", 0, records({std::to_string(i)})), i);
  }
  ASSERT_TRUE(send_all(fd, burst));
  std::string in;
  for (int i = 0; i < 50; ++i) {
    // read_response drops the correlation id; read the raw frames here to check it.
    while (in.size() < 8 || in.size() < 4 + static_cast<std::size_t>(Reader(in).i32())) {
      char buffer[4096];
      pollfd p{fd, POLLIN, 0};
      ASSERT_GT(::poll(&p, 1, 10000), 0);
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      ASSERT_GT(n, 0);
      in.append(buffer, static_cast<std::size_t>(n));
    }
    Reader r(in);
    const auto size = static_cast<std::size_t>(r.i32());
    EXPECT_EQ(r.i32(), i);
    in.erase(0, 4 + size);
  }
  ::close(fd);
  auto fetched = parse_fetch(*call(frame(ApiKey::kFetch, 11, fetch_body("pipe", 0, 0))));
  ASSERT_EQ(fetched.records.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(fetched.records[i].second, std::to_string(i));
}

// ---- librdkafka ----

std::unique_ptr<RdKafka::Conf> conf(const std::map<std::string, std::string>& settings) {
  std::unique_ptr<RdKafka::Conf> c(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string error;
  for (const auto& [k, v] : settings) {
    EXPECT_EQ(c->set(k, v, error), RdKafka::Conf::CONF_OK) << k << ": " << error;
  }
  return c;
}

class Reports : public RdKafka::DeliveryReportCb {
 public:
  void dr_cb(RdKafka::Message& message) override {
    if (message.err() == RdKafka::ERR_NO_ERROR) {
      delivered[message.partition()].emplace_back(
          message.offset(),
          std::string(static_cast<const char*>(message.payload()), message.len()));
    } else {
      ++failed;
    }
  }
  std::map<std::int32_t, std::vector<std::pair<std::int64_t, std::string>>> delivered;
  int failed = 0;
};

TEST_F(KafkaTest, LibrdkafkaProducesWithAcksAllAndAGroupConsumesEverythingInOrder) {
  create_topic("events", 4);
  const std::string bootstrap = "127.0.0.1:" + std::to_string(port_);
  Reports reports;
  auto producer_conf = conf({{"bootstrap.servers", bootstrap},
                             {"acks", "all"},
                             {"enable.idempotence", "true"},
                             {"compression.codec", "lz4"},
                             {"linger.ms", "5"}});
  std::string error;
  ASSERT_EQ(producer_conf->set("dr_cb", &reports, error), RdKafka::Conf::CONF_OK);
  std::unique_ptr<RdKafka::Producer> producer(
      RdKafka::Producer::create(producer_conf.get(), error));
  ASSERT_TRUE(producer) << error;
  constexpr int kMessages = 2000;
  for (int i = 0; i < kMessages; ++i) {
    const std::string key = "key-" + std::to_string(i % 37);
    const std::string value = key + ":" + std::to_string(i);
    ASSERT_EQ(producer->produce("events", RdKafka::Topic::PARTITION_UA,
                                RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(value.data()),
                                value.size(), key.data(), key.size(), 0, nullptr),
              RdKafka::ERR_NO_ERROR);
    producer->poll(0);
  }
  ASSERT_EQ(producer->flush(30000), RdKafka::ERR_NO_ERROR);
  EXPECT_EQ(reports.failed, 0);
  std::size_t total = 0;
  for (auto& [partition, list] : reports.delivered) {
    std::sort(list.begin(), list.end());
    for (std::size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(list[i].first, static_cast<std::int64_t>(i)) << "partition " << partition;
    }
    total += list.size();
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kMessages));

  auto consume_all =
      [&](std::map<std::int32_t, std::vector<std::pair<std::int64_t, std::string>>>& got,
          std::size_t want) {
        auto consumer_conf = conf({{"bootstrap.servers", bootstrap},
                                   {"group.id", "readers"},
                                   {"auto.offset.reset", "earliest"},
                                   {"enable.auto.commit", "false"}});
        std::unique_ptr<RdKafka::KafkaConsumer> consumer(
            RdKafka::KafkaConsumer::create(consumer_conf.get(), error));
        ASSERT_TRUE(consumer) << error;
        ASSERT_EQ(consumer->subscribe({"events"}), RdKafka::ERR_NO_ERROR);
        std::size_t count = 0;
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while (count < want && std::chrono::steady_clock::now() < deadline) {
          std::unique_ptr<RdKafka::Message> m(consumer->consume(1000));
          if (m->err() != RdKafka::ERR_NO_ERROR) continue;
          got[m->partition()].emplace_back(
              m->offset(), std::string(static_cast<const char*>(m->payload()), m->len()));
          ++count;
        }
        EXPECT_EQ(consumer->commitSync(), RdKafka::ERR_NO_ERROR);
        consumer->close();
      };
  std::map<std::int32_t, std::vector<std::pair<std::int64_t, std::string>>> got;
  consume_all(got, kMessages);
  EXPECT_EQ(got, reports.delivered);  // every partition in offset order, values as produced

  // The committed offsets survive a restart: a new consumer of the group gets only new records.
  restart();
  producer.reset();
  Reports more;
  producer_conf = conf({{"bootstrap.servers", bootstrap}, {"acks", "all"}});
  ASSERT_EQ(producer_conf->set("dr_cb", &more, error), RdKafka::Conf::CONF_OK);
  producer.reset(RdKafka::Producer::create(producer_conf.get(), error));
  const std::string after = "after-restart";
  ASSERT_EQ(
      producer->produce("events", 1, RdKafka::Producer::RK_MSG_COPY,
                        const_cast<char*>(after.data()), after.size(), nullptr, 0, 0, nullptr),
      RdKafka::ERR_NO_ERROR);
  ASSERT_EQ(producer->flush(30000), RdKafka::ERR_NO_ERROR);
  std::map<std::int32_t, std::vector<std::pair<std::int64_t, std::string>>> second;
  consume_all(second, 1);
  ASSERT_EQ(second[1].size(), 1u);
  EXPECT_EQ(second[1][0].second, after);
  EXPECT_EQ(second[1][0].first, static_cast<std::int64_t>(reports.delivered[1].size()));
}

}  // namespace
}  // namespace keel::kafka
