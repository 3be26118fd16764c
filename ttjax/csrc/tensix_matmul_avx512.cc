// The matmul kernels with AVX-512 intrinsics: the same arithmetic as the portable code in tensix_matmul.cc (and
// ttjax/matrix_engine.py), bit for bit, with the weights decoded in registers from their stored form.
//
// Batch-1 decode is a GEMV that reads every weight once: each 16-column vector of a weight row is loaded as
// stored (64 bytes of float32, 32 of bfloat16, 16 of bfloat8_b codes plus an exponent byte, 8 of bfloat4_b),
// decoded to floats, split into its fidelity phases' bits and multiplied by a broadcast activation, so memory
// traffic is the stored bytes. Several rows (batch-32 decode, prefill) decode each 32-row tile of a strip once
// into an L1 buffer, then every row reads it there.
//
// Emulated products are exact (at most 7 x 5 significant bits), so each is a multiply then an add, rounded
// once by the add, in k order: the model's 16-deep sums. (A fused multiply-add would round the same except
// where a product falls below 2^-126; the two ops keep that case equal to the reference, and on Zen 4 the
// add runs on its own pipes.) Exact (fidelity off) math uses fused multiply-adds in k order.
//
// A tile whose weights all decode by the plain rule (whole 16-column vectors, stored rows, block exponents in
// the plain range) is read straight from storage by a loader for its format; any other tile (the edges of a
// matrix, block floats near the ends of the exponent range) is first decoded by the scalar rules into a small
// buffer, and the same arithmetic reads it from there.

#include <immintrin.h>

#include <algorithm>

#include "tensix_matmul.h"

#define TTJAX_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define TTJAX_INLINE TTJAX_AVX512 __attribute__((always_inline)) inline

namespace ttjax {
namespace {

TTJAX_INLINE __m512 AndBits(__m512 v, uint32_t mask) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(static_cast<int>(mask))));
}

// Values below 2^-126 in magnitude become zero of the same sign.
TTJAX_INLINE __m512 Flush(__m512 v) {
  const __mmask16 normal = _mm512_test_epi32_mask(_mm512_castps_si512(v), _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_mov_ps(AndBits(v, 0x80000000u), normal, v);
}

// A BF16 Dst write (DstBF16 in tensix_matmul.cc); TAME: two integer ops (TameProducts in tensix_matmul.h).
template <bool TAME = false>
TTJAX_INLINE __m512 DstBF16(__m512 v) {
  if constexpr (TAME) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(v), _mm512_set1_epi32(0x9000)),
                                                _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  const __m512i u = _mm512_castps_si512(v);
  const __m512i exp_mask = _mm512_set1_epi32(0x7F800000);
  const __mmask16 special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, exp_mask), exp_mask);
  __m512i r = _mm512_and_si512(_mm512_add_epi32(u, _mm512_set1_epi32(0x9000)), _mm512_set1_epi32(0xFFFF0000));
  const __mmask16 tiny = _mm512_testn_epi32_mask(r, exp_mask);
  r = _mm512_mask_and_epi32(r, tiny, r, _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, special, u));
}

// SrcA's bits of a weight vector: the implicit 1 and top 4 mantissa bits (even phases), the next 5 (odd).
TTJAX_INLINE __m512 SrcAEven(__m512 w) { return AndBits(w, 0xFFF80000u); }
TTJAX_INLINE __m512 SrcAOdd(__m512 w) { return _mm512_sub_ps(w, AndBits(w, 0xFFF83FFFu)); }

// SrcB's bits of 32 activations for the two phase groups: the implicit 1 and top 6 mantissa bits (phases
// 0-1), the next 4 (phases 2-3).
TTJAX_INLINE void SrcBTile(const float* x, float* hi, float* lo) {
  for (int64_t i = 0; i < kTile; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    _mm512_storeu_ps(hi + i, AndBits(v, 0xFFFE0000u));
    _mm512_storeu_ps(lo + i, _mm512_sub_ps(v, AndBits(v, 0xFFFE1FFFu)));
  }
}

