// cuda_emu.h - run CUDA kernels (unmodified .cuh sources) on the CPU, for testing their logic.
//
// Use:  g++ -std=c++20 -fno-extern-tls-init -fno-strict-aliasing -ffp-contract=off -include cuda_emu.h \
//            -I<cuemu>/include -I<cuda>/include ...  kernel_tu.cpp
//       (the -I<cuemu>/include directory must come first: it shadows <mma.h>).
//
// Model
//  * One CUDA block at a time per OS thread; each CUDA thread of the block is a fiber (own stack, own
//    registers) switched cooperatively. A fiber runs until it reaches a block barrier, a warp collective
//    (__shfl*_sync, __all/any/ballot_sync, __syncwarp, wmma::*_sync) or its end. Between two such points
//    the threads of a block run in an order given by CUEMU_SCHED (fwd, rev, rand:SEED); block order too.
//  * __syncthreads[_or/_and/_count]: every live thread must reach the same call site (file:line:col);
//    a different site is reported as divergence, no progress as a deadlock (with every thread's site).
//    Threads that have exited count as arrived (as on sm_70+), but that is reported as a warning.
//  * Warp collectives: the lanes named in `mask` must all call the same intrinsic at the same site with
//    the same mask; a named lane that has exited or does not exist (partial warp) is an error.
//  * __shared__ -> thread_local (one block per OS thread at a time, so this is per-block storage).
//    extern __shared__ arrays need a definition in the test program: CUEMU_DYNAMIC_SHARED(ns, T, name)
//    (one fixed buffer of CUEMU_MAX_DYN_SMEM bytes); at each block start the first `dynamic smem`
//    bytes are filled with 0xFF (NaN / all-ones: reads of unwritten shared memory show), and under
//    AddressSanitizer the rest of the buffer is poisoned (reads past the requested size are reported).
//  * ThreadSanitizer: every CUDA thread is a TSan fiber; happens-before edges exist only where CUDA gives
//    them: __syncthreads*, __syncwarp, atomics, block start/end. Shuffles and wmma ops carry no edge.
//    So a shared-memory race between two barriers is reported even though the fibers never overlap.
//  * Launch checks: block <= 1024 threads (x, y <= 1024, z <= 64), grid limits, dynamic shared memory
//    <= 48 KiB unless cuemu::set_max_dynamic_smem(kernel, bytes) (= cudaFuncSetAttribute), and <= the
//    opt-in limit CUEMU_SMEM_OPTIN (232448 = H100/H200).
//  * Arithmetic is the host's: the __f*_rn intrinsics and fmaf are exact (IEEE), so code that only uses
//    those rounds as on the GPU; plain a * b + c is not contracted (-ffp-contract=off), whereas nvcc
//    contracts it to an FMA; exp2f/expf/rsqrtf etc. are the host libm's (the GPU's differ by ~1-2 ulp).
//  * nvcuda::wmma (16x16x16, half / bf16 -> float): every lane holds the whole tile (num_elements = 256),
//    which is correct for code that only uses fill/load/mma/store and elementwise ops on x[]. Element e
//    of a tile is loaded from / stored to memory by lane e % 32 only (then exchanged inside the warp), so
//    TSan sees one owner per element. Tensor-core rounding of the accumulation is not modelled.
#pragma once
#define CUEMU_EMULATOR 1  // var_fast/launch.cuh launches through cuemu::launch

// ---- 1. host headers that must be parsed in host mode (before __CUDACC__ / __CUDA_ARCH__ exist) -------
#if __has_include(<ATen/core/Tensor.h>) && !defined(CUEMU_NO_TORCH)
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#endif
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <sys/mman.h>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define CUEMU_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#endif

// ---- 2. CUDA qualifiers ------------------------------------------------------------------------------
#undef __host__
#undef __device__
#undef __global__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __grid_constant__
#define __host__
#define __device__
#define __global__
#define __shared__ thread_local
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif

#define __CUDACC__ 1
#ifndef CUEMU_CUDA_ARCH
#define CUEMU_CUDA_ARCH 900
#endif
#define __CUDA_ARCH__ CUEMU_CUDA_ARCH

#define CUEMU_INTERNAL __attribute__((noinline, no_sanitize_thread))

