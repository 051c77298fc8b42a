"""The central store's schema migrations: ``NNNN_name.sql``, applied in order by ``probe collector migrate``."""
