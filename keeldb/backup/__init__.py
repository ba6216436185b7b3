"""Continuous backup: the archive of sealed log segments and snapshots, point-in-time restore,
on-demand backups, exports and imports."""