namespace cuemu {

using Loc = std::source_location;

// ---- 3. fibers ---------------------------------------------------------------------------------------
extern "C" void cuemu_switch_context(void** save_sp, void* load_sp);
asm(R"(
.text
.weak cuemu_switch_context
.type cuemu_switch_context,@function
cuemu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuemu_switch_context,.-cuemu_switch_context
)");

enum class State : int { Runnable, AtBlockBarrier, AtWarpOp, Done };
enum class Op : int { None, SyncThreads, SyncOr, SyncAnd, SyncCount, SyncWarp, ShflIdx, ShflUp, ShflDown, ShflXor,
                      All, Any, Ballot, Wmma };

inline const char* op_name(Op op) {
  switch (op) {
    case Op::SyncThreads: return "__syncthreads";
    case Op::SyncOr: return "__syncthreads_or";
    case Op::SyncAnd: return "__syncthreads_and";
    case Op::SyncCount: return "__syncthreads_count";
    case Op::SyncWarp: return "__syncwarp";
    case Op::ShflIdx: return "__shfl_sync";
    case Op::ShflUp: return "__shfl_up_sync";
    case Op::ShflDown: return "__shfl_down_sync";
    case Op::ShflXor: return "__shfl_xor_sync";
    case Op::All: return "__all_sync";
    case Op::Any: return "__any_sync";
    case Op::Ballot: return "__ballot_sync";
    case Op::Wmma: return "wmma::*_sync";
    default: return "?";
  }
}

inline std::string loc_str(const Loc& l) {
  if (l.file_name() == nullptr || l.line() == 0) return "?";
  std::string f = l.file_name();
  const auto slash = f.rfind('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(l.line()) + ":" + std::to_string(l.column());
}
inline bool same_loc(const Loc& a, const Loc& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // usable stack [stack, stack + stack_size)
  size_t stack_size = 0;
  uint3 tid{};
  unsigned lin = 0, warp = 0, lane = 0;
  State state = State::Done;
  Op op = Op::None;
  Loc site{};
  unsigned gen = 0;     // barrier generation at arrival
  unsigned wmma_loads = 0;  // parity selects the wmma staging buffer
  uint64_t out = 0;     // result of the collective
  void* tsan = nullptr;
  void* asan_fake = nullptr;
  int ignore_depth = 0;  // open TsanIgnore scopes of this fiber
};

struct WarpGroup {  // one pending warp collective (lanes of `mask`)
  unsigned mask = 0, arrived = 0;
  Op op = Op::None;
  Loc site{};
  int width = 32;
  uint64_t in[32] = {};
  int arg[32] = {};
};

struct Warp {
  unsigned exist = 0;  // lanes that exist (partial last warp)
  unsigned done = 0;   // lanes that exited
  std::vector<WarpGroup> pending;
  unsigned syncwarp_gen = 0;
  char tsan_obj[2] = {};
  alignas(16) unsigned char wmma_stage[2][16 * 16 * 8];  // wmma loads: lanes stage their own elements (double-buffered)
};

struct Diagnostics {
  std::string error;                        // fatal: aborts the launch
  std::map<std::string, long> warnings;     // message -> count
};

struct Block;
inline thread_local Fiber* g_cur = nullptr;
inline thread_local Block* g_block = nullptr;
inline thread_local bool g_in_fiber = false;

struct Block {
  dim3 bdim, gdim;
  uint3 bid{};
  unsigned nthreads = 0, live = 0;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  // block barrier
  unsigned arrived = 0, gen = 0;
  Op bar_op = Op::None;
  Loc bar_site{};
  long bar_acc = 0;
  char tsan_bar[2] = {};
  char tsan_start = 0, tsan_done = 0;
  void* sched_sp = nullptr;
  void* sched_tsan = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  Diagnostics* diag = nullptr;
  bool failed = false;
};

struct Options {
  int sched = 0;  // 0 fwd, 1 rev, 2 rand
  uint64_t seed = 1;
  size_t stack_bytes = 256 * 1024;
  bool strict_exit = false;  // barrier reached while some threads exited: error instead of warning
  bool verbose = false;
  size_t smem_optin = 232448;
};

inline Options& options() {
  static Options o = [] {
    Options o;
    if (const char* s = std::getenv("CUEMU_SCHED")) {
      if (std::strncmp(s, "rev", 3) == 0) o.sched = 1;
      if (std::strncmp(s, "rand", 4) == 0) {
        o.sched = 2;
        if (const char* c = std::strchr(s, ':')) o.seed = std::strtoull(c + 1, nullptr, 10);
      }
    }
    if (const char* s = std::getenv("CUEMU_STACK_KB")) o.stack_bytes = std::strtoull(s, nullptr, 10) * 1024;
    if (const char* s = std::getenv("CUEMU_STRICT_EXIT")) o.strict_exit = std::atoi(s) != 0;
    if (const char* s = std::getenv("CUEMU_VERBOSE")) o.verbose = std::atoi(s) != 0;
    if (const char* s = std::getenv("CUEMU_SMEM_OPTIN")) o.smem_optin = std::strtoull(s, nullptr, 10);
    return o;
  }();
  return o;
}

// ---- sanitizer hooks -----------------------------------------------------------------------------------
#ifdef CUEMU_TSAN
extern "C" void AnnotateIgnoreReadsBegin(const char* f, int l);
extern "C" void AnnotateIgnoreReadsEnd(const char* f, int l);
extern "C" void AnnotateIgnoreWritesBegin(const char* f, int l);
extern "C" void AnnotateIgnoreWritesEnd(const char* f, int l);
#endif
// The emulator's own bookkeeping is invisible to TSan (its cross-fiber accesses are not the kernel's).
struct TsanIgnore {
#ifdef CUEMU_TSAN
  Fiber* fiber;
  TsanIgnore() : fiber(g_in_fiber ? g_cur : nullptr) {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
    if (fiber) fiber->ignore_depth++;
  }
  ~TsanIgnore() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    if (fiber) fiber->ignore_depth--;
  }
  static void end_all_of_current_fiber() {  // before a fiber is abandoned
    for (int i = 0; i < g_cur->ignore_depth; ++i) {
      AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
      AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    }
    g_cur->ignore_depth = 0;
  }
#else
  static void end_all_of_current_fiber() {}
#endif
};
inline void tsan_release(void* a) {
#ifdef CUEMU_TSAN
  __tsan_release(a);
#else
  (void)a;
#endif
}
inline void tsan_acquire(void* a) {
#ifdef CUEMU_TSAN
  __tsan_acquire(a);
#else
  (void)a;
#endif
}

// switch from the running context (save into *save_sp) to `to_sp`; the target's stack for ASan.
CUEMU_INTERNAL inline void raw_switch(void** save_sp, void** fake_save, void* to_sp, void* to_tsan,
                                      const void* to_bottom, size_t to_size) {
#ifdef CUEMU_TSAN
  __tsan_switch_to_fiber(to_tsan, __tsan_switch_to_fiber_no_sync);
#else
  (void)to_tsan;
#endif
#ifdef CUEMU_ASAN
  __sanitizer_start_switch_fiber(fake_save, to_bottom, to_size);
#else
  (void)fake_save; (void)to_bottom; (void)to_size;
#endif
  cuemu_switch_context(save_sp, to_sp);
#ifdef CUEMU_ASAN
  __sanitizer_finish_switch_fiber(fake_save ? *fake_save : nullptr, nullptr, nullptr);
#endif
}

// fiber -> scheduler
CUEMU_INTERNAL inline void yield_to_scheduler() {
  Fiber* f = g_cur;
  Block* b = g_block;
  raw_switch(&f->sp, f->state == State::Done ? nullptr : &f->asan_fake, b->sched_sp, b->sched_tsan,
             b->sched_stack_bottom, b->sched_stack_size);
}

[[noreturn]] CUEMU_INTERNAL inline void fail(const std::string& msg) {
  TsanIgnore ignore;
  Block* b = g_block;
  if (b->diag->error.empty()) {
    char where[160];
    std::snprintf(where, sizeof where, "block (%u,%u,%u) thread (%u,%u,%u): ", b->bid.x, b->bid.y, b->bid.z,
                  g_cur->tid.x, g_cur->tid.y, g_cur->tid.z);
    b->diag->error = where + msg;
  }
  b->failed = true;
  g_cur->state = State::Done;
  TsanIgnore::end_all_of_current_fiber();
  yield_to_scheduler();
  std::abort();  // never resumed
}

CUEMU_INTERNAL inline void warn(const std::string& msg) {
  TsanIgnore ignore;
  g_block->diag->warnings[msg]++;
}

// ---- block barrier ------------------------------------------------------------------------------------
CUEMU_INTERNAL inline void complete_block_barrier(Block* b) {
  const long acc = b->bar_acc;
  for (auto& f : b->fibers) {
    if (f.state == State::AtBlockBarrier) {
      f.state = State::Runnable;
      f.out = static_cast<uint64_t>(acc);
    }
  }
  if (b->live < b->nthreads) {
    warn("barrier " + std::string(op_name(b->bar_op)) + " at " + loc_str(b->bar_site) +
         " completed with exited threads (undefined behaviour per the CUDA guide)");
  }
  b->arrived = 0;
  b->bar_acc = 0;
  b->gen++;
}

CUEMU_INTERNAL inline long block_barrier(Op op, long pred, const Loc& loc) {
  TsanIgnore ignore;
  Block* b = g_block;
  Fiber* f = g_cur;
  if (b->arrived == 0) {
    b->bar_op = op;
    b->bar_site = loc;
    b->bar_acc = op == Op::SyncAnd ? 1 : 0;
  } else if (b->bar_op != op || !same_loc(b->bar_site, loc)) {
    fail(std::string("divergent barrier: ") + op_name(op) + " at " + loc_str(loc) + " while other threads wait in " +
         op_name(b->bar_op) + " at " + loc_str(b->bar_site));
  }
  if (b->live < b->nthreads && options().strict_exit) {
    fail(std::string(op_name(op)) + " at " + loc_str(loc) + " reached after some threads of the block exited");
  }
  switch (op) {
    case Op::SyncOr: b->bar_acc = b->bar_acc || pred; break;
    case Op::SyncAnd: b->bar_acc = b->bar_acc && pred; break;
    case Op::SyncCount: b->bar_acc += pred ? 1 : 0; break;
    default: break;
  }
  f->state = State::AtBlockBarrier;
  f->site = loc;
  f->op = op;
  f->gen = b->gen;
  tsan_release(&b->tsan_bar[f->gen & 1]);
  if (++b->arrived == b->live) {
    complete_block_barrier(b);
  } else {
    yield_to_scheduler();
  }
  tsan_acquire(&b->tsan_bar[f->gen & 1]);
  return static_cast<long>(f->out);
}

// ---- warp collectives ---------------------------------------------------------------------------------
CUEMU_INTERNAL inline uint64_t compute_lane(const WarpGroup& g, unsigned lane, unsigned mask, bool& bad_src) {
  const int w = g.width;
  const unsigned seg = lane & ~static_cast<unsigned>(w - 1);
  int src = static_cast<int>(lane);
  switch (g.op) {
    case Op::ShflIdx: src = static_cast<int>(seg) + (g.arg[lane] & (w - 1)); break;
    case Op::ShflUp: src = static_cast<int>(lane - seg) >= g.arg[lane] ? static_cast<int>(lane) - g.arg[lane] : lane; break;
    case Op::ShflDown:
      src = static_cast<int>(lane - seg) + g.arg[lane] < w ? static_cast<int>(lane) + g.arg[lane] : lane;
      break;
    case Op::ShflXor: {
      const int t = static_cast<int>(lane) ^ g.arg[lane];
      src = t >= static_cast<int>(seg) + w ? static_cast<int>(lane) : t;
      break;
    }
    case Op::All: {
      bool all = true;
      for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l) & 1u) all = all && g.in[l] != 0;
      return all;
    }
    case Op::Any: {
      bool any = false;
      for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l) & 1u) any = any || g.in[l] != 0;
      return any;
    }
    case Op::Ballot: {
      uint64_t bits = 0;
      for (unsigned l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && g.in[l] != 0) bits |= 1ull << l;
      return bits;
    }
    default: return 0;
  }
  if (src < 0 || src >= 32 || !((mask >> src) & 1u)) {
    bad_src = true;
    return 0xDEADBEEFDEADBEEFull;
  }
  return g.in[src];
}

