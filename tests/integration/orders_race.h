// The oversell race cqrs_test and cqrs_remote_test both run, embedded and against a node: four
// clients place 25 one-item orders each for 40 items of stock; each order is accepted or
// refused with errc::rejected, never anything else.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "orders.h"

namespace orders {

struct RaceResult {
  int accepted = 0;
  int refused = 0;
};

inline RaceResult race_for_scarce_stock(Shop& shop) {
  EXPECT_TRUE(shop.add_stock({"rare", 40}).ok());
  std::atomic<int> accepted{0}, refused{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto placed = shop.place_order(
            {"c" + std::to_string(t) + "-" + std::to_string(i), "x", {{"rare", 1, 1}}});
        if (placed.ok()) {
          ++accepted;
        } else {
          EXPECT_TRUE(placed.error().is(keel::cqrs::errc::rejected)) << placed.error().to_string();
          ++refused;
        }
      }
    });
  }
  for (auto& client : clients) client.join();
  return {accepted.load(), refused.load()};
}

}  // namespace orders
