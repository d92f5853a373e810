"""The night's report: the gate's budgets (gate.py), the Markdown report and its folder
(markdown.py), the triangle and confusion plots (plots.py), the student candidates that
distill.student_budget measured (candidates.py), and night-over-night comparison and
trend (trend.py, written by publish)."""
