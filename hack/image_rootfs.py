"""Collect a shell-less root filesystem for the operator image (the root Dockerfile's `rootfs` stage).

Run by the image's own Python after `pip install`: copies into DEST the interpreter, its standard library (without
the test suites, IDLE, tkinter, ensurepip), the installed packages (without pip, setuptools and wheel, and without
chanscale's harness and demo modules), every shared library the interpreter and the compiled extension modules load
(found with `ldd`), the CA bundle and a passwd/group naming the non-root user.
The final stage is `FROM scratch` + DEST: no shell, no package manager, no coreutils.

    python image_rootfs.py DEST
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "venv"}
PACKAGES_SKIP = re.compile(r"^(pip|setuptools|wheel|_distutils_hack|distutils-precedence\.pth|pkg_resources)([-.].*)?$")
FILES = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
]
UID = 65532
# chanscale's own modules that only the local harness, the demo and the tests use (they need the `demo`/`dev`
# extras): the operator imports none of them (chanscale.local.opa, which it does use, stays).
HARNESS = [
    "local/binaries",
    "local/cluster",
    "local/harness",
    "local/pki",
    "local/prometheus",
    "local/process",
    "demo",
    "demo_plot",
    "demo_real",
]


def copy(src: Path, dest: Path) -> None:
    """Copy SRC to DEST/SRC, keeping symlinks (and copying what they point at)."""
    target = dest / src.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if not target.exists() and not target.is_symlink():
            target.symlink_to(os.readlink(src))
        copy(src.parent / os.readlink(src), dest)  # link by link: python -> python3 -> python3.11
    elif src.is_dir():
        shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
    elif src.exists():
        shutil.copy2(src, target)


def copy_tree(src: Path, dest: Path, skip: re.Pattern[str] | set[str]) -> None:
    for entry in sorted(src.iterdir()):
        skipped = entry.name in skip if isinstance(skip, set) else bool(skip.match(entry.name))
        if not skipped:
            copy(entry, dest)


def shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every library `ldd` resolves for the binaries, and the dynamic loader itself."""
    libs: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m:
                libs.add(Path(m.group(1)))
    return libs


def merged_usr(dest: Path) -> None:
    """Recreate the base's /lib -> usr/lib style links first, so that a library found via either path lands once."""
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        src = Path("/", top)
        if src.is_symlink():
            (dest / top).parent.mkdir(parents=True, exist_ok=True)
            (dest / src.resolve().relative_to("/")).mkdir(parents=True, exist_ok=True)
            (dest / top).symlink_to(os.readlink(src))


def main(dest: Path) -> None:
    merged_usr(dest)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sites = {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    sites |= {Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()}
    executable = Path(sys.executable)
    copy(executable, dest)
    copy_tree(stdlib, dest, STDLIB_SKIP)
    for site in sorted(sites):
        copy_tree(site, dest, PACKAGES_SKIP)
    for site in sites:
        for module in HARNESS:
            for f in [
                *(dest / site.relative_to("/") / "chanscale").glob(f"{module}.py"),
                *(dest / site.relative_to("/") / "chanscale").glob(f"{module.replace('/', '/__pycache__/')}.*.pyc"),
            ]:
                f.unlink()
    extensions = [p for root in [stdlib, *sites] for p in root.rglob("*.so")]
    # libc among them: ctypes loads it by name (chanscale.local.opa sets the parent-death signal with prctl).
    for lib in shared_libraries([executable.resolve(), *extensions]):
        copy(lib, dest)
    for f in FILES:
        copy(Path(f), dest)
    # `python` and `chanscale` on PATH: the chart's test pod and the e2e discovery sidecar run `python`.
    bindir = dest / "usr/local/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        link = bindir / name
        if not link.exists():
            link.symlink_to(executable.resolve())
    copy(Path(shutil.which("chanscale") or "/usr/local/bin/chanscale"), dest)
    etc = dest / "etc"
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/sbin/nologin\nchanscale:x:{UID}:{UID}::/nonexistent:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nchanscale:x:{UID}:\n")
    (dest / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
