"""`ttjax launch`: one mesh across processes, started here or joined from another host.

    ttjax launch --num-processes 2 [--local-devices 4] -- generate --mesh 2x4 --prompt "..."
    ttjax launch --num-processes 2 --coordinator HOST0:5701 --process-id 1 -- generate --mesh 2x4 ...

Without --process-id it starts all N processes on this machine (the coordinator on 127.0.0.1 at a free port unless
--coordinator names one) and watches them: it ends when they all have, with the first failure's exit status. With
--process-id (or JAX_PROCESS_ID) it runs that one process of a run spread over hosts, each host starting its own
with the same --coordinator (process 0's address) and --num-processes. Either way the launcher supervises: when a
process ends on JAX's report of a lost peer (an abort and a C++ stack), it says in one line which process was lost
and keeps the report in a file. What follows `--` is a ttjax subcommand
(generate, comm-report, ...) or any command (`python demos/demo.py --mesh 2x4`), run in every process with
mesh.processes' environment variables set; each process joins the mesh when the command starts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from mesh import parse_mesh_shape, processes
from mesh.device import MAX_MESH_DEVICES
from model.errors import ConfigError, naming

POLL_S = 0.1


def free_port() -> int:
    """A TCP port free on this machine now, for the coordinator of a local run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_devices_for(command: list[str], num_processes: int) -> int:
    """Each process's share of the command's --mesh (1 without one)."""
    mesh = next((command[i + 1] for i, a in enumerate(command[:-1]) if a == "--mesh"), None)
    mesh = mesh or next((a.split("=", 1)[1] for a in command if a.startswith("--mesh=")), None)
    if mesh is None:
        return 1
    rows, cols = parse_mesh_shape(mesh)
    if (rows * cols) % num_processes:
        raise ConfigError(f"--mesh {mesh} has {rows * cols} devices, which do not divide over {num_processes} processes.")
    return rows * cols // num_processes


def command_line(command: list[str], subcommands) -> list[str]:
    """The argv a process runs: a ttjax subcommand through this Python, `python ...` through this Python, anything
    else as given."""
    if not command:
        raise ConfigError("ttjax launch needs a command after --, e.g. -- generate --mesh 2x4 --prompt-ids 1,2,3.")
    if command[0] == "launch":
        raise ConfigError("ttjax launch cannot launch itself; give the subcommand each process runs.")
    if command[0] in subcommands:
        return [sys.executable, "-m", "model.tools.cli", *command]
    if command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    if shutil.which(command[0]) is None:
        raise ConfigError(f"{command[0]!r} is neither a ttjax subcommand ({', '.join(subcommands)}) nor a program on PATH.")
    return command


def _env_int(name: str):
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    if not text.lstrip("-").isdigit():
        raise ConfigError(f"{name}={text!r} is not an integer.")
    return int(text)


def group_for(opts, command: list[str], process_id: int) -> processes.ProcessGroup:
    return processes.ProcessGroup(
        coordinator=opts.coordinator,
        num_processes=opts.num_processes,
        process_id=process_id,
        local_devices=opts.local_devices or local_devices_for(command, opts.num_processes),
        heartbeat_timeout=opts.heartbeat_timeout,
        collective_timeout=opts.collective_timeout,
    )


def run(opts, subcommands) -> int:
    command = opts.argv[1:] if opts.argv[:1] == ["--"] else list(opts.argv)
    if opts.num_processes is None:
        opts.num_processes = _env_int(processes.ENV_NUM_PROCESSES)
    if opts.num_processes is None:
        raise ConfigError(f"ttjax launch needs --num-processes (or {processes.ENV_NUM_PROCESSES}).")
    if not 1 <= opts.num_processes <= MAX_MESH_DEVICES:
        raise ConfigError(f"--num-processes {opts.num_processes} is outside 1..{MAX_MESH_DEVICES} (each process holds at "
                          "least one device of the mesh).")
    # Each value names where it came from, the flag or the scheduler's environment variable.
    coordinator_from = "--coordinator" if opts.coordinator else processes.ENV_COORDINATOR
    opts.coordinator = opts.coordinator or os.environ.get(processes.ENV_COORDINATOR)
    process_from = "--process-id" if opts.process_id is not None else processes.ENV_PROCESS_ID
    process_id = opts.process_id if opts.process_id is not None else _env_int(processes.ENV_PROCESS_ID)
    if opts.local_devices is not None and opts.local_devices < 1:
        raise ConfigError(f"--local-devices {opts.local_devices} must be at least 1.")
    if opts.heartbeat_timeout < 1:
        raise ConfigError(f"--heartbeat-timeout {opts.heartbeat_timeout} must be a whole number of seconds, at least 1.")
    if not opts.collective_timeout > 0:  # also refuses nan
        raise ConfigError(f"--collective-timeout {opts.collective_timeout} must be more than 0 seconds.")
    argv = command_line(command, subcommands)
    if process_id is not None:  # one process of a run across hosts
        if not 0 <= process_id < opts.num_processes:
            raise ConfigError(f"{process_from} {process_id} is outside 0..{opts.num_processes - 1}, the {opts.num_processes} processes.")
        if opts.coordinator is None:
            raise ConfigError(f"{process_from} {process_id} joins a run started elsewhere; it needs --coordinator HOST:PORT "
                              f"(process 0's), or {processes.ENV_COORDINATOR}.")
        ids = [process_id]
    else:
        opts.coordinator = opts.coordinator or f"127.0.0.1:{free_port()}"
        ids = list(range(opts.num_processes))
    with naming(coordinator_from):
        groups = [group_for(opts, command, i) for i in ids]
    return watch([Member(argv, {**os.environ, **g.environ()}, g.process_id, g) for g in groups])


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# The start of JAX's report when its coordination service ends a process (an absl log line from the coordination
# client or service); from there on the process only dies, so its stderr is held back and summed up in one line.
JAX_REPORT = re.compile(r"^[EF]\d{4} .*(coordination_service|client\.h)")
UNHEALTHY = re.compile(r"unhealthy \(stopped sending heartbeats\):\s*([\d,\s]+)")
# gloo (JAX's CPU collectives across processes) reports every connection it makes on stderr: "[Gloo] Rank 0 is
# connected to 1 peer ranks. ..."; a mesh that works says nothing.
GLOO_CHATTER = re.compile(r"^\[Gloo\] ")


