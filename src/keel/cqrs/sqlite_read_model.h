// The embedded read model: one SQLite file in WAL mode. Statements are prepared once and
// cached. synchronous=NORMAL: a process crash loses nothing committed; a power loss may lose
// the last transactions, and their checkpoint with them, so the read model stays consistent
// and catches up again.
#pragma once

#include <map>
#include <mutex>

#include "keel/cqrs/read_model.h"

struct sqlite3;
struct sqlite3_stmt;

namespace keel::cqrs {

class SqliteReadModel final : public ReadModel {
 public:
  static Result<std::unique_ptr<SqliteReadModel>> open(const std::string& path);
  ~SqliteReadModel() override;

  Status transact(const std::function<Status(Transaction&)>& work) override;
  Result<std::vector<Row>> query(std::string_view sql, const Params& params = {}) override;
  std::string describe() const override { return "sqlite " + path_; }

 private:
  class Tx;
  explicit SqliteReadModel(std::string path) : path_(std::move(path)) {}
  Result<sqlite3_stmt*> prepare(std::string_view sql, const Params& params, std::int64_t tag);
  Result<std::vector<Row>> run(std::string_view sql, const Params& params, std::int64_t tag);
  Error error(std::string_view what, std::string_view sql, std::int64_t tag) const;

  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;
};

}  // namespace keel::cqrs
