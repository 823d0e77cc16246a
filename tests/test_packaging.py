"""The built wheel and `make install`: what an operator actually gets on a node.

The wheel is built once per run from a copy of the tree (no network: the build backend comes
from the test venv, `--no-build-isolation`), then inspected, then installed by `make install`
under a DESTDIR with `--no-deps --no-index` (so the venv step needs no network either; the
dependencies themselves are PyPI's and OmniOS's business, checked through the metadata).
"""

from __future__ import annotations

import configparser
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "INSTALL.md"
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
ILLUMOS = {"sys_platform": "sunos5", "platform_system": "SunOS", "os_name": "posix"}
# What OmniOS r151054 LTS ships (its release notes' package table, omnios-build
# doc/ReleaseNotes.md): runtime/python-313 3.13.3, library/python-3/cryptography-313 44.0.2.
# prometheus-client and tenacity are not OmniOS packages: pip installs them into the venv.
OMNIOS_R151054 = {"python": "3.13.3", "cryptography": "44.0.2"}


def _copy_tree(dest: Path) -> Path:
    """The files a wheel is built from, without caches or build leftovers."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "havip",
        src / "havip",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """havip's wheel, built offline from a copy of this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    src = _copy_tree(work)
    out = work / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-q", "-w", str(out), str(src)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (
        "pip wheel failed (is the build backend of [build-system] in the venv? `make venv`):\n"
        + result.stdout
        + result.stderr
    )
    (built,) = out.glob("havip-*.whl")
    yield built


def _read(whl: Path, suffix: str) -> str:
    with zipfile.ZipFile(whl) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name).decode()


def _requirements(whl: Path) -> list[Requirement]:
    meta = email.parser.Parser().parsestr(_read(whl, ".dist-info/METADATA"))
    return [Requirement(text) for text in meta.get_all("Requires-Dist") or []]


def _needed(whl: Path, env: dict[str, str]) -> dict[str, Requirement]:
    """The distributions pip installs for `pip install havip` on a platform (no extras)."""
    needed: dict[str, Requirement] = {}
    for req in _requirements(whl):
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            needed[req.name.lower()] = req
    return needed


def test_the_wheel_requires_pyroute2_on_linux_only(wheel: Path) -> None:
    on_linux = _needed(wheel, LINUX)
    on_illumos = _needed(wheel, ILLUMOS)
    assert set(on_linux) == {"cryptography", "prometheus-client", "tenacity", "pyroute2"}
    assert set(on_illumos) == {"cryptography", "prometheus-client", "tenacity"}
    # The test tools stay behind the extra: a node never installs pytest or mypy.
    extras = {r.name for r in _requirements(wheel) if r.marker and "extra" in str(r.marker)}
    assert "pytest" in extras and not extras & set(on_linux)


