"""Alembic environment: the engine comes from baadal.db.schema (never from a URL here).

On SQLite, foreign keys are off while migrations run (and checked before they commit): a
batch migration copies a table and drops the old one, and with foreign keys on that drop
would cascade to every row referencing it (a VM's grants, disks, users).
"""

from alembic import context

from baadal.db.models import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:  # outside any transaction: SQLite ignores this pragma inside one
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                raise RuntimeError("the migration left rows whose foreign keys point nowhere")
        connection.commit()
    finally:
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
