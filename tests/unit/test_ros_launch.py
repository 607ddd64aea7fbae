"""The graph description feeds both the pip runner and the ros2 launch files; the runner supervises
processes (prefixed logs, restarts, killed-node reports, clean shutdown without orphans).
No rclpy needed: launch/launch_ros are replaced by small fakes with the real API surface."""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from hil_robot.config import ConfigError, load_config
from hil_robot.launch import launch as launch_cmd
from hil_robot.launch.plan import ProcessSpec, format_param, node_plan
from hil_robot.launch.supervisor import Supervisor, describe_exit

REPO = Path(__file__).resolve().parents[2]


def test_graph_config_and_plan():
    cfg = load_config(["graph=sim_pick_cube", "sim.image_height=64"])
    specs = node_plan(cfg, ["sim.image_height=64"])
    names = [s.name for s in specs]
    assert names == ["sim_driver", "policy_server", "policy_bridge", "teleop", "controller", "recorder"]
    drv = specs[0]
    assert drv.is_ros_node and drv.required and drv.restart == "never"
    assert drv.arguments == ("sim.image_height=64",)
    assert "-p" in drv.ros_args() and "mode:='realtime'" in drv.ros_args()
    server = specs[1]
    assert not server.is_ros_node and server.command("py") == ["py", "-m", "hil_robot", "serve-policy", "sim.image_height=64"]
    rec = [s for s in specs if s.name == "recorder"][0]
    assert rec.parameters["store_path"] == "runs/sim_pick_cube/ros_episodes"  # interpolation resolved
    cmd = drv.command("py")
    assert cmd[:4] == ["py", "-m", "hil_robot_ros", "sim_driver"] and "__node:=sim_driver" in cmd


def test_graph_validation_names_the_key():
    with pytest.raises(ConfigError, match="executable"):
        load_config(["graph=sim_pick_cube", "graph.nodes.sim_driver.executable=nope"])
    with pytest.raises(ConfigError, match="restart"):
        load_config(["graph=sim_pick_cube", "graph.nodes.recorder.restart=sometimes"])
    cfg = load_config(["graph=sim_pick_cube", "graph.nodes.teleop.enabled=false"])
    assert "teleop" not in [s.name for s in node_plan(cfg)]


def test_format_param_yaml():
    assert format_param(True) == "true" and format_param(3) == "3" and format_param(2.5) == "2.5"
    assert format_param("10") == "'10'" and format_param([1, 2]) == "[1, 2]" and format_param("it's") == "'it''s'"


# ----------------------------------------------------------------------------- fake launch / launch_ros


class _FakeContext:
    def __init__(self, args):
        self.launch_configurations = dict(args)


def _install_fake_launch(monkeypatch):
    """Minimal stand-ins for launch / launch_ros that record how they were called."""
    launch = types.ModuleType("launch")
    actions = types.ModuleType("launch.actions")
    subs = types.ModuleType("launch.substitutions")
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")

    class LaunchDescription:
        def __init__(self, initial_entities=None):
            self.entities = list(initial_entities or [])

    class DeclareLaunchArgument:
        def __init__(self, name, *, default_value=None, description=""):
            self.name, self.default_value, self.description = name, default_value, description

    class OpaqueFunction:
        def __init__(self, *, function, args=None, kwargs=None):
            self.function, self.args, self.kwargs = function, args or [], kwargs or {}

        def execute(self, context):
            return self.function(context, *self.args, **self.kwargs)

    class LaunchConfiguration:
        def __init__(self, variable_name, *, default=None):
            self.name = variable_name

        def perform(self, context):
            return context.launch_configurations[self.name]

    class ExecuteProcess:
        def __init__(self, *, cmd, name=None, output="log", respawn=False, respawn_delay=None, respawn_max_retries=-1,
                     **kw):
            assert not kw, f"ExecuteProcess got unexpected arguments {sorted(kw)}"
            self.cmd, self.name, self.respawn, self.respawn_max_retries = cmd, name, respawn, respawn_max_retries

    class Node(ExecuteProcess):
        def __init__(self, *, executable, package=None, name=None, namespace=None, parameters=None,
                     remappings=None, arguments=None, **kw):
            super().__init__(cmd=[executable], name=name, **kw)
            self.package, self.executable, self.namespace = package, executable, namespace
            self.parameters, self.remappings, self.arguments = parameters, remappings, arguments

    launch.LaunchDescription = LaunchDescription
    actions.DeclareLaunchArgument, actions.OpaqueFunction, actions.ExecuteProcess = (
        DeclareLaunchArgument, OpaqueFunction, ExecuteProcess)
    subs.LaunchConfiguration = LaunchConfiguration
    ros_actions.Node = Node
    launch.actions, launch.substitutions, launch_ros.actions = actions, subs, ros_actions
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
                      "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize("graph", ["sim_pick_cube", "real_franka", "real_ur"])
def test_launch_files_derive_nodes_from_the_graph(monkeypatch, graph):
    _install_fake_launch(monkeypatch)
    path = REPO / "launch" / f"{graph}.launch.py"
    compile(path.read_text(), str(path), "exec")
    ld = runpy.run_path(str(path))["generate_launch_description"]()
    arg, opaque = ld.entities
    assert arg.name == "overrides" and arg.default_value == ""
    overrides = "sim.image_height=64 control.obs_max_age_s=0.5"
    actions = opaque.execute(_FakeContext({"overrides": overrides}))
    full = [f"graph={graph}", *overrides.split()]
    expected = node_plan(load_config(full), full)
    assert [a.name for a in actions] == [s.name for s in expected]
    for act, spec in zip(actions, expected):
        if spec.is_ros_node:
            assert act.package == "hil_robot_ros" and act.executable == spec.executable
            assert act.parameters == ([spec.parameters] if spec.parameters else [])
            assert act.arguments == list(spec.arguments) and act.respawn == (spec.restart != "never")
            if act.respawn:
                assert act.respawn_max_retries == spec.max_restarts
        else:
            assert act.cmd == ["hil-robot", *spec.arguments]


