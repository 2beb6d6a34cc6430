"""Submitit launchers whose requeued jobs continue from their own last checkpoint.

hydra-submitit-launcher requeues a pre-empted or timed-out job with the overrides it started with,
so by itself the job trains again from step 0. These launchers add `resume=auto` to a requeued
job's overrides once the job has a checkpoint of its own; its run directory is fixed by the job's
number and values (`hydra.sweep.subdir`), so `resume=auto` finds RUN_DIR/ckpts/last.ckpt there.
Used by `hydra/launcher=slurm` and `hydra/launcher=slurm_local`. Hydra instantiates launchers from
the `hydra_plugins` namespace only, hence this package's place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig

RESUME_KEYS = ("resume", "+resume", "++resume", "~resume")


def requeue_overrides(overrides: Sequence[str], run_dir: str | Path) -> list[str]:
    """A requeued job's overrides: `resume=auto` in place of any `resume` once RUN_DIR has its own
    last checkpoint (a `resume=` of another run's checkpoint only seeds the first attempt); the
    overrides as they were before that."""
    if not (Path(run_dir) / "ckpts" / "last.ckpt").is_file():
        return list(overrides)
    return [o for o in overrides if o.split("=", 1)[0] not in RESUME_KEYS] + ["resume=auto"]


try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher, LocalLauncher, SlurmLauncher
except ImportError:  # hydra-submitit-launcher (a core dependency) is absent: Hydra's plugin scan still imports this
    pass
else:

    class _ResumeOnRequeue(BaseSubmititLauncher):
        def checkpoint(self, sweep_overrides: Sequence[str], *args: Any, **kwargs: Any) -> Any:
            # Called by submitit inside the job on the pre-emption/time-out signal, while the job's
            # Hydra config (its run directory) is current.
            run_dir = HydraConfig.get().runtime.output_dir
            return super().checkpoint(requeue_overrides(sweep_overrides, run_dir), *args, **kwargs)

    class ResumingSlurmLauncher(_ResumeOnRequeue, SlurmLauncher):
        """`SlurmLauncher` whose requeued jobs resume (see the module docstring)."""

    class ResumingLocalLauncher(_ResumeOnRequeue, LocalLauncher):
        """`LocalLauncher` (submitit's local executor) whose requeued jobs resume: the SLURM path on
        one machine."""
