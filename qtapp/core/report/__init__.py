"""Layer 7: functions of a finished `RunResult`: the result types, notes, the verdict, and their renderings
(report.json, the CLI text, report.html). Written once, shown by every face."""
