// tpkit/comm/bootstrap.hpp: how the ranks of a job find each other without MPI: torchrun-style
// environment variables and a small TCP rendezvous at MASTER_ADDR:MASTER_PORT.
//
// Used to exchange what a communicator needs before it exists (the NCCL unique id, each rank's
// host) under torchrun-style launchers, Slurm's srun, or plain scripts. Bootstrap is the small
// interface a communicator asks for (as MSCCL++'s is); TcpRendezvous is its implementation over
// TCP. Every wait has a deadline (connecting included), and a failure names the ranks involved:
// a rank that never connects is reported to every rank that did. POSIX sockets (Linux, macOS).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

// Where this rank is in the job, and where rank 0 listens.
struct BootstrapInfo {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0, world_size = 1, local_rank = 0;
};

// From torchrun's variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), falling
// back to Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) and Open MPI's for the ranks.
// MASTER_ADDR and MASTER_PORT are required when WORLD_SIZE > 1.
inline BootstrapInfo bootstrap_from_env() {
  const auto get = [](std::initializer_list<const char*> names) -> const char* {
    for (const char* n : names)
      if (const char* v = std::getenv(n)) return v;
    return nullptr;
  };
  const auto integer = [](const char* name, const char* v) {
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v, &end, 10);
    if (!*v || *end || errno == ERANGE || x < 0 || x > (1 << 30))
      throw InvalidArgument(std::string("bootstrap: ") + name + "=\"" + v + "\" is not a valid number");
    return int(x);
  };
  BootstrapInfo info;
  if (const char* v = get({"WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"}))
    info.world_size = integer("WORLD_SIZE", v);
  if (const char* v = get({"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"})) info.rank = integer("RANK", v);
  if (const char* v = get({"LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"}))
    info.local_rank = integer("LOCAL_RANK", v);
  const char* addr = get({"MASTER_ADDR"});
  const char* port = get({"MASTER_PORT"});
  TPKIT_REQUIRE(info.world_size >= 1 && info.rank < info.world_size, "bootstrap: RANK (", info.rank,
                ") must be below WORLD_SIZE (", info.world_size, ")");
  TPKIT_REQUIRE(info.world_size == 1 || (addr && port), "bootstrap: WORLD_SIZE is ", info.world_size,
                " but MASTER_ADDR and MASTER_PORT are not both set");
  if (addr) info.master_addr = addr;
  if (port) info.master_port = integer("MASTER_PORT", port);
  TPKIT_REQUIRE(info.master_port >= 1 && info.master_port <= 65535, "bootstrap: MASTER_PORT (", info.master_port,
                ") must be in [1, 65535]");
  return info;
}

namespace bootstrap_detail {
constexpr std::uint32_t kMagic = 0x74706b31;  // "tpk1"

struct Socket {
  int fd = -1;
  Socket() = default;
  explicit Socket(int f) : fd(f) {}
  Socket(Socket&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      close();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~Socket() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

using Clock = std::chrono::steady_clock;

inline int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? int(left) : 0;
}

// Reads or writes exactly n bytes before the deadline; false on timeout or a closed peer.
inline bool transfer(int fd, void* data, std::size_t n, bool write, Clock::time_point deadline) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    pollfd pfd{fd, short(write ? POLLOUT : POLLIN), 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t k = write ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return false;
    p += k, n -= std::size_t(k);
  }
  return true;
}

inline bool send_blob(int fd, const std::string& blob, Clock::time_point deadline) {
  const std::uint64_t n = blob.size();
  return transfer(fd, const_cast<std::uint64_t*>(&n), 8, true, deadline) &&
         transfer(fd, const_cast<char*>(blob.data()), blob.size(), true, deadline);
}
inline bool recv_blob(int fd, std::string& blob, Clock::time_point deadline) {
  std::uint64_t n = 0;
  if (!transfer(fd, &n, 8, false, deadline) || n > (std::uint64_t(1) << 30)) return false;
  blob.resize(std::size_t(n));
  return transfer(fd, blob.data(), blob.size(), false, deadline);
}

// A TCP socket of `family`, or CommError naming `who`.
inline Socket open_socket(int family, const std::string& who) {
  Socket s(::socket(family, SOCK_STREAM, 0));
  if (s.fd < 0) throw CommError("bootstrap: " + who + " cannot open a socket: " + std::strerror(errno));
  return s;
}

// Connects before the deadline: a non-blocking connect, then a poll for the rest of the time
// (a blocking connect would wait for the kernel's own timeout, minutes when SYNs are dropped).
// The socket stays non-blocking; transfer() polls before every read and write. On failure
// returns false with the reason in `error`.
inline bool connect_before(int fd, const sockaddr* addr, socklen_t length, Clock::time_point deadline,
                           std::string& error) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    error = std::string("fcntl: ") + std::strerror(errno);
    return false;
  }
  if (::connect(fd, addr, length) == 0) return true;
  if (errno != EINPROGRESS && errno != EINTR) {
    error = std::strerror(errno);
    return false;
  }
  for (;;) {
    pollfd pfd{fd, POLLOUT, 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      error = std::string("poll: ") + std::strerror(errno);
      return false;
    }
    if (ready == 0) {
      error = "connection attempt timed out";
      return false;
    }
    break;
  }
  int status = 0;
  socklen_t size = sizeof status;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &status, &size) != 0) status = errno;
  if (status != 0) {
    error = std::strerror(status);
    return false;
  }
  return true;
}

