"""One mesh across processes (`ttjax launch`, mesh.processes): the same greedy tokens as one process, each process
holding its share of the weights, and a lost process named by the survivors within the heartbeat timeout.

Every launch here starts real processes on 127.0.0.1 that join through jax.distributed (gloo collectives over TCP)
and run the shipped SmolLM2's first two layers (conftest's first_two_layers: which tokens each split of the mesh gives
is the question, not what 30 layers answer; each process compiles in seconds).
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mesh import processes
from model.tools.cli import main
from model.tools.launch import free_port, local_devices_for, lost_process

PROMPT = "The three primary colors are"
NEW_TOKENS = 6
HEARTBEAT_S = 5


def ttjax(*argv, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.tools.cli", *argv], capture_output=True, text=True, timeout=timeout, **kw)


def generate_args(model, mesh, *extra):
    return ["generate", "--model", model, "--prompt", PROMPT, "--max-new-tokens", str(NEW_TOKENS), "--json", "--mesh", mesh, *extra]


def in_process(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def launched(model, mesh, *extra) -> dict:
    run = ttjax("launch", "--num-processes", "2", "--", *generate_args(model, mesh, *extra))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[Gloo]" not in run.stderr, run.stderr[-3000:]  # a mesh that works says nothing of its connections
    return json.loads(run.stdout)  # one object: only process 0 prints


@pytest.fixture(scope="module")
def two_by_four(first_two_layers):
    return launched(first_two_layers, "2x4")


@pytest.fixture(scope="module")
def single(first_two_layers):
    """One device, no mesh: the tokens every mesh must give."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["generate", "--model", first_two_layers, "--prompt", PROMPT, "--max-new-tokens", str(NEW_TOKENS), "--json"]) == 0
    return json.loads(out.getvalue())


def test_a_2x4_mesh_over_two_processes_generates_the_tokens_of_one_process(two_by_four, single, first_two_layers, capsys):
    one_process = in_process(capsys, *generate_args(first_two_layers, "2x4"))
    assert len(two_by_four["tokens"]) == NEW_TOKENS  # the first from prefill, the rest from decode steps
    assert two_by_four["tokens"] == one_process["tokens"] == single["tokens"]
    assert two_by_four["mesh"] == "2x4"


def test_a_1x8_mesh_as_two_1x4_halves_with_a_paged_cache(single, first_two_layers, capsys):
    across = launched(first_two_layers, "1x8", "--paged")
    one_process = in_process(capsys, *generate_args(first_two_layers, "1x8", "--paged"))
    assert across["kv_cache"] == "paged"
    assert across["tokens"] == one_process["tokens"] == single["tokens"]


def test_each_process_holds_its_share_of_the_weights(two_by_four):
    share = two_by_four["weight_bytes"] / 2
    held = [p["weight_bytes"] for p in two_by_four["processes"]]
    assert [p["process"] for p in two_by_four["processes"]] == [0, 1]
    assert all(abs(h - share) <= 0.01 * share for h in held), (held, share)
    # and no process holds as much as the whole placed model
    assert all(h < two_by_four["weight_bytes"] for h in held)


