// The block-float GEMV (tensix_gemv_block.inc) for AVX-512 with VBMI (Ice Lake and later, Zen 4 and later).
#define TTJAX_GEMV_TARGET "avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"
#define TTJAX_GEMV_VBMI 1
#define TTJAX_GEMV_NS gemv_avx512_vbmi
#define TTJAX_GEMV_ENTRY GemvBlockTileAvx512Vbmi
#include "tensix_gemv_block.inc"
