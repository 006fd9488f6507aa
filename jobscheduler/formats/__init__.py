"""Date and time formats of the project (settings.FORMAT_MODULE_PATH)."""
