// The Tensix matrix engine's matmul (ttjax/matrix_engine.py's model) as an XLA FFI custom call for the CPU.
//
// Same arithmetic as the pure-JAX path, bit for bit: per output element, for each K tile (32), for each
// fidelity phase, for each 16-deep half of the tile: the 16 products of the phase's operand bits summed in
// k order in float32, then added to Dst (FP32, or BF16 rounded at every add). The products are exact in
// float32 (at most 7 x 5 significant bits), so whether the compiler fuses them into FMAs does not change a
// bit; contraction is switched off anyway (-ffp-contract=off) so the only roundings are the model's.
//
// x [R, K] arrives unpacked (TF32 or BF16 values, denormals flushed) and zero-padded to K a multiple of 32, as
// the reference pads it. The weights arrive as stored: float32, bfloat16 or block-float codes and exponents,
// decoded and unpacked here a row at a time (rows past the stored ones are zero), so no decoded copy of the
// weights is ever written. The work is split in blocks of 64 columns over XLA's own CPU thread pool; each block
// decodes each weight once and cuts its phase bits once for all the rows.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kTile = 32;
constexpr int64_t kFace = 16;
constexpr int64_t kCols = 64;  // columns per block of work

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

// SrcA (weights): the implicit 1 and top 4 mantissa bits in even phases, the next 5 in odd ones (ELWMUL.md).
inline float SrcA(float w, int phase) {
  return (phase & 1) == 0 ? Float(Bits(w) & 0xFFF80000u) : w - Float(Bits(w) & 0xFFF83FFFu);
}

// SrcB (activations): the implicit 1 and top 6 mantissa bits in phases 0-1, the next 4 in phases 2-3.
inline float SrcB(float x, int phase) {
  return (phase & 2) == 0 ? Float(Bits(x) & 0xFFFE0000u) : x - Float(Bits(x) & 0xFFFE1FFFu);
}

// A BF16 Dst write: to TF32 then BF16, each to nearest with ties away (the two roundings fold into one add,
// since the first leaves the 13 low bits zero), exponent 255 kept, results below 2^-126 flushed to signed 0.
inline float DstBF16(float v) {
  uint32_t u = Bits(v);
  if ((u & 0x7F800000u) == 0x7F800000u) return v;
  uint32_t r = (u + 0x9000u) & 0xFFFF0000u;
  if ((r & 0x7F800000u) == 0) r &= 0x80000000u;
  return Float(r);
}

// How the weights are stored: float32 or bfloat16 values, or tt-metal's block floats (codes and one shared
// exponent per 16 values of a row, as ttjax.BlockFloatTensor keeps them).
enum WeightFormat : int64_t { kF32 = 0, kBF16 = 1, kBFP8 = 2, kBFP4 = 3 };

struct Problem {
  const float* x;
  const void* w;
  const uint8_t* exps;  // block floats: [w_rows, w_stride_cols / 16]
  float* out;
  int64_t rows, depth, cols;  // R, K (a multiple of 32), N
  int64_t w_rows;             // rows of w actually stored (K before padding for float weights)
  int64_t w_cols;             // columns of w's storage (values; bfloat4_b holds two a byte)
  int phases;
  bool fp32_dest;
  bool tf32;  // float32 weights are read as TF32 (else BF16)
  WeightFormat format;
};

inline float FlushDenormal(float v) {
  uint32_t u = Bits(v);
  return (u & 0x7F800000u) == 0 ? Float(u & 0x80000000u) : v;
}

// A block-float code as a float: q * 2^(shared - 127 - (W - 1)), built on q's bits as ttjax.blockfloat's
// decode_blocks does, so that tiny values become 0 and exponent 255 reads as inf / NaN the same way. Branch-free,
// so that the loops over a block's 16 values vectorize.
inline float BlockValue(int32_t q, int32_t negative, int32_t adjust) {
  const int32_t qbits = static_cast<int32_t>(Bits(static_cast<float>(q)));
  const int32_t exp_field = ((qbits >> 23) & 0xFF) + adjust;
  const uint32_t v = static_cast<uint32_t>(qbits + adjust * (1 << 23)) | (static_cast<uint32_t>(negative) << 31);
  return (q == 0) | (exp_field < 1) ? 0.0f : Float(v);
}

