// Training-mode batch norm + ReLU over a channels-last map, fused into two passes forward and two
// backward. Built on first use by inceptionlab/models/fused_norm.py (torch.utils.cpp_extension).
//
// A channels-last N x C x H x W map is an M x C matrix of rows (M = N*H*W), one row per pixel;
// rows may be further apart than C floats (a channel slice of a wider map), never the channels.
// The output goes to one or more such matrices whose columns, in order, are the input's channels:
// a new dense map, or slices of a concatenation's output that Concat allocated (no torch.cat
// copy); the gradients come back the same way.
//
// forward  pass 1: per-channel sums of (y - k) and (y - k)^2, k = the first row (a shift that
//                  keeps the float sums from cancelling), in float over blocks of 64 rows, then double
//          pass 2: out = max(0, y * a + b), a = weight * invstd, b = bias - mean * a
// backward pass 1: gm = g where y * a + b > 0 (the ReLU's mask, recomputed from y), sums of gm and
//                  gm * (y - mean)
//          pass 2: dx = a * gm + k1 * (y - mean) + k2
// PyTorch runs the same work as five passes forward (statistics, normalize, ReLU) and seven
// backward (ReLU, then the batch norm's reduction and its elementwise pass).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

// The kernel's large outputs come from a cache of the blocks its earlier outputs freed. A large
// block from malloc is a fresh mmap whose pages the OS zero-fills on first touch (about 1.5 us
// per 4 KiB page: 10k faults, 15 ms, for the 44 MB of a 64 x 147 x 147 map at batch 8), and a
// training step frees and re-allocates the same sizes every time: a backward's input gradient
// takes the block its forward's output gave back. Blocks of at least kMinCached bytes, matched
// by exact size, at most `limit` bytes held free; `empty_cache()` returns them.
class BlockCache {
 public:
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache();  // never destroyed: tensors may outlive statics
    return *cache;
  }

  // a dense float tensor of `sizes` laid out by `strides`
  torch::Tensor empty(at::IntArrayRef sizes, at::IntArrayRef strides, const torch::TensorOptions& opts) {
    int64_t numel = 1;
    for (int64_t n : sizes) numel *= n;
    const size_t bytes = static_cast<size_t>(numel) * sizeof(float);
    if (bytes < kMinCached || limit_ == 0) return torch::empty_strided(sizes, strides, opts);
    void* block = take(bytes);
    return torch::from_blob(block, sizes, strides, [bytes](void* p) { BlockCache::instance().give(p, bytes); }, opts);
  }
  torch::Tensor empty(int64_t rows, int64_t cols, const torch::TensorOptions& opts) {
    return empty({rows, cols}, {cols, 1}, opts);
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    trim_locked();
  }
  size_t held() {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }
  void clear() { set_limit_and_restore(); }

 private:
  static constexpr size_t kMinCached = size_t(4) << 20;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t held_ = 0;
  std::atomic<size_t> limit_{size_t(1) << 30};

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* block = it->second.back();
        it->second.pop_back();
        held_ -= bytes;
        return block;
      }
    }
    void* block = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    TORCH_CHECK(block != nullptr, "out of memory: could not allocate ", bytes, " bytes");
    return block;
  }

  void give(void* block, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_ + bytes > limit_) {
      std::free(block);
      return;
    }
    free_[bytes].push_back(block);
    held_ += bytes;
  }

  void trim_locked() {
    for (auto& [bytes, blocks] : free_) {
      while (!blocks.empty() && held_ > limit_) {
        std::free(blocks.back());
        blocks.pop_back();
        held_ -= bytes;
      }
    }
  }

  void set_limit_and_restore() {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t limit = limit_;
    limit_ = 0;
    trim_locked();
    limit_ = limit;
  }
};

constexpr int64_t kBlock = 64;  // rows summed in float before adding into double

struct RowMatrix {  // an M x C float matrix whose rows are `stride` floats apart
  const float* data;
  int64_t rows, cols, stride;
};

RowMatrix rows_of(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == torch::kFloat && t.device().is_cpu(), name,
              " must be a 2-d float32 CPU tensor");
  TORCH_CHECK(t.stride(1) == 1 || t.size(1) == 1, name, ": channels must be adjacent in memory");
  TORCH_CHECK(t.size(0) <= 1 || t.stride(0) >= t.size(1), name, ": rows overlap");
  return {t.data_ptr<float>(), t.size(0), t.size(1), t.size(0) > 1 ? t.stride(0) : t.size(1)};
}

struct Segment {  // columns [first, first + cols) of the map, stored as rows `stride` floats apart
  float* data;
  int64_t first, cols, stride;
};

// The matrices that hold the map's columns in order; each must have the map's M rows.
std::vector<Segment> segments_of(const std::vector<torch::Tensor>& parts, int64_t M, int64_t C, const char* name) {
  std::vector<Segment> segs;
  int64_t first = 0;
  for (const auto& t : parts) {
    const RowMatrix m = rows_of(t, name);
    TORCH_CHECK(m.rows == M, name, ": ", m.rows, " rows where the input has ", M);
    segs.push_back({const_cast<float*>(m.data), first, m.cols, m.stride});
    first += m.cols;
  }
  TORCH_CHECK(first == C, name, ": ", first, " channels in all where the input has ", C);
  return segs;
}

