"""The database: schema, Alembic migrations, named locks, an entry's metadata.

Imports neither torch nor gradio, so every process that only reads or writes records (the app,
a script, a migration) stays light.
"""
