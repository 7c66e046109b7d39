"""Orbax train-state checkpoints in the workdir: save every N steps, keep the last k, resume.

A checkpoint holds the whole train state (step, params, optimiser state) and, as JSON, the
config that made it. The data position needs no saving: the input order is a function of
(seed, step), so resuming at step s reads exactly what an uninterrupted run reads.
Saves are asynchronous and atomic (orbax writes to a temporary directory and renames), so a
kill mid-save never leaves a checkpoint that is picked up half-written. A checkpoint that
is unreadable all the same (a truncated file, a disk error) is moved aside, never deleted,
and the previous one is used.
"""

import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


class CheckpointError(ValueError):
  """A checkpoint that cannot be used as asked (another model, unreadable files): the
  command-line tools print it as one error line, as they do a bad argument."""


def manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints (0: all of them). The save interval is decided by
  the caller (orbax's own would also save step 1)."""
  if keep < 0:  # orbax would keep none at 0 and fail at -1; the config check says this too
    raise ValueError(f'keep={keep}; expected >= 1, or 0 to keep every checkpoint')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True,
                                         enable_async_checkpointing=True)
  directory = os.path.join(workdir, 'checkpoints')
  if '://' not in directory:  # local paths absolute; gs:// and other URLs as they are
    directory = os.path.abspath(directory)
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


def save(mgr: ocp.CheckpointManager, step: int, state, config_json: dict):
  """Starts an asynchronous save of `state` at `step` (returns before it is written)."""
  mgr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_json)), force=True)


def _shapes(tree) -> dict:
  """{'params/Transformer/.../kernel': shape, 'opt_state/0/mu/...': shape} for a state or
  for its saved metadata (which spells optax's named tuples as dicts: same paths here)."""
  def name(k):
    for attr in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {'/'.join(name(k) for k in path): tuple(x.shape) for path, x in flat}


def check_same_state(mgr: ocp.CheckpointManager, step: int, abstract_state):
  """Raises CheckpointError if the checkpoint at `step` holds another model's parameters or
  another optimiser's state: a config change, not damage, so nothing is moved aside."""
  saved = _shapes(mgr.item_metadata(step)['state'])
  wanted = _shapes(abstract_state)
  def differences(keys):
    return [f'{k}: {saved.get(k, "missing")} in the checkpoint, {wanted.get(k, "missing")} '
            'in this config' for k in sorted(keys) if saved.get(k) != wanted.get(k)]
  keys = set(saved) | set(wanted)
  # The parameters first: the optimiser state of another model differs in the same places.
  diffs = differences(k for k in keys if k.startswith('params/'))
  what = 'model'
  if not diffs:
    diffs = differences(keys)
    what = 'optimiser (the parameters match; the optimiser state does not)'
  if diffs:
    shown = '\n  '.join(diffs[:10]) + (f'\n  ... and {len(diffs) - 10} more'
                                       if len(diffs) > 10 else '')
    raise CheckpointError(
        f'{mgr.directory} holds a checkpoint (step {step}) of a different {what}:\n'
        f'  {shown}\nNothing was moved or overwritten. Use a new --workdir, or the config '
        'that made it (WORKDIR/config.json); to train its weights on with this config, '
        'export them (python -m vit_jax.convert WORKDIR FILE.npz) and pass '
        '--config.init_from=FILE.npz with a new --workdir.')


def _quarantine(mgr: ocp.CheckpointManager, step: int) -> tuple[bool, str]:
  """Moves an unreadable checkpoint aside (kept for inspection) so it is never reused.
  Returns (moved, what happened), agreed by every process (process 0 moves it)."""
  src = epath.Path(mgr.directory) / str(step)
  dst = src.parent / f'{step}.unreadable-{int(time.time())}'
  moved, outcome = True, f'moved it to {dst}'
  if jax.process_index() == 0:
    try:
      src.rename(dst)
    except Exception as e:  # noqa: BLE001 - e.g. an object store without directory renames
      moved, outcome = False, f'{type(e).__name__}: {str(e)[:160]}'
  moved = _everywhere(moved)
  mgr.reload()
  return moved, outcome


def _try_restore(mgr: ocp.CheckpointManager, step: int, abstract_state, attempts: int = 2):
  """(state, None), or (None, the error) when `attempts` reads of `step` all failed: a
  second read lets a passing storage error (gs://, NFS) go by without moving a good
  checkpoint aside."""
  error = None
  for attempt in range(attempts):
    try:
      restored = mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore()))
      return jax.block_until_ready(restored['state']), None
    except Exception as e:  # noqa: BLE001 - any read failure: retried, then unusable
      error = e
      if attempt + 1 < attempts:
        time.sleep(1.0)
  return None, error


def _everywhere(ok: bool) -> bool:
  """True when `ok` holds in every process: all of them resume from the same step, or
  none does (one host failing to read its shards fails the step for all)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def restore_latest(mgr: ocp.CheckpointManager, abstract_state, log=print):
  """Restores the newest readable checkpoint with the shardings/dtypes of `abstract_state`.

  Returns (state, step), or (None, None) when the workdir has no checkpoint. A different
  model or optimiser raises CheckpointError; an unreadable checkpoint is moved aside with a
  message and the previous one is tried; if none is readable, CheckpointError names them
  all (the run does not silently start over).
  """
  unreadable = []
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      check_same_state(mgr, step, abstract_state)
    except CheckpointError:  # a config change, not damage: raised, nothing moved
      raise
    except Exception as e:  # noqa: BLE001 - its metadata is unreadable: so is the step
      state, error = None, e
    else:
      state, error = _try_restore(mgr, step, abstract_state)
    if _everywhere(error is None):
      return state, step
    where = os.path.join(str(mgr.directory), str(step))
    why = (f'{type(error).__name__}: {str(error)[:200]}' if error is not None else
           'another process could not read it')
    moved, outcome = _quarantine(mgr, step)
    if not moved:  # left in place, it would block the save of this step after a resume
      raise CheckpointError(
          f'checkpoint {where} is unreadable ({why}) and could not be moved aside '
          f'({outcome}). Move or delete it, then rerun to resume from the one before it.')
    unreadable.append(outcome.replace('moved it to ', ''))
    log(f'checkpoint {where} is unreadable ({why}); {outcome} and trying the previous one')
  if unreadable:
    raise CheckpointError(
        f'no readable checkpoint in {mgr.directory}: {", ".join(unreadable)} could not be '
        'read (moved aside, not deleted). Rerun to start from scratch in this workdir, or '
        'restore a good copy.')
  return None, None


def restore_on_host(state_dir: str):
  """A saved train state (WORKDIR/checkpoints/STEP/state) as numpy arrays, whatever the
  device count or process count that saved it (each array restored onto one device)."""
  one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    with ocp.StandardCheckpointer() as ckptr:
      tree = ckptr.metadata(state_dir)
      tree = getattr(tree, 'item_metadata', tree)
      target = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), tree,
          is_leaf=lambda x: hasattr(x, 'shape'))
      state = ckptr.restore(state_dir, target)
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f'cannot read checkpoint {state_dir}: {e}') from e
  return jax.tree.map(np.asarray, state)


__all__ = ['CheckpointError', 'manager', 'save', 'check_same_state', 'restore_latest',
           'restore_on_host']
