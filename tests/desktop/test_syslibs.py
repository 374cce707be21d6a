"""Issue #15 failure 1: a missing X11 library is named exactly, with the package to install — checked
with the real ``ldd`` on a real ELF plugin linked against a library that is then removed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import syslibs

ABSENT = ("libenclave-test-icccm.so.4", "libenclave-test-keysyms.so.1")

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("ldd") is None, reason="needs cc and ldd")


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A shared object needing two libraries that are no longer there (names no system has, so the test
    holds whether or not this machine has the X libraries installed)."""
    (tmp_path / "stub.c").write_text("int stub(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int stub(void);\nint entry(void) { return stub(); }\n")
    libs = tmp_path / "libs"
    libs.mkdir()
    for soname in ABSENT:
        subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(libs / soname),
                        str(tmp_path / "stub.c")], check=True)
    out = tmp_path / "libqxcb.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(tmp_path / "plugin.c"), "-Wl,--no-as-needed",
                    *(str(libs / soname) for soname in ABSENT)], check=True)
    shutil.rmtree(libs)
    return out


def _os_release(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "os-release"
    path.write_text(text)
    return path


def test_missing_libraries_are_named_as_ldd_reports_them(plugin: Path, tmp_path: Path) -> None:
    assert syslibs.missing_libraries([plugin], dlopened=()) == list(ABSENT)
    assert syslibs.missing_libraries([plugin], dlopened=("libenclave-absent.so.9", "libc.so.6")) == [
        *ABSENT, "libenclave-absent.so.9"]
    report = syslibs.xcb_report([plugin], os_release=tmp_path / "none", dlopened=())
    assert report == ("Qt's X11 platform plugin cannot load: missing libenclave-test-icccm.so.4, "
                      "libenclave-test-keysyms.so.1. Install the packages that provide: "
                      "libenclave-test-icccm.so.4 libenclave-test-keysyms.so.1")


def test_packages_per_distribution(tmp_path: Path) -> None:
    gaps = ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-randr.so.0"]
    debian = syslibs.distro_family(_os_release(tmp_path, "ID=ubuntu\nID_LIKE=debian\n"))
    assert debian == "debian"
    assert syslibs.install_hint(gaps, debian) == "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1 libxcb-randr0"
    fedora = syslibs.distro_family(_os_release(tmp_path, 'ID="rocky"\nID_LIKE="rhel centos fedora"\n'))
    assert syslibs.install_hint(gaps, fedora) == "sudo dnf install -y xcb-util-wm xcb-util-keysyms libxcb"
    assert syslibs.install_hint(gaps, "arch") == "sudo pacman -S --needed xcb-util-wm xcb-util-keysyms libxcb"


def test_nothing_missing_is_no_report(tmp_path: Path) -> None:
    # The real plugin of this installation once .ci/run has installed the X libraries the X test needs.
    files = syslibs.xcb_plugin_files()
    assert files and files[0].name == "libqxcb.so"
    assert syslibs.xcb_report([Path(sys.executable)], dlopened=()) is None


def test_enclave_desktop_refuses_to_start_with_one_line(plugin: Path) -> None:
    code = ("import sys; from pathlib import Path; from desktop import syslibs; "
            f"syslibs.xcb_plugin_files = lambda: [Path({str(plugin)!r})]; "
            "from desktop.entry import main; sys.exit(main())")
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("enclave-desktop: error: Qt's X11 platform plugin cannot load: missing "
                           "libenclave-test-icccm.so.4, libenclave-test-keysyms.so.1. Install ")


def test_uses_xcb() -> None:
    assert syslibs.uses_xcb({"QT_QPA_PLATFORM": "xcb"}) == sys.platform.startswith("linux")
    assert not syslibs.uses_xcb({"QT_QPA_PLATFORM": "offscreen"})
    assert not syslibs.uses_xcb({"WAYLAND_DISPLAY": "wayland-0"})
