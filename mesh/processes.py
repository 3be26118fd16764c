"""One mesh across processes: JAX's multi-controller runtime, and a watchdog that turns a lost peer into one sentence.

Every process runs the same program on its own devices; jax.distributed joins them (a coordinator at process 0's
address, CPU collectives over gloo), so jax.devices() lists every process's devices and a MeshDevice spans them all
(2 processes x 4 devices = a 2x4 mesh, process i holding row i). This is the CPU stand-in for tt-metal's multi-host
Galaxy: the same code, the mesh just reaches further.

A process is told its place by environment variables, the ones JAX and cluster launchers use:

    JAX_COORDINATOR_ADDRESS   host:port of process 0 (it serves the coordinator there)
    JAX_NUM_PROCESSES         how many processes form the mesh
    JAX_PROCESS_ID            this process, 0 .. JAX_NUM_PROCESSES - 1
    TTJAX_LOCAL_DEVICES       host devices this process contributes (default 1)
    TTJAX_HEARTBEAT_TIMEOUT   seconds without a sign of life from a peer before this process stops (default 10)
    TTJAX_COLLECTIVE_TIMEOUT  seconds this process may wait for a program's result while a peer makes no
                              progress towards it, before it stops (default 30)

`ttjax launch` sets them (model/tools/launch.py) and supervises each process. Losing a process: JAX's coordinator
(inside process 0) misses its heartbeats for TTJAX_HEARTBEAT_TIMEOUT seconds and ends every other process, which
were blocked in a gloo collective that can never complete; a lost process 0 takes the coordinator with it, and the
others end at once. JAX ends them with an abort and a C++ stack; the launcher reads that report and says in one
line which process was lost. Two things JAX cannot see are watched here, by a thread that stamps this process's key
in the coordinator's key-value store every half second: a process that failed on an error (it says so in its stamp
and the others stop at once, naming it and the error), and a process alive but stuck (heartbeats going, no
progress): each stamp carries how many results the process has read, so one that waits for a result past
TTJAX_COLLECTIVE_TIMEOUT names the peers that never reached that step (time while a peer loads weights or compiles,
marked with working(), does not count).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from dataclasses import dataclass

from mesh.errors import TTJaxError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_LOCAL_DEVICES = "TTJAX_LOCAL_DEVICES"
ENV_HEARTBEAT = "TTJAX_HEARTBEAT_TIMEOUT"
ENV_COLLECTIVE = "TTJAX_COLLECTIVE_TIMEOUT"
DEFAULT_HEARTBEAT_S = 10
DEFAULT_COLLECTIVE_S = 30.0
STAMP_EVERY_S = 0.5
EXIT_PEER_LOST = 1
_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+\s*")


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process sits in a multi-process mesh."""

    coordinator: str  # host:port of process 0
    num_processes: int
    process_id: int
    local_devices: int = 1
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_S  # whole seconds, as JAX takes them
    collective_timeout: float = DEFAULT_COLLECTIVE_S

    def __post_init__(self):
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TTJaxError(f"coordinator address {self.coordinator!r} is not HOST:PORT with a port in 1..65535.")
        if self.num_processes < 1:
            raise TTJaxError(f"the number of processes is {self.num_processes}; it must be at least 1.")
        if not 0 <= self.process_id < self.num_processes:
            raise TTJaxError(f"process id {self.process_id} is outside 0..{self.num_processes - 1}, the {self.num_processes} processes.")
        if self.local_devices < 1:
            raise TTJaxError(f"local devices {self.local_devices} must be at least 1.")
        if isinstance(self.heartbeat_timeout, bool) or not isinstance(self.heartbeat_timeout, int) or self.heartbeat_timeout < 1:
            raise TTJaxError(f"the heartbeat timeout is {self.heartbeat_timeout!r} s; it must be a whole number of seconds, at least 1.")
        if not self.collective_timeout > 0:
            raise TTJaxError(f"the collective timeout is {self.collective_timeout} s; it must be more than 0.")

    def environ(self) -> dict[str, str]:
        """The environment variables that place a process here (what from_env reads)."""
        return {
            ENV_COORDINATOR: self.coordinator,
            ENV_NUM_PROCESSES: str(self.num_processes),
            ENV_PROCESS_ID: str(self.process_id),
            ENV_LOCAL_DEVICES: str(self.local_devices),
            ENV_HEARTBEAT: str(self.heartbeat_timeout),
            ENV_COLLECTIVE: f"{self.collective_timeout:g}",
        }


