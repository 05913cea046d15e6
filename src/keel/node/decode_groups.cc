// The consumer group routes' bodies: group settings as pubsub::GroupOptions has them, and the
// poll, ack and nack of members.
#include "keel/node/request.h"
#include "keel/node/text_codec.h"

namespace keel::node::detail {
namespace {

constexpr std::array<std::string_view, 13> kGroupFields{"categories",
                                                        "event_types",
                                                        "stream_prefixes",
                                                        "strategy",
                                                        "start",
                                                        "max_in_flight",
                                                        "ack_timeout_ms",
                                                        "max_deliveries",
                                                        "retry_backoff_ms",
                                                        "max_retry_backoff_ms",
                                                        "buffer_events",
                                                        "checkpoint_after_acks",
                                                        "checkpoint_interval_ms"};

Result<pubsub::Strategy> read_strategy(const Json* value) {
  if (value == nullptr || value->is_null()) return pubsub::Strategy::kRoundRobin;
  if (value->is_string()) {
    const auto& text = value->get_ref<const std::string&>();
    if (text == "round_robin") return pubsub::Strategy::kRoundRobin;
    if (text == "pinned") return pubsub::Strategy::kPinned;
    if (text == "dispatch_to_single") return pubsub::Strategy::kDispatchToSingle;
  }
  return invalid("strategy must be \"round_robin\", \"pinned\" or \"dispatch_to_single\", not " +
                 describe_json(*value));
}

// A setting in milliseconds into a Duration, when given.
Status read_ms(const Members& members, std::string_view name, std::uint64_t min, Duration& out) {
  auto ms = read_uint(members.get(name), name, min, kMaxGroupDurationMs);
  if (!ms) return ms.error();
  if (*ms) out = std::chrono::milliseconds(**ms);
  return {};
}

// A count setting into a uint32 field, when given.
Status read_count(const Members& members, std::string_view name, std::uint64_t max,
                  std::uint32_t& out) {
  auto count = read_uint(members.get(name), name, 1, max);
  if (!count) return count.error();
  if (*count) out = static_cast<std::uint32_t>(**count);
  return {};
}

Result<std::string> read_member(const Members& members) {
  auto member = read_string(members.get("member"), "member");
  if (!member) return member.error();
  if (!*member) return invalid("member is required: the name the member polls and acks under");
  if (auto ok = check_group_name(**member, "the member name"); !ok) return ok.error();
  return std::move(**member);
}

}  // namespace

Result<Command> decode_create_group(std::string group, const ApiRequest& request,
                                    const Query& query) {
  if (auto ok = query.expect({}); !ok) return ok.error();
  CreateGroupCommand command;
  pubsub::GroupOptions& options = command.options;
  options.name = std::move(group);
  // No body is an empty object: every setting at its default.
  if (request.body.empty()) return Command(std::move(command));
  auto body = json_body(request);
  if (!body) return body.error();
  if (body->is_object()) {
    for (const auto& [key, value] : body->get_ref<const Json::object_t&>()) {
      if (key == "stream") {
        return invalid(
            "unknown field \"stream\" in the group: a group reads $all through a filter; name "
            "the events with categories, event_types or stream_prefixes");
      }
    }
  }
  auto members = Members::read(*body, "the group", kGroupFields);
  if (!members) return members.error();

  auto categories = read_labels(members->get("categories"), "categories");
  if (!categories) return categories.error();
  auto types = read_labels(members->get("event_types"), "event_types");
  if (!types) return types.error();
  auto prefixes = read_labels(members->get("stream_prefixes"), "stream_prefixes");
  if (!prefixes) return prefixes.error();
  options.filter.categories = std::move(*categories);
  options.filter.event_types = std::move(*types);
  options.filter.stream_prefixes = std::move(*prefixes);

  auto strategy = read_strategy(members->get("strategy"));
  if (!strategy) return strategy.error();
  options.strategy = *strategy;
  auto start = read_start_from(members->get("start"), "start");
  if (!start) return start.error();
  if (*start) options.start = **start;

  const Members& m = *members;
  if (auto ok = read_count(m, "max_in_flight", kMaxGroupInFlight, options.max_in_flight); !ok) {
    return ok.error();
  }
  if (auto ok = read_count(m, "max_deliveries", kMaxGroupDeliveries, options.max_deliveries); !ok) {
    return ok.error();
  }
  if (auto ok = read_count(m, "buffer_events", kMaxGroupBufferEvents, options.buffer_events); !ok) {
    return ok.error();
  }
  if (auto ok = read_count(m, "checkpoint_after_acks", kMaxGroupCheckpointAfterAcks,
                           options.checkpoint_after_acks);
      !ok) {
    return ok.error();
  }
  if (auto ok = read_ms(m, "ack_timeout_ms", 1, options.ack_timeout); !ok) return ok.error();
  if (auto ok = read_ms(m, "retry_backoff_ms", 0, options.retry_backoff); !ok) return ok.error();
  if (auto ok = read_ms(m, "max_retry_backoff_ms", 0, options.max_retry_backoff); !ok) {
    return ok.error();
  }
  if (auto ok = read_ms(m, "checkpoint_interval_ms", 1, options.checkpoint_interval); !ok) {
    return ok.error();
  }
  return Command(std::move(command));
}

Result<Command> decode_poll(std::string group, const ApiRequest& request, const Query& query) {
  if (auto ok = query.expect({}); !ok) return ok.error();
  auto body = json_body(request);
  if (!body) return body.error();
  static constexpr std::array<std::string_view, 4> kFields{"member", "max", "wait_ms", "session"};
  auto members = Members::read(*body, "the poll", kFields);
  if (!members) return members.error();
  PollCommand command;
  command.group = std::move(group);
  auto member = read_member(*members);
  if (!member) return member.error();
  command.member = std::move(*member);
  auto max = read_uint(members->get("max"), "max", 1, kMaxPollMax);
  if (!max) return max.error();
  if (*max) command.max = static_cast<std::size_t>(**max);
  auto wait = read_uint(members->get("wait_ms"), "wait_ms", 0, kMaxWaitMs);
  if (!wait) return wait.error();
  if (*wait) command.wait = std::chrono::milliseconds(**wait);
  auto session = read_string(members->get("session"), "session");
  if (!session) return session.error();
  if (*session) {
    if ((*session)->empty() || (*session)->size() > 200)
      return invalid("session must be 1 to 200 bytes");
    command.session = std::move(**session);
  }
  return Command(std::move(command));
}

Result<Command> decode_settle(std::string group, bool ack, const ApiRequest& request,
                              const Query& query) {
  if (auto ok = query.expect({}); !ok) return ok.error();
  auto body = json_body(request);
  if (!body) return body.error();
  static constexpr std::array<std::string_view, 2> kAckFields{"member", "ids"};
  static constexpr std::array<std::string_view, 4> kNackFields{"member", "ids", "action", "reason"};
  auto members = ack ? Members::read(*body, "the ack", kAckFields)
                     : Members::read(*body, "the nack", kNackFields);
  if (!members) return members.error();
  auto member = read_member(*members);
  if (!member) return member.error();
  auto ids = read_ids(members->get("ids"), "ids");
  if (!ids) return ids.error();
  if (ack) return Command(AckCommand{std::move(group), std::move(*member), std::move(*ids)});

  NackCommand command{std::move(group), std::move(*member), std::move(*ids)};
  auto action = read_string(members->get("action"), "action");
  if (!action) return action.error();
  if (!*action) return invalid("action is required: \"retry\", \"park\" or \"skip\"");
  if (**action == "retry") {
    command.action = pubsub::NackAction::kRetry;
  } else if (**action == "park") {
    command.action = pubsub::NackAction::kPark;
  } else if (**action == "skip") {
    command.action = pubsub::NackAction::kSkip;
  } else {
    return invalid("action must be \"retry\", \"park\" or \"skip\", not " +
                   quote_for_message(**action));
  }
  auto reason = read_string(members->get("reason"), "reason");
  if (!reason) return reason.error();
  if (*reason) {
    if ((*reason)->size() > kMaxReasonBytes) {
      return invalid("reason is " + std::to_string((*reason)->size()) + " bytes; the limit is " +
                     std::to_string(kMaxReasonBytes));
    }
    command.reason = std::move(**reason);
  }
  return Command(std::move(command));
}

Result<Command> decode_list_parked(std::string group, const Query& query) {
  if (auto ok = query.expect({"from", "limit"}); !ok) return ok.error();
  ListParkedCommand command;
  command.group = std::move(group);
  if (const std::string* text = query.get("from")) {
    auto from = parse_decimal(*text, "?from");
    if (!from) return from.error();
    command.from = *from;
  }
  auto limit = read_limit(query);
  if (!limit) return limit.error();
  command.limit = *limit;
  return Command(std::move(command));
}

}  // namespace keel::node::detail
