// The fused diffusion sampler step on the CPU: classifier-free guidance (optionally rescaled),
// x0 prediction, clipping, the DDPM/DDIM update and counter-based Gaussian noise, in one pass.
#pragma once

#include <cstdint>

#include "fastlearn/view.h"

namespace fl::diffusion {

// One row of the scheduler's fused coefficient table (columns in this order).
struct StepCoefficients {
  double ax, am, ex, em, e0, p0, px, pe, sigma;
};

// prev, x0 from sample x and model output m (conditional when u, the unconditional output,
// is given); all of them contiguous, same shape (batch first) and dtype (f32, f64, f16, bf16).
//   coeffs: S x 9 (f32 or f64), row `step` used; step read from step_view (int64, one
//           element) when given, else step_index.
//   seed:   from seed_view (int64, one element) when given, else seed_value (bits as uint64).
//   clip:   +inf for no clamp. rescale: guidance_rescale in [0, 1] (used only with u).
void diffusion_step(const View& x, const View& m, const View* u, const View& coeffs, const View* step_view,
                    int64_t step_index, double guidance_scale, double guidance_rescale, double clip,
                    const View* seed_view, int64_t seed_value, int64_t offset, const View& prev, const View& x0);

// out[i] = N(seed, offset + i), the noise diffusion_step adds (f32, f64, f16 or bf16 out).
void philox_normal(const View& out, const View* seed_view, int64_t seed_value, int64_t offset);

}  // namespace fl::diffusion