// One block of 16 signed codes sharing exponent `shared`, with W magnitude bits, as floats. In the usual range
// the value is code * 2^(shared - 127 - (W - 1)), an exact float product; near the ends of the exponent range
// (results that flush to 0, exponent 255) BlockValue follows decode_blocks bit for bit.
inline void BlockRow(const float* code, int32_t shared, int32_t w, float* out) {
  const int32_t adjust = shared - 127 - (w - 1);
  if (shared >= w && shared < 255 - 8) {
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

// Row k of the weights, columns [c0, c0 + nc) and up to the next multiple of 16 within the storage, as the
// unpacker writes them to SrcA.
inline void WeightRow(const Problem& p, int64_t k, int64_t c0, int64_t nc, float* row) {
  if (k >= p.w_rows) {
    for (int64_t j = 0; j < kCols; ++j) row[j] = 0.0f;
    return;
  }
  switch (p.format) {
    case kF32: {
      const float* w = static_cast<const float*>(p.w) + k * p.w_cols + c0;
      const uint32_t mask = p.tf32 ? 0xFFFFE000u : 0xFFFF0000u;
      for (int64_t j = 0; j < nc; ++j) row[j] = FlushDenormal(Float(Bits(w[j]) & mask));
      break;
    }
    case kBF16: {
      const uint16_t* w = static_cast<const uint16_t*>(p.w) + k * p.w_cols + c0;
      for (int64_t j = 0; j < nc; ++j) row[j] = FlushDenormal(Float(static_cast<uint32_t>(w[j]) << 16));
      break;
    }
    case kBFP8: {
      const int8_t* codes = static_cast<const int8_t*>(p.w) + k * p.w_cols + c0;
      const uint8_t* exps = p.exps + k * (p.w_cols / kFace) + c0 / kFace;
      for (int64_t b = 0; b * kFace < nc; ++b) {
        float code[kFace];
        for (int64_t i = 0; i < kFace; ++i) code[i] = static_cast<float>(codes[b * kFace + i]);
        BlockRow(code, exps[b], 7, row + b * kFace);
      }
      break;
    }
    case kBFP4: {
      const uint8_t* packed = static_cast<const uint8_t*>(p.w) + k * (p.w_cols / 2) + c0 / 2;
      const uint8_t* exps = p.exps + k * (p.w_cols / kFace) + c0 / kFace;
      for (int64_t b = 0; b * kFace < nc; ++b) {
        float code[kFace];  // two a byte, the first in the low nibble
        for (int64_t i = 0; i < kFace / 2; ++i) {
          code[2 * i] = kNibble[packed[b * kFace / 2 + i] & 0xF];
          code[2 * i + 1] = kNibble[packed[b * kFace / 2 + i] >> 4];
        }
        BlockRow(code, exps[b], 3, row + b * kFace);
      }
      break;
    }
  }
}

// One column block, columns [c0, c0 + nc) with nc <= kCols, for every row: each weight tile is decoded and cut
// into its phase bits once, then used by all rows; dst holds the block's Dst for all rows.
__attribute__((target_clones("avx512f", "avx2", "default")))
void Block(const Problem& p, int64_t c0, int64_t nc, float* dst, float* xb) {
  float wa[4][kTile][kCols];
  float row[kCols];
  std::fill(dst, dst + p.rows * kCols, 0.0f);
  for (int64_t t = 0; t < p.depth / kTile; ++t) {
    const int64_t k0 = t * kTile;
    for (int64_t k = 0; k < kTile; ++k) {
      WeightRow(p, k0 + k, c0, nc, row);
      for (int64_t j = nc; j < kCols; ++j) row[j] = 0.0f;
      for (int ph = 0; ph < p.phases; ++ph) {
        for (int64_t j = 0; j < kCols; ++j) wa[ph][k][j] = SrcA(row[j], ph);
      }
    }
    for (int ph = 0; ph < p.phases; ++ph) {  // xb [phase][row][32]: this tile's SrcB bits
      for (int64_t r = 0; r < p.rows; ++r) {
        const float* xrow = p.x + r * p.depth + k0;
        float* out = xb + (ph * p.rows + r) * kTile;
        for (int64_t k = 0; k < kTile; ++k) out[k] = SrcB(xrow[k], ph);
      }
    }
    for (int64_t r = 0; r < p.rows; ++r) {
      float* d = dst + r * kCols;
      for (int ph = 0; ph < p.phases; ++ph) {
        for (int64_t h = 0; h < 2; ++h) {
          const float* b = xb + (ph * p.rows + r) * kTile + h * kFace;
          float s[kCols];
          for (int64_t j = 0; j < kCols; ++j) s[j] = b[0] * wa[ph][h * kFace][j];
          for (int64_t k = 1; k < kFace; ++k) {
            const float bk = b[k];
            const float* a = wa[ph][h * kFace + k];
            for (int64_t j = 0; j < kCols; ++j) s[j] = s[j] + bk * a[j];
          }
          if (p.fp32_dest) {
            for (int64_t j = 0; j < kCols; ++j) d[j] = d[j] + s[j];
          } else {
            for (int64_t j = 0; j < kCols; ++j) d[j] = DstBF16(d[j] + s[j]);
          }
        }
      }
    }
  }
  for (int64_t r = 0; r < p.rows; ++r) std::memcpy(p.out + r * p.cols + c0, dst + r * kCols, nc * sizeof(float));
}

// Blocks are handed out through an atomic counter; the calling thread works too and then waits only for
// blocks already taken, so a busy or absent pool delays the call but never deadlocks it.
struct Work {
  const Problem* problem;
  int64_t col_blocks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;

  void Run() {
    std::vector<float> dst, xb;  // per thread: the block's Dst for every row, and one tile's SrcB bits
    for (int64_t i = next.fetch_add(1); i < col_blocks; i = next.fetch_add(1)) {
      const Problem& p = *problem;
      if (dst.empty()) {
        dst.resize(p.rows * kCols);
        xb.resize(4 * p.rows * kTile);
      }
      const int64_t c0 = i * kCols;
      Block(p, c0, std::min(kCols, p.cols - c0), dst.data(), xb.data());
      if (done.fetch_add(1) + 1 == col_blocks) {
        std::lock_guard<std::mutex> lock(mu);
        finished.notify_all();
      }
    }
  }
};

ffi::Error Run(ffi::ThreadPool& pool, Problem& p) {
  if (p.rows == 0 || p.cols == 0) return ffi::Error::Success();
  auto work = std::make_shared<Work>();
  work->problem = &p;
  work->col_blocks = (p.cols + kCols - 1) / kCols;
  const int64_t total = work->col_blocks;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), total - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Run(); });
  work->Run();
  std::unique_lock<std::mutex> lock(work->mu);
  work->finished.wait(lock, [&] { return work->done.load() == total; });
  return ffi::Error::Success();
}