// Loaders: row i of a tile, 16-column vector c, as Src holds it (EXACT: the stored value). Each is built for one
// tile at column c0 and reads storage directly, with no bounds checks: the caller has checked the tile is plain.
template <bool EXACT>
struct F32Loader {
  const float* row0;
  int64_t stride;
  uint32_t mask;
  TTJAX_AVX512 F32Loader(const Problem& p, int64_t k0, int64_t c0)
      : row0(static_cast<const float*>(p.w) + k0 * p.w_cols + c0), stride(p.w_cols), mask(p.tf32 ? 0xFFFFE000u : 0xFFFF0000u) {}
  TTJAX_INLINE __m512 operator()(int64_t i, int c) const {
    const __m512 v = _mm512_loadu_ps(row0 + i * stride + 16 * c);
    return EXACT ? v : Flush(AndBits(v, mask));
  }
};

template <bool EXACT>
struct BF16Loader {
  const uint16_t* row0;
  int64_t stride;
  TTJAX_AVX512 BF16Loader(const Problem& p, int64_t k0, int64_t c0)
      : row0(static_cast<const uint16_t*>(p.w) + k0 * p.w_cols + c0), stride(p.w_cols) {}
  TTJAX_INLINE __m512 operator()(int64_t i, int c) const {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row0 + i * stride + 16 * c));
    const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return EXACT ? v : Flush(v);
  }
};

// bfloat8_b and bfloat4_b: code * 2^(shared - 127 - (W - 1)), exact, for shared exponents in the plain range.
template <WeightFormat F>
struct BlockLoader {
  static constexpr int32_t kW = F == kBFP8 ? 7 : 3;
  const uint8_t* codes0;  // bytes of row k0 from column c0 (bfloat4_b: two columns a byte)
  const uint8_t* exps0;
  int64_t stride, exp_stride;
  TTJAX_AVX512 BlockLoader(const Problem& p, int64_t k0, int64_t c0)
      : codes0(static_cast<const uint8_t*>(p.w) + (F == kBFP8 ? k0 * p.w_cols + c0 : (k0 * p.w_cols + c0) / 2)),
        exps0(p.exps + k0 * (p.w_cols / kFace) + c0 / kFace),
        stride(F == kBFP8 ? p.w_cols : p.w_cols / 2),
        exp_stride(p.w_cols / kFace) {}
  TTJAX_INLINE __m512 operator()(int64_t i, int c) const {
    __m512 f;
    if constexpr (F == kBFP8) {
      const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes0 + i * stride + 16 * c));
      f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes));
    } else {
      // 8 bytes, two nibbles each (the first in the low nibble): each byte into two lanes, the odd lane shifted
      // down 4, and the lane's low 4 bits index a 16-entry table of the nibbles' values (vpermps reads only those).
      const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes0 + i * stride + 8 * c));
      const __m512i both = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(packed, packed));
      const __m512i idx = _mm512_srlv_epi32(both, _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0));
      f = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(kNibble));
    }
    // 2^(shared - 127 - (W - 1)) applied by adding to the exponent field of the nonzero codes: integer ops, which
    // leave the float pipes to the products (exact: the plain range keeps the exponent normal).
    const int32_t shared = exps0[i * exp_stride + c];
    const __m512i u = _mm512_castps_si512(f);
    const __m512i shift = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(shared - 127 - (kW - 1)) << 23));
    return _mm512_castsi512_ps(_mm512_mask_add_epi32(u, _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7FFFFFFF)), u, shift));
  }
};

// A tile decoded into a buffer [32][width] by the scalar rules (the edges); read as it is.
struct BufferLoader {
  const float* buf;
  int64_t width;
  TTJAX_INLINE __m512 operator()(int64_t i, int c) const { return _mm512_load_ps(buf + i * width + 16 * c); }
};

// The loader for a plain tile of this format.
template <WeightFormat F, bool EXACT>
struct PlainLoader;
template <bool EXACT>
struct PlainLoader<kF32, EXACT> { using type = F32Loader<EXACT>; };
template <bool EXACT>
struct PlainLoader<kBF16, EXACT> { using type = BF16Loader<EXACT>; };
template <bool EXACT>
struct PlainLoader<kBFP8, EXACT> { using type = BlockLoader<kBFP8>; };
template <bool EXACT>
struct PlainLoader<kBFP4, EXACT> { using type = BlockLoader<kBFP4>; };

