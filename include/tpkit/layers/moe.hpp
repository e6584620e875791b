// tpkit/layers/moe.hpp: the mixture-of-experts MLP of Mixtral, Qwen2-MoE and Qwen3-MoE over a
// group of ranks, in three layouts.
//
// Routing is transformers': a replicated router linear gives one logit per expert, softmax in
// float, the top_k experts (ties to the lowest index), their probabilities divided by their sum
// when the model normalises. Each chosen expert is a SwiGLU MLP; the token's output is the sum
// of the experts' outputs times their weights, added in expert order. Qwen2-MoE adds a shared
// expert scaled by sigmoid(shared_expert_gate(x)).
//
// Layouts (how the layer uses the group; the group is the tensor-parallel group):
//   tensor_parallel   every rank holds every expert's slice of the intermediate dimension
//                     (gate/up by rows, down by columns); one all-reduce.
//   expert_parallel   each rank holds whole experts (ExpertPlacement); tokens are replicated,
//                     each rank computes the tokens routed to its experts; one all-reduce.
//   expert_dispatch   each rank routes a slice of the tokens, sends each token to the ranks
//                     computing its experts (all-to-all), they return one partial sum per
//                     token (all-to-all), and an all-gather replicates the outputs again.
// The shared expert is split like a dense MLP in every layout. A rank reads from the checkpoint
// only the experts (or expert slices) it computes.
//
// Arithmetic order: every rank adds its experts in expert order, and the partial sums of the
// ranks are added in rank order (the all-reduce's order in tpkit's backends). So for float
// storage the expert_parallel and expert_dispatch layouts give bitwise-equal outputs on the
// same group and placement (without a shared expert); tensor_parallel splits each expert's
// down projection, and so rounds differently.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/layers/detail.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

enum class MoELayout { tensor_parallel, expert_parallel, expert_dispatch };

// The command-line names: tp, ep (vLLM's --enable-expert-parallel), ep-dispatch.
inline const char* moe_layout_name(MoELayout layout) {
  switch (layout) {
    case MoELayout::tensor_parallel:
      return "tp";
    case MoELayout::expert_parallel:
      return "ep";
    case MoELayout::expert_dispatch:
      return "ep-dispatch";
  }
  return "?";
}

inline MoELayout parse_moe_layout(const std::string& name) {
  for (MoELayout l : {MoELayout::tensor_parallel, MoELayout::expert_parallel, MoELayout::expert_dispatch})
    if (name == moe_layout_name(l)) return l;
  throw InvalidArgument("unknown MoE layout \"" + name + "\"; expected tp, ep or ep-dispatch");
}

struct MoERouting {
  int top_k = 1;
  bool normalize = true;  // divide the chosen experts' probabilities by their sum
};

// One token's routing: softmax over `num_experts` logits in float, then the top_k experts by
// probability, highest first (equal probabilities: the lower index first), and their weights.
// probs: num_experts floats of scratch.
inline void route_token(const float* logits, int num_experts, MoERouting routing, float* probs, std::int32_t* experts,
                        float* weights) {
  float top = logits[0];
  for (int e = 1; e < num_experts; ++e) top = std::max(top, logits[e]);
  float sum = 0.0f;
  for (int e = 0; e < num_experts; ++e) sum += probs[e] = std::exp(logits[e] - top);
  for (int e = 0; e < num_experts; ++e) probs[e] /= sum;
  float chosen_sum = 0.0f;
  for (int k = 0; k < routing.top_k; ++k) {
    int best = -1;
    for (int e = 0; e < num_experts; ++e) {
      if (std::find(experts, experts + k, e) != experts + k) continue;
      if (best < 0 || probs[e] > probs[best]) best = e;  // strict: ties keep the lower index
    }
    experts[k] = best;
    weights[k] = probs[best];
    chosen_sum += probs[best];
  }
  if (routing.normalize)
    for (int k = 0; k < routing.top_k; ++k) weights[k] /= chosen_sum;
}

