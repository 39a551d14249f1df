"""Bulk task updates with background e-mail notifications through a transactional outbox."""
