// An order and inventory domain on Keel's CQRS: commands on two aggregates (products and
// orders), their events, one projection into SQL tables, and the queries on them. Used by the
// CQRS tests, the benchmark and `keel demo`; read it as the example of how the parts fit.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "keel/cqrs/commands.h"
#include "keel/cqrs/projection_runner.h"
#include "keel/node/api.h"

namespace orders {

using keel::Result;
using keel::Status;

struct Line {
  std::string sku;
  std::int64_t quantity = 0;
  std::int64_t price_cents = 0;
};

// ---- commands ----
struct AddStock {
  std::string sku;
  std::int64_t quantity = 0;
};
struct PlaceOrder {
  std::string order_id;
  std::string customer;
  std::vector<Line> lines;
};
struct CancelOrder {
  std::string order_id;
  std::string reason;
};

// ---- aggregate states (rebuilt from events) ----
struct Product {
  std::int64_t on_hand = 0;
  std::int64_t reserved = 0;
  std::map<std::string, std::int64_t> reserved_for;  // order id -> quantity still reserved
  std::int64_t available() const { return on_hand - reserved; }
};
struct Order {
  bool placed = false;
  bool cancelled = false;
  std::vector<Line> lines;
};

// The command side: each method validates, decides and appends (retrying on conflicts).
// Placing an order reserves stock line by line and releases what it reserved if a later line
// cannot be had, so stock is never oversold however many clients order at once.
//
// On the embedded store, or on a `keel node` through keel::RemoteStore (an AggregateStore):
// the same commands, conflicts and retries either way.
class Shop {
 public:
  explicit Shop(keel::eventlog::EventStore& store);
  explicit Shop(keel::eventlog::AggregateStore& store);
  Result<keel::cqrs::CommandResult> add_stock(const AddStock& command);
  Result<keel::cqrs::CommandResult> place_order(const PlaceOrder& command);
  Result<keel::cqrs::CommandResult> cancel_order(const CancelOrder& command);

 private:
  keel::eventlog::AggregateRepository<Product> products_;
  keel::eventlog::AggregateRepository<Order> orders_;
  keel::eventlog::EventData event(std::string type, std::string json);
  // Gives back what `order_id` still holds of `sku`; nothing when it holds nothing (so a
  // retried cancel releases each reservation once). Whether anything was released.
  Result<bool> release(const std::string& sku, const std::string& order_id);
};

// The query side: the projection that keeps `orders`, `order_lines`, `inventory` and
// `customers` current, and reads of them.
keel::cqrs::Projection projection(keel::cqrs::OnError on_error = keel::cqrs::OnError::kStop);

struct OrderView {
  std::string id, customer, status;
  std::int64_t total_cents = 0;
};
Result<std::optional<OrderView>> find_order(keel::cqrs::ReadModel& model, const std::string& id);
// sku -> {on_hand, reserved}
Result<std::vector<std::tuple<std::string, std::int64_t, std::int64_t>>> inventory(
    keel::cqrs::ReadModel& model);
// What the projection process reports to its node (keel::ProjectionReporter): the runner's
// progress, and as state the orders by status with their totals.
keel::node::ProjectionReport report(const keel::cqrs::ProjectionRunner& runner,
                                    keel::cqrs::ReadModel& model);
// Every table of the read model as sorted text rows: two read models are equal when these are.
Result<std::vector<std::string>> dump(keel::cqrs::ReadModel& model);

}  // namespace orders