// Row ranges, one per worker; the partial sums are combined in a fixed order.
int64_t chunk_count(int64_t rows) {
  int64_t by_size = std::max<int64_t>(1, rows / (8 * kBlock));
  return std::min<int64_t>(at::get_num_threads(), by_size);
}

// Sums over rows of f(row, c, &s1, &s2) for every channel: two per-channel double sums.
// `accumulate(r, s1, s2)` adds row r's contributions to the float block sums s1[0:C], s2[0:C].
template <typename RowFn>
void channel_sums(int64_t rows, int64_t cols, RowFn accumulate, std::vector<double>& sum1,
                  std::vector<double>& sum2) {
  const int64_t chunks = chunk_count(rows);
  std::vector<double> part1(chunks * cols, 0.0), part2(chunks * cols, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t first_chunk, int64_t end_chunk) {
    std::vector<float> block1(cols), block2(cols);
    for (int64_t chunk = first_chunk; chunk < end_chunk; ++chunk) {
      const int64_t begin = rows * chunk / chunks, end = rows * (chunk + 1) / chunks;
      double* p1 = part1.data() + chunk * cols;
      double* p2 = part2.data() + chunk * cols;
      for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
        std::fill(block1.begin(), block1.end(), 0.f);
        std::fill(block2.begin(), block2.end(), 0.f);
        const int64_t r1 = std::min(end, r0 + kBlock);
        for (int64_t r = r0; r < r1; ++r) accumulate(r, block1.data(), block2.data());
        for (int64_t c = 0; c < cols; ++c) {
          p1[c] += block1[c];
          p2[c] += block2[c];
        }
      }
    }
  });
  sum1.assign(cols, 0.0);
  sum2.assign(cols, 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    for (int64_t c = 0; c < cols; ++c) {
      sum1[c] += part1[chunk * cols + c];
      sum2[c] += part2[chunk * cols + c];
    }
}

template <typename RowFn>
void for_rows(int64_t rows, RowFn fn) {
  at::parallel_for(0, rows, 4 * kBlock, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(r);
  });
}

// scale a = weight * invstd and shift b = bias - mean * a, computed the same way forward and backward
// so that the backward's recomputed ReLU mask is the forward's
void affine(const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
            const torch::Tensor& invstd, std::vector<float>& a, std::vector<float>& b) {
  const int64_t C = mean.size(0);
  const float *w = weight.data_ptr<float>(), *bi = bias.data_ptr<float>();
  const float *m = mean.data_ptr<float>(), *is = invstd.data_ptr<float>();
  a.resize(C);
  b.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    a[c] = w[c] * is[c];
    b[c] = bi[c] - m[c] * a[c];
  }
}

void check_params(const torch::Tensor& t, int64_t C, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == C && t.is_contiguous() && t.scalar_type() == torch::kFloat,
              name, " must be a contiguous float32 vector of ", C, " channels");
}

}  // namespace

// y: M x C rows; outs: where the result goes (see the top). Updates running_mean / running_var in
// place (unbiased variance, as BatchNorm2d). Returns mean, invstd.
std::vector<torch::Tensor> forward(const torch::Tensor& y, const torch::Tensor& weight, const torch::Tensor& bias,
                                   const torch::Tensor& running_mean, const torch::Tensor& running_var,
                                   double momentum, double eps, bool relu, const std::vector<torch::Tensor>& outs) {
  const RowMatrix Y = rows_of(y, "input");
  const int64_t M = Y.rows, C = Y.cols;
  TORCH_CHECK(M > 1, "batch norm in training needs more than one value per channel");
  const std::vector<Segment> out_segs = segments_of(outs, M, C, "output");
  for (auto* p : {&weight, &bias, &running_mean, &running_var}) check_params(*p, C, "a batch norm parameter");

  std::vector<float> shift(Y.data, Y.data + C);
  const float* k = shift.data();
  std::vector<double> s1, s2;
  channel_sums(M, C, [&](int64_t r, float* __restrict b1, float* __restrict b2) {
    const float* __restrict row = Y.data + r * Y.stride;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float d = row[c] - k[c];
      b1[c] += d;
      b2[c] += d * d;
    }
  }, s1, s2);

  auto opts = y.options();
  auto mean = torch::empty({C}, opts), invstd = torch::empty({C}, opts);
  float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
  float *rm = running_mean.data_ptr<float>(), *rv = running_var.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double shifted_mean = s1[c] / M;
    const double var = std::max(s2[c] / M - shifted_mean * shifted_mean, 0.0);
    const double m = shifted_mean + k[c];
    mp[c] = static_cast<float>(m);
    ip[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
    rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * m);
    rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * var * M / (M - 1));
  }

  std::vector<float> a, b;
  affine(weight, bias, mean, invstd, a, b);
  for_rows(M, [&](int64_t r) {
    for (const Segment& seg : out_segs) {
      const float* __restrict row = Y.data + r * Y.stride + seg.first;
      const float* __restrict ap = a.data() + seg.first;
      const float* __restrict bp = b.data() + seg.first;
      float* __restrict orow = seg.data + r * seg.stride;
      const int64_t n = seg.cols;
      if (relu) {
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) orow[c] = std::max(row[c] * ap[c] + bp[c], 0.f);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) orow[c] = row[c] * ap[c] + bp[c];
      }
    }
  });
  return {mean, invstd};
}

