"""Which system libraries Qt's X11 platform plugin lacks, by name, and what to install on this distribution.

Without this, a missing ``libxcb-icccm4`` shows as Qt's "xcb-cursor0 is needed" (its only hint, and
wrong when xcb-cursor is installed) followed by an abort. ``ldd`` on the plugin and the library it
wraps lists every unresolved shared library exactly; ``libxcb-cursor`` is loaded by Qt with
``dlopen`` at run time, so it is probed the same way. No Qt import here: this runs before Qt loads.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["PACKAGES", "distro_family", "install_hint", "missing_libraries", "xcb_plugin_files", "xcb_report"]

# Shared libraries Qt opens with dlopen rather than linking (so ldd cannot see them).
_DLOPENED = ("libxcb-cursor.so.0",)

# soname -> package, per distribution family. A soname not listed is named as it is.
PACKAGES: Mapping[str, Mapping[str, str]] = {
    "debian": {
        "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-keysyms.so.1": "libxcb-keysyms1",
        "libxcb-image.so.0": "libxcb-image0", "libxcb-render-util.so.0": "libxcb-render-util0",
        "libxcb-cursor.so.0": "libxcb-cursor0", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
        "libxkbcommon.so.0": "libxkbcommon0", "libxcb-xkb.so.1": "libxcb-xkb1",
        "libxcb-randr.so.0": "libxcb-randr0", "libxcb-shape.so.0": "libxcb-shape0",
        "libxcb-xinerama.so.0": "libxcb-xinerama0", "libxcb-xinput.so.0": "libxcb-xinput0",
        "libxcb-sync.so.1": "libxcb-sync1", "libxcb-xfixes.so.0": "libxcb-xfixes0",
        "libxcb-shm.so.0": "libxcb-shm0", "libxcb-render.so.0": "libxcb-render0",
        "libxcb-glx.so.0": "libxcb-glx0", "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1",
        "libX11.so.6": "libx11-6", "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1",
        "libOpenGL.so.0": "libopengl0", "libGLX.so.0": "libglx0", "libfontconfig.so.1": "libfontconfig1",
        "libfreetype.so.6": "libfreetype6", "libdbus-1.so.3": "libdbus-1-3",
        "libglib-2.0.so.0": "libglib2.0-0", "libICE.so.6": "libice6", "libSM.so.6": "libsm6",
    },
    "fedora": {
        "libxcb-icccm.so.4": "xcb-util-wm", "libxcb-keysyms.so.1": "xcb-util-keysyms",
        "libxcb-image.so.0": "xcb-util-image", "libxcb-render-util.so.0": "xcb-util-renderutil",
        "libxcb-cursor.so.0": "xcb-util-cursor", "libxkbcommon-x11.so.0": "libxkbcommon-x11",
        "libxkbcommon.so.0": "libxkbcommon", "libX11-xcb.so.1": "libX11-xcb", "libX11.so.6": "libX11",
        "libEGL.so.1": "libglvnd-egl", "libGL.so.1": "libglvnd-glx", "libGLX.so.0": "libglvnd-glx",
        "libOpenGL.so.0": "libglvnd-opengl", "libfontconfig.so.1": "fontconfig",
        "libfreetype.so.6": "freetype", "libdbus-1.so.3": "dbus-libs", "libglib-2.0.so.0": "glib2",
        "libICE.so.6": "libICE", "libSM.so.6": "libSM",
    },
    "arch": {
        "libxcb-icccm.so.4": "xcb-util-wm", "libxcb-keysyms.so.1": "xcb-util-keysyms",
        "libxcb-image.so.0": "xcb-util-image", "libxcb-render-util.so.0": "xcb-util-renderutil",
        "libxcb-cursor.so.0": "xcb-util-cursor", "libxkbcommon-x11.so.0": "libxkbcommon-x11",
        "libxkbcommon.so.0": "libxkbcommon", "libX11-xcb.so.1": "libx11", "libX11.so.6": "libx11",
        "libEGL.so.1": "libglvnd", "libGL.so.1": "libglvnd", "libGLX.so.0": "libglvnd",
        "libOpenGL.so.0": "libglvnd", "libfontconfig.so.1": "fontconfig", "libfreetype.so.6": "freetype2",
        "libdbus-1.so.3": "dbus", "libglib-2.0.so.0": "glib2", "libICE.so.6": "libice", "libSM.so.6": "libsm",
    },
}
# Every core xcb extension library (libxcb-randr, -shape, ...) is in the one libxcb package there.
_CORE_XCB = re.compile(r"libxcb(-(randr|shape|xinerama|xinput|sync|xfixes|shm|render|glx|xkb))?\.so\.\d+$")
_INSTALL = {"debian": "sudo apt-get install -y", "fedora": "sudo dnf install -y", "arch": "sudo pacman -S --needed"}


def distro_family(os_release: Path = Path("/etc/os-release")) -> str | None:
    """debian, fedora or arch from ID / ID_LIKE (Ubuntu and Mint are debian; RHEL, Rocky, Alma fedora)."""
    try:
        text = os_release.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    ids: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.extend(value.strip().strip('"').lower().split())
    aliases = {"ubuntu": "debian", "rhel": "fedora", "centos": "fedora", "manjaro": "arch"}
    for ident in ids:
        family = aliases.get(ident, ident)
        if family in _INSTALL:
            return family
    return None


def missing_libraries(files: Iterable[Path], *, dlopened: Iterable[str] = _DLOPENED) -> list[str]:
    """Sonames that ``ldd`` reports as "not found" for ``files``, plus the dlopened ones that do not load."""
    missing: list[str] = []
    ldd = shutil.which("ldd")
    for path in files:
        if ldd is None:
            break
        out = subprocess.run([ldd, str(path)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            name, arrow, where = line.strip().partition("=>")
            if arrow and where.strip() == "not found" and name.strip() not in missing:
                missing.append(name.strip())
    for soname in dlopened:
        try:
            ctypes.CDLL(soname)
        except OSError:
            if soname not in missing:
                missing.append(soname)
    return missing


def package_for(soname: str, family: str | None) -> str:
    if family is None:
        return soname
    name = PACKAGES[family].get(soname)
    if name is None and family != "debian" and _CORE_XCB.match(soname):
        return "libxcb"
    return name or soname


def install_hint(missing: Iterable[str], family: str | None) -> str:
    names = list(dict.fromkeys(package_for(soname, family) for soname in missing))
    if family is None:
        return "install the packages that provide: " + " ".join(names)
    return f"{_INSTALL[family]} {' '.join(names)}"


def xcb_plugin_files() -> list[Path]:
    """Qt's xcb platform plugin and the library it wraps, from the installed PySide6 (or a frozen build)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return []
    qt = Path(next(iter(spec.submodule_search_locations))) / "Qt"
    candidates = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))]
    return [path for path in candidates if path.is_file()][:2]


def uses_xcb(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Qt will pick its X11 plugin (what it does when the platform is not set and no Wayland runs)."""
    if not sys.platform.startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(":")[0].split(";")[0] == "xcb"
    return not environ.get("WAYLAND_DISPLAY")


def xcb_report(files: Iterable[Path] | None = None, *, os_release: Path = Path("/etc/os-release"),
               dlopened: Iterable[str] = _DLOPENED) -> str | None:
    """One message naming what is missing and the command that installs it; None when nothing is."""
    missing = missing_libraries(xcb_plugin_files() if files is None else files, dlopened=dlopened)
    if not missing:
        return None
    family = distro_family(os_release)
    how = f"Install them with: {install_hint(missing, family)}" if family else install_hint(missing, None).capitalize()
    return f"Qt's X11 platform plugin cannot load: missing {', '.join(missing)}. {how}"