CUEMU_INTERNAL inline uint64_t warp_collective(Op op, unsigned mask, uint64_t payload, int arg, int width,
                                               const Loc& loc) {
  TsanIgnore ignore;
  Block* b = g_block;
  Fiber* f = g_cur;
  Warp& w = b->warps[f->warp];
  const unsigned bit = 1u << f->lane;
  if (!(mask & bit)) fail(std::string(op_name(op)) + " at " + loc_str(loc) + ": calling lane not in mask");
  if (mask & ~w.exist)
    fail(std::string(op_name(op)) + " at " + loc_str(loc) + ": mask names lanes that do not exist (partial warp)");
  if (mask & w.done)
    fail(std::string(op_name(op)) + " at " + loc_str(loc) + ": mask names lanes that have already exited");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fail(std::string(op_name(op)) + " at " + loc_str(loc) + ": width must be a power of two <= 32");
  WarpGroup* g = nullptr;
  for (auto& p : w.pending) {
    if (p.mask == mask) {
      g = &p;
    } else if (p.mask & mask) {
      fail(std::string(op_name(op)) + " at " + loc_str(loc) + " with mask " + std::to_string(mask) +
           " overlaps a pending " + op_name(p.op) + " at " + loc_str(p.site) + " with mask " + std::to_string(p.mask));
    }
  }
  if (g == nullptr) {
    w.pending.emplace_back();
    g = &w.pending.back();
    g->mask = mask;
    g->op = op;
    g->site = loc;
    g->width = width;
  } else if (g->op != op || !same_loc(g->site, loc) || g->width != width) {
    fail(std::string("divergent warp: ") + op_name(op) + " at " + loc_str(loc) + " while lanes of the warp wait in " +
         op_name(g->op) + " at " + loc_str(g->site));
  }
  g->in[f->lane] = payload;
  g->arg[f->lane] = arg;
  g->arrived |= bit;
  f->state = State::AtWarpOp;
  f->op = op;
  f->site = loc;
  f->gen = w.syncwarp_gen;
  if (op == Op::SyncWarp) tsan_release(&w.tsan_obj[f->gen & 1]);
  if (g->arrived == mask) {
    bool bad_src = false;
    for (unsigned l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1u)) continue;
      Fiber& lf = b->fibers[f->warp * 32 + l];
      lf.out = compute_lane(*g, l, mask, bad_src);
      lf.state = State::Runnable;
    }
    if (bad_src) warn(std::string(op_name(op)) + " at " + loc_str(loc) + " read a lane outside the mask (undefined value)");
    if (op == Op::SyncWarp) w.syncwarp_gen++;
    w.pending.erase(w.pending.begin() + (g - w.pending.data()));
  } else {
    yield_to_scheduler();
  }
  if (op == Op::SyncWarp) tsan_acquire(&w.tsan_obj[f->gen & 1]);
  return f->out;
}