def _number(environ, name: str, kind, default=None):
    text = environ.get(name)
    if text is None or text == "":
        if default is None:
            raise TTJaxError(f"{name} is not set; a process of a multi-process mesh needs {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}.")
        return default
    try:
        return kind(text)
    except ValueError:
        raise TTJaxError(f"{name}={text!r} is not a{'n integer' if kind is int else ' number'}.") from None


def from_env(environ=None) -> ProcessGroup | None:
    """The group the environment places this process in; None when JAX_NUM_PROCESSES is unset (a process alone)."""
    environ = os.environ if environ is None else environ
    if not environ.get(ENV_NUM_PROCESSES):
        return None
    if not environ.get(ENV_COORDINATOR):
        raise TTJaxError(f"{ENV_NUM_PROCESSES} is set but {ENV_COORDINATOR} is not; give process 0's HOST:PORT.")
    return ProcessGroup(
        coordinator=environ[ENV_COORDINATOR],
        num_processes=_number(environ, ENV_NUM_PROCESSES, int),
        process_id=_number(environ, ENV_PROCESS_ID, int),
        local_devices=_number(environ, ENV_LOCAL_DEVICES, int, 1),
        heartbeat_timeout=_number(environ, ENV_HEARTBEAT, int, DEFAULT_HEARTBEAT_S),
        collective_timeout=_number(environ, ENV_COLLECTIVE, float, DEFAULT_COLLECTIVE_S),
    )


class _State:
    group: ProcessGroup | None = None
    watchdog: Watchdog | None = None


_state = _State()


def initialize(group: ProcessGroup) -> None:
    """Join the mesh: this process's host devices, gloo collectives, jax.distributed, the watchdog. Must run before
    JAX starts its backend (the first device query or computation)."""
    import jax

    if _state.group is not None:
        if _state.group == group:
            return
        raise TTJaxError(f"this process already joined {_state.group}; it cannot join {group} as well.")
    # XLA reads the host device count from XLA_FLAGS when the backend starts: this process's share, not a count
    # inherited from a parent's environment.
    flags = _COUNT_FLAG.sub("", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={group.local_devices}".strip()
    try:
        jax.config.update("jax_num_cpu_devices", group.local_devices)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except RuntimeError as e:
        raise TTJaxError(f"JAX's backend started before this process joined the mesh ({e}); join first.") from None
    join_s = max(60, 4 * group.heartbeat_timeout)  # every process must join within this
    try:
        jax.distributed.initialize(
            group.coordinator, group.num_processes, group.process_id,
            initialization_timeout=join_s,
            heartbeat_timeout_seconds=group.heartbeat_timeout,
            shutdown_timeout_seconds=max(30, 2 * group.heartbeat_timeout),
        )
    except Exception as e:  # noqa: BLE001 - jaxlib's errors for an unreachable coordinator or missing peers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TTJaxError(
            f"process {group.process_id} of {group.num_processes} could not join the mesh at {group.coordinator} within "
            f"{join_s} s (every process must start, with the same --num-processes, and reach process 0's address): {first}"
        ) from None
    _state.group = group
    if group.num_processes > 1:
        _state.watchdog = Watchdog(group, _client())
        _state.watchdog.start()


