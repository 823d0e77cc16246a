"""deploy/: the hardened systemd unit, its sysusers.d user, and the SMF manifest and method.

systemd's own tools check the unit (`systemd-analyze verify`, `systemd-analyze security`) and
the user (`systemd-sysusers --root`). They are on every machine with systemd and in CI: a
missing tool is a skip elsewhere and a failure under CI=true (as tests/conftest.py does for
namespaces). SMF cannot run here (`svccfg validate` is illumos-only), so the manifest is
checked against the content models of illumos' service_bundle.dtd.1, transcribed below, and
the method script runs under the local sh with stand-ins for `havip` and `svcprop`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "havip.service"
SYSUSERS = REPO / "deploy" / "sysusers.d" / "havip.conf"
MANIFEST = REPO / "deploy" / "smf" / "havip.xml"
METHOD = REPO / "deploy" / "smf" / "havip-method"
INSTALLED = "/usr/local/bin/havip"
MAX_EXPOSURE = 2.0
TRUTHY = frozenset({"1", "true", "yes", "on"})  # the spellings conftest.in_ci accepts


def _tool(name: str) -> str:
    """The tool's path; a skip outside CI, a failure under CI=true, when it is missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed"
    if os.environ.get("CI", "").strip().lower() in TRUTHY:
        pytest.fail(f"{message}, and CI must run this test")
    pytest.skip(message)


# ---- systemd --------------------------------------------------------------------------------


def _unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given (systemd allows repeats, e.g. SystemCallFilter)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{UNIT.name}: not KEY=VALUE: {raw!r}"
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return _unit_settings(UNIT.read_text())


def _one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(f"Service.{key}") or unit.get(key)
    assert values is not None, f"{UNIT.name}: {key} is not set"
    assert len(values) == 1, f"{UNIT.name}: {key} is set {len(values)} times"
    return values[0]


