"""Installs clidmu-tf.

The product keeps `pipelines/` and `export/` at the top of the repository; `package_dir` maps
them into the `clidmu_tf` namespace so that installing adds nothing but `clidmu_tf` to
site-packages.
"""

import pathlib

from setuptools import setup

HERE = pathlib.Path(__file__).parent

PACKAGE_DIRS = {
    "clidmu_tf": "clidmu_tf",
    "clidmu_tf.pipelines": "pipelines",
    "clidmu_tf.export": "export",
}


def find_packages_under(namespace, folder):
    """Lists `namespace` and every sub-package found below `folder`."""
    packages = []
    for init in sorted((HERE / folder).rglob("__init__.py")):
        relative = init.parent.relative_to(HERE / folder)
        packages.append(".".join((namespace,) + relative.parts) if relative.parts else namespace)
    return packages


packages = []
package_dir = {}
for namespace, folder in PACKAGE_DIRS.items():
    found = find_packages_under(namespace, folder)
    packages.extend(p for p in found if p not in packages)
    package_dir[namespace] = folder

TENSORFLOW = [
    'tensorflow-cpu>=2.21,<2.22; platform_machine == "x86_64"',
    'tensorflow>=2.21,<2.22; platform_machine != "x86_64"',
]

setup(
    name="clidmu-tf",
    version="0.1.0",
    description=(
        "Train Keras classifiers on noisy labels without a clean validation set (CLID-MU)."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    install_requires=TENSORFLOW
    + [
        "keras>=3.15,<4",
        "numpy>=1.26",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",
        "tensorboard>=2.21,<2.22",
        "keras-tuner>=1.4.8",
        "onnx>=1.17",
        "tf2onnx>=1.17",
        "onnxruntime>=1.20",
        "scikit-learn>=1.4",
        "mlxtend>=0.23",
        "matplotlib>=3.8",
        "pillow>=10",
        "filelock>=4.2",
    ],
    extras_require={"test": ["pytest>=8"]},
    entry_points={"console_scripts": ["clidmu-tf=clidmu_tf.cli.main:main"]},
    license="Apache-2.0",
)