// grads: the gradient of the output, as the output's segments; y: the forward's input.
// Returns dx (M x C, dense), dweight, dbias.
std::vector<torch::Tensor> backward(const std::vector<torch::Tensor>& grads, const torch::Tensor& y,
                                    const torch::Tensor& weight, const torch::Tensor& bias,
                                    const torch::Tensor& mean, const torch::Tensor& invstd, bool relu) {
  const RowMatrix Y = rows_of(y, "input");
  const int64_t M = Y.rows, C = Y.cols;
  const std::vector<Segment> grad_segs = segments_of(grads, M, C, "gradient");
  for (auto* p : {&weight, &bias, &mean, &invstd}) check_params(*p, C, "a batch norm parameter");
  std::vector<float> a, b;
  affine(weight, bias, mean, invstd, a, b);
  const float* mean_p = mean.data_ptr<float>();

  std::vector<double> sum_g, sum_gd;  // sums of gm and gm * (y - mean)
  channel_sums(M, C, [&](int64_t r, float* __restrict block1, float* __restrict block2) {
    for (const Segment& seg : grad_segs) {
      const int64_t f = seg.first, n = seg.cols;
      const float* __restrict yr = Y.data + r * Y.stride + f;
      const float* __restrict gr = seg.data + r * seg.stride;
      const float *__restrict ap = a.data() + f, *__restrict bp = b.data() + f, *__restrict mp = mean_p + f;
      float *__restrict b1 = block1 + f, *__restrict b2 = block2 + f;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        const float v = yr[c];
        const float gm = (!relu || v * ap[c] + bp[c] > 0.f) ? gr[c] : 0.f;
        b1[c] += gm;
        b2[c] += gm * (v - mp[c]);
      }
    }
  }, sum_g, sum_gd);

  auto opts = y.options();
  auto dweight = torch::empty({C}, opts), dbias = torch::empty({C}, opts);
  std::vector<float> k1(C), k2(C);
  const float* ip = invstd.data_ptr<float>();
  float *dw = dweight.data_ptr<float>(), *db = dbias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double is = ip[c];
    dw[c] = static_cast<float>(is * sum_gd[c]);  // sum of gm * xhat
    db[c] = static_cast<float>(sum_g[c]);
    k1[c] = static_cast<float>(-double(a[c]) * is * is * sum_gd[c] / M);
    k2[c] = static_cast<float>(-double(a[c]) * sum_g[c] / M);
  }
  auto dx = BlockCache::instance().empty(M, C, opts);
  float* dx_p = dx.data_ptr<float>();
  for_rows(M, [&](int64_t r) {
    for (const Segment& seg : grad_segs) {
      const int64_t f = seg.first, n = seg.cols;
      const float* __restrict yr = Y.data + r * Y.stride + f;
      const float* __restrict gr = seg.data + r * seg.stride;
      const float *__restrict ap = a.data() + f, *__restrict bp = b.data() + f, *__restrict mp = mean_p + f;
      const float *__restrict k1p = k1.data() + f, *__restrict k2p = k2.data() + f;
      float* __restrict dr = dx_p + r * C + f;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        const float v = yr[c];
        const float gm = (!relu || v * ap[c] + bp[c] > 0.f) ? gr[c] : 0.f;
        dr[c] = ap[c] * gm + k1p[c] * (v - mp[c]) + k2p[c];
      }
    }
  });
  return {dx, dweight, dbias};
}

// An N x C x H x W float map stored channels-last, from the block cache.
torch::Tensor empty_map(int64_t n, int64_t c, int64_t h, int64_t w) {
  return BlockCache::instance().empty({n, c, h, w}, {h * w * c, 1, w * c, c}, torch::TensorOptions().dtype(torch::kFloat));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "training batch norm (+ ReLU) forward over channels-last rows");
  m.def("backward", &backward, "its backward");
  m.def("empty_map", &empty_map, "an uninitialized channels-last float32 map from the block cache");
  m.def("set_cache_limit", [](int64_t bytes) { BlockCache::instance().set_limit(static_cast<size_t>(bytes)); },
        "how many bytes of freed blocks the cache may hold (0: none, and no caching)");
  m.def("cache_held", []() { return static_cast<int64_t>(BlockCache::instance().held()); },
        "bytes of freed blocks the cache holds");
  m.def("empty_cache", []() { BlockCache::instance().clear(); }, "frees the blocks the cache holds");
}
