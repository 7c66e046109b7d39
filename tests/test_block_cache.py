"""vit_jax/native/block_cache.c: launch.sh preloads it so that XLA:CPU's per-step temporary
block stays mapped between steps instead of being faulted back in every step."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / 'vit_jax' / 'native' / 'block_cache.c'

pytestmark = pytest.mark.skipif(platform.system() != 'Linux', reason='LD_PRELOAD is Linux')

# Allocates an aligned block, touches every page, frees it, and does it again; reports the
# page faults of the second touch and what the allocator functions returned.
PROBE = r'''
import ctypes, json, resource
libc = ctypes.CDLL(None)
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.restype = ctypes.c_size_t
libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.realloc.restype = ctypes.c_void_p
libc.aligned_alloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.aligned_alloc.restype = ctypes.c_void_p
SIZE = 100 << 20

def block(size=SIZE):
  p = ctypes.c_void_p()
  assert libc.posix_memalign(ctypes.byref(p), 64, ctypes.c_size_t(size)) == 0
  return p.value

def touch(p, size=SIZE):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(p, 1, size)
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

first = block(); touch(first); libc.free(first)
second = block(); faults = touch(second)
usable = libc.malloc_usable_size(second)
other = block(SIZE + (8 << 20))  # another size: another block
small = block(1 << 20); libc.free(small)  # served by glibc
ctypes.memmove(second, b'vit', 3)
moved = libc.realloc(second, 16)
kept = ctypes.string_at(moved, 3).decode()
libc.free(moved); libc.free(other)
third = libc.aligned_alloc(4096, SIZE); libc.free(third)
print(json.dumps(dict(same=first == second, faults=faults, usable=usable, other=other != first,
                      kept=kept, aligned_alloc_reused=third == first)))
'''


# Uses a block, then one of another size, then the first size again: the page faults of that
# last touch say whether the first block was kept through the second.
BUDGET_PROBE = PROBE.split('first = block()')[0] + r'''
a = block(); touch(a); libc.free(a)
b = block(SIZE + (8 << 20)); touch(b, SIZE + (8 << 20)); libc.free(b)
print(json.dumps(dict(faults=touch(block()))))
'''


def env_with(**extra):
  """This environment without launch.sh's LD_PRELOAD, plus `extra`."""
  return dict({k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}, **extra)


def probe(env, code=PROBE):
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  lib = tmp_path_factory.mktemp('block_cache') / 'block_cache.so'
  subprocess.run([os.environ.get('CC', 'cc'), '-O2', '-shared', '-fPIC', '-o', str(lib),
                  str(SOURCE), '-ldl', '-lpthread'], check=True)
  return str(lib)


def test_a_freed_big_block_comes_back_mapped_and_other_memory_is_untouched(built):
  without = probe(env_with())
  cached = probe(env_with(LD_PRELOAD=built))
  assert without['faults'] >= 40  # glibc unmapped it: every page is faulted in again
  assert cached['same'] and cached['faults'] < 10 and cached['aligned_alloc_reused']
  assert cached['usable'] >= 100 << 20 and cached['other'] and cached['kept'] == 'vit'


def test_idle_blocks_are_unmapped_to_stay_within_the_budget(built):
  """A process that runs many big steps must not keep them all (a benchmark suite was
  killed for memory): past VIT_JAX_BLOCK_CACHE_BYTES, a new size unmaps the idle blocks."""
  default = env_with(LD_PRELOAD=built)  # a quarter of the RAM: both blocks fit
  assert probe(default, BUDGET_PROBE)['faults'] < 10
  budget = env_with(LD_PRELOAD=built, VIT_JAX_BLOCK_CACHE_BYTES=str(150 << 20))
  assert probe(budget, BUDGET_PROBE)['faults'] >= 40  # the first went for the second


def test_launch_preloads_the_block_cache_unless_turned_off():
  code = 'import os; print(os.environ.get("LD_PRELOAD", ""))'
  run = lambda **env: subprocess.run(  # noqa: E731
      ['bash', str(REPO / 'launch.sh'), 'python', '-c', code], cwd=REPO, text=True,
      capture_output=True, env=dict(os.environ, LD_PRELOAD='', **env))
  on, off = run(), run(VIT_JAX_BLOCK_CACHE='0')
  assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
  assert on.stdout.strip().endswith('vit_jax_block_cache.so') and Path(on.stdout.strip()).exists()
  assert off.stdout.strip() == ''
