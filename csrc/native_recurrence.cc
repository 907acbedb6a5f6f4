// The whole recurrent loop of an Elman RNN, LSTM or GRU layer, forward and backward, as XLA FFI handlers for CPU
// (rnnjax/_native.py registers them and says what each computes; the math is rnnjax/_fused.py's, step for step).
//
// Compiled twice by setup.py: with -mavx512f... (16 float lanes) and with -mavx2 -mfma (8 lanes); the Python side
// loads the library the CPU can run. The kernels are written once over GCC vector types of L lanes.
//
// Layout of the work: the hidden units are cut into tiles of TU = L or 2 * L units. A tile owns its units' carry (h, c,
// dh, dc) and, per step, computes the recurrent GEMM for its units' gate columns with the gate math applied to the
// accumulators while they are in registers (forward), or the input-gradient GEMM for its units' columns followed
// by its units' gate gradients (backward). The recurrent weights are packed once per call, tile by tile, so a
// tile reads one contiguous slice of W_hh. The tiles of one step run on XLA's intra-op thread pool (the FFI's
// ThreadPool), one barrier per step. Every tile computes the same thing whichever thread runs it, so the results
// do not depend on the number of threads.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <thread>
#include <type_traits>

#include <immintrin.h>
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#define RNNJAX_AMX 1
#else
#define RNNJAX_AMX 0
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int L = 16;
#if RNNJAX_AMX
#define RNNJAX_ISA "amx"
#else
#define RNNJAX_ISA "avx512"
#endif
// Rows of the batch per register block: accumulators = rows x vectors per row, kept within the 32 registers.
constexpr int kRowsForward4 = 6, kRowsForward3 = 8, kRowsForward1 = 12, kRowsBackward = 12;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int L = 8;
#define RNNJAX_ISA "avx2"
constexpr int kRowsForward4 = 2, kRowsForward3 = 3, kRowsForward1 = 6, kRowsBackward = 6;
#else
#error "the native recurrence needs AVX2 and FMA, or AVX-512"
#endif

// Vectors of units per tile: one for the LSTM and GRU forward passes (4 or 3 gate vectors per row: 6 x 4 and 8 x 3
// register blocks measured 1.3x faster than 3 x 8 and 4 x 6), two for the rest (12 x 2 blocks).
constexpr int kGatedForwardVectors = 1, kVectors = 2;

typedef float vf __attribute__((vector_size(L * 4)));
typedef int32_t vi __attribute__((vector_size(L * 4)));

#if defined(__AVX512F__)
inline vf splat(float x) { return (vf)_mm512_set1_ps(x); }  // not vf{} + x: x + 0.0f is an add per broadcast
#else
inline vf splat(float x) { return (vf)_mm256_set1_ps(x); }
#endif
inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
// n of the L lanes (n may be <= 0 or >= L): a tile's last vector when H is not a multiple of TU.
inline vf loadn(const float* p, int n) {
  if (n >= L) return load(p);
  vf v = {};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
inline void storen(float* p, vf v, int n) {
  if (n >= L) return store(p, v);
  for (int i = 0; i < n; ++i) p[i] = v[i];
}
// Lanes i < m of p[i * stride] (m may be <= 0 or >= L), the others zero: a vector across m rows of a matrix.
inline vf gather(const float* p, int64_t stride, int m) {
  if (stride > INT32_MAX / L) {  // offsets past int32: rows of over 100M floats
    vf v = {};
    for (int i = 0; i < std::min(m, L); ++i) v[i] = p[i * stride];
    return v;
  }
  vi index;
  for (int i = 0; i < L; ++i) index[i] = static_cast<int32_t>(i * stride);
#if defined(__AVX512F__)
  const __mmask16 lanes = m >= L ? __mmask16(0xffff) : m <= 0 ? __mmask16(0) : __mmask16((1u << m) - 1);
  return (vf)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, (__m512i)index, p, 4);
#else
  vi lane;
  for (int i = 0; i < L; ++i) lane[i] = i;
  return (vf)_mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, (__m256i)index, (__m256)(lane < m), 4);
#endif
}
// storen for arrays the loop writes and never reads back (outputs, residuals for the backward, gate gradients):
// whole aligned vectors go to memory with a non-temporal store, which skips the read that allocating each line in
// cache would cost, and leaves the cache to the weights. run_team fences each piece of work (sfence), so what it
// streamed is visible to whoever reads it after the team's counter says the work is done.
inline void stream(float* p, vf v, int n) {
  if (n < L || (reinterpret_cast<uintptr_t>(p) & (sizeof(vf) - 1)) != 0) return storen(p, v, n);
#if defined(__AVX512F__)
  _mm512_stream_ps(p, (__m512)v);
#else
  _mm256_stream_ps(p, (__m256)v);
#endif
}
// A layer's output ys: streamed in training, where the residuals already fill the cache; stored in inference,
// where the next layer or the caller reads ys soon, maybe from cache (streaming them cost 5-10% at small shapes).
inline void store_output(float* p, vf v, int n, bool training) { training ? stream(p, v, n) : storen(p, v, n); }
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }
// NaN-preserving clamps: a comparison with NaN is false, so NaN passes through.
inline vf at_most(vf x, float hi) { return select(x > hi, splat(hi), x); }
inline vf at_least(vf x, float lo) { return select(x < lo, splat(lo), x); }

// exp(x) to about 1 ulp (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial in r, times 2^n).
inline vf vexp(vf x) {
  x = at_least(at_most(x, 88.0f), -87.33654f);
  vf fx = x * 1.44269504088896341f + 0.5f;
  vi n = __builtin_convertvector(fx, vi);  // truncates toward zero
  vf nf = __builtin_convertvector(n, vf);
  n += (nf > fx);  // floor: the comparison is -1 where truncation rounded up (negative non-integers)
  nf = __builtin_convertvector(n, vf);
  x = x - nf * 0.693359375f;
  x = x + nf * 2.12194440e-4f;
  vf z = x * x;
  vf y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  vi bits = (n + 127) << 23;
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// tanh(x) to about 2 ulp (Cephes tanhf): an odd polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1) beyond.
inline vf vtanh(vf x) {
  vf ax = select(x < 0.0f, -x, x);
  vf z = x * x;
  vf p = splat(-5.70498872745e-3f);
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  p = p * z * x + x;
  vf e = vexp(2.0f * at_most(ax, 10.0f));  // tanh(x) rounds to 1 beyond 9.01
  vf r = 1.0f - 2.0f / (e + 1.0f);
  r = select(x < 0.0f, -r, r);
  return select(ax < 0.625f, p, r);
}

// Round to the nearest bfloat16 (ties to even), kept as float32: the GEMM operands of matmul_dtype="bfloat16".
// Products of two bfloat16 values are exact in float32, so an FMA over rounded operands is XLA's bf16 dot with
// float32 accumulation.
inline vf round_bf16(vf x) {
  vi u;
  __builtin_memcpy(&u, &x, sizeof u);
  vi rounded = (u + 0x7fff + ((u >> 16) & 1)) & int32_t(0xffff0000u);
  vi is_nan = (u & 0x7fffffff) > 0x7f800000;
  vi out = is_nan ? u : rounded;
  vf y;
  __builtin_memcpy(&y, &out, sizeof y);
  return y;
}
inline float round_bf16(float x) { return round_bf16(splat(x))[0]; }

struct Aligned {
  float* data = nullptr;
  // zero = false where every element that reaches a result is written before it is read (writing zeros first
  // to tens of MB costs as much memory traffic as the writes themselves).
  explicit Aligned(size_t count, bool zero = true) {
    size_t bytes = ((std::max<size_t>(count, 1) * sizeof(float) + 63) / 64) * 64;
    data = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (data != nullptr && zero) std::memset(data, 0, bytes);
  }
  ~Aligned() { std::free(data); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
};

inline int num_tiles(int64_t hidden, int units) { return static_cast<int>((hidden + units - 1) / units); }

// A tile's GEMM weights, W^T [depth][C * L] for the C vectors of its gate columns, packed once per call, tile after
// tile (a tile reads one contiguous slice): float32 values (rounded to bfloat16 when the operands are bf16) in rows
// of C * L floats, or for the AMX kernel bfloat16 bits in tdpbf16ps's blocks: per 32 values of k and per vector c,
// [16 pairs of k][16 columns][2], k past the depth zero.
struct Weights {
  bool bf16, amx;
  int tiles;
  int64_t width, per_tile;  // columns per tile (C * L); floats per tile
  Aligned data;
  Weights(int tiles, int64_t depth, int vectors, bool bf16, bool amx)
      : bf16(bf16), amx(amx), tiles(tiles), width(int64_t(vectors) * L),
        per_tile(amx ? (depth + 31) / 32 * 32 * width / 2 : depth * width), data(tiles * per_tile) {}
  const float* f32(int tile) const { return data.data + tile * per_tile; }
  // The float32 weights of tile + 1, which a thread's run of tiles takes after `tile` (tile_gemm reads ahead into
  // them); nullptr after the last tile.
  const float* next(int tile) const { return tile + 1 < tiles ? f32(tile + 1) : nullptr; }
  const uint16_t* b16(int tile) const { return reinterpret_cast<const uint16_t*>(data.data) + 2 * tile * per_tile; }
};

void run_team(ffi::ThreadPool& pool, int iterations, int tiles, std::function<void(int, int)> work);

// Forward packing of W_hh [G*H, H] or W_ih [G*H, D] (PyTorch's layout, rows of `depth` floats): a tile's column
// g * units + lane is gate g of its unit `lane`, so a tile's GEMM reads W^T[k, gate columns of its units] as G * NV
// consecutive vectors. Units past H are zero. The tiles are packed on the team (each writes its own slice).
#if RNNJAX_AMX
// AMX blocks, 32 values of k x 16 columns, are 16 lines of [16 columns][a pair of k] bfloat16: line p holds k = 2p and
// 2p + 1 of each column. packed_words(a, b) gives the 16 pair words of the 32 consecutive k in a (k 0-15) and b
// (k 16-31), each value rounded as round_bf16 does: the high halves of the rounded floats, in order.
inline __m512i packed_words(vf a, vf b) {
  const __m512i index = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                                         25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  return _mm512_permutex2var_epi16((__m512i)round_bf16(a), index, (__m512i)round_bf16(b));
}
// The words of column pairs: word c = (a[c], b[c]), a and b the values of k and k + 1 for 16 columns.
inline __m512i paired_words(vf a, vf b) {
  const vi lo = ((vi)round_bf16(a) >> 16) & 0xffff, hi = (vi)round_bf16(b) & int32_t(0xffff0000u);
  return (__m512i)(lo | hi);
}
#endif

void pack_forward(ffi::ThreadPool& pool, const float* w, int64_t hidden, int64_t depth, int gates, int units,
                  Weights& out) {
#if RNNJAX_AMX
  if (out.amx) {  // per block, 16 columns (rows of W) of 32 values each, their 16 words scattered 64 bytes apart
    run_team(pool, 1, num_tiles(hidden, units), [&](int, int tile) {
      uint32_t* base = reinterpret_cast<uint32_t*>(out.data.data) + tile * out.per_tile;
      const __m512i lines = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                               _mm512_set1_epi32(16));
      for (int g = 0; g < gates; ++g)
        for (int lane0 = 0; lane0 < units; lane0 += 16)
          for (int64_t k0 = 0; k0 < depth; k0 += 32) {
            uint32_t* block = base + ((k0 / 32) * (out.width / 16) + (g * units + lane0) / 16) * 256;
            const int n = static_cast<int>(depth - k0);
            for (int c = 0; c < 16; ++c) {
              const int64_t unit = int64_t(tile) * units + lane0 + c;
              const float* row = unit < hidden ? w + (g * hidden + unit) * depth + k0 : nullptr;
              const vf a = row ? loadn(row, n) : vf{}, b = row ? loadn(row + 16, n - 16) : vf{};
              _mm512_i32scatter_epi32(block + c, lines, packed_words(a, b), 4);
            }
          }
    });
    return;
  }
#endif
  // Per vector of a gate's columns, one gather per k of the L rows' values (a tile's rows, depth * G * units
  // floats, stay in cache while it walks k). Element by element, this packing was 3% of the float32 LSTM's
  // inference at (32,100,128,256).
  run_team(pool, 1, num_tiles(hidden, units), [&](int, int tile) {
    float* base = out.data.data + tile * out.per_tile;
    for (int g = 0; g < gates; ++g)
      for (int lane0 = 0; lane0 < units; lane0 += L) {
        const int64_t unit0 = int64_t(tile) * units + lane0;
        const int m = static_cast<int>(std::clamp<int64_t>(hidden - unit0, 0, L));
        const float* rows = w + (g * hidden + std::min(unit0, hidden)) * depth;
        float* column = base + g * units + lane0;
        for (int64_t k = 0; k < depth; ++k) {
          const vf v = gather(rows + k, depth, m);
          store(column + k * out.width, out.bf16 ? round_bf16(v) : v);
        }
      }
  });
}

// Backward packing: W_hh[j, units of the tile] for j over all G*H rows, so a tile's input-gradient GEMM
// dh[:, units] = dgates @ W_hh[:, units] reads NV consecutive vectors per j.
void pack_backward(ffi::ThreadPool& pool, const float* w, int64_t hidden, int gates, int units, Weights& out) {
  const int64_t rows = gates * hidden;
#if RNNJAX_AMX
  if (out.amx) {  // per pair of rows j, j + 1 of W and 16 units: one line of a block
    run_team(pool, 1, num_tiles(hidden, units), [&](int, int tile) {
      uint32_t* base = reinterpret_cast<uint32_t*>(out.data.data) + tile * out.per_tile;
      for (int64_t j = 0; j < rows; j += 2)
        for (int lane0 = 0; lane0 < units; lane0 += 16) {
          const int64_t unit = int64_t(tile) * units + lane0;
          const int m = static_cast<int>(std::min<int64_t>(16, hidden - unit));
          const vf a = loadn(w + j * hidden + unit, m), b = j + 1 < rows ? loadn(w + (j + 1) * hidden + unit, m) : vf{};
          _mm512_storeu_si512(base + ((j / 32) * (out.width / 16) + lane0 / 16) * 256 + (j % 32) / 2 * 16,
                              paired_words(a, b));
        }
    });
    return;
  }
#endif
  run_team(pool, 1, num_tiles(hidden, units), [&](int, int tile) {
    float* base = out.data.data + tile * out.per_tile;
    for (int64_t j = 0; j < rows; ++j)
      for (int lane0 = 0; lane0 < units; lane0 += L) {
        const int64_t unit0 = int64_t(tile) * units + lane0;
        const vf v = loadn(w + j * hidden + std::min(unit0, hidden), static_cast<int>(hidden - unit0));
        store(base + j * out.width + lane0, out.bf16 ? round_bf16(v) : v);
      }
  });
}

// Calls f(b0, std::integral_constant<int, R>) over the batch in blocks of RMAX rows, then one block of the rest.
template <int R, class F>
inline void with_rows(int n, int b0, F& f) {
  if constexpr (R > 0) {
    if (n == R)
      f(b0, std::integral_constant<int, R>{});
    else
      with_rows<R - 1>(n, b0, f);
  }
}
template <int RMAX, class F>
inline void for_row_blocks(int64_t batch, F&& f) {
  int b0 = 0;
  for (; b0 + RMAX <= batch; b0 += RMAX) f(b0, std::integral_constant<int, RMAX>{});
  if (b0 < batch) with_rows<RMAX - 1>(static_cast<int>(batch - b0), b0, f);
}

// sums[r][c] (+)= sum_{k0 <= k < k1} a[r * lda + k] * w[k * C * L + c * L : ... + L]: R rows, C vectors per row,
// started from zero or from `partial` [R][C] vectors. The sums stay in registers for the whole loop.
template <int R, int C>
inline __attribute__((always_inline)) void gemm_panel(const float* __restrict a, int64_t lda,
                                                      const float* __restrict w, int64_t k0, int64_t k1,
                                                      const float* partial, vf (&acc)[R][C]) {
  vf sum[R][C];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) sum[r][c] = partial ? load(partial + (r * C + c) * L) : vf{};
  for (int64_t k = k0; k < k1; ++k) {
    const float* wk = w + k * C * L;
    vf wv[C];
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) wv[c] = load(wk + c * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      vf x = splat(a[r * lda + k]);
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) sum[r][c] += x * wv[c];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[r][c] = sum[r][c];
}

