"""kinds_plugin: one field of every kind the config form must handle."""