def _client():
    # jax.distributed keeps its client (whose key-value store the watchdog uses) in its module state; no public
    # accessor exists (jax.experimental.multihost_utils reads it the same way).
    from jax._src import distributed

    return distributed.global_state.client


def join_from_env() -> ProcessGroup | None:
    """initialize(from_env()) when the environment names a group, and from then on only process 0 prints
    (quiet_unless_lead); returns the group (None for a process alone)."""
    group = from_env()
    if group is not None and _state.group is None:
        initialize(group)
        quiet_unless_lead()
    return group


def group() -> ProcessGroup | None:
    return _state.group


def process_id() -> int:
    return 0 if _state.group is None else _state.group.process_id


def is_lead() -> bool:
    """Process 0 prints and reads input; the others run the same programs quietly."""
    return process_id() == 0


def gather(values) -> list[list[int]]:
    """Every process's integers (row i from process i), in every process: a collective, so every process calls it
    at the same point."""
    import numpy as np

    if _state.group is None or _state.group.num_processes == 1:
        return [list(values)]
    from jax.experimental import multihost_utils

    rows = multihost_utils.process_allgather(np.asarray(values, np.int64))
    return np.asarray(rows).reshape(_state.group.num_processes, -1).tolist()


class _Inputs:
    count = 0


def read_input(read):
    """A line of input, read by process 0 (read()) and handed to every other process through the coordinator's
    key-value store, so all of them run the same turn. Without a group, just read()."""
    g = _state.group
    if g is None or g.num_processes == 1:
        return read()
    key = f"ttjax/input/{_Inputs.count}"
    _Inputs.count += 1
    client = _client()
    if g.process_id == 0:
        text = read()
        client.key_value_set(key, text)
        return text
    while True:  # a person may take any time to type: wait in pieces, so the watchdog and heartbeats go on
        try:
            return client.blocking_key_value_get(key, 60_000)
        except Exception as e:  # noqa: BLE001 - a timeout: keep waiting; anything else ends the wait
            if "DEADLINE_EXCEEDED" not in str(e):
                raise


def leave() -> None:
    """Leave the mesh at the end of a run: stop the watchdog (peers leaving is no fault now), then JAX's shutdown
    barrier, so no process tears down the coordinator while another still needs it."""
    if _state.watchdog is not None:
        _state.watchdog.stop()
        _state.watchdog = None
    if _state.group is not None:
        import jax

        jax.distributed.shutdown()
        _state.group = None


@contextlib.contextmanager
def waiting(what: str = "a program's result"):
    """Mark a wait for a result the whole mesh computes (a collective may hold it up): counted as a step, and
    watched against the collective timeout."""
    dog = _state.watchdog
    if dog is None:
        yield
        return
    dog.waiting_since, dog.waiting_for = time.monotonic(), what
    try:
        yield
    finally:
        dog.waiting_since = None
        dog.steps += 1


def fail(message: str) -> None:
    """Tell the peers this process is ending on an error (they stop at once, naming it, instead of waiting out the
    heartbeat timeout)."""
    dog = _state.watchdog
    if dog is not None:
        dog.stop()
        with contextlib.suppress(Exception):
            dog.client.key_value_set(dog.key(dog.group.process_id), "x " + message.replace("\n", " "), allow_overwrite=True)


@contextlib.contextmanager
def working(what: str):
    """Mark long work that is not a wait on the mesh (loading weights, compiling a program): while any process is
    in it, the others' collective-timeout clocks do not run (one host may load or compile slower than another)."""
    dog = _state.watchdog
    if dog is None:
        yield
        return
    with dog.lock:  # the Generator compiles two programs side by side
        dog.working += 1
    try:
        yield
    finally:
        with dog.lock:
            dog.working -= 1