// One operand of a tile's GEMM: rows `a + b * lda` of `depth` floats, and the tile's packed weights [depth][C * L];
// for the AMX kernel, rows `a16 + b * lda` of bfloat16 bits (zero past the depth, up to a multiple of 32) and the
// tile's weights in AMX blocks (Weights).
struct Segment {
  const float* a = nullptr;
  int64_t lda = 0;
  const float* w = nullptr;
  int64_t depth = 0;
  const uint16_t* a16 = nullptr;
  const uint16_t* w16 = nullptr;
};

#if RNNJAX_AMX
// bfloat16 operands on a CPU with AMX: each step's GEMM on the tile matrix unit (tdpbf16ps: [16 rows][32 bf16] x
// [32 bf16][16 columns] into [16][16] float32 sums, 16x the FMAs of an AVX-512 instruction), which leaves the loop
// to its gate math. Linux hands out the tile state on request, once per process; RNNJAX_NATIVE_AMX=0 (read per
// call) keeps bf16 on the AVX-512 kernel.
bool amx_permitted() {
  static const bool permitted = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return permitted;
}
bool use_amx(bool bf16) {
  const char* setting = std::getenv("RNNJAX_NATIVE_AMX");
  return bf16 && amx_permitted() && !(setting != nullptr && setting[0] == '0');
}

// m lanes of round_bf16(v) as bfloat16 bits.
inline void store_bf16(uint16_t* p, vf v, int m) {
  const __m256i bits = _mm512_cvtepi32_epi16(_mm512_srli_epi32((__m512i)round_bf16(v), 16));
  _mm256_mask_storeu_epi16(p, m >= L ? __mmask16(0xffff) : __mmask16((1u << std::max(m, 0)) - 1), bits);
}

// Palette 1, every tile [16 rows][64 bytes]. In the loops: tiles 0-3 the sums [16 rows][16 floats], tile 4 the
// operand rows [16][32 bf16], tiles 5 and 6 the weights [16 pairs of k][16 columns x 2].
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// Tile c's sums += tile 4 x the weight block w. Tile numbers are immediates in the instructions, hence the macro.
#define RNNJAX_AMX_DOT(sums, weights, w) \
  _tile_loadd(weights, w, 64);           \
  _tile_dpbf16ps(sums, 4, weights)

