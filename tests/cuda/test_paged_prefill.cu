// write_kv and paged_prefill (tpkit/kernels/paged_attention.cuh) against references written from
// the math: a batch mixing whole prompts, a prefill chunk after cached positions, and decode
// tokens; GQA group sizes 1, 2, 4, 5, 7, 8 and 16; page sizes 1, 16 and 64; head_dim 8, 64, 96,
// 128 and 256; float / half / bfloat16; a sliding window; an uneven head split; shuffled block
// tables. The cache and the outputs are poisoned first. Skipped (exit 77) without a GPU.
//
// write_kv must copy exactly (and touch no other slot). Attention has the bound argued in
// test_paged_attention.cu (attention_reference.hpp): causal prefill is the same computation per
// query row, over positions 0..p of its sequence.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
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
  int local_q_heads, q_head_begin;
};

struct Seq {
  int past, count;  // positions already cached; new query rows at past..past+count-1
};

template <class T>
void run_case(const Case& c, std::mt19937& rng) {
  const std::vector<Seq> seqs = {{0, 1}, {0, 17}, {0, 300}, {23, 9}, {64, 16}, {100, 1}, {15, 2}, {0, 33}};
  const int hd = c.head_dim, kv_begin = c.q_head_begin / c.group;
  const int kv_heads = (c.q_head_begin + c.local_q_heads - 1) / c.group - kv_begin + 1;
  const std::size_t width = std::size_t(kv_heads * hd);
  int max_blocks = 0, total_blocks = 0, rows = 0;
  for (const Seq& s : seqs) {
    const int blocks = (s.past + s.count + c.page - 1) / c.page;
    max_blocks = std::max(max_blocks, blocks), total_blocks += blocks, rows += s.count;
  }
  std::vector<std::int32_t> pool(static_cast<std::size_t>(total_blocks + 5));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::int32_t> tables(std::size_t(seqs.size()) * std::size_t(max_blocks), 0);
  for (std::size_t s = 0, next = 0; s < seqs.size(); ++s)
    for (int b = 0; b < (seqs[s].past + seqs[s].count + c.page - 1) / c.page; ++b)
      tables[s * std::size_t(max_blocks) + std::size_t(b)] = pool[next++];
  const std::size_t slots = pool.size() * std::size_t(c.page);
  const auto slot_of = [&](std::size_t s, int p) {
    return std::size_t(tables[s * std::size_t(max_blocks) + std::size_t(p / c.page)]) * std::size_t(c.page) +
           std::size_t(p % c.page);
  };

  // The cache before the step: past positions hold random K/V, every other slot a sentinel.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const T sentinel = from_float<T>(-777.0f);
  std::vector<T> keys(slots * width, sentinel), values(slots * width, sentinel);
  for (std::size_t s = 0; s < seqs.size(); ++s)
    for (int p = 0; p < seqs[s].past; ++p)
      for (std::size_t e = 0; e < width; ++e) {
        keys[slot_of(s, p) * width + e] = from_float<T>(normal(rng));
        values[slot_of(s, p) * width + e] = from_float<T>(normal(rng));
      }
  // The step's rows as the model has them: [q | k | v] per row, so k and v have a wide stride.
  const std::size_t q_width = std::size_t(c.local_q_heads * hd), ld = q_width + 2 * width;
  std::vector<T> qkv(std::size_t(rows) * ld);
  for (auto& v : qkv) v = from_float<T>(normal(rng));
  for (std::size_t r = 0; r < std::size_t(rows); ++r)  // peaked queries make positions matter
    for (std::size_t e = 0; e < q_width; ++e) qkv[r * ld + e] = from_float<T>(to_float(qkv[r * ld + e]) * 2.0f);
  std::vector<std::int64_t> row_slots, first_row, counts, starts;
  for (std::size_t s = 0, row = 0; s < seqs.size(); ++s) {
    first_row.push_back(std::int64_t(row)), counts.push_back(seqs[s].count), starts.push_back(seqs[s].past);
    for (int i = 0; i < seqs[s].count; ++i, ++row) row_slots.push_back(std::int64_t(slot_of(s, seqs[s].past + i)));
  }
  std::vector<tpkit::gpu::PrefillTile> tiles;
  if (tpkit::gpu::make_prefill_tiles(hd, int(seqs.size()), first_row.data(), counts.data(), starts.data(), tiles) !=
      tpkit::gpu::Status::ok) {
    std::printf("FAILED: make_prefill_tiles refused head_dim %d\n", hd), ++failures;
    return;
  }
  T* d_qkv = to_device(qkv);
  T* d_k = to_device(keys);
  T* d_v = to_device(values);
  std::int64_t* d_slots = to_device(row_slots);
  std::int32_t* d_tables = to_device(tables);
  tpkit::gpu::PrefillTile* d_tiles = to_device(tiles);
  const std::size_t out_count = std::size_t(rows) * q_width;
  T* d_out = poisoned<T>(out_count);

  bool ok = tpkit::gpu::write_kv(d_qkv + q_width, d_qkv + q_width + width, std::int64_t(ld), rows, d_slots,
                                 std::int64_t(width), d_k, d_v, nullptr) == tpkit::gpu::Status::ok;
  tpkit::gpu::PagedPrefillArgs a;
  a.q = d_qkv, a.ldq = std::int64_t(ld), a.k_cache = d_k, a.v_cache = d_v, a.kv_heads = kv_heads;
  a.q_head_begin = c.q_head_begin, a.kv_head_begin = kv_begin, a.group_size = c.group;
  a.block_tables = d_tables, a.max_blocks_per_seq = max_blocks, a.tiles = d_tiles, a.num_tiles = int(tiles.size());
  a.num_q_heads = c.local_q_heads, a.page_size = c.page, a.scale = 1.0f / std::sqrt(float(hd)), a.window = c.window;
  a.out = d_out, a.ldo = std::int64_t(q_width);
  ok &= tpkit::gpu::paged_prefill<T>(a, hd, nullptr) == tpkit::gpu::Status::ok;
  ok &= cudaDeviceSynchronize() == cudaSuccess;
  const std::vector<T> out = to_host(d_out, out_count);
  const std::vector<T> got_keys = to_host(d_k, keys.size()), got_values = to_host(d_v, values.size());
  if (!ok) {
    std::printf("FAILED: launch (%s)\n", cudaGetErrorString(cudaGetLastError())), ++failures;
    return;
  }

  // write_kv: the expected cache is the old one with each row's K/V at its slot.
  for (std::size_t r = 0; r < row_slots.size(); ++r)
    for (std::size_t e = 0; e < width; ++e) {
      keys[std::size_t(row_slots[r]) * width + e] = qkv[r * ld + q_width + e];
      values[std::size_t(row_slots[r]) * width + e] = qkv[r * ld + q_width + width + e];
    }
  if (std::memcmp(got_keys.data(), keys.data(), keys.size() * sizeof(T)) != 0 ||
      std::memcmp(got_values.data(), values.data(), values.size() * sizeof(T)) != 0)
    std::printf("FAILED: write_kv %s head_dim %d page %d\n", dtype_name(dtype_of_v<T>), hd, c.page), ++failures;

  double worst = 0;
  std::vector<T> q_row(q_width);
  for (std::size_t s = 0, row = 0; s < seqs.size(); ++s)
    for (int i = 0; i < seqs[s].count; ++i, ++row) {
      const int n = seqs[s].past + i + 1, first = c.window > 0 && n > c.window ? n - c.window : 0;
      for (int h = 0; h < c.local_q_heads; ++h) {
        const int kv = (c.q_head_begin + h) / c.group - kv_begin;
        worst = std::max(worst, test::check_attention(
                                    qkv.data() + row * ld + std::size_t(h * hd), hd, first, n,
                                    [&](int p) { return slot_of(s, p); }, keys, values, width, std::size_t(kv * hd),
                                    a.scale, out.data() + row * q_width + std::size_t(h * hd), ok));
      }
    }
  if (!ok)
    std::printf(
        "FAILED: paged_prefill %s group %d page %d head_dim %d window %d heads %d from %d (worst %.3g of bound)\n",
        dtype_name(dtype_of_v<T>), c.group, c.page, hd, c.window, c.local_q_heads, c.q_head_begin, worst),
        ++failures;
  cudaFree(d_qkv), cudaFree(d_k), cudaFree(d_v), cudaFree(d_slots), cudaFree(d_tables), cudaFree(d_tiles);
  cudaFree(d_out);
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  std::mt19937 rng(11);
  const int head_dims[] = {64, 128, 256, 8};
  int i = 0;
  for (int group : {1, 2, 4, 5, 7, 8, 16})
    for (int page : {1, 16, 64}) {
      const Case c{group, page, head_dims[i++ % 4], 0, 2 * group, 0};
      if (quick() && group != 1 && group != 5) continue;  // under a sanitizer: fewer sizes, every path
      run_case<bfloat16>(c, rng);
      if (page == 16) run_case<half>(c, rng), run_case<float>(c, rng);
    }
  run_case<bfloat16>({4, 16, 128, 20, 6, 3}, rng);  // sliding window shorter than a prompt; mid-group start
  run_case<float>({7, 16, 96, 0, 5, 4}, rng);       // uneven split over a group of 7, head_dim 96
  // Refusals: head_dim above 256; a query head outside this rank's KV heads.
  std::vector<tpkit::gpu::PrefillTile> tiles;
  const std::int64_t zero = 0, one = 1;
  if (tpkit::gpu::make_prefill_tiles(320, 1, &zero, &one, &zero, tiles) != tpkit::gpu::Status::unsupported)
    std::printf("FAILED: head_dim 320 accepted\n"), ++failures;
  tpkit::gpu::PagedPrefillArgs bad;
  int dummy = 0;
  bad.q = bad.k_cache = bad.v_cache = bad.out = &dummy;
  bad.block_tables = &dummy, bad.tiles = reinterpret_cast<const tpkit::gpu::PrefillTile*>(&dummy), bad.num_tiles = 1;
  bad.num_q_heads = 4, bad.ldq = bad.ldo = 4 * 64, bad.kv_heads = 1, bad.group_size = 2, bad.max_blocks_per_seq = 1;
  if (tpkit::gpu::paged_prefill<float>(bad, 64, nullptr) !=
      tpkit::gpu::Status::invalid_argument)  // 4 heads need 2 KV heads
    std::printf("FAILED: query heads beyond the KV heads accepted\n"), ++failures;
  std::printf("paged prefill attention and write_kv: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
