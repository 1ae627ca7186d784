"""Build the Python package tqrdma, with libtqrdma inside it or an installed one.

    pip install --no-build-isolation .            # from the repository or from python/
    pip install --no-build-isolation -e .         # editable: the library lands in python/tqrdma

Only setuptools and wheel are needed (Debian: python3-setuptools, python3-wheel), and
numpy at run time (python3-numpy); --no-build-isolation keeps pip off the package index.

The library, chosen at build time by the environment:
  TQRDMA_BUILD_LIBRARY=1 (default)  cmake builds libtqrdma from this source tree (the
      library only, Release, no tests) and the package ships it (tqrdma/libtqrdma.so.0).
      TQRDMA_CMAKE_ARGS: more cmake configure arguments (e.g. -DTQ_WITH_OFI=OFF);
      TQRDMA_CMAKE_BUILD_DIR: the cmake build directory (default: under build-pip/); one
      already configured is built as it is (its build type and options kept).
      TQRDMA_BUILD_BASE: setuptools' build directory (default: build-pip/ here).
  TQRDMA_BUILD_LIBRARY=0  use an installed libtqrdma: TQRDMA_LIBRARY if set (the file),
      else pkg-config's tqrdma (PKG_CONFIG_PATH), else the dynamic linker's cache. Its
      directory is recorded in tqrdma/_libdir.py; nothing is compiled.
At run time TQRDMA_LIBRARY still overrides either (python/tqrdma/_capi.py).
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))  # python/
ROOT = os.path.dirname(HERE)                          # the repository: CMakeLists.txt
SONAME = "libtqrdma.so.0"
# setuptools' build directory: not "build", which is the repository's cmake build
BUILD_BASE = os.path.abspath(os.environ.get("TQRDMA_BUILD_BASE") or "build-pip")
DEBIAN_SITE = "/usr/lib/python3/dist-packages"  # python3-wheel, python3-numpy


def fail(message):
    sys.exit("tqrdma setup: " + message)


def version():
    with open(os.path.join(HERE, "tqrdma", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not match:
        fail("no __version__ in tqrdma/__init__.py")
    return match.group(1)


def check_environment():
    """What pip cannot fetch without an index, said before anything is built."""
    building = any(cmd in sys.argv for cmd in ("bdist_wheel", "dist_info", "editable_wheel",
                                               "install", "develop"))
    if not building:
        return
    if BDIST_WHEEL is None:
        fail(f"{sys.executable} has setuptools but not the 'wheel' package, which pip needs "
             "to build tqrdma: apt-get install python3-wheel (used from "
             f"{DEBIAN_SITE} by any Python 3 that lacks its own), or install wheel into "
             "this interpreter first.")
    if os.environ.get("TQRDMA_NO_NUMPY_CHECK") == "1":
        return
    # As the interpreter itself sees it: an isolated build (no --no-build-isolation)
    # points PYTHONPATH at pip's build environment, which hides the installed numpy.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = subprocess.run([sys.executable, "-c", "import numpy"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if probe.returncode != 0:
        fail(f"tqrdma needs numpy, which {sys.executable} cannot import, and pip would try "
             "to download it. Either use Debian's interpreter with python3-numpy (apt-get "
             "install python3-numpy; a venv made with /usr/bin/python3 -m venv "
             "--system-site-packages sees it), or make numpy importable by this interpreter "
             "first. Where a package index is reachable, TQRDMA_NO_NUMPY_CHECK=1 lets pip "
             "fetch numpy itself.")


def run(cmd, what):
    print("tqrdma setup:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        fail(f"{cmd[0]} not found: apt-get install cmake build-essential pkg-config "
             "(and the libraries ci/install-deps.sh names)")
    except subprocess.CalledProcessError as e:
        fail(f"{what} failed (exit {e.returncode}); the output above says why. The build "
             "needs Debian's build-essential cmake pkg-config libcjson-dev libucx-dev "
             "libfabric-dev libibverbs-dev librdmacm-dev (or transports turned off with "
             "TQRDMA_CMAKE_ARGS=\"-DTQ_WITH_UCX=OFF ...\"); TQRDMA_BUILD_LIBRARY=0 uses an "
             "installed libtqrdma instead.")


def build_library(build_temp):
    """cmake builds libtqrdma; return the path of the built shared library."""
    cmake = os.environ.get("CMAKE", "cmake")
    bdir = os.path.abspath(os.environ.get("TQRDMA_CMAKE_BUILD_DIR")
                           or os.path.join(build_temp, "cmake"))
    if not os.path.exists(os.path.join(bdir, "CMakeCache.txt")):
        run([cmake, "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release",
             "-DTQ_BUILD_TESTS=OFF", "-DTQ_WITH_PYTHON=OFF", "-DTQ_FUZZ=OFF", "-DTQ_SANITIZER="]
            + shlex.split(os.environ.get("TQRDMA_CMAKE_ARGS", "")), "cmake configure")
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    run([cmake, "--build", bdir, "--target", "tqrdma_shared", "-j", jobs], "cmake build")
    built = os.path.join(bdir, "lib", SONAME)
    if not os.path.exists(built):
        fail(f"cmake built no {built}")
    return os.path.realpath(built)


def installed_library():
    """An installed libtqrdma: TQRDMA_LIBRARY, pkg-config's tqrdma, the linker's cache."""
    env = os.environ.get("TQRDMA_LIBRARY")
    if env:
        if not os.path.isfile(env):
            fail(f"TQRDMA_LIBRARY={env}: no such file")
        return os.path.abspath(env)
    try:
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "tqrdma"], check=True,
                                capture_output=True, text=True).stdout.strip()
        if os.path.exists(os.path.join(libdir, SONAME)):
            return os.path.join(os.path.realpath(libdir), SONAME)
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        cache = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True,
                               text=True).stdout
        for line in cache.splitlines():  # "\tlibtqrdma.so.0 (libc6,x86-64) => /path"
            if line.split(None, 1)[:1] == [SONAME] and "=>" in line:
                return line.rsplit("=>", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    fail("TQRDMA_BUILD_LIBRARY=0 but no installed libtqrdma was found (set TQRDMA_LIBRARY to "
         "its file, or PKG_CONFIG_PATH to the directory of its tqrdma.pc)")
    return None


class BuildPy(build_py):
    """The Python files, then the library inside the package (or where it is, recorded)."""

    def run(self):
        super().run()
        # An editable install (pip install -e) imports the package of the source tree:
        # the library (or its record) goes there, git-ignored; pip install -e again
        # rebuilds it after a change to the C code.
        editable = getattr(self, "editable_mode", False)
        pkg = os.path.join(HERE if editable else self.build_lib, "tqrdma")
        for stale in glob.glob(os.path.join(pkg, "libtqrdma.so*")) + \
                [os.path.join(pkg, "_libdir.py")]:
            if os.path.exists(stale):
                os.remove(stale)
        choice = os.environ.get("TQRDMA_BUILD_LIBRARY", "1")
        if choice not in ("0", "1"):
            fail(f"TQRDMA_BUILD_LIBRARY={choice}: want 1 (build it) or 0 (use an installed one)")
        if choice == "1":
            build_temp = self.get_finalized_command("build").build_temp
            lib = build_library(build_temp)
            shutil.copyfile(lib, os.path.join(pkg, SONAME))
            os.chmod(os.path.join(pkg, SONAME), 0o755)
            print(f"tqrdma setup: {lib} -> {pkg}/{SONAME}")
        else:
            lib = installed_library()
            with open(os.path.join(pkg, "_libdir.py"), "w", encoding="utf-8") as f:
                f.write('"""Where libtqrdma is: the installed one this package was built '
                        'against."""\n')
                f.write(f"LIBDIR = {os.path.dirname(lib)!r}\n")
                f.write(f"LIBRARY = {lib!r}\n")
            print(f"tqrdma setup: using the installed {lib}")