// One expert's full weights: gate and up [intermediate, hidden], down [hidden, intermediate].
struct ExpertWeights {
  RawTensorView gate, up, down;
  bool empty() const { return gate.empty(); }
};

struct MoEWeights {
  RawTensorView router;                // [num_experts, hidden]
  std::vector<ExpertWeights> experts;  // views only: a rank reads just what it computes
  ExpertWeights shared;                // Qwen2-MoE's shared expert (empty: none)
  RawTensorView shared_gate;           // [1, hidden], with a shared expert
};

struct MoEOptions {
  MoELayout layout = MoELayout::tensor_parallel;
  // Which ranks hold which experts in the expert layouts; empty: balanced_expert_placement.
  ExpertPlacement placement;
};

// A model's sparse layers: one layout, and per layer which rank holds which experts (layers not
// listed: balanced).
struct MoEModelOptions {
  MoELayout layout = MoELayout::tensor_parallel;
  std::map<std::int64_t, ExpertPlacement> placements;

  MoEOptions for_layer(std::int64_t layer) const {
    const auto it = placements.find(layer);
    return {layout, it == placements.end() ? ExpertPlacement{} : it->second};
  }
};

template <class T, class Ops = HostOps>
class MoELayer {
 public:
  MoELayer(const Ops& ops, const MoEWeights& w, MoERouting routing, ShardSpec shard, MoEOptions options = {})
      : ops_(ops), routing_(routing), shard_(shard), layout_(options.layout) {
    layer_detail::check_full_weight(w.router, "MoE router weight", -1, -1);
    num_experts_ = int(w.router.size(0));
    hidden_ = w.router.size(1);
    TPKIT_REQUIRE(std::int64_t(w.experts.size()) == num_experts_, "the MoE router scores ", num_experts_,
                  " experts but ", w.experts.size(), " are given");
    TPKIT_REQUIRE(routing.top_k >= 1 && routing.top_k <= num_experts_, "MoE top_k (", routing.top_k,
                  ") must be in [1, ", num_experts_, "]");
    placement_ = options.placement.empty() ? balanced_expert_placement(num_experts_, shard.size) : options.placement;
    placement_.validate(num_experts_, shard.size);
    router_ = layer_detail::LocalWeight<T, Ops>(ops, {{w.router, {0, num_experts_}, {0, hidden_}}}, {});
    experts_.resize(std::size_t(num_experts_));
    for (int e = 0; e < num_experts_; ++e) {
      const ExpertWeights& x = w.experts[std::size_t(e)];
      if (layout_ != MoELayout::tensor_parallel && !placement_.holds(shard.rank, e)) continue;
      const std::string name = "MoE expert " + std::to_string(e);
      experts_[std::size_t(e)] = load_mlp(ops, x, name, layout_ == MoELayout::tensor_parallel);
    }
    if (!w.shared.empty()) {
      shared_ = load_mlp(ops, w.shared, "MoE shared expert", true);
      layer_detail::check_full_weight(w.shared_gate, "MoE shared expert gate", 1, hidden_);
      shared_gate_ = layer_detail::LocalWeight<T, Ops>(ops, {{w.shared_gate, {0, 1}, {0, hidden_}}}, {});
    }
    tokens_per_expert_.assign(std::size_t(num_experts_), 0);
  }

  int num_experts() const { return num_experts_; }
  std::int64_t hidden_size() const { return hidden_; }
  MoELayout layout() const { return layout_; }
  const ExpertPlacement& placement() const { return placement_; }
  bool has_shared_expert() const { return shared_.present; }
  // Whether this rank computes (a slice of) expert e.
  bool computes(int e) const { return experts_[std::size_t(e)].present; }
  // Tokens routed to each expert by every forward() so far, over the whole group and only the
  // rows marked counted (not a fixed-shape step's padding); the same on every rank.
  const std::vector<std::int64_t>& tokens_per_expert() const { return tokens_per_expert_; }
  void reset_statistics() { std::fill(tokens_per_expert_.begin(), tokens_per_expert_.end(), 0); }

