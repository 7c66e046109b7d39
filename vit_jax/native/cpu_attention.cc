// Multi-head softmax attention for float32 on the CPU, as XLA FFI custom calls
// (vit_jax/native/cpu_attention.py builds this file and registers the handlers).
//
// Why: XLA:CPU runs the attention of a ViT as batched matmuls of 197x197x64 per (example,
// head) and hands each one to a multi-threaded Eigen contraction. Split over two cores such
// small matmuls reach ~100 GFLOP/s on a 2-core Xeon VM, where one core alone does ~140:
// the cores wait on each other inside every matmul. Here each (example, head) is one task,
// done whole on one core (the two matmuls and the softmax, or the five matmuls of the
// backward pass), the tasks spread over XLA's own intra-op thread pool. The inputs and
// outputs keep the projections' (batch, tokens, heads, head dim) layout, so the four
// transposes around the attention disappear too.
//
// Layouts: q (B, Tq, K, Dh), k and v (B, Tk, K, Dh), out (B, Tq, K, Dh), probs (B, K, Tq,
// Tk): softmax(scale q.k) saved for the backward pass. The matmuls use a packed register-
// tiled kernel written with GCC vector extensions; built with -march=native it uses the
// widest vectors the CPU has (AVX-512, AVX2 or 128-bit).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;
using Array = ffi::Buffer<ffi::F32, 4>;  // a named type: the handler macros split on commas

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRows = 12;  // 12 rows x 2 vectors: 24 accumulators of the 32 registers
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kRows = 6;   // 6 x 2 accumulators of 16 registers
#else
constexpr int kLanes = 4;
constexpr int kRows = 6;
#endif
constexpr int kCols = 2 * kLanes;  // columns of a register tile

typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline vf Load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void Store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf Splat(float x) {  // a broadcast that can load straight from memory
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(x);
#elif defined(__AVX__)
  return (vf)_mm256_set1_ps(x);
#else
  return vf{} + x;
#endif
}

// A strided matrix view: element (i, j) is at data[i * rs + j * cs].
struct View {
  const float* data;
  int64_t rs, cs;
  float at(int64_t i, int64_t j) const { return data[i * rs + j * cs]; }
};

int RoundUp(int n, int m) { return (n + m - 1) / m * m; }

// A (m x k) into row panels of kRows: panel r holds rows r*kRows.., k-major.
void PackA(View a, int m, int k, float* out) {
  for (int r = 0; r < m; r += kRows) {
    int rows = std::min(kRows, m - r);
    for (int p = 0; p < k; ++p, out += kRows) {
      int i = 0;
      for (; i < rows; ++i) out[i] = a.at(r + i, p);
      for (; i < kRows; ++i) out[i] = 0.f;
    }
  }
}

// B (k x n) into column panels of kCols: panel c holds columns c*kCols.., k-major.
void PackB(View b, int k, int n, float* out) {
  for (int c = 0; c < n; c += kCols) {
    int cols = std::min(kCols, n - c);
    for (int p = 0; p < k; ++p, out += kCols) {
      int j = 0;
      if (cols == kCols && b.cs == 1) {
        std::memcpy(out, b.data + p * b.rs + c, kCols * sizeof(float));
        continue;
      }
      for (; j < cols; ++j) out[j] = b.at(p, c + j);
      for (; j < kCols; ++j) out[j] = 0.f;
    }
  }
}

