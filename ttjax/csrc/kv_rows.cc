// KV-cache rows of a 16-bit cache, read and written where they lie (ttjax/kv_cache.py, ttjax/flash_decode.py).
//
// XLA:CPU computes bfloat16 data movement (dynamic slices, scatters) in float32: it converts a whole bfloat16
// cache to float32 (and back, for a write) around every decode step's access, and hoists the conversion out of
// flash decode's loop, so a step costs what the cache could hold rather than what it reads (4x slower at
// max_seq_len 8192 than at 256, measured). These two custom calls touch only the rows asked for:
//   gather_rows: out[n, r, :] = float32(cache row idx[n, r]), the cache viewed as [rows, d];
//   scatter_rows: cache row idx[m] = rows[m] (same dtype, bits copied), in place (the output aliases the cache);
//                 an index outside the cache writes nothing (a dropped write, as an empty slot's).
// A gather index outside the cache reads zeros. bfloat16 widens to float32 exactly (a 16-bit shift).

#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace ttjax {
namespace {

int64_t RowWidth(const ffi::AnyBuffer& cache) {
  const auto dims = cache.dimensions();
  return dims.size() == 0 ? 1 : dims[dims.size() - 1];
}

ffi::Error GatherRows(ffi::AnyBuffer cache, ffi::Buffer<ffi::S32> idx, ffi::ResultBuffer<ffi::F32> out) {
  const int64_t d = RowWidth(cache);
  const int64_t rows = d ? static_cast<int64_t>(cache.element_count()) / d : 0;
  const int64_t n = static_cast<int64_t>(idx.element_count());
  if (static_cast<int64_t>(out->element_count()) != n * d)
    return ffi::Error::InvalidArgument("gather_rows: out must hold one row of the cache per index");
  const auto type = cache.element_type();
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("gather_rows: the cache must be bfloat16 or float32");
  const int32_t* at = idx.typed_data();
  float* o = out->typed_data();
  for (int64_t i = 0; i < n; ++i, o += d) {
    const int64_t r = at[i];
    if (r < 0 || r >= rows) {
      std::memset(o, 0, sizeof(float) * d);
    } else if (type == ffi::DataType::F32) {
      std::memcpy(o, static_cast<const float*>(cache.untyped_data()) + r * d, sizeof(float) * d);
    } else {  // bfloat16: its bits are a float32's top half
      const uint16_t* src = static_cast<const uint16_t*>(cache.untyped_data()) + r * d;
      for (int64_t j = 0; j < d; ++j) {
        const uint32_t bits = static_cast<uint32_t>(src[j]) << 16;
        std::memcpy(o + j, &bits, sizeof(float));
      }
    }
  }
  return ffi::Error::Success();
}

ffi::Error ScatterRows(ffi::AnyBuffer cache, ffi::Buffer<ffi::S32> idx, ffi::AnyBuffer values, ffi::Result<ffi::AnyBuffer> out) {
  const int64_t d = RowWidth(cache);
  const int64_t rows = d ? static_cast<int64_t>(cache.element_count()) / d : 0;
  const int64_t n = static_cast<int64_t>(idx.element_count());
  if (values.element_type() != cache.element_type() || static_cast<int64_t>(values.element_count()) != n * d)
    return ffi::Error::InvalidArgument("scatter_rows: values must be one row of the cache's dtype per index");
  const size_t width = ffi::ByteWidth(cache.element_type()) * d;
  char* dst = static_cast<char*>(out->untyped_data());
  if (dst != cache.untyped_data())  // not aliased (XLA chose a copy): start from the cache as it was
    std::memcpy(dst, cache.untyped_data(), width * rows);
  const int32_t* at = idx.typed_data();
  const char* src = static_cast<const char*>(values.untyped_data());
  for (int64_t i = 0; i < n; ++i) {
    if (at[i] >= 0 && at[i] < rows) std::memcpy(dst + at[i] * width, src + i * width, width);
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace ttjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxGatherRows, ttjax::GatherRows,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::S32>>().Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TtjaxScatterRows, ttjax::ScatterRows,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
