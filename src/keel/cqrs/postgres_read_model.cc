#include "keel/cqrs/postgres_read_model.h"

#include <libpq-fe.h>

#include "keel/cqrs/errc.h"

namespace keel::cqrs {

namespace {
// Type OIDs from pg_type.h (stable since forever).
constexpr Oid kInt8 = 20, kInt2 = 21, kInt4 = 23, kFloat4 = 700, kFloat8 = 701, kNumeric = 1700;
}  // namespace

class PostgresReadModel::Tx final : public Transaction {
 public:
  explicit Tx(PostgresReadModel& model) : model_(model) {}
  Status exec(std::string_view sql, const Params& params) override {
    if (auto ok = model_.send(sql, params, tag_); !ok) return ok;
    if (model_.sent_.size() >= model_.options_.pipeline_depth) return model_.drain();
    return {};
  }
  Result<std::vector<Row>> query(std::string_view sql, const Params& params) override {
    if (auto ok = model_.send(sql, params, tag_); !ok) return ok.error();
    std::vector<Row> rows;
    if (auto ok = model_.drain(&rows); !ok) return ok.error();
    return rows;
  }

 private:
  PostgresReadModel& model_;
};

Result<std::unique_ptr<PostgresReadModel>> PostgresReadModel::connect(PostgresOptions options) {
  std::unique_ptr<PostgresReadModel> model(new PostgresReadModel(std::move(options)));
  if (auto ok = model->reconnect_if_broken(); !ok) return ok.error();
  return model;
}

PostgresReadModel::~PostgresReadModel() {
  if (conn_ != nullptr) PQfinish(conn_);
}

Status PostgresReadModel::reconnect_if_broken() {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return {};
  if (conn_ != nullptr) PQfinish(conn_);
  statements_.clear();
  sent_.clear();
  conn_ = PQconnectdb(options_.conninfo.c_str());
  if (PQstatus(conn_) != CONNECTION_OK) return error("cannot connect", "", -1);
  PQclear(PQexec(conn_, "SET client_min_messages = warning"));
  return {};
}

Error PostgresReadModel::error(std::string_view what, std::string_view sql,
                               std::int64_t tag) const {
  std::string detail = conn_ != nullptr ? PQerrorMessage(conn_) : "out of memory";
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  std::string message =
      "postgresql (" + options_.conninfo + "): " + std::string(what) + ": " + detail;
  if (!sql.empty()) message += " (in: " + std::string(sql) + ")";
  Error e(errc::database, message);
  if (tag >= 0) e.with_detail(tag);
  return e;
}

Status PostgresReadModel::send(std::string_view sql, const Params& params, std::int64_t tag) {
  if (conn_ == nullptr) {
    // Not tagged: no event is to blame for a lost connection.
    return Error(errc::database, "postgresql (" + options_.conninfo + "): connection lost");
  }
  auto cached = statements_.find(sql);
  if (cached == statements_.end()) {
    std::string name = "keel_" + std::to_string(statements_.size() + 1);
    if (!PQsendPrepare(conn_, name.c_str(), std::string(sql).c_str(), 0, nullptr))
      return error("cannot send", sql, -1);
    cached = statements_.emplace(std::string(sql), name).first;
    sent_.push_back({tag, &cached->first});
  }
  param_text_.resize(params.size());
  param_values_.assign(params.size(), nullptr);
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (std::holds_alternative<std::nullptr_t>(params[i])) continue;
    param_text_[i] = to_string(params[i]);
    param_values_[i] = param_text_[i].c_str();
  }
  if (!PQsendQueryPrepared(conn_, cached->second.c_str(), static_cast<int>(params.size()),
                           param_values_.data(), nullptr, nullptr, 0)) {
    return error("cannot send", sql, -1);
  }
  sent_.push_back({tag, &cached->first});
  return {};
}

