// One rank of a job bootstrapped from torchrun-style variables (MASTER_ADDR, MASTER_PORT, RANK,
// WORLD_SIZE): joins the TCP rendezvous, all-gathers host names and receives rank 0's id.
// Prints "rank R of N: HOSTS... id ID" or the error. Run by two_hosts.sh, one process per
// rank in each network namespace, with no launcher at all.
#include <unistd.h>

#include <cstdio>

#include "tpkit/comm/bootstrap.hpp"

int main() {
  try {
    const tpkit::BootstrapInfo info = tpkit::bootstrap_from_env();
    tpkit::TcpRendezvous rendezvous(info, std::chrono::milliseconds(2000));
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    const auto hosts = rendezvous.all_gather(host);
    const std::string id = rendezvous.broadcast(info.rank == 0 ? "id-from-rank-0" : "");
    std::printf("rank %d of %d:", info.rank, info.world_size);
    for (const auto& h : hosts) std::printf(" %s", h.c_str());
    std::printf(" id %s\n", id.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::printf("bootstrap error: %s\n", e.what());
    return 1;
  }
}