ffi::Error Check(const Problem& p, int64_t phases) {
  if (p.depth % kTile != 0) return ffi::Error::InvalidArgument("tensix_matmul: x's K must be a multiple of 32");
  if (phases < 1 || phases > 4) return ffi::Error::InvalidArgument("tensix_matmul: phases must be 1 to 4");
  if (p.w_rows > p.depth || p.cols > p.w_cols) return ffi::Error::InvalidArgument("tensix_matmul: w does not fit x");
  return ffi::Error::Success();
}

// Float weights: w [K, N] float32 (format 0) or bfloat16 (format 1, passed as its uint16 bits).
ffi::Error FloatImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, ffi::ResultBuffer<ffi::F32> out,
                     int64_t phases, bool fp32_dest, bool tf32) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2) return ffi::Error::InvalidArgument("tensix_matmul: 2-D x and w expected");
  WeightFormat format = w.element_type() == ffi::DataType::F32 ? kF32 : kBF16;
  if (format == kBF16 && w.element_type() != ffi::DataType::U16 && w.element_type() != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("tensix_matmul: w must be float32 or bfloat16");
  Problem p{x.typed_data(), w.untyped_data(), nullptr, out->typed_data(), xd[0], xd[1], wd[1], wd[0], wd[1],
            static_cast<int>(phases), fp32_dest, tf32, format};
  if (auto e = Check(p, phases); e.failure()) return e;
  return Run(pool, p);
}

// Block-float weights: codes [Kp, Np] int8 (bfloat8_b) or [Kp, Np / 2] uint8 (bfloat4_b), exps [Kp, Np / 16];
// the product has n columns (the logical width, n <= Np).
ffi::Error BlockFloatImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer codes,
                          ffi::Buffer<ffi::U8> exps, ffi::ResultBuffer<ffi::F32> out, int64_t phases, bool fp32_dest,
                          int64_t mantissa_bits) {
  auto xd = x.dimensions();
  auto cd = codes.dimensions();
  auto ed = exps.dimensions();
  auto od = out->dimensions();
  if (xd.size() != 2 || cd.size() != 2 || ed.size() != 2 || od.size() != 2)
    return ffi::Error::InvalidArgument("tensix_matmul: 2-D x, codes and exps expected");
  const WeightFormat format = mantissa_bits == 7 ? kBFP8 : kBFP4;
  const int64_t w_cols = format == kBFP8 ? cd[1] : 2 * cd[1];
  if (ed[0] != cd[0] || ed[1] * kFace != w_cols)
    return ffi::Error::InvalidArgument("tensix_matmul: exps must hold one exponent per 16 codes");
  Problem p{x.typed_data(), codes.untyped_data(), exps.typed_data(), out->typed_data(), xd[0], xd[1], od[1],
            cd[0], w_cols, static_cast<int>(phases), fp32_dest, false, format};
  if (auto e = Check(p, phases); e.failure()) return e;
  return Run(pool, p);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxTensixMatmul, FloatImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("phases")
                                  .Attr<bool>("fp32_dest")
                                  .Attr<bool>("tf32"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxTensixMatmulBlockFloat, BlockFloatImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("phases")
                                  .Attr<bool>("fp32_dest")
                                  .Attr<int64_t>("mantissa_bits"));
