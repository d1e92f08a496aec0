"""Print kind's default storage manifest and the images it names, read from the kind module's own source.

    python3 hack/images/kind_storage_manifest.py KIND_DIR manifest   # the YAML kind's node-image build writes
    python3 hack/images/kind_storage_manifest.py KIND_DIR images     # provisioner and helper image names

kind keeps them as Go constants (pkg/build/nodeimage/const_storage.go); reading them from the pinned module keeps
the offline node image in step with what `kind build node-image` would ship.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def constants(source: str) -> dict[str, str]:
    """The string constants of a Go file, including one raw-string expression joined with `+` (the manifest)."""
    strings = dict(re.findall(r'^const (\w+) = "([^"]*)"$', source, re.M))
    start = source.find("const defaultStorageManifest = `")
    if start < 0:
        raise SystemExit("defaultStorageManifest not found: kind's const_storage.go changed")
    pos, parts = source.index("`", start) + 1, []
    while True:  # `raw` + IDENT + `raw` + ... ; stops at the closing backtick of the last raw string
        end = source.index("`", pos)
        parts.append(source[pos:end])
        joined = re.compile(r"`\s*\+\s*(\w+)\s*\+\s*`").match(source, end)
        if joined is None:
            break
        parts.append(strings[joined.group(1)])
        pos = joined.end()
    strings["defaultStorageManifest"] = "".join(parts)
    return strings


def main(kind_dir: str, what: str) -> None:
    c = constants((Path(kind_dir) / "pkg" / "build" / "nodeimage" / "const_storage.go").read_text())
    if what == "manifest":
        print(c["defaultStorageManifest"].strip())
    else:
        print(c["storageProvisionerImage"], c["storageHelperImage"], sep="\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
