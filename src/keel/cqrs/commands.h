// The command side of CQRS: a command names an aggregate and asks for a change; its handler
// decides, given the aggregate's current state, which events (if any) that change is. The
// aggregate helper loads the state, appends with the version it was built from and, when
// another writer got there first, loads and decides again (bounded).
//
//   CommandHandler<Order, PlaceOrder> place(orders, [](const PlaceOrder& c) { return c.order_id; },
//       [](const Order& order, const PlaceOrder& c) -> Result<std::vector<EventData>> {
//         if (order.placed) return reject("order " + c.order_id + " was placed already");
//         return std::vector<EventData>{order_placed(c)};
//       });
//   auto placed = place.handle(command);  // Error errc::rejected → tell the caller why
//   placed->position                      // for read-your-writes
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "keel/cqrs/errc.h"
#include "keel/eventlog/aggregate.h"

namespace keel::cqrs {

using eventlog::EventData;

// A command the aggregate refuses: a validation or business-rule error for the caller.
inline Error reject(std::string why) { return Error(errc::rejected, std::move(why)); }

struct CommandResult {
  std::string stream;
  std::uint64_t version = 0;   // the aggregate's version after the command
  std::uint64_t position = 0;  // the log position of its last event: wait for it to read it
  std::size_t events = 0;      // 0: the command changed nothing
};

template <typename State, typename Command>
class CommandHandler {
 public:
  using IdOf = std::function<std::string(const Command&)>;
  using Decide = std::function<Result<std::vector<EventData>>(const State&, const Command&)>;

  CommandHandler(eventlog::AggregateRepository<State>& aggregates, IdOf id_of, Decide decide)
      : aggregates_(aggregates), id_of_(std::move(id_of)), decide_(std::move(decide)) {}

  Result<CommandResult> handle(const Command& command) {
    const std::string id = id_of_(command);
    if (id.empty()) return reject("the command names no aggregate");
    std::size_t decided = 0;
    auto appended = aggregates_.execute(id, [&](const State& state) {
      auto events = decide_(state, command);
      if (events) decided = events->size();
      return events;
    });
    if (!appended) {
      if (appended.error().is(eventlog::errc::wrong_expected_version))
        return Error(errc::concurrency, appended.error().message());
      return appended.error();
    }
    return CommandResult{aggregates_.stream_of(id), appended->last_version, appended->last_position,
                         decided};
  }

 private:
  eventlog::AggregateRepository<State>& aggregates_;
  IdOf id_of_;
  Decide decide_;
};

}  // namespace keel::cqrs
