"""Plugin packages, one folder per plugin version (``name@vX_Y_Z``); see docs/PLUGIN_DEVELOPMENT.md."""
