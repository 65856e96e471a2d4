"""The report: results.csv + the cells' histories -> tables, figures, report.md, summary.json."""
