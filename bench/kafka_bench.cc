// bench/kafka.sh's client: librdkafka's producer and consumer against any Kafka-protocol broker
// (keel node's Kafka listener here). Prints a line of what it measured and, last, one JSON
// object of figures.
//
//   kafka_bench produce --bootstrap 127.0.0.1:9092 --topic t --messages 1000000 --size 100
//                       --acks 1 [--linger MS] [--compression none]
//     messages/s and MB/s from the first produce() to the last delivery report, and the
//     latency of each message from produce() to its delivery report (p50, p99);
//   kafka_bench consume --bootstrap 127.0.0.1:9092 --topic t --messages 1000000
//     messages/s and MB/s reading every partition from the start (assigned, no group, so no
//     rebalance delay is counted).
#include <librdkafka/rdkafka.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"

namespace {

using keel::bench::now_ns;
using keel::bench::percentile;
using keel::bench::print_figures_line;

struct Options {
  std::string bootstrap;
  std::string topic;
  long messages = 1000000;
  int size = 100;
  std::string acks = "1";
  int linger_ms = -1;  // librdkafka's default
  std::string compression = "none";
};

rd_kafka_conf_t* base_conf(const Options& o) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  auto set = [&](const char* k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
      std::fprintf(stderr, "%s=%s: %s\n", k, v.c_str(), error);
      std::exit(2);
    }
  };
  set("bootstrap.servers", o.bootstrap);
  return conf;
}

struct ProduceState {
  std::vector<std::int64_t> sent_ns;
  std::vector<double> latency_ms;
  long delivered = 0;
  long failed = 0;
  std::int64_t last_ns = 0;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* s = static_cast<ProduceState*>(opaque);
  const auto index = reinterpret_cast<std::uintptr_t>(m->_private);
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (s->failed++ == 0) std::fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
    return;
  }
  const std::int64_t now = now_ns();
  s->latency_ms.push_back(static_cast<double>(now - s->sent_ns[index]) / 1e6);
  ++s->delivered;
  s->last_ns = now;
}

int produce(const Options& o) {
  ProduceState state;
  state.sent_ns.resize(static_cast<std::size_t>(o.messages));
  state.latency_ms.reserve(static_cast<std::size_t>(o.messages));
  rd_kafka_conf_t* conf = base_conf(o);
  char error[512];
  auto set = [&](const char* k, const std::string& v) {
    rd_kafka_conf_set(conf, k, v.c_str(), error, sizeof error);
  };
  set("acks", o.acks);
  set("enable.idempotence", "false");
  set("compression.codec", o.compression);
  set("queue.buffering.max.messages", "1000000");
  if (o.linger_ms >= 0) set("linger.ms", std::to_string(o.linger_ms));
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_opaque(conf, &state);
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
  if (producer == nullptr) {
    std::fprintf(stderr, "producer: %s\n", error);
    return 2;
  }
  rd_kafka_topic_t* topic = rd_kafka_topic_new(producer, o.topic.c_str(), nullptr);
  std::string payload(static_cast<std::size_t>(o.size), 'x');
  const std::int64_t start = now_ns();
  for (long i = 0; i < o.messages; ++i) {
    std::snprintf(payload.data(), payload.size(), "%ld", i);
    state.sent_ns[static_cast<std::size_t>(i)] = now_ns();
    while (rd_kafka_produce(topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, payload.data(),
                            payload.size(), nullptr, 0,
                            reinterpret_cast<void*>(static_cast<std::uintptr_t>(i))) != 0) {
      if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        std::fprintf(stderr, "produce: %s\n", rd_kafka_err2str(rd_kafka_last_error()));
        return 1;
      }
      rd_kafka_poll(producer, 1);
    }
    rd_kafka_poll(producer, 0);
  }
  rd_kafka_flush(producer, 120000);
  rd_kafka_topic_destroy(topic);
  rd_kafka_destroy(producer);
  const double seconds = static_cast<double>(state.last_ns - start) / 1e9;
  std::sort(state.latency_ms.begin(), state.latency_ms.end());
  const double rate = static_cast<double>(state.delivered) / seconds;
  std::printf(
      "produced %ld of %ld (%ld failed) %d B messages in %.2f s: %.0f msg/s, %.1f MB/s, "
      "p50 %.2f ms, p99 %.2f ms\n",
      state.delivered, o.messages, state.failed, o.size, seconds, rate, rate * o.size / 1e6,
      percentile(state.latency_ms, 0.50), percentile(state.latency_ms, 0.99));
  print_figures_line({{"messages_per_s", rate},
                      {"mb_per_s", rate * o.size / 1e6},
                      {"p50_ms", percentile(state.latency_ms, 0.50)},
                      {"p99_ms", percentile(state.latency_ms, 0.99)},
                      {"failed_messages", static_cast<double>(state.failed)}});
  return state.failed == 0 ? 0 : 1;
}