class BinaryDistribution(Distribution):
    """The wheel holds a shared library: it is for this platform, not pure Python."""

    def has_ext_modules(self):
        return True


def find_bdist_wheel():
    """wheel's bdist_wheel (setuptools < 70.1 has none of its own): this interpreter's, else
    Debian's python3-wheel (pure Python), so that a plain venv or another interpreter
    builds with only Debian's packages and no index."""
    try:
        from wheel.bdist_wheel import bdist_wheel
        return bdist_wheel
    except ImportError:
        pass
    if not os.path.isdir(os.path.join(DEBIAN_SITE, "wheel")):
        return None
    sys.path.append(DEBIAN_SITE)  # last: this interpreter's own packages still win
    try:
        from wheel.bdist_wheel import bdist_wheel
    except Exception:  # noqa: BLE001  (it asks pkg_resources for setuptools at import)
        sys.path.remove(DEBIAN_SITE)
        return None
    print(f"tqrdma setup: building with the 'wheel' package of {DEBIAN_SITE}", flush=True)
    return bdist_wheel


CMDCLASS = {"build_py": BuildPy}
BDIST_WHEEL = find_bdist_wheel()
if BDIST_WHEEL is not None:
    class BdistWheel(BDIST_WHEEL):
        """ctypes, no extension module: any Python 3 on this platform (py3-none-linux_*)."""

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    CMDCLASS["bdist_wheel"] = BdistWheel


def main():
    check_environment()
    os.makedirs(BUILD_BASE, exist_ok=True)
    setup(
        name="tqrdma",
        version=version(),
        description="TransferQueue's key-value interface over libtqrdma "
                    "(an RDMA-native store of training samples), with numpy arrays",
        license="see the repository",
        python_requires=">=3.9",
        packages=["tqrdma"],
        package_dir={"tqrdma": os.path.relpath(os.path.join(HERE, "tqrdma"))},
        install_requires=["numpy"],
        extras_require={"torch": ["torch"]},  # unversioned: Debian's reads 1.13.0a0
        distclass=BinaryDistribution,
        cmdclass=CMDCLASS,
        zip_safe=False,
        options={"build": {"build_base": BUILD_BASE}, "egg_info": {"egg_base": BUILD_BASE}},
    )


if __name__ == "__main__":
    main()
