"""pip install --no-build-isolation . from the repository root: python/setup.py builds it."""
import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "python", "setup.py"),
               run_name="__main__")
