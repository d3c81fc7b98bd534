"""The index and queries behind `mwtap view` (pure: no network; the server is recorder/view)."""