  // fn(name, N, K, has_bias, float_output) for every local linear product (as
  // TransformerModel::for_each_linear).
  template <class F>
  void for_each_linear(const std::string& prefix, F&& fn) const {
    fn(prefix + "router", num_experts_, hidden_, false, true);
    for (int e = 0; e < num_experts_; ++e) {
      const Mlp& m = experts_[std::size_t(e)];
      if (!m.present) continue;
      fn(prefix + "expert " + std::to_string(e) + " gate_up_proj", m.gate_up.rows(), hidden_, false, false);
      fn(prefix + "expert " + std::to_string(e) + " down_proj", hidden_, m.down.cols(), false, false);
    }
    if (shared_.present) {
      fn(prefix + "shared_expert gate_up_proj", shared_.gate_up.rows(), hidden_, false, false);
      fn(prefix + "shared_expert down_proj", hidden_, shared_.down.cols(), false, false);
      fn(prefix + "shared_expert_gate", 1, hidden_, false, true);
    }
  }

  // y = MoE(x) for x, y [n, hidden] replicated on every rank of the group. positions: each
  // row's position in its sequence (chooses among an expert's copies; null: all 0). counted:
  // whether each row counts in the statistics (null: all).
  template <class Backend>
  void forward(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y,
               const std::int64_t* positions = nullptr, const std::uint8_t* counted = nullptr) {
    layer_detail::check_group(comm, shard_, "MoELayer");
    layer_detail::check_activation(x, "MoELayer input", hidden_, Ops::memory);
    layer_detail::check_activation(y, "MoELayer output", hidden_, Ops::memory);
    const std::int64_t n = x.size(0);
    layer_detail::check_batch(y, "MoELayer output", n);
    TPKIT_REQUIRE(y.is_contiguous() && x.is_contiguous(), "MoELayer input and output must be contiguous");
    if (layout_ == MoELayout::expert_dispatch)
      forward_dispatch(comm, x, y, positions, counted);
    else
      forward_replicated(comm, x, y, positions, counted);
  }

 private:
  // A SwiGLU MLP's local weights: [gate | up] rows stacked, and down.
  struct Mlp {
    bool present = false;
    layer_detail::LocalWeight<T, Ops> gate_up, down;
  };

  // split: this rank's slice of the intermediate dimension, else all of it.
  Mlp load_mlp(const Ops& ops, const ExpertWeights& w, const std::string& name, bool split) const {
    layer_detail::check_full_weight(w.gate, (name + " gate weight").c_str(), -1, hidden_);
    const std::int64_t inter = w.gate.size(0);
    layer_detail::check_full_weight(w.up, (name + " up weight").c_str(), inter, hidden_);
    layer_detail::check_full_weight(w.down, (name + " down weight").c_str(), hidden_, inter);
    const Range cols =
        split ? split_dimension(inter, shard_, 1, (name + " intermediate size").c_str()) : Range{0, inter};
    const Range all{0, hidden_};
    Mlp m;
    m.present = true;
    m.gate_up = layer_detail::LocalWeight<T, Ops>(ops, {{w.gate, cols, all}, {w.up, cols, all}}, {});
    m.down = layer_detail::LocalWeight<T, Ops>(ops, {{w.down, all, cols}}, {});
    return m;
  }

  // Routes rows [begin, begin + count) of x: choice_ and weight_ get top_k entries per row.
  void route(TensorView<const T> x, std::int64_t begin, std::int64_t count) {
    const std::size_t k = std::size_t(routing_.top_k);
    choice_.resize(std::size_t(count) * k);
    weight_.resize(std::size_t(count) * k);
    if (count == 0) return;
    logits_.reserve_at_least(std::size_t(count * num_experts_));
    router_.apply(x.row(begin), x.stride(0), count, logits_.data(), num_experts_, false);
    logits_host_.resize(std::size_t(count * num_experts_));
    ops_.download(logits_.data(), logits_host_.data(), logits_host_.size());
    // transformers computes the router in the model's dtype and casts the weights to it: a
    // 16-bit model's ties are those of its 16-bit logits.
    if constexpr (!std::is_same_v<T, float>)
      for (float& v : logits_host_) v = to_float(from_float<T>(v));
    probs_.resize(std::size_t(num_experts_));
    for (std::int64_t t = 0; t < count; ++t)
      route_token(logits_host_.data() + t * num_experts_, num_experts_, routing_, probs_.data(),
                  choice_.data() + std::size_t(t) * k, weight_.data() + std::size_t(t) * k);
    if constexpr (!std::is_same_v<T, float>)
      for (float& w : weight_) w = to_float(from_float<T>(w));
  }

