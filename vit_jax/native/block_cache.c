// Keeps XLA:CPU's per-step temporary block mapped between steps (LD_PRELOAD by launch.sh).
//
// XLA:CPU allocates all of a step's temporaries as one aligned block (1.59 GB for a Ti/16
// train step at batch 32) and frees it when the step ends. glibc serves blocks above its
// largest mmap threshold (32 MiB) with a fresh mmap and unmaps them on free, so every step
// faults the whole block back in and the kernel zeroes it: on a 2-core Xeon VM Ti/16 train
// steps alternated between ~1.55 s (230 ms of system time) and ~1.95 s (850 ms). Here a
// freed aligned block of at least 32 MiB stays mapped and the next request of the same size
// gets it back: steps ran at ~1.43 s with ~20 ms of system time.
//
// Only posix_memalign / aligned_alloc / memalign requests of at least BLOCK_MIN bytes are
// served here; every other allocation, and every pointer this file did not hand out, goes
// to the real allocator. A request that no idle block fits unmaps idle blocks (largest
// first) until the blocks kept plus the new one fit in the budget: a quarter of physical
// memory, or VIT_JAX_BLOCK_CACHE_BYTES. A step that runs again and again keeps its block
// whatever its size; a process that compiles many big steps (a benchmark suite) does not
// keep them all: without the budget one ran out of 23 GiB and was killed.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define BLOCK_MIN (32UL << 20)
#define HUGE_PAGE (2UL << 20)
#define SLOTS 16

typedef struct {
  void *block;   // what callers get: HUGE_PAGE aligned; NULL for an empty slot
  void *map;     // the mapping behind it, and its length, for munmap
  size_t length;
  size_t size;   // the rounded request size it serves
  int in_use;
} slot_t;

static slot_t slots[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *next(const char *name) { return dlsym(RTLD_NEXT, name); }

static size_t budget(void) {
  static size_t bytes;
  if (!bytes) {
    const char *env = getenv("VIT_JAX_BLOCK_CACHE_BYTES");
    bytes = env && *env ? strtoull(env, NULL, 10)
                        : (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE) / 4;
  }
  return bytes;
}

static void unmap(int i) {
  munmap(slots[i].map, slots[i].length);
  __atomic_store_n(&slots[i].block, NULL, __ATOMIC_RELEASE);
}

static void *take(size_t size) {
  size = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  pthread_mutex_lock(&lock);
  size_t kept = 0;
  for (int i = 0; i < SLOTS; i++) {
    if (slots[i].block && !slots[i].in_use && slots[i].size == size) {
      slots[i].in_use = 1;
      pthread_mutex_unlock(&lock);
      return slots[i].block;
    }
    if (slots[i].block) kept += slots[i].size;
  }
  int empty;
  for (;;) {  // make room: a free slot, and the budget
    int idle = -1;
    empty = -1;
    for (int i = 0; i < SLOTS; i++) {
      if (!slots[i].block) {
        if (empty < 0) empty = i;
      } else if (!slots[i].in_use && (idle < 0 || slots[i].size > slots[idle].size)) {
        idle = i;
      }
    }
    if ((empty >= 0 && kept + size <= budget()) || idle < 0) break;
    kept -= slots[idle].size;
    unmap(idle);
  }
  void *block = NULL;
  if (empty >= 0) {
    size_t length = size + HUGE_PAGE;
    void *map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map != MAP_FAILED) {
      block = (void *)(((size_t)map + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
      madvise(block, size, MADV_HUGEPAGE);
      slots[empty] = (slot_t){NULL, map, length, size, 1};
      __atomic_store_n(&slots[empty].block, block, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock(&lock);
  return block;  // NULL: the caller falls back to the real allocator
}

// The slot holding `p`, or -1. Lock-free: most frees are of other memory.
static int find(const void *p) {
  if (!p) return -1;
  for (int i = 0; i < SLOTS; i++)
    if (__atomic_load_n(&slots[i].block, __ATOMIC_ACQUIRE) == p) return i;
  return -1;
}

static int give_back(void *p) {
  if (find(p) < 0) return 0;
  pthread_mutex_lock(&lock);
  int i = find(p);
  if (i >= 0) slots[i].in_use = 0;
  pthread_mutex_unlock(&lock);
  return i >= 0;
}

static int served_here(size_t alignment, size_t size) {
  return size >= BLOCK_MIN && alignment <= HUGE_PAGE;
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  static int (*real)(void **, size_t, size_t);
  if (served_here(alignment, size) && (alignment & (alignment - 1)) == 0 &&
      alignment >= sizeof(void *)) {
    void *block = take(size);
    if (block) {
      *out = block;
      return 0;
    }
  }
  if (!real) real = next("posix_memalign");
  return real(out, alignment, size);
}

typedef void *(*aligned_fn)(size_t, size_t);

// aligned_alloc and memalign: served here, or by `*real` (looked up as `name`).
static void *aligned(size_t alignment, size_t size, aligned_fn *real, const char *name) {
  if (served_here(alignment, size)) {
    void *block = take(size);
    if (block) return block;
  }
  if (!*real) *real = (aligned_fn)next(name);
  return (*real)(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
  static aligned_fn real;
  return aligned(alignment, size, &real, "aligned_alloc");
}

void *memalign(size_t alignment, size_t size) {
  static aligned_fn real;
  return aligned(alignment, size, &real, "memalign");
}

void free(void *p) {
  static void (*real)(void *);
  if (give_back(p)) return;
  if (!real) real = next("free");
  real(p);
}

size_t malloc_usable_size(void *p) {
  static size_t (*real)(void *);
  int i = find(p);
  if (i >= 0) return slots[i].size;
  if (!real) real = next("malloc_usable_size");
  return real(p);
}

void *realloc(void *p, size_t size) {
  static void *(*real)(void *, size_t);
  if (!real) real = next("realloc");
  int i = find(p);
  if (i < 0) return real(p, size);
  void *moved = real(NULL, size);  // a block of ours moves to the real allocator
  if (moved) {
    memcpy(moved, p, size < slots[i].size ? size : slots[i].size);
    give_back(p);
  }
  return moved;
}
