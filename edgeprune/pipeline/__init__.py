"""The commands end to end: adapt (prune + distil + export + report), evaluate, export, the demo."""
