// A float64 Llama-family forward pass written from the math for tests. It shares no code with
// tpkit: its own llama2.c reader, its own RoPE (both pairings, Llama-3 scaling), GQA attention,
// RMSNorm, SwiGLU, optional QKV bias and per-head q/k norm, tied or separate LM head.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace ref {

struct LlamaConfig {
  int dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double eps = 1e-5, theta = 10000.0;
  bool interleaved = false;  // llama2.c pairs (2i, 2i+1); otherwise (i, i + d/2)
  bool qkv_bias = false, qk_norm = false;
  bool llama3_scaling = false;
  int sliding_window = 0;  // attend to the last `sliding_window` positions only (0: all)
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4, original_max_position = 8192;
};

struct LlamaLayer {
  std::vector<double> att_norm, ffn_norm, wq, wk, wv, wo, w_gate, w_up, w_down, bq, bk, bv, q_norm, k_norm;
};

struct LlamaWeights {
  LlamaConfig config;
  std::vector<double> embed, final_norm, lm_head;  // lm_head empty: tied to embed
  std::vector<LlamaLayer> layers;
};

// y = W x for a row-major [rows, cols] W.
inline std::vector<double> matvec(const std::vector<double>& w, const std::vector<double>& x, int rows, int cols) {
  std::vector<double> y(static_cast<std::size_t>(rows), 0.0);
  for (int r = 0; r < rows; ++r) {
    double s = 0;
    for (int c = 0; c < cols; ++c) s += w[std::size_t(r) * cols + c] * x[std::size_t(c)];
    y[std::size_t(r)] = s;
  }
  return y;
}

inline void rmsnorm(double* x, int n, const double* w, double eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const double scale = 1.0 / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) x[i] = x[i] * scale * w[i];
}

