"""The appliance database.

    base       Base (naming convention), shared column types (UTCDateTime, intpk, str64, ...)
    engine     make_engine(url) (SQLite: WAL, synchronous=FULL, foreign keys), UnitOfWork
    models     users, roles, teams, memberships, policies, API tokens, login sessions,
               login throttle, trusted addresses, projects, installed models
    schema     imports every model module, so Base.metadata is complete (Alembic targets it)
    migrate    upgrade(url) / downgrade(url, rev) / current(url) / head() / check(url)
    datadir    load_data_dir(dir) and open_database(settings) for every command but `init`

Schema changes only through Alembic revisions in the top-level ``migrations`` package.
"""
