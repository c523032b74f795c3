"""Soaks: long or heavy runs against real applications that the CI suite does not run."""
