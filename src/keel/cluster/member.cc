#include "keel/cluster/member.h"

#include "keel/core/log.h"

namespace keel::cluster {

const NodeInfo* View::member(std::string_view id) const {
  for (const NodeInfo& info : members) {
    if (info.id == id) return &info;
  }
  return nullptr;
}

ClusterMember::ClusterMember(coord::Coordinator& coordinator, Clock& clock, Options options,
                             MoveDriver& driver)
    : coordinator_(coordinator),
      clock_(clock),
      options_(std::move(options)),
      driver_(driver),
      membership_(coordinator, clock, options_.keys.members(), options_.lease_ttl),
      elector_(coordinator, clock, options_.keys.controller(),
               coord::ElectionOptions{.ttl = options_.lease_ttl}),
      view_(std::make_shared<View>()) {}

Result<std::unique_ptr<ClusterMember>> ClusterMember::start(coord::Coordinator& coordinator,
                                                            Clock& clock, Options options,
                                                            MoveDriver& driver) {
  std::unique_ptr<ClusterMember> member(
      new ClusterMember(coordinator, clock, std::move(options), driver));
  ClusterMember& m = *member;
  // A node restarted under its id finds its old entry until that lease runs out: it waits
  // for it (etcd may round a short TTL up, so up to three TTLs and some) instead of failing.
  const TimePoint join_deadline = clock.now() + 3 * m.options_.lease_ttl + 5s;
  auto registration =
      m.membership_.join({m.options_.self.id, m.options_.self.api, m.options_.self.to_json()});
  while (!registration && registration.error().is(coord::errc::invalid_argument) &&
         clock.now() < join_deadline) {
    sleep_until(clock, clock.now() + 200ms);
    registration =
        m.membership_.join({m.options_.self.id, m.options_.self.api, m.options_.self.to_json()});
  }
  if (!registration) return registration.error();
  m.registration_ = std::move(*registration);
  auto state = read_state(coordinator, m.options_.keys);
  if (!state) return state.error();
  const coord::Revision revision = state->revision;
  m.adopt(std::move(*state));
  auto watch = coordinator.watch(m.options_.keys.prefix + "/", /*prefix=*/true, revision,
                                 [&m](const coord::WatchEvent& event) {
                                   // Elections and lease renewals of the controller key are
                                   // not state; everything else is read afresh, whole.
                                   if (event.type != coord::WatchEvent::Type::kResync &&
                                       event.kv.key.starts_with(m.options_.keys.controller())) {
                                     return;
                                   }
                                   (void)m.refresh();
                                 });
  if (!watch) return watch.error();
  m.watch_ = std::move(*watch);
  auto leader = m.elector_.observe([&m](const std::optional<coord::KeyValue>& kv) {
    std::lock_guard lock(m.mutex_);
    m.controller_id_ = kv ? kv->value : "";
    auto next = std::make_shared<View>(*m.view_);
    next->controller = m.controller_id_;
    m.view_ = std::move(next);
  });
  if (!leader) return leader.error();
  m.leader_watch_ = std::move(*leader);
  m.controller_thread_ = std::thread([&m] { m.campaign_loop(); });
  return member;
}

ClusterMember::~ClusterMember() { stop(); }

void ClusterMember::stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_ = true;
  cancel_.cancel();
  wake();
  if (controller_thread_.joinable()) controller_thread_.join();
  if (leader_watch_) leader_watch_->cancel();
  if (watch_) watch_->cancel();
  if (registration_) (void)registration_->leave();
}

Status ClusterMember::refresh() {
  auto state = read_state(coordinator_, options_.keys);
  if (!state) return state.error();
  adopt(std::move(*state));
  return {};
}

void ClusterMember::adopt(ClusterState state) {
  std::function<void(const View&)> callback;
  std::shared_ptr<const View> adopted;
  {
    std::lock_guard lock(mutex_);
    if (state.revision < view_->revision) return;  // an older read answered late
    auto next = std::make_shared<View>();
    next->revision = state.revision;
    next->map = std::move(state.map);
    next->move = std::move(state.move);
    next->goal = std::move(state.goal);
    next->members = std::move(state.members);
    next->controller = controller_id_;
    view_ = next;
    adopted = next;
    callback = on_change_;
    ++changes_;
  }
  changed_.notify_all();
  if (callback) callback(*adopted);
}

std::shared_ptr<const View> ClusterMember::view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

