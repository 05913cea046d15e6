#include "keel/pubsub/log_source.h"

#include <algorithm>

#include "keel/pubsub/parking.h"

namespace keel::pubsub {

Result<LogPage> read_matching(EventStore& store, const Filter& filter, std::uint64_t from,
                              std::size_t max) {
  // Everything below `head` is in the indexes, so a short answer means the reader has looked
  // at every position below it.
  const std::uint64_t head = store.next_position();
  if (from >= head || max == 0) return LogPage{{}, from};
  max = std::min<std::size_t>(max, store.options().max_read_count);
  Result<std::vector<RecordedEvent>> read =
      filter.categories.size() == 1    ? store.read_category(filter.categories[0], from, max)
      : filter.event_types.size() == 1 ? store.read_event_type(filter.event_types[0], from, max)
                                       : store.read_all(from, max);
  if (!read) return read.error();
  LogPage page{std::move(*read), from};
  std::vector<RecordedEvent>& events = page.events;
  const bool short_page = events.size() < max;
  const std::uint64_t scanned = events.empty() ? from : events.back().position + 1;
  page.next = short_page ? std::max(head, scanned) : scanned;
  std::erase_if(events, [&](const RecordedEvent& event) { return !filter.matches(event); });
  return page;
}

Status EmbeddedLog::park(std::string_view stream, const RecordedEvent& event,
                         std::string_view reason) {
  return park_event(store_, stream, event, reason);
}

std::string EmbeddedLog::describe() const { return "the event store at " + store_.directory(); }

}  // namespace keel::pubsub
