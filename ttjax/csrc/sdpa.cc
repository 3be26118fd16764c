// The SDPA kernels' arithmetic (ttjax/sdpa_kernel.py) as XLA FFI custom calls for the CPU: one call walks every
// (user, KV head) of a decode step, the same bits as the pure-JAX walk; the work is split over XLA's thread pool.

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
namespace sdpa_portable {
#define TTJAX_SFPU_LANES 4
#include "sfpu_lanes.inc"
#include "engine_ops.inc"
#include "sdpa_decode.inc"
#include "sdpa_prefill.inc"
}  // namespace sdpa_portable

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
namespace sdpa_avx2 {
#undef TTJAX_SFPU_LANES
#define TTJAX_SFPU_LANES 8
#include "sfpu_lanes.inc"
#include "engine_ops.inc"
#include "sdpa_decode.inc"
#include "sdpa_prefill.inc"
}  // namespace sdpa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,bmi2")
namespace sdpa_avx512 {
#undef TTJAX_SFPU_LANES
#define TTJAX_SFPU_LANES 16
#include "sfpu_lanes.inc"
#include "engine_ops.inc"
#include "sdpa_decode.inc"
#include "sdpa_prefill.inc"
}  // namespace sdpa_avx512
#pragma GCC pop_options

namespace {

bool Avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
}
bool Avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"); }

int64_t Level(int64_t isa) {
  if (isa == kIsaAvx512Vbmi) {  // no VBMI code here: the AVX-512 kernels, where the CPU has VBMI
    if (!__builtin_cpu_supports("avx512vbmi")) return -1;
    isa = kIsaAvx512;
  }
  if (isa == kIsaAuto) return Avx512() ? kIsaAvx512 : Avx2() ? kIsaAvx2 : kIsaPortable;
  if ((isa == kIsaAvx512 && !Avx512()) || (isa == kIsaAvx2 && !Avx2())) return -1;
  return isa;
}

