"""Management: connections and exports, their validation, permissions, secrets and schedules."""
