"""Bulk task updates with background e-mail notifications through a transactional outbox."""

# The one place the version is written: pyproject.toml reads it from here, and
# the container image runs this source tree without installing the project.
__version__ = "0.1.0"
