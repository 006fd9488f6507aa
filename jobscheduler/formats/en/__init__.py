"""English formats: ISO dates, 24-hour times with seconds."""
