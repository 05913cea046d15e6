// Read models in a real database. A projection writes through a Transaction; the runner commits
// its checkpoint in the same transaction. SQL is written once for both backends: parameters
// are $1, $2, … (PostgreSQL's form, which SQLite also takes), and the common subset of the two
// dialects (CREATE TABLE IF NOT EXISTS, INSERT … ON CONFLICT … DO UPDATE, BIGINT, TEXT,
// DOUBLE PRECISION) covers what projections need.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "keel/core/result.h"

namespace keel::cqrs {

using Value = std::variant<std::nullptr_t, std::int64_t, double, std::string>;
using Row = std::vector<Value>;
using Params = std::vector<Value>;

std::string to_string(const Value& value);
// The value as an integer (text is parsed; null is 0).
std::int64_t as_int(const Value& value);

class Transaction {
 public:
  virtual ~Transaction() = default;
  // A statement without results. A backend may send it later (PostgreSQL pipelines a batch),
  // so its error can surface at a later call or at commit, tagged with the tag in force when
  // the statement was issued (Error::detail()).
  virtual Status exec(std::string_view sql, const Params& params = {}) = 0;
  // A query; sends whatever is pending first.
  virtual Result<std::vector<Row>> query(std::string_view sql, const Params& params = {}) = 0;
  // The runner tags statements with the index of the event being applied.
  void set_tag(std::int64_t tag) { tag_ = tag; }

 protected:
  std::int64_t tag_ = -1;
};

class ReadModel {
 public:
  virtual ~ReadModel() = default;
  // Runs `work` in one transaction: commits when it returns ok, rolls back otherwise. The
  // error of a statement carries its tag in Error::detail().
  virtual Status transact(const std::function<Status(Transaction&)>& work) = 0;
  // A query outside any transaction (the read side).
  virtual Result<std::vector<Row>> query(std::string_view sql, const Params& params = {}) = 0;
  virtual std::string describe() const = 0;  // "sqlite /var/lib/x.db", "postgresql host=…"
};

}  // namespace keel::cqrs
