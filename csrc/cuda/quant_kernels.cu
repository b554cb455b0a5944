// Kernel translation unit of the quantization ops: the kernels of var_fast/quant.cuh launched by their
// plans (var_fast/quant_launch.h), one run function per launcher. nvcc compiles it for the GPU;
// tests/emu compiles the same file for the CUDA emulator. One TU for the whole family, so that the
// dynamic shared memory of phi_tile_kernel (`extern __shared__ float tile[]`) has one definition.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

VAR_FAST_DYNAMIC_SHARED(var_fast::quant_cuda, float, tile)

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "var_fast/quant.cuh"
#include "var_fast/quant_launch.h"

namespace var_fast::quant_cuda {
namespace {

template <class Source, class Sink>
void launch_phi(const Source& source, const Sink& sink, const PhiParams& p, const PhiTilePlan& plan, Stream stream) {
  launch(phi_tile_kernel<Source, Sink>, plan.launch, stream, source, sink, p.weight_t, p.bias, p.keep, p.mix, p.C,
         p.Cp, p.H, p.W, plan.tile_rows);
}

}  // namespace

void run_nearest_code(const NearestCodeParams& p, const NearestCodePlans& plans, Stream stream) {
  launch(nearest_code_partial_kernel, plans.partial, stream, p.z, p.codes, p.zz, p.ee, p.N, p.V, p.C,
         p.codes_per_split, p.part_best, p.part_second, p.part_index);
  launch(nearest_code_merge_kernel, plans.merge, stream, static_cast<const float*>(p.part_best),
         static_cast<const float*>(p.part_second), static_cast<const int32_t*>(p.part_index), p.splits, p.N, p.V, p.C,
         p.zz, p.sqrt_ee_max, p.tokens, p.uncertain);
  launch(nearest_code_refine_kernel, plans.refine, stream, p.z, p.codes, p.zz, p.ee, p.N, p.V, p.C, p.tokens,
         p.uncertain);
}

void run_area(const AreaParams& p, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype_or_double(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    launch(area_kernel<scalar_t, scalar_t>, plan, stream, static_cast<const scalar_t*>(p.x), p.xs, p.B, p.C, p.H, p.W,
           p.size, static_cast<scalar_t*>(p.out), p.os, p.channels_fastest);
  });
}

void run_bicubic(const BicubicParams& p, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype_or_double(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    launch(bicubic_kernel<scalar_t, scalar_t>, plan, stream, static_cast<const scalar_t*>(p.x), p.xs, p.B, p.C, p.h,
           p.w, p.size, static_cast<scalar_t*>(p.out));
  });
}

void run_phi_blend(const PhiBlendParams& p, DType dtype, const PhiTilePlan& plan, Stream stream) {
  with_kernel_dtype_or_double(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    const DenseSource<scalar_t> source{static_cast<const scalar_t*>(p.h), p.hs};
    launch_phi(source, StoreSink<scalar_t>{static_cast<scalar_t*>(p.out)}, p.phi, plan, stream);
  });
}

void run_embed_phi(const PhiEmbedParams& p, const PhiTilePlan& plan, Stream stream) {
  const EmbedSource source{p.tokens, p.codes, p.V, p.phi.C, p.pn, p.phi.H, p.phi.W, p.status};
  launch_phi(source, AccumulateSink{p.target, p.sign}, p.phi, plan, stream);
}

}  // namespace var_fast::quant_cuda
