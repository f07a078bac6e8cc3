"""Packaging: cron and systemd files, debian/, the build backend, the bash completion.

Fast checks run everywhere. Building the wheel and the .deb is slow and needs PyPI:
set SYSCHANGEMON_SLOW=1 to run those. The install into a clean Debian root is
packaging/test-deb-in-chroot.sh (README, "Debian package"), not a test.
"""

from __future__ import annotations

import configparser
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from scanner import __version__
from scanner.commands import COMMANDS

REPO = Path(__file__).resolve().parent.parent
DEBIAN = REPO / "debian"
CRON = REPO / "conf" / "cron.d" / "syschangemon"
SERVICE = REPO / "conf" / "systemd" / "syschangemon.service"
TIMER = REPO / "conf" / "systemd" / "syschangemon.timer"
COMMAND = "/usr/sbin/syschangemon"
slow = pytest.mark.skipif(os.environ.get("SYSCHANGEMON_SLOW") != "1",
                          reason="slow (builds packages, needs PyPI): set SYSCHANGEMON_SLOW=1")


def load(name: str):
    """A module from packaging/ (not a package, so loaded by path)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "packaging" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


# cron and systemd ----------------------------------------------------------------------

def test_cron_file_is_the_originals_hourly_line():
    text = CRON.read_text()
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert entries == [f"0 * * * * root [ -x {COMMAND} ] && {COMMAND} run --skip-empty-mail"]
    # cron ignores files in /etc/cron.d whose name has a dot, and a last line
    # without a newline.
    assert "." not in CRON.name and text.endswith("\n")


def test_the_package_installs_the_command_where_cron_and_systemd_call_it():
    rules = (DEBIAN / "rules").read_text()
    assert re.search(rf"debian/syschangemon-launcher \$\(PKG\){re.escape(COMMAND)}$", rules, re.M)
    assert unit(SERVICE)["Service"]["ExecStart"] == f"{COMMAND} run --skip-empty-mail"


def test_service_runs_once_idle_and_changes_found_is_success():
    service = unit(SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    assert service["Nice"] == "19"
    assert service["IOSchedulingClass"] == "idle"
    assert "1" in service["SuccessExitStatus"].split()
    assert service["PrivateTmp"] == "yes" and service["NoNewPrivileges"] == "yes"
    # SIGTERM to the run alone: it stops its commands and workers itself.
    assert service["KillMode"] == "mixed"


def test_service_hardening_leaves_the_filesystem_readable_and_var_writable():
    service = unit(SERVICE)["Service"]
    assert service.get("ProtectSystem") in (None, "yes", "full")  # strict: /var read-only
    assert service.get("ProtectHome") in (None, "no", "read-only")
    for hiding in ("InaccessiblePaths", "TemporaryFileSystem", "ProtectKernelModules",
                   "ProtectProc", "PrivateDevices", "CapabilityBoundingSet"):
        assert hiding not in service, f"{hiding} hides files from the scan or commands"


def test_timer_is_hourly_randomized_and_persistent():
    timer = unit(TIMER)
    assert timer["Timer"]["OnCalendar"] == "hourly"
    assert timer["Timer"]["RandomizedDelaySec"] == "10min"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    # verify insists that ExecStart exists; the package's command is not installed here.
    service = SERVICE.read_text().replace(f"ExecStart={COMMAND}", "ExecStart=/bin/true")
    (tmp_path / SERVICE.name).write_text(service)
    shutil.copy(TIMER, tmp_path / TIMER.name)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / SERVICE.name),
                             str(tmp_path / TIMER.name)], capture_output=True, text=True)
    # Unknown keys are only warnings ("Unknown key ..., ignoring"), so stderr must be empty.
    assert (result.returncode, result.stderr) == (0, "")


# debian/ --------------------------------------------------------------------------------

def control() -> list[dict[str, str]]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", (DEBIAN / "control").read_text()):
        lines = [line for line in block.splitlines() if not line.startswith("#")]
        fields: dict[str, str] = {}
        for line in lines:
            if line[:1].isspace():
                fields[last] += "\n" + line.strip()
            elif ":" in line:
                last, value = line.split(":", 1)
                fields[last] = value.strip()
        if fields:
            paragraphs.append(fields)
    return paragraphs


def test_control_names_a_binary_package_with_bundled_native_code():
    source, binary = control()
    assert source["Source"] == binary["Package"] == "syschangemon"
    assert "debhelper-compat (= 13)" in source["Build-Depends"]
    assert "python3-venv" in source["Build-Depends"]
    assert binary["Architecture"] == "any"
    for substvar in ("${python3:Depends}", "${shlibs:Depends}", "${misc:Depends}"):
        assert substvar in binary["Depends"]
    assert "python3:Depends=" in (DEBIAN / "rules").read_text()


def test_changelog_version_is_the_program_version():
    top = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"syschangemon \(([^)]+)\) \S+; urgency=\w+", top)
    assert match, top
    # PEP 440 2.0.0.dev0 sorts before 2.0.0; Debian needs ~ for that.
    debian_version = re.sub(r"\.?(dev|a|b|rc)", r"~\1", pyproject()["project"]["version"])
    assert match[1] == debian_version
    assert pyproject()["project"]["version"] == __version__
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (native)"


def test_install_file_ships_every_config_file_to_etc_as_conffiles():
    installed: dict[str, str] = {}
    for line in (DEBIAN / "syschangemon.install").read_text().splitlines():
        source, target = line.split()
        matches = glob.glob(str(REPO / source))
        assert matches, f"debian/syschangemon.install: {source} matches nothing"
        for match in matches:
            installed[str(Path(match).relative_to(REPO))] = target
    for conf in ["conf/syschangemon.conf"] + sorted(
            str(p.relative_to(REPO)) for p in (REPO / "conf" / "plugins.d").glob("*.conf")):
        # dh_installdeb (compat 13) makes every file below etc/ a conffile.
        assert installed.get(conf, "").startswith("etc/syschangemon/"), conf
    assert installed["conf/cron.d/syschangemon"] == "etc/cron.d/"
    assert installed["conf/systemd/syschangemon.service"] == "lib/systemd/system/"
    assert installed["conf/systemd/syschangemon.timer"] == "lib/systemd/system/"


def test_rules_makes_the_state_directories_private_and_keeps_the_timer_off():
    rules = (DEBIAN / "rules").read_text()
    assert (DEBIAN / "syschangemon.dirs").read_text().split() == [
        "var/lib/syschangemon", "var/log/syschangemon"]
    assert "chmod 0700 $(PKG)/var/lib/syschangemon" in rules
    assert "chmod 0750 $(PKG)/var/log/syschangemon" in rules
    assert "dh_installsystemd --no-enable --no-start" in rules
    assert os.access(DEBIAN / "rules", os.X_OK)


# the wheel ------------------------------------------------------------------------------

def test_wheel_packages_list_every_python_package():
    declared = set(pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {str(init.parent.relative_to(REPO)).replace("/", ".")
               for top in ("scanner", "report") for init in (REPO / top).rglob("__init__.py")}
    assert on_disk - declared == set(), "packages missing from [tool.setuptools] packages"


def test_build_backend_asks_for_the_project_dependencies(monkeypatch):
    system = pyproject()["build-system"]
    assert system["build-backend"] == "syschangemon_build"
    assert system["backend-path"] == ["packaging"]
    backend = load("syschangemon_build")
    monkeypatch.chdir(REPO)
    # A build puts backend-path on sys.path; setuptools resolves the cmdclass there.
    monkeypatch.syspath_prepend(str(REPO / "packaging"))
    dependencies = pyproject()["project"]["dependencies"]
    assert dependencies and backend._project_dependencies() == dependencies
    # setuptools' own hook reads [project]; this pyproject needs the setuptools a
    # build would install (build-system.requires), which may be newer than this one.
    setuptools_major = int(metadata.version("setuptools").split(".")[0])
    if setuptools_major < 77:
        pytest.skip(f"setuptools {setuptools_major} here; the build uses >= 77")
    requires = backend.get_requires_for_build_wheel()
    assert set(dependencies) <= set(requires)


def smoke_test(site: Path, tmp_path: Path) -> str:
    """packaging/smoke-test.sh through the package's launcher, importing from ``site``."""
    launcher = (DEBIAN / "syschangemon-launcher").read_text()
    launcher = launcher.replace("#!/usr/bin/python3 -I", f"#!{sys.executable} -I", 1)
    launcher = launcher.replace("/usr/lib/syschangemon/site-packages", str(site))
    script = tmp_path / "syschangemon"
    script.write_text(launcher)
    script.chmod(0o755)
    result = subprocess.run([str(REPO / "packaging" / "smoke-test.sh"), str(script),
                             str(tmp_path / "smoke")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test passed" in result.stdout
    return result.stdout


def test_launcher_runs_the_hashing_workers_without_rerunning_itself(tmp_path):
    # The workers re-import the main script: without its __main__ guard every worker
    # started another run and the build's smoke test never ended.
    smoke_test(REPO, tmp_path)


# bash completion ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def completion(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "syschangemon"
    path.write_text(load("gen_docs").bash_completion())
    return path


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one is being completed)."""
    program = (f"source {script}\n"
               "COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMP_LINE=\"$*\"; "
               "COMP_POINT=${#COMP_LINE}\n"
               "_shtab_syschangemon syschangemon \"${@: -1}\" \"${@: -2:1}\"\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run(["bash", "-c", program, "bash", *words],
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_completion_offers_every_command_and_its_options(completion):
    assert subprocess.run(["bash", "-n", str(completion)]).returncode == 0
    assert complete(completion, "syschangemon", "") == [c.name for c in COMMANDS]
    assert complete(completion, "syschangemon", "ru") == ["run"]
    options = complete(completion, "syschangemon", "run", "--")
    assert {"--paranoid", "--skip-empty-mail", "--config"} <= set(options)
    assert complete(completion, "syschangemon", "print-report", "--format", "") == [
        "text", "html", "json", "ndjson"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_completion_offers_files_for_the_config_path(completion, tmp_path):
    (tmp_path / "mine.conf").write_text("")
    assert complete(completion, "syschangemon", "-c", str(tmp_path / "mi")) == [
        str(tmp_path / "mine.conf")]


# slow: real builds ------------------------------------------------------------------------

def copy_tree(target: Path) -> Path:
    """A copy of the sources without build, VCS and test leftovers."""
    ignore = shutil.ignore_patterns(".git", "build", "*.egg-info", ".venv", "__pycache__",
                                    ".pytest_cache", ".hypothesis", ".benchmarks", ".build")
    shutil.copytree(REPO, target, ignore=ignore)
    return target


@slow
def test_wheel_carries_the_man_page_completion_and_every_module(tmp_path):
    source = copy_tree(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "out"), str(source)], check=True)
    (wheel,) = (tmp_path / "out").glob("syschangemon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"syschangemon-{__version__}.data/data/share"
    assert f"{data}/man/man1/syschangemon.1" in names
    assert f"{data}/bash-completion/completions/syschangemon" in names
    for module in [*REPO.glob("scanner/**/*.py"), *REPO.glob("report/**/*.py")]:
        assert str(module.relative_to(REPO)) in names, f"{module} not in the wheel"
    # Installed away from the source tree, it runs on its embedded defaults.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True)
    smoke_test(site, tmp_path)


@slow
@pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None, reason="dpkg-dev not installed")
def test_dpkg_buildpackage_builds_the_deb(tmp_path):
    source = copy_tree(tmp_path / "syschangemon")
    result = subprocess.run(["dpkg-buildpackage", "-us", "-uc"], cwd=source,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (deb,) = tmp_path.glob("syschangemon_*.deb")
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    for line in ("-rwxr-xr-x root/root .* ./usr/sbin/syschangemon$",
                 "drwx------ root/root .* ./var/lib/syschangemon/$",
                 "drwxr-x--- root/adm .* ./var/log/syschangemon/$",
                 r"./usr/share/man/man1/syschangemon\.1\.gz$",
                 "./usr/share/bash-completion/completions/syschangemon$",
                 "./etc/cron.d/syschangemon$",
                 r"./lib/systemd/system/syschangemon\.timer$",
                 "./usr/lib/syschangemon/site-packages/duckdb/"):
        assert re.search(line, listing, re.M), line
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True,
                               text=True, check=True).stdout.split()
    assert "/etc/syschangemon/syschangemon.conf" in conffiles
    assert "/etc/syschangemon/plugins.d/file.conf" in conffiles
    assert "/etc/cron.d/syschangemon" in conffiles
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                             text=True, check=True).stdout
    assert re.match(r"python3 \(>= 3\.\d+\), python3 \(<< 3\.\d+\)", depends), depends
