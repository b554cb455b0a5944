// The `var_fast_emu` operator library: var_fast's schemas, implemented for CPU tensors by the CUDA
// launchers and kernels compiled for the emulator (tests/emu/build.py).
#include <torch/library.h>

#include "var_fast/op_schemas.h"
#include "var_fast/status_flags.h"

TORCH_LIBRARY(var_fast_emu, m) { var_fast::define_ops(m); }

TORCH_LIBRARY_IMPL(var_fast_emu, CompositeExplicitAutograd, m) {
  m.impl("check_status", &var_fast::status::check_status_op);
}
