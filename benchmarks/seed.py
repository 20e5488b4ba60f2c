"""Fill a migrated PostgreSQL database with users, live sessions and Apple refresh tokens.

For the "flat with size" measurements (docs/performance.md): sign-in and session-check costs
with a million users and a million live sessions beside those of an empty database. The rows
are made by PostgreSQL itself (``INSERT … SELECT … FROM generate_series``), in batches, each
batch one statement that inserts the users and, from what it returns, one live session and one
Apple token per user. They are shaped like the service's: ``sub`` like Apple's
(``000123.<32 hex>.0456``), token hashes the hex SHA-256 of random tokens, refresh tokens as
long as a Fernet ciphertext, one user in four with a private relay address. Connected as a
superuser, the script turns the foreign-key triggers off for its own transactions
(``session_replication_role = replica``): its sessions and tokens reference the users the same
statement returned, and the checks would cost a third of the time.

Seeded users carry the client id ``--client-id``. Run again, the script tops up to ``--users``
(users already seeded count; nothing is inserted twice) and says when there is nothing to do.

    python benchmarks/seed.py postgresql+asyncpg://postgres@127.0.0.1:5432/appleconnect \\
        [--users 1000000] [--batch 100000]

The database must have been migrated first (``appleconnect migrate`` or a start of the service).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

SEED_CLIENT_ID = "com.example.seed"

# One statement per batch. :lo..:hi number the users; :salt makes this run's random-looking
# values differ from another run's while staying unique within it (md5 of the number).
BATCH = text(
    """
WITH numbers AS (
    SELECT i, md5(:salt || '-' || i) AS h FROM generate_series(CAST(:lo AS bigint),
                                                             CAST(:hi AS bigint)) AS i
), new_users AS (
    INSERT INTO users (sub, email, email_verified, is_private_email, email_forwarding,
                       email_undeliverable, email_bounces, first_name, last_name, role,
                       client_id, created_at, last_sign_in_at)
    SELECT lpad(CAST(i % 1000000 AS text), 6, '0') || '.' || h || '.'
               || lpad(CAST(i % 10000 AS text), 4, '0'),
           CASE WHEN i % 4 = 0 THEN substr(h, 1, 10) || '@privaterelay.appleid.com'
                ELSE 'user' || i || '@example.com' END,
           true, i % 4 = 0, true, false, 0,
           'First' || (i % 997), 'Last' || (i % 991), 'subscriber', :client_id,
           now() - make_interval(secs => i % 31536000), now() - make_interval(secs => i % 86400)
    FROM numbers
    ON CONFLICT (sub) DO NOTHING
    RETURNING id, sub
), new_sessions AS (
    INSERT INTO sessions (token_hash, user_id, created_at, expires_at)
    SELECT encode(sha256(convert_to('acs_' || sub || random() || clock_timestamp(), 'UTF8')),
                  'hex'),
           id, now(), now() + interval '30 days'
    FROM new_users
    RETURNING 1
), new_tokens AS (
    INSERT INTO apple_tokens (user_id, client_id, refresh_token_encrypted, refresh_token_hash,
                              created_at, validated_at)
    SELECT id, :client_id,
           'gAAAAA' || translate(encode(sha512(convert_to(sub || random(), 'UTF8'))
                                        || sha512(convert_to(sub || random(), 'UTF8')),
                                        'base64'), E'+/\\n', '-_'),
           encode(sha256(convert_to('r' || sub || random() || clock_timestamp(), 'UTF8')), 'hex'),
           now(), now()
    FROM new_users
    RETURNING 1
)
SELECT (SELECT count(*) FROM new_users), (SELECT count(*) FROM new_sessions),
       (SELECT count(*) FROM new_tokens)
"""
)


def async_url(url: str) -> str:
    """SQLAlchemy's asyncpg URL for a ``postgresql://`` one (the driver is added)."""
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("postgresql+asyncpg://"):
        return url
    raise SystemExit(f"seed.py: {url!r} is not a PostgreSQL URL (postgresql+asyncpg://…)")


async def counts(conn: AsyncConnection, client_id: str) -> tuple[int, int, int]:
    """Seeded users, their live sessions and their Apple tokens."""
    row = (
        await conn.execute(
            text(
                "SELECT (SELECT count(*) FROM users WHERE client_id = :c), "
                "(SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id "
                " WHERE u.client_id = :c AND s.expires_at > now()), "
                "(SELECT count(*) FROM apple_tokens WHERE client_id = :c)"
            ),
            {"c": client_id},
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def check_migrated(conn: AsyncConnection) -> None:
    tables = await conn.scalar(
        text(
            "SELECT count(*) FROM unnest(ARRAY['users', 'sessions', 'apple_tokens']) AS t "
            "WHERE to_regclass('public.' || t) IS NOT NULL"
        )
    )
    if tables != 3:
        raise SystemExit(
            "seed.py: the database is not migrated (no users, sessions and apple_tokens "
            "tables); run `appleconnect migrate` or start the service on it first."
        )


async def seed(url: str, users: int, batch: int, client_id: str) -> int:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            await check_migrated(conn)
            have, _sessions, _tokens = await counts(conn, client_id)
            superuser = bool(
                await conn.scalar(
                    text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                )
            )
        if have >= users:
            print(f"already {have:,} seeded users (client id {client_id}): nothing to do")
            return 0
        checks = "off (superuser)" if superuser else "on (not a superuser)"
        print(
            f"seeding users {have + 1:,} to {users:,} in batches of {batch:,}; "
            f"foreign-key checks {checks}",
            flush=True,
        )
        salt = secrets.token_hex(8)
        started = time.perf_counter()
        for lo in range(have + 1, users + 1, batch):
            hi = min(users, lo + batch - 1)
            t0 = time.perf_counter()
            async with engine.begin() as conn:
                if superuser:
                    await conn.execute(text("SET LOCAL session_replication_role = replica"))
                made = (
                    await conn.execute(
                        BATCH, {"lo": lo, "hi": hi, "salt": salt, "client_id": client_id}
                    )
                ).one()
            took = time.perf_counter() - t0
            print(
                f"  users {lo:,}-{hi:,}: {made[0]:,} users, {made[1]:,} sessions, "
                f"{made[2]:,} tokens in {took:.1f} s ({made[0] / took:,.0f} users/s)",
                flush=True,
            )
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE users"))
            await conn.execute(text("ANALYZE sessions"))
            await conn.execute(text("ANALYZE apple_tokens"))
            final = await counts(conn, client_id)
        total = time.perf_counter() - started
        print(
            f"done in {total:.1f} s: {final[0]:,} seeded users, {final[1]:,} live sessions, "
            f"{final[2]:,} Apple tokens"
        )
        return 0
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="PostgreSQL URL of a migrated database")
    parser.add_argument("--users", type=int, default=1_000_000, help="seeded users wanted")
    parser.add_argument("--batch", type=int, default=100_000, help="users per statement")
    parser.add_argument(
        "--client-id", default=SEED_CLIENT_ID, help="client id that marks seeded users"
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.batch < 1:
        parser.error("--users and --batch must be at least 1")
    return asyncio.run(seed(args.url, args.users, args.batch, args.client_id))


if __name__ == "__main__":
    sys.exit(main())
