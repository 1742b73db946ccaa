#pragma once
// Runs the device code of spattn's tensor-core kernels on the CPU, so that their indexing, padding,
// synchronisation and numerics are tested on machines without a GPU (the kernels' own headers are compiled
// by the host compiler with this header first).
//
// A launch runs the grid's blocks one after another; a block is blockDim.x std::threads. __syncthreads and
// __syncwarp are barriers over the block's or the warp's threads, warp shuffles exchange through a slot per
// thread between two warp barriers. Shared memory starts as NaN bytes, so reading memory a kernel never
// wrote shows.
//
// The warp-level primitives of cuda/warp_primitives.cuh (mma.sync, ldmatrix, cp.async) are emulated there,
// lane by lane, on what this header adds for them: exchange_all (every lane of a warp sees every lane's
// operands, and all must be at the same instruction), inside_block_shared, and each thread's cp.async
// copies in flight, which launch requires to be done when the thread's kernel returns.
//
// Not emulated: timing, occupancy, bank conflicts, and races between warps that the barriers happen to
// order here (compute-sanitizer's racecheck on a GPU covers those).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#define SPATTN_CUDA_EMULATION 1
#define __launch_bounds__(...)
#define SPATTN_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::spattn_emulation::block_shared())

namespace spattn_emulation {

inline void require(bool condition, const std::string& what) {
  if (!condition) throw std::logic_error("CUDA emulation: " + what);
}

// One cp.async copy: `size` bytes at `destination`, the first `source_bytes` from `source`, zeros after.
struct AsyncCopy {
  unsigned char* destination;
  const unsigned char* source;
  std::size_t source_bytes, size;
  void complete() const {
    if (source_bytes > 0) std::memcpy(destination, source, source_bytes);
    std::memset(destination + source_bytes, 0, size - source_bytes);
  }
};

// A thread's cp.async copies in flight: those issued since its last commit, and its committed groups,
// oldest first. Groups complete in order, and only at a wait (PTX: cp.async.wait_group).
struct AsyncCopies {
  std::vector<AsyncCopy> uncommitted;
  std::deque<std::vector<AsyncCopy>> committed;

  void commit() {
    committed.push_back(std::move(uncommitted));
    uncommitted.clear();
  }
  // Completes every committed group but the `pending` most recent.
  void wait(std::size_t pending) {
    while (committed.size() > pending) {
      for (const AsyncCopy& copy : committed.front()) copy.complete();
      committed.pop_front();
    }
  }
  // No copy issued and not yet completed (empty groups left committed are harmless).
  bool idle() const {
    if (!uncommitted.empty()) return false;
    for (const auto& group : committed) {
      if (!group.empty()) return false;
    }
    return true;
  }
};

// What exchange_all passes between the lanes of a warp: the instruction's name and the lane's count of
// exchanges (to tell that all lanes are at the same one), and the operands.
struct WideSlot {
  static constexpr std::size_t kBytes = 64;
  const char* instruction = "";
  std::uint64_t sequence = 0;
  alignas(8) unsigned char bytes[kBytes] = {};
};

// The state shared by the threads of the running block.
struct Block {
  explicit Block(unsigned threads, std::size_t shared_bytes)
      : shared(shared_bytes + 128, 0xff),
        dynamic_shared_bytes(shared_bytes),
        block_barrier(threads),
        slots(threads),
        votes(threads),
        wide_slots(threads),
        wide_exchanges(threads, 0),
        async_copies(threads) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::vector<unsigned char> shared;
  std::size_t dynamic_shared_bytes;  // what the launch asked for, from block_shared()
  std::barrier<> block_barrier;
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  std::vector<std::uint64_t> slots;
  std::vector<int> votes;
  std::vector<WideSlot> wide_slots;
  std::vector<std::uint64_t> wide_exchanges;  // per thread: how many exchange_all it has made
  std::vector<AsyncCopies> async_copies;      // per thread
};

inline Block*& current_block() {
  static Block* block = nullptr;  // one block runs at a time
  return block;
}
inline void* block_shared() {
  // 128-byte aligned, as the kernels declare it.
  const auto address = reinterpret_cast<std::uintptr_t>(current_block()->shared.data());
  return reinterpret_cast<void*>((address + 127) / 128 * 128);
}
// Whether [pointer, pointer + bytes) lies inside the running block's dynamic shared memory.
inline bool inside_block_shared(const void* pointer, std::size_t bytes) {
  const auto begin = reinterpret_cast<std::uintptr_t>(block_shared());
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  return address >= begin && address - begin <= current_block()->dynamic_shared_bytes &&
         bytes <= current_block()->dynamic_shared_bytes - (address - begin);
}

}  // namespace spattn_emulation

