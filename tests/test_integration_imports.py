"""Optional frameworks stay optional: importing nnhealth imports none of them, and an adapter whose
framework is missing says what to install."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

FRAMEWORKS = ("jax", "flax", "optax", "keras", "tensorflow", "lightning", "pytorch_lightning", "transformers",
              "accelerate")


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_importing_nnhealth_imports_no_framework():
    proc = run(f"""
        import json, sys
        import nnhealth, nnhealth.hooks, nnhealth.stats.backend
        from nnhealth import Monitor
        import numpy as np
        mon = Monitor(every=1, console=False)
        mon.observe_activation("h", np.ones((4, 3)), kind="relu")
        mon.step(0, loss=1.0)
        mon.close()
        print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("adapter,framework,extra", [
    ("jax", "jax", "jax"), ("keras", "keras", "keras"), ("lightning", "lightning", "lightning"),
    ("transformers", "transformers", "transformers")])
def test_an_adapter_without_its_framework_says_what_to_install(adapter, framework, extra):
    blocked = [framework] + (["pytorch_lightning"] if framework == "lightning" else [])
    proc = run(f"""
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Missing())
        try:
            import nnhealth.hooks.{adapter}
        except ImportError as e:
            print(e)
    """)
    assert proc.returncode == 0, proc.stderr
    assert f"pip install 'nnhealth[{extra}]'" in proc.stdout
