"""The desktop client's installer: a PyInstaller one-folder build (see README.md in installers/)."""
