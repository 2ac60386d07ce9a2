"""The only modules that wrap raystream's plain classes in Ray are this one, :mod:`engine.pool`
and :mod:`engine.client`.

* :class:`RaySender` — the channel transport between nodes (and the fallback): one Ray actor
  call per send, items are Arrow RecordBatches plus piggybacked control events; credits are
  the unacknowledged calls. Executors on the same node use
  :class:`~engine.socket_channels.SocketSender` (a Unix domain socket) instead.
* :class:`TaskActor` — a :class:`~engine.executor.TaskExecutor` as a Ray actor, with
  :class:`RayTransport` (tasks of the same actor exchange data in process, others through
  RaySender) and :class:`RayMessenger` (checkpoint acks to the job master actor).
  :class:`TaskRef` addresses one hosted task.
* :class:`JobMasterActor` — the thin actor around the plain :class:`~engine.master.JobMaster`,
  with :class:`RayExecutorRuntime` (start, call, kill task executors).
* :func:`ensure_ray` — starts the embedded local Ray (dashboard off) when none is connected.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
import os
import re
import threading
import time
from collections import deque
from typing import Any, Collection, Iterable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .channels import Cancelled, ChannelSender
from .errors import ConfigError, RaystreamError
from .executor import TaskExecutor
from .executors import Executor, ExecutorLost, ExecutorRuntime, TaskCallFailed
from .master import JobMaster
from .socket_channels import ChannelServer, SocketSender

__all__ = ["ensure_ray", "auth_hint", "auth_token_source", "check_cluster", "connected_cluster", "is_auth_error",
           "prepare_cluster_auth", "refuse_dashboard_address", "RaySender", "TaskActor", "TaskRef", "RayMessenger", "RayTransport", "RayExecutorRuntime",
           "JobMasterActor", "start_executors", "kill_quietly", "NAMESPACE", "MASTER_PREFIX", "EXECUTOR_PREFIX",
           "TASK_GC_THRESHOLD", "tune_task_gc", "PROBE_PREFIX", "write_storage_probe", "storage_probe_seen",
           "delete_storage_probe"]

log = logging.getLogger(__name__)
_started_here = False


def auth_token_source() -> str | None:
    """Where a Ray cluster authentication token is available to this process, or None:
    ``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return path if os.path.isfile(path) else None


def prepare_cluster_auth() -> None:
    """Before connecting to a running cluster: a plain ``ray start --head`` of the Ray that
    pip installs enables *token authentication*, while a client speaks it only with
    ``RAY_AUTH_MODE=token``. When the user has not chosen a mode and a token is at hand, use
    it (a token-mode client also connects to clusters without authentication)."""
    if os.environ.get("RAY_AUTH_MODE") or auth_token_source() is None:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import: refresh it so this process speaks token auth now
        import ray._raylet as raylet

        raylet.Config.initialize("")  # type: ignore[attr-defined]  # what Ray's _enable_token_auth does; not in its stubs
    except Exception:  # noqa: BLE001 - another Ray version: the environment variable is all it reads
        log.debug("could not refresh Ray's config after enabling token auth", exc_info=True)


def auth_hint(address: str | None) -> str:
    """What to do when connecting to ``address`` failed and authentication may be the cause."""
    source = auth_token_source()
    mode = os.environ.get("RAY_AUTH_MODE") or "unset"
    if mode.lower() == "disabled":  # no token was sent, whatever this machine holds
        token = (f"raystream then connects with the token from {source}" if source is not None else
                 "and set RAY_AUTH_TOKEN=<token>, the token `ray get-auth-token` prints on the head node")
        return (
            f"this process has RAY_AUTH_MODE=disabled, so it sends no token, and a cluster started with plain "
            f"`ray start --head` requires one: unset RAY_AUTH_MODE (or set RAY_AUTH_MODE=token) for this "
            f"process, {token}; or start the cluster with RAY_AUTH_MODE=disabled"
        )
    if source is None:
        have = "this machine has no token (no $RAY_AUTH_TOKEN, no ~/.ray/auth_token)"
    else:
        have = f"the token from {source} was used (RAY_AUTH_MODE={mode}); it may not be this cluster's"
    return (
        f"if the cluster at {address!r} was started with plain `ray start --head`, it requires token "
        f"authentication and {have}: run `ray get-auth-token` on the head node and set RAY_AUTH_TOKEN=<token> "
        "(or write it to ~/.ray/auth_token) here; or start the cluster with RAY_AUTH_MODE=disabled"
    )


#: seconds :func:`check_cluster` waits for its connection attempt (a refusal takes ~1 s)
AUTH_CHECK_TIMEOUT_S = 10.0


