"""Report stage: results/* → figures/*, report/report.typ, report/report.pdf. Never imports torch."""