// One tile's GEMM with AMX: per block of rows, [first.a16 | second.a16] times the tile's weight blocks into sum
// tiles, stored to `acc` and handed to finish. Blocks of 32 rows take the vectors two at a time, in sum tiles
// [2 halves of the rows][2 vectors] from two operand tiles (4, 5) and two weight tiles (6, 7): each weight tile then
// serves 32 rows. The weights come from L2 (a core's share of W is ~1.5 MB at H = 512), and loaded once per 16 rows
// they held the loop up (half of its samples under perf at (64,100,256,512)). A last block of up to 16 rows takes
// all C vectors at once. Rows past the batch are computed from padding and not handed on.
template <int C, class Finish>
void tile_gemm_amx(const Segment& first, const Segment& second, int64_t batch, bool compute, Finish&& finish) {
  static_assert(C >= 1 && C <= 4, "four sum tiles at most");
  static const TileConfig config;
  _tile_loadconfig(&config);  // per call: other code on this thread (XLA's bf16 GEMMs) may configure the tiles too
  alignas(64) vf acc[32][C];
  int64_t b0 = 0;
  for (; batch - b0 > 16; b0 += 32) {
    for (int c0 = 0; c0 < C; c0 += 2) {
      const bool pair = c0 + 1 < C;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      if (compute)
        for (const Segment* segment : {&first, &second}) {
          const int64_t blocks = (segment->depth + 31) / 32, stride = segment->lda * 2;
          const uint16_t *top = segment->a16 + b0 * segment->lda, *bottom = top + 16 * segment->lda;
          for (int64_t kb = 0; kb < blocks; ++kb) {
            const uint16_t* w = segment->w16 + (kb * C + c0) * 512;
            _tile_loadd(4, top + kb * 32, stride);
            _tile_loadd(5, bottom + kb * 32, stride);
            _tile_loadd(6, w, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(2, 5, 6);
            if (pair) {
              _tile_loadd(7, w + 512, 64);
              _tile_dpbf16ps(1, 4, 7);
              _tile_dpbf16ps(3, 5, 7);
            }
          }
        }
      _tile_stored(0, &acc[0][c0], C * sizeof(vf));
      _tile_stored(2, &acc[16][c0], C * sizeof(vf));
      if (pair) {
        _tile_stored(1, &acc[0][c0 + 1], C * sizeof(vf));
        _tile_stored(3, &acc[16][c0 + 1], C * sizeof(vf));
      }
    }
    finish(static_cast<int>(b0), static_cast<int>(std::min<int64_t>(32, batch - b0)), acc);
  }
  for (; b0 < batch; b0 += 16) {
    _tile_zero(0);
    if constexpr (C > 1) _tile_zero(1);
    if constexpr (C > 2) _tile_zero(2);
    if constexpr (C > 3) _tile_zero(3);
    if (compute)
      for (const Segment* segment : {&first, &second}) {
        const int64_t blocks = (segment->depth + 31) / 32;
        for (int64_t kb = 0; kb < blocks; ++kb) {
          _tile_loadd(4, segment->a16 + b0 * segment->lda + kb * 32, segment->lda * 2);
          const uint16_t* w = segment->w16 + kb * C * 512;
          RNNJAX_AMX_DOT(0, 5, w);
          if constexpr (C > 1) { RNNJAX_AMX_DOT(1, 6, w + 512); }
          if constexpr (C > 2) { RNNJAX_AMX_DOT(2, 5, w + 1024); }
          if constexpr (C > 3) { RNNJAX_AMX_DOT(3, 6, w + 1536); }
        }
      }
    _tile_stored(0, &acc[0][0], C * sizeof(vf));
    if constexpr (C > 1) _tile_stored(1, &acc[0][1], C * sizeof(vf));
    if constexpr (C > 2) _tile_stored(2, &acc[0][2], C * sizeof(vf));
    if constexpr (C > 3) _tile_stored(3, &acc[0][3], C * sizeof(vf));
    finish(static_cast<int>(b0), static_cast<int>(std::min<int64_t>(16, batch - b0)), acc);
  }
  _tile_release();  // a thread holding no tile state saves none at a context switch
}
#undef RNNJAX_AMX_DOT
#else
inline bool use_amx(bool) { return false; }
#endif

// One tile's GEMM over the whole batch, [first.a | second.a] [batch, first.depth + second.depth] times the tile's
// packed weights, then finish(b0, rows, acc) per block of rows with the complete sums acc[row][vector] (zero when
// !compute). The depth is cut into panels whose weights fit in L1 (about 24 KiB), and each panel is applied to
// every row block before the next, so the weights are read from L2/L3 once per step rather than once per row block;
// the partial sums wait in `scratch` [batch][C * L] between panels. The LSTM forward passes the step's inputs as
// `first` (x_t W_ih^T, so the input projection runs inside the loop) and h as `second`; the other loops pass h
// only. Segments with bfloat16 rows (a16) go to the AMX kernel.
// With `read_ahead` (a thread's weights outgrow L2, see reads_ahead), each panel's first row block no longer
// waits on L3: every row block asks for its share of the next panel's lines into L2, and in the last panel for the
// first panel of `next`, the weights of the tile this thread most likely takes next (nullptr: none).
template <int RMAX, int C, class Finish>
inline void tile_gemm(Segment first, Segment second, int64_t batch, float* scratch, bool read_ahead,
                      const float* next, bool compute, Finish&& finish) {
#if RNNJAX_AMX
  if (second.a16 != nullptr) return tile_gemm_amx<C>(first, second, batch, compute, finish);
#endif
  constexpr int64_t kPanel = std::max<int64_t>(16, 24576 / (C * L * 4));
  const int64_t first_panels = compute ? (first.depth + kPanel - 1) / kPanel : 0;
  const int64_t second_panels = compute ? (second.depth + kPanel - 1) / kPanel : 0;
  const int64_t panels = std::max<int64_t>(1, first_panels + second_panels);
  const int64_t blocks = (batch + RMAX - 1) / RMAX;
  // Panel p: the segment it lies in and its depths [k0, k1).
  auto panel = [&](int64_t p, int64_t* k0, int64_t* k1) -> const Segment& {
    const bool in_first = p < first_panels;
    const Segment& segment = in_first ? first : second;
    *k0 = (in_first ? p : p - first_panels) * kPanel;
    *k1 = first_panels + second_panels > 0 ? std::min(segment.depth, *k0 + kPanel) : 0;
    return segment;
  };
  for (int64_t p = 0; p < panels; ++p) {
    int64_t k0, k1, ahead_k0 = 0, ahead_k1 = kPanel;
    const Segment& segment = panel(p, &k0, &k1);
    const float* ahead = !read_ahead ? nullptr : p + 1 < panels ? panel(p + 1, &ahead_k0, &ahead_k1).w : next;
    const int64_t ahead_lines = ahead ? (ahead_k1 - ahead_k0) * C * L * 4 / 64 : 0;
    const int64_t share = (ahead_lines + blocks - 1) / blocks;
    const char* ahead_bytes = reinterpret_cast<const char*>(ahead + ahead_k0 * C * L);
    const bool last = p == panels - 1;
    for_row_blocks<RMAX>(batch, [&](int b0, auto rows) {
      constexpr int R = decltype(rows)::value;
      for (int64_t line = b0 / RMAX * share, end = std::min(ahead_lines, line + share); line < end; ++line)
        __builtin_prefetch(ahead_bytes + line * 64, 0, 2);
      vf acc[R][C];
      float* partial = scratch + int64_t(b0) * C * L;
      gemm_panel<R, C>(segment.a + b0 * segment.lda, segment.lda, segment.w, k0, k1, p > 0 ? partial : nullptr,
                       acc);
      if (!last) {
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) store(partial + (r * C + c) * L, acc[r][c]);
        return;
      }
      finish(b0, R, acc);
    });
  }
}

// The GEMM operand of the next step (h [B, H], or the gate gradients [B, G*H]): written by one step's tiles and
// read whole by the next step's, so two halves that alternate. float32 values (rounded to bfloat16 when bf16), or
// for the AMX kernel bfloat16 bits, rows padded to a multiple of 16 and columns to a multiple of 32, with zeros.
struct Operands {
  bool bf16, amx;
  int64_t rows, cols, stride, half;  // elements per row, per half
  Aligned buffer;
  Operands(int64_t rows, int64_t cols, bool bf16, bool amx, int halves = 2)
      : bf16(bf16), amx(amx), rows(rows), cols(cols), stride(amx ? (cols + 31) / 32 * 32 : cols),
        half(amx ? (rows + 15) / 16 * 16 * stride : rows * cols), buffer(amx ? halves * half / 2 : halves * half) {}
  float* f32(int k) const { return buffer.data + k * half; }
  uint16_t* b16(int k) const { return reinterpret_cast<uint16_t*>(buffer.data) + k * half; }
  // Writes m values of row b from column `column`.
  void put(int k, int64_t b, int64_t column, vf v, int m) const {
#if RNNJAX_AMX
    if (amx) return store_bf16(b16(k) + b * stride + column, v, m);
#endif
    storen(f32(k) + b * stride + column, bf16 ? round_bf16(v) : v, m);
  }
  // Half k from values [rows][cols].
  void fill(int k, const float* values) const {
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t c = 0; c < cols; c += L) put(k, b, c, loadn(values + b * cols + c, int(cols - c)), int(cols - c));
  }
  // Half k as the operand of a tile's GEMM against its weights.
  Segment segment(int k, const Weights& weights, int tile, int64_t depth) const {
    if (amx) return Segment{nullptr, stride, nullptr, depth, b16(k), weights.b16(tile)};
    return Segment{f32(k), stride, weights.f32(tile), depth};
  }
};

// -- the thread team: iterations in order, the tiles of one iteration in parallel ---------------------------------
constexpr int kMaxSlots = 64;

struct alignas(64) PaddedCounter {
  std::atomic<int64_t> value{0};
};

struct Team {
  int slots = 1, tiles = 0, iterations = 0;
  int lo[kMaxSlots] = {}, len[kMaxSlots] = {};
  PaddedCounter claimed[kMaxSlots];
  PaddedCounter done;
  std::function<void(int, int)> work;  // (iteration, tile); only called for a claimed tile

  // Slot s prefers its own contiguous range of tiles (its slice of W_hh stays in its core's cache) and then
  // takes what is left in the others' ranges, so the team finishes even when a helper never starts.
  bool claim(int slot, int iteration, int* tile) {
    for (int k = 0; k < slots; ++k) {
      int s = (slot + k) % slots;
      const int64_t first = int64_t(iteration) * len[s], end = first + len[s];
      int64_t v = claimed[s].value.load(std::memory_order_relaxed);
      while (v >= first && v < end) {
        if (claimed[s].value.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) {
          *tile = lo[s] + static_cast<int>(v - first);
          return true;
        }
      }
    }
    return false;
  }

  void participate(int slot) {
    const int64_t total = int64_t(iterations) * tiles;
    for (;;) {
      int64_t finished = done.value.load(std::memory_order_acquire);
      if (finished >= total) return;
      const int iteration = static_cast<int>(finished / tiles);
      int tile;
      while (claim(slot, iteration, &tile)) {
        work(iteration, tile);
        _mm_sfence();
        done.value.fetch_add(1, std::memory_order_acq_rel);
      }
      const int64_t target = int64_t(iteration + 1) * tiles;
      for (int spins = 0; done.value.load(std::memory_order_acquire) < target; ++spins) {
        if (spins < 4000)
          __builtin_ia32_pause();
        else
          std::this_thread::yield();
      }
    }
  }
};

int team_size(ffi::ThreadPool& pool, int tiles) {
  int64_t threads = pool.num_threads();
  if (const char* limit = std::getenv("RNNJAX_NATIVE_THREADS")) {
    int64_t requested = std::atoll(limit);
    if (requested > 0) threads = std::min(threads, requested);
  }
  return static_cast<int>(std::clamp<int64_t>(threads, 1, std::min(tiles, kMaxSlots)));
}

// Whether tile_gemm should read the weights ahead: when a thread's share of them (`floats` in all) passes 4 MiB,
// twice a Sapphire Rapids core's L2. Where they fit in L2 the prefetches cost 5% at (16,400,64,128) and
// (32,100,128,256); at 3 MB per thread ((64,100,256,512)) they were a wash; at 12.6 MB ((128,50,512,1024)) they
// gained 6% on the LSTM's forward loop (benchmarks/NOTES.md, session 13).
constexpr int64_t kReadAheadBytes = 4 << 20;
bool reads_ahead(ffi::ThreadPool& pool, int tiles, int64_t floats) {
  return floats * int64_t(sizeof(float)) / team_size(pool, tiles) > kReadAheadBytes;
}

// Runs work(iteration, tile) for iteration 0..iterations-1 in order, the tiles of one iteration on the team.
void run_team(ffi::ThreadPool& pool, int iterations, int tiles, std::function<void(int, int)> work) {
  if (iterations <= 0 || tiles <= 0) return;
  auto team = std::make_shared<Team>();
  team->slots = team_size(pool, tiles);
  team->tiles = tiles;
  team->iterations = iterations;
  for (int s = 0; s < team->slots; ++s) {
    team->lo[s] = static_cast<int>(int64_t(s) * tiles / team->slots);
    team->len[s] = static_cast<int>(int64_t(s + 1) * tiles / team->slots) - team->lo[s];
  }
  team->work = std::move(work);
  if (team->slots == 1) {
    for (int n = 0; n < iterations; ++n)
      for (int t = 0; t < tiles; ++t) team->work(n, t);
    _mm_sfence();
    return;
  }
  for (int s = 1; s < team->slots; ++s) pool.Schedule([team, s] { team->participate(s); });
  team->participate(0);
}

inline int64_t step_at(int iteration, int64_t time, bool reverse) { return reverse ? time - 1 - iteration : iteration; }

