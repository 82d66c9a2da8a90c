"""nnhealth rules: list every rule with its severity, summary and thresholds."""
from ..rulebook import listing

NAME = "rules"
HELP = "list every rule (symptom id, severity, summary, thresholds)"


def add_arguments(p):
    pass


def run(args) -> int:
    print(listing())
    return 0