  void count_routed(std::int64_t begin, std::int64_t count, const std::uint8_t* counted,
                    std::vector<std::int64_t>& into) const {
    const std::size_t k = std::size_t(routing_.top_k);
    for (std::int64_t t = 0; t < count; ++t)
      if (!counted || counted[begin + t])
        for (std::size_t j = 0; j < k; ++j) ++into[std::size_t(choice_[std::size_t(t) * k + j])];
  }

  // For each expert this rank computes, in expert order: the rows (of `source`, `rows_in`
  // many) routed to it, then MLP, then their weighted outputs added into `out` at those rows.
  // row_expert(r, j) and row_weight(r, j) give row r's j-th choice (expert -1: none).
  template <class Choice, class Weight>
  void run_experts(const T* source, std::int64_t rows_in, Choice&& row_expert, Weight&& row_weight, T* out) {
    const std::size_t k = std::size_t(routing_.top_k);
    // Counting sort by expert, rows ascending within an expert: a fixed order whatever the batch.
    offsets_.assign(std::size_t(num_experts_) + 1, 0);
    for (std::int64_t r = 0; r < rows_in; ++r)
      for (std::size_t j = 0; j < k; ++j)
        if (const int e = row_expert(r, j); e >= 0) ++offsets_[std::size_t(e) + 1];
    for (int e = 0; e < num_experts_; ++e) offsets_[std::size_t(e) + 1] += offsets_[std::size_t(e)];
    rows_.resize(std::size_t(offsets_.back()));
    row_weights_.resize(rows_.size());
    fill_.assign(offsets_.begin(), offsets_.end() - 1);
    for (std::int64_t r = 0; r < rows_in; ++r)
      for (std::size_t j = 0; j < k; ++j)
        if (const int e = row_expert(r, j); e >= 0) {
          const std::size_t at = std::size_t(fill_[std::size_t(e)]++);
          rows_[at] = std::int32_t(r);
          row_weights_[at] = row_weight(r, j);
        }
    for (int e = 0; e < num_experts_; ++e) {
      const std::int64_t first = offsets_[std::size_t(e)], m = offsets_[std::size_t(e) + 1] - first;
      if (m == 0) continue;
      TPKIT_REQUIRE(computes(e), "a token was routed to expert ", e, " on a rank that does not hold it");
      gathered_.reserve_at_least(std::size_t(m * hidden_));
      ops_.gather_rows_at(source, hidden_, hidden_, rows_.data() + first, m, gathered_.data(), hidden_);
      run_mlp(experts_[std::size_t(e)], gathered_.data(), m);
      ops_.scatter_add_rows(expert_out_.data(), hidden_, hidden_, rows_.data() + first, row_weights_.data() + first, m,
                            out, hidden_);
    }
  }

  // expert_out_ = MLP(x) for m rows.
  void run_mlp(const Mlp& mlp, const T* x, std::int64_t m) {
    const std::int64_t inter = mlp.down.cols();
    gate_up_.reserve_at_least(std::size_t(m * 2 * inter));
    act_.reserve_at_least(std::size_t(m * inter));
    expert_out_.reserve_at_least(std::size_t(m * hidden_));
    mlp.gate_up.apply(x, hidden_, m, gate_up_.data(), 2 * inter, false);
    ops_.silu_and_mul(gate_up_.data(), m, inter, act_.data());
    mlp.down.apply(act_.data(), inter, m, expert_out_.data(), hidden_, false);
  }

