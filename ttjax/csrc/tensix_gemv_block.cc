// The block-float GEMV (tensix_gemv_block.inc) for AVX-512 F/BW/DQ/VL.
#define TTJAX_GEMV_TARGET "avx512f,avx512bw,avx512dq,avx512vl"
#define TTJAX_GEMV_VBMI 0
#define TTJAX_GEMV_NS gemv_avx512
#define TTJAX_GEMV_ENTRY GemvBlockTileAvx512
#include "tensix_gemv_block.inc"
