#include "keel/eventlog/layout.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "keel/core/hash.h"
#include "keel/eventlog/errc.h"

namespace keel::eventlog {

std::string segment_file_name(std::uint64_t number) {
  char name[32];
  std::snprintf(name, sizeof name, "%08llu.seg", static_cast<unsigned long long>(number));
  return name;
}

std::optional<std::uint64_t> parse_segment_file_name(std::string_view name) {
  if (name.size() != 12 || !name.ends_with(".seg") ||
      !std::all_of(name.begin(), name.begin() + 8, [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoull(std::string(name.substr(0, 8)));
}

std::string snapshot_file_name(std::string_view stream) {
  char name[32];
  std::snprintf(name, sizeof name, "%016llx.snap", static_cast<unsigned long long>(hash64(stream)));
  return name;
}

std::string snapshot_path_in_store(std::string_view stream) {
  return std::string(kSnapshotsDirectoryName) + "/" + snapshot_file_name(stream);
}

std::string path_in(const std::string& directory, std::string_view name) {
  return directory + "/" + std::string(name);
}

std::string location_text(std::uint64_t location) {
  return segment_file_name(location_segment(location)) + " offset " +
         std::to_string(location_offset(location));
}

std::optional<std::uint64_t> StoreListing::first_missing_segment() const {
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].number != i + 1) return i + 1;
  }
  return std::nullopt;
}

Result<StoreListing> list_store(const std::string& directory) {
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) {
    return Error(errc::io_error,
                 "cannot read directory " + directory + ": " + std::strerror(errno));
  }
  StoreListing listing;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name.size() == 12 && name.ends_with(".seg")) {
      if (auto number = parse_segment_file_name(name)) {
        listing.segments.push_back({*number, name, path_in(directory, name)});
      } else {
        listing.misnamed.push_back(name);
      }
    } else if (name.ends_with(kTemporarySuffix) || name.ends_with(kScavengeSuffix) ||
               name.ends_with(kRepairSuffix)) {
      listing.leftovers.push_back(name);
    }
  }
  ::closedir(dir);
  std::sort(
      listing.segments.begin(), listing.segments.end(),
      [](const SegmentFileEntry& a, const SegmentFileEntry& b) { return a.number < b.number; });
  std::sort(listing.misnamed.begin(), listing.misnamed.end());
  std::sort(listing.leftovers.begin(), listing.leftovers.end());
  return listing;
}

}  // namespace keel::eventlog