  // out[r] += sigmoid(shared_expert_gate(x[r])) * this rank's share of shared_expert(x[r]) for
  // the n rows of x (every rank's shares sum to the shared expert's output).
  void add_shared_expert(TensorView<const T> x, std::int64_t n, T* out) {
    if (!shared_.present || n == 0) return;
    gate_logit_.reserve_at_least(std::size_t(n));
    shared_gate_.apply(x.data(), x.stride(0), n, gate_logit_.data(), 1, false);
    gate_host_.resize(std::size_t(n));
    ops_.download(gate_logit_.data(), gate_host_.data(), gate_host_.size());
    identity_.resize(std::size_t(n));
    for (std::int64_t r = 0; r < n; ++r) {
      // In the model's dtype, as transformers: the gate's logit and its sigmoid rounded to T.
      const float z = to_float(from_float<T>(gate_host_[std::size_t(r)]));
      gate_host_[std::size_t(r)] = to_float(from_float<T>(1.0f / (1.0f + std::exp(-z))));
      identity_[std::size_t(r)] = std::int32_t(r);
    }
    run_mlp(shared_, x.data(), n);
    ops_.scatter_add_rows(expert_out_.data(), hidden_, hidden_, identity_.data(), gate_host_.data(), n, out, hidden_);
  }

  template <class Backend>
  void forward_replicated(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y,
                          const std::int64_t* positions, const std::uint8_t* counted) {
    const std::int64_t n = x.size(0);
    const std::size_t k = std::size_t(routing_.top_k);
    route(x, 0, n);
    count_routed(0, n, counted, tokens_per_expert_);
    ops_.fill_zero(y.data(), std::size_t(n * hidden_));
    const bool split = layout_ == MoELayout::tensor_parallel;
    run_experts(
        x.data(), n,
        [&](std::int64_t r, std::size_t j) {
          const int e = choice_[std::size_t(r) * k + j];
          return split || placement_.computing_rank(e, positions ? positions[r] : 0) == shard_.rank ? e : -1;
        },
        [&](std::int64_t r, std::size_t j) { return weight_[std::size_t(r) * k + j]; }, y.data());
    add_shared_expert(x, n, y.data());
    if (shard_.size > 1) comm.all_reduce(y.data(), std::size_t(n * hidden_));
  }