// Tile rows [k0, k0 + 32), columns [c0, c0 + 16 * nv) read straight from storage: whole vectors, stored rows,
// block exponents in the plain range (their least and greatest into emin, emax where asked).
template <WeightFormat F>
bool PlainTile(const Problem& p, int64_t k0, int64_t c0, int64_t nc, int nv, int32_t* emin = nullptr,
               int32_t* emax = nullptr) {
  if (nc < 16 * nv || k0 + kTile > p.w_rows) return false;
  if constexpr (F == kBFP8 || F == kBFP4) {
    const uint8_t* e = p.exps + k0 * (p.w_cols / kFace) + c0 / kFace;
    int32_t lo = 255, hi = 0;
    for (int64_t i = 0; i < kTile; ++i, e += p.w_cols / kFace) {
      for (int c = 0; c < nv; ++c) {
        if (!PlainScale(e[c], F == kBFP8 ? 7 : 3)) return false;
        lo = std::min<int32_t>(lo, e[c]);
        hi = std::max<int32_t>(hi, e[c]);
      }
    }
    if (emin != nullptr) *emin = lo, *emax = hi;
  }
  return true;
}

// The scalar rules for the tile (zeros past the stored rows and past nc), into buf [32][width].
void DecodeTile(const Problem& p, int64_t k0, int64_t c0, int64_t nc, int64_t width, float* buf) {
  for (int64_t i = 0; i < kTile; ++i) {
    float* row = buf + i * width;
    std::fill(row, row + width, 0.0f);
    const int64_t k = k0 + i;
    if (k >= p.w_rows) continue;
    for (int64_t j = 0; j < std::min(nc, width); j += kFace) {
      float code[kFace];
      const int64_t n = std::min<int64_t>(kFace, nc - j);
      if (p.format == kF32 || p.format == kBF16) {
        for (int64_t q = 0; q < n; ++q) {
          const int64_t at = k * p.w_cols + c0 + j + q;
          float v = p.format == kF32 ? static_cast<const float*>(p.w)[at]
                                     : Float(static_cast<uint32_t>(static_cast<const uint16_t*>(p.w)[at]) << 16);
          if (!p.exact) v = FlushDenormal(p.format == kF32 ? Float(Bits(v) & (p.tf32 ? 0xFFFFE000u : 0xFFFF0000u)) : v);
          row[j + q] = v;
        }
        continue;
      }
      const int64_t col = c0 + j;  // a whole block: the storage is padded to 16 columns
      if (p.format == kBFP8) {
        for (int64_t q = 0; q < kFace; ++q) code[q] = static_cast<const int8_t*>(p.w)[k * p.w_cols + col + q];
      } else {
        const uint8_t* packed = static_cast<const uint8_t*>(p.w) + (k * p.w_cols + col) / 2;
        for (int64_t q = 0; q < kFace / 2; ++q) {
          code[2 * q] = kNibble[packed[q] & 0xF];
          code[2 * q + 1] = kNibble[packed[q] >> 4];
        }
      }
      float values[kFace];
      BlockRow(code, p.exps[k * (p.w_cols / kFace) + col / kFace], p.format == kBFP8 ? 7 : 3, values);
      std::copy(values, values + n, row + j);
    }
  }
}

// One row (batch-1 decode), emulated, one K tile of NV column vectors: every phase and half of the tile summed
// in registers, then added to Dst (held in memory between tiles) in the model's order, phase then half.
template <int PH, int NV, typename Loader>
TTJAX_AVX512 void GemvEmulatedTile(const Loader& load, const float* hi, const float* lo, bool fp32_dest, float* dst) {
  __m512 s[PH][2][NV];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    for (int kk = 0; kk < kFace; ++kk) {
      const int64_t i = h * kFace + kk;
      const __m512 b_hi = _mm512_set1_ps(hi[i]);
      const __m512 b_lo = _mm512_set1_ps(lo[i]);
#pragma GCC unroll 8
      for (int c = 0; c < NV; ++c) {
        const __m512 w = load(i, c);
        const __m512 a_even = SrcAEven(w);
        const __m512 a_odd = PH > 1 ? SrcAOdd(w) : a_even;
#pragma GCC unroll 4
        for (int ph = 0; ph < PH; ++ph) {
          const __m512 prod = _mm512_mul_ps(ph & 2 ? b_lo : b_hi, ph & 1 ? a_odd : a_even);
          s[ph][h][c] = kk == 0 ? prod : _mm512_add_ps(s[ph][h][c], prod);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) {
    __m512 d = _mm512_load_ps(dst + 16 * c);
#pragma GCC unroll 4
    for (int ph = 0; ph < PH; ++ph) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        d = _mm512_add_ps(d, s[ph][h][c]);
        if (!fp32_dest) d = DstBF16(d);
      }
    }
    _mm512_store_ps(dst + 16 * c, d);
  }
}