def test_ament_package_installs_the_launch_files():
    pkg = REPO / "ros2_ws" / "src" / "hil_robot_ros"
    assert (pkg / "launch").resolve() == (REPO / "launch").resolve()
    assert "<build_type>ament_python</build_type>" in (pkg / "package.xml").read_text()
    setup = (pkg / "setup.py").read_text()
    assert "share/\" + package_name + \"/launch" in setup and (pkg / "resource" / "hil_robot_ros").exists()
    from hil_robot.config.graph import ROS_EXECUTABLES

    for node in ROS_EXECUTABLES:
        assert (pkg / "hil_robot_ros" / "nodes" / f"{node}.py").exists(), node


def test_cli_dry_run_and_missing_graph(capsys):
    assert launch_cmd(["sim_pick_cube", "dry_run=true", "sim.image_height=64", "--ros-args", "-p", "x:=1"]) == 0
    out = capsys.readouterr().out
    assert "sim_driver:" in out and "graph=sim_pick_cube sim.image_height=64" in out and "x:=1" not in out
    with pytest.raises(ConfigError, match="graphs: .*sim_pick_cube"):
        launch_cmd([])


# ----------------------------------------------------------------------------- supervisor

CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    name = sys.argv[1]
    if name == "parent":  # spawns a grandchild that must not outlive the graph
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", g.pid, flush=True)
    if name == "crasher":
        print("crashing", flush=True); sys.exit(3)
    print("hello from", name, flush=True)
    while True:
        time.sleep(0.05)
""")


def _spec(name, restart="on-failure", max_restarts=3, required=False):
    return ProcessSpec(name=name, executable="process", arguments=(name,), parameters={}, remappings=(),
                       namespace="", restart=restart, max_restarts=max_restarts, required=required)


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_supervisor_prefixes_restarts_reports_kill_and_leaves_no_orphans(tmp_path):
    out = io.StringIO()
    sup = Supervisor([_spec("parent"), _spec("worker", restart="always", max_restarts=1),
                      _spec("crasher", restart="on-failure", max_restarts=1)],
                     dict(os.environ), restart_delay_s=0.1, shutdown_timeout_s=2.0, out=out,
                     command_for=lambda s: [sys.executable, "-c", CHILD, *s.arguments], log_dir=str(tmp_path))
    sup.start()
    try:
        assert _wait(lambda: "grandchild" in out.getvalue())
        grandchild = int(out.getvalue().split("grandchild ")[1].split()[0])
        worker_pid = sup.pid("worker")
        os.kill(worker_pid, signal.SIGKILL)
        assert _wait(lambda: (sup.poll(), any(e.kind == "started" and e.node == "worker" for e in sup.events[3:]))[1])
        assert _wait(lambda: (sup.poll(), any(e.kind == "gave_up" and e.node == "crasher" for e in sup.events))[1])
    finally:
        sup.shutdown()
    text = out.getvalue()
    assert "[parent " in text and "hello from parent" in text
    assert "worker: exited (killed by SIGKILL)" in text and "worker: restarting (1/1" in text
    assert text.count("crashing") == 2 and "crasher: gave_up (after 1 restarts)" in text
    assert (tmp_path / "crasher.log").read_text().count("crashing") == 2
    assert _wait(lambda: not _alive(grandchild), 5.0), "grandchild outlived the graph"
    for child in sup.children:
        assert child.proc.poll() is not None


def test_required_node_death_stops_the_graph():
    out = io.StringIO()
    sup = Supervisor([_spec("crasher", restart="never", required=True), _spec("worker")], dict(os.environ),
                     shutdown_timeout_s=2.0, out=out,
                     command_for=lambda s: [sys.executable, "-c", CHILD, *s.arguments])
    t0 = time.monotonic()
    assert sup.run(duration_s=20.0, poll_s=0.05) == 1
    assert time.monotonic() - t0 < 10.0 and sup.failed_required == "crasher"
    assert "required node is gone" in out.getvalue() and sup.children[1].proc.poll() is not None


def test_a_finished_required_node_waits_the_grace_only_for_others():
    """A required one-shot node that exits 0 ends the graph: alone (a run's controller phase) at
    once; beside other nodes after ``finish_grace_s``, so they can take its last messages."""
    def graph(*specs):
        sup = Supervisor(list(specs), dict(os.environ), shutdown_timeout_s=2.0, out=io.StringIO(),
                         command_for=lambda s: [sys.executable, "-c", "import sys; sys.exit(0)"] if s.name == "oneshot"
                         else [sys.executable, "-c", CHILD, *s.arguments])
        sup.finish_grace_s = 1.5
        t0 = time.monotonic()
        assert sup.run(duration_s=20.0, poll_s=0.05) == 0
        return sup, time.monotonic() - t0

    alone, t_alone = graph(_spec("oneshot", restart="never", required=True))
    beside, t_beside = graph(_spec("oneshot", restart="never", required=True), _spec("worker"))
    assert "required node finished" in alone.out.getvalue() and "required node finished" in beside.out.getvalue()
    assert t_beside >= 1.5 and t_beside - t_alone > 1.0, (t_alone, t_beside)
    assert beside.children[1].proc.poll() is not None  # the other node was stopped after the grace


def test_describe_exit():
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(2) == "exited with code 2"
