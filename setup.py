"""Map the top-level folders onto the ``avemo.*`` namespace (see DESIGN.md)."""

from setuptools import find_packages, setup

ROOTS = {
    "avemo": "avemo",
    "avemo.bench": "bench",
    "avemo.data": "data",
    "avemo.extract": "extract",
    "avemo.fusion": "fusion",
    "avemo.workflows": "workflows",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for pkg, folder in ROOTS.items():
    packages.append(pkg)
    package_dir[pkg] = folder
    packages += [f"{pkg}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"avemo.workflows": ["configs/*.yaml", "grids/*.yaml"]},
)