def linger() -> None:
    """After an unexpected error in a process of a mesh, wait one heartbeat timeout before ending: a peer's death
    often reaches this process first as a failed collective (gloo: connection closed), and within that time JAX's
    coordinator reports which peer was lost (ending this process with the report the launcher puts in words)."""
    if _state.group is not None:
        time.sleep(_state.group.heartbeat_timeout + 2 * STAMP_EVERY_S)


def stop_process(message: str) -> None:
    """End this process now with one line on stderr (fd 2, which stays open when Python's streams are quieted)."""
    group = _state.group
    who = f"process {group.process_id} of {group.num_processes}" if group else "this process"
    os.write(2, f"ttjax ({who}): {message}\n".encode())
    os._exit(EXIT_PEER_LOST)


class Watchdog(threading.Thread):
    """Stamps this process's key every STAMP_EVERY_S (its step count, and whether it waits on the mesh) and reads the
    peers'; a peer that failed, or a wait past the collective timeout, ends this process (stop_process) naming who."""

    def __init__(self, group: ProcessGroup, client):
        super().__init__(name="ttjax-watchdog", daemon=True)
        self.group, self.client = group, client
        self.steps = 0
        self.waiting_since: float | None = None
        self.working = 0  # working() sections open, in any thread
        self.lock = threading.Lock()
        self.waiting_for = ""
        self._stop_event = threading.Event()

    def stop(self):
        self._stop_event.set()

    @staticmethod
    def key(pid: int) -> str:
        return f"ttjax/alive/{pid}"

    def run(self):
        g = self.group
        peers = [p for p in range(g.num_processes) if p != g.process_id]
        beat, peers_working_at = 0, 0.0
        while not self._stop_event.wait(STAMP_EVERY_S):
            beat += 1
            try:
                state = "c" if self.working else "w" if self.waiting_since is not None else "b"
                self.client.key_value_set(self.key(g.process_id), f"{beat} {self.steps} {state}", allow_overwrite=True)
                present = dict(self.client.key_value_dir_get("ttjax/alive/"))
            except Exception:  # noqa: BLE001 - the coordinator is gone: JAX's heartbeat ends this process (the launcher names it)
                continue
            stamps = {p: present.get(self.key(p)) for p in peers}
            if self._stop_event.is_set():
                return
            for p, stamp in stamps.items():
                if stamp is not None and stamp.startswith("x "):
                    stop_process(f"process {p} of {g.num_processes} failed: {stamp[2:]}; stopping.")
            now = time.monotonic()
            if any(stamp is not None and stamp.endswith(" c") for stamp in stamps.values()):
                peers_working_at = now  # a peer loads or compiles: waiting for it is no sign of a fault
            since = self.waiting_since
            if since is not None and now - max(since, peers_working_at) > g.collective_timeout:
                stop_process(self._stuck(stamps, now - since))

    def _stuck(self, stamps: dict, waited: float) -> str:
        """Who holds up the step this process waits for: peers that have not reached it, or nobody."""
        behind = []
        for p, stamp in stamps.items():
            if stamp is None:
                behind.append(f"process {p} has not started")
                continue
            _, steps, state = stamp.split()
            if int(steps) < self.steps or (int(steps) == self.steps and state != "w"):
                behind.append(f"process {p} is at step {steps}, not waiting on the mesh")
        where = "; ".join(behind) if behind else "every process is waiting: a collective did not complete"
        return (f"waited {waited:.0f} s at step {self.steps} for {self.waiting_for} (collective timeout "
                f"{self.group.collective_timeout:g} s); {where}; stopping.")


def quiet_unless_lead() -> None:
    """Only process 0 prints. Its native libraries' chatter on fd 1 (gloo announces every connection it makes) goes to
    stderr, so stdout holds the command's output alone (--json stays one object) while Python's sys.stdout keeps
    the original stdout; the other processes' output goes to /dev/null, except fd 2 (stop_process, fatal errors)."""
    sys.stdout.flush()
    if is_lead():
        out = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = os.fdopen(out, "w", buffering=1)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
