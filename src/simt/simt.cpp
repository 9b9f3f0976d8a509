// src/simt/simt.cpp: running one block of the SIMT execution layer (kiln/simt/simt.hpp), as fibers or as threads.
#include "kiln/simt/simt.hpp"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace kiln::simt {

Mode default_mode() {
  const char* e = std::getenv("KILN_SIMT");
  return e && std::strcmp(e, "threads") == 0 ? Mode::threads : Mode::fibers;
}

namespace {

// One fiber of this host thread's pool: it runs a CUDA thread's body, marks it done and switches back; reused for
// the next block. A fiber abandoned mid-kernel (a misuse, a deadlock) is rebuilt before it is used again.
struct Slot {
  std::unique_ptr<Fiber> fiber;
  Thread thread;
  void (*body)(void*) = nullptr;
  void* closure = nullptr;
  bool done = true;
};

thread_local std::vector<std::unique_ptr<Slot>> pool;
thread_local Context scheduler_context;

void fiber_main(void* arg) {
  auto* s = static_cast<Slot*>(arg);
  for (;;) {
    s->body(s->closure);
    s->done = true;
    switch_to(s->fiber->context(), scheduler_context);
  }
}

void rebuild(Slot& s) { s.fiber = std::make_unique<Fiber>(&fiber_main, &s, kFiberStack); }

Thread make_thread(const Block& b, const dim3& grid, const dim3& block, unsigned linear) {
  Thread t;
  t.thread_idx = {linear % block.x, linear / block.x % block.y, unsigned(linear / (size_t(block.x) * block.y))};
  t.block_idx = b.idx;
  t.block_dim = block;
  t.grid_dim = grid;
  t.block = const_cast<Block*>(&b);
  t.linear = linear;
  t.lane = linear % kWarp;
  t.warp = linear / kWarp;
  return t;
}

void run_fibers(Block& b, const dim3& grid, const dim3& block, void (*body)(void*), void* closure) {
  const unsigned n = b.threads;
  while (pool.size() < n) {
    pool.push_back(std::make_unique<Slot>());
    rebuild(*pool.back());
  }
  for (unsigned i = 0; i < n; ++i) {
    Slot& s = *pool[i];
    s.thread = make_thread(b, grid, block, i);
    s.body = body;
    s.closure = closure;
    s.done = false;
  }
  b.scheduler = &scheduler_context;
  auto abandon = [&] {  // every fiber still inside the kernel is rebuilt before the pool runs it again
    for (unsigned i = 0; i < n; ++i)
      if (!pool[i]->done) {
        rebuild(*pool[i]);
        pool[i]->done = true;
      }
    current = nullptr;
  };
  unsigned finished = 0;
  for (;;) {
    const uint64_t events = b.events;
    const unsigned finished_before = finished;
    for (unsigned i = 0; i < n; ++i) {
      Slot& s = *pool[i];
      if (s.done) continue;
      current = &s.thread;
      b.self = &s.fiber->context();
      switch_to(scheduler_context, *b.self);
      if (!b.error.empty()) {
        abandon();
        throw Error(b.error, "simt");
      }
      finished += s.done;
    }
    if (finished == n) break;
    if (b.events == events && finished == finished_before) {
      unsigned waiting = 0;
      for (unsigned i = 0; i < n; ++i) waiting += b.waiting_at[i] != ~uint64_t(0);
      const std::string what =
          waiting > 0 && finished > 0
              ? std::to_string(waiting) + " of " + std::to_string(n) + " threads wait at __syncthreads while " +
                    std::to_string(finished) + " returned without reaching it (every thread of a block must reach it)"
          : waiting > 0 ? std::to_string(waiting) + " of " + std::to_string(n) +
                              " threads wait at __syncthreads while the others wait at a warp barrier or shuffle"
                        : "threads wait at warp barriers or shuffles that not every thread of their warp reaches";
      abandon();
      throw Error("simt: " + detail::block_name(b.idx) + ": " + what, "simt");
    }
  }
  current = nullptr;
}

void run_threads(Block& b, const dim3& grid, const dim3& block, void (*body)(void*), void* closure) {
  const unsigned n = b.threads;
  b.barrier = std::make_unique<std::barrier<>>(n);
  for (auto& w : b.warps) w.barrier = std::make_unique<std::barrier<>>(w.lanes);
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> ts;
  ts.reserve(n);
  for (unsigned i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      Thread t = make_thread(b, grid, block, i);
      current = &t;
      try {
        body(closure);
      } catch (...) {
        errors[i] = std::current_exception();
      }
      // a thread that is done counts as arrived at every later barrier (what GPUs since Volta do for exited threads)
      b.warps[t.warp].barrier->arrive_and_drop();
      b.barrier->arrive_and_drop();
      current = nullptr;
    });
  for (auto& t : ts) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace

namespace detail {

void yield() {
  Block& b = *current->block;
  switch_to(*b.self, *b.scheduler);
}

[[noreturn]] void misuse(const std::string& what) {
  Block& b = *current->block;
  std::string msg = "simt: " + block_name(b.idx) + ", thread " + std::to_string(current->linear) + ": " + what;
  if (b.mode == Mode::threads) throw Error(msg, "simt");
  b.error = std::move(msg);
  switch_to(*b.self, *b.scheduler);  // never resumed: the scheduler rebuilds this fiber
  std::abort();
}

void run_block(Block& b, const dim3& grid, const dim3& block, void (*body)(void*), void* closure) {
  if (b.mode == Mode::threads) run_threads(b, grid, block, body, closure);
  else run_fibers(b, grid, block, body, closure);
}

}  // namespace detail

}  // namespace kiln::simt
