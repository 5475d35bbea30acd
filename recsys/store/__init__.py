"""The recommendation store: PostgreSQL connection, migrations, publishing, retention."""
