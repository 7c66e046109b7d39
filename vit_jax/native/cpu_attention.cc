// Multi-head softmax attention on the CPU, float32 or bfloat16, as XLA FFI custom calls
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
//
// bfloat16 (the *Bf16 handlers): q, k, v, out, probs and the gradients are bfloat16, as in
// the rest of a bfloat16 step, so XLA converts nothing around the call. The matmuls take
// bfloat16 operands two k-steps at a time and accumulate in float32: AVX512-BF16's
// vdpbf16ps where the CPU has it (twice the multiply-adds of an FMA per instruction), else
// two FMAs on the pair's halves (bfloat16 products are exact in float32: the same sums).
// The softmax and its derivative are computed in float32 and rounded to bfloat16 (round to
// nearest even) for the matmuls that take them, as XLA's bfloat16 attention does.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;
using Array = ffi::Buffer<ffi::F32, 4>;
using Bf16Array = ffi::Buffer<ffi::BF16, 4>;  // elements are uint16_t, the float32's top half

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

typedef uint32_t vu __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint16_t vh __attribute__((vector_size(kLanes * sizeof(uint16_t))));

inline vf AsFloat(vu u) { vf f; std::memcpy(&f, &u, sizeof f); return f; }
inline vf FromBf16(vh h) { return AsFloat(__builtin_convertvector(h, vu) << 16); }
inline vh ToBf16(vf v) {  // round to nearest even; NaN stays NaN
  vu u;
  std::memcpy(&u, &v, sizeof u);
  vu rounded = (u + 0x7fff + (u >> 16 & 1)) >> 16;
  return __builtin_convertvector(v != v ? (u >> 16 | 0x40) : rounded, vh);
}
inline vf LoadBf16(const uint16_t* p) {
  vh h;
  std::memcpy(&h, p, sizeof h);
  return FromBf16(h);
}
inline void StoreBf16(uint16_t* p, vf v) {
  vh h = ToBf16(v);
  std::memcpy(p, &h, sizeof h);
}

// Loads and stores of kLanes values, or of the first `count` (zeros past it), as float32
// or as bfloat16: partial rows go through the vector code too.
inline vf LoadLanes(const float* p) { return Load(p); }
inline vf LoadLanes(const uint16_t* p) { return LoadBf16(p); }
inline void StoreLanes(float* p, vf v) { Store(p, v); }
inline void StoreLanes(uint16_t* p, vf v) { StoreBf16(p, v); }
// With AVX-512 these are masked loads and stores (AVX512BW's for bfloat16), else copies
// through a vector-sized buffer.
#if defined(__AVX512F__)
inline __mmask16 FirstLanes(int count) { return __mmask16((1u << count) - 1); }
#endif
template <typename In>
inline vf LoadFirst(const In* p, int count) {
  if (count == kLanes) return LoadLanes(p);
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<In, float>) return (vf)_mm512_maskz_loadu_ps(FirstLanes(count), p);
#endif
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  if constexpr (std::is_same_v<In, uint16_t>) {
    return FromBf16((vh)_mm256_maskz_loadu_epi16(FirstLanes(count), p));
  }
#endif
  In tmp[kLanes] = {};
  std::memcpy(tmp, p, count * sizeof(In));
  return LoadLanes(tmp);
}
template <typename Out>
inline void StoreFirst(Out* p, vf v, int count) {
  if (count == kLanes) return StoreLanes(p, v);
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Out, float>) {
    return _mm512_mask_storeu_ps(p, FirstLanes(count), (__m512)v);
  }
#endif
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  if constexpr (std::is_same_v<Out, uint16_t>) {
    return _mm256_mask_storeu_epi16(p, FirstLanes(count), (__m256i)ToBf16(v));
  }
#endif
  Out tmp[kLanes];
  StoreLanes(tmp, v);
  std::memcpy(p, tmp, count * sizeof(Out));
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
  for (int i = 0; i < rows; ++i) {
    StoreFirst(c + i * ldc, acc[i][0] * scale, std::min(cols, kLanes));
    if (cols > kLanes) StoreFirst(c + i * ldc + kLanes, acc[i][1] * scale, cols - kLanes);
  }
}