Status PostgresReadModel::drain(std::vector<Row>* last_rows) {
  if (!PQpipelineSync(conn_)) {
    Error failed = error("cannot sync", "", -1);
    sent_.clear();
    PQfinish(conn_);
    conn_ = nullptr;
    return failed;
  }
  std::optional<Error> first_error;
  std::size_t command = 0;
  while (true) {
    PGresult* result = PQgetResult(conn_);
    if (result == nullptr) {  // the end of one command's answers
      ++command;
      if (PQstatus(conn_) == CONNECTION_BAD || command > sent_.size() + 1) {
        // The connection is gone: no sync will come. Drop it; the next call reconnects.
        Error lost = error("connection lost", "", -1);
        sent_.clear();
        PQfinish(conn_);
        conn_ = nullptr;
        return lost;
      }
      continue;
    }
    const ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_PIPELINE_SYNC) {
      PQclear(result);
      break;
    }
    const Sent* sent = command < sent_.size() ? &sent_[command] : nullptr;
    if (status == PGRES_FATAL_ERROR && !first_error) {
      std::string detail = PQresultErrorMessage(result);
      while (!detail.empty() && detail.back() == '\n') detail.pop_back();
      first_error = Error(errc::database,
                          "postgresql: " + detail + (sent ? " (in: " + *sent->sql + ")" : ""));
      if (sent && sent->tag >= 0) first_error->with_detail(sent->tag);
    }
    if (status == PGRES_TUPLES_OK && last_rows != nullptr && command + 1 == sent_.size()) {
      const int rows = PQntuples(result), columns = PQnfields(result);
      for (int r = 0; r < rows; ++r) {
        Row row;
        for (int c = 0; c < columns; ++c) {
          if (PQgetisnull(result, r, c)) {
            row.emplace_back(nullptr);
            continue;
          }
          const char* text = PQgetvalue(result, r, c);
          const Oid type = PQftype(result, c);
          if (type == kInt8 || type == kInt4 || type == kInt2) {
            row.emplace_back(std::int64_t{std::strtoll(text, nullptr, 10)});
          } else if (type == kFloat8 || type == kFloat4 || type == kNumeric) {
            row.emplace_back(std::strtod(text, nullptr));
          } else {
            row.emplace_back(
                std::string(text, static_cast<std::size_t>(PQgetlength(result, r, c))));
          }
        }
        last_rows->push_back(std::move(row));
      }
    }
    PQclear(result);
  }
  sent_.clear();
  if (first_error) return *first_error;
  return {};
}

Status PostgresReadModel::transact(const std::function<Status(Transaction&)>& work) {
  std::lock_guard lock(mutex_);
  sent_.clear();
  if (auto ok = reconnect_if_broken(); !ok) return ok;
  if (!PQenterPipelineMode(conn_)) return error("cannot enter pipeline mode", "", -1);
  Tx tx(*this);
  Status status = tx.exec("BEGIN", {});
  if (status) status = work(tx);
  if (status) status = tx.exec("COMMIT", {});
  // Read every answer even after a failure: the pipeline must be empty to leave it.
  Status drained = sent_.empty() || conn_ == nullptr ? Status{} : drain();
  if (status) status = drained;
  if (conn_ == nullptr) return status;  // lost and dropped: the transaction died with it
  if (!PQexitPipelineMode(conn_)) {
    PQfinish(conn_);
    conn_ = nullptr;
    return status ? error("cannot leave pipeline mode", "", -1) : status;
  }
  if (!status) {
    // An error aborts the transaction; leave it, and forget statements prepared inside it
    // (their Parse may have been skipped).
    PQclear(PQexec(conn_, "ROLLBACK"));
    PQclear(PQexec(conn_, "DEALLOCATE ALL"));
    sent_.clear();
    statements_.clear();
  }
  return status;
}

Result<std::vector<Row>> PostgresReadModel::query(std::string_view sql, const Params& params) {
  std::lock_guard lock(mutex_);
  sent_.clear();
  if (auto ok = reconnect_if_broken(); !ok) return ok.error();
  if (!PQenterPipelineMode(conn_)) return error("cannot enter pipeline mode", "", -1);
  std::vector<Row> rows;
  Status status = send(sql, params, -1);
  Status drained = sent_.empty() ? Status{} : drain(&rows);
  if (conn_ == nullptr) return !drained ? drained.error() : status.error();
  if (!PQexitPipelineMode(conn_)) {
    PQfinish(conn_);
    conn_ = nullptr;
    return error("cannot leave pipeline mode", sql, -1);
  }
  if (!status) return status.error();
  if (!drained) {
    PQclear(PQexec(conn_, "DEALLOCATE ALL"));
    sent_.clear();
    statements_.clear();
    return drained.error();
  }
  return rows;
}

}  // namespace keel::cqrs
