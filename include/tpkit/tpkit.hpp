// tpkit/tpkit.hpp: everything in include/tpkit, for users who want one include.
#pragma once

#include "tpkit/comm/backend.hpp"
#include "tpkit/comm/communicator.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/config.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/layers/embedding.hpp"
#include "tpkit/layers/gate_up.hpp"
#include "tpkit/layers/linear.hpp"
#include "tpkit/layers/qkv.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/shard.hpp"