// ---- fiber entry and the block scheduler --------------------------------------------------------------
CUEMU_INTERNAL inline void thread_exit_bookkeeping() {
  TsanIgnore ignore;
  Block* b = g_block;
  Fiber* f = g_cur;
  Warp& w = b->warps[f->warp];
  w.done |= 1u << f->lane;
  for (auto& p : w.pending) {
    if (p.mask & (1u << f->lane)) {
      fail(std::string("lane exited while other lanes wait in ") + op_name(p.op) + " at " + loc_str(p.site) +
           " with it in the mask");
    }
  }
  b->live--;
  if (b->arrived > 0 && b->arrived == b->live) complete_block_barrier(b);
}

CUEMU_INTERNAL inline void fiber_main() {
#ifdef CUEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_block->sched_stack_bottom, &g_block->sched_stack_size);
#endif
  tsan_acquire(&g_block->tsan_start);
  try {
    g_block->body(g_block->ctx);
  } catch (const std::exception& e) {
    fail(std::string("C++ exception escaped the kernel: ") + e.what());
  }
  thread_exit_bookkeeping();
  tsan_release(&g_block->tsan_done);
  g_cur->state = State::Done;
  yield_to_scheduler();
  std::abort();
}

inline void alloc_stack(Fiber& f, size_t bytes) {
  const size_t page = 4096;
  bytes = (bytes + page - 1) / page * page;
  void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    std::perror("cuemu: mmap");
    std::abort();
  }
  mprotect(m, page, PROT_NONE);  // guard page: a stack overflow faults
  f.stack = static_cast<char*>(m) + page;
  f.stack_size = bytes;
}

