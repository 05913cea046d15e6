#include "keel/cqrs/sqlite_read_model.h"

#include <sqlite3.h>

#include "keel/cqrs/errc.h"

namespace keel::cqrs {

class SqliteReadModel::Tx final : public Transaction {
 public:
  explicit Tx(SqliteReadModel& model) : model_(model) {}
  Status exec(std::string_view sql, const Params& params) override {
    auto rows = model_.run(sql, params, tag_);
    if (!rows) return rows.error();
    return {};
  }
  Result<std::vector<Row>> query(std::string_view sql, const Params& params) override {
    return model_.run(sql, params, tag_);
  }

 private:
  SqliteReadModel& model_;
};

Result<std::unique_ptr<SqliteReadModel>> SqliteReadModel::open(const std::string& path) {
  std::unique_ptr<SqliteReadModel> model(new SqliteReadModel(path));
  if (sqlite3_open_v2(path.c_str(), &model->db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return model->error("cannot open", "", -1);
  }
  sqlite3_busy_timeout(model->db_, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"}) {
    if (sqlite3_exec(model->db_, pragma, nullptr, nullptr, nullptr) != SQLITE_OK)
      return model->error("cannot set up", pragma, -1);
  }
  return model;
}

SqliteReadModel::~SqliteReadModel() {
  for (auto& [sql, statement] : statements_) sqlite3_finalize(statement);
  if (db_ != nullptr) sqlite3_close(db_);
}

Error SqliteReadModel::error(std::string_view what, std::string_view sql, std::int64_t tag) const {
  std::string message = "sqlite " + path_ + ": " + std::string(what) + ": " +
                        (db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory");
  if (!sql.empty()) message += " (in: " + std::string(sql) + ")";
  Error e(errc::database, message);
  if (tag >= 0) e.with_detail(tag);
  return e;
}

Result<sqlite3_stmt*> SqliteReadModel::prepare(std::string_view sql, const Params& params,
                                               std::int64_t tag) {
  auto cached = statements_.find(sql);
  sqlite3_stmt* statement = nullptr;
  if (cached != statements_.end()) {
    statement = cached->second;
  } else {
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &statement, nullptr) != SQLITE_OK) {
      return error("cannot prepare", sql, tag);
    }
    statements_.emplace(std::string(sql), statement);
  }
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string name = "$" + std::to_string(i + 1);
    int index = sqlite3_bind_parameter_index(statement, name.c_str());
    if (index == 0) continue;  // the statement does not use this parameter
    const Value& value = params[i];
    int rc = SQLITE_OK;
    if (auto* v = std::get_if<std::int64_t>(&value)) {
      rc = sqlite3_bind_int64(statement, index, *v);
    } else if (auto* d = std::get_if<double>(&value)) {
      rc = sqlite3_bind_double(statement, index, *d);
    } else if (auto* s = std::get_if<std::string>(&value)) {
      rc = sqlite3_bind_text(statement, index, s->data(), static_cast<int>(s->size()),
                             SQLITE_TRANSIENT);
    } else {
      rc = sqlite3_bind_null(statement, index);
    }
    if (rc != SQLITE_OK) return error("cannot bind " + name, sql, tag);
  }
  return statement;
}

Result<std::vector<Row>> SqliteReadModel::run(std::string_view sql, const Params& params,
                                              std::int64_t tag) {
  auto statement = prepare(sql, params, tag);
  if (!statement) return statement.error();
  std::vector<Row> rows;
  while (true) {
    int rc = sqlite3_step(*statement);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      Error e = error("failed", sql, tag);
      sqlite3_reset(*statement);
      return e;
    }
    Row row;
    const int columns = sqlite3_column_count(*statement);
    for (int c = 0; c < columns; ++c) {
      switch (sqlite3_column_type(*statement, c)) {
        case SQLITE_INTEGER:
          row.emplace_back(std::int64_t{sqlite3_column_int64(*statement, c)});
          break;
        case SQLITE_FLOAT:
          row.emplace_back(sqlite3_column_double(*statement, c));
          break;
        case SQLITE_NULL:
          row.emplace_back(nullptr);
          break;
        default: {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(*statement, c));
          row.emplace_back(
              std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(*statement, c))));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  sqlite3_reset(*statement);
  return rows;
}

Status SqliteReadModel::transact(const std::function<Status(Transaction&)>& work) {
  std::lock_guard lock(mutex_);
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
    return error("cannot begin", "BEGIN IMMEDIATE", -1);
  Tx tx(*this);
  Status status = work(tx);
  if (status && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return {};
  if (status) status = error("cannot commit", "COMMIT", -1);
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return status;
}

Result<std::vector<Row>> SqliteReadModel::query(std::string_view sql, const Params& params) {
  std::lock_guard lock(mutex_);
  return run(sql, params, -1);
}

}  // namespace keel::cqrs
