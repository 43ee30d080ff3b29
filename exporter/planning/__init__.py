"""Planning: rows mapped and validated into contacts, de-duplicated, batched and written as
chunks."""