inline void free_stack(Fiber& f) {
  if (f.stack) munmap(f.stack - 4096, f.stack_size + 4096);
  f.stack = nullptr;
}

inline void reset_fiber(Fiber& f) {
#ifdef CUEMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stack_size);  // frames abandoned by the previous block
#endif
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack + f.stack_size) & ~uintptr_t{15};
  const uintptr_t A = top - 16;  // holds the entry address; after `ret`, rsp = A + 8 (== 8 mod 16)
  *reinterpret_cast<void**>(A) = reinterpret_cast<void*>(&fiber_main);
  uintptr_t sp = A - 6 * 8 - 8;
  std::memset(reinterpret_cast<void*>(sp), 0, 6 * 8 + 8);
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  std::memcpy(reinterpret_cast<void*>(sp), &mxcsr, 4);
  std::memcpy(reinterpret_cast<void*>(sp + 4), &fpucw, 2);
  f.sp = reinterpret_cast<void*>(sp);
  f.state = State::Runnable;
  f.op = Op::None;
  f.asan_fake = nullptr;
  f.wmma_loads = 0;
}

// ---- dynamic shared memory ------------------------------------------------------------------------------
#ifndef CUEMU_MAX_DYN_SMEM
#define CUEMU_MAX_DYN_SMEM (232448)
#endif
struct DynSmem {
  void* (*addr)();
  size_t capacity;
};
inline std::vector<DynSmem>& dyn_smem_registry() {
  static std::vector<DynSmem> r;
  return r;
}
struct DynSmemRegistrar {
  DynSmemRegistrar(void* (*addr)(), size_t cap) { dyn_smem_registry().push_back({addr, cap}); }
};

inline void prepare_dyn_smem(size_t bytes) {
  for (auto& d : dyn_smem_registry()) {
    char* p = static_cast<char*>(d.addr());
#ifdef CUEMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, d.capacity);
#endif
    std::memset(p, 0xFF, std::min(bytes, d.capacity));
#ifdef CUEMU_ASAN
    if (bytes < d.capacity) ASAN_POISON_MEMORY_REGION(p + bytes, d.capacity - bytes);
#endif
  }
}

inline void unpoison_dyn_smem() {
#ifdef CUEMU_ASAN
  for (auto& d : dyn_smem_registry()) ASAN_UNPOISON_MEMORY_REGION(d.addr(), d.capacity);
#endif
}

// ---- kernel attributes ----------------------------------------------------------------------------------
inline std::map<const void*, size_t>& max_dyn_smem_attr() {
  static std::map<const void*, size_t> m;
  return m;
}
template <typename K>
cudaError_t set_max_dynamic_smem(K* kernel, size_t bytes) {  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
  if (bytes > options().smem_optin) return cudaErrorInvalidValue;
  max_dyn_smem_attr()[reinterpret_cast<const void*>(kernel)] = bytes;
  return cudaSuccess;
}

struct LaunchStats {
  double seconds = 0;
  long blocks = 0;
};
inline thread_local LaunchStats g_last_launch;
inline thread_local std::string g_last_error;

// Runs body(ctx) as every thread of every block. Returns cudaSuccess or an error (message in g_last_error).
inline cudaError_t run_grid(const void* kernel_id, dim3 grid, dim3 block, size_t dyn_smem, void (*body)(void*),
                            void* ctx) {
  g_last_error.clear();
  auto bad = [](cudaError_t e, const std::string& m) {
    g_last_error = m;
    if (options().verbose) std::fprintf(stderr, "cuemu: %s\n", m.c_str());
    return e;
  };
  const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      nthreads > 1024)
    return bad(cudaErrorInvalidConfiguration, "invalid block dimensions (at most 1024 threads, z <= 64)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return bad(cudaErrorInvalidConfiguration, "invalid grid dimensions");
  size_t allowed = 48 * 1024;
  if (auto it = max_dyn_smem_attr().find(kernel_id); it != max_dyn_smem_attr().end()) allowed = std::max(allowed, it->second);
  if (dyn_smem > allowed)
    return bad(cudaErrorInvalidValue, "dynamic shared memory " + std::to_string(dyn_smem) + " > " +
                                          std::to_string(allowed) + " (cudaFuncSetAttribute missing?)");
  if (dyn_smem > options().smem_optin) return bad(cudaErrorInvalidValue, "dynamic shared memory above the opt-in limit");
  for (auto& d : dyn_smem_registry())
    if (dyn_smem > d.capacity) return bad(cudaErrorInvalidValue, "dynamic shared memory above CUEMU_MAX_DYN_SMEM");

  Block B;
  Diagnostics diag;
  B.diag = &diag;
  B.bdim = block;
  B.gdim = grid;
  B.nthreads = static_cast<unsigned>(nthreads);
  B.body = body;
  B.ctx = ctx;
  B.fibers.resize(nthreads);
  B.warps.resize((nthreads + 31) / 32);
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = B.fibers[i];
    alloc_stack(f, options().stack_bytes);
    f.lin = i;
    f.warp = i / 32;
    f.lane = i % 32;
    f.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
#ifdef CUEMU_TSAN
    f.tsan = __tsan_create_fiber(0);
#endif
  }