// Runs tokens through the model one position at a time, keeping its own dense KV cache.
class LlamaReference {
 public:
  explicit LlamaReference(const LlamaWeights& w)
      : w_(w), keys_(std::size_t(w.config.layers)), values_(std::size_t(w.config.layers)) {
    const LlamaConfig& c = w.config;
    for (int i = 0; i < c.head_dim / 2; ++i) {
      double f = std::pow(c.theta, -2.0 * i / c.head_dim);
      if (c.llama3_scaling) {
        const double wavelen = 2 * M_PI / f, low = c.original_max_position / c.low_freq_factor,
                     high = c.original_max_position / c.high_freq_factor;
        if (wavelen > low)
          f = f / c.factor;
        else if (wavelen >= high) {
          const double t =
              (c.original_max_position / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
          f = (1 - t) * f / c.factor + t * f;
        }
      }
      inv_freq_.push_back(f);
    }
  }

  // Logits after feeding `token` at the next position.
  std::vector<double> step(int token) {
    const LlamaConfig& c = w_.config;
    const int D = c.dim, hd = c.head_dim, kvd = c.kv_heads * hd, group = c.heads / c.kv_heads;
    const int pos = position_++;
    std::vector<double> x(w_.embed.begin() + std::ptrdiff_t(token) * D,
                          w_.embed.begin() + std::ptrdiff_t(token + 1) * D);
    for (int l = 0; l < c.layers; ++l) {
      const LlamaLayer& L = w_.layers[std::size_t(l)];
      std::vector<double> xn = x;
      rmsnorm(xn.data(), D, L.att_norm.data(), c.eps);
      auto q = matvec(L.wq, xn, c.heads * hd, D), k = matvec(L.wk, xn, kvd, D), v = matvec(L.wv, xn, kvd, D);
      if (c.qkv_bias) {
        for (std::size_t i = 0; i < q.size(); ++i) q[i] += L.bq[i];
        for (std::size_t i = 0; i < k.size(); ++i) k[i] += L.bk[i], v[i] += L.bv[i];
      }
      if (c.qk_norm) {
        for (int h = 0; h < c.heads; ++h) rmsnorm(&q[std::size_t(h * hd)], hd, L.q_norm.data(), c.eps);
        for (int h = 0; h < c.kv_heads; ++h) rmsnorm(&k[std::size_t(h * hd)], hd, L.k_norm.data(), c.eps);
      }
      for (int h = 0; h < c.heads; ++h) rotate(&q[std::size_t(h * hd)], pos);
      for (int h = 0; h < c.kv_heads; ++h) rotate(&k[std::size_t(h * hd)], pos);
      keys_[std::size_t(l)].insert(keys_[std::size_t(l)].end(), k.begin(), k.end());
      values_[std::size_t(l)].insert(values_[std::size_t(l)].end(), v.begin(), v.end());
      std::vector<double> att(std::size_t(c.heads * hd), 0.0);
      for (int h = 0; h < c.heads; ++h) {
        const int kvh = h / group;
        std::vector<double> scores(std::size_t(pos + 1));
        double top = -1e300;
        const int first = c.sliding_window > 0 ? std::max(0, pos - c.sliding_window + 1) : 0;
        for (int p = 0; p < first; ++p) scores[std::size_t(p)] = -1e300;  // outside the window: weight 0
        for (int p = first; p <= pos; ++p) {
          double s = 0;
          for (int d = 0; d < hd; ++d)
            s += q[std::size_t(h * hd + d)] * keys_[std::size_t(l)][std::size_t(p * kvd + kvh * hd + d)];
          scores[std::size_t(p)] = s / std::sqrt(double(hd));
          top = std::max(top, scores[std::size_t(p)]);
        }
        double total = 0;
        for (double& s : scores) total += s = std::exp(s - top);
        for (int p = 0; p <= pos; ++p)
          for (int d = 0; d < hd; ++d)
            att[std::size_t(h * hd + d)] +=
                scores[std::size_t(p)] / total * values_[std::size_t(l)][std::size_t(p * kvd + kvh * hd + d)];
      }
      const auto o = matvec(L.wo, att, D, c.heads * hd);
      for (int i = 0; i < D; ++i) x[std::size_t(i)] += o[std::size_t(i)];
      xn = x;
      rmsnorm(xn.data(), D, L.ffn_norm.data(), c.eps);
      auto g = matvec(L.w_gate, xn, c.hidden, D);
      const auto u = matvec(L.w_up, xn, c.hidden, D);
      for (int i = 0; i < c.hidden; ++i)
        g[std::size_t(i)] = g[std::size_t(i)] / (1 + std::exp(-g[std::size_t(i)])) * u[std::size_t(i)];
      const auto down = matvec(L.w_down, g, D, c.hidden);
      for (int i = 0; i < D; ++i) x[std::size_t(i)] += down[std::size_t(i)];
    }
    rmsnorm(x.data(), D, w_.final_norm.data(), c.eps);
    return matvec(w_.lm_head.empty() ? w_.embed : w_.lm_head, x, c.vocab, D);
  }

 private:
  void rotate(double* v, int pos) const {
    const int half = w_.config.head_dim / 2;
    for (int i = 0; i < half; ++i) {
      const int a = w_.config.interleaved ? 2 * i : i, b = w_.config.interleaved ? 2 * i + 1 : i + half;
      const double angle = pos * inv_freq_[std::size_t(i)], cs = std::cos(angle), sn = std::sin(angle);
      const double x0 = v[a], x1 = v[b];
      v[a] = x0 * cs - x1 * sn;
      v[b] = x1 * cs + x0 * sn;
    }
  }

  const LlamaWeights& w_;
  std::vector<double> inv_freq_;
  std::vector<std::vector<double>> keys_, values_;
  int position_ = 0;
};

inline int argmax(const std::vector<double>& v) {
  int best = 0;
  for (int i = 1; i < int(v.size()); ++i)
    if (v[std::size_t(i)] > v[std::size_t(best)]) best = i;
  return best;
}

// Greedy continuation of `prompt` by `steps` tokens; also returns the logits before each token.
inline std::vector<int> greedy(const LlamaWeights& w, const std::vector<int>& prompt, int steps,
                               std::vector<std::vector<double>>* logits = nullptr) {
  LlamaReference model(w);
  std::vector<double> out;
  for (int t : prompt) out = model.step(t);
  std::vector<int> generated;
  for (int i = 0; i < steps; ++i) {
    if (logits) logits->push_back(out);
    generated.push_back(argmax(out));
    if (i + 1 < steps) out = model.step(generated.back());
  }
  return generated;
}

// The llama2.c .bin format, read here independently of tpkit.
inline LlamaWeights read_llama2c(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::int32_t h[7];
  if (std::fread(h, 4, 7, f) != 7) throw std::runtime_error("short header");
  LlamaWeights w;
  LlamaConfig& c = w.config;
  c.dim = h[0], c.hidden = h[1], c.layers = h[2], c.heads = h[3], c.kv_heads = h[4], c.vocab = std::abs(h[5]);
  c.head_dim = c.dim / c.heads;
  c.interleaved = true;
  const int seq_len = h[6], kvd = c.kv_heads * c.head_dim;
  const auto read = [&](std::size_t n) {
    std::vector<float> tmp(n);
    if (std::fread(tmp.data(), 4, n, f) != n) throw std::runtime_error("short file");
    return std::vector<double>(tmp.begin(), tmp.end());
  };
  const auto split = [&](std::vector<double> all, std::size_t per_layer, std::vector<double> LlamaLayer::*member) {
    for (int l = 0; l < c.layers; ++l)
      w.layers[std::size_t(l)].*member = std::vector<double>(all.begin() + std::ptrdiff_t(l * per_layer),
                                                             all.begin() + std::ptrdiff_t((l + 1) * per_layer));
  };
  w.layers.resize(std::size_t(c.layers));
  w.embed = read(std::size_t(c.vocab) * c.dim);
  split(read(std::size_t(c.layers) * c.dim), std::size_t(c.dim), &LlamaLayer::att_norm);
  split(read(std::size_t(c.layers) * c.dim * c.dim), std::size_t(c.dim) * c.dim, &LlamaLayer::wq);
  split(read(std::size_t(c.layers) * kvd * c.dim), std::size_t(kvd) * c.dim, &LlamaLayer::wk);
  split(read(std::size_t(c.layers) * kvd * c.dim), std::size_t(kvd) * c.dim, &LlamaLayer::wv);
  split(read(std::size_t(c.layers) * c.dim * c.dim), std::size_t(c.dim) * c.dim, &LlamaLayer::wo);
  split(read(std::size_t(c.layers) * c.dim), std::size_t(c.dim), &LlamaLayer::ffn_norm);
  split(read(std::size_t(c.layers) * c.hidden * c.dim), std::size_t(c.hidden) * c.dim, &LlamaLayer::w_gate);
  split(read(std::size_t(c.layers) * c.dim * c.hidden), std::size_t(c.dim) * c.hidden, &LlamaLayer::w_down);
  split(read(std::size_t(c.layers) * c.hidden * c.dim), std::size_t(c.hidden) * c.dim, &LlamaLayer::w_up);
  w.final_norm = read(std::size_t(c.dim));
  read(std::size_t(seq_len) * c.head_dim);  // RoPE tables
  if (h[5] < 0) w.lm_head = read(std::size_t(c.vocab) * c.dim);
  std::fclose(f);
  return w;
}

}  // namespace ref
