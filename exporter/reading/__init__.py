"""Reading: segment snapshots (CSV, gzip, Customer Insights folders) streamed as source rows."""
