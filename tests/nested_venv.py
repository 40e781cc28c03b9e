"""A fresh venv that sees the packages of the Python that makes it (standard library only).

`venv.create(..., system_site_packages=True)` links a new venv to the *base* installation: run from
inside a venv (how most people run the tests), the new one then lacks everything that venv holds
(torch, click, ...). Here the new venv instead lists the running interpreter's own site directories
(site.getsitepackages(): a venv's, and the base's too where that venv includes them) in a .pth file,
as plain paths: they come after the new venv's site-packages, and their .pth files (an editable
install's finder, say) do not run, so the new venv imports what is installed into it first."""
from __future__ import annotations

import os
import site
import subprocess
import venv
from pathlib import Path

PTH = "_parent_site_packages.pth"


def create(dest: Path) -> Path:
    """Make the venv at `dest`; return its bin directory."""
    venv.create(dest, system_site_packages=False, with_pip=False)
    bindir = Path(dest) / ("Scripts" if os.name == "nt" else "bin")
    purelib = subprocess.run([str(bindir / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs = [d for d in dict.fromkeys(dirs) if os.path.isdir(d) and os.path.abspath(d) != os.path.abspath(purelib)]
    Path(purelib, PTH).write_text("".join(f"{d}\n" for d in dirs))
    return bindir
