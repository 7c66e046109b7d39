"""Orbax train-state checkpoints in the workdir: save every N steps, keep the last k, resume.

A checkpoint holds the whole train state (step, params, optimiser state) and, as JSON, the
config that made it. The data position needs no saving: the input order is a function of
(seed, step), so resuming at step s reads exactly what an uninterrupted run reads.
Saves are asynchronous and atomic (orbax writes to a temporary directory and renames), so a
crash mid-save never leaves a checkpoint that is picked up half-written.
"""

import os

import orbax.checkpoint as ocp


def manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """The save interval is decided by the caller (orbax's own would also save step 1)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')), options=options,
      item_names=('state', 'config'))


def save(mgr: ocp.CheckpointManager, step: int, state, config_json: dict):
  """Starts an asynchronous save of `state` at `step` (returns before it is written)."""
  mgr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_json)), force=True)


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores the state at `step` with the shardings and dtypes of `abstract_state`."""
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore()))
  return restored['state'], restored['config']
