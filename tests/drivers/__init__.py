"""Tests of the drivers that route an app's connections through the sandbox."""