// The row of step t, sequence b in the caller's [T, B, ...] (time-major) or [B, T, ...] (batch-major) arrays. Every
// per-step array (the projection P, the outputs Y, their cotangents DY, what the backward pass reads, the gate
// gradients) is in the layer's own layout, so XLA adds no transpose around the loop, and the gate gradients share
// their rows with the inputs and h_prev: dW_ih = dgates^T x and dW_hh = dgates^T h_prev are single
// [T*B, .]^T [T*B, .] GEMMs. Only valid is always [T, B].
struct Layout {
  int64_t T, B;
  bool batch_major;
  int64_t row(int64_t t, int64_t b) const { return batch_major ? b * T + t : t * B + b; }
};

// Leading [T, B] of a [T, B, F] or [B, T, F] array.
inline Layout layout_of(ffi::Span<const int64_t> dims, bool batch_major) {
  return batch_major ? Layout{dims[1], dims[0], true} : Layout{dims[0], dims[1], false};
}

// Batch-major rows of one step lie T rows apart: a stream per sequence that crosses a page every step, which the
// hardware prefetchers do not follow, and the loads of the projection stalled the forward loop (a quarter of its
// samples under perf at (32,100,128,256)). The loop asks for the next step's lines of a row itself, `count` lines
// `stride` floats apart from `row`, when it finishes that row of this step.
// What the loop writes and never reads back goes out with streaming stores (`stream`) and needs no prefetch.
inline void prefetch_lines(const float* row, int64_t stride, int count) {
  for (int k = 0; k < count; ++k) __builtin_prefetch(row + k * stride);
}

ffi::Error shape_error(const char* what) { return ffi::Error::InvalidArgument(std::string("rnnjax native: ") + what); }

// ================================================== LSTM ========================================================
// Forward, per step t (from T-1 down when reverse): gates = x_t W_ih^T + h W_hh^T + b; i, f, o = sigmoid,
// g = tanh; c' = f c + i g; h' = o tanh(c'); where valid[t, b] is false, h and c are held and y is zero. The input
// projection runs in the step's register block, before the recurrent part: the [T, B, 4H] projection never goes
// through memory, and its GEMM runs at the micro-kernel's rate (XLA's separate GEMM was 180-280 GFLOP/s here).
ffi::Error LstmForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> weight_ih,
                       ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> weight_hh, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::PRED> valid,
                       ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> h_out,
                       ffi::ResultBuffer<ffi::F32> c_out, ffi::ResultBuffer<ffi::F32> h_prev,
                       ffi::ResultBuffer<ffi::F32> c_prev, ffi::ResultBuffer<ffi::F32> activations,
                       ffi::ResultBuffer<ffi::F32> tanh_c, bool reverse, bool training, bool bf16,
                       bool batch_major) {
  constexpr int NV = kGatedForwardVectors, TU = NV * L;
  auto dims = xs.dimensions();
  if (dims.size() != 3 || h0.dimensions().size() != 2) return shape_error("LSTM: xs must be [T, B, D]");
  const Layout seq = layout_of(dims, batch_major);
  const int64_t T = seq.T, B = seq.B, D = dims[2], H = h0.dimensions()[1];
  if (valid.element_count() != T * B) return shape_error("valid must be [T, B] bool");
  if (weight_ih.element_count() != 4 * H * D || h0.dimensions()[0] != B || weight_hh.element_count() != 4 * H * H ||
      bias.element_count() != 4 * H)
    return shape_error("LSTM: xs [T, B, D], weight_ih [4H, D], bias [4H], weight_hh [4H, H], h0 [B, H] disagree");
  float* h = h_out->typed_data();
  float* c = c_out->typed_data();
  std::memcpy(h, h0.typed_data(), B * H * sizeof(float));
  std::memcpy(c, c0.typed_data(), B * H * sizeof(float));
  if (T == 0 || B == 0 || H == 0) return ffi::Error::Success();
  const int tiles = num_tiles(H, TU);
  const bool amx = use_amx(bf16);
  Weights packed(tiles, H, 4 * NV, bf16, amx), packed_ih(tiles, D, 4 * NV, bf16, amx);
  const bool read_ahead = reads_ahead(pool, tiles, tiles * (packed.per_tile + packed_ih.per_tile));
  Operands operand(B, H, bf16, amx);
  Aligned scratch(amx ? 0 : int64_t(tiles) * B * 4 * NV * L);
  pack_forward(pool, weight_hh.typed_data(), H, H, 4, TU, packed);
  pack_forward(pool, weight_ih.typed_data(), H, D, 4, TU, packed_ih);
  operand.fill(0, h);
  // bfloat16 operands: the inputs rounded once, as XLA's bf16 projection rounds them. For AMX as bfloat16 rows of a
  // multiple of 32 values, time-major whatever the layout of xs, [T][B padded to 16]: an operand tile's 16 rows are
  // then one contiguous block, where batch-major rows T apart put each on its own page.
  const float* X = xs.typed_data();
  const int64_t x_step = seq.row(0, 1) - seq.row(0, 0);  // rows between sequences b and b + 1 of a step
  const int64_t padded = (B + 15) / 16 * 16;
  auto x_row = [&](int64_t t, int64_t b) { return amx ? t * padded + b : seq.row(t, b); };  // in x_rows / X
  Operands x_rows(amx ? T * padded : bf16 ? T * B : 0, D, bf16, amx, 1);
  if (bf16) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < D; c += L)
          x_rows.put(0, x_row(t, b), c, loadn(X + seq.row(t, b) * D + c, int(D - c)), int(D - c));
    if (!amx) X = x_rows.f32(0);
  }
  const int x_lines = static_cast<int>((x_rows.stride * (amx ? 2 : 4) + 63) / 64);  // cache lines per input row
  const char* x_base = amx ? reinterpret_cast<const char*>(x_rows.b16(0)) : reinterpret_cast<const char*>(X);
  const int64_t x_row_bytes = amx ? x_rows.stride * 2 : D * 4;
  const float* BI = bias.typed_data();
  const bool* V = valid.typed_data();
  float* Y = ys->typed_data();
  float *HP = h_prev->typed_data(), *CP = c_prev->typed_data(), *A = activations->typed_data(),
        *TC = tanh_c->typed_data();
  float* sc = scratch.data;  // each tile's partial sums between weight panels

  run_team(pool, static_cast<int>(T), tiles, [&](int n, int tile) {
    const int64_t t = step_at(n, T, reverse), t_next = n + 1 < T ? step_at(n + 1, T, reverse) : -1;
    const int64_t u0 = int64_t(tile) * TU;
    Segment inputs{X + seq.row(t, 0) * D, x_step * D, packed_ih.f32(tile), D};
    if (amx) {
      inputs = x_rows.segment(0, packed_ih, tile, D);
      inputs.a16 += x_row(t, 0) * x_rows.stride;
    }
    tile_gemm<kRowsForward4, 4 * NV>(inputs, operand.segment(n % 2, packed, tile, H), B,
                                     sc + int64_t(tile) * B * 4 * NV * L, read_ahead, packed_ih.next(tile), true,
                                     [&](int b0, int rows, auto acc) {
#pragma GCC unroll 1  // the gate math per row is not unrolled: code size (compile time) over nothing measurable
      for (int r = 0; r < rows; ++r) {
        const int64_t b = b0 + r, row = t * B + b, io = seq.row(t, b);
        const bool keep = V[row];
        if (t_next >= 0) {
          const int64_t ahead = seq.row(t_next, b);
          // Every tile reads the whole input row: each asks for its share of the row's lines.
          for (int line = tile; line < x_lines; line += tiles)
            __builtin_prefetch(x_base + x_row(t_next, b) * x_row_bytes + line * 64);
        }
#pragma GCC unroll 1
        for (int v = 0; v < NV; ++v) {
          const int64_t u = u0 + v * L;
          const int m = static_cast<int>(H - u);
          if (m <= 0) continue;
          vf i = vsigmoid(acc[r][0 * NV + v] + loadn(BI + 0 * H + u, m));
          vf f = vsigmoid(acc[r][1 * NV + v] + loadn(BI + 1 * H + u, m));
          vf g = vtanh(acc[r][2 * NV + v] + loadn(BI + 2 * H + u, m));
          vf o = vsigmoid(acc[r][3 * NV + v] + loadn(BI + 3 * H + u, m));
          vf c_old = loadn(c + b * H + u, m), h_old = loadn(h + b * H + u, m);
          vf c_new = f * c_old + i * g;
          vf tc = vtanh(c_new);
          vf h_new = o * tc;
          if (training) {
            float* a = A + io * 4 * H;
            stream(a + 0 * H + u, i, m);
            stream(a + 1 * H + u, f, m);
            stream(a + 2 * H + u, g, m);
            stream(a + 3 * H + u, o, m);
            stream(TC + io * H + u, tc, m);
            stream(HP + io * H + u, h_old, m);
            stream(CP + io * H + u, c_old, m);
          }
          store_output(Y + io * H + u, keep ? h_new : vf{}, m, training);
          vf h_kept = keep ? h_new : h_old;
          if (keep) {
            storen(c + b * H + u, c_new, m);
            storen(h + b * H + u, h_new, m);
          }
          operand.put((n + 1) % 2, b, u, h_kept, m);
        }
      }
    });
  });
  return ffi::Error::Success();
}

