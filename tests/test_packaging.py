import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_clidmu_tf_namespace(tmp_path):
    # Built from a copy, so that setuptools' build/ folder is not left in the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "runs")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True,
    )
    (wheel,) = tmp_path.glob("clidmu_tf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"clidmu_tf", wheel.name.split("-py")[0] + ".dist-info"}
    # The top-level pipelines/ and export/ folders land inside the namespace.
    assert "clidmu_tf/pipelines/__init__.py" in names
    assert "clidmu_tf/export/onnx_predictor.py" in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
