#include "keel/coord/coordinator.h"

#include "keel/core/error_category.h"

namespace keel::coord {
namespace {

const char* describe(errc code) {
  switch (code) {
    case errc::lease_not_found:
      return "lease not found";
    case errc::compacted:
      return "revision compacted";
    case errc::unavailable:
      return "coordinator unavailable";
    case errc::cancelled:
      return "cancelled";
    case errc::invalid_argument:
      return "invalid argument";
    case errc::not_leader:
      return "not the leader";
  }
  return nullptr;
}

}  // namespace

const std::error_category& coord_category() {
  static const ErrorCategory<errc> category("coord", describe);
  return category;
}

Result<Revision> Coordinator::put(std::string_view key, std::string_view value, LeaseId lease) {
  Transaction transaction;
  transaction.success.push_back(
      {Operation::Kind::kPut, std::string(key), std::string(value), lease, false});
  auto result = transact(transaction);
  if (!result) return result.error();
  return result->revision;
}

Result<std::optional<KeyValue>> Coordinator::get(std::string_view key) {
  auto result = range(key, false);
  if (!result) return result.error();
  if (result->first.empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(result->first.front());
}

Result<std::int64_t> Coordinator::erase(std::string_view key, bool prefix) {
  Transaction transaction;
  transaction.success.push_back({Operation::Kind::kDelete, std::string(key), "", 0, prefix});
  auto result = transact(transaction);
  if (!result) return result.error();
  return static_cast<std::int64_t>(result->kvs.front().size());
}

}  // namespace keel::coord