// Backward: the reverse loop carries (dh, dc) and emits each step's gate gradients dgates [T, B, 4H] or [B, T, 4H]
// (zero where not valid), which are the cotangent of `projected`; dh_prev = dgates W_hh (+ dh where not valid).
ffi::Error LstmBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> weight_hh, ffi::Buffer<ffi::F32> activations,
                        ffi::Buffer<ffi::F32> c_prev, ffi::Buffer<ffi::F32> tanh_c, ffi::Buffer<ffi::PRED> valid,
                        ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::F32> dh_final, ffi::Buffer<ffi::F32> dc_final,
                        ffi::ResultBuffer<ffi::F32> dgates, ffi::ResultBuffer<ffi::F32> dh0,
                        ffi::ResultBuffer<ffi::F32> dc0, bool reverse, bool bf16, bool batch_major) {
  constexpr int NV = kVectors, TU = NV * L;
  auto dims = dys.dimensions();
  if (dims.size() != 3) return shape_error("LSTM backward: dys must be [T, B, H]");
  const Layout seq = layout_of(dims, batch_major);
  const int64_t T = seq.T, B = seq.B, H = dims[2];
  if (valid.element_count() != T * B) return shape_error("valid must be [T, B] bool");
  if (activations.element_count() != T * B * 4 * H || weight_hh.element_count() != 4 * H * H)
    return shape_error("LSTM backward: activations [T, B, 4H], weight_hh [4H, H] and dys [T, B, H] disagree");
  float* dh = dh0->typed_data();
  float* dc = dc0->typed_data();
  std::memcpy(dh, dh_final.typed_data(), B * H * sizeof(float));
  std::memcpy(dc, dc_final.typed_data(), B * H * sizeof(float));
  if (T == 0 || B == 0 || H == 0) return ffi::Error::Success();
  const int64_t GH = 4 * H;
  const int tiles = num_tiles(H, TU);
  const bool amx = use_amx(bf16);
  Weights packed(tiles, GH, NV, bf16, amx);
  const bool read_ahead = reads_ahead(pool, tiles, tiles * packed.per_tile);
  Operands operand(B, GH, bf16, amx);
  Aligned scratch(amx ? 0 : int64_t(tiles) * B * NV * L);
  pack_backward(pool, weight_hh.typed_data(), H, 4, TU, packed);
  const float *A = activations.typed_data(), *CP = c_prev.typed_data(), *TC = tanh_c.typed_data(),
              *DY = dys.typed_data();
  const bool* V = valid.typed_data();
  float* DG = dgates->typed_data();
  float* sc = scratch.data;  // each tile's partial sums between weight panels

  // Iteration n < T: (n > 0) dh for the tile's units from the previous step's gate gradients, then the gate
  // gradients of step t_n. Iteration T: the last GEMM only, giving dh0.
  run_team(pool, static_cast<int>(T + 1), tiles, [&](int n, int tile) {
    const int64_t t = step_at(n, T, !reverse);
    const int64_t t_before = n > 0 ? step_at(n - 1, T, !reverse) : -1;
    const int64_t u0 = int64_t(tile) * TU;
    tile_gemm<kRowsBackward, NV>(Segment{}, operand.segment((n + 1) % 2, packed, tile, GH), B,
                                 sc + int64_t(tile) * B * NV * L, read_ahead, packed.next(tile), n > 0,
                                 [&](int b0, int rows, auto acc) {
#pragma GCC unroll 1  // the gate math per row is not unrolled: code size (compile time) over nothing measurable
      for (int r = 0; r < rows; ++r) {
        const int64_t b = b0 + r;
        if (n + 1 < T) {
          const int64_t ahead = seq.row(step_at(n + 1, T, !reverse), b);
          for (int v = 0; v < NV; ++v) prefetch_lines(A + ahead * GH + u0 + v * L, H, 4);
          for (const float* step : {TC, CP, DY}) prefetch_lines(step + ahead * H + u0, L, NV);
        }
#pragma GCC unroll 1
        for (int v = 0; v < NV; ++v) {
          const int64_t u = u0 + v * L;
          const int m = static_cast<int>(H - u);
          if (m <= 0) continue;
          vf dhv = loadn(dh + b * H + u, m);
          if (n > 0 && V[t_before * B + b]) dhv = acc[r][v];
          if (n == T) {
            storen(dh + b * H + u, dhv, m);
            continue;
          }
          const int64_t row = t * B + b, io = seq.row(t, b);
          const bool keep = V[row];
          const float* a = A + io * GH;
          vf i = loadn(a + 0 * H + u, m), f = loadn(a + 1 * H + u, m), g = loadn(a + 2 * H + u, m),
             o = loadn(a + 3 * H + u, m);
          vf tc = loadn(TC + io * H + u, m), cp = loadn(CP + io * H + u, m);
          vf dcv = loadn(dc + b * H + u, m);
          vf dht = dhv + loadn(DY + io * H + u, m);
          vf dct = dcv + dht * o * (1.0f - tc * tc);
          vf di = dct * g * i * (1.0f - i), df = dct * cp * f * (1.0f - f), dg = dct * i * (1.0f - g * g),
             d_o = dht * tc * o * (1.0f - o);
          if (!keep) di = df = dg = d_o = vf{};
          float* out = DG + io * GH;
          stream(out + 0 * H + u, di, m);
          stream(out + 1 * H + u, df, m);
          stream(out + 2 * H + u, dg, m);
          stream(out + 3 * H + u, d_o, m);
          const int half = n % 2;
          operand.put(half, b, 0 * H + u, di, m);
          operand.put(half, b, 1 * H + u, df, m);
          operand.put(half, b, 2 * H + u, dg, m);
          operand.put(half, b, 3 * H + u, d_o, m);
          if (keep) storen(dc + b * H + u, dct * f, m);
          storen(dh + b * H + u, dhv, m);
        }
      }
    });
  });
  return ffi::Error::Success();
}

// =================================================== GRU ========================================================
// Forward: r = sigmoid(P_r + h W_hr^T), z = sigmoid(P_z + h W_hz^T), n = tanh(P_n + r (h W_hn^T + b_hn)),
// h' = n + z (h - n). Saved per step: [r, z, n, h W_hn^T + b_hn] [T, B, 4H] and h_prev.
ffi::Error GruForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> projected, ffi::Buffer<ffi::F32> bias,
                      ffi::Buffer<ffi::F32> weight_hh, ffi::Buffer<ffi::F32> bias_hn, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::PRED> valid,
                      ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> h_out,
                      ffi::ResultBuffer<ffi::F32> h_prev, ffi::ResultBuffer<ffi::F32> saved, bool reverse,
                      bool training, bool bf16, bool batch_major) {
  constexpr int NV = kGatedForwardVectors, TU = NV * L;
  auto dims = projected.dimensions();
  if (dims.size() != 3 || h0.dimensions().size() != 2) return shape_error("GRU: projected must be [T, B, 3H]");
  const Layout seq = layout_of(dims, batch_major);
  const int64_t T = seq.T, B = seq.B, H = h0.dimensions()[1];
  if (valid.element_count() != T * B) return shape_error("valid must be [T, B] bool");
  if (dims[2] != 3 * H || h0.dimensions()[0] != B || weight_hh.element_count() != 3 * H * H ||
      bias_hn.element_count() != H || bias.element_count() != 3 * H)
    return shape_error("GRU: projected [T, B, 3H], bias [3H], weight_hh [3H, H], bias_hn [H], h0 [B, H] disagree");
  float* h = h_out->typed_data();
  std::memcpy(h, h0.typed_data(), B * H * sizeof(float));
  if (T == 0 || B == 0 || H == 0) return ffi::Error::Success();
  const int tiles = num_tiles(H, TU);
  const bool amx = use_amx(bf16);
  Weights packed(tiles, H, 3 * NV, bf16, amx);
  const bool read_ahead = reads_ahead(pool, tiles, tiles * packed.per_tile);
  Operands operand(B, H, bf16, amx);
  Aligned scratch(amx ? 0 : int64_t(tiles) * B * 3 * NV * L);
  pack_forward(pool, weight_hh.typed_data(), H, H, 3, TU, packed);
  operand.fill(0, h);
  const float *P = projected.typed_data(), *BI = bias.typed_data();
  const float* BN = bias_hn.typed_data();
  const bool* V = valid.typed_data();
  float *Y = ys->typed_data(), *HP = h_prev->typed_data(), *S = saved->typed_data();
  float* sc = scratch.data;  // each tile's partial sums between weight panels

  run_team(pool, static_cast<int>(T), tiles, [&](int n, int tile) {
    const int64_t t = step_at(n, T, reverse), t_next = n + 1 < T ? step_at(n + 1, T, reverse) : -1;
    const int64_t u0 = int64_t(tile) * TU;
    tile_gemm<kRowsForward3, 3 * NV>(Segment{}, operand.segment(n % 2, packed, tile, H), B,
                                     sc + int64_t(tile) * B * 3 * NV * L, read_ahead, packed.next(tile), true,
                                     [&](int b0, int rows, auto acc) {
#pragma GCC unroll 1  // the gate math per row is not unrolled: code size (compile time) over nothing measurable
      for (int r = 0; r < rows; ++r) {
        const int64_t b = b0 + r, row = t * B + b, io = seq.row(t, b);
        const bool keep = V[row];
        const float* p = P + io * 3 * H;
        if (t_next >= 0) {
          const int64_t ahead = seq.row(t_next, b);
          prefetch_lines(P + ahead * 3 * H + u0, H, 3);
        }
#pragma GCC unroll 1
        for (int v = 0; v < NV; ++v) {
          const int64_t u = u0 + v * L;
          const int m = static_cast<int>(H - u);
          if (m <= 0) continue;
          vf rg = vsigmoid(acc[r][0 * NV + v] + (loadn(p + 0 * H + u, m) + loadn(BI + 0 * H + u, m)));
          vf zg = vsigmoid(acc[r][1 * NV + v] + (loadn(p + 1 * H + u, m) + loadn(BI + 1 * H + u, m)));
          vf hn = acc[r][2 * NV + v] + loadn(BN + u, m);
          vf ng = vtanh((loadn(p + 2 * H + u, m) + loadn(BI + 2 * H + u, m)) + rg * hn);
          vf h_old = loadn(h + b * H + u, m);
          vf h_new = ng + zg * (h_old - ng);
          if (training) {
            float* s = S + io * 4 * H;
            stream(s + 0 * H + u, rg, m);
            stream(s + 1 * H + u, zg, m);
            stream(s + 2 * H + u, ng, m);
            stream(s + 3 * H + u, hn, m);
            stream(HP + io * H + u, h_old, m);
          }
          store_output(Y + io * H + u, keep ? h_new : vf{}, m, training);
          vf h_kept = keep ? h_new : h_old;
          if (keep) storen(h + b * H + u, h_new, m);
          operand.put((n + 1) % 2, b, u, h_kept, m);
        }
      }
    });
  });
  return ffi::Error::Success();
}