// One row, exact, one K tile of NV column vectors: a fused multiply-add per weight into Dst, in k order.
template <int NV, typename Loader>
TTJAX_AVX512 void GemvExactTile(const Loader& load, const float* x, float* dst) {
  __m512 d[NV];
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) d[c] = _mm512_load_ps(dst + 16 * c);
  for (int64_t i = 0; i < kTile; ++i) {
    const __m512 b = _mm512_set1_ps(x[i]);
#pragma GCC unroll 8
    for (int c = 0; c < NV; ++c) d[c] = _mm512_fmadd_ps(b, load(i, c), d[c]);
  }
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) _mm512_store_ps(dst + 16 * c, d[c]);
}

// One tile of one row over NV vectors from column c0: from storage where the tile is plain, else via buf.
template <WeightFormat F, int PH, int NV>
TTJAX_AVX512 void GemvTile(const Problem& p, const float* hi, const float* lo, int64_t k0, int64_t c0, int64_t nc,
                           float* dst, float* buf) {
  if (PlainTile<F>(p, k0, c0, nc, NV)) {
    if (p.exact) return GemvExactTile<NV>(typename PlainLoader<F, true>::type(p, k0, c0), p.x + k0, dst);
    return GemvEmulatedTile<PH, NV>(typename PlainLoader<F, false>::type(p, k0, c0), hi, lo, p.fp32_dest, dst);
  }
  DecodeTile(p, k0, c0, nc, 16 * NV, buf);
  const BufferLoader load{buf, 16 * NV};
  if (p.exact) return GemvExactTile<NV>(load, p.x + k0, dst);
  GemvEmulatedTile<PH, NV>(load, hi, lo, p.fp32_dest, dst);
}

// Ask for the weight bytes of tile rows [k0, k0 + 32), columns [c0, c0 + nc) (and their block exponents) ahead of
// use. A strip's tile is 32 short runs a row stride apart, more streams than the hardware prefetchers follow, so
// without this a GEMV waits on memory at a fraction of the read bandwidth.
// (Only rows [i0, i1) of the tile where asked.)
template <WeightFormat F>
TTJAX_INLINE void PrefetchTile(const Problem& p, int64_t k0, int64_t c0, int64_t nc, int64_t i0 = 0, int64_t i1 = kTile) {
  constexpr int64_t kBitsPer = F == kF32 ? 32 : F == kBF16 ? 16 : F == kBFP8 ? 8 : 4;
  const char* base = static_cast<const char*>(p.w);
  const int64_t end = std::min<int64_t>(i1, p.w_rows - k0);
  const int64_t first = c0 * kBitsPer / 8, last = (c0 + nc) * kBitsPer / 8;
  for (int64_t i = i0; i < end; ++i) {
    const char* row = base + (k0 + i) * p.w_cols * kBitsPer / 8;
    for (int64_t b = first & ~int64_t{63}; b < last; b += 64) _mm_prefetch(row + b, _MM_HINT_T0);
    if constexpr (F == kBFP8 || F == kBFP4) _mm_prefetch(reinterpret_cast<const char*>(p.exps + (k0 + i) * (p.w_cols / kFace) + c0 / kFace), _MM_HINT_T0);
  }
}

// One tile of one row over nc columns from c0: NV vectors at a time, then the rest with half as many, so a strip
// whose width is not a multiple of 16 * NV still reads storage in registers (only a last partial vector, at a
// matrix's edge, goes through the scalar decode).
template <WeightFormat F, int PH, int NV>
TTJAX_AVX512 void GemvSweep(const Problem& p, const float* hi, const float* lo, int64_t k0, int64_t c0, int64_t nc,
                            float* dst, float* buf) {
  int64_t j = 0;
  for (; nc - j >= 16 * NV || (NV == 1 && j < nc); j += 16 * NV) {
    if (k0 + kTile < p.w_rows) PrefetchTile<F>(p, k0 + kTile, c0 + j, std::min<int64_t>(16 * NV, nc - j));
    GemvTile<F, PH, NV>(p, hi, lo, k0, c0 + j, nc - j, dst + j, buf);
  }
  if constexpr (NV > 1) {
    if (j < nc) GemvSweep<F, PH, NV / 2>(p, hi, lo, k0, c0 + j, nc - j, dst + j, buf);
  }
}

