"""Evaluation helpers: answer extraction and grading (the CLI is eval/eval.py)."""
