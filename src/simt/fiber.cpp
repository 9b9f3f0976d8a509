// src/simt/fiber.cpp: the fiber switch of the SIMT execution layer (kiln/simt/fiber.hpp).
#include "kiln/simt/fiber.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "kiln/core/error.hpp"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace kiln::simt {

#if defined(__x86_64__)
// kiln_simt_switch(void** save_sp, void* load_sp), System V ABI: pushes rbp rbx r12-r15 and an 8-byte slot holding
// MXCSR and the x87 control word (both callee-saved), stores rsp into *save_sp, loads load_sp and undoes the same.
// A new fiber's stack is laid out so that the first switch to it "returns" into kiln_simt_start with r12 = entry
// and r13 = arg, at a 16-byte aligned rsp; kiln_simt_start calls entry(arg), which never returns (ud2 if it did).
extern "C" void kiln_simt_switch(void** save_sp, void* load_sp);
extern "C" void kiln_simt_start();
asm(R"(
  .text
  .globl kiln_simt_switch
  .type kiln_simt_switch, @function
kiln_simt_switch:
  .cfi_startproc
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
  .cfi_endproc
  .size kiln_simt_switch, .-kiln_simt_switch

  .globl kiln_simt_start
  .type kiln_simt_start, @function
kiln_simt_start:
  endbr64
  movq %r13, %rdi
  callq *%r12
  ud2
  .size kiln_simt_start, .-kiln_simt_start
  .section .note.GNU-stack,"",@progbits
  .text
)");

void switch_to(Context& from, Context& to) { kiln_simt_switch(&from.sp, to.sp); }
bool fast_switch() { return true; }
#else
void switch_to(Context& from, Context& to) {
  if (!from.uc) from.uc.reset(new char[sizeof(ucontext_t)]);
  KILN_CHECK(swapcontext(reinterpret_cast<ucontext_t*>(from.uc.get()), reinterpret_cast<ucontext_t*>(to.uc.get())) == 0,
             "simt: swapcontext failed: ", errno);
}
bool fast_switch() { return false; }
namespace {
void start_uc(unsigned lo_e, unsigned hi_e, unsigned lo_a, unsigned hi_a) {
  auto entry = reinterpret_cast<Fiber::Entry>((uintptr_t(hi_e) << 32) | lo_e);
  entry(reinterpret_cast<void*>((uintptr_t(hi_a) << 32) | lo_a));
  __builtin_trap();
}
}  // namespace
#endif

Fiber::Fiber(Entry entry, void* arg, size_t stack_bytes) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  bytes_ = (stack_bytes + page - 1) / page * page;
  map_bytes_ = bytes_ + page;
  map_ = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  KILN_CHECK(map_ != MAP_FAILED, "simt: cannot map a fiber stack of ", map_bytes_, " bytes");
  KILN_CHECK(mprotect(map_, page, PROT_NONE) == 0, "simt: cannot protect a fiber stack's guard page");
  char* top = static_cast<char*>(map_) + map_bytes_;
#if defined(__x86_64__)
  // From the top (16-aligned): 16 bytes unused, kiln_simt_start as the return address at top - 24 (so rsp is 16-byte
  // aligned after the ret, as before a call), then rbp rbx r12 r13 r14 r15 and the MXCSR / x87 slot.
  auto* w = reinterpret_cast<uint64_t*>(top - 24);
  w[0] = reinterpret_cast<uint64_t>(&kiln_simt_start);
  w[-1] = 0;                                      // rbp
  w[-2] = 0;                                      // rbx
  w[-3] = reinterpret_cast<uint64_t>(entry);      // r12
  w[-4] = reinterpret_cast<uint64_t>(arg);        // r13
  w[-5] = 0;                                      // r14
  w[-6] = 0;                                      // r15
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  auto* slot = reinterpret_cast<char*>(&w[-7]);
  std::memcpy(slot, &mxcsr, 4);
  std::memcpy(slot + 4, &fpucw, 2);
  ctx_.sp = &w[-7];
#else
  ctx_.uc.reset(new char[sizeof(ucontext_t)]);
  auto* uc = reinterpret_cast<ucontext_t*>(ctx_.uc.get());
  KILN_CHECK(getcontext(uc) == 0, "simt: getcontext failed");
  uc->uc_stack.ss_sp = static_cast<char*>(map_) + page;
  uc->uc_stack.ss_size = bytes_;
  uc->uc_link = nullptr;
  const auto e = reinterpret_cast<uintptr_t>(entry), a = reinterpret_cast<uintptr_t>(arg);
  makecontext(uc, reinterpret_cast<void (*)()>(&start_uc), 4, unsigned(e), unsigned(e >> 32), unsigned(a),
              unsigned(a >> 32));
#endif
}

Fiber::~Fiber() {
  if (map_) munmap(map_, map_bytes_);
}

}  // namespace kiln::simt
