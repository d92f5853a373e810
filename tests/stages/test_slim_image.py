"""The evaluate and publish images carry no training stack (no torch): the code they run must
import without it, whatever a refactor moves where (tests/containers builds the images; this
check runs everywhere, in seconds)."""
import subprocess
import sys

from tests.conftest import ROOT

WITHOUT_TRAINING_STACK = r"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torch_pruning", "tensorly", "transformers", "optuna"):
            raise ImportError("the slim image has no " + name)
sys.meta_path.insert(0, Refuse())
import stages.evaluate, slimline.nightly.publish, slimline.nightly.step
print("imported")
"""


def test_evaluate_publish_and_the_step_import_without_the_training_stack():
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRAINING_STACK], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-2000:]
