"""The launch files, checked without the launch packages (not installable here): they parse,
start console scripts that exist with files that exist, declare every argument they use, and
the tests start the nodes with the command line they describe."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .launch_spec import (
    LAUNCH_DIR,
    REPO,
    calls,
    keyword,
    mapper_command,
    module_constants,
    node_specs,
    process_specs,
)

LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))


def _console_scripts() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # f"name = {PACKAGE}.module:main"
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if "=" in text:
                scripts.add(text.split("=")[0].strip())
    return scripts


def _string_args(path: Path, func: str) -> list[str]:
    return [c.args[0].value for c in calls(path, func)
            if c.args and isinstance(c.args[0], ast.Constant)]


def test_three_launch_files_exist_and_compile() -> None:
    names = {p.name for p in LAUNCH_FILES}
    assert {"mapping.launch.py", "demo.launch.py", "bag_mapping.launch.py"} <= names
    for path in LAUNCH_FILES:
        compile(path.read_text(), str(path), "exec")
        assert "generate_launch_description" in module_constants(path) or \
            any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
                for n in ast.parse(path.read_text()).body)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_used_argument_is_declared(path: Path) -> None:
    used = set(_string_args(path, "LaunchConfiguration"))
    declared = set(_string_args(path, "DeclareLaunchArgument"))
    assert used <= declared, f"undeclared: {used - declared}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_nodes_and_files_exist(path: Path) -> None:
    constants = module_constants(path)
    scripts = _console_scripts()
    for spec in node_specs(path):
        if spec.executable != "rviz2":
            # ros2 launch finds it in <prefix>/lib/recon_ros (test_colcon_layout.py)
            assert spec.package == constants["PACKAGE"] == "recon_ros", spec
            assert spec.executable in scripts, spec.executable
            assert (Path(sys.executable).parent / spec.executable).is_file(), \
                "run `pip install -e . --no-deps` to create the console scripts"
        else:
            assert spec.package == "rviz2"
    for process in process_specs(path):
        # not a bare name looked up on PATH: colcon installs the scripts in lib/recon_ros
        assert process.package == constants["PACKAGE"] and process.executable in scripts, \
            f"{path.name}: ExecuteProcess starts {process.first}, not ExecutableInPackage"
        assert (Path(sys.executable).parent / process.executable).is_file()
    for name, value in constants.items():
        if name.endswith(("_FILE", "_CONFIG", "_LAUNCH")):
            assert (REPO / value).is_file(), f"{path.name}: {name}={value} does not exist"
            installed = "launch" if value.startswith("launch/") else "config"
            assert value.startswith(f"{installed}/")  # setup.py installs launch/ and config/


def test_included_launch_arguments_are_declared_by_the_mapping_launch() -> None:
    mapping = LAUNCH_DIR / "mapping.launch.py"
    declared = set(_string_args(mapping, "DeclareLaunchArgument"))
    for path in (LAUNCH_DIR / "demo.launch.py", LAUNCH_DIR / "bag_mapping.launch.py"):
        assert module_constants(path)["MAPPING_LAUNCH"] == "launch/mapping.launch.py"
        (include,) = calls(path, "IncludeLaunchDescription")
        args = keyword(include, "launch_arguments")
        keys = {k.value for k in args.func.value.keys}  # {...}.items()
        assert keys <= declared, (path.name, keys - declared)


def test_mapper_node_matches_the_test_command_line() -> None:
    path = LAUNCH_DIR / "mapping.launch.py"
    constants = module_constants(path)
    (mapper,) = [s for s in node_specs(path) if s.executable == constants["MAPPER_EXECUTABLE"]]
    assert mapper.name == constants["MAPPER_NAME"] and mapper.namespace is None
    assert mapper.remappings == []
    # parameters=[params_file, overlay_file, {use_sim_time, cameras}] is what mapper_command
    # turns into --params-file x2, -p use_sim_time, -p cameras
    assert mapper.parameter_items[:2] == ["params_file", "overlay_file"]
    assert mapper.dict_keys == ["use_sim_time", "cameras"]
    cmd = mapper_command(Path(sys.executable).parent, camera="cam", use_sim_time=True)
    assert cmd[1:] == ["--ros-args", "-r", f"__node:={mapper.name}",
                       "--params-file", str(REPO / constants["PARAMS_FILE"]),
                       "--params-file", str(REPO / constants["PARAMS_FILE"]),
                       "-p", "use_sim_time:=true", "-p", "cameras:=[cam]"]
    source = path.read_text()
    assert 'DeclareLaunchArgument("overlay_file", default_value=params_file' in source


def test_demo_camera_namespace_is_the_mapping_default() -> None:
    demo = module_constants(LAUNCH_DIR / "demo.launch.py")
    mapping = LAUNCH_DIR / "mapping.launch.py"
    (camera_arg,) = [c for c in calls(mapping, "DeclareLaunchArgument")
                     if c.args[0].value == "camera"]
    assert keyword(camera_arg, "default_value").value == demo["CAMERA_NAMESPACE"]


def test_only_bag_mapping_starts_a_process_other_than_a_node() -> None:
    assert {p.name for p in LAUNCH_FILES if process_specs(p)} == {"bag_mapping.launch.py"}


def test_bag_player_command_exists() -> None:
    path = LAUNCH_DIR / "bag_mapping.launch.py"
    player = module_constants(path)["PLAYER_COMMAND"]
    assert player[0] in _console_scripts()
    # the launch file runs `<lib/recon_ros>/recon-ros play BAG --rate RATE`, as the bag tests
    (process,) = process_specs(path)
    assert [process.executable, *process.arguments] == [*player, "$(bag)", "--rate", "$(rate)"]
    out = subprocess.run([str(Path(sys.executable).parent / player[0]), *player[1:], "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--rate" in out.stdout, out.stdout + out.stderr


def test_rviz_config_shows_mesh_map_cloud_and_tf() -> None:
    rviz = yaml.safe_load((REPO / "config/recon_ros.rviz").read_text())
    manager = rviz["Visualization Manager"]
    classes = {d["Class"] for d in manager["Displays"]}
    assert {"rviz_default_plugins/MarkerArray", "rviz_default_plugins/Map",
            "rviz_default_plugins/PointCloud2", "rviz_default_plugins/TF"} <= classes
    assert manager["Global Options"]["Fixed Frame"] == "map"
    maps = {d["Topic"]["Value"]: d for d in manager["Displays"]
            if d["Class"] == "rviz_default_plugins/Map"}
    assert set(maps) == {"/map", "/recon_mapper/costmap", "/recon_mapper/local_costmap"}
    assert all(d["Topic"]["Durability Policy"] == "Transient Local" for d in maps.values())
    assert maps["/map"]["Update Topic"]["Value"] == "/map_updates"