def test_the_wheel_metadata_says_what_pyproject_says(wheel: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    meta = email.parser.Parser().parsestr(_read(wheel, ".dist-info/METADATA"))
    assert meta["Name"] == "havip"
    assert meta["Version"] == project["version"]
    assert meta["Requires-Python"] == project["requires-python"]
    declared = {str(Requirement(text)) for text in project["dependencies"]}
    base = {str(r) for r in _requirements(wheel) if not r.marker or "extra" not in str(r.marker)}
    assert base == declared


def test_what_omnios_lts_ships_meets_our_floors(wheel: Path) -> None:
    """The illumos guide's venv (--system-site-packages) uses OmniOS's python and cryptography."""
    meta = email.parser.Parser().parsestr(_read(wheel, ".dist-info/METADATA"))
    assert Version(OMNIOS_R151054["python"]) in SpecifierSet(meta["Requires-Python"])
    crypto = _needed(wheel, ILLUMOS)["cryptography"]
    assert Version(OMNIOS_R151054["cryptography"]) in crypto.specifier
    # r151046 LTS shipped cryptography 39.0.2: below the floor, as the guide says.
    assert Version("39.0.2") not in crypto.specifier
    assert "44.0.2" in GUIDE.read_text() and "39.0.2" in GUIDE.read_text()


def test_the_wheel_gives_the_havip_command(wheel: Path) -> None:
    entry = configparser.ConfigParser()
    entry.read_string(_read(wheel, ".dist-info/entry_points.txt"))
    assert dict(entry["console_scripts"]) == {"havip": "havip.cli:main"}


def test_the_wheel_holds_every_file_of_the_package_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    shipped = {n for n in names if ".dist-info/" not in n}
    source = {
        str(p.relative_to(REPO))
        for p in (REPO / "havip").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert source - shipped == set(), "in the tree but not in the wheel"
    assert shipped - source == set(), "in the wheel but not in the tree (tests? bench?)"
    # The modules `make install` runs from the installed venv.
    assert {"havip/manpage.py", "havip/completion.py", "havip/__main__.py"} <= shipped


def test_nothing_but_the_linux_backend_needs_pyroute2(wheel: Path) -> None:
    """On illumos pyroute2 is absent: every other module must import without it."""
    with zipfile.ZipFile(wheel) as zf:
        modules = sorted(
            n[:-3].replace("/", ".").removesuffix(".__init__")
            for n in zf.namelist()
            if n.endswith(".py") and ".dist-info/" not in n
        )
    linux_only = {"havip.backends.linux", "havip.__main__"}  # __main__ runs the CLI and exits
    script = (
        "import importlib, sys\n"
        "sys.modules['pyroute2'] = None  # as on illumos: importing it fails\n"
        f"for name in {[m for m in modules if m not in linux_only]!r}:\n"
        "    importlib.import_module(name)\n"
        "print('imported', len(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "havip.backends.linux" in modules


# --- make install -----------------------------------------------------------------------------


def _make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MAKEFLAGS": ""}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _files(root: Path) -> set[str]:
    return {
        "/" + str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
        if "/opt/havip/" not in "/" + str(p.relative_to(root)) + "/"
    }


@pytest.fixture(scope="module")
def staged(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install DESTDIR=...` with the wheel, offline."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dest = tmp_path_factory.mktemp("destdir")
    result = _make("install", f"DESTDIR={dest}", f"WHEEL={wheel}", "PIP_FLAGS=--no-deps --no-index")
    assert result.returncode == 0, result.stdout + result.stderr
    return dest


INSTALLED = [
    "/usr/local/bin/havip",
    "/usr/local/share/man/man1/havip.1",
    "/usr/share/bash-completion/completions/havip",
    "/usr/local/share/doc/havip/README.md",
    "/usr/local/share/doc/havip/INSTALL.md",
    "/etc/systemd/system/havip.service",
    "/etc/sysusers.d/havip.conf",
]


def test_make_install_puts_each_file_where_the_guide_says(staged: Path) -> None:
    guide = GUIDE.read_text()
    for path in [*INSTALLED, "/opt/havip"]:
        assert os.path.lexists(f"{staged}{path}"), f"make install did not create {path}"
        assert path in guide, f"docs/INSTALL.md does not say where {path} goes"
    link = staged / "usr/local/bin/havip"
    assert link.is_symlink() and os.readlink(link) == "/opt/havip/bin/havip"
    assert (staged / "usr/local/share/doc/havip/INSTALL.md").read_bytes() == GUIDE.read_bytes()
    page = (staged / "usr/local/share/man/man1/havip.1").read_text()
    assert page.startswith('.\\" Generated') and ".TH HAVIP 1" in page
    completion = (staged / "usr/share/bash-completion/completions/havip").read_text()
    assert "complete -F _havip havip" in completion


def test_the_staged_venv_runs_from_opt_havip(staged: Path) -> None:
    """DESTDIR is only a staging area: the venv's scripts name /opt/havip, not the stage."""
    script = (staged / "opt/havip/bin/havip").read_text()
    assert script.splitlines()[0] == "#!/opt/havip/bin/python"
    for path in (staged / "opt/havip/bin").iterdir():
        if path.is_file() and not path.is_symlink():
            assert str(staged) not in path.read_text(errors="replace"), path
    version = subprocess.run(
        [str(staged / "opt/havip/bin/python"), "-m", "havip", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.strip() == f"havip {_version()}", version.stderr


def _version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def test_the_unit_names_installed_files(staged: Path) -> None:
    """Documentation=, ExecStart= and ExecReload= point at what make install put there."""
    unit = (staged / "etc/systemd/system/havip.service").read_text()
    docs = re.findall(r"^Documentation=(.*)$", unit, re.M)
    assert docs
    for url in " ".join(docs).split():
        if url.startswith("file://"):
            assert (staged / url.removeprefix("file:///")).is_file(), url
        elif url.startswith("man:"):
            name, section = re.fullmatch(r"man:(\S+)\((\d)\)", url).groups()  # type: ignore[union-attr]
            assert (staged / f"usr/local/share/man/man{section}/{name}.{section}").is_file(), url
        else:
            pytest.fail(f"Documentation={url}: neither file:// nor man:")
    for line in re.findall(r"^Exec\w+=(\S+)", unit, re.M):
        assert os.path.lexists(f"{staged}{line}"), line


def test_make_install_honours_prefix(wheel: Path, tmp_path: Path) -> None:
    result = _make(
        "install",
        f"DESTDIR={tmp_path}",
        "PREFIX=/usr",
        f"WHEEL={wheel}",
        "PIP_FLAGS=--no-deps --no-index",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.readlink(tmp_path / "usr/bin/havip") == "/opt/havip/bin/havip"
    assert (tmp_path / "usr/share/man/man1/havip.1").is_file()
    assert (tmp_path / "usr/share/doc/havip/INSTALL.md").is_file()
    unit = (tmp_path / "etc/systemd/system/havip.service").read_text()
    assert "ExecStart=/usr/bin/havip run" in unit
    assert "/usr/local" not in unit
    assert "/usr/share/doc/havip/" in (tmp_path / "usr/share/man/man1/havip.1").read_text()


def test_make_uninstall_removes_everything_install_put_there(wheel: Path, tmp_path: Path) -> None:
    flags = [f"WHEEL={wheel}", "PIP_FLAGS=--no-deps --no-index"]
    result = _make("install", f"DESTDIR={tmp_path}", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    before = _files(tmp_path)
    assert set(INSTALLED) <= before
    # Installing again over it (an upgrade from a rebuilt checkout) replaces the package,
    # even at the same version number.
    (init,) = (tmp_path / "opt/havip/lib").glob("python3*/site-packages/havip/__init__.py")
    init.write_text(init.read_text() + "STALE = True\n")
    result = _make("install", f"DESTDIR={tmp_path}", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STALE" not in init.read_text()
    assert _files(tmp_path) == before
    # A config and a key the operator put there: uninstall keeps them.
    (tmp_path / "etc/havip").mkdir(parents=True)
    (tmp_path / "etc/havip/havip.toml").write_text("node = 'n1'\n")
    result = _make("uninstall", f"DESTDIR={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _files(tmp_path) == {"/etc/havip/havip.toml"}
    assert not (tmp_path / "opt/havip").exists()


def test_make_install_on_illumos_puts_the_smf_files_in_place(wheel: Path, tmp_path: Path) -> None:
    """The SunOS branch, staged on Linux: OS=SunOS, with GNU install under its Linux name."""
    flags = [f"DESTDIR={tmp_path}", "OS=SunOS", "INSTALL=install", "PREFIX=/opt/local"]
    result = _make("install", *flags, f"WHEEL={wheel}", "PIP_FLAGS=--no-deps --no-index")
    assert result.returncode == 0, result.stdout + result.stderr
    cfg = (tmp_path / "opt/havip/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg  # OmniOS's cryptography
    method = tmp_path / "lib/svc/method/havip"
    assert method.stat().st_mode & 0o777 == 0o555
    assert "/opt/local/bin/havip" in method.read_text()
    manifest = (tmp_path / "lib/svc/manifest/site/havip.xml").read_text()
    for url in re.findall(r"uri='file://([^']+)'", manifest):
        assert (tmp_path / url.lstrip("/")).is_file(), url
    (manpath,) = re.findall(r"manpath='([^']+)'", manifest)
    assert (tmp_path / manpath.lstrip("/") / "man1/havip.1").is_file()
    assert "value='/opt/local/bin/havip'" in manifest
    assert not (tmp_path / "etc/systemd").exists()
    for path in ("/lib/svc/manifest/site/havip.xml", "/lib/svc/method/havip"):
        assert path in GUIDE.read_text()
    result = _make("uninstall", *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _files(tmp_path) == set()
