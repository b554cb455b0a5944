// The pybind11 module var_fast._C: loading it registers the ops (csrc/ops.cpp and the kernels'
// TORCH_LIBRARY_IMPL blocks); the Python-visible function here only reports how it was built.
#include <torch/extension.h>

#ifndef VAR_FAST_VERSION
#define VAR_FAST_VERSION "0.0.0"
#endif
#ifndef VAR_FAST_CUDA_ARCHS
#define VAR_FAST_CUDA_ARCHS ""
#endif

namespace {
pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = VAR_FAST_VERSION;
  info["torch_version_built"] = TORCH_VERSION;
#ifdef VAR_FAST_WITH_CUDA
  info["cuda_kernels"] = true;
  info["cuda_archs"] = VAR_FAST_CUDA_ARCHS;
#else
  info["cuda_kernels"] = false;
  info["cuda_archs"] = "";
#endif
  return info;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "var_fast native kernels (ops are in torch.ops.var_fast)";
  m.def("build_info", &build_info, "How this extension was built");
}