// Runs body(i, scratch) for i in [0, count) over the pool; each worker has its own scratch of `floats` floats.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t count, int64_t floats, Body body) {
  struct Work {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mu;
    std::condition_variable finished;
  };
  auto work = std::make_shared<Work>();
  auto run = [work, count, floats, body] {
    std::vector<float> scratch;
    for (int64_t i = work->next.fetch_add(1); i < count; i = work->next.fetch_add(1)) {
      if (scratch.empty()) scratch.resize(floats);
      body(i, scratch.data());
      if (work->done.fetch_add(1) + 1 == count) {
        std::lock_guard<std::mutex> lock(work->mu);
        work->finished.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, count - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([run] { run(); });
  run();
  std::unique_lock<std::mutex> lock(work->mu);
  work->finished.wait(lock, [&] { return work->done.load() == count; });
}

template <typename Call>
void Fill(Call& c, const float* q, const void* k, const void* v, bool bf16, const int32_t* pos, const int32_t* table,
          int64_t blocks_per_user, int64_t block, int64_t n_kv, int64_t seq, float* out, int64_t n, int64_t g, int64_t d,
          int64_t k_chunk, int64_t phases, bool fp32, bool exp_approx, bool corr_approx, bool recip_approx,
          int64_t scale_bits, int64_t a_bits) {
  c.q = q, c.k_cache = k, c.v_cache = v, c.cache_bf16 = bf16, c.pos = pos, c.page_table = table;
  c.blocks_per_user = blocks_per_user, c.block = block, c.n_kv = n_kv, c.seq = seq, c.out = out;
  c.n = n, c.g = g, c.d = d, c.k_chunk = k_chunk;
  c.e.phases = static_cast<int>(phases), c.e.fp32 = fp32;
  c.exp_approx = exp_approx, c.corr_approx = corr_approx, c.recip_approx = recip_approx;
  c.scale_bits = static_cast<uint32_t>(scale_bits), c.a_bits = static_cast<uint32_t>(a_bits);
}

// q [N, G, d]; caches: contiguous [N, S, d] (page_table empty) or paged [blocks, KV, block, d] with page_table
// [B, blocks_per_user]; pos [N] (each user's position repeated per KV head). out [N, G, d]: the final Dst values.
ffi::Error Decode(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                  ffi::Buffer<ffi::S32> pos, ffi::Buffer<ffi::S32> page_table, ffi::ResultBuffer<ffi::F32> out,
                  int64_t n_kv, int64_t block, int64_t seq, int64_t k_chunk, int64_t phases, bool fp32, bool exp_approx,
                  bool corr_approx, bool recip_approx, int64_t scale_bits, int64_t a_bits, int64_t isa) {
  const auto qd = q.dimensions();
  if (qd.size() != 3) return ffi::Error::InvalidArgument("sdpa_decode: q must be [N, G, d]");
  const int64_t n = qd[0], g = qd[1], d = qd[2];
  const bool bf16 = k.element_type() == ffi::DataType::BF16;
  if (k.element_type() != v.element_type() || (!bf16 && k.element_type() != ffi::DataType::F32))
    return ffi::Error::InvalidArgument("sdpa_decode: the caches must both be bfloat16 or float32");
  if (k_chunk < 1 || seq % k_chunk) return ffi::Error::InvalidArgument("sdpa_decode: k_chunk must divide the sequence");
  const int64_t level = Level(isa);
  if (level < 0) return ffi::Error::InvalidArgument("sdpa_decode: this CPU cannot run the requested ISA level");
  const auto td = page_table.dimensions();
  const int32_t* table = page_table.element_count() ? page_table.typed_data() : nullptr;
  const int64_t blocks_per_user = table ? td[1] : 0;
  auto run = [&](auto& call, auto decode_one, auto scratch_of) {
    Fill(call, q.typed_data(), k.untyped_data(), v.untyped_data(), bf16, pos.typed_data(), table, blocks_per_user, block,
         n_kv, seq, out->typed_data(), n, g, d, k_chunk, phases, fp32, exp_approx, corr_approx, recip_approx, scale_bits,
         a_bits);
    ParallelFor(pool, n, scratch_of(call), [&](int64_t i, float* s) { decode_one(call, i, s); });
  };
  if (level == kIsaAvx512) {
    sdpa_avx512::DecodeCall c;
    run(c, [](const auto& cc, int64_t i, float* s) { sdpa_avx512::DecodeOne(cc, i, s); },
        [](const auto& cc) { return sdpa_avx512::DecodeScratch(cc); });
  } else if (level == kIsaAvx2) {
    sdpa_avx2::DecodeCall c;
    run(c, [](const auto& cc, int64_t i, float* s) { sdpa_avx2::DecodeOne(cc, i, s); },
        [](const auto& cc) { return sdpa_avx2::DecodeScratch(cc); });
  } else {
    sdpa_portable::DecodeCall c;
    run(c, [](const auto& cc, int64_t i, float* s) { sdpa_portable::DecodeOne(cc, i, s); },
        [](const auto& cc) { return sdpa_portable::DecodeScratch(cc); });
  }
  return ffi::Error::Success();
}

// q [N, G, Sq, d] unscaled (Sq a multiple of q_chunk); caches contiguous [N, seq, d] (page_row empty) or paged
// [blocks, N, block, d] with the user's page_row; q_start [1]: the position of query row 0. out: the final Dst.
ffi::Error Prefill(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::Buffer<ffi::S32> page_row, ffi::Buffer<ffi::S32> q_start, ffi::ResultBuffer<ffi::F32> out,
                   int64_t block, int64_t seq, int64_t q_chunk, int64_t k_chunk, int64_t n_keys, bool causal,
                   int64_t phases, bool fp32, bool exp_approx, bool corr_approx, bool recip_approx, int64_t scale_bits,
                   int64_t a_bits, int64_t isa) {
  const auto qd = q.dimensions();
  if (qd.size() != 4) return ffi::Error::InvalidArgument("sdpa_prefill: q must be [N, G, Sq, d]");
  const int64_t n = qd[0], g = qd[1], sq = qd[2], d = qd[3];
  const bool bf16 = k.element_type() == ffi::DataType::BF16;
  if (k.element_type() != v.element_type() || (!bf16 && k.element_type() != ffi::DataType::F32))
    return ffi::Error::InvalidArgument("sdpa_prefill: the caches must both be bfloat16 or float32");
  if (q_chunk < 1 || sq % q_chunk || k_chunk < 32 || k_chunk % 32 || seq % k_chunk)
    return ffi::Error::InvalidArgument("sdpa_prefill: chunks must divide the queries and (whole tiles) the keys");
  const int64_t level = Level(isa);
  if (level < 0) return ffi::Error::InvalidArgument("sdpa_prefill: this CPU cannot run the requested ISA level");
  const int32_t* row = page_row.element_count() ? page_row.typed_data() : nullptr;
  const int64_t q_chunks = sq / q_chunk;
  auto run = [&](auto& c, auto prefill_one, auto scratch_of) {
    c.q = q.typed_data(), c.k_cache = k.untyped_data(), c.v_cache = v.untyped_data(), c.cache_bf16 = bf16;
    c.page_row = row, c.n_kv = n, c.block = block, c.seq = seq, c.out = out->typed_data();
    c.n = n, c.g = g, c.sq = sq, c.d = d, c.q_chunk = q_chunk, c.k_chunk = k_chunk;
    c.q_start = q_start.typed_data()[0], c.n_keys = n_keys, c.causal = causal;
    c.e.phases = static_cast<int>(phases), c.e.fp32 = fp32;
    c.exp_approx = exp_approx, c.corr_approx = corr_approx, c.recip_approx = recip_approx;
    c.scale_bits = static_cast<uint32_t>(scale_bits), c.a_bits = static_cast<uint32_t>(a_bits);
    ParallelFor(pool, n * q_chunks, scratch_of(c), [&](int64_t i, float* s) { prefill_one(c, i / q_chunks, i % q_chunks, s); });
  };
  if (level == kIsaAvx512) {
    sdpa_avx512::PrefillCall c;
    run(c, [](const auto& cc, int64_t i, int64_t j, float* s) { sdpa_avx512::PrefillOne(cc, i, j, s); },
        [](const auto& cc) { return sdpa_avx512::PrefillScratch(cc); });
  } else if (level == kIsaAvx2) {
    sdpa_avx2::PrefillCall c;
    run(c, [](const auto& cc, int64_t i, int64_t j, float* s) { sdpa_avx2::PrefillOne(cc, i, j, s); },
        [](const auto& cc) { return sdpa_avx2::PrefillScratch(cc); });
  } else {
    sdpa_portable::PrefillCall c;
    run(c, [](const auto& cc, int64_t i, int64_t j, float* s) { sdpa_portable::PrefillOne(cc, i, j, s); },
        [](const auto& cc) { return sdpa_portable::PrefillScratch(cc); });
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace ttjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxSdpaPrefill, ttjax::Prefill,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("seq")
                                  .Attr<int64_t>("q_chunk")
                                  .Attr<int64_t>("k_chunk")
                                  .Attr<int64_t>("n_keys")
                                  .Attr<bool>("causal")
                                  .Attr<int64_t>("phases")
                                  .Attr<bool>("fp32")
                                  .Attr<bool>("exp_approx")
                                  .Attr<bool>("corr_approx")
                                  .Attr<bool>("recip_approx")
                                  .Attr<int64_t>("scale_bits")
                                  .Attr<int64_t>("a_bits")
                                  .Attr<int64_t>("isa"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxSdpaDecode, ttjax::Decode,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("n_kv")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("seq")
                                  .Attr<int64_t>("k_chunk")
                                  .Attr<int64_t>("phases")
                                  .Attr<bool>("fp32")
                                  .Attr<bool>("exp_approx")
                                  .Attr<bool>("corr_approx")
                                  .Attr<bool>("recip_approx")
                                  .Attr<int64_t>("scale_bits")
                                  .Attr<int64_t>("a_bits")
                                  .Attr<int64_t>("isa"));
