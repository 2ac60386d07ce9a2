"""Driver-side handles on running jobs: :class:`JobClient` and :class:`JobResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import uuid

import cloudpickle
import ray

from .errors import JobCancelled, JobFailed, RaystreamError
from .graph import JobGraph
from .master import JobConfig, JobMaster
from .ray_runtime import ensure_ray

__all__ = ["JobClient", "JobResult", "submit_job", "NAMESPACE", "MASTER_PREFIX"]

NAMESPACE = "raystream"
MASTER_PREFIX = "raystream-job:"


@dataclass
class JobResult:
    """The outcome of a finished job.

    Attributes:
        job_id: the job's id.
        metrics: per-operator counters summed over subtasks.
        duration_s: wall time from submission to the end.
        sink_results: per sink uid: what its committer returned (collected batches, files).
    """

    job_id: str
    metrics: dict
    duration_s: float
    sink_results: dict = field(default_factory=dict)

    def records_out(self, operator: str) -> int:
        """Records emitted by ``operator`` over all subtasks."""
        return self.metrics["operators"][operator]["records_out"]


class JobClient:
    """A handle on a submitted job: status, metrics, wait, cancel.

    Example:
        >>> client = env.execute_async("job")          # doctest: +SKIP
        >>> client.status()                             # doctest: +SKIP
        'RUNNING'
        >>> result = client.wait()                      # doctest: +SKIP
    """

    def __init__(self, master: Any, run_ref: Any, name: str) -> None:
        self._master = master
        self._run_ref = run_ref
        self.name = name
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._closed = False

    @property
    def job_id(self) -> str:
        return self.info()["job_id"]

    def info(self) -> dict:
        """Status, attempt, restarts, graph and checkpoint statistics."""
        if self._closed:
            return {"job_id": self._result.job_id if self._result else None, "status": self.status()}
        return ray.get(self._master.job_info.remote())

    def status(self) -> str:
        """``RUNNING``, ``FINISHED``, ``FAILED`` or ``CANCELLED``."""
        if self._result is not None:
            return "FINISHED"
        if isinstance(self._error, JobCancelled):
            return "CANCELLED"
        if self._error is not None:
            return "FAILED"
        return ray.get(self._master.job_info.remote())["status"]

    def metrics(self) -> dict:
        """Per-operator records in/out and per-channel back-pressure counters."""
        if self._result is not None:
            return self._result.metrics
        return ray.get(self._master.metrics.remote())

    def cancel(self) -> None:
        """Cancel the job; ``wait()`` then raises :class:`JobCancelled`."""
        if not self._closed:
            self._master.cancel.remote()

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends; return its result or raise JobFailed / JobCancelled."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        try:
            out = ray.get(self._run_ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            self._error = cause if isinstance(cause, RaystreamError) else JobFailed(str(exc))
            self._close()
            raise self._error from None
        except ray.exceptions.RayActorError as exc:
            self._error = JobFailed(f"the job master of {self.name!r} died: {exc}")
            self._close()
            raise self._error from None
        self._result = JobResult(out["job_id"], out["metrics"], out["duration_s"], out["results"])
        self._close()
        return self._result

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                ray.kill(self._master, no_restart=True)
            except Exception:  # already gone
                pass

    def __repr__(self) -> str:
        return f"JobClient({self.name!r})"


def submit_job(graph: JobGraph, config: JobConfig, address: str | None = None) -> JobClient:
    """Start a job master for ``graph`` and return a client (the job runs asynchronously)."""
    ensure_ray(address)
    try:
        graph_blob = cloudpickle.dumps(graph)
    except Exception as exc:
        raise RaystreamError(f"job {config.name!r} cannot be shipped to Ray: {exc}") from exc
    job_id = f"{config.name}-{uuid.uuid4().hex[:8]}"
    # A named actor in the "raystream" namespace, so the CLI and other drivers can find it.
    master = JobMaster.options(
        max_concurrency=1000, name=f"{MASTER_PREFIX}{job_id}", namespace=NAMESPACE
    ).remote(graph_blob, cloudpickle.dumps(config), job_id)
    run_ref = master.run.remote()
    return JobClient(master, run_ref, config.name)
