"""`mwtap view`: the local web page over a capture (the index and queries are analysis.view)."""
