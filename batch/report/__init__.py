"""What a run leaves for people and tools: report.html, metadata.jsonl, export, status."""
