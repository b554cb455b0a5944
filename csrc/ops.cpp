// Declares the `var_fast` operator library (schemas: var_fast/op_schemas.h).
#include <torch/library.h>

#include "var_fast/op_schemas.h"
#include "var_fast/status_flags.h"

TORCH_LIBRARY(var_fast, m) { var_fast::define_ops(m); }

// Any device: one read of the flags.
TORCH_LIBRARY_IMPL(var_fast, CompositeExplicitAutograd, m) {
  m.impl("check_status", &var_fast::status::check_status_op);
}
