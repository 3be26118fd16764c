// Shared by the matmul kernels: the problem a call describes, and the scalar decoding rules every ISA level
// follows (ttjax/matrix_engine.py and ttjax/blockfloat.py are the specification).

#pragma once

#include <cstdint>
#include <cstring>

namespace ttjax {

constexpr int64_t kTile = 32;
constexpr int64_t kFace = 16;
constexpr int64_t kCols = 64;         // columns a tile of the many-row kernels holds in L1
constexpr int64_t kRowCols = 4 * kCols;  // columns a strip of the AVX-512 many-row kernel computes (in kCols pieces)
constexpr int64_t kWideCols = 8192;   // the widest strip a single row is computed in (a unit of work)

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float Float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// How the weights are stored: float32 or bfloat16 values, or tt-metal's block floats (codes and one shared
// exponent per 16 values of a row, as ttjax.BlockFloatTensor keeps them).
enum WeightFormat : int64_t { kF32 = 0, kBF16 = 1, kBFP8 = 2, kBFP4 = 3 };

// Vector ISA levels, as the `isa` attribute names them (0 lets the kernel choose the best the CPU has).
// kIsaAvx512Vbmi: AVX-512 with VBMI, which only the block-float GEMV uses (other kernels run their AVX-512 code).
enum Isa : int64_t { kIsaAuto = 0, kIsaPortable = 1, kIsaAvx2 = 2, kIsaAvx512 = 3, kIsaAvx512Vbmi = 4 };

struct Problem {
  const float* x;        // [rows, depth]: unpacked operands (emulated), or the activations as they are (exact)
  const void* w;
  const uint8_t* exps;   // block floats: [w_rows, w_cols / 16]
  float* out;            // [rows, cols]
  int64_t rows, depth, cols;  // R, K (a multiple of 32), N
  int64_t w_rows;             // rows of w actually stored (K before padding for float weights)
  int64_t w_cols;             // columns of w's storage (values; bfloat4_b holds two a byte)
  int phases;
  bool fp32_dest;
  bool tf32;   // float32 weights are read as TF32 (else BF16)
  bool exact;  // fidelity off: float32 math on the values as stored, no phases, no Dst rounding
  WeightFormat format;
  bool vbmi = false;  // the AVX-512 kernels may use VBMI
};

inline float FlushDenormal(float v) {
  uint32_t u = Bits(v);
  return (u & 0x7F800000u) == 0 ? Float(u & 0x80000000u) : v;
}

// A block-float code as a float: q * 2^(shared - 127 - (W - 1)), built on q's bits as ttjax.blockfloat's
// decode_blocks does, so that tiny values become 0 and exponent 255 reads as inf / NaN the same way.
inline float BlockValue(int32_t q, int32_t negative, int32_t adjust) {
  const int32_t qbits = static_cast<int32_t>(Bits(static_cast<float>(q)));
  const int32_t exp_field = ((qbits >> 23) & 0xFF) + adjust;
  const uint32_t v = static_cast<uint32_t>(qbits + adjust * (1 << 23)) | (static_cast<uint32_t>(negative) << 31);
  return (q == 0) | (exp_field < 1) ? 0.0f : Float(v);
}

// In this range of shared exponents a block's values are code * 2^(shared - 127 - (W - 1)), an exact product
// of normal floats; outside it (values that flush to 0, exponent 255) BlockValue applies.
inline bool PlainScale(int32_t shared, int32_t w) { return shared >= w && shared < 255 - 8; }

// One block of 16 signed codes sharing exponent `shared`, with W magnitude bits, as floats.
inline void BlockRow(const float* code, int32_t shared, int32_t w, float* out) {
  const int32_t adjust = shared - 127 - (w - 1);
  if (PlainScale(shared, w)) {
    const float scale = Float(static_cast<uint32_t>(adjust + 127) << 23);
    for (int64_t i = 0; i < kFace; ++i) out[i] = code[i] * scale;
    return;
  }
  for (int64_t i = 0; i < kFace; ++i) {
    const int32_t q = static_cast<int32_t>(code[i] < 0 ? -code[i] : code[i]);
    out[i] = BlockValue(q, code[i] < 0, adjust);
  }
}

// A bfloat4_b nibble (sign bit 3, magnitude bits 0-2) as a float; magnitude 0 is +0 whatever its sign.
constexpr float kNibble[16] = {0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7};

// A BF16 Dst write (DstBF16 in tensix_matmul.cc) is TF32 then BF16 rounding, ties away, which on a float's bits is
// (u + 0x9000) & 0xFFFF0000, plus two exceptions: an inf / NaN sum is kept as it is, and a result below 2^-126 flushes
// to zero. A "tame" run of a Dst's adds has neither, so it is the two integer ops alone: every value added to the Dst
// is a multiple of 2^-126 (so is the Dst, and a nonzero sum is at least 2^-126; rounding keeps the multiple), and
// every 16-deep sum is finite (a finite Dst plus a finite sum rounds to a finite value or to inf, which the two ops
// keep; NaN needs an inf operand). TameProducts says it of a tile from its operands' nonzero exponent fields (a
// denormal counts as 0, inf / NaN as 255, neither tame): products of an x-part with at most 7 significant bits (a
// multiple of 2^(Ex - 127 - 6)) and a w-part with at most 5 (of 2^(Ew - 127 - 4)) are multiples of 2^-126 when
// Ex + Ew >= 137, and 16 of them, each below 2^(Ex + Ew - 252), sum below 2^127 when Ex + Ew <= 375. Once a tile is
// not tame, the Dst's later adds take the exact rule.
inline bool TameProducts(int32_t x_min, int32_t x_max, int32_t w_min, int32_t w_max) {
  if (x_max < x_min || w_max < w_min) return true;  // all zeros on one side
  return x_min > 0 && w_min > 0 && x_max < 255 && w_max < 255 && x_min + w_min >= 137 && x_max + w_max <= 375;
}

// The AVX-512 kernels (tensix_matmul_avx512.cc): the strip of columns [c0, c0 + nc) for every row (nc at most
// kWideCols for one row or a few, else kRowCols). scratch holds at least ScratchFloats(p) floats, 64-byte aligned.
void StripAvx512(const Problem& p, int64_t c0, int64_t nc, float* scratch);
int64_t ScratchFloats(const Problem& p);

// The block-float GEMV for one K tile of a strip and `rows` activation rows (tensix_gemv_block.inc; hi, lo: the
// rows' SrcB phases, 32 apart; dst: rows dst_stride apart): true when it took the tile, false when the tile is not
// one it can do exactly (the caller's general kernel then does it). table: GemvTableFloats(rows) floats. tame: in,
// whether the Dst's adds so far were tame (TameProducts); out, whether they still are.
bool GemvBlockTileAvx512(const Problem& p, const float* hi, const float* lo, int64_t rows, int64_t k0, int64_t c0,
                         int64_t nc, float* dst, int64_t dst_stride, float* table, bool* tame);
bool GemvBlockTileAvx512Vbmi(const Problem& p, const float* hi, const float* lo, int64_t rows, int64_t k0, int64_t c0,
                             int64_t nc, float* dst, int64_t dst_stride, float* table, bool* tame);
inline int64_t GemvTableFloats(int64_t rows) { return rows * (2 * kTile * (kWideCols / kFace) + 4 * 2 * kWideCols); }

// A few rows (a short prompt's prefill) stream the weights as one row does, each weight vector decoded once for all
// of them, when their 16-deep sums fit the registers: block floats with at most two sums a vector.
constexpr int64_t kFewRows = 8;
inline bool FewRows(const Problem& p) {
  const int64_t sums = p.format == kBFP4 ? (p.phases + 1) / 2 : p.phases;
  return p.rows > 1 && p.rows <= kFewRows && !p.exact && (p.format == kBFP8 || p.format == kBFP4) && sums <= 2;
}

}  // namespace ttjax
