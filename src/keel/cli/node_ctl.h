// `keel ctl append | read | tail | groups`: a keel node's API from the command line, through
// keel::NodeClient. `--node URL` (default $KEEL_NODE, else http://127.0.0.1:2113); a readable
// table by default, `--output json` for the node's JSON (one event per line for tail).
#pragma once

#include <memory>
#include <ostream>

namespace CLI {
class App;
}  // namespace CLI

namespace keel::cli {

class NodeCtl {
 public:
  explicit NodeCtl(CLI::App& ctl);
  ~NodeCtl();
  NodeCtl(const NodeCtl&) = delete;
  NodeCtl& operator=(const NodeCtl&) = delete;

  bool parsed() const;
  int run(std::ostream& out, std::ostream& err) const;
  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace keel::cli
