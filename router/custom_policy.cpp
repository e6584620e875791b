// A router with a policy of one's own: registered by name, then tpkit-router's own command line
// runs with it (`router_custom_policy --policy sticky --worker ...`). The policy sends every
// request to the first routable worker in the order they were given, so the others take over only
// when it is unhealthy: an active/standby pair.
#include <memory>
#include <span>
#include <string>

#include "cli.hpp"
#include "policy.hpp"

namespace {

class Sticky final : public tpkit::router::RoutingPolicy {
 public:
  std::string name() const override { return "sticky"; }
  std::size_t choose(const tpkit::router::RouteRequest&, std::span<const tpkit::router::WorkerLoad>) override {
    return 0;
  }
};

}  // namespace

int main(int argc, char** argv) {
  tpkit::router::register_policy("sticky",
                                 [](const tpkit::router::PolicyOptions&) { return std::make_unique<Sticky>(); });
  return tpkit::router::router_main(argc, argv);
}