// C[rows x cols] (row stride ldc) = alpha * A[kRows x k] . B[k x kCols], B a packed panel.
// A's element (i, p) is at a[p * lda + i] (kColumns: a packed panel, lda = kRows, or
// kRows columns of a column-major matrix) or at a[i * lda + p] (kRows rows of a row-major
// matrix).
template <bool kColumns>
void Tile(int k, const float* a, int64_t lda, const float* b, float alpha, float* c,
          int64_t ldc, int rows, int cols) {
  vf acc[kRows][2] = {};
  for (int p = 0; p < k; ++p, b += kCols) {
    vf b0 = Load(b), b1 = Load(b + kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      vf ai = Splat(kColumns ? a[p * lda + i] : a[i * lda + p]);
      acc[i][0] += ai * b0;
      acc[i][1] += ai * b1;
    }
  }
  vf scale = Splat(alpha);
  if (cols == kCols) {
    for (int i = 0; i < rows; ++i) {
      Store(c + i * ldc, acc[i][0] * scale);
      Store(c + i * ldc + kLanes, acc[i][1] * scale);
    }
    return;
  }
  float tmp[kRows][kCols];
  for (int i = 0; i < rows; ++i) {
    Store(tmp[i], acc[i][0] * scale);
    Store(tmp[i] + kLanes, acc[i][1] * scale);
    std::memcpy(c + i * ldc, tmp[i], cols * sizeof(float));
  }
}

// Per-thread packing space, grown on demand and kept between calls.
struct Scratch {
  std::vector<float> a, b, t;
  float* Get(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// C (m x n, row stride ldc) = alpha * A (m x k) . B (k x n). B is packed. A is read in
// place when it is row- or column-major (the softmax's 197x197 output, and its transpose
// in the backward pass: packing it cost a fifth of a matmul), except for a last partial
// panel of rows, which is packed with zeros.
void Gemm(View a, View b, int m, int n, int k, float alpha, float* c, int64_t ldc) {
  Scratch& s = ThreadScratch();
  bool rows = a.cs == 1, columns = !rows && a.rs == 1;
  int packed_from = rows || columns ? m / kRows * kRows : 0;
  float* ap = s.Get(s.a, size_t(RoundUp(m - packed_from, kRows)) * k);
  float* bp = s.Get(s.b, size_t(RoundUp(n, kCols)) * k);
  PackA(View{a.data + packed_from * a.rs, a.rs, a.cs}, m - packed_from, k, ap);
  PackB(b, k, n, bp);
  for (int j = 0; j < n; j += kCols) {  // one B panel stays in L1 over all row panels
    const float* bj = bp + int64_t(j) * k;
    int cols = std::min(kCols, n - j);
    for (int i = 0; i < packed_from; i += kRows) {
      float* cij = c + i * ldc + j;
      if (rows)
        Tile<false>(k, a.data + i * a.rs, a.rs, bj, alpha, cij, ldc, kRows, cols);
      else
        Tile<true>(k, a.data + i, a.cs, bj, alpha, cij, ldc, kRows, cols);
    }
    for (int i = packed_from; i < m; i += kRows)
      Tile<true>(k, ap + int64_t(i - packed_from) * k, kRows, bj, alpha, c + i * ldc + j, ldc,
                 std::min(kRows, m - i), cols);
  }
}

// exp(x) for a vector (Cephes' expf: range reduction by ln 2, degree-5 polynomial; relative
// error ~1e-7). Inputs below -87.3 give ~1e-38 instead of 0.
inline vf Exp(vf x) {
  x = x < Splat(88.37f) ? x : Splat(88.37f);
  x = x > Splat(-87.3f) ? x : Splat(-87.3f);
  vf n = x * Splat(1.44269504f) + Splat(12582912.f);  // round to nearest by the 1.5*2^23 trick
  vi ni;
  std::memcpy(&ni, &n, sizeof n);
  ni -= 0x4B400000;  // the integer n
  n -= Splat(12582912.f);
  vf r = x - n * Splat(0.693359375f) + n * Splat(2.12194440e-4f);
  vf p = Splat(1.9875691500e-4f);
  p = p * r + Splat(1.3981999507e-3f);
  p = p * r + Splat(8.3334519073e-3f);
  p = p * r + Splat(4.1665795894e-2f);
  p = p * r + Splat(1.6666665459e-1f);
  p = p * r + Splat(5.0000001201e-1f);
  p = p * r * r + r + Splat(1.f);
  vi scale = (ni + 127) << 23;
  vf s;
  std::memcpy(&s, &scale, sizeof s);
  return p * s;
}

float HorizontalMax(vf v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, v[i]);
  return m;
}
float HorizontalSum(vf v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Row-wise softmax in place, rows x n (row stride n).
void Softmax(float* x, int rows, int n) {
  for (int r = 0; r < rows; ++r, x += n) {
    int full = n / kLanes * kLanes;
    float mx = -INFINITY;
    if (full) {
      vf m = Load(x);
      for (int j = kLanes; j < full; j += kLanes) {
        vf v = Load(x + j);
        m = v > m ? v : m;
      }
      mx = HorizontalMax(m);
    }
    for (int j = full; j < n; ++j) mx = std::max(mx, x[j]);
    vf sum = {};
    for (int j = 0; j < full; j += kLanes) {
      vf e = Exp(Load(x + j) - Splat(mx));
      Store(x + j, e);
      sum += e;
    }
    float total = HorizontalSum(sum);
    if (full < n) {  // the tail, through the vector exp on a zero-padded copy
      float tail[kLanes] = {};
      for (int j = full; j < n; ++j) tail[j - full] = x[j] - mx;
      vf e = Exp(Load(tail));
      for (int j = full; j < n; ++j) total += (x[j] = e[j - full]);
    }
    vf inv = Splat(1.f / total);
    for (int j = 0; j < full; j += kLanes) Store(x + j, Load(x + j) * inv);
    for (int j = full; j < n; ++j) x[j] *= inv[0];
  }
}

// Runs body(i) for i in [0, n) on the caller and XLA's intra-op threads. Each index is
// claimed from a shared counter, so the caller finishes alone if no pool thread comes, and
// a pool thread that starts late finds nothing left to do.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, F body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t n;
    F body;
    std::mutex mu;
    std::condition_variable cv;
    State(int64_t n, F body) : n(n), body(std::move(body)) {}
    void Work() {
      for (int64_t i; (i = next.fetch_add(1)) < n;) {
        body(i);
        if (done.fetch_add(1) + 1 == n) {
          std::lock_guard<std::mutex> l(mu);
          cv.notify_all();
        }
      }
    }
  };
  auto state = std::make_shared<State>(n, std::move(body));
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([state] { state->Work(); });
  state->Work();
  std::unique_lock<std::mutex> l(state->mu);
  state->cv.wait(l, [&] { return state->done.load() == n; });
}

