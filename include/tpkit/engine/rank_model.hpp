// tpkit/engine/rank_model.hpp: one rank's model behind a dtype-free interface. The engine picks
// the storage type (f32, bf16, f16) at run time; RankModel hides TransformerModel<T, Ops> and its
// StepRunner behind virtual calls made once per step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/engine/options.hpp"
#include "tpkit/engine/request.hpp"
#include "tpkit/engine/step_runner.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/model/transformer.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/pipeline.hpp"
#include "tpkit/sampling/sampler.hpp"

namespace tpkit {

template <class Backend>
class RankModel {
 public:
  virtual ~RankModel() = default;
  // Runs one step. On the last stage, the logits of the `rows` sampling rows stay with the model.
  virtual void forward(Communicator<Backend>& tp, const std::vector<StepSequence>& step, std::int64_t rows,
                       PipelineStage<Backend>* stage) = 0;
  // tokens[r] = the token sampled from row r of the last step's logits (last stage only).
  virtual void sample(const std::vector<SampleRequest>& requests, std::int32_t* tokens) = 0;
  virtual std::int64_t graph_steps() const = 0;  // StepRunner::graph_steps
  // Tokens routed to each expert of this stage's sparse layers so far (empty: a dense model).
  virtual std::vector<ExpertLoad> expert_load() const = 0;
};

// Whether Ops checks, at load, that it can run every shape of a model (CudaOps::check_model).
template <class Ops, class Model, class = void>
struct checks_model : std::false_type {};
template <class Ops, class Model>
struct checks_model<Ops, Model,
                    std::void_t<decltype(std::declval<const Ops&>().check_model(
                        std::declval<const Model&>(), std::int64_t(), std::int64_t()))>> : std::true_type {};

// The model of one rank with its Ops policy. The logits stay in the Ops' memory and are
// sampled there (on a GPU only the tokens come back to the host). Where the Ops can check a
// model's shapes, it does so here, at load, before the first step.
template <class T, class Backend, class Ops>
class TypedRankModel final : public RankModel<Backend> {
 public:
  // `options` as resolved (the KV blocks, the step limits); graph_max_rows: the largest decode
  // step run from a graph (0: none).
  TypedRankModel(const Ops& ops, const Checkpoint& c, ShardSpec s, const EngineOptions& options, Range layers,
                 std::int64_t graph_max_rows)
      : model_(ops, c, s, options.num_kv_blocks, options.block_size, layers, options.moe()),
        runner_(model_, graph_max_rows),
        vocab_(c.config().vocab_size) {
    if constexpr (checks_model<Ops, TransformerModel<T, Ops>>::value)
      model_.ops().check_model(model_, std::max(options.max_num_batched_tokens, options.max_num_seqs),
                               options.max_num_seqs);
  }
  TypedRankModel(const TypedRankModel&) = delete;  // runner_ refers to model_
  TypedRankModel& operator=(const TypedRankModel&) = delete;

  void forward(Communicator<Backend>& tp, const std::vector<StepSequence>& step, std::int64_t rows,
               PipelineStage<Backend>* stage) override {
    logits_.reserve_at_least(std::size_t(rows * vocab_));
    rows_ = rows;
    runner_.run(tp, step, TensorView<float>(logits_.data(), {rows, vocab_}, Ops::memory), stage);
  }
  void sample(const std::vector<SampleRequest>& requests, std::int32_t* tokens) override {
    TPKIT_REQUIRE(std::int64_t(requests.size()) == rows_, "sampling ", requests.size(), " rows of a step that has ",
                  rows_);
    model_.ops().sample(sampling_, logits_.data(), rows_, vocab_, requests.data(), tokens);
  }
  std::int64_t graph_steps() const override { return runner_.graph_steps(); }
  std::vector<ExpertLoad> expert_load() const override {
    std::vector<ExpertLoad> out;
    model_.for_each_moe_layer([&](std::int64_t layer, const auto& moe) {
      out.push_back({layer, moe.tokens_per_expert()});
    });
    return out;
  }

 private:
  TransformerModel<T, Ops> model_;
  StepRunner<TransformerModel<T, Ops>> runner_;
  std::int64_t vocab_, rows_ = 0;
  typename Ops::template Buffer<float> logits_;
  typename Ops::SamplingState sampling_;
};

// The rank model for the storage type options.dtype (f32, bf16 or f16).
template <class Backend, class Ops>
std::unique_ptr<RankModel<Backend>> make_rank_model(const Ops& ops, const Checkpoint& c, ShardSpec s,
                                                    const EngineOptions& options, Range layers,
                                                    std::int64_t graph_max_rows) {
  switch (options.dtype) {
    case DType::f32:
      return std::make_unique<TypedRankModel<float, Backend, Ops>>(ops, c, s, options, layers, graph_max_rows);
    case DType::bf16:
      return std::make_unique<TypedRankModel<bfloat16, Backend, Ops>>(ops, c, s, options, layers, graph_max_rows);
    case DType::f16:
      return std::make_unique<TypedRankModel<half, Backend, Ops>>(ops, c, s, options, layers, graph_max_rows);
    default:
      TPKIT_THROW(InvalidArgument, "engine dtype must be f32, bf16 or f16 (got ", dtype_name(options.dtype), ")");
  }
}

}  // namespace tpkit
