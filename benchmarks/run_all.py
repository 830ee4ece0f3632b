"""Run every benchmark script in this folder, one after another (each prints JSON)."""
import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    rc = 0
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        print(f"# {os.path.basename(path)}", flush=True)
        rc |= subprocess.call([sys.executable, path], cwd=HERE)
    sys.exit(rc)