def check_cluster(address: str, source: str | None = None) -> None:
    """Fail at once when nothing answers at the cluster address ``address`` or the cluster
    refuses this process's credentials (``source``: the environment variable the address came
    from, for the message).

    ``ray.init`` retries: a refused connection for about 20 s (logging a warning each second),
    an address where nothing answers for many minutes (about 40 s per attempt), and then raises
    a ConnectionError that does not say why. A TCP connection tells the second apart in at most
    3 s, and one connection attempt of Ray's GCS client the first in about a second. Addresses
    that cannot be checked this way (``ray://``, an ``auto`` with no cluster recorded) are left
    to ``ray.init``.

    Raises:
        ConfigError: nothing answers at the address, or the cluster refused the token (or the
            lack of one).
    """
    refuse_dashboard_address(address, source)
    if "://" in address:
        return
    try:
        import ray._private.services as services

        gcs = services.canonicalize_bootstrap_address(address)
        host, _, port = (gcs or "").rpartition(":")
        if not host or not port.isdigit():
            return
    except Exception:  # noqa: BLE001 - an address Ray resolves otherwise (or not at all): ray.init says so
        log.debug("could not resolve %r before connecting", address, exc_info=True)
        return
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        via = f" (from ${source})" if source else ""
        fix = f"; or unset {source} to run on a private local Ray" if source else ""
        resolved = f" ({gcs})" if gcs != address else ""
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}{via}{resolved}: {exc}; is it running? (`ray start "
            f"--head` starts one, `ray status` checks it){fix}") from None
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # not in Ray's stubs

        outcome: list[BaseException | None] = []

        def connect() -> None:  # connects, as ray.init's first attempt does
            try:
                GcsClient(address=gcs).cluster_id  # noqa: B018
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append(exc)

        # (a port that is no GCS keeps the client waiting ~40 s: then ray.init decides)
        probe = threading.Thread(target=connect, name="ray-auth-check", daemon=True)
        probe.start()
        probe.join(AUTH_CHECK_TIMEOUT_S)
        if outcome and outcome[0] is not None:
            raise outcome[0]
    except Exception as exc:  # noqa: BLE001 - only an authentication failure is decided here
        if is_auth_error(exc):
            reason = str(exc).split(".", 1)[0]
            raise ConfigError(f"the Ray cluster at {address!r} refused this client: authentication failed "
                              f"({reason}); {auth_hint(address)}") from None
        log.debug("could not check authentication with %r before connecting", address, exc_info=True)


def refuse_dashboard_address(address: str | None, source: str | None = None) -> None:
    """Refuse an ``http(s)://`` address for a driver's connection: it is a Ray dashboard's (the
    Job Submission API, what ``ray job submit`` and ``raystream submit`` take, often left in
    ``$RAY_ADDRESS`` for them), not a cluster a process can attach to. ``ray.init`` failed on it
    with a traceback and advice about ``RAY_ADDRESS`` even when the address came from elsewhere.

    Example:
        >>> refuse_dashboard_address("10.0.0.5:6379")
        >>> refuse_dashboard_address("http://10.0.0.5:8265")
        Traceback (most recent call last):
        ...
        raystream.engine.errors.ConfigError: 'http://10.0.0.5:8265' is the address of a Ray dashboard (its Job Submission API), which a driver cannot attach to: attach with the cluster's GCS address HOST:PORT (port 6379 unless `ray start --port` said otherwise; `ray status` on the head shows it), or auto on a node of the cluster; or submit the job through the dashboard: `raystream submit JOB --address http://10.0.0.5:8265`

    Raises:
        ConfigError: ``address`` is an HTTP address (``source``: the environment variable it
            came from, named in the message with how to run on a private local Ray instead).
    """
    if not address or not address.lower().startswith(("http://", "https://")):
        return
    via = f" (from ${source})" if source else ""
    local = f"; or unset {source} to run on a private local Ray" if source else ""
    raise ConfigError(
        f"{address!r}{via} is the address of a Ray dashboard (its Job Submission API), which a driver cannot attach "
        f"to: attach with the cluster's GCS address HOST:PORT (port 6379 unless `ray start --port` said otherwise; "
        f"`ray status` on the head shows it), or auto on a node of the cluster; or submit the job through the "
        f"dashboard: `raystream submit JOB --address {address}`{local}")


def is_auth_error(exc: BaseException) -> bool:
    """Does ``exc`` (from ray.init or the Job Submission client) report an authentication failure?"""
    text = f"{type(exc).__name__}: {exc}"
    return any(w in text for w in ("Authentication", "InvalidAuthToken", "Unauthenticated", "Unauthorized"))


