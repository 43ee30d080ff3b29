"""Builds the optional C speed-ups of *prepare* in place (``make setup`` runs
``python setup.py build_ext --inplace``). Without them the same code runs on the standard
library, byte for byte the same, only slower: see exporter/native/__init__.py."""

from setuptools import Extension, setup

setup(
    packages=[],
    py_modules=[],
    ext_modules=[
        Extension(
            "exporter.native._speedups",
            ["exporter/native/_speedups.c"],
            extra_compile_args=["-O3"],
        )
    ],
)