// One row (or a few: FewRows), a strip of up to kWideCols columns: tile by tile, sweeping the strip in
// register-sized pieces, so that each tile reads 32 runs of contiguous weight bytes (long runs keep the prefetchers
// streaming; a narrow strip would read a few cache lines per row, a page apart in a wide matrix).
template <WeightFormat F, int PH, int NV>
TTJAX_AVX512 void Gemv(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  constexpr int64_t kDst = kWideCols + 128;
  const int64_t rows = p.rows;
  float* dst = scratch;                        // [rows][kDst]
  float* buf = scratch + rows * kDst;          // [32][128]
  float* table = buf + kTile * 128;            // GemvTableFloats(rows): the block GEMV's scaled activations and sums
  std::fill(dst, dst + rows * kDst, 0.0f);
  alignas(64) float hi[kFewRows * kTile], lo[kFewRows * kTile];
  bool tame = true;  // the Dst's adds so far (TameProducts)
  for (int64_t k0 = 0; k0 < p.depth; k0 += kTile) {
    if (p.exact && k0 >= p.w_rows) break;
    if (!p.exact) {
      for (int64_t m = 0; m < rows; ++m) SrcBTile(p.x + m * p.depth + k0, hi + m * kTile, lo + m * kTile);
    }
    if constexpr (F == kBFP8 || F == kBFP4) {  // most tiles: the block GEMV, at memory speed
      const auto tile = p.vbmi ? GemvBlockTileAvx512Vbmi : GemvBlockTileAvx512;
      if (!p.exact && tile(p, hi, lo, rows, k0, c0, nc, dst, kDst, table, &tame)) continue;
    }
    tame = false;
    for (int64_t m = 0; m < rows; ++m) GemvSweep<F, PH, NV>(p, hi + m * kTile, lo + m * kTile, k0, c0, nc, dst + m * kDst, buf);
  }
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t j = 0; j < nc; j += 16) {
      const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, nc - j)) - 1u);
      _mm512_mask_storeu_ps(p.out + m * p.cols + c0 + j, mask, _mm512_load_ps(dst + m * kDst + j));
    }
  }
}

// How a many-row kernel writes Dst: float32 adds, or BF16 writes by the exact rule or by the tame one's two ops.
enum DstMode : int { kDstFp32, kDstBf16, kDstTame };

// Many rows: each 32 x 64 weight tile of the strip is decoded (and split, emulated) once into wa, then every
// row runs its sums from there, R rows at a time (4: each weight vector loaded once for 16 products).
//
// FMA: the tile's weight parts and the rows' activation parts keep every product normal (Exponents below), so a
// fused multiply-add rounds exactly as the model's multiply then add: one instruction a product instead of two.
template <int PH, int R, bool FMA, DstMode DST>
TTJAX_AVX512 void RowsEmulated(const Problem& p, const float* wa, const float* xb, int64_t r, float* dst) {
  constexpr int NV = kCols / 16;
#pragma GCC unroll 4
  for (int ph = 0; ph < PH; ++ph) {
    const float* a = wa + (ph & 1) * kTile * kCols;
    const float* b = xb + (ph & 2 ? p.rows : 0) * kTile;
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512 s[R][NV];
#pragma GCC unroll 4
      for (int q = 0; q < R; ++q) {
        const __m512 bk = _mm512_set1_ps(b[(r + q) * kTile + h * kFace]);
#pragma GCC unroll 4
        for (int c = 0; c < NV; ++c) s[q][c] = _mm512_mul_ps(bk, _mm512_load_ps(a + h * kFace * kCols + 16 * c));
      }
      for (int kk = 1; kk < kFace; ++kk) {
        const float* arow = a + (h * kFace + kk) * kCols;
        __m512 av[NV];
#pragma GCC unroll 4
        for (int c = 0; c < NV; ++c) av[c] = _mm512_load_ps(arow + 16 * c);
#pragma GCC unroll 4
        for (int q = 0; q < R; ++q) {
          const __m512 bk = _mm512_set1_ps(b[(r + q) * kTile + h * kFace + kk]);
#pragma GCC unroll 4
          for (int c = 0; c < NV; ++c) {
            s[q][c] = FMA ? _mm512_fmadd_ps(bk, av[c], s[q][c]) : _mm512_add_ps(s[q][c], _mm512_mul_ps(bk, av[c]));
          }
        }
      }
#pragma GCC unroll 4
      for (int q = 0; q < R; ++q) {
        float* d = dst + (r + q) * kCols;
#pragma GCC unroll 4
        for (int c = 0; c < NV; ++c) {
          const __m512 v = _mm512_add_ps(_mm512_load_ps(d + 16 * c), s[q][c]);
          _mm512_store_ps(d + 16 * c, DST == kDstFp32 ? v : DstBF16<DST == kDstTame>(v));
        }
      }
    }
  }
}

