"""Declares the compiled core only; all metadata lives in pyproject.toml.

The core hashes disk images and scans bitmaps at memory speed, so by default it
is built for the machine it is installed on (``-march=native``) with OpenMP.
Settings, from the environment:

    LABMIG_MARCH=TARGET   build for that CPU target instead (``native``,
                          ``x86-64``, ``x86-64-v3``, ``x86-64-v4``, ...: any
                          ``-march`` value the compiler knows)
    LABMIG_PORTABLE=1     a binary that runs on any CPU of the architecture
                          (the same as LABMIG_MARCH=x86-64 on x86-64: SSE2,
                          no POPCNT instruction)

A flag the compiler refuses (``-march=native`` on some compilers, ``-fopenmp``
without an OpenMP runtime) is left out and said so; the core then runs on one
thread. The target is compiled into the module (``labmig._fastcopy.BUILD_TARGET``)
so a test run can tell which binary it loaded.
"""
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts(flags: list[str]) -> bool:
    """True when the C compiler builds a trivial shared object with ``flags``."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int labmig_probe(void) { return 0; }\n")
        try:
            done = subprocess.run(cc + flags + ["-shared", "-fPIC", src, "-o", os.path.join(tmp, "probe.so")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        except OSError:
            return False
    return done.returncode == 0


def _target() -> str:
    march = os.environ.get("LABMIG_MARCH", "").strip()
    if march:
        return march
    if os.environ.get("LABMIG_PORTABLE", "") not in ("", "0"):
        return "x86-64" if platform.machine() in ("x86_64", "AMD64") else "generic"
    return "native"


target = _target()
cflags = ["-O3"]
link_flags: list[str] = []
if target != "generic":
    if _compiler_accepts([f"-march={target}"]):
        cflags.append(f"-march={target}")
    elif "LABMIG_MARCH" in os.environ:
        sys.exit(f"labmig setup: the C compiler refuses -march={target}; "
                 "hint: name a target it knows (gcc -march=help lists them) or unset LABMIG_MARCH")
    else:
        print(f"labmig setup: the C compiler refuses -march={target}; building a generic core", file=sys.stderr)
        target = "generic"
if _compiler_accepts(["-fopenmp"]):
    cflags.append("-fopenmp")
    link_flags.append("-fopenmp")
else:
    print("labmig setup: no OpenMP in this compiler; the compiled core will hash on one thread", file=sys.stderr)

extensions = [
    Extension(
        "labmig._fastcopy",
        ["labmig/_fastcopy.pyx"],
        depends=["labmig/_fastcopy_c.h"],
        define_macros=[("LABMIG_BUILD_TARGET", f'"{target}"')],
        extra_compile_args=cflags,
        extra_link_args=link_flags,
    )
]

setup(ext_modules=cythonize(
    extensions,
    language_level=3,
    compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
))
