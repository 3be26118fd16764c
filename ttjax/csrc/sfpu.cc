// SFPU functions over Dst values (ttjax/sfpu.py's run_on_dst) as an XLA FFI custom call for the CPU: each value
// loaded as SFPLOAD reads Dst (FP32, or the BF16 top half), put through one of sfpu.h's kernels, stored back as
// SFPSTORE writes (exactly, or truncated into a 16-bit Dst). The same bits as the pure-JAX lanes.
//
// Large arrays are split over XLA's CPU thread pool; each ISA level compiles the same branch-free lane loop.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "tensix_matmul.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace ttjax {
namespace sfpu_api {

using u32 = uint32_t;

// Which kernel, as ttjax/native.py's SFPU_FUNCTIONS names them.
enum Fn : int64_t {
  kExp = 0,              // exp_tile: approx (Schraudolph, clamped) or accurate (FP32 Dst) / exp_21f (16-bit Dst)
  kReciprocal = 1,       // recip_tile
  kRsqrt = 2,
  kSqrt = 3,
  kSigmoid = 4,          // the exact sigmoid (approx is a LUT: not here)
  kSilu = 5,
  kMulScalar = 6,        // mul_unary_tile: an SFPMAD by the constant p0
  kExpSchraudolph = 7,   // p0 = A * scale, p1 = -88.5 / scale, flag = clamp
  kExpPolynomial = 8,    // p0 = the BF16 scale's bits
  kExpAccurateScaled = 9,
  kReciprocalIter = 10,  // flag = iterations, p0 = round to BF16
};

struct Call {
  const u32* in;
  u32* out;
  int64_t n;
  int64_t fn;
  bool fp32, approx;
  u32 p0, p1;
  int64_t flag;
  const u32* table = nullptr;  // with a 16-bit Dst: the function's value at each of the 65,536 BF16 inputs
};

}  // namespace sfpu_api

// The SFPU and the loops, once per ISA level (GCC lowers vector code for the target it is compiled for).
namespace sfpu_portable {
using namespace sfpu_api;
#define TTJAX_SFPU_LANES 4
#include "sfpu_lanes.inc"
#include "sfpu_calls.inc"
}  // namespace sfpu_portable

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
namespace sfpu_avx2 {
using namespace sfpu_api;
#undef TTJAX_SFPU_LANES
#define TTJAX_SFPU_LANES 8
#include "sfpu_lanes.inc"
#include "sfpu_calls.inc"
}  // namespace sfpu_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,bmi2")
namespace sfpu_avx512 {
using namespace sfpu_api;
#undef TTJAX_SFPU_LANES
#define TTJAX_SFPU_LANES 16
#include "sfpu_lanes.inc"
#include "sfpu_calls.inc"
}  // namespace sfpu_avx512
#pragma GCC pop_options

namespace {

using namespace sfpu_api;

bool CpuHasAvx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
}

bool CpuHasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"); }

using RunFn = void (*)(const Call&, int64_t, int64_t);

RunFn Pick(int64_t isa) {
  if (isa == kIsaAvx512Vbmi) {  // no VBMI code here: the AVX-512 kernels, where the CPU has VBMI
    if (!__builtin_cpu_supports("avx512vbmi")) return nullptr;
    isa = kIsaAvx512;
  }
  if (isa == kIsaAuto) isa = CpuHasAvx512() ? kIsaAvx512 : CpuHasAvx2() ? kIsaAvx2 : kIsaPortable;
  if (isa == kIsaAvx512) return CpuHasAvx512() ? sfpu_avx512::Run : nullptr;
  if (isa == kIsaAvx2) return CpuHasAvx2() ? sfpu_avx2::Run : nullptr;
  return isa == kIsaPortable ? sfpu_portable::Run : nullptr;
}

// With a 16-bit Dst a lane loads only the top half of its value, so a function is fixed by its 65,536 BF16
// inputs: past a few thousand values it is cheaper to run the lane code once over all of them (the same lane code,
// so the same bits) and look the rest up. One table per function, parameters and ISA level, made on first use.
constexpr int64_t kTableAfter = 4096;

void RunTable(const Call& c, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; ++i) c.out[i] = c.table[c.in[i] >> 16];
}

const u32* Table(const Call& c, RunFn run, int64_t isa) {
  using Key = std::tuple<int64_t, bool, u32, u32, int64_t, int64_t>;
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<std::vector<u32>>> tables;
  const Key key{c.fn, c.approx, c.p0, c.p1, c.flag, isa};
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = tables[key];
  if (!slot) {
    std::vector<u32> in(1 << 16);
    for (u32 i = 0; i < in.size(); ++i) in[i] = i << 16;
    auto out = std::make_unique<std::vector<u32>>(in.size());
    Call all = c;
    all.in = in.data();
    all.out = out->data();
    all.n = static_cast<int64_t>(in.size());
    run(all, 0, all.n);
    slot = std::move(out);
  }
  return slot->data();
}

constexpr int64_t kBlock = 1 << 14;  // lanes per unit of work (a multiple of 16)

struct Work {
  const Call* call;
  RunFn run;
  int64_t blocks;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mu;
  std::condition_variable finished;

  void Go() {
    for (int64_t b = next.fetch_add(1); b < blocks; b = next.fetch_add(1)) {
      run(*call, b * kBlock, std::min(call->n, (b + 1) * kBlock));
      if (done.fetch_add(1) + 1 == blocks) {
        std::lock_guard<std::mutex> lock(mu);
        finished.notify_all();
      }
    }
  }
};

ffi::Error Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> out, int64_t fn, bool fp32,
                bool approx, int64_t p0, int64_t p1, int64_t flag, int64_t isa) {
  if (fn < kExp || fn > kReciprocalIter) return ffi::Error::InvalidArgument("sfpu: unknown function");
  RunFn run = Pick(isa);
  if (run == nullptr) return ffi::Error::InvalidArgument("sfpu: this CPU cannot run the requested ISA level");
  Call c{reinterpret_cast<const u32*>(x.typed_data()), reinterpret_cast<u32*>(out->typed_data()),
         static_cast<int64_t>(x.element_count()), fn, fp32, approx, static_cast<u32>(p0), static_cast<u32>(p1), flag};
  if (!fp32 && c.n >= kTableAfter) {
    c.table = Table(c, run, isa);
    run = RunTable;
  }
  const int64_t blocks = (c.n + kBlock - 1) / kBlock;
  if (blocks <= 1 || pool.num_threads() <= 1) {
    run(c, 0, c.n);
    return ffi::Error::Success();
  }
  auto work = std::make_shared<Work>();
  work->call = &c;
  work->run = run;
  work->blocks = blocks;
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, blocks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Go(); });
  work->Go();
  std::unique_lock<std::mutex> lock(work->mu);
  work->finished.wait(lock, [&] { return work->done.load() == blocks; });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace ttjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxSfpu, ttjax::Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("fn")
                                  .Attr<bool>("fp32")
                                  .Attr<bool>("approx")
                                  .Attr<int64_t>("p0")
                                  .Attr<int64_t>("p1")
                                  .Attr<int64_t>("flag")
                                  .Attr<int64_t>("isa"));
