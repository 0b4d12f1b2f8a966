"""The package installed as colcon's ament_python build installs it (colcon itself is not
installable here): ``setup.py`` run with the arguments colcon-core's PythonBuildTask passes
(``egg_info --egg-base B build --build-base B/build install --prefix P --record B/install.log
--single-version-externally-managed``, source dir as cwd, ``PYTHONPATH`` = P's site-packages),
then the ament index finds the package, every file and executable the launch files use is where
``ros2 launch`` looks, and ``recon_mapper`` started from ``P/lib/recon_ros`` runs."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROS_SKIP_REASON
from .launch_spec import LAUNCH_DIR, REPO, mapper_command, module_constants, node_specs, \
    process_specs

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

PACKAGE = "recon_ros"
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))


@dataclass
class Installed:
    prefix: Path
    site_packages: Path
    env: dict[str, str]  # AMENT_PREFIX_PATH and PYTHONPATH as after sourcing setup.bash


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("colcon_ws")
    build, prefix = root / "build" / PACKAGE, root / "install" / PACKAGE
    build.mkdir(parents=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix),
                                                    "platbase": str(prefix)}))
    site.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "setup.py", "egg_info", "--egg-base", str(build),
           "build", "--build-base", str(build / "build"),
           "install", "--prefix", str(prefix), "--record", str(build / "install.log"),
           "--single-version-externally-managed"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), sys.prefix])
    return Installed(prefix, site, env)


def test_setup_cfg_puts_scripts_in_lib_package() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["develop"]["script_dir"] == f"$base/lib/{PACKAGE}"  # --symlink-install
    assert cfg["install"]["install_scripts"] == f"$base/lib/{PACKAGE}"


def test_colcon_layout(installed: Installed) -> None:
    p = installed.prefix
    assert (p / "share/ament_index/resource_index/packages" / PACKAGE).is_file()
    assert (p / "share" / PACKAGE / "package.xml").read_text() == \
        (REPO / "package.xml").read_text()
    for sub in ("launch", "config"):
        want = sorted(f.name for f in (REPO / sub).iterdir() if f.is_file()
                      and f.suffix in (".py", ".yaml", ".rviz", ".xml"))
        assert sorted(f.name for f in (p / "share" / PACKAGE / sub).iterdir()) == want
    assert (installed.site_packages / PACKAGE / "__init__.py").is_file()
    assert not (p / "bin").exists(), "console scripts must go to lib/recon_ros, not bin/"
    for script in ("recon-ros", "recon_mapper", "recon_sim_camera"):
        path = p / "lib" / PACKAGE / script
        assert os.access(path, os.X_OK), path
        # the interpreter colcon ran (the venv's python when built from the activated venv)
        assert path.read_text().splitlines()[0] == f"#!{sys.executable}"


def test_ament_index_finds_every_launch_file_reference(installed: Installed,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    monkeypatch.setenv("AMENT_PREFIX_PATH", installed.env["AMENT_PREFIX_PATH"])
    share = Path(get_package_share_directory(PACKAGE))
    prefix = Path(get_package_prefix(PACKAGE))
    assert prefix == installed.prefix and share == prefix / "share" / PACKAGE
    for path in LAUNCH_FILES:
        assert (share / "launch" / path.name).is_file()
        constants = module_constants(path)
        for name, value in constants.items():
            if name.endswith(("_FILE", "_CONFIG", "_LAUNCH")):  # PathJoinSubstitution([share, x])
                assert (share / value).is_file(), f"{path.name}: {name}={value}"
        executables = [s.executable for s in node_specs(path) if s.package == PACKAGE]
        executables += [s.executable for s in process_specs(path) if s.package == PACKAGE]
        for exe in executables:
            # where launch_ros's ExecutableInPackage (and `ros2 run`) looks
            assert os.access(prefix / "lib" / PACKAGE / exe, os.X_OK), f"{path.name}: {exe}"
    # ... and where the node tests start them from under `colcon test`
    from .helpers import _scripts_dir
    assert _scripts_dir() == prefix / "lib" / PACKAGE


def test_installed_python_package_is_imported(installed: Installed, tmp_path: Path) -> None:
    """With PYTHONPATH as colcon's setup.bash sets it, the installed copy shadows the venv's
    editable install (cwd outside the checkout, as for a launched node)."""
    out = subprocess.run([sys.executable, "-c", "import recon_ros; print(recon_ros.__file__)"],
                         env=installed.env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(installed.site_packages), out.stdout


def test_installed_mapper_runs_with_installed_params(installed: Installed,
                                                     tmp_path: Path) -> None:
    from .conftest import FAST
    from .helpers import Harness, Process, child_env, next_domain_id

    share = installed.prefix / "share" / PACKAGE
    cmd = mapper_command(installed.prefix / "lib" / PACKAGE, share=share,
                         extra={"status_rate_hz": FAST["status_rate_hz"]})
    assert cmd[0] == str(installed.prefix / "lib" / PACKAGE / "recon_mapper")
    assert str(share / "config/mapper.yaml") in cmd
    domain = next_domain_id()
    env = child_env(domain, tmp_path / "ros_log")
    env.update(AMENT_PREFIX_PATH=installed.env["AMENT_PREFIX_PATH"],
               PYTHONPATH=installed.env["PYTHONPATH"])
    proc = Process(cmd, env, tmp_path / "mapper.log", cwd=tmp_path)
    harness = Harness(domain)
    try:
        try:
            status = harness.wait_status(lambda s: True, 60.0, "the installed mapper's status")
        except TimeoutError as err:
            raise TimeoutError(f"{err}\nmapper log:\n{proc.log()[-5000:]}") from err
        assert status["frames_integrated"] == 0
        assert proc.alive()
    finally:
        harness.close()
        rc = proc.stop()
    assert rc == 0, proc.log()[-3000:]