// Backward: dn = dh' (1 - z)(1 - n^2), dz = dh' (h - n) z (1 - z), dr = dn hn r (1 - r), with dh' = dh + dy.
// dprojected = [dr, dz, dn]; drecurrent = [dr, dz, dn r] (the cotangent of h W_hh^T); dh_prev = drecurrent W_hh
// + dh' z (dh where not valid).
ffi::Error GruBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> weight_hh, ffi::Buffer<ffi::F32> h_prev,
                       ffi::Buffer<ffi::F32> saved, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> dys,
                       ffi::Buffer<ffi::F32> dh_final, ffi::ResultBuffer<ffi::F32> dprojected,
                       ffi::ResultBuffer<ffi::F32> drecurrent, ffi::ResultBuffer<ffi::F32> dh0, bool reverse,
                       bool bf16, bool batch_major) {
  constexpr int NV = kVectors, TU = NV * L;
  auto dims = dys.dimensions();
  if (dims.size() != 3) return shape_error("GRU backward: dys must be [T, B, H]");
  const Layout seq = layout_of(dims, batch_major);
  const int64_t T = seq.T, B = seq.B, H = dims[2];
  if (valid.element_count() != T * B) return shape_error("valid must be [T, B] bool");
  if (saved.element_count() != T * B * 4 * H || weight_hh.element_count() != 3 * H * H)
    return shape_error("GRU backward: saved [T, B, 4H], weight_hh [3H, H] and dys [T, B, H] disagree");
  float* dh = dh0->typed_data();
  std::memcpy(dh, dh_final.typed_data(), B * H * sizeof(float));
  if (T == 0 || B == 0 || H == 0) return ffi::Error::Success();
  const int64_t GH = 3 * H;
  const int tiles = num_tiles(H, TU);
  const bool amx = use_amx(bf16);
  Weights packed(tiles, GH, NV, bf16, amx);
  const bool read_ahead = reads_ahead(pool, tiles, tiles * packed.per_tile);
  Operands operand(B, GH, bf16, amx);
  Aligned held(B * H), scratch(amx ? 0 : int64_t(tiles) * B * NV * L);
  pack_backward(pool, weight_hh.typed_data(), H, 3, TU, packed);
  const float *HP = h_prev.typed_data(), *S = saved.typed_data(), *DY = dys.typed_data();
  const bool* V = valid.typed_data();
  float *DP = dprojected->typed_data(), *DR = drecurrent->typed_data();
  float* sc = scratch.data;  // each tile's partial sums between weight panels
  float* extra = held.data;  // dh' z of the previous step: the part of dh_prev that skips the GEMM

  run_team(pool, static_cast<int>(T + 1), tiles, [&](int n, int tile) {
    const int64_t t = step_at(n, T, !reverse);
    const int64_t t_before = n > 0 ? step_at(n - 1, T, !reverse) : -1;
    const int64_t u0 = int64_t(tile) * TU;
    tile_gemm<kRowsBackward, NV>(Segment{}, operand.segment((n + 1) % 2, packed, tile, GH), B,
                                 sc + int64_t(tile) * B * NV * L, read_ahead, packed.next(tile), n > 0,
                                 [&](int b0, int rows, auto acc) {
#pragma GCC unroll 1  // the gate math per row is not unrolled: code size (compile time) over nothing measurable
      for (int r = 0; r < rows; ++r) {
        const int64_t b = b0 + r;
        if (n + 1 < T) {
          const int64_t ahead = seq.row(step_at(n + 1, T, !reverse), b);
          for (int v = 0; v < NV; ++v) prefetch_lines(S + ahead * 4 * H + u0 + v * L, H, 4);
          for (const float* step : {HP, DY}) prefetch_lines(step + ahead * H + u0, L, NV);
        }
#pragma GCC unroll 1
        for (int v = 0; v < NV; ++v) {
          const int64_t u = u0 + v * L;
          const int m = static_cast<int>(H - u);
          if (m <= 0) continue;
          vf dhv = loadn(dh + b * H + u, m);
          if (n > 0 && V[t_before * B + b]) dhv = acc[r][v] + loadn(extra + b * H + u, m);
          if (n == T) {
            storen(dh + b * H + u, dhv, m);
            continue;
          }
          const int64_t row = t * B + b, io = seq.row(t, b);
          const bool keep = V[row];
          const float* s = S + io * 4 * H;
          vf rg = loadn(s + 0 * H + u, m), zg = loadn(s + 1 * H + u, m), ng = loadn(s + 2 * H + u, m),
             hn = loadn(s + 3 * H + u, m);
          vf hp = loadn(HP + io * H + u, m);
          vf dht = dhv + loadn(DY + io * H + u, m);
          vf dn = dht * (1.0f - zg) * (1.0f - ng * ng);
          vf dz = dht * (hp - ng) * zg * (1.0f - zg);
          vf dr = dn * hn * rg * (1.0f - rg);
          vf dnr = dn * rg;
          if (!keep) dn = dz = dr = dnr = vf{};
          float* outp = DP + io * GH;
          float* outr = DR + io * GH;
          stream(outp + 0 * H + u, dr, m);
          stream(outp + 1 * H + u, dz, m);
          stream(outp + 2 * H + u, dn, m);
          stream(outr + 0 * H + u, dr, m);
          stream(outr + 1 * H + u, dz, m);
          stream(outr + 2 * H + u, dnr, m);
          const int half = n % 2;
          operand.put(half, b, 0 * H + u, dr, m);
          operand.put(half, b, 1 * H + u, dz, m);
          operand.put(half, b, 2 * H + u, dnr, m);
          storen(extra + b * H + u, dht * zg, m);
          storen(dh + b * H + u, dhv, m);
        }
      }
    });
  });
  return ffi::Error::Success();
}

// ============================================== Elman RNN =======================================================
// Forward: h' = act(P[t] + h W_hh^T), act = tanh or relu. Saved: h' before masking, and h_prev.
ffi::Error RnnForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> projected, ffi::Buffer<ffi::F32> bias,
                      ffi::Buffer<ffi::F32> weight_hh, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::PRED> valid, ffi::ResultBuffer<ffi::F32> ys,
                      ffi::ResultBuffer<ffi::F32> h_out, ffi::ResultBuffer<ffi::F32> h_prev,
                      ffi::ResultBuffer<ffi::F32> h_new_all, bool reverse, bool training, bool bf16, bool relu,
                      bool batch_major) {
  constexpr int NV = kVectors, TU = NV * L;
  auto dims = projected.dimensions();
  if (dims.size() != 3 || h0.dimensions().size() != 2) return shape_error("RNN: projected must be [T, B, H]");
  const Layout seq = layout_of(dims, batch_major);
  const int64_t T = seq.T, B = seq.B, H = h0.dimensions()[1];
  if (valid.element_count() != T * B) return shape_error("valid must be [T, B] bool");
  if (dims[2] != H || h0.dimensions()[0] != B || weight_hh.element_count() != H * H || bias.element_count() != H)
    return shape_error("RNN: projected [T, B, H], bias [H], weight_hh [H, H], h0 [B, H] disagree");
  float* h = h_out->typed_data();
  std::memcpy(h, h0.typed_data(), B * H * sizeof(float));
  if (T == 0 || B == 0 || H == 0) return ffi::Error::Success();
  const int tiles = num_tiles(H, TU);
  const bool amx = use_amx(bf16);
  Weights packed(tiles, H, NV, bf16, amx);
  const bool read_ahead = reads_ahead(pool, tiles, tiles * packed.per_tile);
  Operands operand(B, H, bf16, amx);
  Aligned scratch(amx ? 0 : int64_t(tiles) * B * NV * L);
  pack_forward(pool, weight_hh.typed_data(), H, H, 1, TU, packed);
  operand.fill(0, h);
  const float *P = projected.typed_data(), *BI = bias.typed_data();
  const bool* V = valid.typed_data();
  float *Y = ys->typed_data(), *HP = h_prev->typed_data(), *HN = h_new_all->typed_data();
  float* sc = scratch.data;  // each tile's partial sums between weight panels

  run_team(pool, static_cast<int>(T), tiles, [&](int n, int tile) {
    const int64_t t = step_at(n, T, reverse), t_next = n + 1 < T ? step_at(n + 1, T, reverse) : -1;
    const int64_t u0 = int64_t(tile) * TU;
    tile_gemm<kRowsForward1, NV>(Segment{}, operand.segment(n % 2, packed, tile, H), B,
                                 sc + int64_t(tile) * B * NV * L, read_ahead, packed.next(tile), true,
                                 [&](int b0, int rows, auto acc) {
#pragma GCC unroll 1  // the gate math per row is not unrolled: code size (compile time) over nothing measurable
      for (int r = 0; r < rows; ++r) {
        const int64_t b = b0 + r, row = t * B + b, io = seq.row(t, b);
        const bool keep = V[row];
        if (t_next >= 0) {
          const int64_t ahead = seq.row(t_next, b);
          prefetch_lines(P + ahead * H + u0, L, NV);
        }
#pragma GCC unroll 1
        for (int v = 0; v < NV; ++v) {
          const int64_t u = u0 + v * L;
          const int m = static_cast<int>(H - u);
          if (m <= 0) continue;
          vf pre = acc[r][v] + (loadn(P + io * H + u, m) + loadn(BI + u, m));
          vf h_new = relu ? select(pre > 0.0f, pre, vf{}) : vtanh(pre);
          vf h_old = loadn(h + b * H + u, m);
          if (training) {
            stream(HN + io * H + u, h_new, m);
            stream(HP + io * H + u, h_old, m);
          }
          store_output(Y + io * H + u, keep ? h_new : vf{}, m, training);
          vf h_kept = keep ? h_new : h_old;
          if (keep) storen(h + b * H + u, h_new, m);
          operand.put((n + 1) % 2, b, u, h_kept, m);
        }
      }
    });
  });
  return ffi::Error::Success();
}

// Backward: dpre = (dh + dy) act'(h') (zero where not valid); dh_prev = dpre W_hh (+ dh where not valid).
ffi::Error RnnBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> weight_hh, ffi::Buffer<ffi::F32> h_new_all,
                       ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::F32> dh_final,
                       ffi::ResultBuffer<ffi::F32> dpre_out, ffi::ResultBuffer<ffi::F32> dh0, bool reverse, bool bf16,
                       bool relu, bool batch_major) {
  constexpr int NV = kVectors, TU = NV * L;
  auto dims = dys.dimensions();
  if (dims.size() != 3) return shape_error("RNN backward: dys must be [T, B, H]");
  const Layout seq = layout_of(dims, batch_major);
  const int64_t T = seq.T, B = seq.B, H = dims[2];
  if (valid.element_count() != T * B) return shape_error("valid must be [T, B] bool");
  if (h_new_all.element_count() != T * B * H || weight_hh.element_count() != H * H)
    return shape_error("RNN backward: h_new [T, B, H], weight_hh [H, H] and dys [T, B, H] disagree");
  float* dh = dh0->typed_data();
  std::memcpy(dh, dh_final.typed_data(), B * H * sizeof(float));
  if (T == 0 || B == 0 || H == 0) return ffi::Error::Success();
  const int tiles = num_tiles(H, TU);
  const bool amx = use_amx(bf16);
  Weights packed(tiles, H, NV, bf16, amx);
  const bool read_ahead = reads_ahead(pool, tiles, tiles * packed.per_tile);
  Operands operand(B, H, bf16, amx);
  Aligned scratch(amx ? 0 : int64_t(tiles) * B * NV * L);
  pack_backward(pool, weight_hh.typed_data(), H, 1, TU, packed);
  const float *HN = h_new_all.typed_data(), *DY = dys.typed_data();
  const bool* V = valid.typed_data();
  float* DPRE = dpre_out->typed_data();
  float* sc = scratch.data;  // each tile's partial sums between weight panels

  run_team(pool, static_cast<int>(T + 1), tiles, [&](int n, int tile) {
    const int64_t t = step_at(n, T, !reverse);
    const int64_t t_before = n > 0 ? step_at(n - 1, T, !reverse) : -1;
    const int64_t u0 = int64_t(tile) * TU;
    tile_gemm<kRowsBackward, NV>(Segment{}, operand.segment((n + 1) % 2, packed, tile, H), B,
                                 sc + int64_t(tile) * B * NV * L, read_ahead, packed.next(tile), n > 0,
                                 [&](int b0, int rows, auto acc) {
#pragma GCC unroll 1  // the gate math per row is not unrolled: code size (compile time) over nothing measurable
      for (int r = 0; r < rows; ++r) {
        const int64_t b = b0 + r;
        if (n + 1 < T) {
          const int64_t ahead = seq.row(step_at(n + 1, T, !reverse), b);
          for (const float* step : {HN, DY}) prefetch_lines(step + ahead * H + u0, L, NV);
        }
#pragma GCC unroll 1
        for (int v = 0; v < NV; ++v) {
          const int64_t u = u0 + v * L;
          const int m = static_cast<int>(H - u);
          if (m <= 0) continue;
          vf dhv = loadn(dh + b * H + u, m);
          if (n > 0 && V[t_before * B + b]) dhv = acc[r][v];
          if (n == T) {
            storen(dh + b * H + u, dhv, m);
            continue;
          }
          const int64_t row = t * B + b, io = seq.row(t, b);
          vf hn = loadn(HN + io * H + u, m);
          vf derivative = relu ? select(hn > 0.0f, splat(1.0f), vf{}) : 1.0f - hn * hn;
          vf dpre = V[row] ? (dhv + loadn(DY + io * H + u, m)) * derivative : vf{};
          stream(DPRE + io * H + u, dpre, m);
          operand.put(n % 2, b, u, dpre, m);
          storen(dh + b * H + u, dhv, m);
        }
      }
    });
  });
  return ffi::Error::Success();
}