// The wildcard address of `family` at `port`: rank 0 listens on every interface, so peers can
// reach it whatever its host name resolves to locally (127.0.1.1 on many Debian machines).
inline sockaddr_storage wildcard(int family, int port, socklen_t& length) {
  sockaddr_storage out{};
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&out);
    a->sin6_family = AF_INET6, a->sin6_addr = in6addr_any, a->sin6_port = htons(std::uint16_t(port));
    length = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&out);
    a->sin_family = AF_INET, a->sin_addr.s_addr = htonl(INADDR_ANY), a->sin_port = htons(std::uint16_t(port));
    length = sizeof(sockaddr_in);
  }
  return out;
}

// Every address MASTER_ADDR resolves to (IPv4 and IPv6 alike), in the resolver's order.
struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};
inline std::vector<Address> resolve(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0 || !found)
    throw CommError("bootstrap: cannot resolve MASTER_ADDR \"" + host + "\": " + ::gai_strerror(rc));
  std::vector<Address> out;
  for (const addrinfo* a = found; a; a = a->ai_next) {
    if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
    Address x;
    std::memcpy(&x.storage, a->ai_addr, a->ai_addrlen);
    x.length = a->ai_addrlen;
    out.push_back(x);
  }
  ::freeaddrinfo(found);
  if (out.empty()) throw CommError("bootstrap: MASTER_ADDR \"" + host + "\" resolves to no usable address");
  return out;
}

// Rank 0's listener on every interface at `port`: IPv6 with IPv4 mapped in (so peers reach it
// whichever family their lookup gives), or IPv4 alone where the host has no IPv6.
inline Socket listen_everywhere(int port, const std::string& where) {
  const int on = 1, off = 0;
  for (int family : {AF_INET6, AF_INET}) {
    Socket s(::socket(family, SOCK_STREAM, 0));
    if (s.fd < 0) continue;  // no such family here: try the other
    ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (family == AF_INET6) ::setsockopt(s.fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    socklen_t length = 0;
    const sockaddr_storage any = wildcard(family, port, length);
    if (::bind(s.fd, reinterpret_cast<const sockaddr*>(&any), length) == 0 && ::listen(s.fd, 128) == 0) return s;
    if (family == AF_INET) break;
  }
  throw CommError("bootstrap: rank 0 cannot listen on port " + std::to_string(port) +
                  " (every interface; MASTER_ADDR " + where + "): " + std::strerror(errno));
}

}  // namespace bootstrap_detail

// What a communicator needs from a bootstrap before it exists: the job's ranks, and a few small
// exchanges among them. Every call is collective, in the same order on every rank.
class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Every rank's `mine`, in rank order.
  virtual std::vector<std::string> all_gather(const std::string& mine) = 0;
  // Rank 0's `data` on every rank.
  virtual std::string broadcast(const std::string& data) = 0;
  virtual void barrier() { all_gather(""); }
};

