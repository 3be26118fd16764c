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
#include <memory>
#include <mutex>
#include <vector>

#include "tensix_matmul.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace ttjax {
namespace {

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
      const uint32_t mask = p.exact ? 0xFFFFFFFFu : p.tf32 ? 0xFFFFE000u : 0xFFFF0000u;
      for (int64_t j = 0; j < nc; ++j) row[j] = p.exact ? w[j] : FlushDenormal(Float(Bits(w[j]) & mask));
      break;
    }
    case kBF16: {
      const uint16_t* w = static_cast<const uint16_t*>(p.w) + k * p.w_cols + c0;
      for (int64_t j = 0; j < nc; ++j) {
        const float v = Float(static_cast<uint32_t>(w[j]) << 16);
        row[j] = p.exact ? v : FlushDenormal(v);
      }
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

// One strip, columns [c0, c0 + nc) with nc <= kCols, for every row, in portable C++ that the compiler
// vectorizes for the target it is built for: each weight tile is decoded and cut into its phase bits once, then
// used by all rows. scratch: the strip's Dst for all rows, then one tile's SrcB bits.
__attribute__((always_inline)) inline void StripBody(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  float* dst = scratch;
  float* xb = scratch + p.rows * kCols;
  float wa[4][kTile][kCols];
  float row[kCols];
  std::fill(dst, dst + p.rows * kCols, 0.0f);
  const int parts = p.exact ? 1 : p.phases;
  for (int64_t t = 0; t < p.depth / kTile; ++t) {
    const int64_t k0 = t * kTile;
    for (int64_t k = 0; k < kTile; ++k) {
      WeightRow(p, k0 + k, c0, nc, row);
      for (int64_t j = nc; j < kCols; ++j) row[j] = 0.0f;
      for (int ph = 0; ph < parts; ++ph) {
        for (int64_t j = 0; j < kCols; ++j) wa[ph][k][j] = p.exact ? row[j] : SrcA(row[j], ph);
      }
    }
    if (p.exact) {  // float32 math in k order
      for (int64_t r = 0; r < p.rows; ++r) {
        float* d = dst + r * kCols;
        const float* xrow = p.x + r * p.depth + k0;
        for (int64_t k = 0; k < kTile; ++k) {
          for (int64_t j = 0; j < kCols; ++j) d[j] = d[j] + xrow[k] * wa[0][k][j];
        }
      }
      continue;
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

void StripPortable(const Problem& p, int64_t c0, int64_t nc, float* scratch) { StripBody(p, c0, nc, scratch); }

__attribute__((target("avx2,fma"))) void StripAvx2(const Problem& p, int64_t c0, int64_t nc, float* scratch) {
  StripBody(p, c0, nc, scratch);
}

bool HasAvx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

bool HasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

bool HasAvx512Vbmi() { return HasAvx512() && __builtin_cpu_supports("avx512vbmi"); }

using StripFn = void (*)(const Problem&, int64_t, int64_t, float*);

// The kernel for an ISA level, or nullptr where this CPU cannot run it.
StripFn Kernel(int64_t isa) {
  if (isa == kIsaAuto) isa = HasAvx512Vbmi() ? kIsaAvx512Vbmi : HasAvx512() ? kIsaAvx512 : HasAvx2() ? kIsaAvx2 : kIsaPortable;
  if (isa == kIsaAvx512Vbmi) return HasAvx512Vbmi() ? StripAvx512 : nullptr;
  if (isa == kIsaAvx512) return HasAvx512() ? StripAvx512 : nullptr;
  if (isa == kIsaAvx2) return HasAvx2() ? StripAvx2 : nullptr;
  return isa == kIsaPortable ? StripPortable : nullptr;
}

int64_t PortableScratchFloats(const Problem& p) { return p.rows * kCols + 4 * p.rows * kTile; }

// Columns per unit of work. With the AVX-512 kernels, one row or a few (the GEMV, FewRows) take the widest strips whose
// rows are runs of about 4 KB of weights (the block GEMV reads each row of a strip from end to end, and long runs are
// what the hardware prefetchers stream at full bandwidth), as many strips as make an equal share for every thread;
// more rows take up to kRowCols (each K tile's activation phases made once for them). The portable kernels keep
// their Dst for a 64-column strip.
int64_t StripWidth(const Problem& p, bool avx512, int64_t threads) {
  if (!avx512) return kCols;
  if (p.rows != 1 && !FewRows(p)) {  // the AVX-512 many-row kernel: up to kRowCols, two strips a thread at least
    const int64_t pieces = (p.cols + kCols - 1) / kCols;
    return kCols * std::clamp<int64_t>(pieces / (2 * threads), 1, kRowCols / kCols);
  }
  const int64_t bits = p.format == kF32 ? 32 : p.format == kBF16 ? 16 : p.format == kBFP8 ? 8 : 4;
  const int64_t widest = std::min<int64_t>(kWideCols, 4096 * 8 / bits / kCols * kCols);
  int64_t strips = (p.cols + widest - 1) / widest;
  strips = (strips + threads - 1) / threads * threads;
  const int64_t width = (p.cols + strips - 1) / strips;
  return std::clamp<int64_t>((width + kCols - 1) / kCols * kCols, kCols, widest);
}

// Strips are handed out through an atomic counter; the calling thread works too and then waits only for
// strips already taken, so a busy or absent pool delays the call but never deadlocks it.
struct Work {
  const Problem* problem;
  StripFn strip;
  int64_t scratch_floats;
  int64_t width;  // columns per strip
  int64_t strips;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable finished;

  void Run() {
    // Per thread, kept between calls: a fresh buffer of a few hundred KB a call would cost its page faults every
    // time. The kernels write what they read; the AVX-512 ones want it 64-byte aligned.
    thread_local std::unique_ptr<float[]> scratch;
    thread_local int64_t capacity = 0;
    float* aligned = nullptr;
    for (int64_t i = next.fetch_add(1); i < strips; i = next.fetch_add(1)) {
      const Problem& p = *problem;
      if (aligned == nullptr) {
        if (capacity < scratch_floats + 16) {
          scratch.reset(new float[scratch_floats + 16]);
          capacity = scratch_floats + 16;
        }
        aligned = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch.get()) + 63) & ~uintptr_t{63});
      }
      const int64_t c0 = i * width;
      strip(p, c0, std::min(width, p.cols - c0), aligned);
      if (done.fetch_add(1) + 1 == strips) {
        std::lock_guard<std::mutex> lock(mu);
        finished.notify_all();
      }
    }
  }
};

ffi::Error Run(ffi::ThreadPool& pool, Problem& p, int64_t isa) {
  if (p.rows == 0 || p.cols == 0) return ffi::Error::Success();
  StripFn strip = Kernel(isa);
  p.vbmi = isa == kIsaAvx512Vbmi || (isa == kIsaAuto && HasAvx512Vbmi());
  if (strip == nullptr) return ffi::Error::InvalidArgument("tensix_matmul: this CPU cannot run the requested ISA level");
  auto work = std::make_shared<Work>();
  work->problem = &p;
  work->strip = strip;
  work->scratch_floats = strip == StripAvx512 ? ScratchFloats(p) : PortableScratchFloats(p);
  work->width = StripWidth(p, strip == StripAvx512, std::max<int64_t>(pool.num_threads(), 1));
  work->strips = (p.cols + work->width - 1) / work->width;
  const int64_t total = work->strips;
  // XLA sizes its pool to the cores; the calling thread is one worker, so one helper fewer than the pool has
  // keeps a worker per core (more would only take turns).
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, total - 1);
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
                     int64_t phases, bool fp32_dest, bool tf32, bool exact, int64_t isa) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2) return ffi::Error::InvalidArgument("tensix_matmul: 2-D x and w expected");
  WeightFormat format = w.element_type() == ffi::DataType::F32 ? kF32 : kBF16;
  if (format == kBF16 && w.element_type() != ffi::DataType::U16 && w.element_type() != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("tensix_matmul: w must be float32 or bfloat16");
  Problem p{x.typed_data(), w.untyped_data(), nullptr, out->typed_data(), xd[0], xd[1], wd[1], wd[0], wd[1],
            static_cast<int>(phases), fp32_dest, tf32, exact, format};
  if (auto e = Check(p, phases); e.failure()) return e;
  return Run(pool, p, isa);
}

