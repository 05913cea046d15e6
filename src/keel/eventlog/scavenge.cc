// Scavenging: rewrites sealed segments without the events deletes, truncation and expiry hide,
// leaving a removed-range record where they were, so that the log still accounts for every
// position. Runs beside appends, which only touch the active segment.
#include <unistd.h>

#include <utility>

#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {

Result<ScavengeReport> EventStore::Impl::scavenge() {
  ScavengeReport report;
  // Appends go on meanwhile: scavenging reads only sealed segments, and swaps each rewritten
  // one in under the index lock. The scavenge.pending marker makes a crash before the final
  // checkpoint rebuild the index from the log instead of trusting an older checkpoint.
  std::lock_guard one_at_a_time(scavenge_mutex_);
  std::unique_lock lock(mutex_);
  if (!open_) return Error(errc::closed, "the store is closed");
  lock.unlock();

  // Sealed segments whose every record is durable and published: before the replay point.
  std::vector<std::shared_ptr<Segment>> sealed;
  {
    std::shared_lock index_lock(index_mutex_);
    for (const auto& [number, segment] : segments_) {
      if (number < index_.replay_segment) sealed.push_back(segment);
    }
  }
  Status status;
  std::string marker = path(kScavengeMarkerFileName);
  bool marked = false;
  for (const auto& segment : sealed) {
    // Which records stay: metadata records, and events still visible.
    std::string kept;
    std::optional<RemovedRange> removed_run;  // removed events not yet written as a range
    std::vector<std::pair<std::uint64_t, std::uint64_t>> moved;  // position -> new offset
    std::vector<std::uint64_t> removed;
    {
      std::shared_lock index_lock(index_mutex_);
      // The records run to the zeroed tail (or to the end of a rewritten file). Not to
      // segment->end: that is known only for segments replayed at open, not for those the
      // checkpoint covered.
      std::uint64_t offset = 0;
      while (offset < segment->capacity) {
        RecordView frame = read_frame(segment->bytes_from(offset));
        if (frame.status == RecordView::Status::kEnd) break;
        std::optional<Result<RecordedEvent>> event;
        if (frame.status == RecordView::Status::kOk && frame.kind == RecordKind::kEvent)
          event = decode_event(frame);
        if (frame.status != RecordView::Status::kOk || (event && !event->ok())) {
          // Rewriting would silently drop everything after the damage.
          status = Error(errc::corrupt, segment->path + " offset " + std::to_string(offset) +
                                            ": record fails its checks; scavenge stopped");
          break;
        }
        bool keep = true;
        if (frame.kind == RecordKind::kRemoved) {
          // An earlier scavenge's range: it may grow with what is removed right before it.
          auto range = decode_removed(frame);
          if (range && removed_run &&
              removed_run->first_position + removed_run->count == range->first_position) {
            removed_run->count += range->count;
            offset += frame.size;
            continue;
          }
        }
        if (event) {
          auto stream = index_.streams.find((*event)->stream);
          // A stream's last event stays even when hidden: an index rebuilt from the log
          // learns the stream's version, and the log's next position, from it.
          keep = stream == index_.streams.end() ||
                 (!stream->second.metadata.tombstone && visible(stream->second, **event)) ||
                 (*event)->version + 1 == stream->second.positions.size();
          if (!keep) {
            removed.push_back((*event)->position);
            if (removed_run) {
              ++removed_run->count;
            } else {
              removed_run = RemovedRange{(*event)->position, 1};
            }
          }
        }
        if (keep) {
          // Removed events leave a range record where they were, so that the log still
          // accounts for every position: a hole in the positions is then always damage.
          if (removed_run) encode_removed(*std::exchange(removed_run, std::nullopt), kept);
          if (event) moved.emplace_back((*event)->position, kept.size());
          kept.append(frame.payload.data() - kRecordHeaderBytes, frame.size);
        }
        offset += frame.size;
      }
      if (removed_run) encode_removed(*removed_run, kept);
    }
    if (!status) break;
    if (removed.empty()) continue;
    if (!marked) {
      if (auto written = write_file_atomically(marker, "scavenge"); !written) {
        status = written;
        break;
      }
      marked = true;
    }
    // The file stays even when only ranges are left in it: segment numbers have no gaps.
    auto remapped = files_.rewrite(segment->number, kept);
    if (!remapped) {
      status = remapped.error();
      break;
    }
    std::shared_ptr<Segment> replacement = *remapped;
    replacement->end = kept.size();
    {
      std::unique_lock index_lock(index_mutex_);
      ++index_epoch_;
      for (std::uint64_t position : removed) index_.locations[position] = kRemovedLocation;
      for (const auto& [position, offset] : moved)
        index_.locations[position] = pack_location(segment->number, offset);
      segments_[segment->number] = replacement;
    }
    if (moved.empty()) {
      ++report.segments_emptied;
    } else {
      ++report.segments_rewritten;
    }
    report.bytes_reclaimed += segment->capacity - kept.size();
    report.events_removed += removed.size();
  }
  lock.lock();
  if (marked && status.ok()) {
    flushed_.wait(lock, [&] { return !flushing_; });
    flushing_ = true;  // no other checkpoint or publication while this one is written
    status = write_checkpoint_locked();
    if (status.ok()) ::unlink(marker.c_str());
    flushing_ = false;
    flushed_.notify_all();
  }
  if (!status) return status.error();
  return report;
}

}  // namespace keel::eventlog
