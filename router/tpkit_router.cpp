// tpkit-router: one OpenAI-compatible endpoint in front of several tpkit-serve replicas, with
// routing policies, health checks, retries and exact mid-stream failover. `--help` lists every
// option; docs/serving.md explains them.
//
//   tpkit-router --worker http://127.0.0.1:8001 --worker http://127.0.0.1:8002 --port 8000
#include "cli.hpp"

int main(int argc, char** argv) { return tpkit::router::router_main(argc, argv); }