// ============================================ weight gradients ==================================================
// [dW_1 | dW_2] = dgates^T [inputs_1 | inputs_2]: [rows, G]^T [rows, K1 + K2] -> [G, K1] and [G, K2] with bfloat16
// operands and float32 sums, on AMX tiles: the layer's dW_hh and dW_ih (LSTM, Elman RNN: one call over h_prev and
// x, which share the gate gradients) under bf16 operands. XLA's CPU dot runs this contraction over the rows of both
// operands in float32 through Eigen, 4-5x slower than its bf16 GEMMs that contract the LHS's last axis
// (benchmarks/NOTES.md). Computed as dW^T = inputs^T dgates, in two phases of the team:
// - packing, per chunk of 32 rows: dgates as [16 pairs of rows][16 gates][2] tiles (tdpbf16ps's second operand, one
//   64-byte line per pair of rows), the inputs transposed as [16 columns][32 rows] tiles (inputs_2 from a multiple
//   of 32 columns, so no tile mixes the two);
// - sums, per block of the result: kBlock input tiles (of 16 columns) by kGroup gate tiles (of 16 gates), whose
//   sums (kBlock x kGroup KiB, ~0.75 MB) stay in L2 while the rows go by in panels of kPanel chunks; per panel and
//   pair of input tiles, each pair of gate tiles sums the panel in four sum tiles (loaded from and stored back to
//   the block's sums). Memory traffic is the packed inputs read once per group of gates plus the packed gate
//   gradients once per block of inputs; square blocks (~28 x 28 tiles) keep that sum near its minimum. One block
//   per group over all the inputs, as this was first written, read the packed inputs G / 128 times: 630 MB at
//   (6400 rows, 4096 gates, 1536 inputs), a memory-bound 0.68 TFLOP/s.
// Each block sums its rows in the same order whichever thread runs it.
// Both weight-gradient calls (AMX and float32) take dgates [rows, G] and two inputs [rows, K1], [rows, K2].
ffi::Error weight_gradient_shapes(ffi::Span<const int64_t> gates, ffi::Span<const int64_t> inputs_1,
                                  ffi::Span<const int64_t> inputs_2) {
  if (gates.size() != 2 || inputs_1.size() != 2 || inputs_2.size() != 2 || gates[0] != inputs_1[0] ||
      gates[0] != inputs_2[0])
    return shape_error("weight gradient: dgates [rows, G] and the inputs [rows, K] must share their rows");
  return ffi::Error::Success();
}

#if RNNJAX_AMX
ffi::Error WeightGradient(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dgates, ffi::Buffer<ffi::F32> inputs_1,
                          ffi::Buffer<ffi::F32> inputs_2, ffi::ResultBuffer<ffi::F32> out_1,
                          ffi::ResultBuffer<ffi::F32> out_2) {
  auto gate_dims = dgates.dimensions(), dims_1 = inputs_1.dimensions(), dims_2 = inputs_2.dimensions();
  if (ffi::Error error = weight_gradient_shapes(gate_dims, dims_1, dims_2); error.failure()) return error;
  // Called where uses_amx() was true when the graph was traced; the tile state, once granted, stays granted.
  if (!amx_permitted()) return shape_error("weight gradient: Linux refused the AMX tile state");
  const int64_t rows = gate_dims[0], G = gate_dims[1], K1 = dims_1[1], K2 = dims_2[1];
  const int64_t offset_2 = (K1 + 31) / 32 * 32;  // inputs_2's first column in the packed inputs
  const int64_t chunks = std::max<int64_t>(1, (rows + 31) / 32);
  const int64_t input_tiles = (offset_2 + (K2 + 31) / 32 * 32) / 16;  // even
  if (G == 0 || input_tiles == 0) return ffi::Error::Success();
  // A block's sums (kBlock x kGroup KiB, at most 0.75 MB) and a panel's input and gate tiles in the 2 MB L2. Pairs
  // of tiles throughout; at least four blocks where the gates allow, for the team.
  const int64_t kBlock = std::min<int64_t>(input_tiles, 28), blocks = (input_tiles + kBlock - 1) / kBlock;
  const int64_t pairs_of_gate_tiles = (G + 31) / 32;
  int64_t kGroup = std::min<int64_t>(768 / kBlock / 2, pairs_of_gate_tiles) * 2;
  while (kGroup > 2 && blocks * ((pairs_of_gate_tiles * 2 + kGroup - 1) / kGroup) < 4) kGroup = kGroup / 4 * 2;
  const int64_t groups = (pairs_of_gate_tiles * 2 + kGroup - 1) / kGroup;
  // Panels of 6 chunks: a pair of input tiles' panel (12 KiB) stays in L1 while the block's gate tiles go by
  // (12 KiB a pair). Measured at (6400, 4096, 1024 + 512): 4, 6, 8, 12, 18 chunks took 86, 81, 86, 97, 94 ms.
  constexpr int64_t kPanel = 6;
  const int64_t gate_tiles = groups * kGroup;
  // 512 bf16 per tile. Not zeroed: what the packing leaves unwritten (gates past G, columns past the inputs' width)
  // only reaches sums that are not copied out, as each sum depends on one gate and one column alone.
  Aligned gate_pack(gate_tiles * chunks * 256, false), input_pack(input_tiles * chunks * 256, false);
  uint32_t* GP = reinterpret_cast<uint32_t*>(gate_pack.data);  // pairs of bf16
  uint16_t* IP = reinterpret_cast<uint16_t*>(input_pack.data);
  const float *DG = dgates.typed_data(), *X1 = inputs_1.typed_data(), *X2 = inputs_2.typed_data();
  float *dW1 = out_1->typed_data(), *dW2 = out_2->typed_data();
  const int work = static_cast<int>(std::max(chunks, groups * blocks));
  run_team(pool, 2, work, [&](int n, int item) {
    if (n == 0) {  // pack chunk `item`
      if (item >= chunks) return;
      const int64_t r0 = int64_t(item) * 32;
      for (int p = 0; p < 16; ++p) {
        const int64_t even = r0 + 2 * p, odd = even + 1;
        for (int64_t gt = 0; gt * 16 < G; ++gt) {
          const int m = static_cast<int>(std::min<int64_t>(16, G - gt * 16));
          const vf a = round_bf16(even < rows ? loadn(DG + even * G + gt * 16, m) : vf{});
          const vf b = round_bf16(odd < rows ? loadn(DG + odd * G + gt * 16, m) : vf{});
          vi lo, hi;
          __builtin_memcpy(&lo, &a, sizeof lo);
          __builtin_memcpy(&hi, &b, sizeof hi);
          const vi pair = ((lo >> 16) & 0xffff) | (hi & int32_t(0xffff0000u));
          __builtin_memcpy(GP + (gt * chunks + item) * 256 + p * 16, &pair, sizeof pair);
        }
      }
      for (int j = 0; j < 32; ++j) {
        const int64_t r = r0 + j;
        for (int part = 0; part < 2; ++part) {
          const int64_t width = part == 0 ? K1 : K2, first = part == 0 ? 0 : offset_2;
          const float* X = part == 0 ? X1 : X2;
          for (int64_t c0 = 0; c0 < width; c0 += 16) {
            const int m = static_cast<int>(std::min<int64_t>(16, width - c0));
            const vf v = round_bf16(r < rows ? loadn(X + r * width + c0, m) : vf{});
            vi bits;
            __builtin_memcpy(&bits, &v, sizeof bits);
            uint16_t* tile = IP + ((first + c0) / 16 * chunks + item) * 512;
            for (int c = 0; c < m; ++c) tile[c * 32 + j] = static_cast<uint16_t>(bits[c] >> 16);
          }
        }
      }
      return;
    }
    if (item >= groups * blocks) return;
    // Block `item`: gate tiles group * kGroup ... + kGroup, input tiles it0 ... it1.
    const int64_t group = item / blocks, it0 = item % blocks * kBlock, it1 = std::min(input_tiles, it0 + kBlock);
    Aligned sums(kBlock * kGroup * 256);  // [input tile of the block][gate tile of the group][16][16] floats
    static const TileConfig config;
    _tile_loadconfig(&config);
    for (int64_t c0 = 0; c0 < chunks; c0 += kPanel) {
      const int64_t c1 = std::min(chunks, c0 + kPanel);
      for (int64_t it = it0; it < it1; it += 2)
        for (int64_t g = 0; g < kGroup; g += 2) {
          float* s00 = sums.data + ((it - it0) * kGroup + g) * 256;
          float *s01 = s00 + 256, *s10 = s00 + kGroup * 256, *s11 = s10 + 256;
          _tile_loadd(0, s00, 64);
          _tile_loadd(1, s01, 64);
          _tile_loadd(2, s10, 64);
          _tile_loadd(3, s11, 64);
          const uint16_t* a0 = IP + it * chunks * 512;
          const uint16_t* a1 = a0 + chunks * 512;
          const uint16_t* b0 = reinterpret_cast<const uint16_t*>(GP) + (group * kGroup + g) * chunks * 512;
          const uint16_t* b1 = b0 + chunks * 512;
          for (int64_t c = c0; c < c1; ++c) {
            _tile_loadd(4, a0 + c * 512, 64);
            _tile_loadd(5, a1 + c * 512, 64);
            _tile_loadd(6, b0 + c * 512, 64);
            _tile_loadd(7, b1 + c * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
          _tile_stored(0, s00, 64);
          _tile_stored(1, s01, 64);
          _tile_stored(2, s10, 64);
          _tile_stored(3, s11, 64);
        }
    }
    _tile_release();
    for (int64_t it = it0; it < it1; ++it) {  // sums[input column][gate] -> dW[gate][input column]
      const bool second = it * 16 >= offset_2;
      const int64_t k0 = it * 16 - (second ? offset_2 : 0), width = second ? K2 : K1;
      float* dW = second ? dW2 : dW1;
      for (int64_t g = 0; g < kGroup; ++g) {
        const int64_t g0 = (group * kGroup + g) * 16;
        const float* tile = sums.data + ((it - it0) * kGroup + g) * 256;
        for (int i = 0; i < 16 && k0 + i < width; ++i)
          for (int j = 0; j < 16 && g0 + j < G; ++j) dW[(g0 + j) * width + k0 + i] = tile[i * 16 + j];
      }
    }
  });
  return ffi::Error::Success();
}
#endif

// The vectorised nonlinearities on their own, for the accuracy test (tests/test_native.py).
ffi::Error Elementwise(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, int32_t function) {
  const int64_t count = x.element_count();
  const float* in = x.typed_data();
  float* out = y->typed_data();
  for (int64_t i = 0; i < count; i += L) {
    const int m = static_cast<int>(std::min<int64_t>(L, count - i));
    vf v = loadn(in + i, m);
    vf r = function == 0 ? vsigmoid(v) : function == 1 ? vtanh(v) : function == 2 ? vexp(v) : round_bf16(v);
    storen(out + i, r, m);
  }
  return ffi::Error::Success();
}

// ======================================== float32 weight gradient ==============================================
// dW_1 = dgates^T inputs_1 and dW_2 = dgates^T inputs_2 in float32: [rows, G]^T [rows, K] -> [G, K], the GEMM that
// contracts the rows of both operands, which XLA's CPU dot runs at ~53% of the FMA peak here (benchmarks/NOTES.md).
// BLIS's loop order: per panel of kRowPanel rows (in order, so every sum adds its rows in the same order whatever
// the thread count), the inputs' panel is packed by the team into [column block][row][kNR] (L2), then each block of
// kMC gates packs its dgates into [8 gates][row][8] (L1/L2 per micro-panel) and runs the register kernel over the
// column blocks: 8 gates x kNR columns of sums in registers, one broadcast per gate and row.
constexpr int kMR = 8, kNRV = 3, kNR = kNRV * L;  // L is 16 or 8: whole micro-panels of gates per vector
constexpr int64_t kRowPanel = 128, kMC = 64;

// c[i][0..cols) (+)= sum_k a[k][i] b[k][0..cols) for i < rows_valid: a [kc][kMR], b [kc][kNR], c rows ldc apart.
inline void gradient_micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b,
                                  float* __restrict c, int64_t ldc, int rows_valid, int cols, bool first) {
  vf acc[kMR][kNRV] = {};
  // The tile's sums from the earlier row panels: asked for now, they arrive from L2/L3 while the loop runs (the
  // tiles of a gate block outgrow L2 at H >= 512, and the loads at the end stalled; 2-6% of the kernel's time).
  if (!first)
    for (int i = 0; i < rows_valid; ++i)
      for (int v = 0; v < kNRV; ++v) __builtin_prefetch(c + i * ldc + v * L, 1, 3);
  for (int64_t k = 0; k < kc; ++k) {
    vf bv[kNRV];
#pragma GCC unroll 4
    for (int v = 0; v < kNRV; ++v) bv[v] = load(b + k * kNR + v * L);
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const vf ai = splat(a[k * kMR + i]);
#pragma GCC unroll 4
      for (int v = 0; v < kNRV; ++v) acc[i][v] += ai * bv[v];
    }
  }
  for (int i = 0; i < rows_valid; ++i)
    for (int v = 0; v < kNRV; ++v) {
      const int m = cols - v * L;
      if (m <= 0) break;
      float* p = c + i * ldc + v * L;
      storen(p, first ? acc[i][v] : loadn(p, m) + acc[i][v], m);
    }
}

