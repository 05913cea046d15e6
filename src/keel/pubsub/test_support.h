// Helpers for pubsub's tests: a store in a temporary directory, and appends in one call.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "keel/eventlog/event_store.h"
#include "keel/eventlog/test_support.h"

namespace keel::pubsub::testing {

using eventlog::EventData;
using eventlog::ExpectedVersion;
using eventlog::StoreOptions;

class StoreFixture : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void reopen() {
    if (store_) {
      ASSERT_TRUE(store_->close().ok());
    }
    store_.reset();
    StoreOptions options;
    options.segment_bytes = 1 << 20;
    options.durability = eventlog::Durability::kNone;
    auto opened = EventStore::open(dir_.path(), options, clock_);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    store_ = std::move(*opened);
  }
  // Appends one event of `type` to `stream`; returns its position.
  std::uint64_t append(const std::string& stream, const std::string& type = "Happened",
                       const std::string& data = "{}") {
    auto result = store_->append(stream, ExpectedVersion::any(),
                                 {eventlog::testing::make_event(random_, type, data)});
    EXPECT_TRUE(result.ok()) << result.error().to_string();
    return result.ok() ? result->last_position : 0;
  }

  eventlog::testing::TempDir dir_;
  ManualClock clock_;
  Random random_{11};
  std::unique_ptr<EventStore> store_;
};

}  // namespace keel::pubsub::testing
