"""The compiled modules (kdbusfs/compiled.py lists them); everything else is in pyproject.toml."""

import runpy

from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILED = runpy.run_path("kdbusfs/compiled.py")["COMPILED"]

setup(
    ext_modules=cythonize(
        [Extension(name, [name.replace(".", "/") + ".pyx"]) for name in COMPILED],
        compiler_directives={"language_level": "3"},
    ),
)
