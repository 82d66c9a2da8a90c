"""nnhealth explain ID: print one rule's page."""
from ..config import check_rule_ids
from ..rulebook import page

NAME = "explain"
HELP = "explain one rule: what it detects, why it matters, how it is computed, what to try"


def add_arguments(p):
    p.add_argument("rule", metavar="ID", help="a symptom id, e.g. dead-relu (see 'nnhealth rules')")


def run(args) -> int:
    (rid,) = check_rule_ids([args.rule], "explain")
    print(page(rid))
    return 0
