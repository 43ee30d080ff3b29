"""One export run: prepare → push → confirm → finalize, its tally, report and rejected rows."""