#ifdef CUEMU_TSAN
  B.sched_tsan = __tsan_get_current_fiber();
#endif
  // block order and thread order
  std::vector<uint3> blocks;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back(uint3{x, y, z});
  std::mt19937_64 rng(options().seed);
  if (options().sched == 1) std::reverse(blocks.begin(), blocks.end());
  if (options().sched == 2) std::shuffle(blocks.begin(), blocks.end(), rng);
  std::vector<unsigned> order(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) order[i] = options().sched == 1 ? nthreads - 1 - i : i;

  TsanIgnore ignore;  // the scheduler's accesses (g_cur, fiber states) are bookkeeping
  Block* const saved_block = g_block;
  Fiber* const saved_cur = g_cur;
  g_block = &B;
  const auto t0 = std::chrono::steady_clock::now();
  cudaError_t result = cudaSuccess;
  for (const uint3& bid : blocks) {
    B.bid = bid;
    B.live = B.nthreads;
    B.arrived = 0;
    B.gen = 0;
    for (unsigned w = 0; w < B.warps.size(); ++w) {
      const unsigned lanes = std::min(32u, B.nthreads - 32 * w);
      B.warps[w].exist = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
      B.warps[w].done = 0;
      B.warps[w].pending.clear();
    }
    for (auto& f : B.fibers) reset_fiber(f);
    prepare_dyn_smem(dyn_smem);
    tsan_release(&B.tsan_start);
    unsigned done = 0;
    while (done < B.nthreads && !B.failed) {
      bool progressed = false;
      if (options().sched == 2) std::shuffle(order.begin(), order.end(), rng);
      for (unsigned idx : order) {
        Fiber& f = B.fibers[idx];
        if (f.state != State::Runnable) continue;
        progressed = true;
        g_cur = &f;
        void* fake = nullptr;
        g_in_fiber = true;
        raw_switch(&B.sched_sp, &fake, f.sp, f.tsan, f.stack, f.stack_size);
        g_in_fiber = false;
        if (B.failed) break;
      }
      if (B.failed) break;
      done = 0;
      for (auto& f : B.fibers) done += f.state == State::Done;
      if (!progressed && done < B.nthreads) {
        std::string msg = "deadlock in block (" + std::to_string(bid.x) + "," + std::to_string(bid.y) + "," +
                          std::to_string(bid.z) + "): ";
        std::map<std::string, std::string> where;  // site -> threads
        for (auto& f : B.fibers) {
          if (f.state == State::Done) continue;
          where[std::string(op_name(f.op)) + " at " + loc_str(f.site)] += std::to_string(f.lin) + " ";
        }
        for (auto& [k, v] : where) msg += "[" + k + ": threads " + (v.size() > 60 ? v.substr(0, 60) + "..." : v) + "] ";
        diag.error = msg;
        B.failed = true;
      }
    }
    tsan_acquire(&B.tsan_done);
    if (B.failed) break;
  }
  g_last_launch.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_last_launch.blocks = static_cast<long>(blocks.size());
  g_block = saved_block;
  g_cur = saved_cur;
  unpoison_dyn_smem();
  for (auto& f : B.fibers) {
#ifdef CUEMU_TSAN
    if (B.failed) {  // abandoned fibers (failed launch): close their ignore scopes, join them to the host
      const int depth = f.ignore_depth;
      __tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync);
      for (int i = 0; i < depth; ++i) {
        AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
        AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
      }
      __tsan_release(&B.tsan_done);
      __tsan_switch_to_fiber(B.sched_tsan, __tsan_switch_to_fiber_no_sync);
      __tsan_acquire(&B.tsan_done);
    }
    __tsan_destroy_fiber(f.tsan);
#endif
    free_stack(f);
  }
  for (auto& [m, n] : diag.warnings) std::fprintf(stderr, "cuemu warning (x%ld): %s\n", n, m.c_str());
  if (B.failed) {
    result = cudaErrorLaunchFailure;
    g_last_error = diag.error;
    std::fprintf(stderr, "cuemu error: %s\n", diag.error.c_str());
  }
  return result;
}

template <typename... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> args;
  static void run(void* self) {
    auto* k = static_cast<KernelCall*>(self);
    std::apply(k->kernel, k->args);  // each thread gets its own copy of the parameters
  }
};