  template <class Backend>
  void forward_dispatch(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y,
                        const std::int64_t* positions, const std::uint8_t* counted) {
    const std::int64_t n = x.size(0), H = hidden_;
    const int ranks = shard_.size;
    const std::size_t k = std::size_t(routing_.top_k), E = std::size_t(num_experts_);
    const Range slice = token_slice(n, shard_);
    route(x, slice.begin, slice.size());

    // What goes to each rank: the slice's rows with a chosen expert computed there (ascending),
    // each with top_k (expert, weight) pairs for that rank (expert -1: computed elsewhere).
    send_rows_.resize(std::size_t(ranks));
    for (std::vector<std::int32_t>& rows : send_rows_) rows.clear();  // keeps their capacity
    for (std::int64_t t = 0; t < slice.size(); ++t)
      for (int d = 0; d < ranks; ++d)
        for (std::size_t j = 0; j < k; ++j) {
          const int e = choice_[std::size_t(t) * k + j];
          if (placement_.computing_rank(e, positions ? positions[slice.begin + t] : 0) == d) {
            send_rows_[std::size_t(d)].push_back(std::int32_t(slice.begin + t));
            break;
          }
        }
    // The counts exchange also carries this slice's tokens per expert, so that every rank
    // learns the group's statistics: [rows for rank d, tokens of expert 0, 1, ...].
    const std::size_t header = 1 + E;
    slice_counts_.assign(E, 0);
    count_routed(0, slice.size(), counted ? counted + slice.begin : nullptr, slice_counts_);
    // Everything sent goes through the policy's memory (device memory with NCCL).
    header_host_.assign(std::size_t(ranks) * header, 0);
    for (int d = 0; d < ranks; ++d) {
      std::int64_t* h = header_host_.data() + std::size_t(d) * header;
      h[0] = std::int64_t(send_rows_[std::size_t(d)].size());
      for (std::size_t e = 0; e < E; ++e) h[1 + e] = slice_counts_[e];
    }
    header_send_.reserve_at_least(header_host_.size());
    header_recv_.reserve_at_least(header_host_.size());
    ops_.upload(header_host_.data(), header_send_.data(), header_host_.size());
    comm.all_to_all(header_send_.data(), header_recv_.data(), header);
    ops_.download(header_recv_.data(), header_host_.data(), header_host_.size());
    send_counts_.assign(std::size_t(ranks), 0);
    recv_counts_.assign(std::size_t(ranks), 0);
    std::size_t sent = 0, received = 0;
    for (int d = 0; d < ranks; ++d) {
      send_counts_[std::size_t(d)] = send_rows_[std::size_t(d)].size();
      recv_counts_[std::size_t(d)] = std::size_t(header_host_[std::size_t(d) * header]);
      sent += send_counts_[std::size_t(d)], received += recv_counts_[std::size_t(d)];
      for (std::size_t e = 0; e < E; ++e) tokens_per_expert_[e] += header_host_[std::size_t(d) * header + 1 + e];
    }

    // Tokens and their (expert, weight) pairs out.
    send_index_.clear();
    for (const std::vector<std::int32_t>& rows : send_rows_)
      send_index_.insert(send_index_.end(), rows.begin(), rows.end());
    send_x_.reserve_at_least(std::max<std::size_t>(1, sent * std::size_t(H)));
    ops_.gather_rows_at(x.data(), x.stride(0), H, send_index_.data(), std::int64_t(sent), send_x_.data(), H);
    meta_host_.clear();
    for (int d = 0; d < ranks; ++d)
      for (std::int32_t row : send_rows_[std::size_t(d)]) {
        const std::int64_t t = row - slice.begin;
        for (std::size_t j = 0; j < k; ++j) {
          const int e = choice_[std::size_t(t) * k + j];
          const bool here = placement_.computing_rank(e, positions ? positions[row] : 0) == d;
          meta_host_.push_back(here ? float(e) : -1.0f);  // expert ids are exact in float (< 2^24)
          meta_host_.push_back(here ? weight_[std::size_t(t) * k + j] : 0.0f);
        }
      }
    recv_x_.reserve_at_least(std::max<std::size_t>(1, received * std::size_t(H)));
    meta_send_.reserve_at_least(std::max<std::size_t>(1, meta_host_.size()));
    meta_recv_.reserve_at_least(std::max<std::size_t>(1, received * 2 * k));
    ops_.upload(meta_host_.data(), meta_send_.data(), meta_host_.size());
    scaled(send_counts_, std::size_t(H), scaled_send_);
    scaled(recv_counts_, std::size_t(H), scaled_recv_);
    comm.all_to_all_v(send_x_.data(), scaled_send_, recv_x_.data(), scaled_recv_);
    scaled(send_counts_, 2 * k, scaled_send_);
    scaled(recv_counts_, 2 * k, scaled_recv_);
    comm.all_to_all_v(meta_send_.data(), scaled_send_, meta_recv_.data(), scaled_recv_);
    meta_host_.resize(received * 2 * k);
    ops_.download(meta_recv_.data(), meta_host_.data(), meta_host_.size());

    // This rank's experts over the tokens it received: one partial sum per token.
    partial_.reserve_at_least(std::max<std::size_t>(1, received * std::size_t(H)));
    ops_.fill_zero(partial_.data(), received * std::size_t(H));
    run_experts(
        recv_x_.data(), std::int64_t(received),
        [&](std::int64_t r, std::size_t j) { return int(meta_host_[(std::size_t(r) * k + j) * 2]); },
        [&](std::int64_t r, std::size_t j) { return meta_host_[(std::size_t(r) * k + j) * 2 + 1]; }, partial_.data());

    // Partial sums back to the tokens' owners, added in rank order.
    combined_.reserve_at_least(std::max<std::size_t>(1, sent * std::size_t(H)));
    scaled(recv_counts_, std::size_t(H), scaled_send_);
    scaled(send_counts_, std::size_t(H), scaled_recv_);
    comm.all_to_all_v(partial_.data(), scaled_send_, combined_.data(), scaled_recv_);
    const std::int64_t m = slice.size();
    own_.reserve_at_least(std::max<std::size_t>(1, std::size_t(m * H)));
    ops_.fill_zero(own_.data(), std::size_t(m * H));
    std::size_t at = 0;
    for (int d = 0; d < ranks; ++d) {
      local_rows_.clear();
      for (std::int32_t row : send_rows_[std::size_t(d)]) local_rows_.push_back(std::int32_t(row - slice.begin));
      ops_.scatter_add_rows(combined_.data() + at * std::size_t(H), H, H, local_rows_.data(), nullptr,
                            std::int64_t(local_rows_.size()), own_.data(), H);
      at += local_rows_.size();
    }

    // The shared expert is split like a dense MLP over all rows; a reduce-scatter sums each
    // slice's share onto its owner.
    gather_counts_.assign(std::size_t(ranks), 0);
    for (int r = 0; r < ranks; ++r) gather_counts_[std::size_t(r)] = std::size_t(token_slice(n, {r, ranks}).size() * H);
    if (shared_.present) {
      shared_sum_.reserve_at_least(std::size_t(n * H));
      ops_.fill_zero(shared_sum_.data(), std::size_t(n * H));
      add_shared_expert(x, n, shared_sum_.data());
      shared_slice_.reserve_at_least(std::max<std::size_t>(1, std::size_t(m * H)));
      if (ranks > 1)
        comm.reduce_scatter(shared_sum_.data(), shared_slice_.data(), gather_counts_);
      else
        ops_.copy(shared_sum_.data(), shared_slice_.data(), std::size_t(m * H));
      ops_.add(own_.data(), shared_slice_.data(), m * H);
    }
    if (ranks > 1)
      comm.all_gather(own_.data(), y.data(), gather_counts_);
    else
      ops_.copy(own_.data(), y.data(), std::size_t(n * H));
  }

