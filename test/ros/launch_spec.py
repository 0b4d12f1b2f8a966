"""What a launch file starts, read from its Python AST (the ``launch`` packages are not
installable here), and the exact command line ``launch_ros`` would run for it."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH_DIR = REPO / "launch"


def module_constants(path: Path) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments of a Python file."""
    tree = ast.parse(path.read_text())
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def calls(path: Path, func: str) -> list[ast.Call]:
    """Every call of ``func(...)`` (by simple name) in a Python file."""
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == func]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def resolve(expr: ast.expr | None, constants: dict[str, Any]) -> Any:
    """A literal, a module constant's value or a constant subscripted by literals
    (``NAME[0]``, ``NAME[1:]``); None for anything else."""
    if expr is None:
        return None
    if isinstance(expr, ast.Name):
        return constants.get(expr.id)
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
        value = constants.get(expr.value.id)
        index = expr.slice
        try:
            if isinstance(index, ast.Slice):
                bounds = [None if b is None else ast.literal_eval(b)
                          for b in (index.lower, index.upper, index.step)]
                return None if value is None else value[slice(*bounds)]
            return None if value is None else value[ast.literal_eval(index)]
        except (ValueError, IndexError, KeyError, TypeError):
            return None
    try:
        return ast.literal_eval(expr)
    except ValueError:
        return None


@dataclass
class NodeSpec:
    """A ``launch_ros.actions.Node`` of a launch file.

    Attributes:
        executable, name: the console script and node name.
        parameter_items: the source text of each ``parameters=[...]`` element.
        dict_keys: keys of the parameter dict(s) in ``parameters``.
        remappings: ``(from, to)`` pairs.
    """

    executable: str
    name: str
    namespace: str | None
    package: str | None = None
    parameter_items: list[str] = field(default_factory=list)
    dict_keys: list[str] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)


def node_specs(path: Path) -> list[NodeSpec]:
    """Every ``Node(...)`` of a launch file with its literal/constant arguments."""
    constants = module_constants(path)
    out = []
    for call in calls(path, "Node"):
        spec = NodeSpec(executable=resolve(keyword(call, "executable"), constants),
                        name=resolve(keyword(call, "name"), constants),
                        namespace=resolve(keyword(call, "namespace"), constants),
                        package=resolve(keyword(call, "package"), constants))
        params = keyword(call, "parameters")
        if isinstance(params, ast.List):
            for item in params.elts:
                spec.parameter_items.append(ast.unparse(item))
                if isinstance(item, ast.Dict):
                    spec.dict_keys += [resolve(k, constants) for k in item.keys if k is not None]
        remaps = resolve(keyword(call, "remappings"), constants)
        spec.remappings = [tuple(r) for r in remaps or []]
        out.append(spec)
    return out


@dataclass
class ProcessSpec:
    """An ``ExecuteProcess`` of a launch file: its ``cmd`` items in order.

    Attributes:
        package, executable: of the ``ExecutableInPackage(executable=..., package=...)`` that
            starts ``cmd`` (None if ``cmd`` does not start with one).
        arguments: the items after it: strings for literals and constants (``*NAME[1:]``
            expanded), ``LaunchConfiguration("x")`` as ``"$(x)"``, None for anything else.
        first: the source text of ``cmd``'s first item.
    """

    package: str | None
    executable: str | None
    arguments: list[str | None]
    first: str


def _cmd_items(expr: ast.expr, constants: dict[str, Any]) -> list[str | None]:
    if isinstance(expr, ast.Starred):
        value = resolve(expr.value, constants)
        return list(value) if isinstance(value, (list, tuple)) else [None]
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and \
            expr.func.id == "LaunchConfiguration" and expr.args and \
            isinstance(expr.args[0], ast.Constant):
        return [f"$({expr.args[0].value})"]
    value = resolve(expr, constants)
    return [value if isinstance(value, str) else None]


def process_specs(path: Path) -> list[ProcessSpec]:
    """Every ``ExecuteProcess(cmd=[...])`` of a launch file."""
    constants = module_constants(path)
    out = []
    for call in calls(path, "ExecuteProcess"):
        cmd = keyword(call, "cmd")
        assert isinstance(cmd, ast.List) and cmd.elts, f"{path.name}: cmd is not a list"
        first, *rest = cmd.elts
        package = executable = None
        if isinstance(first, ast.Call) and isinstance(first.func, ast.Name) and \
                first.func.id == "ExecutableInPackage":
            package = resolve(keyword(first, "package"), constants)
            executable = resolve(keyword(first, "executable"), constants)
        out.append(ProcessSpec(package, executable,
                               [a for item in rest for a in _cmd_items(item, constants)],
                               ast.unparse(first)))
    return out


def mapper_command(venv_bin: Path, overlay: Path | None = None, camera: str = "camera",
                   use_sim_time: bool = False, extra: dict[str, str] | None = None,
                   share: Path = REPO) -> list[str]:
    """The command ``mapping.launch.py`` runs for the mapper (see its docstring): params file
    and overlay (default: the params file again, as the launch file's default), use_sim_time
    and the camera namespace; ``extra`` parameters are appended as ``-p name:=value``
    (test-only speed settings). ``venv_bin`` holds the executable (``<prefix>/lib/recon_ros``
    for an installed package), ``share`` the config files (the installed share directory)."""
    constants = module_constants(LAUNCH_DIR / "mapping.launch.py")
    params = share / constants["PARAMS_FILE"]
    cmd = [str(venv_bin / constants["MAPPER_EXECUTABLE"]), "--ros-args",
           "-r", f"__node:={constants['MAPPER_NAME']}",
           "--params-file", str(params), "--params-file", str(overlay or params),
           "-p", f"use_sim_time:={str(use_sim_time).lower()}", "-p", f"cameras:=[{camera}]"]
    for name, value in (extra or {}).items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def write_overlay(path: Path, values: dict[str, Any]) -> Path:
    """Write flat parameter values as a params file for every node (``/**``), e.g. for the
    launch file's ``overlay_file``; ``section.field`` names become nested mappings, as in
    ``config/mapper.yaml``. Returns ``path``."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        node = nested
        *sections, leaf = name.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    return path


def node_command(venv_bin: Path, spec: NodeSpec, params: dict[str, str]) -> list[str]:
    """The command launch_ros runs for ``spec`` (a ``Node(...)`` without params files), with
    ``params`` given as ``-p name:=value`` (launch writes them to a temporary params file)."""
    cmd = [str(venv_bin / spec.executable), "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        cmd += ["-r", f"__ns:=/{spec.namespace.strip('/')}"]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd
