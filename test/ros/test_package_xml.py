"""package.xml declares what a ROS install must provide (``rosdep install`` reads it): every
package the code imports and every node the launch files start, the OS Python packages by
their rosdep keys, the pip-only ones named in a comment, and the supported distributions.
Parsed with the standard library; needs no ROS."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET

from .launch_spec import LAUNCH_DIR, REPO, calls, keyword, module_constants, resolve

SOURCES = sorted([*(REPO / "recon_ros").rglob("*.py"), *LAUNCH_DIR.glob("*.launch.py")])
#: Python modules a ROS install gets from the OS, by their rosdep key.
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
               "transforms3d": "python3-transforms3d"}
#: Python modules without a rosdep key: installed with pip, as package.xml's comment says.
PIP_ONLY = {"torch", "open3d", "rosbags", "typer", "rich", "ray"}
#: Declared but neither imported nor started by this package's own code, with the reason.
INDIRECT = {"ament_index_python": "launch_ros's FindPackageShare in the launch files"}


def _manifest() -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    return ET.parse(REPO / "package.xml", parser=parser).getroot()


def _depends(kind: str) -> list[str]:
    return [(e.text or "").strip() for e in _manifest().findall(kind)]


def _comments() -> str:
    return " ".join(e.text or "" for e in _manifest().iter() if e.tag is ET.Comment)


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level modules imported anywhere in the package and the launch files (absolute
    imports, neither the standard library nor recon_ros) -> the files importing them."""
    out: dict[str, list[str]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top != "recon_ros":
                    out.setdefault(top, []).append(str(path.relative_to(REPO)))
    return out


def _started_packages() -> set[str]:
    """ROS packages of the nodes the launch files start (``Node(package=...)``), other than
    this one."""
    packages = set()
    for path in LAUNCH_DIR.glob("*.launch.py"):
        constants = module_constants(path)
        for call in calls(path, "Node"):
            package = resolve(keyword(call, "package"), constants)
            assert package, f"{path.name}: a Node without a literal package"
            packages.add(package)
    return packages - {_manifest().findtext("name")}


def test_every_imported_or_started_package_is_declared() -> None:
    declared = set(_depends("exec_depend"))
    imports = _third_party_imports()
    assert "rclpy" in imports and "launch_ros" in imports  # the scan sees the ROS code
    undeclared = {m: files for m, files in imports.items()
                  if m not in PIP_ONLY and ROSDEP_KEYS.get(m, m) not in declared}
    assert not undeclared, f"import without <exec_depend> in package.xml: {undeclared}"
    assert "rviz2" in _started_packages()
    assert _started_packages() <= declared, _started_packages() - declared
    comment = _comments()
    assert all(m in comment for m in PIP_ONLY), "package.xml's pip-only comment is stale"


def test_every_declared_dependency_is_used() -> None:
    needed = ({ROSDEP_KEYS.get(m, m) for m in _third_party_imports() if m not in PIP_ONLY}
              | _started_packages() | set(INDIRECT))
    declared = _depends("exec_depend")
    assert len(declared) == len(set(declared)), "an <exec_depend> is listed twice"
    assert set(declared) == needed, {"unused": set(declared) - needed,
                                     "missing": needed - set(declared)}


def test_test_and_build_dependencies() -> None:
    assert _depends("test_depend") == ["python3-pytest"]
    assert _depends("buildtool_depend") == ["ament_python"]
    assert _manifest().findtext("export/build_type") == "ament_python"


def test_description_names_the_supported_distributions() -> None:
    description = " ".join((_manifest().findtext("description") or "").split())
    assert "Humble, Jazzy and Kilted" in description, description
