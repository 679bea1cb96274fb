"""Declares the compiled core only; all metadata lives in pyproject.toml.

The core is built for the machine it is installed on (``-march=native``), as it
hashes disk images and scans bitmaps at memory speed; set ``LABMIG_PORTABLE=1``
to build a binary that runs on any CPU of the architecture.
"""
import os
import platform

from Cython.Build import cythonize
from setuptools import Extension, setup

cflags = ["-O3", "-fopenmp"]
if os.environ.get("LABMIG_PORTABLE", "") in ("", "0"):
    cflags.append("-march=native")
elif platform.machine() in ("x86_64", "AMD64"):
    cflags += ["-mpopcnt"]

extensions = [
    Extension(
        "labmig._fastcopy",
        ["labmig/_fastcopy.pyx"],
        depends=["labmig/_fastcopy_c.h"],
        extra_compile_args=cflags,
        extra_link_args=["-fopenmp"],
    )
]

setup(ext_modules=cythonize(
    extensions,
    language_level=3,
    compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
))