int consume(const Options& o) {
  rd_kafka_conf_t* conf = base_conf(o);
  char error[512];
  rd_kafka_conf_set(conf, "fetch.wait.max.ms", "100", error, sizeof error);
  rd_kafka_conf_set(conf, "group.id", "kafka_bench", error, sizeof error);  // never joined
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", error, sizeof error);
  rd_kafka_t* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
  if (consumer == nullptr) {
    std::fprintf(stderr, "consumer: %s\n", error);
    return 2;
  }
  rd_kafka_poll_set_consumer(consumer);
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_topic_t* handle = rd_kafka_topic_new(consumer, o.topic.c_str(), nullptr);
  if (rd_kafka_metadata(consumer, 0, handle, &metadata, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      metadata->topic_cnt != 1) {
    std::fprintf(stderr, "no metadata for %s\n", o.topic.c_str());
    return 2;
  }
  rd_kafka_topic_partition_list_t* partitions = rd_kafka_topic_partition_list_new(8);
  for (int p = 0; p < metadata->topics[0].partition_cnt; ++p) {
    rd_kafka_topic_partition_list_add(partitions, o.topic.c_str(), p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_metadata_destroy(metadata);
  rd_kafka_topic_destroy(handle);
  rd_kafka_assign(consumer, partitions);
  rd_kafka_topic_partition_list_destroy(partitions);
  long count = 0;
  std::uint64_t bytes = 0;
  std::int64_t start = 0;
  const std::int64_t give_up = now_ns() + 120'000'000'000;
  while (count < o.messages && now_ns() < give_up) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 1000);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (count == 0) start = now_ns();
      ++count;
      bytes += m->len;
    }
    rd_kafka_message_destroy(m);
  }
  const double seconds = static_cast<double>(now_ns() - start) / 1e9;
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);
  const double rate = static_cast<double>(count) / seconds;
  std::printf("consumed %ld of %ld messages in %.2f s: %.0f msg/s, %.1f MB/s\n", count, o.messages,
              seconds, rate, static_cast<double>(bytes) / seconds / 1e6);
  print_figures_line(
      {{"messages_per_s", rate}, {"mb_per_s", static_cast<double>(bytes) / seconds / 1e6}});
  return count == o.messages ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("librdkafka producer and consumer for bench/kafka.sh");
  Options o;
  auto common = [&o](CLI::App* c) {
    c->add_option("--bootstrap", o.bootstrap)->required();
    c->add_option("--topic", o.topic)->required();
    c->add_option("--messages", o.messages)->check(CLI::Range(1L, 100000000L));
  };
  auto* p = app.add_subcommand("produce", "Producer throughput and delivery latency");
  common(p);
  p->add_option("--size", o.size)->check(CLI::Range(16, 1 << 20));
  p->add_option("--acks", o.acks)->check(CLI::IsMember({"0", "1", "all"}));
  p->add_option("--linger", o.linger_ms, "linger.ms (default: librdkafka's)");
  p->add_option("--compression", o.compression);
  auto* c = app.add_subcommand("consume", "Consumer throughput from the start");
  common(c);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return p->parsed() ? produce(o) : consume(o);
}