// One input of the weight gradient: X [rows, K] and its dW [G, K].
struct GradientInput {
  const float* x;
  int64_t K;
  float* dW;
  int64_t column_blocks() const { return (K + kNR - 1) / kNR; }
};

// dW_i = D^T X_i for both inputs in one pass over the rows: each panel of the gate gradients (D, tens of MB,
// written by the backward loop with streaming stores, so read from memory) is packed once for both, where a call
// per input read D twice. Each block also asks for its next panel's rows of D while it computes (the packing that
// reads them held 7% of the float32 LSTM training step's samples at (32,100,128,256)).
void weight_gradient_f32(ffi::ThreadPool& pool, const float* D, int64_t rows, int64_t G, const GradientInput (&in)[2]) {
  if (G == 0) return;
  if (rows == 0) {
    for (const GradientInput& input : in) std::memset(input.dW, 0, G * input.K * sizeof(float));
    return;
  }
  const int64_t blocks_1 = in[0].column_blocks(), column_blocks = blocks_1 + in[1].column_blocks();
  if (column_blocks == 0) return;
  const int64_t panels = (rows + kRowPanel - 1) / kRowPanel;
  const int gate_blocks = static_cast<int>((G + kMC - 1) / kMC);
  // The panel's packed inputs, [column block (of input 1, then of input 2)][row][kNR].
  Aligned packed_inputs(column_blocks * kRowPanel * kNR, false), packed_gates(gate_blocks * kMC * kRowPanel, false);
  auto block_of = [&](int64_t jb, const GradientInput** input) {
    *input = jb < blocks_1 ? &in[0] : &in[1];
    return jb < blocks_1 ? jb : jb - blocks_1;
  };
  // Even iterations pack a panel of the inputs (the team's tiles share its column blocks), odd ones use it.
  const int pack_tiles = static_cast<int>(std::min<int64_t>(column_blocks, gate_blocks));
  run_team(pool, static_cast<int>(2 * panels), gate_blocks, [&](int n, int tile) {
    const int64_t r0 = (n / 2) * kRowPanel, kc = std::min(kRowPanel, rows - r0);
    if (n % 2 == 0) {
      if (tile >= pack_tiles) return;
      for (int64_t jb = tile; jb < column_blocks; jb += pack_tiles) {
        const GradientInput* input;
        const int64_t j = block_of(jb, &input);
        for (int64_t k = 0; k < kc; ++k) {
          const float* x = input->x + (r0 + k) * input->K + j * kNR;
          float* out = packed_inputs.data + (jb * kRowPanel + k) * kNR;
          for (int v = 0; v < kNRV; ++v)
            store(out + v * L, loadn(x + v * L, static_cast<int>(input->K - j * kNR - v * L)));
        }
      }
      return;
    }
    // The block's dgates, [kMC / 8 micro-panels][row][8]: whole vectors of each row's kMC gates (a scalar load per
    // gate and row stalled on memory, a fifth of the samples).
    const int64_t g_block = int64_t(tile) * kMC, g_count = std::min<int64_t>(kMC, G - g_block);
    float* packed = packed_gates.data + int64_t(tile) * kMC * kRowPanel;
    for (int64_t k = 0; k < kc; ++k)
      for (int q = 0; q < kMC; q += L) {
        const vf v = loadn(D + (r0 + k) * G + g_block + q, static_cast<int>(g_count - q));
        for (int half = 0; half < L / kMR; ++half)
          __builtin_memcpy(packed + ((q / kMR + half) * kRowPanel + k) * kMR,
                           reinterpret_cast<const float*>(&v) + half * kMR, kMR * sizeof(float));
      }
    // The next panel's rows of the block's dgates, a share per column block, into L2.
    const int64_t next_rows = std::max<int64_t>(0, std::min(kRowPanel, rows - r0 - kRowPanel));
    const int64_t row_lines = (g_count * 4 + 63) / 64;  // 64-byte lines of 16 floats
    const int64_t share = (next_rows * row_lines + column_blocks - 1) / column_blocks;
    // Per column block, its inputs' micro-panel (kRowPanel x kNR floats, 24 KiB) stays in L1 while the block's
    // gate micro-panels go by.
    for (int64_t jb = 0; jb < column_blocks; ++jb) {
      for (int64_t line = jb * share, end = std::min(next_rows * row_lines, line + share); line < end; ++line)
        __builtin_prefetch(D + (r0 + kRowPanel + line / row_lines) * G + g_block + line % row_lines * 16, 0, 2);
      const GradientInput* input;
      const int64_t j = block_of(jb, &input);
      for (int64_t g0 = g_block; g0 < g_block + g_count; g0 += kMR) {
        const float* gates = packed + (g0 - g_block) / kMR * kRowPanel * kMR;
        gradient_micro_kernel(kc, gates, packed_inputs.data + jb * kRowPanel * kNR, input->dW + g0 * input->K + j * kNR,
                              input->K, static_cast<int>(std::min<int64_t>(kMR, G - g0)),
                              static_cast<int>(std::min<int64_t>(kNR, input->K - j * kNR)), r0 == 0);
      }
    }
  });
}

ffi::Error WeightGradientF32(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dgates, ffi::Buffer<ffi::F32> inputs_1,
                             ffi::Buffer<ffi::F32> inputs_2, ffi::ResultBuffer<ffi::F32> out_1,
                             ffi::ResultBuffer<ffi::F32> out_2) {
  auto gate_dims = dgates.dimensions(), dims_1 = inputs_1.dimensions(), dims_2 = inputs_2.dimensions();
  if (ffi::Error error = weight_gradient_shapes(gate_dims, dims_1, dims_2); error.failure()) return error;
  const int64_t rows = gate_dims[0], G = gate_dims[1];
  weight_gradient_f32(pool, dgates.typed_data(), rows, G,
                      {{inputs_1.typed_data(), dims_1[1], out_1->typed_data()},
                       {inputs_2.typed_data(), dims_2[1], out_2->typed_data()}});
  return ffi::Error::Success();
}

}  // namespace

// The exported symbols (setup.py builds with -fvisibility=hidden): the handlers rnnjax/native.py registers.
#pragma GCC visibility push(default)

extern "C" const char* RnnjaxNativeIsa() { return RNNJAX_ISA; }
// Whether bfloat16 GEMM operands run on AMX tiles now (the AMX build, Linux's permission, RNNJAX_NATIVE_AMX).
extern "C" int RnnjaxNativeUsesAmx() { return use_amx(true) ? 1 : 0; }

// The two weight-gradient handlers' shared signature: (dgates, inputs_1, inputs_2) -> (dW_1, dW_2).
static auto weight_gradient_binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

#if RNNJAX_AMX
XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxWeightGradient, WeightGradient,
                              weight_gradient_binding());
#endif

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxWeightGradientF32, WeightGradientF32,
                              weight_gradient_binding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxLstmForward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("training")
                                  .Attr<bool>("bf16")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxLstmBackward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("bf16")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruForward, GruForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("training")
                                  .Attr<bool>("bf16")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("bf16")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxRnnForward, RnnForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("training")
                                  .Attr<bool>("bf16")
                                  .Attr<bool>("relu")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxRnnBackward, RnnBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("bf16")
                                  .Attr<bool>("relu")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxElementwise, Elementwise,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Attr<int32_t>(
                                  "function"));

#pragma GCC visibility pop
