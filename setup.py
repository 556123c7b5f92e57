from setuptools import find_packages, setup

setup(
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"neo.client": ["component.xml"]},
)
