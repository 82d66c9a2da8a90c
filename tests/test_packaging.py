"""The wheel holds every package, with hooks/ and dashboards/ installed as nnhealth sub-packages."""
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"]), cfg["package-dir"]


def test_every_package_folder_is_declared():
    packages, mapping = declared()
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nnhealth").rglob("__init__.py")}
    found |= {"nnhealth.hooks", "nnhealth.dashboards"}
    assert found == packages, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - packages)}"
    assert mapping == {"nnhealth.hooks": "hooks", "nnhealth.dashboards": "dashboards"}
    for folder in ("hooks", "dashboards"):
        assert not [p for p in (ROOT / folder).rglob("__init__.py") if p.parent != ROOT / folder], \
            f"nested packages under {folder}/ need their own entry"


def test_wheel_contains_hooks_and_dashboards_under_nnhealth(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("nnhealth-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnhealth/hooks/__init__.py" in names and "nnhealth/dashboards/__init__.py" in names
    assert not any(n.startswith(("hooks/", "dashboards/", "tests/")) for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
