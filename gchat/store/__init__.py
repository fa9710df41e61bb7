"""PostgreSQL data access: one module per table group, plain SQL via asyncpg.

Every function takes an ``Executor`` (a pool, or a connection inside a
transaction that the calling service opened), so a service can make several
stores' writes atomic without the stores knowing about each other. Nothing
here imports a service, the transport or the broker.
"""