// Block-float weights: codes [Kp, Np] int8 (bfloat8_b) or [Kp, Np / 2] uint8 (bfloat4_b), exps [Kp, Np / 16];
// the product has n columns (the logical width, n <= Np).
ffi::Error BlockFloatImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer codes,
                          ffi::AnyBuffer exps, ffi::ResultBuffer<ffi::F32> out, int64_t phases, bool fp32_dest,
                          int64_t mantissa_bits, bool exact, int64_t isa) {
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
  if (exps.element_type() != ffi::DataType::U8 && exps.element_type() != ffi::DataType::F8E8M0FNU)
    return ffi::Error::InvalidArgument("tensix_matmul: exps must be uint8 or float8_e8m0fnu (the biased exponent)");
  Problem p{x.typed_data(), codes.untyped_data(), static_cast<const uint8_t*>(exps.untyped_data()), out->typed_data(), xd[0], xd[1], od[1],
            cd[0], w_cols, static_cast<int>(phases), fp32_dest, false, exact, format};
  if (auto e = Check(p, phases); e.failure()) return e;
  return Run(pool, p, isa);
}

}  // namespace
}  // namespace ttjax

// The ISA levels this CPU runs, as a bit set over ttjax::Isa (bit 1 portable, 2 AVX2, 3 AVX-512, 4 AVX-512 VBMI).
extern "C" int64_t TtjaxIsaLevels() {
  return (int64_t{1} << ttjax::kIsaPortable) | (ttjax::HasAvx2() ? int64_t{1} << ttjax::kIsaAvx2 : 0) |
         (ttjax::HasAvx512() ? int64_t{1} << ttjax::kIsaAvx512 : 0) |
         (ttjax::HasAvx512Vbmi() ? int64_t{1} << ttjax::kIsaAvx512Vbmi : 0);
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxTensixMatmul, ttjax::FloatImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("phases")
                                  .Attr<bool>("fp32_dest")
                                  .Attr<bool>("tf32")
                                  .Attr<bool>("exact")
                                  .Attr<int64_t>("isa"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxTensixMatmulBlockFloat, ttjax::BlockFloatImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("phases")
                                  .Attr<bool>("fp32_dest")
                                  .Attr<int64_t>("mantissa_bits")
                                  .Attr<bool>("exact")
                                  .Attr<int64_t>("isa"));
