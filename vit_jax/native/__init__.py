"""Native code of the CPU path: cpu_attention (a C++ XLA custom call, built on first use)
and block_cache.c (an allocator shim that launch.sh builds and preloads)."""