// kernel<<<grid, block, smem>>>(args...)  ==  cuemu::launch(kernel, grid, block, smem, args...)
template <typename... P, typename... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t dyn_smem, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "wrong number of kernel arguments");
  KernelCall<P...> call{kernel, std::tuple<std::decay_t<P>...>(static_cast<std::decay_t<P>>(std::forward<A>(args))...)};
  return run_grid(reinterpret_cast<const void*>(kernel), grid, block, dyn_smem, &KernelCall<P...>::run, &call);
}

}  // namespace cuemu

// Definition of the storage behind `extern __shared__ T name[];` (declared in namespace NS). Use it BEFORE
// including the kernel header (else g++ calls a TLS init wrapper for the block-scope extern declaration).
#define CUEMU_DYNAMIC_SHARED(NS, T, NAME)                                                                 \
  namespace NS {                                                                                          \
  alignas(256) thread_local T NAME[CUEMU_MAX_DYN_SMEM / sizeof(T)];                                       \
  }                                                                                                       \
  static ::cuemu::DynSmemRegistrar cuemu_dyn_reg_##NAME(                                                  \
      [] { return static_cast<void*>(NS::NAME); }, sizeof(NS::NAME));

// ---- 4. built-in variables ----------------------------------------------------------------------------
#define threadIdx (::cuemu::g_cur->tid)
#define blockIdx (::cuemu::g_block->bid)
#define blockDim (::cuemu::g_block->bdim)
#define gridDim (::cuemu::g_block->gdim)
constexpr int warpSize = 32;

// ---- 5. synchronisation and warp intrinsics -----------------------------------------------------------
inline void __syncthreads(cuemu::Loc loc = cuemu::Loc::current()) { cuemu::block_barrier(cuemu::Op::SyncThreads, 0, loc); }
inline int __syncthreads_or(int p, cuemu::Loc loc = cuemu::Loc::current()) {
  return cuemu::block_barrier(cuemu::Op::SyncOr, p != 0, loc) != 0;
}
inline int __syncthreads_and(int p, cuemu::Loc loc = cuemu::Loc::current()) {
  return cuemu::block_barrier(cuemu::Op::SyncAnd, p != 0, loc) != 0;
}
inline int __syncthreads_count(int p, cuemu::Loc loc = cuemu::Loc::current()) {
  return static_cast<int>(cuemu::block_barrier(cuemu::Op::SyncCount, p != 0, loc));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, cuemu::Loc loc = cuemu::Loc::current()) {
  cuemu::warp_collective(cuemu::Op::SyncWarp, mask, 0, 0, 32, loc);
}

