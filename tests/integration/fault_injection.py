"""``python fault_injection.py ARGS...`` runs ``molt ARGS...`` and sends the process a signal at an exact point of
training, so the tests of killed and resumed runs do not depend on timing.

``MOLT_TEST_FAULT=WHERE:STEP:SIGNAL[:group]`` chooses the point (no variable: no fault; ``group``: the signal goes
to the whole process group, DataLoader workers included, as Ctrl+C in a terminal does):

* ``save:STEP:SIGNAL``: right after the first checkpoint file of global step ``STEP`` is complete;
* ``val:STEP:SIGNAL``: in the first validation batch run at global step ``STEP``;
* ``train:STEP:SIGNAL``: in the training step that starts at global step ``STEP`` (the batch after ``STEP``
  optimiser steps).

Only the process of global rank 0 signals itself (DDP workers started by Lightning run this script too).
"""
import os
import signal
import sys


def install(spec: str) -> None:
    where, step, name, *group = spec.split(":")
    step = int(step)

    def _signal_self(name: str) -> None:
        if group:
            os.killpg(os.getpgid(0), getattr(signal, name))
        else:
            os.kill(os.getpid(), getattr(signal, name))
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    import molt.app.train as train

    done = []
    if where == "save":
        save = train.AtomicCheckpointIO.save_checkpoint

        def save_then_signal(self, checkpoint, path, storage_options=None):
            save(self, checkpoint, path, storage_options)
            if checkpoint["global_step"] == step and not done:
                done.append(path)
                _signal_self(name)
        train.AtomicCheckpointIO.save_checkpoint = save_then_signal
    elif where in ("val", "train"):
        hook = "validation_step" if where == "val" else "training_step"
        original = getattr(train.LitAudioVisual, hook)

        def step_then_signal(self, batch, batch_idx):
            if self.global_step == step and not done:
                done.append(batch_idx)
                _signal_self(name)
            return original(self, batch, batch_idx)
        setattr(train.LitAudioVisual, hook, step_then_signal)
    else:
        raise SystemExit(f"MOLT_TEST_FAULT: unknown point {where!r}")


if __name__ == "__main__":
    if os.environ.get("MOLT_TEST_FAULT"):
        install(os.environ["MOLT_TEST_FAULT"])
    from molt.app.cli import main

    sys.exit(main(sys.argv[1:]))
