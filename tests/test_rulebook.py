"""Every rule is documented the same way, and docs/rules.md is generated from the rules themselves."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from nnhealth import RULES, SYMPTOMS
from nnhealth.rulebook import _field_comments, markdown, page
from nnhealth.rules.base import DOC_SECTIONS

DESIGN_IDS = ["loss-nan", "loss-exploding", "loss-not-decreasing", "init-plateau", "initial-loss-unexpected",
              "overfitting", "underfitting", "dead-relu", "saturated-activations", "vanishing-activations",
              "exploding-activations", "vanishing-gradients", "exploding-gradients", "update-ratio-high",
              "update-ratio-low", "input-not-normalized", "weights-symmetric", "non-finite-values"]


def test_catalog_ids_are_exactly_the_design_ones():
    assert list(SYMPTOMS) == DESIGN_IDS and set(RULES) == set(DESIGN_IDS)


@pytest.mark.parametrize("rid", DESIGN_IDS)
def test_each_rule_page_has_every_section_and_documents_each_threshold(rid):
    rule = RULES[rid]
    for section in DOC_SECTIONS:
        assert len(rule.doc[section]) > 20, (rid, section)
    assert rule.doc["example"].startswith(f"nnhealth {rule.severity} {rid} at step")
    comments = _field_comments(rule.thresholds)
    for f in dataclasses.fields(rule.thresholds):
        assert comments.get(f.name), f"{rid}.{f.name} has no #: comment"
        assert f"`{f.name}`" in rule.doc["how"], f"{rid}: 'how' does not say how {f.name} is used"
    assert rid in page(rid)


def test_docs_rules_md_is_current():
    assert (Path(__file__).parent.parent / "docs" / "rules.md").read_text() == markdown(), \
        "regenerate with: python -m nnhealth.rulebook > docs/rules.md"


def test_rules_and_explain_commands():
    out = subprocess.run([sys.executable, "-m", "nnhealth", "rules"], capture_output=True, text=True, check=True).stdout
    assert all(rid in out for rid in DESIGN_IDS) and "max_dead_fraction=0.5" in out
    out = subprocess.run([sys.executable, "-m", "nnhealth", "explain", "dead-relu"], capture_output=True, text=True,
                         check=True).stdout
    for title in ("What it detects", "Why it matters", "How it is computed", "Example", "What to try", "Thresholds"):
        assert title in out
    bad = subprocess.run([sys.executable, "-m", "nnhealth", "explain", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown rule id 'nope'" in bad.stderr
