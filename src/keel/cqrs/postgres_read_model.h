// The shared read model: PostgreSQL through libpq. A transaction's statements are pipelined
// (sent without waiting for each answer, read back every `pipeline_depth` statements and at
// commit), so a batch of events costs a few round trips instead of one per statement.
// Statements are prepared once per connection and cached.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "keel/cqrs/read_model.h"

struct pg_conn;

namespace keel::cqrs {

struct PostgresOptions {
  std::string conninfo;  // "host=/tmp/pg port=5432 dbname=app user=app"
  std::size_t pipeline_depth = 256;
};

class PostgresReadModel final : public ReadModel {
 public:
  static Result<std::unique_ptr<PostgresReadModel>> connect(PostgresOptions options);
  ~PostgresReadModel() override;

  Status transact(const std::function<Status(Transaction&)>& work) override;
  Result<std::vector<Row>> query(std::string_view sql, const Params& params = {}) override;
  std::string describe() const override { return "postgresql " + options_.conninfo; }

 private:
  class Tx;
  struct Sent {
    std::int64_t tag;
    const std::string* sql;  // the key in statements_, which outlives it (both cleared together)
  };
  explicit PostgresReadModel(PostgresOptions options) : options_(std::move(options)) {}
  // Sends one statement into the pipeline (preparing it first if new).
  Status send(std::string_view sql, const Params& params, std::int64_t tag);
  // Syncs the pipeline and reads every answer; the first error, tagged.
  Status drain(std::vector<Row>* last_rows = nullptr);
  Error error(std::string_view what, std::string_view sql, std::int64_t tag) const;
  Status reconnect_if_broken();

  PostgresOptions options_;
  pg_conn* conn_ = nullptr;
  std::mutex mutex_;
  std::map<std::string, std::string, std::less<>> statements_;  // sql -> prepared name
  std::vector<std::string> param_text_;  // one statement's parameters, reused
  std::vector<const char*> param_values_;
  std::vector<Sent> sent_;  // commands in the pipeline, in order
};

}  // namespace keel::cqrs
