// The TCP rendezvous that bootstraps a job from torchrun-style variables: ranks as threads on
// the loopback interface, each with its own TcpRendezvous, exactly as separate processes would.
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/bootstrap.hpp"

using namespace tpkit;
using namespace std::chrono_literals;

namespace {
// A port nobody listens on right now (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs fn(rank) for each of `ranks` on its own thread; returns each one's error text ("" if none).
template <class F>
std::vector<std::string> run_ranks(const std::vector<int>& ranks, F fn) {
  std::vector<std::string> errors(ranks.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < ranks.size(); ++i)
    threads.emplace_back([&, i] {
      try {
        fn(ranks[i]);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

BootstrapInfo info(int port, int rank, int world) {
  BootstrapInfo b;
  b.master_addr = "127.0.0.1", b.master_port = port, b.rank = rank, b.world_size = world;
  return b;
}
}  // namespace

TEST_CASE("bootstrap: all_gather and broadcast reach every rank", "[bootstrap]") {
  const int world = GENERATE(1, 2, 5);
  const int port = free_port();
  test::RankChecks checks;
  const auto errors = run_ranks({0, 1, 2, 3, 4}, [&](int r) {
    if (r >= world) return;
    TcpRendezvous rv(info(port, r, world), 5000ms);
    const auto hosts = rv.all_gather("host-" + std::to_string(r) + std::string(std::size_t(r), '\0'));
    RANK_CHECK(checks, int(hosts.size()) == world);
    for (int k = 0; k < world; ++k)
      RANK_CHECK(checks, hosts[std::size_t(k)] == "host-" + std::to_string(k) + std::string(std::size_t(k), '\0'));
    std::string id(128, '\0');  // an NCCL unique id is 128 opaque bytes
    if (r == 0)
      for (std::size_t i = 0; i < id.size(); ++i) id[i] = char(i * 7);
    id = rv.broadcast(id);
    for (std::size_t i = 0; i < id.size(); ++i) RANK_CHECK(checks, id[i] == char(i * 7));
    rv.barrier();
  });
  for (const auto& e : errors) REQUIRE(e.empty());
  REQUIRE_RANK_CHECKS(checks);
}

TEST_CASE("bootstrap: a rank that never connects is named to every rank that did", "[bootstrap][faults]") {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks({0, 1}, [&](int r) { TcpRendezvous rv(info(port, r, 3), 300ms); });
  REQUIRE(std::chrono::steady_clock::now() - start < 5s);
  for (const auto& e : errors) REQUIRE_THAT(e, Catch::Contains("rank(s) 2 of 3 did not connect within 300 ms"));
}

TEST_CASE("bootstrap: no rank 0, a WORLD_SIZE disagreement, a rank stalled mid-exchange", "[bootstrap][faults]") {
  SECTION("rank 0 never listens") {
    const int port = free_port();
    const auto errors = run_ranks({1}, [&](int r) { TcpRendezvous rv(info(port, r, 2), 300ms); });
    REQUIRE_THAT(errors[0], Catch::Contains("rank 1 could not reach rank 0 at 127.0.0.1:" + std::to_string(port) +
                                            " within 300 ms"));
  }
  SECTION("ranks disagree on WORLD_SIZE") {
    const int port = free_port();
    const auto errors = run_ranks({0, 1}, [&](int r) { TcpRendezvous rv(info(port, r, r == 0 ? 2 : 3), 2000ms); });
    for (const auto& e : errors)
      REQUIRE_THAT(e, Catch::Contains("rank 1 joined with WORLD_SIZE 3; rank 0 has WORLD_SIZE 2"));
  }
  SECTION("a rank stalls in all_gather") {
    const int port = free_port();
    const auto errors = run_ranks({0, 1, 2}, [&](int r) {
      TcpRendezvous rv(info(port, r, 3), 300ms);
      if (r == 2) {
        std::this_thread::sleep_for(1s);
        return;
      }
      rv.all_gather("x");
    });
    REQUIRE_THAT(errors[0], Catch::Contains("rank 2 sent nothing within 300 ms"));
    REQUIRE_THAT(errors[1], Catch::Contains("rank 2 sent nothing within 300 ms"));
  }
}

// Rank 0 listens on every interface: a peer that reaches it by another address of the host
// (here 127.0.0.1, while rank 0 was told 127.0.0.2, as on machines whose host name resolves to
// 127.0.1.1 locally) still joins.
TEST_CASE("bootstrap: rank 0 listens on the wildcard address", "[bootstrap]") {
  const int port = free_port();
  const auto errors = run_ranks({0, 1}, [&](int r) {
    BootstrapInfo b = info(port, r, 2);
    if (r == 0) b.master_addr = "127.0.0.2";
    TcpRendezvous rv(b, 3000ms);
    Bootstrap& bootstrap = rv;  // used through the interface a communicator asks for
    REQUIRE(bootstrap.broadcast(r == 0 ? "id" : "") == "id");
  });
  for (const auto& e : errors) REQUIRE(e.empty());
}

// A connect to a listener whose queue is full is never answered (the SYNs are dropped): a
// blocking connect would wait for the kernel's retries, minutes. The deadline must hold.
TEST_CASE("bootstrap: connecting honours the deadline", "[bootstrap][faults]") {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(listener, 0) == 0);
  socklen_t n = sizeof a;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &n);
  std::vector<int> fillers;  // fill the accept queue; nobody accepts
  for (int i = 0; i < 4; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    fillers.push_back(fd);
  }
  std::this_thread::sleep_for(200ms);
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks({1}, [&](int r) { TcpRendezvous rv(info(ntohs(a.sin_port), r, 2), 300ms); });
  const auto took = std::chrono::steady_clock::now() - start;
  for (int fd : fillers) ::close(fd);
  ::close(listener);
  REQUIRE_THAT(errors[0], Catch::Contains("could not reach rank 0") && Catch::Contains("within 300 ms"));
  REQUIRE(took < 3s);  // the deadline plus one retry pause; a blocking connect takes minutes
}

// socket() can fail (here: no file descriptors left); the bootstrap says so instead of using
// descriptor -1. Run in a child process, whose descriptor limit alone is lowered.
TEST_CASE("bootstrap: a failed socket() is reported", "[bootstrap][faults]") {
  const int port = free_port();
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    rlimit none{3, 3};  // stdin, stdout, stderr: every new descriptor fails with EMFILE
    ::setrlimit(RLIMIT_NOFILE, &none);
    int status = 3;
    try {
      TcpRendezvous rv(info(port, 1, 2), 300ms);
      status = 2;
    } catch (const CommError& e) {
      status = std::string(e.what()).find("rank 1 cannot open a socket") != std::string::npos ? 0 : 1;
    } catch (...) {
    }
    ::_exit(status);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

TEST_CASE("bootstrap_from_env reads torchrun's and Slurm's variables", "[bootstrap]") {
  for (const char* v :
       {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID",
        "SLURM_LOCALID", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"})
    ::unsetenv(v);
  REQUIRE(bootstrap_from_env().world_size == 1);
  ::setenv("WORLD_SIZE", "4", 1), ::setenv("RANK", "3", 1), ::setenv("LOCAL_RANK", "1", 1);
  REQUIRE_THROWS_WITH(bootstrap_from_env(), Catch::Contains("MASTER_ADDR and MASTER_PORT are not both set"));
  ::setenv("MASTER_ADDR", "node7", 1), ::setenv("MASTER_PORT", "29511", 1);
  BootstrapInfo b = bootstrap_from_env();
  REQUIRE(
      (b.rank == 3 && b.world_size == 4 && b.local_rank == 1 && b.master_addr == "node7" && b.master_port == 29511));
  ::unsetenv("WORLD_SIZE"), ::unsetenv("RANK"), ::unsetenv("LOCAL_RANK");
  ::setenv("SLURM_NTASKS", "8", 1), ::setenv("SLURM_PROCID", "5", 1), ::setenv("SLURM_LOCALID", "1", 1);
  b = bootstrap_from_env();
  REQUIRE((b.rank == 5 && b.world_size == 8 && b.local_rank == 1));
  ::setenv("SLURM_PROCID", "9", 1);
  REQUIRE_THROWS_WITH(bootstrap_from_env(), Catch::Contains("RANK (9) must be below WORLD_SIZE (8)"));
  ::setenv("MASTER_PORT", "http", 1), ::setenv("SLURM_PROCID", "1", 1);
  REQUIRE_THROWS_WITH(bootstrap_from_env(), Catch::Contains("MASTER_PORT=\"http\" is not a valid number"));
  ::setenv("MASTER_PORT", "99999999999999999999", 1);
  REQUIRE_THROWS_WITH(bootstrap_from_env(), Catch::Contains("is not a valid number"));
  ::setenv("MASTER_PORT", "70000", 1);
  REQUIRE_THROWS_WITH(bootstrap_from_env(), Catch::Contains("MASTER_PORT (70000) must be in [1, 65535]"));
  for (const char* v : {"MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"}) ::unsetenv(v);
}
