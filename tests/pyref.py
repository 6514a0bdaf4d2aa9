"""Runs a test script whose reference is Python (PyTorch, h5py, NumPy, PIL, ...)
and turns a missing reference module into a skip: exit 77, which every test
registers as its SKIP_RETURN_CODE (tests/CMakeLists.txt, af_skippable_tests).
Any other failure, and any missing module that is not a reference, stays a failure.
usage: pyref.py SCRIPT [ARGS...]"""
import runpy
import sys

REFERENCES = {"torch", "h5py", "numpy", "PIL", "onnx", "cv2", "scipy", "insightface", "mxnet"}

script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] not in REFERENCES:
        raise
    print(f"SKIP: {script}: the reference module '{e.name}' is not installed for {sys.executable}")
    sys.exit(77)
