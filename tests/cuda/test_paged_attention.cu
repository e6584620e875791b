// Paged decode attention (tpkit/kernels/paged_attention.cuh) against a float64 reference written
// from the math (attention_reference.hpp): GQA group sizes 1, 2, 4, 5, 7, 8 and 16, page sizes 1,
// 16 and 64, head_dim 8, 64, 96, 128 and 256, float / half / bfloat16, a batch mixing short and long contexts (ones
// that fill the last page and ones that do not, and spans longer than the plan's splits cover), a sliding window, an
// uneven TP head split, and shuffled block tables. Outputs are poisoned before each launch. Skipped (exit 77) without a
// GPU.
//
// Bound, per output element of a (sequence, head). Inputs are exact in T; the reference works
// in float64 from them. A score's float error is at most delta = (head_dim + 2) 2^-24
// sum_d |q_d k_d| * scale; perturbing every score by up to delta moves the softmax weights by
// at most 2 delta in total (first order), which moves the output by at most 2 delta max|v|.
// Accumulating the weighted values in float over n positions, expf (2 ulp) and the split merge
// add at most (n + 16) 2^-24 max|v|; the final rounding to T adds u_T |out|.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "attention_reference.hpp"
#include "cuda_test_support.hpp"
#include "tpkit/kernels/paged_attention.cuh"

using namespace tpkit;

namespace {
int failures = 0;

struct Case {
  int group, page, head_dim, window;
  int local_q_heads, q_head_begin;  // this rank's query heads (an uneven split when begin % group != 0)
};

template <class T>
void run_case(const Case& c, std::mt19937& rng) {
  const std::vector<int> contexts = {1, 15, 16, 17, 64, 300, 1000, 2100, 9000};
  const int seqs = int(contexts.size()), hd = c.head_dim;
  const int kv_begin = c.q_head_begin / c.group;
  const int kv_heads = (c.q_head_begin + c.local_q_heads - 1) / c.group - kv_begin + 1;
  // Blocks: each sequence gets its pages from a shuffled pool, so tables are not contiguous.
  int max_blocks = 0, total_blocks = 0;
  for (int n : contexts)
    max_blocks = std::max(max_blocks, (n + c.page - 1) / c.page), total_blocks += (n + c.page - 1) / c.page;
  std::vector<std::int32_t> pool(static_cast<std::size_t>(total_blocks + 3));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::int32_t> tables(std::size_t(seqs * max_blocks), -1);
  for (int s = 0, next = 0; s < seqs; ++s)
    for (int b = 0; b < (contexts[std::size_t(s)] + c.page - 1) / c.page; ++b)
      tables[std::size_t(s * max_blocks + b)] = pool[std::size_t(next++)];
  const std::size_t slots = pool.size() * std::size_t(c.page), kv_stride = std::size_t(kv_heads * hd);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> keys(slots * kv_stride), values(keys.size()), q(std::size_t(seqs * c.local_q_heads * hd));
  for (auto& v : keys) v = from_float<T>(normal(rng));
  for (auto& v : values) v = from_float<T>(normal(rng));
  for (auto& v : q) v = from_float<T>(normal(rng) * 2.0f);  // peaked enough to make positions matter

  tpkit::gpu::PagedDecodePlan plan;
  // Plan for spans up to 2100 only: the 9000-position sequence must still be covered.
  if (tpkit::gpu::plan_paged_decode(seqs, c.local_q_heads, hd, 2100, &plan) != tpkit::gpu::Status::ok) {
    std::printf("FAILED: plan refused head_dim %d\n", hd), ++failures;
    return;
  }
  T* d_q = to_device(q);
  T* d_k = to_device(keys);
  T* d_v = to_device(values);
  std::int32_t* d_tables = to_device(tables);
  std::vector<std::int32_t> lens(contexts.begin(), contexts.end());
  std::int32_t* d_lens = to_device(lens);
  void* d_ws = nullptr;
  cudaMalloc(&d_ws, plan.workspace_bytes);
  const std::size_t out_count = std::size_t(seqs * c.local_q_heads * hd);
  T* d_out = poisoned<T>(out_count);

  tpkit::gpu::PagedDecodeArgs a;
  a.q = d_q, a.ldq = c.local_q_heads * hd, a.k_cache = d_k, a.v_cache = d_v, a.kv_heads = kv_heads;
  a.q_head_begin = c.q_head_begin, a.kv_head_begin = kv_begin, a.group_size = c.group;
  a.block_tables = d_tables, a.max_blocks_per_seq = max_blocks, a.context_lens = d_lens, a.page_size = c.page;
  a.scale = 1.0f / std::sqrt(float(hd)), a.window = c.window, a.out = d_out, a.ldo = c.local_q_heads * hd;
  bool ok = tpkit::gpu::paged_decode<T>(plan, a, d_ws, nullptr) == tpkit::gpu::Status::ok;
  ok &= cudaDeviceSynchronize() == cudaSuccess;
  const std::vector<T> out = to_host(d_out, out_count);

  double worst = 0;
  for (int s = 0; s < seqs && ok; ++s)
    for (int h = 0; h < c.local_q_heads; ++h) {
      const int kv = (c.q_head_begin + h) / c.group - kv_begin;
      const int n = contexts[std::size_t(s)], first = c.window > 0 && n > c.window ? n - c.window : 0;
      const auto slot = [&](int p) {
        return std::size_t(tables[std::size_t(s * max_blocks + p / c.page)]) * std::size_t(c.page) +
               std::size_t(p % c.page);
      };
      const std::size_t row = std::size_t((s * c.local_q_heads + h) * hd);
      worst = std::max(worst, test::check_attention(q.data() + row, hd, first, n, slot, keys, values, kv_stride,
                                                    std::size_t(kv * hd), a.scale, out.data() + row, ok));
    }
  if (!ok)
    std::printf(
        "FAILED: paged_decode %s group %d page %d head_dim %d window %d heads %d from %d (worst %.3g of bound)\n",
        dtype_name(dtype_of_v<T>), c.group, c.page, hd, c.window, c.local_q_heads, c.q_head_begin, worst),
        ++failures;
  cudaFree(d_q), cudaFree(d_k), cudaFree(d_v), cudaFree(d_tables), cudaFree(d_lens), cudaFree(d_ws), cudaFree(d_out);
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  std::mt19937 rng(7);
  const int head_dims[] = {64, 128, 256};
  int i = 0;
  for (int group : {1, 2, 4, 5, 7, 8, 16})
    for (int page : {1, 16, 64}) {
      const Case c{group, page, head_dims[i++ % 3], 0, 2 * group, 0};
      if (quick() && group != 1 && group != 5) continue;  // under a sanitizer: fewer sizes, every path
      run_case<bfloat16>(c, rng);
      if (page == 16) run_case<half>(c, rng), run_case<float>(c, rng);
    }
  run_case<bfloat16>({4, 16, 128, 100, 6, 3}, rng);  // sliding window; 6 heads starting mid-group
  run_case<float>({7, 16, 128, 0, 5, 4}, rng);       // uneven split over a group of 7
  run_case<bfloat16>({2, 16, 8, 0, 4, 0}, rng);      // head_dim 8 (stories260K) and 96: under a bound
  run_case<half>({4, 1, 96, 0, 4, 0}, rng);
  // Refusals: a head_dim above the largest bound.
  tpkit::gpu::PagedDecodePlan plan;
  if (tpkit::gpu::plan_paged_decode(1, 1, 320, 10, &plan) != tpkit::gpu::Status::unsupported)
    std::printf("FAILED: head_dim 320 accepted\n"), ++failures;
  std::printf("paged decode attention: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
