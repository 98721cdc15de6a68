"""Reports: results → Markdown tables, PNG plots and the text the CLI prints about a result."""