#: system config of the embedded local Ray: a channel send (Arrow batches, often 0.1-4 MB)
#: goes inline with its actor call instead of through the object store, where a 182 KB send
#: cost the sender, the raylet and the receiver ~2.5x the CPU of the inline call (issue 15,
#: benchmarks/RESULTS.md); a user's own ``_system_config`` replaces it
_LOCAL_SYSTEM_CONFIG = {"max_direct_call_object_size": 4 * 1024 * 1024}


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect to Ray.

    * ``address`` given (``"auto"``, ``"HOST:PORT"``, ``"ray://host:10001"``), or
      ``$RAYSTREAM_ADDRESS``, or ``$RAY_ADDRESS`` (set by Ray for the driver of a submitted
      Ray job): attach to that cluster, with its token authentication when a token is at hand.
    * otherwise: the already-initialized Ray, else a **private** embedded local Ray (dashboard
      off) that raystream starts and stops: never a cluster that ``ray start`` happened to
      leave running on this machine (pass ``address="auto"`` to attach to that one).

    Thread-safe: the jobs that threads of one process submit at the same time share one
    connection (two ``ray.init`` calls at once started two local Rays and failed with Ray's
    "Perhaps you called ray.init twice by accident?").
    """
    with _init_lock:
        _ensure_ray(address, init_kwargs)


#: one connection attempt at a time per process (see :func:`ensure_ray`)
_init_lock = threading.Lock()


def _ensure_ray(address: str | None, init_kwargs: dict[str, Any]) -> None:
    global _started_here
    if ray.is_initialized():
        check_same_cluster(address)
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    kwargs.update(init_kwargs)
    source = None
    if address is None:
        source = next((v for v in ("RAYSTREAM_ADDRESS", "RAY_ADDRESS") if os.environ.get(v)), None)
        address = os.environ[source] if source else None
    try:
        if address and address != "local":
            kwargs.pop("num_cpus", None)
            kwargs.pop("include_dashboard", None)
            prepare_cluster_auth()
            check_cluster(address, source)
            ray.init(address=address, **kwargs)
        else:
            kwargs.setdefault("_system_config", dict(_LOCAL_SYSTEM_CONFIG))
            _start_local_ray(kwargs)
            _started_here = True
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}; {auth_hint(address)}") from exc


def _start_local_ray(kwargs: dict[str, Any]) -> None:
    """``ray.init(address="local", **kwargs)``, from a thread that lives as long as the process.

    Ray starts the processes of a local Ray (GCS, raylet, ...) with ``PR_SET_PDEATHSIG``, and
    Linux sends that signal when the *thread* that started them ends, not the process: the
    first job of a process submitted from a worker thread (a web server's request thread, a
    ``ThreadPoolExecutor``, a notebook's background thread) had its Ray killed as soon as
    that thread ended, and the next job failed or the process ended with "Failed to connect
    to GCS within 60 seconds". The main thread lives as long as the process and starts it
    itself (Ray then also sets its SIGTERM handler); any other thread has a daemon thread
    start it and stay (idle) for the rest of the process."""
    if threading.current_thread() is threading.main_thread():
        ray.init(address="local", **kwargs)
        return
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def own() -> None:
        try:
            ray.init(address="local", **kwargs)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            outcome.append(exc)
        started.set()
        if outcome[0] is None:
            threading.Event().wait()  # the Ray processes' "parent": never ends before the process

    threading.Thread(target=own, name="raystream-local-ray", daemon=True).start()
    started.wait()
    if outcome[0] is not None:
        raise outcome[0]


def check_same_cluster(address: str | None) -> None:
    """In a process already connected to Ray, an explicit ``HOST:PORT`` address of another
    cluster is an error (Ray keeps one connection per process): never silently use the one
    that is connected.

    Both the host and the port count (before 2026-12-07 only the port did: a second cluster on
    another host at the same port, 6379 for every ``ray start --head`` by default, was taken
    for the connected one and the job ran there silently); a host names this machine as its
    loopback names and Ray's node IP of it do.

    Raises:
        ConfigError: ``address`` names a GCS other than the connected cluster's.
    """
    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - cannot tell: keep the connection
        return
    if not gcs:
        return
    connected_host, _, connected_port = gcs.rpartition(":")
    host, _, port = address.rpartition(":")
    if port != connected_port or not (_host_addresses(host) & _host_addresses(connected_host)):
        raise ConfigError(
            f"this process is already connected to {connected_cluster()}, not to {address!r}; Ray "
            "keeps one cluster connection per process: run this in a new process (or ray.shutdown() first)"
        )


def _host_addresses(host: str) -> set[str]:
    """The IP addresses ``host`` names, those of this machine (loopback, Ray's node IP) as
    ``"this machine"``; an unresolvable name stands for itself."""
    import ipaddress
    import socket

    host = host.strip("[]")
    try:
        ips = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return {host}
    try:
        node_ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - then only loopback addresses count as this machine's
        node_ip = None
    out = set()
    for ip in ips:
        try:
            loopback = ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        out.add("this machine" if loopback or ip == node_ip else ip)
    return out


def connected_cluster() -> str:
    """A short description of the Ray cluster this process is connected to (for errors)."""
    if not ray.is_initialized():
        return "no Ray cluster (not connected)"
    try:
        ctx = ray.get_runtime_context()
        gcs = getattr(ctx, "gcs_address", None) or ray.get_runtime_context().worker.node.address
    except Exception:  # noqa: BLE001 - best effort, only for a message
        gcs = "?"
    kind = "raystream's embedded local Ray" if _started_here else "the Ray cluster"
    return f"{kind} at {gcs}"


class RaySender(ChannelSender):
    """Channel transport over Ray actor calls (``TaskActor.push``)."""

    transport = "ray"

    def __init__(self, channel_index: int, window: int | None, actor: Any, task_ref: list) -> None:
        super().__init__(channel_index, window)
        self._push = actor.push  # bound once: a TaskRef builds a method object per lookup
        self._pending: deque = deque()
        self._task_ref = task_ref  # [Task] once known: used to notice cancellation

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self._pending.append(self._push.remote(self.channel_index, seq, items))
        if self.window is None and len(self._pending) >= 64:
            # feedback channels never wait for credits; still drop acknowledged refs
            pending = list(self._pending)
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
            if ready:
                self._reap(ready)

    def _reap(self, ready: list) -> None:
        ready_set = set(ready)
        self._pending = deque(r for r in self._pending if r not in ready_set)
        delivered = ray.get(ready)  # surfaces a dead consumer as an exception
        if False in delivered:
            # the consumer's executor no longer hosts it: released after this sender's attempt
            # failed (a live attempt's consumers are set up before any task runs)
            task = self._task_ref[0] if self._task_ref else None
            if task is not None and task.cancelled:
                raise Cancelled()
            raise RaystreamError(
                f"channel {self.channel_index}: the consumer task is no longer hosted by its executor "
                "(its attempt was released); this sender belongs to an attempt that ended"
            )
        self._acked(len(ready))

    def _wait_for_credit(self) -> None:
        while True:
            pending = list(self._pending)
            if not pending:
                self.metrics.in_flight = 0
                return
            ready, _ = ray.wait(pending, num_returns=1, timeout=0.1)
            if ready:
                more, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                self._reap(more or ready)
                return
            task = self._task_ref[0] if self._task_ref else None
            if task is not None and task.cancelled:
                raise Cancelled()


class RayMessenger:
    """:class:`~engine.executor.Messenger` over Ray actor calls to the job master actor."""

    def __init__(self, master: Any) -> None:
        self.master = master

    def send(self, method: str, *args: Any) -> Any:
        return getattr(self.master, method).remote(*args)

    def pending(self, calls: list) -> list:
        _, pending = ray.wait(calls, num_returns=len(calls), timeout=0)
        return pending

    def wait_all(self, calls: list, timeout_s: float) -> list:
        _, pending = ray.wait(calls, num_returns=len(calls), timeout=timeout_s)
        return pending


#: the parts of a vertex's setup payload (its operators; its pickled chain and source) from
#: this size on go through the object store once per job (:meth:`RayExecutorRuntime.share`);
#: smaller ones ride in each setup call
SHARED_MIN_BYTES = 1 << 20


class RayTransport:
    """:class:`~engine.executor.Transport` of a TaskActor: tasks of this actor are local;
    tasks of executors on this node are reached over their Unix domain socket
    (:class:`~engine.socket_channels.SocketSender`, with ``channel_transport="auto"``), others
    with :class:`RaySender` (also the fallback when a socket cannot be connected)."""

    def __init__(self) -> None:
        self.me = ray.get_runtime_context().get_actor_id()
        self._node = ray.get_runtime_context().get_node_id()
        self.server: ChannelServer | None = None  # this executor's listener (TaskActor sets it)
        #: actor id -> (node id, socket path or None) of the executors targets live in
        self._addresses: dict[str, tuple[str, str | None]] = {}

    def local_deliver(self, executor: TaskExecutor, target: TaskRef) -> Any:
        return executor.deliver_to(target.key) if target.actor_id == self.me else None

    async def fetch(self, shared: Any) -> bytes:
        if isinstance(shared, ray.ObjectRef):
            return await shared
        return shared

    async def prepare_targets(self, targets: list[Any], channel_transport: str) -> None:
        """Ask every executor among ``targets`` not asked before where it listens (one
        ``channel_address`` call per executor, concurrently); an executor that does not answer
        is reached with Ray calls (which then report it as they do)."""
        if channel_transport != "auto":
            return
        actors: dict[str, Any] = {}
        for t in targets:
            if isinstance(t, TaskRef) and t.actor_id != self.me and t.actor_id not in self._addresses:
                actors.setdefault(t.actor_id, t.actor)
        if not actors:
            return
        replies = await asyncio.gather(*(a.channel_address.remote() for a in actors.values()), return_exceptions=True)
        for actor_id, reply in zip(actors, replies):
            if isinstance(reply, BaseException):
                log.debug("executor %s did not tell its channel socket: %s", actor_id, reply)
                continue  # not cached: asked again by the next setup
            self._addresses[actor_id] = reply

    def remote_sender(self, channel_index: int, window: int | None, target: Any, task_ref: list,
                      channel_transport: str = "auto") -> ChannelSender:
        if channel_transport == "auto" and isinstance(target, TaskRef):
            node, path = self._addresses.get(target.actor_id, ("", None))
            if path is not None and node == self._node:
                try:
                    return SocketSender(channel_index, window, path, target.key, task_ref)
                except OSError as exc:
                    log.warning("channel %d: cannot connect to %s (%s); using Ray actor calls", channel_index, path, exc)
        return RaySender(channel_index, window, target, task_ref)

    def messenger(self, master: Any) -> RayMessenger:
        return RayMessenger(master)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


#: young-generation threshold of the cyclic garbage collector in a task actor's process
#: (CPython's default: 700 net container allocations). See :func:`tune_task_gc`.
TASK_GC_THRESHOLD = 50_000


def tune_task_gc() -> None:
    """Raise the young-generation threshold of this process's garbage collector to
    :data:`TASK_GC_THRESHOLD` (the older generations' thresholds are kept).

    A task allocates containers in bursts (a batch of 8192 records, their tuples, the lists
    of a dispatcher's queues) that mostly die by reference count. At the default threshold
    of 700 net allocations such a burst triggers young collections that traverse the large
    young lists, promote live ones and, every 100 young collections, a full collection that
    traverses every queued record (~70 ms each in a stateful-functions task). Measured on the
    statefun counter workload (1M messages on Ray, gc callbacks in the task actors): p=1
    0.82 s of GC in 6.7 s of task CPU (2196 young, 200 middle, 5 full collections) -> 0.10 s
    (5 young); p=2 1.32-1.40 s over both actors -> 0.19 s. Cyclic garbage is still collected,
    only later: at most ~50,000 container objects wait for the next young collection.
    ``gc.freeze()`` after the task setup was measured as well and did not help (the frozen
    heap was ~90k objects; the full collections are dominated by queued records, and with a
    smaller counted heap they ran 2-3x as often).

    Only called in a task actor's own process (:class:`TaskActor`); the in-process runtime
    leaves the driver's settings alone.

    Example:
        >>> import gc
        >>> before = gc.get_threshold()
        >>> tune_task_gc(); gc.get_threshold()[0] >= TASK_GC_THRESHOLD
        True
        >>> gc.set_threshold(*before)
    """
    young, middle, old = gc.get_threshold()
    if young < TASK_GC_THRESHOLD:
        gc.set_threshold(TASK_GC_THRESHOLD, middle, old)


#: Ray's task events of raystream's actors (``@ray.remote(enable_task_events=...)``). Off: Ray records no task
#: event of their calls in the GCS (as Ray Serve does for its proxies and replicas). Every
#: checkpoint makes several calls (triggers, acks, completions), and the GCS kept an event of
#: each, up to Ray's 100,000 (``RAY_task_events_max_num_task_in_gcs``): the GCS process grew
#: by ~43 MB a minute under a p=2 job with 80 ms checkpoints (soak), now ~1.5 MB a minute. Their
#: calls then do not show in ``ray list tasks`` or the dashboard's task views.
TASK_EVENTS = False


@ray.remote(num_cpus=0, enable_task_events=TASK_EVENTS)  # type: ignore[call-overload]  # (not in Ray's stubs)
class TaskActor(TaskExecutor):
    """A :class:`~engine.executor.TaskExecutor` as a Ray actor (see there); tasks of
    different actors exchange data over the actor's Unix domain socket
    (:class:`~engine.socket_channels.ChannelServer`) when on the same node, else through
    :class:`RaySender`."""

    def __init__(self) -> None:
        transport = RayTransport()
        super().__init__(transport)
        tune_task_gc()
        self._channel_server: ChannelServer | None = None
        try:
            self._channel_server = transport.server = ChannelServer(self.consumer)
        except OSError as exc:  # no socket here: senders to this executor use Ray calls
            log.warning("task executor cannot listen on a Unix domain socket (%s); channels to it use Ray calls", exc)
        else:
            atexit.register(self._channel_server.close)
        # The mailbox threads (not the event loop) call ray.wait/ray.get on channel acks;
        # Ray's "blocking get inside async actor" warning does not apply to them.
        import ray._private.worker as _worker

        _worker.blocking_get_inside_async_warned = True

    async def channel_address(self) -> tuple[str, str | None]:
        """``(node id, path of this executor's channel socket or None)``: a sender on the
        same node connects there instead of calling :meth:`push`."""
        server = self._channel_server
        return self.transport.node_id(), server.path if server is not None else None

    async def close_channels(self) -> None:
        """Stop listening for channel connections and remove the socket file (the executor
        is being shut down; also done at process exit)."""
        if self._channel_server is not None:
            self._channel_server.close()

    async def storage_probe_seen(self, backend: Any, location: Any, name: str) -> tuple[str, bool | None]:
        """``(this executor's node, whether it sees the file name at the base of checkpoint
        storage location)``: the job master wrote that file on its node, so False says that
        this node has a directory of its own there (:func:`storage_probe_seen`)."""
        return self.transport.node_id(), await asyncio.to_thread(storage_probe_seen, backend, location, name)

    def _not_clean(self) -> None:
        """Handed back to the worker pool but not clean after the grace period (a thread of
        the last job still runs): end this actor, so that nobody lends it again. The pool
        still lists it until the next deployment onto it finds it dead and replaces it
        (as for any executor that dies while idle)."""
        log.warning("task executor (pid %d) is not clean after its job, ending it; threads left: %s",
                    os.getpid(), [t.name for t in threading.enumerate() if t.name.startswith("raystream-")])
        if self._channel_server is not None:
            self._channel_server.close()
        ray.actor.exit_actor()


#: the name of the file :func:`write_storage_probe` writes at the base of checkpoint storage
#: starts with this (the driver removes it once the executors looked for it)
PROBE_PREFIX = "_raystream-probe-"


def _probe_path(backend: Any, location: Any, name: str) -> tuple[Any, str] | None:
    """The ``pyarrow.fs`` filesystem of checkpoint storage ``location`` (as
    ``enable_checkpointing(checkpoint_dir=)`` takes it, opened by the state ``backend``) and the
    path of the file ``name`` at its base; None for storage that is no filesystem."""
    storage = backend.open_storage(location)
    fs, base = getattr(storage, "filesystem", None), getattr(storage, "base_path", None)
    if fs is None or not isinstance(base, str):
        return None
    return fs, f"{base.rstrip('/')}/{name}" if base else name


def write_storage_probe(backend: Any, location: Any, name: str) -> bool:
    """Write the small file ``name`` at the base of checkpoint storage ``location``; False
    when that storage is no filesystem (nothing to check).

    Example:
        >>> import tempfile
        >>> from raystream.engine.state_backend import default_state_backend
        >>> backend, d = default_state_backend(), tempfile.mkdtemp()
        >>> write_storage_probe(backend, d, "_raystream-probe-x"), storage_probe_seen(backend, d, "_raystream-probe-x")
        (True, True)
        >>> delete_storage_probe(backend, d, "_raystream-probe-x"); storage_probe_seen(backend, d, "_raystream-probe-x")
        False
    """
    found = _probe_path(backend, location, name)
    if found is None:
        return False
    fs, path = found
    with fs.open_output_stream(path) as out:
        out.write(name.encode())
    return True


def storage_probe_seen(backend: Any, location: Any, name: str) -> bool | None:
    """Whether the file ``name`` that :func:`write_storage_probe` wrote (on another node) is
    at the base of checkpoint storage ``location`` as this process sees it (None: storage
    that is no filesystem)."""
    import pyarrow.fs as pafs

    found = _probe_path(backend, location, name)
    if found is None:
        return None
    fs, path = found
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def delete_storage_probe(backend: Any, location: Any, name: str) -> None:
    """Remove the file ``name`` (gone already: nothing to do)."""
    found = _probe_path(backend, location, name)
    if found is not None:
        fs, path = found
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


class TaskRef:
    """One task hosted by a :class:`TaskActor`: ``ref.push.remote(*args)`` calls
    ``actor.push.remote(key, *args)``, so callers treat a hosted task like an actor.
    Picklable (it travels to the upstream tasks as their channel target)."""

    __slots__ = ("actor", "key")

    def __init__(self, actor: Any, key: tuple) -> None:
        self.actor = actor
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskRef, (self.actor, self.key))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _BoundMethod(getattr(self.actor, name), self.key)

    @property
    def actor_id(self) -> str:
        return self.actor._actor_id.hex()


class _BoundMethod:
    __slots__ = ("method", "key")

    def __init__(self, method: Any, key: tuple) -> None:
        self.method = method
        self.key = key

    def remote(self, *args: Any) -> Any:
        return self.method.remote(self.key, *args)


# ---------------------------------------------------------------- executors and the job master
NAMESPACE = "raystream"
MASTER_PREFIX = "raystream-master:"
EXECUTOR_PREFIX = "raystream-executor:"


def executor_death(exc: BaseException) -> str:
    """What Ray says of a task executor that died, in one line: the exit type and detail
    without Ray's generic advice (actor id, namespace, OOM-killer hints), for the log line and
    the failure that restart the job.

    Example:
        >>> executor_death(Exception(
        ...     "The actor died unexpectedly before finishing this task.\\n\\tclass_name: TaskActor\\n"
        ...     "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR "
        ...     "Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of "
        ...     "file. Some common causes include: (1) the process was killed by the OOM killer"))
        'its process ended (SYSTEM_ERROR: Worker unexpectedly exits with a connection error code 2. End of file.)'
        >>> executor_death(Exception(
        ...     "The actor died unexpectedly before finishing this task.\\n\\tclass_name: TaskActor\\n\\tip: 10.0.0.7\\n"
        ...     "The actor died because its node has died. Node Id: 760f527cca8404b4146c3c25\\n"
        ...     "\\tthe actor's node was terminated expectedly: received SIGTERM"))
        "its node died (node 760f527c at 10.0.0.7: the actor's node was terminated expectedly: received SIGTERM)"
    """
    text = str(exc)
    node = re.search(r"because its node has died\. Node Id: (\w+)[ \t]*(?:\n\s*(.*?))?\s*$", text, re.S)
    if node is not None:  # (Ray's text of an actor whose node was lost: no exit type)
        ip = re.search(r"^\s*ip: (\S+)", text, re.M)
        where = f"node {node.group(1)[:8]}" + (f" at {ip.group(1)}" if ip is not None else "")
        said = " ".join((node.group(2) or "").split())
        return f"its node died ({where}{': ' + said if said else ''})"
    kind = re.search(r"Worker exit type: (\S+)", text)
    detail = re.search(r"Worker exit detail: (.*?)\s*(?:Some common causes|There are some potential|$)", text, re.S)
    if kind is None:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return first
    said = " ".join(detail.group(1).split()) if detail is not None and detail.group(1) else ""
    return f"its process ended ({kind.group(1)}{': ' + said if said else ''})"


def start_executors(names: dict[str, str], num_cpus: float, placed: Iterable[str | None] = (),
                    avoid: Collection[str] = ()) -> dict[str, Executor]:
    """Create one TaskActor per slot (``{slot: actor name}``); their worker processes start in
    the background.

    Zero-CPU executors (the default) are pinned to the cluster's alive nodes (hard node
    affinity), each to the node with the fewest executors of the job so far, counting
    ``placed`` (the nodes of the executors it already has, e.g. lent by the worker pool), the
    first of the sorted node ids on a tie: round robin over the nodes when nothing is placed
    yet. Ray 2.60 neither honours *soft* node affinity nor SPREAD for zero-resource actors
    (measured on a two-node cluster: whole jobs landed on one node). A node that dies before
    its executor starts fails that executor, and so the attempt, which the restart strategy
    then redeploys on the nodes alive at that time. Executors that reserve CPUs are left to
    Ray's resource-aware SPREAD, which cannot block on a full node.

    Before 2026-12-07 the round robin began at the first node whatever the job already had, so
    a node added to the cluster got no executor of a later job that reused the pool's (a p=3
    job on the two old nodes' idle executors put its new one on an old node, the new node idle;
    ``tests/integration/test_probe_cluster_new_node.py``).

    ``avoid``: nodes where the job's executors were just lost (the job master's restart,
    :meth:`engine.master.JobMaster._recycle`): none is placed there while another alive node
    is (Ray reports a node that died alive until its health checks fail, seconds later, and
    an executor pinned to it hard never starts: the restart failed again, spending the restart
    strategy's attempts). Executors that reserve CPUs then get a soft affinity to the chosen
    node instead of SPREAD, which could pick the lost node."""
    if not names:  # (every slot of a deployment lent: no call to the GCS for the node list)
        return {}
    alive = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    nodes = [n for n in alive if n not in avoid] or alive
    load = dict.fromkeys(nodes, 0)
    for node in placed:
        if node in load:
            load[node] += 1
    out = {}
    for slot, name in names.items():
        node = min(nodes, key=lambda n: load[n]) if nodes else None  # (min keeps the first of equals)
        strategy: Any = "SPREAD"
        if node is not None:
            load[node] += 1
            if len(alive) > 1 and not num_cpus:
                strategy = NodeAffinitySchedulingStrategy(node, soft=False)
            elif len(nodes) < len(alive):
                strategy = NodeAffinitySchedulingStrategy(node, soft=True)
        actor = TaskActor.options(  # type: ignore[attr-defined]  # an ActorClass: see WorkerPool.master
            num_cpus=num_cpus, name=name, namespace=NAMESPACE, max_concurrency=1000, scheduling_strategy=strategy,
        ).remote()
        out[slot] = Executor(actor, name, num_cpus, node)
    return out


def kill_quietly(actors: Any) -> None:
    """``ray.kill`` each actor; ones that are already gone are skipped."""
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass


class RayExecutorRuntime(ExecutorRuntime):
    """The :class:`~engine.executors.ExecutorRuntime` of a job master running as a Ray actor:
    task executors are :class:`TaskActor` actors, calls are Ray actor calls."""

    def start_executors(self, names: dict[str, str], num_cpus: float, placed: Iterable[str | None] = (),
                        avoid: Collection[str] = ()) -> dict[str, Executor]:
        return start_executors(names, num_cpus, placed, avoid)

    def task_handle(self, executor: Any, key: tuple) -> TaskRef:
        return TaskRef(executor, key)

    def master_handle(self) -> Any:
        return ray.get_runtime_context().current_actor

    def share(self, data: bytes) -> Any:
        """One object in the object store for ``data`` of :data:`SHARED_MIN_BYTES` or more
        (owned by this master: freed when the job's payloads are dropped); smaller data
        travels in the setup calls. Four setup calls each carrying 200 MB took 0.87-1.17 s
        here, one ``ray.put`` and four fetches 0.27 s."""
        return ray.put(data) if len(data) >= SHARED_MIN_BYTES else data

    async def wait(self, call: Any) -> Any:
        try:
            return await call
        except ray.exceptions.RayActorError as exc:
            raise ExecutorLost(executor_death(exc)) from exc
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RaystreamError):
                raise cause from None
            raise TaskCallFailed(str(exc)) from exc

    def kill(self, executors: Iterable[Any]) -> None:
        kill_quietly(executors)

    async def kill_and_wait(self, executors: list[Any], timeout_s: float = 30.0) -> None:
        kill_quietly(executors)
        deadline = time.monotonic() + timeout_s
        for actor in executors:
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.wait(actor.pid.remote()), 1.0)
                except Exception:  # noqa: BLE001 - gone (or not answering): it serves no calls
                    break
                await asyncio.sleep(0.05)

    def leftover_executors(self, job_id: str) -> list[Any]:
        prefix = f"raystream-task:{job_id}:"
        found = []
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"] if isinstance(entry, dict) else entry
            if name.startswith(prefix):
                try:
                    found.append(ray.get_actor(name, namespace=NAMESPACE))
                except ValueError:  # gone meanwhile
                    pass
        return found


@ray.remote(num_cpus=0, enable_task_events=TASK_EVENTS)  # type: ignore[call-overload]  # (not in Ray's stubs)
class JobMasterActor:
    """The job master as a named Ray actor: a thin wrapper that forwards every message to a
    plain :class:`~engine.master.JobMaster` (all logic lives there)."""

    def __init__(self) -> None:
        self._master = JobMaster(RayExecutorRuntime())

    async def run(self, graph_blob: bytes, config_blob: bytes, job_id: str | None = None,
                  executors: dict[str, Any] | None = None, recover: bool = False) -> dict:
        return await self._master.run(graph_blob, config_blob, job_id, executors, recover)

    async def job_started(self, job_id: str) -> None:
        """Return once job ``job_id`` has started on this master, or its run ended without
        starting it (its client's ``wait()`` says how). A job has started when its sources'
        splits are planned (the master plans them as it takes the job, before its first
        await): what a source fixes at the job's start (a Redis stream's last entry for
        ``start_id="$"``, a bounded stream's end) is fixed then. The driver's
        ``execute_async()`` returns after it (:func:`engine.client.submit_job`)."""
        if self._master.job_id == job_id:  # running (or ended) here: its run came first
            return
        try:
            await self._master._await_job(job_id, "the start of the job")
        except RaystreamError:  # ended here already, or never started: nothing to wait for
            pass

    async def job_info(self, job_id: str | None = None) -> dict:
        return await self._master.job_info(job_id)

    async def write_storage_probe(self, backend: Any, location: Any, name: str) -> bool:
        """Write the file ``name`` at the base of checkpoint storage ``location`` on this
        master's node (:func:`write_storage_probe`; False: no filesystem to check)."""
        return await asyncio.to_thread(write_storage_probe, backend, location, name)

    async def delete_storage_probe(self, backend: Any, location: Any, name: str) -> None:
        await asyncio.to_thread(delete_storage_probe, backend, location, name)

    async def end_checkpoints(self, job_id: str) -> str | None:
        return await self._master.end_checkpoints(job_id)

    async def metrics(self, job_id: str | None = None) -> dict:
        return await self._master.metrics(job_id)

    async def cancel(self, job_id: str | None = None) -> None:
        await self._master.cancel(job_id)

    async def task_actor_names(self) -> dict[tuple[int, int], str]:
        return await self._master.task_actor_names()

    async def released_executors(self, job_id: str) -> dict[str, str | None]:
        return await self._master.released_executors(job_id)

    async def task_idle(self, attempt: int, vertex_id: int, subtask: int) -> None:
        await self._master.task_idle(attempt, vertex_id, subtask)

    async def acknowledge_checkpoint(self, attempt: int, checkpoint_id: int, vertex_id: int, subtask: int,
                                     state: dict) -> None:
        await self._master.acknowledge_checkpoint(attempt, checkpoint_id, vertex_id, subtask, state)

    async def decline_checkpoint(self, attempt: int, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                                 committables: dict | None = None) -> None:
        await self._master.decline_checkpoint(attempt, checkpoint_id, vertex_id, subtask, reason, committables)

    async def trigger_savepoint(self, path: str, stop: bool = False, job_id: str | None = None) -> str:
        return await self._master.trigger_savepoint(path, stop, job_id)

    async def stop_with_savepoint(self, path: str, job_id: str | None = None) -> str:
        return await self._master.stop_with_savepoint(path, job_id)