// Per-thread packing space, grown on demand and kept between calls.
struct Scratch {
  std::vector<float> a, b, t;
  std::vector<uint32_t> pa, pb;  // bfloat16 pair panels
  std::vector<uint16_t> h;       // a bfloat16 softmax or its derivative
  template <typename T>
  T* Get(std::vector<T>& v, size_t n) {
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

// ---- bfloat16 matmuls: C = alpha * A . B with A and B bfloat16, C float32 or bfloat16.
// Operands go two k-steps at a time: a pair is two bfloat16 of consecutive k in one 32-bit
// word, the even k in the low half (vdpbf16ps's operand layout; a row-major A in memory is
// already paired).

#if defined(__AVX512F__)
constexpr int kPairRows = 12;  // 24 accumulators, 2 B vectors and a broadcast A pair
#else
constexpr int kPairRows = 4;   // the FMA form needs 4 B vectors and 2 A halves as well
#endif

// A strided bfloat16 matrix view: element (i, j) is at data[i * rs + j * cs].
struct View16 {
  const uint16_t* data;
  int64_t rs, cs;
  uint16_t at(int64_t i, int64_t j) const { return data[i * rs + j * cs]; }
};

inline uint32_t Pair(uint16_t even, uint16_t odd) { return even | uint32_t(odd) << 16; }
inline uint32_t LoadPair(const uint16_t* p) { uint32_t x; std::memcpy(&x, p, 4); return x; }
inline vu LoadU(const uint32_t* p) { vu v; std::memcpy(&v, p, sizeof v); return v; }
inline vu SplatU(uint32_t x) { return vu{} + x; }

// acc + a.even * b.even + a.odd * b.odd per lane.
inline vf Dot2(vf acc, vu a, vu b) {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  return (vf)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
#else
  const vu odd = SplatU(0xffff0000u);
  acc += AsFloat(a << 16) * AsFloat(b << 16);
  return acc + AsFloat(a & odd) * AsFloat(b & odd);
#endif
}

// out[x] = (r0[x], r1[x]) for x < n: two rows of a matrix paired, r1 null for zeros.
void Interleave(const uint16_t* r0, const uint16_t* r1, int n, uint32_t* out) {
  int x = 0;
  for (; x + kLanes <= n; x += kLanes) {
    vh lo, hi = {};
    std::memcpy(&lo, r0 + x, sizeof lo);
    if (r1) std::memcpy(&hi, r1 + x, sizeof hi);
    vu pair = __builtin_convertvector(lo, vu) | __builtin_convertvector(hi, vu) << 16;
    std::memcpy(out + x, &pair, sizeof pair);
  }
  for (; x < n; ++x) out[x] = Pair(r0[x], r1 ? r1[x] : 0);
}

// Packing into pairs. A (m x k) into panels of kPairRows rows, pair-major; or, where A's
// columns are contiguous (a transposed row-major matrix), into pair rows: element (i, p) at
// out[p * RoundUp(m, kPairRows) + i], two source rows interleaved as vectors. B (k x n)
// into panels of kCols columns; where B's rows are contiguous, interleaved as vectors,
// where its columns are, a pair is one 32-bit word of the source. Zeros past k, m and n.
bool PairRows(View16 a) { return a.rs == 1 && a.cs != 1; }  // A's columns contiguous

void PackPairsA(View16 a, int m, int k, uint32_t* out) {
  const int pairs = (k + 1) / 2;
  if (PairRows(a)) {
    const int width = RoundUp(m, kPairRows);
    for (int p = 0; p < pairs; ++p, out += width) {
      const uint16_t* r0 = a.data + 2 * p * a.cs;
      Interleave(r0, 2 * p + 1 < k ? r0 + a.cs : nullptr, m, out);
      std::fill(out + m, out + width, 0u);
    }
    return;
  }
  for (int r = 0; r < m; r += kPairRows) {
    const int rows = std::min(kPairRows, m - r);
    for (int p = 0; p < pairs; ++p, out += kPairRows) {
      int x = 0;
      for (; x < rows; ++x)
        out[x] = Pair(a.at(r + x, 2 * p), 2 * p + 1 < k ? a.at(r + x, 2 * p + 1) : 0);
      for (; x < kPairRows; ++x) out[x] = 0;
    }
  }
}

void PackPairsB(View16 b, int k, int n, uint32_t* out) {
  for (int c = 0; c < n; c += kCols) {
    const int cols = std::min(kCols, n - c);
    for (int p = 0; p < (k + 1) / 2; ++p, out += kCols) {
      const bool odd = 2 * p + 1 < k;
      if (b.cs == 1) {
        const uint16_t* r0 = b.data + 2 * p * b.rs + c;
        Interleave(r0, odd ? r0 + b.rs : nullptr, cols, out);
      } else {
        for (int x = 0; x < cols; ++x) {
          const uint16_t* e = b.data + 2 * p * b.rs + (c + x) * b.cs;
          out[x] = b.rs == 1 && odd ? LoadPair(e) : Pair(e[0], odd ? e[b.rs] : 0);
        }
      }
      std::fill(out + cols, out + kCols, 0u);
    }
  }
}

// C[rows x cols] (row stride ldc) = alpha * A[kPairRows x k] . B[k x kCols], B a packed
// pair panel. kPacked: A is a packed panel (lda = kPairRows); else A's rows are contiguous
// in memory (row stride lda) and read in place, an odd k's last element on its own.
template <bool kPacked, typename Out>
void PairTile(int k, const void* a, int64_t lda, const uint32_t* b, float alpha, Out* c,
              int64_t ldc, int rows, int cols) {
  const uint32_t* pa = static_cast<const uint32_t*>(a);
  const uint16_t* ra = static_cast<const uint16_t*>(a);
  vf acc[kPairRows][2] = {};
  const int pairs = kPacked ? (k + 1) / 2 : k / 2;
  for (int p = 0; p < pairs; ++p, b += kCols) {
    vu b0 = LoadU(b), b1 = LoadU(b + kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kPairRows; ++i) {
      vu ai = SplatU(kPacked ? pa[p * lda + i] : LoadPair(ra + i * lda + 2 * p));
      acc[i][0] = Dot2(acc[i][0], ai, b0);
      acc[i][1] = Dot2(acc[i][1], ai, b1);
    }
  }
  if (!kPacked && k % 2) {
    vu b0 = LoadU(b), b1 = LoadU(b + kLanes);
    for (int i = 0; i < kPairRows; ++i) {
      vu ai = SplatU(ra[i * lda + k - 1]);
      acc[i][0] = Dot2(acc[i][0], ai, b0);
      acc[i][1] = Dot2(acc[i][1], ai, b1);
    }
  }
  vf scale = Splat(alpha);
  for (int i = 0; i < rows; ++i) {
    StoreFirst(c + i * ldc, acc[i][0] * scale, std::min(cols, kLanes));
    if (cols > kLanes) StoreFirst(c + i * ldc + kLanes, acc[i][1] * scale, cols - kLanes);
  }
}

// C (m x n, row stride ldc) = alpha * A (m x k) . B (k x n), bfloat16 A and B, as Gemm: B
// packed, A read in place where its rows are contiguous (but a last partial panel).
template <typename Out>
void PairGemm(View16 a, View16 b, int m, int n, int k, float alpha, Out* c, int64_t ldc) {
  Scratch& s = ThreadScratch();
  const int pairs = (k + 1) / 2;
  const int packed_from = a.cs == 1 ? m / kPairRows * kPairRows : 0;
  const int packed_rows = RoundUp(m - packed_from, kPairRows);
  uint32_t* ap = s.Get(s.pa, size_t(packed_rows) * pairs);
  uint32_t* bp = s.Get(s.pb, size_t(RoundUp(n, kCols)) * pairs);
  PackPairsA(View16{a.data + packed_from * a.rs, a.rs, a.cs}, m - packed_from, k, ap);
  PackPairsB(b, k, n, bp);
  // A packed panel r starts at r * pairs with pairs kPairRows apart; pair rows at r, width
  // apart.
  const bool pair_rows = PairRows(a);
  const int64_t panel = pair_rows ? kPairRows : int64_t(kPairRows) * pairs;
  const int64_t lda = pair_rows ? packed_rows : kPairRows;
  for (int j = 0; j < n; j += kCols) {
    const uint32_t* bj = bp + int64_t(j / kCols) * kCols * pairs;
    int cols = std::min(kCols, n - j);
    for (int i = 0; i < packed_from; i += kPairRows)
      PairTile<false>(k, a.data + i * a.rs, a.rs, bj, alpha, c + i * ldc + j, ldc, kPairRows,
                      cols);
    for (int i = packed_from; i < m; i += kPairRows)
      PairTile<true>(k, ap + (i - packed_from) / kPairRows * panel, lda, bj, alpha,
                     c + i * ldc + j, ldc, std::min(kPairRows, m - i), cols);
  }
}

// exp(x) for a vector (Cephes' expf: range reduction by ln 2, degree-5 polynomial; relative
// error ~1e-7). With AVX-512, n = round(x / ln 2) and the scaling by 2^n are one instruction
// each (vrndscaleps, vscalefps), which also gives 0 below exp's range, not a clamp: a third
// fewer instructions than the portable form, where inputs below -87.3 give ~1e-38 instead
// of 0.
inline vf Exp(vf x) {
#if defined(__AVX512F__)
  x = x > Splat(-104.f) ? x : Splat(-104.f);  // -inf and NaN-free reduction; exp is 0 here
  __m512 n = _mm512_roundscale_ps((__m512)(x * Splat(1.44269504f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  vf nf = (vf)n;
#else
  x = x < Splat(88.37f) ? x : Splat(88.37f);
  x = x > Splat(-87.3f) ? x : Splat(-87.3f);
  vf nf = x * Splat(1.44269504f) + Splat(12582912.f);  // round to nearest: the 1.5*2^23 trick
  vi ni;
  std::memcpy(&ni, &nf, sizeof nf);
  ni -= 0x4B400000;  // the integer n
  nf -= Splat(12582912.f);
#endif
  vf r = x - nf * Splat(0.693359375f) + nf * Splat(2.12194440e-4f);
  vf p = Splat(1.9875691500e-4f);
  p = p * r + Splat(1.3981999507e-3f);
  p = p * r + Splat(8.3334519073e-3f);
  p = p * r + Splat(4.1665795894e-2f);
  p = p * r + Splat(1.6666665459e-1f);
  p = p * r + Splat(5.0000001201e-1f);
  p = p * r * r + r + Splat(1.f);
#if defined(__AVX512F__)
  return (vf)_mm512_scalef_ps((__m512)p, n);
#else
  vi scale = (ni + 127) << 23;
  vf s;
  std::memcpy(&s, &scale, sizeof s);
  return p * s;
#endif
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

// Row-wise softmax of x (rows x n, row stride n; overwritten) into out (row stride ldo;
// out == x, ldo == n: in place).
template <typename Out>
void Softmax(float* x, int rows, int n, Out* out, int64_t ldo) {
  for (int r = 0; r < rows; ++r, x += n, out += ldo) {
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
    vf tail = {};
    if (full < n) {  // the tail, through the vector exp
      tail = Exp(LoadFirst(x + full, n - full) - Splat(mx));
      for (int j = full; j < n; ++j) total += tail[j - full];
    }
    vf inv = Splat(1.f / total);
    for (int j = 0; j < full; j += kLanes) StoreLanes(out + j, Load(x + j) * inv);
    if (full < n) StoreFirst(out + full, tail * inv, n - full);
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

template <typename Buffer>
ffi::ErrorOr<Shape> CheckShapes(Buffer& q, Buffer& k, Buffer& v) {
  auto dq = q.dimensions(), dk = k.dimensions(), dv = v.dimensions();
  for (int i = 0; i < 4; ++i) {
    if (dk[i] != dv[i] || (i != 1 && dq[i] != dk[i]))
      return ffi::Unexpected(ffi::Error::InvalidArgument(
          "attention: q (B, Tq, K, Dh), k and v (B, Tk, K, Dh) disagree on dimension " +
          std::to_string(i)));
  }
  return Shape{dq[0], dq[1], dk[1], dq[2], dq[3]};
}

// What the float32 and bfloat16 handlers differ in; the steps below are written once for
// T = float or uint16_t (bfloat16's bits). Their matmuls are Gemm or PairGemm, their
// softmax and its derivative float32, stored as T.
template <typename T>
using ArrayOf = std::conditional_t<std::is_same_v<T, float>, Array, Bf16Array>;

inline View Mat(const float* data, int64_t rs, int64_t cs) { return View{data, rs, cs}; }
inline View16 Mat(const uint16_t* data, int64_t rs, int64_t cs) {
  return View16{data, rs, cs};
}
inline void Matmul(View a, View b, int m, int n, int k, float alpha, float* c, int64_t ldc) {
  Gemm(a, b, m, n, k, alpha, c, ldc);
}
template <typename Out>
void Matmul(View16 a, View16 b, int m, int n, int k, float alpha, Out* c, int64_t ldc) {
  PairGemm(a, b, m, n, k, alpha, c, ldc);
}

// Where the values of a float32 scratch matrix go as T: the same memory (computed in
// place) for float32, a bfloat16 scratch matrix else.
template <typename T>
T* AsT(Scratch& scratch, float* values, size_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return values;
  } else {
    return scratch.Get(scratch.h, n);
  }
}

// out = softmax(scale q.k^T) v; the softmax goes to `probs` when it is given (for the
// backward pass), else it stays in per-thread scratch (inference: nothing written back).
template <typename T>
ffi::Error Attend(ffi::ThreadPool& pool, float scale, ArrayOf<T>& q, ArrayOf<T>& k,
                  ArrayOf<T>& v, T* od, T* pd) {
  auto shape = CheckShapes(q, k, v);
  if (shape.has_error()) return shape.error();
  Shape s = *shape;
  const int64_t row = s.heads * s.dim;  // the stride between tokens of one head
  const T *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  ParallelFor(pool, s.batch * s.heads, [=](int64_t task) {
    int64_t b = task / s.heads, h = task % s.heads;
    int64_t qo = b * s.tq * row + h * s.dim, ko = b * s.tk * row + h * s.dim;
    const size_t n = size_t(s.tq) * s.tk;
    Scratch& scratch = ThreadScratch();
    float* logits = scratch.Get(scratch.t, n);
    T* p = pd ? pd + task * n : AsT<T>(scratch, logits, n);
    Matmul(Mat(qd + qo, row, 1), Mat(kd + ko, 1, row), s.tq, s.tk, s.dim, scale, logits,
           s.tk);
    Softmax(logits, s.tq, s.tk, p, s.tk);
    Matmul(Mat(p, s.tk, 1), Mat(vd + ko, row, 1), s.tq, s.dim, s.tk, 1.f, od + qo, row);
  });
  return ffi::Error::Success();
}

template <typename T>
ffi::Error Forward(ffi::ThreadPool pool, float scale, ArrayOf<T> q, ArrayOf<T> k,
                   ArrayOf<T> v, ffi::Result<ArrayOf<T>> out,
                   ffi::Result<ArrayOf<T>> probs) {
  return Attend<T>(pool, scale, q, k, v, out->typed_data(), probs->typed_data());
}

template <typename T>
ffi::Error Inference(ffi::ThreadPool pool, float scale, ArrayOf<T> q, ArrayOf<T> k,
                     ArrayOf<T> v, ffi::Result<ArrayOf<T>> out) {
  return Attend<T>(pool, scale, q, k, v, out->typed_data(), nullptr);
}

template <typename T>
ffi::Error Backward(ffi::ThreadPool pool, float scale, ArrayOf<T> q, ArrayOf<T> k,
                    ArrayOf<T> v, ArrayOf<T> probs, ArrayOf<T> dout,
                    ffi::Result<ArrayOf<T>> dq, ffi::Result<ArrayOf<T>> dk,
                    ffi::Result<ArrayOf<T>> dv) {
  auto shape = CheckShapes(q, k, v);
  if (shape.has_error()) return shape.error();
  Shape s = *shape;
  const int64_t row = s.heads * s.dim;
  const T *qd = q.typed_data(), *kd = k.typed_data(), *vd = v.typed_data();
  const T *pd = probs.typed_data(), *gd = dout.typed_data();
  T *dqd = dq->typed_data(), *dkd = dk->typed_data(), *dvd = dv->typed_data();
  ParallelFor(pool, s.batch * s.heads, [=](int64_t task) {
    int64_t b = task / s.heads, h = task % s.heads;
    int64_t qo = b * s.tq * row + h * s.dim, ko = b * s.tk * row + h * s.dim;
    const size_t n = size_t(s.tq) * s.tk;
    const T* p = pd + task * n;
    Scratch& scratch = ThreadScratch();
    float* dp = scratch.Get(scratch.t, n);
    T* ds = AsT<T>(scratch, dp, n);
    // dv = p^T . dout;  dp = dout . v^T
    Matmul(Mat(p, 1, s.tk), Mat(gd + qo, row, 1), s.tk, s.dim, s.tq, 1.f, dvd + ko, row);
    Matmul(Mat(gd + qo, row, 1), Mat(vd + ko, 1, row), s.tq, s.tk, s.dim, 1.f, dp, s.tk);
    // ds = p * (dp - rowsum(p * dp)), the softmax's derivative, in float32. rowsum(p * dp)
    // is rowsum(dout * out) (out = p . v) from the rows in cache: reading out instead
    // stalled on memory (a quarter of this loop's time, bfloat16 Ti/16 heads).
    const int full = s.tk / kLanes * kLanes;
    for (int64_t i = 0; i < s.tq; ++i) {
      const T* pi = p + i * s.tk;
      const float* dpi = dp + i * s.tk;
      T* di = ds + i * s.tk;
      const vf p_tail = LoadFirst(pi + full, s.tk - full);
      const vf dp_tail = LoadFirst(dpi + full, s.tk - full);
      vf acc = p_tail * dp_tail;
      for (int j = 0; j < full; j += kLanes) acc += LoadLanes(pi + j) * Load(dpi + j);
      const vf dot = Splat(HorizontalSum(acc));
      for (int j = 0; j < full; j += kLanes)
        StoreLanes(di + j, LoadLanes(pi + j) * (Load(dpi + j) - dot));
      if (full < s.tk) StoreFirst(di + full, p_tail * (dp_tail - dot), s.tk - full);
    }
    // dq = scale ds . k;  dk = scale ds^T . q
    Matmul(Mat(ds, s.tk, 1), Mat(kd + ko, row, 1), s.tq, s.dim, s.tk, scale, dqd + qo, row);
    Matmul(Mat(ds, 1, s.tk), Mat(qd + qo, row, 1), s.tk, s.dim, s.tq, scale, dkd + ko, row);
  });
  return ffi::Error::Success();
}

// What every handler binds first: XLA's thread pool, the scale, q, k and v; then each
// stage's own arguments and results.
template <typename T>
auto BindQkv() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Attr<float>("scale")
      .template Arg<ArrayOf<T>>().template Arg<ArrayOf<T>>().template Arg<ArrayOf<T>>();
}

template <typename T>
auto BindForward() {  // -> out, probs
  return BindQkv<T>().template Ret<ArrayOf<T>>().template Ret<ArrayOf<T>>();
}

template <typename T>
auto BindInference() {  // -> out
  return BindQkv<T>().template Ret<ArrayOf<T>>();
}

template <typename T>
auto BindBackward() {  // then probs, dout -> dq, dk, dv
  return BindQkv<T>().template Arg<ArrayOf<T>>().template Arg<ArrayOf<T>>()
      .template Ret<ArrayOf<T>>().template Ret<ArrayOf<T>>().template Ret<ArrayOf<T>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionForward, Forward<float>, BindForward<float>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionInference, Inference<float>,
                              BindInference<float>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionBackward, Backward<float>, BindBackward<float>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionForwardBf16, Forward<uint16_t>,
                              BindForward<uint16_t>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionInferenceBf16, Inference<uint16_t>,
                              BindInference<uint16_t>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(VitAttentionBackwardBf16, Backward<uint16_t>,
                              BindBackward<uint16_t>());
