#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "keel/cli/demo.h"
#include "keel/core/random.h"
#include "keel/eventlog/aggregate.h"

namespace keel::cli {
namespace {

using namespace keel::eventlog;
using keel::eventlog::errc;
using nlohmann::json;

struct Cart {
  std::map<std::string, int> items;   // sku -> quantity
  std::map<std::string, int> prices;  // sku -> cents
  bool checked_out = false;
  int total_cents() const {
    int total = 0;
    for (const auto& [sku, quantity] : items) total += quantity * prices.at(sku);
    return total;
  }
};

void apply(Cart& cart, const RecordedEvent& event) {
  json data = json::parse(event.data, nullptr, false);
  if (event.type == "ItemAdded") {
    cart.items[data["sku"]] += data["quantity"].get<int>();
    cart.prices[data["sku"]] = data["price_cents"].get<int>();
  } else if (event.type == "ItemRemoved") {
    std::string sku = data["sku"];
    if ((cart.items[sku] -= data["quantity"].get<int>()) <= 0) cart.items.erase(sku);
  } else if (event.type == "CheckedOut") {
    cart.checked_out = true;
  }
}

class CartCommands {
 public:
  CartCommands(AggregateRepository<Cart>& carts, std::uint64_t seed)
      : carts_(carts), random_(seed) {}

  void add(const std::string& cart_id, const std::string& sku, int quantity, int price_cents) {
    run("add " + std::to_string(quantity) + " x " + sku, cart_id,
        [&](const Cart& cart) -> Result<std::vector<EventData>> {
          if (cart.checked_out)
            return Error(errc::invalid_argument, "cart " + cart_id + " is checked out");
          return events("ItemAdded",
                        {{"sku", sku}, {"quantity", quantity}, {"price_cents", price_cents}});
        });
  }
  void remove(const std::string& cart_id, const std::string& sku, int quantity) {
    run("remove " + std::to_string(quantity) + " x " + sku, cart_id,
        [&](const Cart& cart) -> Result<std::vector<EventData>> {
          auto it = cart.items.find(sku);
          if (it == cart.items.end())
            return Error(errc::invalid_argument, "cart " + cart_id + " has no " + sku);
          if (cart.checked_out)
            return Error(errc::invalid_argument, "cart " + cart_id + " is checked out");
          return events("ItemRemoved",
                        {{"sku", sku}, {"quantity", std::min(quantity, it->second)}});
        });
  }
  void checkout(const std::string& cart_id) {
    run("checkout", cart_id, [&](const Cart& cart) -> Result<std::vector<EventData>> {
      if (cart.items.empty()) return Error(errc::invalid_argument, "cart " + cart_id + " is empty");
      if (cart.checked_out)
        return Error(errc::invalid_argument, "cart " + cart_id + " is checked out already");
      return events("CheckedOut", {{"total_cents", cart.total_cents()}});
    });
  }

 private:
  Result<std::vector<EventData>> events(const char* type, json data) {
    std::lock_guard lock(mutex_);
    return std::vector<EventData>{{Uuid::random_v4(random_), type, data.dump(), ""}};
  }
  void run(const std::string& label, const std::string& cart_id,
           const AggregateRepository<Cart>::Decide& decide) {
    auto result = carts_.execute(cart_id, decide);
    std::lock_guard lock(mutex_);
    if (result) {
      std::printf("  > %-28s appended as cart-%s version %llu\n", label.c_str(), cart_id.c_str(),
                  static_cast<unsigned long long>(result->last_version));
    } else {
      std::printf("  > %-28s refused: %s\n", label.c_str(), result.error().message().c_str());
    }
  }

  AggregateRepository<Cart>& carts_;
  std::mutex mutex_;
  Random random_;
};

void print_cart(const char* heading, const Cart& cart, std::uint64_t events) {
  std::printf("%s (from %llu events): ", heading, static_cast<unsigned long long>(events));
  for (const auto& [sku, quantity] : cart.items) std::printf("%d x %s, ", quantity, sku.c_str());
  std::printf("total %d.%02d, %s\n", cart.total_cents() / 100, cart.total_cents() % 100,
              cart.checked_out ? "checked out" : "open");
}

}  // namespace

int run_eventlog_demo(const DemoOptions& options) {
  std::filesystem::path directory =
      std::filesystem::temp_directory_path() / ("keel-demo-" + std::to_string(::getpid()));
  std::filesystem::remove_all(directory);
  SteadyClock clock;
  AggregateType<Cart> cart_type{.category = "cart", .initial = {}, .apply = apply};
  std::printf("\nEvent Sourcing: a shopping cart whose state is nothing but its events, in %s\n",
              directory.c_str());
  {
    auto store = EventStore::open(directory.string(), {}, clock);
    if (!store) {
      std::fprintf(stderr, "keel demo: %s\n", store.error().to_string().c_str());
      return 1;
    }
    AggregateRepository<Cart> carts(**store, cart_type);
    CartCommands commands(carts, options.seed);
    commands.add("42", "coffee-beans", 2, 1450);
    commands.add("42", "grinder", 1, 8900);
    commands.remove("42", "coffee-beans", 1);
    commands.remove("42", "teapot", 1);
    commands.checkout("42");
    commands.add("42", "mug", 1, 1200);

    std::printf(
        "\n  Stream cart-42 as stored (every event durable before its command returned):\n");
    auto events = (*store)->read_stream("cart-42", 0, 100);
    for (const auto& event : *events) {
      std::printf("    v%llu  @%llu  %-12s %s\n", static_cast<unsigned long long>(event.version),
                  static_cast<unsigned long long>(event.position), event.type.c_str(),
                  event.data.c_str());
    }
    print_cart("\n  State before the restart", carts.load("42")->state, events->size());

    std::printf(
        "\n  Two clients add to cart-43 at the same moment (optimistic concurrency: the loser\n"
        "  of the race reloads the cart and decides again):\n");
    std::thread first([&] { commands.add("43", "kettle", 1, 3500); });
    std::thread second([&] { commands.add("43", "filters", 3, 450); });
    first.join();
    second.join();
    (void)(*store)->close();
  }
  std::printf("\n  Restart: the store is closed and opened again from disk.\n");
  auto store = EventStore::open(directory.string(), {}, clock);
  if (!store) {
    std::fprintf(stderr, "keel demo: %s\n", store.error().to_string().c_str());
    return 1;
  }
  AggregateRepository<Cart> carts(**store, cart_type);
  auto cart = carts.load("42");
  print_cart("  cart-42 rebuilt", cart->state, cart->events_replayed);
  auto other = carts.load("43");
  print_cart("  cart-43 rebuilt", other->state, other->events_replayed);
  (void)(*store)->close();
  std::filesystem::remove_all(directory);
  return 0;
}

}  // namespace keel::cli
