// tests/gpu/ptxas_kernels.cu: the hot kernels instantiated at SmolLM3-3B's shapes (d 2048, ffn 11008, 16 / 4 heads
// of 128, vocab 128256). The test `cuda.no_spills` compiles this file with ptxas -v and fails when ptxas reports a
// register spill in any of them.
#include "kernels/adamw.cuh"
#include "kernels/add.cuh"
#include "kernels/cross_entropy.cuh"
#include "kernels/embedding.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"

template void kiln::kernels::cuda::swiglu_forward<kiln::bf16, 11008>(const kiln::bf16*, kiln::bf16*, int,
                                                                      kiln::gpu::Stream);
template void kiln::kernels::cuda::swiglu_backward<kiln::bf16, 11008>(const kiln::bf16*, const kiln::bf16*,
                                                                       kiln::bf16*, int, kiln::gpu::Stream);
template void kiln::kernels::cuda::rmsnorm_forward<kiln::bf16, 2048>(kiln::bf16*, const kiln::bf16*,
                                                                      const kiln::bf16*, kiln::bf16*, float*, int,
                                                                      float, kiln::gpu::Stream);
template void kiln::kernels::cuda::rmsnorm_backward<kiln::bf16, 2048>(const kiln::bf16*, const kiln::bf16*,
                                                                       const float*, const kiln::bf16*, kiln::bf16*,
                                                                       float*, float*, int, int, bool,
                                                                       kiln::gpu::Stream);
template void kiln::kernels::cuda::adamw_flat<kiln::bf16>(float*, const float*, float*, float*, kiln::bf16*, size_t,
                                                          const kiln::DecayRange*, int,
                                                          const kiln::kernels::cuda::AdamWConstants*, const float*,
                                                          kiln::gpu::Stream);
template void kiln::kernels::cuda::grad_norm<float>(const float*, size_t, double*, float, float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::rope_forward<kiln::bf16, 20, 128>(kiln::bf16*, int, const int32_t*, int,
                                                                      const float*, const float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::rope_backward<kiln::bf16, 20, 128>(kiln::bf16*, int, const int32_t*, int,
                                                                       const float*, const float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::embedding_forward<kiln::bf16, 2048>(const int32_t*, int, const kiln::bf16*,
                                                                        kiln::bf16*, kiln::gpu::Stream, int, int);
template void kiln::kernels::cuda::embedding_backward<kiln::bf16, 2048>(const int32_t*, const int32_t*,
                                                                         const int32_t*, int, const kiln::bf16*,
                                                                         float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::xent_rows<kiln::bf16, 128256>(const float*, const int32_t*, int, float,
                                                                  const float*, kiln::bf16*, float*, float*,
                                                                  kiln::gpu::Stream, const float*);
// the vocabulary-parallel loss at SmolLM3's TP 2 (64128 of the 128256 rows a rank)
template void kiln::kernels::cuda::xent_vp_max<64128>(const float*, int, float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::xent_vp_sums<64128>(const float*, const int32_t*, int, int, float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::xent_vp_finish<kiln::bf16, 64128>(const float*, const int32_t*, int, int, float,
                                                                      const float*, const float*, kiln::bf16*, float*,
                                                                      float*, kiln::gpu::Stream);
template void kiln::kernels::cuda::norm_pieces_sum<float>(const float*, const kiln::kernels::cuda::NormPiece*, int,
                                                          double*, double*, kiln::gpu::Stream);
template void kiln::kernels::cuda::to_storage<kiln::bf16>(const float*, kiln::bf16*, size_t, kiln::gpu::Stream);
template void kiln::kernels::cuda::add<kiln::bf16>(const kiln::bf16*, kiln::bf16*, size_t, kiln::gpu::Stream);
// Not here: kernels/attention.cuh, Kiln's reference attention, which keeps head_dim accumulators per thread and
// spills at head_dim 128 by design (the fast path is to be cuDNN's).