def lost_process(report: str, group: processes.ProcessGroup) -> str:
    """Which process a JAX report says was lost, and how, in words."""
    found = UNHEALTHY.search(report)
    if found:
        ids = ", ".join(found.group(1).split())
        return (f"it lost process {ids}: no heartbeat for {group.heartbeat_timeout} s (--heartbeat-timeout); "
                "that process died, froze or lost its network")
    if "RegisterTask" in report:
        return (f"it could not join the mesh: the coordinator at {group.coordinator} did not take it in time (process 0 "
                "must run there, and every process must start with the same --num-processes)")
    if "coordination service" in report or "Socket closed" in report or "leader task" in report:
        return f"it lost process 0, whose coordinator at {group.coordinator} stopped answering"
    first = next((line for line in report.splitlines() if line[:1] in "EF"), report.strip().splitlines()[0] if report.strip() else "")
    return "JAX ended it: " + first.split("] ", 1)[-1][:200]


class Member:
    """One process of the mesh, run as a child: its stdout passes through; its stderr is forwarded line by line
    until JAX's end-of-process report starts, which is kept (in a file) and summed up when the process ends."""

    def __init__(self, argv, env, index: int, group: processes.ProcessGroup):
        self.index, self.group = index, group
        self.held: list[str] = []
        # Only process 0 reads input (it hands each line to the others: mesh.processes.read_input).
        stdin = None if index == 0 else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=env, stdin=stdin, stderr=subprocess.PIPE, text=True, errors="replace",
                                     preexec_fn=_die_with_parent)
        self.reader = threading.Thread(target=self._forward, daemon=True)
        self.reader.start()

    def _forward(self):
        for line in self.proc.stderr:
            if self.held or JAX_REPORT.match(line):
                self.held.append(line)
            elif GLOO_CHATTER.match(line):
                continue
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def failure(self, code: int) -> str:
        """One line for a process that ended with code != 0."""
        self.reader.join(timeout=5)
        n = self.group.num_processes
        line = f"ttjax launch: process {self.index} of {n} (pid {self.proc.pid}) {_describe(code)}"
        if not self.held:
            return line + "."
        report = "".join(self.held)
        with tempfile.NamedTemporaryFile("w", prefix=f"ttjax-process{self.index}-", suffix=".log", delete=False) as f:
            f.write(report)
        return f"{line}: {lost_process(report, self.group)} (JAX's report: {f.name})."


def _die_with_parent():
    """A process of a local run ends with its launcher (Linux's parent-death signal), never left running alone."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def watch(members: list[Member]) -> int:
    """Wait for every process, naming each that fails as it does. The first failure's exit status is the launch's;
    any process still running long after it (past the heartbeat and collective timeouts) is ended."""
    group = members[0].group
    failed_at, status = None, 0
    grace = group.heartbeat_timeout + group.collective_timeout + 5
    named = set()
    try:
        while True:
            codes = [m.proc.poll() for m in members]
            for m, code in zip(members, codes):
                if code not in (None, 0) and m.index not in named:
                    named.add(m.index)
                    print(m.failure(code), file=sys.stderr, flush=True)
                    if failed_at is None:
                        failed_at, status = time.monotonic(), code if code > 0 else 128 - code
            if all(c is not None for c in codes):
                break
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for m in members:
                    if m.proc.poll() is None:
                        print(f"ttjax launch: process {m.index} still runs {grace:.0f} s after the first failure; ending it.",
                              file=sys.stderr, flush=True)
                        m.proc.kill()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for m in members:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGINT)
        for m in members:
            m.proc.wait()
        return 130
    for m in members:
        m.reader.join(timeout=5)
    return status


def add_parser(sub, subcommands) -> None:
    """The launch subcommand, beside subcommands (the names it runs through ttjax)."""
    la = sub.add_parser("launch", help="run a ttjax command on one mesh across processes (here, or one of a run across hosts)")
    la.add_argument("--num-processes", type=int, default=None, help=f"processes in the mesh (or ${processes.ENV_NUM_PROCESSES})")
    la.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                    help=f"process 0's address (or ${processes.ENV_COORDINATOR}; default for a local run: 127.0.0.1 and a free port)")
    la.add_argument("--local-devices", type=int, default=None, help="host devices per process (default: the command's --mesh over the processes)")
    la.add_argument("--process-id", type=int, default=None,
                    help=f"join as this one process of a run across hosts (or ${processes.ENV_PROCESS_ID}); default: start all here")
    la.add_argument("--heartbeat-timeout", type=int, default=processes.DEFAULT_HEARTBEAT_S,
                    help="seconds without a sign of life from a process before the others stop, naming it (default 10)")
    la.add_argument("--collective-timeout", type=float, default=processes.DEFAULT_COLLECTIVE_S,
                    help="seconds a process may wait for a result while a peer makes no progress (default 30)")
    la.add_argument("argv", metavar="command", nargs=argparse.REMAINDER, help="-- then the ttjax subcommand (or command) every process runs")
    la.set_defaults(subcommands=tuple(subcommands))
