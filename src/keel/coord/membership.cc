#include "keel/coord/membership.h"

#include <nlohmann/json.hpp>

namespace keel::coord {

Membership::Membership(Coordinator& coordinator, Clock& clock, std::string prefix, Duration ttl)
    : coordinator_(coordinator), clock_(clock), prefix_(std::move(prefix) + "/"), ttl_(ttl) {}

Result<std::unique_ptr<Registration>> Membership::join(const Member& member) {
  if (member.id.empty() || member.id.find('/') != std::string::npos) {
    return Error(errc::invalid_argument, "member id must be non-empty and contain no '/'");
  }
  auto keeper = LeaseKeeper::start(coordinator_, clock_, ttl_, 2.0 / 3.0);
  if (!keeper) return keeper.error();
  const std::string key = prefix_ + member.id;
  nlohmann::json value = {{"address", member.address}, {"metadata", member.metadata}};
  Transaction register_once;
  register_once.compare.push_back(
      {key, Compare::Target::kCreateRevision, Compare::Op::kEqual, 0, ""});
  register_once.success.push_back(
      {Operation::Kind::kPut, key, value.dump(), (*keeper)->lease(), false});
  auto result = coordinator_.transact(register_once);
  if (!result || !result->succeeded) {
    (void)(*keeper)->release();
    if (!result) return result.error();
    return Error(errc::invalid_argument,
                 "member '" + member.id + "' is already registered by a live node");
  }
  return std::unique_ptr<Registration>(new Registration(*keeper));
}

Result<std::vector<Member>> Membership::list() {
  auto listing = coordinator_.range(prefix_, true);
  if (!listing) return listing.error();
  std::vector<Member> members;
  for (const auto& kv : listing->first) {
    Member member;
    member.id = kv.key.substr(prefix_.size());
    nlohmann::json value = nlohmann::json::parse(kv.value, nullptr, false);
    if (value.is_object()) {
      if (value.contains("address") && value["address"].is_string())
        member.address = value["address"];
      if (value.contains("metadata") && value["metadata"].is_string())
        member.metadata = value["metadata"];
    }
    members.push_back(std::move(member));
  }
  return members;
}

Result<std::unique_ptr<WatchHandle>> Membership::watch(
    std::function<void(const std::vector<Member>&)> on_change) {
  auto listing = coordinator_.range(prefix_, true);
  if (!listing) return listing.error();
  auto now = list();
  if (!now) return now.error();
  on_change(*now);
  return coordinator_.watch(prefix_, true, listing->second, [this, on_change](const WatchEvent&) {
    if (auto members = list()) on_change(*members);
  });
}

}  // namespace keel::coord
