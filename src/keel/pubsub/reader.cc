#include "keel/pubsub/reader.h"

#include <algorithm>

#include "keel/pubsub/log_source.h"

namespace keel::pubsub {

namespace {
bool any_of(const std::vector<std::string>& list, auto&& match) {
  return list.empty() || std::any_of(list.begin(), list.end(), match);
}
std::string join(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& item : list) out += (out.empty() ? "" : "|") + item;
  return out;
}
}  // namespace

bool Filter::matches(const RecordedEvent& event) const {
  if (!include_system && !event.stream.empty() && event.stream[0] == '$') return false;
  const std::string_view category = eventlog::category_of(event.stream);
  return any_of(categories, [&](const std::string& c) { return c == category; }) &&
         any_of(event_types, [&](const std::string& t) { return t == event.type; }) &&
         any_of(stream_prefixes, [&](const std::string& p) { return event.stream.starts_with(p); });
}

std::string Filter::describe() const {
  std::string out;
  auto add = [&](const char* name, const std::vector<std::string>& list) {
    if (!list.empty()) out += (out.empty() ? "" : " ") + std::string(name) + "=" + join(list);
  };
  add("category", categories);
  add("type", event_types);
  add("stream_prefix", stream_prefixes);
  if (include_system) out += out.empty() ? "system" : " +system";
  return out.empty() ? "all" : out;
}

std::uint64_t StartFrom::resolve(const EventStore& store) const {
  switch (kind) {
    case Kind::kStart:
      return 0;
    case Kind::kEnd:
      return store.next_position();
    case Kind::kPosition:
      return position;
  }
  return 0;
}

Result<std::vector<RecordedEvent>> Reader::next(std::size_t max) {
  auto page = read_matching(store_, filter_, position_, max);
  if (!page) return page.error();
  position_ = page->next;
  return std::move(page->events);
}

}  // namespace keel::pubsub
