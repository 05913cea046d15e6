// The orders example in remote mode: the command side and the read side of a CQRS service in a
// process of its own, against a `keel node` (started separately). Commands go to the node's API
// through keel::RemoteStore; the projection follows the node's events into a SQLite file here.
//
//   keel node --data-dir /tmp/orders-node --listen 127.0.0.1:2113 &
//   build/examples/orders/orders_remote http://127.0.0.1:2113 /tmp/orders-read.db
#include <cstdio>
#include <string>

#include "keel/cqrs/sqlite_read_model.h"
#include "keel/node/remote_store.h"
#include "orders.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s NODE_URL READ_MODEL.db\n", argv[0]);
    return 2;
  }
  keel::SteadyClock clock;
  auto node = keel::RemoteStore::open({.url = argv[1]}, clock);
  auto model = keel::cqrs::SqliteReadModel::open(argv[2]);
  if (!node || !model) {
    std::fprintf(stderr, "%s\n", (!node ? node.error() : model.error()).to_string().c_str());
    return 1;
  }
  // The read side: the same projection as embedded, on the node's log. A node keeps no $
  // streams for its clients, so a failing event is skipped (kSkip), not parked.
  auto runner = keel::cqrs::ProjectionRunner::open(
      **node, **model, orders::projection(keel::cqrs::OnError::kSkip), clock);
  if (!runner) {
    std::fprintf(stderr, "%s\n", runner.error().to_string().c_str());
    return 1;
  }
  (*runner)->start();

  // The command side: the same Shop, appending through the node (409s retried as conflicts).
  orders::Shop shop(**node);
  const std::string id = "R-" + std::to_string(clock.unix_now_ns() / 1000000);
  auto stocked = shop.add_stock({"tea", 5});
  auto placed = stocked ? shop.place_order({id, "ada", {{"tea", 2, 450}}})
                        : keel::Result<keel::cqrs::CommandResult>(stocked.error());
  if (!placed) {
    std::fprintf(stderr, "place_order %s: %s\n", id.c_str(), placed.error().to_string().c_str());
    return 1;
  }
  // Read-your-writes over the network: the runner is woken by the node's commit feed.
  if (!(*runner)->wait_for(placed->position, std::chrono::seconds(5))) {
    std::fprintf(stderr, "the read model did not catch up with position %llu\n",
                 static_cast<unsigned long long>(placed->position));
    return 1;
  }
  auto view = orders::find_order(**model, id);
  std::printf("order %s at position %llu: %s, %.2f\n", id.c_str(),
              static_cast<unsigned long long>(placed->position),
              view && *view ? (*view)->status.c_str() : "missing",
              view && *view ? static_cast<double>((*view)->total_cents) / 100 : 0.0);
  if (auto stock = orders::inventory(**model)) {
    for (const auto& [sku, on_hand, reserved] : *stock)
      std::printf("  %-6s on hand %3lld  reserved %3lld\n", sku.c_str(),
                  static_cast<long long>(on_hand), static_cast<long long>(reserved));
  }
  (*runner)->stop();
  return 0;
}