template <int R>
TTJAX_AVX512 void RowsExact(const Problem& p, const float* wt, int64_t k0, int64_t r, float* dst) {
  constexpr int NV = kCols / 16;
  __m512 s[R][NV];
#pragma GCC unroll 4
  for (int q = 0; q < R; ++q) {
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) s[q][c] = _mm512_load_ps(dst + (r + q) * kCols + 16 * c);
  }
  for (int64_t i = 0; i < kTile; ++i) {
    __m512 av[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) av[c] = _mm512_load_ps(wt + i * kCols + 16 * c);
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) {
      const __m512 bk = _mm512_set1_ps(p.x[(r + q) * p.depth + k0 + i]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) s[q][c] = _mm512_fmadd_ps(bk, av[c], s[q][c]);
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < R; ++q) {
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) _mm512_store_ps(dst + (r + q) * kCols + 16 * c, s[q][c]);
  }
}

// The range of the biased exponent fields of a set of values' nonzero members, gathered a vector at a time: a
// nonzero below 2^-126 counts as field 0, inf and NaN as 255, which no product bound admits.
struct Exponents {
  __m512i lo, hi;
  TTJAX_INLINE Exponents() : lo(_mm512_set1_epi32(255)), hi(_mm512_setzero_si512()) {}
  TTJAX_INLINE void Set(int32_t least, int32_t greatest) { lo = _mm512_set1_epi32(least), hi = _mm512_set1_epi32(greatest); }
  TTJAX_INLINE void Add(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __mmask16 nonzero = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i e = _mm512_and_si512(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(0xFF));
    lo = _mm512_mask_min_epu32(lo, nonzero, lo, e);
    hi = _mm512_mask_max_epu32(hi, nonzero, hi, e);
  }
  TTJAX_INLINE int32_t Min() const { return static_cast<int32_t>(_mm512_reduce_min_epu32(lo)); }
  TTJAX_INLINE int32_t Max() const { return static_cast<int32_t>(_mm512_reduce_max_epu32(hi)); }
};

// Every product of a value of a and one of b is normal and finite, hence exact and rounded alike by an FMA:
// |a b| >= 2^(Ea - 127 + Eb - 127) >= 2^-126 and |a b| < 2^(Ea - 126 + Eb - 126) <= 2^128.
TTJAX_INLINE bool ProductsNormal(const Exponents& a, const Exponents& b) {
  const int32_t amin = a.Min(), amax = a.Max(), bmin = b.Min(), bmax = b.Max();
  if (amax < amin || bmax < bmin) return true;  // all zeros on one side: every product an exact zero
  return amin > 0 && bmin > 0 && amax < 255 && bmax < 255 && amin + bmin >= 128 && amax + bmax <= 379;
}

// The tile's weights as Src holds them (split into even and odd phase parts when emulated) into wa; their
// exponent range into ea when TRACK (a plain block-float tile's follows from its block exponents instead).
template <bool TRACK, typename Loader>
TTJAX_AVX512 void StoreTile(const Problem& p, const Loader& load, float* wa, Exponents& ea) {
  for (int64_t i = 0; i < kTile; ++i) {
#pragma GCC unroll 4
    for (int c = 0; c < kCols / 16; ++c) {
      const __m512 w = load(i, c);
      if (p.exact) {
        _mm512_store_ps(wa + i * kCols + 16 * c, w);
      } else {
        const __m512 even = SrcAEven(w), odd = SrcAOdd(w);
        _mm512_store_ps(wa + i * kCols + 16 * c, even);
        _mm512_store_ps(wa + (kTile + i) * kCols + 16 * c, odd);
        if (TRACK) ea.Add(even), ea.Add(odd);
      }
    }
  }
}

