// The `var_fast_emu` operator library: var_fast's schemas, implemented for CPU tensors by the CUDA
// launchers and kernels compiled for the emulator (tests/emu/build.py); and the `cuemu` ops through which
// the tests describe the emulated GPU, capture on it and see its launches (var_fast/emulated_device.h).
#include <ATen/record_function.h>
#include <torch/library.h>

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "var_fast/emulated_device.h"
#include "var_fast/op_schemas.h"
#include "var_fast/status_flags.h"

TORCH_LIBRARY(var_fast_emu, m) { var_fast::define_ops(m); }

TORCH_LIBRARY_IMPL(var_fast_emu, CompositeExplicitAutograd, m) {
  m.impl("check_status", &var_fast::status::check_status_op);
}

namespace {

using var_fast::emulated::state;

// ---- the device description ------------------------------------------------------------------------
void set_device(int64_t sm_count, int64_t cc_major, int64_t cc_minor, int64_t smem_optin) {
  TORCH_CHECK(sm_count >= 1 && cc_major >= 1 && cc_minor >= 0 && smem_optin >= 48 * 1024,
              "cuemu::set_device: SMs >= 1, a compute capability and at least 48 KiB of shared memory, got ",
              sm_count, " SMs, sm_", cc_major, cc_minor, ", ", smem_optin, " bytes");
  const std::lock_guard<std::mutex> lock(state().mutex);
  var_fast::DeviceLimits& d = state().device;
  d.sm_count = sm_count;
  d.cc_major = static_cast<int>(cc_major);
  d.cc_minor = static_cast<int>(cc_minor);
  d.smem_optin = static_cast<size_t>(smem_optin);
}

std::vector<int64_t> get_device() {
  const std::lock_guard<std::mutex> lock(state().mutex);
  const var_fast::DeviceLimits& d = state().device;
  return {d.sm_count, d.cc_major, d.cc_minor, static_cast<int64_t>(d.smem_optin)};
}

// ---- capture ---------------------------------------------------------------------------------------------
// ATen ops that wait for the device (their result's value or size lives there): observed while capturing.
const std::set<std::string>& synchronizing_ops() {
  static const std::set<std::string> ops = {
      "aten::_local_scalar_dense",  // .item(), .tolist(), bool(tensor)
      "aten::is_nonzero", "aten::equal", "aten::nonzero", "aten::masked_select", "aten::unique_consecutive",
      "aten::_unique2", "aten::unique_dim", "aten::repeat_interleave"};
  return ops;
}

std::unique_ptr<at::CallbackHandle> g_sync_observer;

void note_violation(const std::string& what) {
  const std::lock_guard<std::mutex> lock(state().mutex);
  if (state().capturing) state().capture_violations.push_back(what);
}

void begin_capture() {
  {
    const std::lock_guard<std::mutex> lock(state().mutex);
    TORCH_CHECK(!state().capturing, "cuemu::begin_capture: already capturing");
    state().capturing = true;
    state().capture_violations.clear();
  }
  // A RecordFunction observer sees every ATen op the launchers call (exceptions thrown from it are
  // swallowed by ATen, so the violations are reported by end_capture).
  g_sync_observer = std::make_unique<at::CallbackHandle>(at::addGlobalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
            if (synchronizing_ops().count(fn.name())) note_violation(std::string("host synchronisation: ") + fn.name());
            return nullptr;
          })
          .scopes({at::RecordScope::FUNCTION})));
}

void end_capture() {
  if (g_sync_observer) {
    at::removeCallback(*g_sync_observer);
    g_sync_observer.reset();
  }
  std::vector<std::string> violations;
  {
    const std::lock_guard<std::mutex> lock(state().mutex);
    TORCH_CHECK(state().capturing, "cuemu::end_capture: not capturing");
    state().capturing = false;
    violations.swap(state().capture_violations);
  }
  if (violations.empty()) return;
  std::string all;
  for (const std::string& v : violations) all += "\n  " + v;
  TORCH_CHECK(false, "emulated CUDA graph capture: ", violations.size(),
              " operation(s) a real capture cannot contain:", all);
}

bool is_capturing() { return var_fast::emulated::capturing(); }

// ---- the launch record ---------------------------------------------------------------------------------
void begin_launch_record() {
  const std::lock_guard<std::mutex> lock(state().mutex);
  state().recording = true;
  state().launches.clear();
}

// Function symbols (address within the file -> mangled name) of an ELF file's full symbol table: the
// kernels are static or weak functions, many of them absent from the dynamic symbol table dladdr reads.
const std::map<uint64_t, std::string>& function_symbols(const std::string& path) {
  static std::map<std::string, std::map<uint64_t, std::string>> cache;
  auto [it, inserted] = cache.try_emplace(path);
  if (!inserted) return it->second;
  std::ifstream file(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(Elf64_Ehdr)) return it->second;
  const char* base = bytes.data();
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shoff + uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr) > bytes.size())
    return it->second;
  const auto* sections = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; ++i) {
    const Elf64_Shdr& sh = sections[i];
    if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr& strtab = sections[sh.sh_link];
    if (sh.sh_offset + sh.sh_size > bytes.size() || strtab.sh_offset + strtab.sh_size > bytes.size()) continue;
    const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh.sh_offset);
    for (size_t k = 0; k < sh.sh_size / sizeof(Elf64_Sym); ++k) {
      if (ELF64_ST_TYPE(syms[k].st_info) == STT_FUNC && syms[k].st_value != 0 && syms[k].st_name < strtab.sh_size)
        it->second.emplace(syms[k].st_value, base + strtab.sh_offset + syms[k].st_name);
    }
  }
  return it->second;
}

// The demangled name of the function at `kernel` ("?" when the file has no symbol for it).
std::string kernel_name(const void* kernel) {
  Dl_info info{};
  if (dladdr(kernel, &info) == 0 || info.dli_fname == nullptr) return "?";
  std::string mangled;
  if (info.dli_sname != nullptr && info.dli_saddr == kernel) {
    mangled = info.dli_sname;
  } else {
    const auto& symbols = function_symbols(info.dli_fname);
    const auto found = symbols.find(reinterpret_cast<uintptr_t>(kernel) - reinterpret_cast<uintptr_t>(info.dli_fbase));
    if (found == symbols.end()) return "?";
    mangled = found->second;
  }
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  return name;
}

// One line per launch since begin_launch_record: "<kernel>\t<grid x> <y> <z>\t<block>\t<dynamic smem>".
std::vector<std::string> end_launch_record() {
  std::vector<var_fast::emulated::Launch> launches;
  {
    const std::lock_guard<std::mutex> lock(state().mutex);
    state().recording = false;
    launches.swap(state().launches);
  }
  std::vector<std::string> lines;
  for (const auto& l : launches) {
    lines.push_back(kernel_name(l.kernel) + "\t" + std::to_string(l.plan.grid_x) + " " + std::to_string(l.plan.grid_y) +
                    " " + std::to_string(l.plan.grid_z) + "\t" + std::to_string(l.plan.block) + "\t" +
                    std::to_string(l.plan.smem));
  }
  return lines;
}

}  // namespace

TORCH_LIBRARY(cuemu, m) {
  m.def("set_device(int sm_count, int cc_major, int cc_minor, int smem_optin) -> ()", &set_device);
  m.def("get_device() -> int[]", &get_device);
  m.def("begin_capture() -> ()", &begin_capture);
  m.def("end_capture() -> ()", &end_capture);
  m.def("is_capturing() -> bool", &is_capturing);
  m.def("begin_launch_record() -> ()", &begin_launch_record);
  m.def("end_launch_record() -> str[]", &end_launch_record);
}