def _join(process_id: int, port: int, *argv) -> subprocess.Popen:
    """One process of a run across hosts, as each host would start it."""
    cmd = [sys.executable, "-m", "model.tools.cli", "launch", "--num-processes", "2", "--coordinator", f"127.0.0.1:{port}",
           "--process-id", str(process_id), "--heartbeat-timeout", str(HEARTBEAT_S), "--", *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_output(proc: subprocess.Popen, timeout: float) -> str:
    """The first bytes process 0 streams (decode has begun), reading its stdout as it comes."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and len(seen.split()) < 3:
        try:
            seen += os.read(fd, 4096).decode(errors="replace")
        except BlockingIOError:
            pass
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    assert len(seen.split()) >= 3, f"no tokens streamed within {timeout} s"
    return seen


def test_killing_a_process_mid_decode_stops_the_survivor_naming_it(first_two_layers):
    port = free_port()
    argv = ["generate", "--model", first_two_layers, "--prompt", PROMPT, "--max-new-tokens", "400", "--mesh", "2x4",
            "--no-compile-cache"]
    survivor, victim = _join(0, port, *argv), _join(1, port, *argv)
    try:
        _wait_for_output(survivor, timeout=300)  # tokens are streaming: the processes are in decode
        victim.send_signal(signal.SIGKILL)  # its launcher; the process it runs dies with it
        killed = time.monotonic()
        _, err = survivor.communicate(timeout=HEARTBEAT_S + 60)
        took = time.monotonic() - killed
    finally:
        for p in (survivor, victim):
            if p.poll() is None:
                p.kill()
    assert survivor.returncode != 0
    assert "process 0 of 2" in err and "lost process 1" in err, err[-3000:]
    assert f"no heartbeat for {HEARTBEAT_S} s" in err
    assert took < HEARTBEAT_S + 30, took  # the timeout, plus one heartbeat period and a loaded CI machine's slack


def test_a_process_that_fails_stops_the_others_at_once_naming_its_error(first_two_layers):
    """A checkpoint missing on one host: that process fails, and the other stops at once with its reason rather
    than waiting in a collective."""
    port = free_port()
    args = ["generate", "--prompt", PROMPT, "--max-new-tokens", "4", "--mesh", "2x4", "--no-compile-cache"]
    good, bad = _join(0, port, *args, "--model", first_two_layers), _join(1, port, *args, "--model", "/nonexistent/model.gguf")
    try:
        _, err = good.communicate(timeout=300)
        bad_err = bad.communicate(timeout=60)[1]
    finally:
        for p in (good, bad):
            if p.poll() is None:
                p.kill()
    assert bad.returncode == 2 and "checkpoint path /nonexistent/model.gguf does not exist" in bad_err
    assert good.returncode != 0
    assert "process 1 of 2 failed: --model: checkpoint path /nonexistent/model.gguf does not exist" in err, err[-3000:]


def test_a_mesh_that_leaves_out_a_process_is_refused(first_two_layers):
    run = ttjax("launch", "--num-processes", "2", "--local-devices", "4", "--", *generate_args(first_two_layers, "1x4"))
    assert run.returncode != 0
    assert "a 1x4 mesh uses 4 devices, but the 2 processes hold 8 (4 each)" in run.stderr
    no_mesh = ttjax("launch", "--num-processes", "2", "--local-devices", "2", "--", "generate", "--prompt-ids", "1,2", "--json")
    assert no_mesh.returncode != 0 and no_mesh.stdout == ""
    assert "this process is one of 2 (ttjax launch), which run one mesh together; give --mesh spanning all their devices (4" in no_mesh.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["launch", "--", "generate"], "ttjax launch needs --num-processes"),
        (["launch", "--num-processes", "0", "--", "generate"], "--num-processes 0 is outside 1..1024"),
        (["launch", "--num-processes", "3", "--", "generate", "--mesh", "1x8"], "--mesh 1x8 has 8 devices, which do not divide over 3 processes"),
        (["launch", "--num-processes", "2"], "ttjax launch needs a command after --"),
        (["launch", "--num-processes", "2", "--", "launch"], "ttjax launch cannot launch itself"),
        (["launch", "--num-processes", "2", "--process-id", "0", "--", "generate"], "--process-id 0 joins a run started elsewhere; it needs --coordinator"),
        (["launch", "--num-processes", "2", "--process-id", "2", "--coordinator", "h:1", "--", "generate"],
         "--process-id 2 is outside 0..1, the 2 processes."),
        (["launch", "--num-processes", "2", "--coordinator", "nohost", "--", "generate"], "--coordinator: coordinator address 'nohost' is not HOST:PORT"),
        (["launch", "--num-processes", "2", "--heartbeat-timeout", "0", "--", "generate"], "--heartbeat-timeout 0 must be a whole number of seconds, at least 1."),
    ],
)
def test_bad_launches_are_one_sentence(argv, message, capsys, monkeypatch):
    for name in (processes.ENV_NUM_PROCESSES, processes.ENV_PROCESS_ID, processes.ENV_COORDINATOR):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_the_environment_places_a_process():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:5701", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3",
           "TTJAX_LOCAL_DEVICES": "8", "TTJAX_HEARTBEAT_TIMEOUT": "20"}
    group = processes.from_env(env)
    assert (group.coordinator, group.num_processes, group.process_id, group.local_devices) == ("10.0.0.1:5701", 4, 3, 8)
    assert group.heartbeat_timeout == 20 and group.collective_timeout == processes.DEFAULT_COLLECTIVE_S
    assert processes.from_env(group.environ()) == group
    assert processes.from_env({}) is None
    with pytest.raises(processes.TTJaxError, match="JAX_PROCESS_ID=.x. is not an integer"):
        processes.from_env({**env, "JAX_PROCESS_ID": "x"})
    with pytest.raises(processes.TTJaxError, match="JAX_COORDINATOR_ADDRESS is not"):
        processes.from_env({"JAX_NUM_PROCESSES": "2"})
    assert local_devices_for(["generate", "--mesh", "8x4"], 4) == 8
    assert local_devices_for(["generate", "--mesh=2x4"], 2) == 4
    assert local_devices_for(["comm-report"], 2) == 1


def test_jax_reports_of_a_lost_process_in_one_phrase():
    group = processes.ProcessGroup("10.0.0.1:5701", 3, 0, heartbeat_timeout=7)
    unhealthy = ("F1203 20:30:48.673162   29223 client.h:80] Terminating process because the JAX distributed service detected "
                 "fatal errors. absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n2\n")
    assert lost_process(unhealthy, group).startswith("it lost process 2: no heartbeat for 7 s")
    gone = ("F1203 20:38:11.333196 30488 client.h:80] Terminating process ... Failed to send RPC to coordination service. "
            "Either the leader task was preempted...\n")
    assert lost_process(gone, group) == "it lost process 0, whose coordinator at 10.0.0.1:5701 stopped answering"
    never = ("F1203 22:11:02.314204    7676 client.h:80] Terminating process because the JAX distributed service detected fatal "
             "errors.\n\nRPC: /xla.coordination.CoordinationService/RegisterTask\n*** Check failure stack trace: ***\n")
    assert lost_process(never, group).startswith("it could not join the mesh: the coordinator at 10.0.0.1:5701")


def test_comm_report_on_a_mesh_across_processes_is_the_one_process_report(capsys):
    argv = ["comm-report", "--mesh", "2x4", "--mode", "decode", "--n-layers", "2", "--json"]
    run = ttjax("launch", "--num-processes", "2", "--", *argv)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout) == in_process(capsys, *argv)


def test_chat_input_is_read_by_process_0_and_shared(first_two_layers):
    run = ttjax("launch", "--num-processes", "2", "--", "python", "demos/chat.py", "--model", first_two_layers, "--mesh", "1x2",
                "--max-new-tokens", "4",
                input="What is the capital of France?\n\n", cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("bot>") == 1 and run.stdout.count("you>") == 2  # one turn, then the empty line ends it


SCRIPT = os.path.join(os.path.dirname(__file__), "multiprocess_script.py")


def test_a_process_stuck_with_its_heartbeats_going_is_named_after_the_collective_timeout():
    start = time.monotonic()
    run = ttjax("launch", "--num-processes", "2", "--local-devices", "2", "--collective-timeout", "4", "--", "python", SCRIPT, "hang",
                timeout=120)
    took = time.monotonic() - start
    assert run.returncode != 0
    assert "ttjax (process 0 of 2): waited 4 s at step 5" in run.stderr and "process 1 is at step 5, not waiting on the mesh" in run.stderr, run.stderr
    assert took < 60, took


def test_work_a_process_marks_as_working_is_no_fault():
    run = ttjax("launch", "--num-processes", "2", "--local-devices", "2", "--collective-timeout", "3", "--", "python", SCRIPT, "slow",
                timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == "done\n"  # process 0's; process 1 prints nothing