struct Shape {
  int64_t batch, tq, tk, heads, dim;
};

ffi::ErrorOr<Shape> CheckShapes(Array& q, Array& k,
                                Array& v) {
  auto dq = q.dimensions(), dk = k.dimensions(), dv = v.dimensions();
  for (int i = 0; i < 4; ++i) {
    if (dk[i] != dv[i] || (i != 1 && dq[i] != dk[i]))
      return ffi::Unexpected(ffi::Error::InvalidArgument(
          "attention: q (B, Tq, K, Dh), k and v (B, Tk, K, Dh) disagree on dimension " +
          std::to_string(i)));
  }
  return Shape{dq[0], dq[1], dk[1], dq[2], dq[3]};
}

// out = softmax(scale q.k^T) v; the softmax goes to `probs` when it is given (for the
// backward pass), else it stays in per-thread scratch (inference: nothing written back).
ffi::Error Attend(ffi::ThreadPool& pool, float scale, Array& q, Array& k, Array& v,
                  float* od, float* pd) {
  auto shape = CheckShapes(q, k, v);
  if (shape.has_error()) return shape.error();
  Shape s = *shape;
  const int64_t row = s.heads * s.dim;  // the stride between tokens of one head
  const float *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  ParallelFor(pool, s.batch * s.heads, [=](int64_t task) {
    int64_t b = task / s.heads, h = task % s.heads;
    int64_t qo = b * s.tq * row + h * s.dim, ko = b * s.tk * row + h * s.dim;
    Scratch& scratch = ThreadScratch();
    float* p = pd ? pd + task * s.tq * s.tk : scratch.Get(scratch.t, size_t(s.tq) * s.tk);
    Gemm(View{qd + qo, row, 1}, View{kd + ko, 1, row}, s.tq, s.tk, s.dim, scale, p, s.tk);
    Softmax(p, s.tq, s.tk);
    Gemm(View{p, s.tk, 1}, View{vd + ko, row, 1}, s.tq, s.dim, s.tk, 1.f, od + qo, row);
  });
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, float scale, Array q, Array k, Array v,
                   ffi::Result<Array> out, ffi::Result<Array> probs) {
  return Attend(pool, scale, q, k, v, out->typed_data(), probs->typed_data());
}