  static void scaled(const std::vector<std::size_t>& counts, std::size_t by, std::vector<std::size_t>& out) {
    out.resize(counts.size());
    for (std::size_t i = 0; i < counts.size(); ++i) out[i] = counts[i] * by;
  }

  Ops ops_;
  MoERouting routing_;
  ShardSpec shard_;
  MoELayout layout_;
  int num_experts_ = 0;
  std::int64_t hidden_ = 0;
  ExpertPlacement placement_;
  layer_detail::LocalWeight<T, Ops> router_, shared_gate_;
  std::vector<Mlp> experts_;  // present only where this rank computes the expert
  Mlp shared_;
  std::vector<std::int64_t> tokens_per_expert_;
  // Workspaces: grow to the largest step, then are reused.
  std::vector<float> logits_host_, probs_, weight_, row_weights_, gate_host_, meta_host_;
  std::vector<std::int32_t> choice_, rows_, identity_, send_index_, local_rows_;
  std::vector<std::int64_t> offsets_, fill_, slice_counts_;
  std::vector<std::vector<std::int32_t>> send_rows_;
  std::vector<std::int64_t> header_host_;
  std::vector<std::size_t> send_counts_, recv_counts_, scaled_send_, scaled_recv_, gather_counts_;
  typename Ops::template Buffer<float> logits_, gate_logit_, meta_send_, meta_recv_;
  typename Ops::template Buffer<std::int64_t> header_send_, header_recv_;
  typename Ops::template Buffer<T> gathered_, gate_up_, act_, expert_out_, send_x_, recv_x_, partial_, combined_, own_,
      shared_sum_, shared_slice_;
};

}  // namespace tpkit
