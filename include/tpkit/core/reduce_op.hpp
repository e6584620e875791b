// tpkit/core/reduce_op.hpp: the reductions collectives and the rank-order kernel apply.
#pragma once

#include "tpkit/config.hpp"

namespace tpkit {

enum class ReduceOp : unsigned char { sum, max };

inline const char* reduce_op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "max"; }

}  // namespace tpkit