inline dim3 gridDim, blockDim;
inline thread_local uint3 threadIdx, blockIdx;

inline void __syncthreads() { spattn_emulation::current_block()->block_barrier.arrive_and_wait(); }
// A block barrier that also tells every thread whether any thread's predicate was true.
inline int __syncthreads_or(int predicate) {
  spattn_emulation::Block& block = *spattn_emulation::current_block();
  __syncthreads();  // every thread is done reading the previous vote
  block.votes[threadIdx.x] = predicate != 0;
  __syncthreads();
  int any = 0;
  for (int vote : block.votes) any |= vote;
  return any;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  spattn_emulation::require(mask == 0xffffffffu, "only full-warp __syncwarp is emulated");
  spattn_emulation::current_block()->warp_barriers[threadIdx.x / 32]->arrive_and_wait();
}

namespace spattn_emulation {
template <typename T>
T exchange(unsigned mask, T value, unsigned source_lane) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  require(mask == 0xffffffffu, "only full-warp shuffles are emulated");
  Block& block = *current_block();
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const unsigned warp_first = threadIdx.x / 32 * 32;
  __syncwarp();  // every lane is done reading the previous exchange
  block.slots[threadIdx.x] = bits;
  __syncwarp();
  bits = block.slots[warp_first + source_lane % 32];
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

// Every lane of the warp publishes `value` and receives all 32 lanes' values, in lane order: the operand
// exchange of the warp-wide instructions (.sync.aligned: mma, ldmatrix). All 32 lanes must call it at the
// same instruction, named by `instruction` (a string literal); a lane elsewhere (at a __syncwarp, a
// different instruction, or past its last one) is an error.
template <typename T>
std::array<T, 32> exchange_all(const char* instruction, const T& value) {
  static_assert(sizeof(T) <= WideSlot::kBytes && std::is_trivially_copyable_v<T>);
  Block& block = *current_block();
  const unsigned warp_first = threadIdx.x / 32 * 32;
  const std::uint64_t sequence = ++block.wide_exchanges[threadIdx.x];
  __syncwarp();  // every lane is done reading the previous exchange
  WideSlot& mine = block.wide_slots[threadIdx.x];
  mine.instruction = instruction;
  mine.sequence = sequence;
  std::memcpy(mine.bytes, &value, sizeof(T));
  __syncwarp();
  std::array<T, 32> values;
  for (unsigned lane = 0; lane < 32; ++lane) {
    const WideSlot& slot = block.wide_slots[warp_first + lane];
    if (slot.sequence != sequence || std::strcmp(slot.instruction, instruction) != 0) {
      require(false, std::string(instruction) + ": lane " + std::to_string(lane) +
                         " is not at the same warp-wide instruction (all 32 lanes must execute it together)");
    }
    std::memcpy(&values[lane], slot.bytes, sizeof(T));
  }
  return values;
}

// Lets other threads run at some calls, in a pattern that differs between threads, so that races show.
inline void maybe_yield() {
  thread_local unsigned calls = 0;
  if ((++calls + threadIdx.x) % 3 == 0) std::this_thread::yield();
}
}  // namespace spattn_emulation

template <typename T>
T __shfl_sync(unsigned mask, T value, int source_lane) {
  return spattn_emulation::exchange(mask, value, static_cast<unsigned>(source_lane));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  return spattn_emulation::exchange(mask, value, (threadIdx.x % 32) ^ static_cast<unsigned>(lane_mask));
}
using std::isnan;  // a global function in CUDA device code

inline float __int_as_float(int bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

namespace spattn_emulation {

// Runs kernel(arguments...) on a grid of `blocks` blocks of `threads` threads, one block at a time.
template <typename Kernel, typename... Arguments>
void launch(Kernel kernel, unsigned blocks, unsigned threads, std::size_t shared_bytes,
            const Arguments&... arguments) {
  gridDim = dim3(blocks, 1, 1);
  blockDim = dim3(threads, 1, 1);
  for (unsigned b = 0; b < blocks; ++b) {
    Block block(threads, shared_bytes);
    current_block() = &block;
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        threadIdx = uint3{t, 0, 0};
        blockIdx = uint3{b, 0, 0};
        try {
          kernel(arguments...);
          require(block.async_copies[t].idle(),
                  "the kernel returned with cp.async copies not committed or not waited for");
        } catch (const std::exception& error) {
          // The other threads would wait at the next barrier forever: report and stop.
          std::fprintf(stderr, "CUDA emulation, block %u thread %u: %s\n", b, t, error.what());
          std::abort();
        }
      });
    }
    for (std::thread& worker : workers) worker.join();
    current_block() = nullptr;
  }
}

}  // namespace spattn_emulation