void ClusterMember::on_change(std::function<void(const View&)> callback) {
  std::lock_guard lock(mutex_);
  on_change_ = std::move(callback);
}

Route ClusterMember::route(std::string_view stream) const {
  std::shared_ptr<const View> view = this->view();
  Route route;
  if (!view->map) return route;
  const shard::SlotMap& map = *view->map;
  route.slot = map.slot_for(stream);
  route.epoch = map.epoch();
  route.owner = map.owner(route.slot);
  if (route.owner != options_.self.id) {
    route.kind = Route::Kind::kRedirect;
    if (const NodeInfo* owner = view->member(route.owner)) route.owner_api = owner->api;
    return route;
  }
  const auto& move = view->move;
  const bool fenced = move && move->phase == Move::Phase::kFenced &&
                      move->from == options_.self.id && move->epoch == map.epoch() &&
                      move->covers(route.slot);
  route.kind = fenced ? Route::Kind::kFenced : Route::Kind::kServe;
  return route;
}

std::string ClusterMember::controller_status() const {
  std::lock_guard lock(mutex_);
  return controller_status_;
}

std::vector<double> ClusterMember::fence_ms() const {
  std::lock_guard lock(mutex_);
  return {fence_ms_.begin(), fence_ms_.end()};
}

bool ClusterMember::lost() const { return registration_ && registration_->lost(); }

void ClusterMember::wake() {
  {
    std::lock_guard lock(mutex_);
    ++changes_;
  }
  changed_.notify_all();
}

void ClusterMember::campaign_loop() {
  while (!stopping_) {
    auto leadership = elector_.campaign(options_.self.id, &cancel_);
    if (stopping_) break;
    if (!leadership) {
      log::get("cluster")->warn("campaigning for controller: {}", leadership.error().message());
      std::unique_lock lock(mutex_);
      const std::uint64_t seen = changes_;
      TimerId timer = clock_.schedule_after(options_.retry, [this] { wake(); });
      changed_.wait(lock, [&] { return stopping_ || changes_ != seen; });
      lock.unlock();
      clock_.cancel(timer);
      continue;
    }
    lead(std::move(*leadership));
  }
}

void ClusterMember::lead(std::shared_ptr<coord::Leadership> leadership) {
  leading_ = true;
  leadership->on_lost([this] { wake(); });
  log::get("cluster")->info("{} is the controller (token {})", options_.self.id,
                            leadership->token());
  Controller controller(coordinator_, *leadership, driver_, options_.keys, options_.controller);
  TimePoint fenced_at{};  // when the move in progress was fenced; {} when none
  while (!stopping_ && !leadership->lost()) {
    std::uint64_t seen;
    {
      std::lock_guard lock(mutex_);
      seen = changes_;
    }
    auto step = controller.step();
    bool rest = true;  // wait for a change before the next step
    TimerId timer = 0;
    {
      std::lock_guard lock(mutex_);
      if (step) {
        if (*step == Controller::Step::kFenced) fenced_at = clock_.now();
        if (*step == Controller::Step::kFlipped && fenced_at != TimePoint{}) {
          fence_ms_.push_back(
              std::chrono::duration<double, std::milli>(clock_.now() - fenced_at).count());
          if (fence_ms_.size() > 4096) fence_ms_.pop_front();
        }
        if (*step != Controller::Step::kFenced) fenced_at = TimePoint{};
        controller_status_ = step_name(*step);
        if (*step == Controller::Step::kWaiting || *step == Controller::Step::kIdle) {
          if (!controller.waiting_for().empty() && *step == Controller::Step::kWaiting) {
            controller_status_ += ": " + controller.waiting_for();
          }
        } else {
          rest = false;
        }
      } else {
        controller_status_ = "retrying: " + step.error().message();
      }
    }
    if (step && !rest) {
      log::get("cluster")->info("controller: {}", step_name(*step));
      continue;
    }
    if (!step) {
      log::get("cluster")->warn("controller step: {}", step.error().message());
      timer = clock_.schedule_after(options_.retry, [this] { wake(); });
    }
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || changes_ != seen || leadership->lost(); });
    lock.unlock();
    if (timer != 0) clock_.cancel(timer);
  }
  leading_ = false;
  if (!stopping_) log::get("cluster")->warn("{} lost the controller role", options_.self.id);
}

}  // namespace keel::cluster