// The next weight tile of a strip piece, asked for a share at a time while the rows compute on this one: asked for
// at once, its 32 lines (a row stride apart, each its own DRAM page) filled the core's line-fill buffers and the
// prefetches stalled it for a tenth of a 32-row matmul.
template <WeightFormat F>
struct Ahead {
  const Problem& p;
  int64_t k0, c0, nc;  // the tile (k0 past the weights: nothing to ask for)
  TTJAX_INLINE void Rows(int64_t r0, int64_t r1) const {  // the share of activation rows [r0, r1)
    if (k0 < p.w_rows) PrefetchTile<F>(p, k0, c0, nc, r0 * kTile / p.rows, r1 * kTile / p.rows);
  }
};

template <int R, WeightFormat F>
TTJAX_AVX512 void RowsExactFrom(const Problem& p, const float* wa, int64_t k0, int64_t r, float* dst, const Ahead<F>& ahead) {
  for (; r + R <= p.rows; r += R) {
    ahead.Rows(r, r + R);
    RowsExact<R>(p, wa, k0, r, dst);
  }
  if constexpr (R > 1) RowsExactFrom<R - 1>(p, wa, k0, r, dst, ahead);
}

template <int PH, int R, bool FMA, DstMode DST, WeightFormat F>
TTJAX_AVX512 void RowsEmulatedFrom(const Problem& p, const float* wa, const float* xb, int64_t r, float* dst,
                                   const Ahead<F>& ahead) {
  for (; r + R <= p.rows; r += R) {
    ahead.Rows(r, r + R);
    RowsEmulated<PH, R, FMA, DST>(p, wa, xb, r, dst);
  }
  if constexpr (R > 1) RowsEmulatedFrom<PH, R - 1, FMA, DST>(p, wa, xb, r, dst, ahead);
}