ffi::Error Inference(ffi::ThreadPool pool, float scale, Array q, Array k, Array v,
                     ffi::Result<Array> out) {
  return Attend(pool, scale, q, k, v, out->typed_data(), nullptr);
}

ffi::Error Backward(ffi::ThreadPool pool, float scale, Array q,
                    Array k, Array v,
                    Array out, Array probs,
                    Array dout, ffi::Result<Array> dq,
                    ffi::Result<Array> dk, ffi::Result<Array> dv) {
  auto shape = CheckShapes(q, k, v);
  if (shape.has_error()) return shape.error();
  Shape s = *shape;
  const int64_t row = s.heads * s.dim;
  const float *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  const float *od = out.typed_data(), *pd = probs.typed_data(), *gd = dout.typed_data();
  float *dqd = dq->typed_data(), *dkd = dk->typed_data(), *dvd = dv->typed_data();
  ParallelFor(pool, s.batch * s.heads, [=](int64_t task) {
    int64_t b = task / s.heads, h = task % s.heads;
    int64_t qo = b * s.tq * row + h * s.dim, ko = b * s.tk * row + h * s.dim;
    const float* p = pd + task * s.tq * s.tk;
    Scratch& scratch = ThreadScratch();
    float* ds = scratch.Get(scratch.t, size_t(s.tq) * s.tk);
    // dv = p^T . dout;  dp = dout . v^T
    Gemm(View{p, 1, s.tk}, View{gd + qo, row, 1}, s.tk, s.dim, s.tq, 1.f, dvd + ko, row);
    Gemm(View{gd + qo, row, 1}, View{vd + ko, 1, row}, s.tq, s.tk, s.dim, 1.f, ds, s.tk);
    // ds = p * (dp - rowsum(dout * out)), the softmax's derivative
    for (int64_t i = 0; i < s.tq; ++i) {
      const float *gi = gd + qo + i * row, *oi = od + qo + i * row;
      float dot = 0.f;
      for (int64_t d = 0; d < s.dim; ++d) dot += gi[d] * oi[d];
      const float* pi = p + i * s.tk;
      float* di = ds + i * s.tk;
      for (int64_t j = 0; j < s.tk; ++j) di[j] = pi[j] * (di[j] - dot);
    }
    // dq = scale ds . k;  dk = scale ds^T . q
    Gemm(View{ds, s.tk, 1}, View{kd + ko, row, 1}, s.tq, s.dim, s.tk, scale, dqd + qo, row);
    Gemm(View{ds, 1, s.tk}, View{qd + qo, row, 1}, s.tk, s.dim, s.tq, scale, dkd + ko, row);
  });
  return ffi::Error::Success();
}

// What every handler binds first: XLA's thread pool, the scale, q, k and v.
auto BindQkv() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Attr<float>("scale").Arg<Array>().Arg<Array>()
      .Arg<Array>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionForward, Forward,
                              BindQkv().Ret<Array>().Ret<Array>());  // out, probs

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionInference, Inference,
                              BindQkv().Ret<Array>());  // out

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionBackward, Backward,
                              BindQkv()  // then out, probs, dout -> dq, dk, dv
                                  .Arg<Array>().Arg<Array>().Arg<Array>()
                                  .Ret<Array>().Ret<Array>().Ret<Array>());
