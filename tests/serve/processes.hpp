// Helpers of the tests that run tpkit-serve and tpkit-router as real processes on loopback: a
// process that listens, a raw streaming HTTP client that can walk away mid-stream, and the
// standard output of a command. Clients only: nothing here links tpkit.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"

extern char** environ;

namespace serve_test {

using nlohmann::json;
using namespace std::chrono_literals;

// The standard output of a command (its words quoted for the shell).
std::string output_of(const std::vector<std::string>& words) {
  std::string command;
  for (const std::string& w : words) {
    command += " '";
    for (char c : w) command += c == '\'' ? std::string("'\\''") : std::string(1, c);
    command += "'";
  }
  command += " 2>/dev/null";
  std::FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe);
  std::string out;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  REQUIRE(pclose(pipe) == 0);
  return out;
}

// A server process (tpkit-serve, tpkit-router) on a free loopback port: started with `args`, ready
// once it printed "listening on http://127.0.0.1:PORT"; killed (SIGKILL) when destroyed.
class ListeningProcess {
 public:
  explicit ListeningProcess(std::vector<std::string> args) {
    int out[2];
    REQUIRE(pipe(out) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    stdout_ = out[0];
    // "listening on http://HOST:PORT", within a minute.
    std::string seen;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    std::smatch m;
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)\n");
    while (!std::regex_search(seen, m, listening)) {
      pollfd p{stdout_, POLLIN, 0};
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      if (poll(&p, 1, 100) <= 0) continue;
      char buffer[256];
      const ssize_t n = read(stdout_, buffer, sizeof buffer);
      REQUIRE(n > 0);  // the server exited before it listened
      seen.append(buffer, std::size_t(n));
    }
    port = std::stoi(m[1]);
  }
  ~ListeningProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(stdout_);
  }
  // SIGTERM to `target` (default: the process started); the started process's exit status (or -1
  // if it did not exit within `limit`).
  int terminate(std::chrono::seconds limit = 60s, pid_t target = 0) {
    kill(target ? target : pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) return -1;
      std::this_thread::sleep_for(10ms);
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Sends `signal` to the process (SIGKILL, SIGSTOP, SIGCONT), as a failure would.
  void signal(int sig) const { kill(pid_, sig); }
  // SIGKILL, and waits for it.
  void kill_now() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
  // The process of world rank 0 under the launcher started (Open MPI sets OMPI_COMM_WORLD_RANK).
  pid_t rank0() const {
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream environ_file(entry.path() / "environ", std::ios::binary);
      const std::string env((std::istreambuf_iterator<char>(environ_file)), std::istreambuf_iterator<char>());
      std::ifstream cmdline(entry.path() / "cmdline", std::ios::binary);
      const std::string cmd((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      if (cmd.find("tpkit-serve") != std::string::npos &&
          env.find(std::string("OMPI_COMM_WORLD_RANK=0") + '\0') != std::string::npos &&
          env.find("OMPI_COMM_WORLD_SIZE=") != std::string::npos && descends_from(pid_t(std::stol(name))))
        return pid_t(std::stol(name));
    }
    return 0;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
  int port = 0;

 private:
  bool descends_from(pid_t p) const {
    for (int depth = 0; p > 1 && depth < 8; ++depth) {
      if (p == pid_) return true;
      std::ifstream stat("/proc/" + std::to_string(p) + "/stat");
      std::string pid, comm, state;
      long parent = 0;
      stat >> pid >> comm >> state >> parent;
      p = pid_t(parent);
    }
    return false;
  }

  pid_t pid_ = -1;
  int stdout_ = -1;
};

// Catch2's assertions are not thread-safe: what client threads run throws instead.
void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

// A raw HTTP/1.1 POST whose response is read as it arrives: the streaming client, which can
// also walk away mid-stream.
class RawStream {
 public:
  RawStream(int port, const std::string& path, const json& body, const std::string& extra_headers = "") {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(std::uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    expect(connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect failed");
    const std::string payload = body.dump();
    const std::string request =
        "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers +
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(payload.size()) + "\r\n\r\n" + payload;
    expect(send(fd_, request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size()), "send failed");
  }
  ~RawStream() { close_now(); }
  void close_now() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  // Reads until `done(raw)` or the server closes; false on timeout.
  template <class Done>
  bool read_until(Done done, std::chrono::seconds limit = 120s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done(raw_)) {
      pollfd p{fd_, POLLIN, 0};
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (poll(&p, 1, 100) <= 0) continue;
      char buffer[4096];
      const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return true;
      raw_.append(buffer, std::size_t(n));
    }
    return true;
  }
  void read_all() {
    expect(read_until([](const std::string&) { return false; }), "the response did not end");
  }
  int status() const {
    expect(raw_.size() > 12, "no HTTP response");
    return std::stoi(raw_.substr(9, 3));
  }
  // The body with chunked transfer encoding undone.
  std::string body() const {
    const std::size_t start = raw_.find("\r\n\r\n");
    std::string out;
    if (raw_.find("Transfer-Encoding: chunked") == std::string::npos) return raw_.substr(start + 4);
    for (std::size_t at = start + 4; at < raw_.size();) {
      const std::size_t eol = raw_.find("\r\n", at);
      if (eol == std::string::npos) break;
      const std::size_t n = std::stoul(raw_.substr(at, eol - at), nullptr, 16);
      if (n == 0) break;
      out += raw_.substr(eol + 2, n);
      at = eol + 2 + n + 2;
    }
    return out;
  }
  // The server-sent events' data fields.
  std::vector<std::string> events() const {
    std::vector<std::string> out;
    const std::string b = body();
    for (std::size_t at = 0; (at = b.find("data: ", at)) != std::string::npos;) {
      const std::size_t end = b.find("\n\n", at);
      out.push_back(b.substr(at + 6, end - at - 6));
      at = end;
    }
    return out;
  }
  const std::string& raw() const { return raw_; }

 private:
  int fd_ = -1;
  std::string raw_;
};

}  // namespace serve_test