// Many rows, a strip of up to kRowCols columns in 64-column pieces: each K tile's activation phases (and their
// exponent range) made once for all the pieces, then piece by piece the weight tile decoded into wa and every row's
// sums added to the piece's Dst [rows][64].
template <WeightFormat F, int PH>
TTJAX_AVX512 void Rows(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  const int64_t pieces = (nc + kCols - 1) / kCols;
  float* wa = scratch;                       // [2 parts][32][64]
  float* buf = wa + 2 * kTile * kCols;       // [32][64]
  float* xb = buf + kTile * kCols;           // [2 groups][rows][32]
  float* dst = xb + 2 * p.rows * kTile;      // [pieces][rows][64]
  std::fill(dst, dst + pieces * p.rows * kCols, 0.0f);
  constexpr bool kBlock = F == kBFP8 || F == kBFP4;
  bool tame[kRowCols / kCols];  // each piece's Dst: its adds so far (TameProducts)
  std::fill(tame, tame + pieces, true);
  for (int64_t k0 = 0; k0 < p.depth; k0 += kTile) {
    Exponents eb;
    if (!p.exact) {
      for (int64_t r = 0; r < p.rows; ++r) {
        float* hi = xb + r * kTile;
        float* lo = xb + (p.rows + r) * kTile;
        SrcBTile(p.x + r * p.depth + k0, hi, lo);
        for (int64_t i = 0; i < kTile; i += 16) {
          eb.Add(_mm512_load_ps(hi + i));
          if (PH > 2) eb.Add(_mm512_load_ps(lo + i));
        }
      }
    }
    for (int64_t s = 0; s < pieces; ++s) {
      const int64_t cs = c0 + s * kCols, ns = std::min(kCols, nc - s * kCols);
      float* ds = dst + s * p.rows * kCols;
      Exponents ea;
      int32_t emin = 255, emax = 0;
      if (PlainTile<F>(p, k0, cs, ns, kCols / 16, &emin, &emax)) {
        if (p.exact) {
          StoreTile<false>(p, typename PlainLoader<F, true>::type(p, k0, cs), wa, ea);
        } else if (kBlock) {
          // A value's phase parts (code parts x 2^(e - 127 - (W - 1))) have exponent fields in [e - (W - 1), e].
          StoreTile<false>(p, typename PlainLoader<F, false>::type(p, k0, cs), wa, ea);
          ea.Set(emin - (F == kBFP8 ? 6 : 2), emax);
        } else {
          StoreTile<true>(p, typename PlainLoader<F, false>::type(p, k0, cs), wa, ea);
        }
      } else {
        DecodeTile(p, k0, cs, ns, kCols, buf);
        StoreTile<true>(p, BufferLoader{buf, kCols}, wa, ea);
      }
      // The next tile's 32 lines (a row stride apart, which no hardware prefetcher follows), asked for during this
      // tile's products: read on demand, the decode waited on memory for half as long as the products of 32 rows took.
      const Ahead<F> ahead{p, k0 + kTile, cs, ns};
      if (p.exact) {
        RowsExactFrom<4>(p, wa, k0, 0, ds, ahead);
        continue;
      }
      const bool normal = ProductsNormal(ea, eb);
      tame[s] = tame[s] && normal && TameProducts(eb.Min(), eb.Max(), ea.Min(), ea.Max());
      if (p.fp32_dest) {
        if (normal) {
          RowsEmulatedFrom<PH, 4, true, kDstFp32>(p, wa, xb, 0, ds, ahead);
        } else {
          RowsEmulatedFrom<PH, 4, false, kDstFp32>(p, wa, xb, 0, ds, ahead);
        }
      } else if (tame[s]) {
        RowsEmulatedFrom<PH, 4, true, kDstTame>(p, wa, xb, 0, ds, ahead);
      } else if (normal) {
        RowsEmulatedFrom<PH, 4, true, kDstBf16>(p, wa, xb, 0, ds, ahead);
      } else {
        RowsEmulatedFrom<PH, 4, false, kDstBf16>(p, wa, xb, 0, ds, ahead);
      }
    }
  }
  for (int64_t s = 0; s < pieces; ++s) {
    for (int64_t r = 0; r < p.rows; ++r) {
      for (int64_t j = s * kCols; j < std::min(nc, (s + 1) * kCols); j += 16) {
        const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, nc - j)) - 1u);
        _mm512_mask_storeu_ps(p.out + r * p.cols + c0 + j, mask, _mm512_load_ps(dst + (s * p.rows + r) * kCols + j - s * kCols));
      }
    }
  }
}

template <WeightFormat F, int PH>
TTJAX_AVX512 void StripFor(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  if (p.rows == 1 || FewRows(p)) {  // batch-1 decode, short prompts: weights decoded in registers, never stored;
                                    // as many columns at once as the registers hold the sums of
    if (p.exact || PH == 1) return Gemv<F, PH, 8>(p, c0, nc, scratch);
    if (PH == 2) return Gemv<F, PH, 4>(p, c0, nc, scratch);
    return Gemv<F, PH, 2>(p, c0, nc, scratch);
  }
  for (int64_t j = 0; j < nc; j += kRowCols) Rows<F, PH>(p, c0 + j, std::min(kRowCols, nc - j), scratch);
}

template <WeightFormat F>
TTJAX_AVX512 void StripFormat(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  switch (p.exact ? 1 : p.phases) {
    case 1: return StripFor<F, 1>(p, c0, nc, scratch);
    case 2: return StripFor<F, 2>(p, c0, nc, scratch);
    case 3: return StripFor<F, 3>(p, c0, nc, scratch);
    default: return StripFor<F, 4>(p, c0, nc, scratch);
  }
}

}  // namespace

int64_t ScratchFloats(const Problem& p) {
  const int64_t gemv_rows = FewRows(p) ? p.rows : 1;
  return std::max(3 * kTile * kCols + p.rows * (2 * kTile + kRowCols),
                  gemv_rows * (kWideCols + 128) + kTile * 128 + GemvTableFloats(gemv_rows));
}

void StripAvx512(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  switch (p.format) {
    case kF32: return StripFormat<kF32>(p, c0, nc, scratch);
    case kBF16: return StripFormat<kBF16>(p, c0, nc, scratch);
    case kBFP8: return StripFormat<kBFP8>(p, c0, nc, scratch);
    case kBFP4: return StripFormat<kBFP4>(p, c0, nc, scratch);
  }
}

}  // namespace ttjax
