#include "orders.h"

#include <nlohmann/json.hpp>

namespace orders {

using keel::Error;
using keel::cqrs::CommandResult;
using keel::cqrs::Params;
using keel::cqrs::reject;
using keel::cqrs::Transaction;
using keel::eventlog::AggregateType;
using keel::eventlog::EventData;
using keel::eventlog::RecordedEvent;
using Json = nlohmann::json;

namespace {

void apply_product(Product& product, const RecordedEvent& event) {
  Json data = Json::parse(event.data, nullptr, false);
  if (data.is_discarded()) return;
  const std::int64_t quantity = data.value("quantity", std::int64_t{0});
  const std::string order_id = data.value("order_id", "");
  if (event.type == "StockAdded") product.on_hand += quantity;
  if (event.type == "StockReserved") {
    product.reserved += quantity;
    product.reserved_for[order_id] += quantity;
  }
  if (event.type == "StockReleased") {
    product.reserved -= quantity;
    if ((product.reserved_for[order_id] -= quantity) <= 0) product.reserved_for.erase(order_id);
  }
}

void apply_order(Order& order, const RecordedEvent& event) {
  Json data = Json::parse(event.data, nullptr, false);
  if (data.is_discarded()) return;
  if (event.type == "OrderPlaced") {
    order.placed = true;
    for (const auto& line : data["lines"]) {
      order.lines.push_back({line.value("sku", ""), line.value("quantity", std::int64_t{0}),
                             line.value("price_cents", std::int64_t{0})});
    }
  }
  if (event.type == "OrderCancelled") order.cancelled = true;
}

}  // namespace

// A product's stream is the hot spot: every order of that product writes it. An attempt is lost
// only when another writer committed meanwhile, so with many concurrent orders a command may
// lose many times and still be making progress; give up only well past that (a slow machine,
// such as a sanitizer build, loses more rounds than a fast one).
Shop::Shop(keel::eventlog::EventStore& store)
    : products_(store, AggregateType<Product>{.category = "product", .apply = apply_product}, 100),
      orders_(store, AggregateType<Order>{.category = "order", .apply = apply_order}, 20) {}

Shop::Shop(keel::eventlog::AggregateStore& store)
    : products_(store, AggregateType<Product>{.category = "product", .apply = apply_product}, 100),
      orders_(store, AggregateType<Order>{.category = "order", .apply = apply_order}, 20) {}

EventData Shop::event(std::string type, std::string json) {
  return {keel::Uuid::random_v4(), std::move(type), std::move(json), ""};
}

Result<bool> Shop::release(const std::string& sku, const std::string& order_id) {
  bool releasing = false;  // what the last (successful) decision was
  auto released =
      products_.execute(sku, [&](const Product& product) -> Result<std::vector<EventData>> {
        auto held = product.reserved_for.find(order_id);
        releasing = held != product.reserved_for.end();
        if (!releasing) return std::vector<EventData>{};
        return std::vector<EventData>{
            event("StockReleased",
                  Json{{"sku", sku}, {"order_id", order_id}, {"quantity", held->second}}.dump())};
      });
  if (!released) return released.error();
  return releasing;
}

Result<CommandResult> Shop::add_stock(const AddStock& command) {
  if (command.sku.empty()) return reject("add_stock: sku is empty");
  if (command.quantity <= 0)
    return reject("add_stock " + command.sku + ": quantity must be positive");
  keel::cqrs::CommandHandler<Product, AddStock> handler(
      products_, [](const AddStock& c) { return c.sku; },
      [&](const Product&, const AddStock& c) -> Result<std::vector<EventData>> {
        return std::vector<EventData>{
            event("StockAdded", Json{{"sku", c.sku}, {"quantity", c.quantity}}.dump())};
      });
  return handler.handle(command);
}

Result<CommandResult> Shop::place_order(const PlaceOrder& command) {
  if (command.order_id.empty()) return reject("place_order: order_id is empty");
  if (command.customer.empty()) return reject("order " + command.order_id + ": customer is empty");
  if (command.lines.empty()) return reject("order " + command.order_id + ": no lines");
  for (const auto& line : command.lines) {
    if (line.sku.empty() || line.quantity <= 0 || line.price_cents < 0)
      return reject("order " + command.order_id +
                    ": a line needs a sku, a positive quantity and a price");
  }
  if (auto existing = orders_.load(command.order_id); !existing) {
    return existing.error();
  } else if (existing->state.placed) {
    return reject("order " + command.order_id + " was placed already");
  }
  struct Reserve {
    std::string sku, order_id;
    std::int64_t quantity;
  };
  keel::cqrs::CommandHandler<Product, Reserve> reserve(
      products_, [](const Reserve& r) { return r.sku; },
      [&](const Product& product, const Reserve& r) -> Result<std::vector<EventData>> {
        if (product.available() < r.quantity) {
          return reject("order " + r.order_id + ": " + r.sku + " has " +
                        std::to_string(product.available()) + " available, not " +
                        std::to_string(r.quantity));
        }
        return std::vector<EventData>{
            event("StockReserved",
                  Json{{"sku", r.sku}, {"order_id", r.order_id}, {"quantity", r.quantity}}.dump())};
      });
  std::vector<Reserve> done;
  // Undoes the reservations made so far; what cannot be undone is named in the error, and a
  // later cancel_order of this order releases it.
  auto release_done = [&](const Error& why) -> Error {
    std::string stuck;
    for (const auto& r : done) {
      if (auto ok = release(r.sku, r.order_id); !ok)
        stuck += " " + r.sku + " (" + ok.error().message() + ")";
    }
    if (stuck.empty()) return why;
    return Error(why.code(),
                 why.message() + "; still reserved, cancel the order to release:" + stuck);
  };
  for (const auto& line : command.lines) {
    Reserve r{line.sku, command.order_id, line.quantity};
    if (auto reserved = reserve.handle(r); !reserved) return release_done(reserved.error());
    done.push_back(r);
  }
  Json lines = Json::array();
  std::int64_t total = 0;
  for (const auto& line : command.lines) {
    lines.push_back(
        {{"sku", line.sku}, {"quantity", line.quantity}, {"price_cents", line.price_cents}});
    total += line.quantity * line.price_cents;
  }
  keel::cqrs::CommandHandler<Order, PlaceOrder> place(
      orders_, [](const PlaceOrder& c) { return c.order_id; },
      [&](const Order& order, const PlaceOrder& c) -> Result<std::vector<EventData>> {
        if (order.placed) return reject("order " + c.order_id + " was placed already");
        return std::vector<EventData>{event("OrderPlaced", Json{{"order_id", c.order_id},
                                                                {"customer", c.customer},
                                                                {"lines", lines},
                                                                {"total_cents", total}}
                                                               .dump())};
      });
  auto placed = place.handle(command);
  if (!placed) return release_done(placed.error());
  return placed;
}

Result<CommandResult> Shop::cancel_order(const CancelOrder& command) {
  std::vector<Line> lines;  // the order's, as the command saw it (the last try's, after a conflict)
  keel::cqrs::CommandHandler<Order, CancelOrder> cancel(
      orders_, [](const CancelOrder& c) { return c.order_id; },
      [&](const Order& current, const CancelOrder& c) -> Result<std::vector<EventData>> {
        lines = current.lines;
        if (!current.placed) return reject("order " + c.order_id + " does not exist");
        if (current.cancelled) return std::vector<EventData>{};  // a retry: release what is left
        return std::vector<EventData>{
            event("OrderCancelled", Json{{"order_id", c.order_id}, {"reason", c.reason}}.dump())};
      });
  auto cancelled = cancel.handle(command);
  if (!cancelled) return cancelled;
  // Give the stock back, each reservation once: a cancel that failed half-way can be retried.
  std::size_t released = 0;
  for (const auto& line : lines) {
    auto ok = release(line.sku, command.order_id);
    if (!ok) return ok.error();
    released += *ok;
  }
  if (cancelled->events == 0 && released == 0)
    return reject("order " + command.order_id + " is cancelled already");
  return cancelled;
}

// ---- the projection ----

namespace {

Status apply_event(const RecordedEvent& event, Transaction& tx) {
  Json data = Json::parse(event.data, nullptr, false);
  if (data.is_discarded()) {
    return Error(keel::cqrs::errc::invalid_argument,
                 "data is not JSON: " + event.data.substr(0, 80));
  }
  if (event.type == "StockAdded" || event.type == "StockReserved" ||
      event.type == "StockReleased") {
    const std::int64_t quantity = data.at("quantity").get<std::int64_t>();
    const std::int64_t on_hand = event.type == "StockAdded" ? quantity : 0;
    const std::int64_t reserved = event.type == "StockReserved"   ? quantity
                                  : event.type == "StockReleased" ? -quantity
                                                                  : 0;
    return tx.exec(
        "INSERT INTO inventory (sku, on_hand, reserved) VALUES ($1, $2, $3) "
        "ON CONFLICT (sku) DO UPDATE SET on_hand = inventory.on_hand + excluded.on_hand, "
        "reserved = inventory.reserved + excluded.reserved",
        {data.at("sku").get<std::string>(), on_hand, reserved});
  }
  if (event.type == "OrderPlaced") {
    const std::string id = data.at("order_id").get<std::string>();
    const std::string customer = data.at("customer").get<std::string>();
    const std::int64_t total = data.at("total_cents").get<std::int64_t>();
    if (auto ok = tx.exec(
            "INSERT INTO orders (id, customer, status, total_cents) VALUES ($1, $2, 'placed', $3)",
            {id, customer, total});
        !ok) {
      return ok;
    }
    std::int64_t number = 0;
    for (const auto& line : data.at("lines")) {
      if (auto ok = tx.exec("INSERT INTO order_lines (order_id, line, sku, quantity, price_cents) "
                            "VALUES ($1, $2, $3, $4, $5)",
                            {id, number++, line.at("sku").get<std::string>(),
                             line.at("quantity").get<std::int64_t>(),
                             line.at("price_cents").get<std::int64_t>()});
          !ok) {
        return ok;
      }
    }
    return tx.exec(
        "INSERT INTO customers (customer, orders, spent_cents) VALUES ($1, 1, $2) "
        "ON CONFLICT (customer) DO UPDATE SET orders = customers.orders + 1, "
        "spent_cents = customers.spent_cents + excluded.spent_cents",
        {customer, total});
  }
  if (event.type == "OrderCancelled") {
    const std::string id = data.at("order_id").get<std::string>();
    if (auto ok = tx.exec("UPDATE customers SET orders = orders - 1, spent_cents = spent_cents - "
                          "(SELECT total_cents FROM orders WHERE id = $1) "
                          "WHERE customer = (SELECT customer FROM orders WHERE id = $1)",
                          {id});
        !ok) {
      return ok;
    }
    return tx.exec("UPDATE orders SET status = 'cancelled' WHERE id = $1", {id});
  }
  return {};
}

}  // namespace

keel::cqrs::Projection projection(keel::cqrs::OnError on_error) {
  return {
      .name = "orders",
      .filter = {.categories = {"order", "product"}},
      .setup = [](Transaction& tx) -> Status {
        for (const char* sql :
             {"CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, "
              "status TEXT NOT NULL, total_cents BIGINT NOT NULL)",
              "CREATE TABLE IF NOT EXISTS order_lines (order_id TEXT NOT NULL, line BIGINT NOT "
              "NULL, "
              "sku TEXT NOT NULL, quantity BIGINT NOT NULL, price_cents BIGINT NOT NULL, "
              "PRIMARY KEY (order_id, line))",
              "CREATE TABLE IF NOT EXISTS inventory (sku TEXT PRIMARY KEY, on_hand BIGINT NOT "
              "NULL, "
              "reserved BIGINT NOT NULL)",
              "CREATE TABLE IF NOT EXISTS customers (customer TEXT PRIMARY KEY, orders BIGINT NOT "
              "NULL, "
              "spent_cents BIGINT NOT NULL)"}) {
          if (auto ok = tx.exec(sql); !ok) return ok;
        }
        return {};
      },
      .reset = [](Transaction& tx) -> Status {
        for (const char* sql : {"DELETE FROM orders", "DELETE FROM order_lines",
                                "DELETE FROM inventory", "DELETE FROM customers"}) {
          if (auto ok = tx.exec(sql); !ok) return ok;
        }
        return {};
      },
      .apply = apply_event,
      .on_error = on_error,
  };
}

Result<std::optional<OrderView>> find_order(keel::cqrs::ReadModel& model, const std::string& id) {
  auto rows =
      model.query("SELECT id, customer, status, total_cents FROM orders WHERE id = $1", {id});
  if (!rows) return rows.error();
  if (rows->empty()) return std::optional<OrderView>();
  const auto& row = rows->front();
  return std::optional<OrderView>(
      OrderView{keel::cqrs::to_string(row[0]), keel::cqrs::to_string(row[1]),
                keel::cqrs::to_string(row[2]), keel::cqrs::as_int(row[3])});
}

Result<std::vector<std::tuple<std::string, std::int64_t, std::int64_t>>> inventory(
    keel::cqrs::ReadModel& model) {
  auto rows = model.query("SELECT sku, on_hand, reserved FROM inventory ORDER BY sku");
  if (!rows) return rows.error();
  std::vector<std::tuple<std::string, std::int64_t, std::int64_t>> out;
  for (const auto& row : *rows)
    out.emplace_back(keel::cqrs::to_string(row[0]), keel::cqrs::as_int(row[1]),
                     keel::cqrs::as_int(row[2]));
  return out;
}

keel::node::ProjectionReport report(const keel::cqrs::ProjectionRunner& runner,
                                    keel::cqrs::ReadModel& model) {
  const keel::cqrs::Progress progress = runner.progress();
  keel::node::ProjectionReport out{.name = runner.projection().name,
                                   .position = progress.position,
                                   .applied = progress.applied,
                                   .skipped = progress.skipped,
                                   .parked = progress.parked,
                                   .live = progress.live,
                                   .paused = progress.paused,
                                   .error = progress.error ? progress.error->to_string() : ""};
  auto rows = model.query(
      "SELECT status, COUNT(*), SUM(total_cents) FROM orders GROUP BY status ORDER BY status");
  if (rows) {
    nlohmann::json state = nlohmann::json::object();
    for (const auto& row : *rows) {
      state[keel::cqrs::to_string(row[0])] = {{"orders", keel::cqrs::as_int(row[1])},
                                              {"total_cents", keel::cqrs::as_int(row[2])}};
    }
    out.state = state.dump();
  }
  return out;
}

Result<std::vector<std::string>> dump(keel::cqrs::ReadModel& model) {
  std::vector<std::string> out;
  for (const char* sql :
       {"SELECT 'orders', id, customer, status, total_cents FROM orders ORDER BY id",
        "SELECT 'order_lines', order_id, line, sku, quantity, price_cents FROM order_lines ORDER "
        "BY order_id, line",
        "SELECT 'inventory', sku, on_hand, reserved FROM inventory ORDER BY sku",
        "SELECT 'customers', customer, orders, spent_cents FROM customers ORDER BY customer"}) {
    auto rows = model.query(sql);
    if (!rows) return rows.error();
    for (const auto& row : *rows) {
      std::string line;
      for (const auto& value : row) line += keel::cqrs::to_string(value) + "|";
      out.push_back(line);
    }
  }
  return out;
}

}  // namespace orders