// The rendezvous: rank 0 listens on every interface, every other rank connects to
// MASTER_ADDR. Collective operations go through rank 0 (fine for the few small messages a
// bootstrap exchanges).
class TcpRendezvous final : public Bootstrap {
 public:
  TcpRendezvous(const BootstrapInfo& info, std::chrono::milliseconds timeout) : info_(info), timeout_(timeout) {
    using namespace bootstrap_detail;
    const auto deadline = Clock::now() + timeout_;
    const std::string where = info.master_addr + ":" + std::to_string(info.master_port);
    if (info.world_size == 1) return;
    if (info.rank == 0) {
      Socket listener = listen_everywhere(info.master_port, where);
      peers_.resize(static_cast<std::size_t>(info.world_size));
      int joined = 1;
      while (joined < info.world_size) {
        pollfd pfd{listener.fd, POLLIN, 0};
        if (::poll(&pfd, 1, remaining_ms(deadline)) <= 0) break;
        Socket s(::accept(listener.fd, nullptr, nullptr));
        if (s.fd < 0) continue;
        // A rank says hello at once; a connection that does not (a port scan, a stale process)
        // is dropped after a second instead of holding up the ranks behind it.
        std::uint32_t hello[3] = {0, 0, 0};  // magic, rank, world size
        const auto hello_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(1));
        if (!transfer(s.fd, hello, sizeof hello, false, hello_deadline) || hello[0] != kMagic) continue;
        const int r = int(hello[1]);
        if (int(hello[2]) != info.world_size || r <= 0 || r >= info.world_size || peers_[std::size_t(r)].fd >= 0) {
          const std::string why = "rank " + std::to_string(r) + " joined with WORLD_SIZE " + std::to_string(hello[2]) +
                                  (r > 0 && r < info.world_size && peers_[std::size_t(r)].fd >= 0 ? " twice" : "") +
                                  "; rank 0 has WORLD_SIZE " + std::to_string(info.world_size);
          send_blob(s.fd, "-bootstrap at " + where + ": " + why, Clock::now() + std::chrono::seconds(1));
          fail_all("bootstrap at " + where + ": " + why);
        }
        peers_[std::size_t(r)] = std::move(s);
        ++joined;
      }
      if (joined < info.world_size) {
        std::string missing;
        for (int r = 1; r < info.world_size; ++r)
          if (peers_[std::size_t(r)].fd < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        fail_all("bootstrap at " + where + ": rank(s) " + missing + " of " + std::to_string(info.world_size) +
                 " did not connect within " + std::to_string(timeout_.count()) + " ms");
      }
      for (int r = 1; r < info.world_size; ++r) send_blob(peers_[std::size_t(r)].fd, "", deadline);  // all here
    } else {
      // Rank 0 may not be listening yet: retry every address MASTER_ADDR has until the deadline.
      const std::vector<Address> addresses = resolve(info.master_addr, info.master_port);
      std::string last_error = "no answer";
      for (std::size_t attempt = 0;; ++attempt) {
        const Address& addr = addresses[attempt % addresses.size()];
        Socket s = open_socket(addr.storage.ss_family, "rank " + std::to_string(info.rank));
        if (connect_before(s.fd, addr.get(), addr.length, deadline, last_error)) {
          const std::uint32_t hello[3] = {kMagic, std::uint32_t(info.rank), std::uint32_t(info.world_size)};
          if (transfer(s.fd, const_cast<std::uint32_t*>(hello), sizeof hello, true, deadline)) {
            root_ = std::move(s);
            break;
          }
          last_error = "rank 0 closed the connection";
        }
        if (Clock::now() >= deadline)
          throw CommError("bootstrap: rank " + std::to_string(info.rank) + " could not reach rank 0 at " + where +
                          " within " + std::to_string(timeout_.count()) + " ms (" + last_error + ")");
        if (attempt % addresses.size() == addresses.size() - 1)  // every address tried: pause
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      // Rank 0 answers once everyone has joined: an empty blob, or the reason it gave up.
      expect_ok(verdict_deadline(), "the other ranks to join");
    }
  }

  int rank() const override { return info_.rank; }
  int size() const override { return info_.world_size; }

  std::vector<std::string> all_gather(const std::string& mine) override {
    using namespace bootstrap_detail;
    const auto deadline = Clock::now() + timeout_;
    std::vector<std::string> all(static_cast<std::size_t>(size()));
    all[std::size_t(rank())] = mine;
    if (size() == 1) return all;
    if (rank() == 0) {
      for (int r = 1; r < size(); ++r)
        if (!recv_blob(peers_[std::size_t(r)].fd, all[std::size_t(r)], deadline))
          fail_all("bootstrap all_gather: rank " + std::to_string(r) + " sent nothing within " +
                   std::to_string(timeout_.count()) + " ms (stalled or exited)");
      std::string packed;
      for (const std::string& s : all) packed += std::to_string(s.size()) + ":" + s;
      for (int r = 1; r < size(); ++r) send_blob(peers_[std::size_t(r)].fd, "+" + packed, deadline);
      return all;
    }
    if (!send_blob(root_.fd, mine, deadline)) lost_root("all_gather");
    const std::string packed = expect_ok(verdict_deadline(), "all_gather");
    std::size_t at = 0;
    for (auto& s : all) {
      const std::size_t colon = packed.find(':', at);
      const std::size_t n = std::stoull(packed.substr(at, colon - at));
      s = packed.substr(colon + 1, n);
      at = colon + 1 + n;
    }
    return all;
  }

  std::string broadcast(const std::string& data) override {
    using namespace bootstrap_detail;
    const auto deadline = Clock::now() + timeout_;
    if (size() == 1) return data;
    if (rank() == 0) {
      for (int r = 1; r < size(); ++r)
        if (!send_blob(peers_[std::size_t(r)].fd, "+" + data, deadline))
          fail_all("bootstrap broadcast: rank " + std::to_string(r) + " is gone");
      return data;
    }
    return expect_ok(verdict_deadline(), "broadcast");
  }

 private:
  // Rank 0: tells every connected rank why the bootstrap failed, then throws it.
  [[noreturn]] void fail_all(const std::string& why) {
    const auto deadline = bootstrap_detail::Clock::now() + std::chrono::seconds(1);
    for (auto& p : peers_)
      if (p.fd >= 0) bootstrap_detail::send_blob(p.fd, "-" + why, deadline);
    throw CollectiveTimeout(why);
  }
  // A rank waiting for rank 0's answer allows rank 0 its own timeout to find a missing rank,
  // and time to say so, so that every rank reports the same cause.
  bootstrap_detail::Clock::time_point verdict_deadline() const {
    return bootstrap_detail::Clock::now() + 2 * timeout_ + std::chrono::seconds(1);
  }
  [[noreturn]] void lost_root(const char* what) {
    throw CollectiveTimeout("bootstrap " + std::string(what) + ": rank " + std::to_string(rank()) +
                            " lost its connection to rank 0 at " + info_.master_addr + ":" +
                            std::to_string(info_.master_port) + " (rank 0 exited or failed)");
  }
  // Non-root: rank 0's answer: "+payload", or "-reason" (thrown).
  std::string expect_ok(bootstrap_detail::Clock::time_point deadline, const char* waiting_for) {
    std::string answer;
    if (!bootstrap_detail::recv_blob(root_.fd, answer, deadline)) {
      if (bootstrap_detail::Clock::now() >= deadline)
        throw CollectiveTimeout("bootstrap: rank " + std::to_string(rank()) + " waited " +
                                std::to_string(timeout_.count()) + " ms for rank 0 (" + waiting_for + ")");
      lost_root(waiting_for);
    }
    if (!answer.empty() && answer[0] == '-') throw CollectiveTimeout(answer.substr(1));
    return answer.empty() ? answer : answer.substr(1);
  }

  BootstrapInfo info_;
  std::chrono::milliseconds timeout_;
  std::vector<bootstrap_detail::Socket> peers_;  // rank 0: one per other rank
  bootstrap_detail::Socket root_;                // other ranks: to rank 0
};

}  // namespace tpkit
