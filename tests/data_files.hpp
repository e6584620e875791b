// Reading the tests' data files: a whole file, and JSON Lines (one record per line).
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tpkit/io/json.hpp"

namespace test_data {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::vector<tpkit::Json> read_jsonl(const std::string& path) {
  std::vector<tpkit::Json> records;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) records.push_back(tpkit::Json::parse(line, path));
  return records;
}

}  // namespace test_data
