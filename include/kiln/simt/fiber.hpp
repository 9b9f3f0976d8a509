// kiln/simt/fiber.hpp: cooperative fibers for the SIMT execution layer (simt.hpp): each CUDA thread of a block is a
// fiber on the host thread that runs the block, and a barrier switches to the next fiber.
//   Fiber f(entry, arg, stack_bytes)   a stack (mmap'd, with a guard page below it) on which entry(arg) will run
//   switch_to(from, to)                saves the running context into `from` and resumes `to`
//   Context                            the saved stack pointer of a suspended fiber or of the scheduler
// The switch is a few instructions of assembly (src/simt/fiber.cpp) on x86-64: it saves the callee-saved registers,
// MXCSR and the x87 control word, swaps stacks and returns: 13 ns a switch against 278 ns for glibc's swapcontext,
// which also saves the signal mask with a system call each time (bench/bench_simt.cpp; bench/RESULTS.md). Other
// architectures use ucontext. An entry function must never return: it switches away for the last time.
// Not for sanitizers that track stacks (ASan, TSan): use the thread-per-CUDA-thread mode of simt.hpp there.
#pragma once

#include <cstddef>
#include <memory>

namespace kiln::simt {

struct Context {
  void* sp = nullptr;           // x86-64: the stack pointer where the registers were pushed
  std::unique_ptr<char[]> uc;  // other architectures: a ucontext_t
};

// Saves the running context into `from`, resumes `to`; returns when something switches back to `from`.
void switch_to(Context& from, Context& to);

class Fiber {
 public:
  using Entry = void (*)(void*);
  Fiber(Entry entry, void* arg, size_t stack_bytes);
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  Context& context() { return ctx_; }
  size_t stack_bytes() const { return bytes_; }

 private:
  Context ctx_;
  void* map_ = nullptr;  // guard page + stack
  size_t map_bytes_ = 0, bytes_ = 0;
};

// Whether this build switches with the hand-written assembly (false: ucontext).
bool fast_switch();

}  // namespace kiln::simt