def test_the_unit_runs_a_notify_service_as_havip_with_two_capabilities(
    unit: dict[str, list[str]],
) -> None:
    assert _one(unit, "Type") == "notify"
    assert _one(unit, "NotifyAccess") == "main"
    assert _one(unit, "WatchdogSec") == "10s"
    assert _one(unit, "User") == "havip"
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(_one(unit, "CapabilityBoundingSet").split()) == caps
    assert set(_one(unit, "AmbientCapabilities").split()) == caps
    assert _one(unit, "NoNewPrivileges") == "yes"
    assert _one(unit, "Restart") == "on-failure"
    assert _one(unit, "RestartPreventExitStatus") == "2"  # cli.EXIT_CONFIG
    assert int(_one(unit, "LimitNOFILE")) >= 1024
    assert _one(unit, "UMask") == "0077"
    assert _one(unit, "StateDirectory") == "havip"
    assert _one(unit, "RuntimeDirectory") == "havip"
    assert _one(unit, "RuntimeDirectoryMode") == "0700"
    assert _one(unit, "ExecStart") == f"{INSTALLED} run --config /etc/havip/havip.toml"
    assert _one(unit, "ExecReload") == f"{INSTALLED} reload --config /etc/havip/havip.toml"
    assert set(_one(unit, "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
        "AF_PACKET",
    }
    assert unit["Service.SystemCallFilter"][0] == "@system-service"
    assert _one(unit, "SystemCallArchitectures") == "native"
    assert _one(unit, "MemoryDenyWriteExecute") == "yes"
    docs = unit["Unit.Documentation"][0].split()
    assert docs == ["man:havip(1)", "file:///usr/local/share/doc/havip/INSTALL.md"]


def test_the_exit_status_systemd_must_not_restart_is_the_cli_config_error() -> None:
    from havip.cli import EXIT_CONFIG

    assert _unit_settings(UNIT.read_text())["Service.RestartPreventExitStatus"] == [
        str(EXIT_CONFIG)
    ]


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with its executable swapped for one that exists here.

    `systemd-analyze verify` refuses a unit whose ExecStart binary is missing, and
    /usr/local/bin/havip exists only once `make install` ran. So verify a copy whose Exec*
    lines point at a stand-in `havip` (a shell script running this checkout's `python -m
    havip`) and otherwise is the unit byte for byte; the test also checks that nothing but
    that path differs."""
    stub = tmp_path / "bin" / "havip"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m havip "$@"\n')
    stub.chmod(0o755)
    original = UNIT.read_text()
    copy = original.replace(INSTALLED, str(stub))
    assert copy.replace(str(stub), INSTALLED) == original
    assert copy.count(str(stub)) == original.count(INSTALLED) == 2  # ExecStart, ExecReload
    path = tmp_path / "unit" / UNIT.name
    path.parent.mkdir()
    path.write_text(copy)
    return path


def _manpath(tmp_path: Path) -> Path:
    """A MANPATH holding havip(1): verify checks that `man havip(1)` resolves."""
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "havip.manpage"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    # The generated page when the generator is there; else a stand-in (the page's own
    # content is the packaging tests' business, this test checks only the unit's reference).
    page = done.stdout if done.returncode == 0 and done.stdout.startswith(".") else ""
    (man1 / "havip.1").write_text(page or ".TH HAVIP 1\n.SH NAME\nhavip \\- stand-in\n")
    return tmp_path / "man"


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    tool = _tool("systemd-analyze")
    copy = _verifiable_copy(tmp_path)
    env = {**os.environ, "MANPATH": str(_manpath(tmp_path))}
    done = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, env=env, timeout=60
    )
    output = (done.stdout + done.stderr).strip()
    print(f"systemd-analyze verify: exit {done.returncode}, output: {output or '(none)'}")
    assert done.returncode == 0, output
    assert output == "", output


def test_systemd_analyze_security_exposure_is_below_2(tmp_path: Path) -> None:
    tool = _tool("systemd-analyze")
    # --offline reads the file as it is (no running systemd needed); the score does not
    # depend on the Exec paths.
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = done.stdout + done.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", text)
    assert found, f"no exposure level in the output (exit {done.returncode}):\n{text}"
    exposure = float(found.group(1))
    open_items = [line.strip() for line in text.splitlines() if line.lstrip().startswith("✗")]
    print(f"systemd-analyze security --offline=yes: exposure {exposure}")
    print("\n".join(open_items))
    assert exposure < MAX_EXPOSURE, text


def test_sysusers_creates_a_system_user_without_a_login(tmp_path: Path) -> None:
    tool = _tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    done = subprocess.run(
        [tool, f"--root={root}", str(SYSUSERS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    users = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()]
    (havip,) = [u for u in users if u[0] == "havip"]
    assert 0 < int(havip[2]) < 1000  # a system uid
    assert havip[5] == "/var/lib/havip"  # the unit's StateDirectory
    assert havip[6].endswith("nologin")
    groups = [line.split(":")[0] for line in (root / "etc" / "group").read_text().splitlines()]
    assert "havip" in groups


# ---- SMF ------------------------------------------------------------------------------------

# The content models of illumos-gate usr/src/cmd/svc/dtd/service_bundle.dtd.1 for the elements
# a manifest like ours uses, as regular expressions over the children's tag names (each
# followed by a space), with each element's #REQUIRED attributes and enumerated values.
_C = r"(?:(?:{}) )"
_DTD: dict[str, tuple[str, frozenset[str], dict[str, frozenset[str]]]] = {
    "service_bundle": (
        rf"{_C.format('service')}*",
        frozenset({"type", "name"}),
        {},
    ),
    "service": (
        "".join(
            [
                rf"{_C.format('create_default_instance')}?",
                rf"{_C.format('single_instance')}?",
                rf"{_C.format('restarter')}?",
                rf"{_C.format('dependency')}*",
                rf"{_C.format('dependent')}*",
                rf"{_C.format('method_context')}?",
                rf"{_C.format('exec_method')}*",
                rf"{_C.format('property_group')}*",
                rf"{_C.format('instance')}*",
                rf"{_C.format('stability')}?",
                rf"{_C.format('template')}?",
            ]
        ),
        frozenset({"name", "version", "type"}),
        {"type": frozenset({"service", "restarter", "milestone"})},
    ),
    "create_default_instance": (
        "",
        frozenset({"enabled"}),
        {"enabled": frozenset({"true", "false"})},
    ),
    "single_instance": ("", frozenset(), {}),
    "dependency": (
        rf"{_C.format('service_fmri')}*{_C.format('stability')}?{_C.format('propval|property')}*",
        frozenset({"name", "grouping", "restart_on", "type"}),
        {
            "grouping": frozenset({"require_all", "require_any", "exclude_all", "optional_all"}),
            "restart_on": frozenset({"error", "restart", "refresh", "none"}),
        },
    ),
    "service_fmri": ("", frozenset({"value"}), {}),
    "method_context": (
        rf"{_C.format('method_profile|method_credential')}?{_C.format('method_environment')}?",
        frozenset(),
        {},
    ),
    "method_credential": ("", frozenset({"user"}), {}),
    "method_environment": (rf"{_C.format('envvar')}+", frozenset(), {}),
    "envvar": ("", frozenset({"name", "value"}), {}),
    "exec_method": (
        rf"{_C.format('method_context')}?{_C.format('stability')}?{_C.format('propval|property')}*",
        frozenset({"type", "name", "exec", "timeout_seconds"}),
        {"type": frozenset({"method", "monitor"})},
    ),
    "property_group": (
        rf"{_C.format('stability')}?{_C.format('propval|property')}*",
        frozenset({"name", "type"}),
        {},
    ),
    "propval": (
        "",
        frozenset({"name", "type", "value"}),
        {
            "type": frozenset(
                [
                    "count",
                    "integer",
                    "opaque",
                    "host",
                    "hostname",
                    "net_address_v4",
                    "net_address_v6",
                    "time",
                    "astring",
                    "ustring",
                    "boolean",
                    "fmri",
                    "uri",
                ]
            )
        },
    ),
    "stability": (
        "",
        frozenset({"value"}),
        {
            "value": frozenset(
                {"Standard", "Stable", "Evolving", "Unstable", "External", "Obsolete"}
            )
        },
    ),
    "template": (
        rf"{_C.format('common_name')}{_C.format('description')}?"
        rf"{_C.format('documentation')}?{_C.format('pg_pattern')}*",
        frozenset(),
        {},
    ),
    "common_name": (rf"{_C.format('loctext')}+", frozenset(), {}),
    "description": (rf"{_C.format('loctext')}+", frozenset(), {}),
    "loctext": ("", frozenset({"{http://www.w3.org/XML/1998/namespace}lang"}), {}),
    "documentation": (rf"{_C.format('doc_link|manpage')}*", frozenset(), {}),
    "manpage": ("", frozenset({"title", "section"}), {}),
    "doc_link": ("", frozenset({"name", "uri"}), {}),
}
_TEXT_ALLOWED = frozenset({"loctext"})  # (#PCDATA); every other element here is EMPTY or
# element-only


def _dtd_problems(element: ET.Element, path: str = "") -> list[str]:
    where = f"{path}/{element.tag}"
    if element.tag not in _DTD:
        return [f"{where}: element not in service_bundle.dtd.1 (or not transcribed here)"]
    model, required, enums = _DTD[element.tag]
    problems = [f"{where}: missing attribute {a}" for a in sorted(required - set(element.attrib))]
    for attr, allowed in enums.items():
        if attr in element.attrib and element.attrib[attr] not in allowed:
            problems.append(f"{where}: {attr}={element.attrib[attr]!r} not in {sorted(allowed)}")
    children = "".join(child.tag + " " for child in element)
    if not re.fullmatch(model, children):
        problems.append(f"{where}: children [{children.strip()}] do not match the DTD's order")
    if element.tag not in _TEXT_ALLOWED and (element.text or "").strip():
        problems.append(f"{where}: text in an element-only element")
    for child in element:
        problems += _dtd_problems(child, where)
    return problems


@pytest.fixture(scope="module")
def manifest() -> ET.Element:
    return ET.parse(MANIFEST).getroot()


def test_the_manifest_has_the_structure_the_dtd_requires(manifest: ET.Element) -> None:
    text = MANIFEST.read_text()
    assert text.startswith('<?xml version="1.0"?>\n<!DOCTYPE service_bundle SYSTEM')
    assert '"/usr/share/lib/xml/dtd/service_bundle.dtd.1"' in text.split("\n", 2)[1]
    assert manifest.tag == "service_bundle"
    assert manifest.attrib["type"] == "manifest"
    assert _dtd_problems(manifest) == []
    # The DTD says a manifest's service needs its template (and a method context somewhere).
    (service,) = manifest
    assert service.find("template") is not None
    assert service.find("method_context") is not None


def test_the_dtd_check_catches_what_svccfg_validate_would() -> None:
    """The checker itself can fail: elements out of order, a missing required attribute, a
    bad enumerated value and an unknown element are all reported."""
    bad = ET.fromstring(
        "<service_bundle type='manifest' name='x'>"
        "<service name='network/x' type='daemon' version='1'>"
        "<exec_method type='method' name='start' exec='/x' timeout_seconds='1'/>"
        "<dependency name='n' grouping='require_all' type='service'>"
        "<service_fmri value='svc:/milestone/network:default'/></dependency>"
        "<frobnicate/>"
        "</service></service_bundle>"
    )
    problems = "\n".join(_dtd_problems(bad))
    assert "type='daemon'" in problems
    assert "missing attribute restart_on" in problems
    assert "do not match the DTD's order" in problems
    assert "frobnicate: element not in" in problems


def test_the_manifest_service_dependencies_and_methods(manifest: ET.Element) -> None:
    (service,) = manifest
    assert service.attrib == {"name": "network/havip", "type": "service", "version": "1"}
    assert service.find("create_default_instance") is not None  # instance `default`
    deps = {
        d.attrib["name"]: (d.attrib, [f.attrib["value"] for f in d.iter("service_fmri")])
        for d in service.iter("dependency")
    }
    assert deps["network"][1] == ["svc:/milestone/network:default"]
    assert deps["network"][0]["grouping"] == "require_all"
    assert deps["filesystem"][1] == ["svc:/system/filesystem/local:default"]
    methods = {m.attrib["name"]: m.attrib for m in service.iter("exec_method")}
    assert methods["start"]["exec"] == "/lib/svc/method/havip start"
    assert methods["stop"]["exec"] == ":kill"  # SIGTERM: the daemon's planned handover
    assert methods["refresh"]["exec"] == "/lib/svc/method/havip refresh"
    assert all(int(m["timeout_seconds"]) > 0 for m in methods.values())
    startd = {
        p.attrib["name"]: p.attrib["value"]
        for pg in service.iter("property_group")
        if pg.attrib["name"] == "startd"
        for p in pg.iter("propval")
    }
    assert startd == {"duration": "child", "ignore_error": "core,signal"}
    documentation = service.find("template/documentation/manpage")
    assert documentation is not None
    assert documentation.attrib["title"] == "havip" and documentation.attrib["section"] == "1"


def test_the_manifest_runs_as_havip_with_only_the_needed_privileges(manifest: ET.Element) -> None:
    credential = manifest.find("service/method_context/method_credential")
    assert credential is not None
    assert credential.attrib["user"] == "havip" and credential.attrib["group"] == "havip"
    privileges = credential.attrib["privileges"].split(",")
    assert privileges[0] == "basic"
    granted = {p for p in privileges[1:] if not p.startswith("!")}
    # ipadm/ifconfig add and remove the VIP; raw ARP goes through DLPI. Nothing else: no
    # root, no sys_net_config, no all/zone.
    assert granted == {"sys_ip_config", "net_rawaccess"}
    assert {"!file_link_any", "!proc_info"} <= set(privileges)
    assert credential.attrib["limit_privileges"] == credential.attrib["privileges"]


def test_the_manifest_comment_documents_the_commands() -> None:
    head = MANIFEST.read_text().split("-->", 1)[0]
    for command in ("svccfg import", "svcadm enable", "svcadm refresh", "svcadm disable"):
        assert command in head, command
    assert "svcs -xv" in head and "svcs -L" in head


def test_the_method_script_is_valid_sh() -> None:
    done = subprocess.run(["sh", "-n", str(METHOD)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert METHOD.read_text().startswith("#!/bin/sh\n")
    assert os.access(METHOD, os.X_OK)


def _fake_tools(tmp_path: Path, *, check: int, reload: int) -> tuple[Path, dict[str, str]]:
    """A stand-in `havip` (records its argv, exits as told) and `svcprop` (answers the
    instance's config/* properties), on PATH as svc.startd's method environment would be."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    havip = bin_dir / "havip"
    havip.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        f'case "$1" in check-config) exit {check};; reload) exit {reload};; esac\n'
        "exit 0\n"
    )
    svcprop = bin_dir / "svcprop"
    svcprop.write_text(
        "#!/bin/sh\n"
        '[ "$1" = -p ] && [ "$3" = svc:/network/havip:default ] || exit 1\n'
        'case "$2" in\n'
        f"config/exec) echo {havip};;\n"
        "config/file) echo /etc/havip/n1.toml;;\n"
        "config/log_format) echo json;;\n"
        "*) exit 1;;\n"
        "esac\n"
    )
    for tool in (havip, svcprop):
        tool.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SMF_FMRI": "svc:/network/havip:default",
        "SMF_METHOD": "start",
    }
    return calls, env


def _method(arg: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(METHOD), arg], capture_output=True, text=True, env=env, timeout=30
    )


def test_the_method_start_checks_then_becomes_havip_run(tmp_path: Path) -> None:
    calls, env = _fake_tools(tmp_path, check=0, reload=0)
    done = _method("start", env)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "check-config --config /etc/havip/n1.toml",
        "run --config /etc/havip/n1.toml --log-format json",
    ]


def test_a_config_error_at_start_is_smf_exit_err_config(tmp_path: Path) -> None:
    calls, env = _fake_tools(tmp_path, check=2, reload=0)
    done = _method("start", env)
    assert done.returncode == 96  # SMF_EXIT_ERR_CONFIG: maintenance, no restart loop
    assert "svcadm clear havip" in done.stderr
    assert calls.read_text().splitlines() == ["check-config --config /etc/havip/n1.toml"]


def test_a_refused_reload_never_fails_the_refresh_method(tmp_path: Path) -> None:
    calls, env = _fake_tools(tmp_path, check=0, reload=2)
    done = _method("refresh", env)
    # A failed refresh would put the instance in maintenance and stop the daemon.
    assert done.returncode == 0
    assert "keeps its old config" in done.stderr
    assert calls.read_text().splitlines() == ["reload --config /etc/havip/n1.toml"]


def test_the_method_without_svcprop_values_uses_the_defaults(tmp_path: Path) -> None:
    _, env = _fake_tools(tmp_path, check=0, reload=0)
    env.pop("SMF_FMRI")  # no instance to ask: the defaults, /usr/local/bin/havip
    done = _method("start", env)
    if Path(INSTALLED).exists():
        pytest.skip(f"{INSTALLED} is installed here; the missing-binary path cannot be shown")
    assert done.returncode == 96
    assert f"{INSTALLED} is not an executable file" in done.stderr