namespace cuemu {
template <typename T>
constexpr bool shfl_type_ok = std::is_arithmetic_v<T> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16> ||
                              std::is_same_v<T, __half2> || std::is_same_v<T, __nv_bfloat162>;
template <typename T>
T shfl(Op op, unsigned mask, T v, int arg, int width, const Loc& loc) {
  static_assert(shfl_type_ok<T> && sizeof(T) <= 8, "__shfl*_sync: unsupported type");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_collective(op, mask, bits, arg, width, loc);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
}  // namespace cuemu

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize, cuemu::Loc loc = cuemu::Loc::current()) {
  return cuemu::shfl(cuemu::Op::ShflIdx, mask, v, src, width, loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = warpSize, cuemu::Loc loc = cuemu::Loc::current()) {
  return cuemu::shfl(cuemu::Op::ShflUp, mask, v, static_cast<int>(d), width, loc);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = warpSize, cuemu::Loc loc = cuemu::Loc::current()) {
  return cuemu::shfl(cuemu::Op::ShflDown, mask, v, static_cast<int>(d), width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int m, int width = warpSize, cuemu::Loc loc = cuemu::Loc::current()) {
  return cuemu::shfl(cuemu::Op::ShflXor, mask, v, m, width, loc);
}
inline int __all_sync(unsigned mask, int p, cuemu::Loc loc = cuemu::Loc::current()) {
  return static_cast<int>(cuemu::warp_collective(cuemu::Op::All, mask, p != 0, 0, 32, loc));
}
inline int __any_sync(unsigned mask, int p, cuemu::Loc loc = cuemu::Loc::current()) {
  return static_cast<int>(cuemu::warp_collective(cuemu::Op::Any, mask, p != 0, 0, 32, loc));
}
inline unsigned __ballot_sync(unsigned mask, int p, cuemu::Loc loc = cuemu::Loc::current()) {
  return static_cast<unsigned>(cuemu::warp_collective(cuemu::Op::Ballot, mask, p != 0, 0, 32, loc));
}
inline unsigned __activemask() {  // approximation: the lanes that have not exited
  const auto& w = cuemu::g_block->warps[cuemu::g_cur->warp];
  return w.exist & ~w.done;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() { cuemu::fail("__trap()"); }
inline long long clock64() { return static_cast<long long>(__builtin_ia32_rdtsc()); }

// ---- 6. atomics ---------------------------------------------------------------------------------------
#define CUEMU_ATOMIC_RMW(NAME, EXPR)                                         \
  template <typename T, typename U>                                         \
  T NAME(T* addr, U val_) {                                                 \
    const T val = static_cast<T>(val_);                                     \
    std::atomic_ref<T> a(*addr);                                            \
    T old = a.load();                                                       \
    while (!a.compare_exchange_weak(old, static_cast<T>(EXPR))) {           \
    }                                                                       \
    return old;                                                             \
  }
CUEMU_ATOMIC_RMW(atomicAdd, old + val)
CUEMU_ATOMIC_RMW(atomicSub, old - val)
CUEMU_ATOMIC_RMW(atomicExch, val)
CUEMU_ATOMIC_RMW(atomicMin, old < val ? old : val)
CUEMU_ATOMIC_RMW(atomicMax, old > val ? old : val)
CUEMU_ATOMIC_RMW(atomicAnd, old & val)
CUEMU_ATOMIC_RMW(atomicOr, old | val)
CUEMU_ATOMIC_RMW(atomicXor, old ^ val)
#undef CUEMU_ATOMIC_RMW
template <typename T>
T atomicCAS(T* addr, T compare, T val) {
  std::atomic_ref<T> a(*addr);
  a.compare_exchange_strong(compare, val);
  return compare;
}

// ---- 7. arithmetic intrinsics -------------------------------------------------------------------------
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : std::min(std::max(x, 0.0f), 1.0f); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((1ull * a * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((1ll * a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(unsigned x) { return std::countl_zero(x); }
inline int __clzll(unsigned long long x) { return std::countl_zero(x); }
inline int __ffs(unsigned x) { return x ? std::countr_zero(x) + 1 : 0; }
inline int __ffsll(unsigned long long x) { return x ? std::countr_zero(x) + 1 : 0; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename A, typename B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

// ---- 8. nvcuda::wmma ----------------------------------------------------------------------------------
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K>
struct shape {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
};

// Layout-agnostic: every lane holds the whole tile, row-major (element (r, c) at x[r * cols + c]).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = shape<Use, M, N, K>::rows, cols = shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  using element_type = T;
  T x[num_elements];
};

namespace detail {
template <typename T>
float to_f(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return static_cast<float>(v);
}
CUEMU_INTERNAL inline void collective(const cuemu::Loc& loc) {
  cuemu::warp_collective(cuemu::Op::Wmma, 0xffffffffu, 0, 0, 32, loc);
}
template <typename T>
void check_ptr(const T* p, unsigned ldm, const char* what, const cuemu::Loc& loc) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    cuemu::fail(std::string("wmma::") + what + " at " + cuemu::loc_str(loc) + ": pointer not 256-bit aligned");
  if ((ldm * sizeof(T)) % 16 != 0)
    cuemu::fail(std::string("wmma::") + what + " at " + cuemu::loc_str(loc) + ": ldm not a multiple of 16 bytes");
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (auto& e : f.x) e = static_cast<T>(v);
}

namespace detail {
// A warp-collective load: each lane reads its own elements (e % 32 == lane, as a store writes them) from
// memory, the warp exchanges them, and every lane ends up with the whole tile. Only the owned reads are
// kernel accesses (TSan-visible); the exchange is the emulator's.
template <typename Frag, typename T>
void load_tile(Frag& f, const T* p, unsigned ldm, bool row_major_mem, const cuemu::Loc& loc) {
  check_ptr(p, ldm, "load_matrix_sync", loc);
  constexpr int R = Frag::rows, C = Frag::cols;
  static_assert(sizeof(T) * R * C <= sizeof(cuemu::Warp::wmma_stage[0]), "wmma tile too large");
  cuemu::Fiber* self = cuemu::g_cur;
  T* stage = reinterpret_cast<T*>(cuemu::g_block->warps[self->warp].wmma_stage[self->wmma_loads++ & 1]);
  for (int e = static_cast<int>(self->lane); e < R * C; e += 32) {
    const int r = e / C, c = e % C;
    const T v = row_major_mem ? p[r * ldm + c] : p[c * ldm + r];
    cuemu::TsanIgnore ignore;
    stage[e] = v;
  }
  collective(loc);
  cuemu::TsanIgnore ignore;
  for (int e = 0; e < R * C; ++e) f.x[e] = stage[e];
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L>
  requires(!std::is_same_v<Use, accumulator>)
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm, cuemu::Loc loc = cuemu::Loc::current()) {
  detail::load_tile(f, p, ldm, std::is_same_v<L, row_major>, loc);
}

template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout,
                      cuemu::Loc loc = cuemu::Loc::current()) {
  detail::load_tile(f, p, ldm, layout == mem_row_major, loc);
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout,
                       cuemu::Loc loc = cuemu::Loc::current()) {
  detail::collective(loc);
  detail::check_ptr(p, ldm, "store_matrix_sync", loc);
  const unsigned lane = cuemu::g_cur->lane;
  for (int e = static_cast<int>(lane); e < M * N; e += 32) {  // each element written by one lane
    const int r = e / N, c = e % N;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[e];
  }
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c,
              cuemu::Loc loc = cuemu::Loc::current()) {
  detail::collective(loc);
  TC out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = detail::to_f(c.x[i * N + j]);
      for (int k = 0; k < K; ++k) acc += detail::to_f(a.x[i * K + k]) * detail::to_f(b.x[k * N + j]);
      out[i * N + j] = static_cast<TC>(acc);
    }
  std::memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda
