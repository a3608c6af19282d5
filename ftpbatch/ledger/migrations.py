"""Schema migrations: registered in order, each run in a transaction and recorded.

Migrations are shared by both backends. They are written in SQLite's
types; :meth:`Database.ddl` says them in PostgreSQL's (ledger/pg.py: the
rowid ``INTEGER PRIMARY KEY`` an identity column, ``REAL`` double
precision, ``BLOB`` bytea). Times are epoch seconds. Several nodes starting
at once migrate one after the other (:meth:`Database.lock_schema`).
"""

from __future__ import annotations

import time
from typing import Iterator

from .db import Database

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "products, batches, messages",
        """
        CREATE TABLE products (
            name                    TEXT PRIMARY KEY,
            password_hash           TEXT NOT NULL,
            allow_ip                TEXT NOT NULL DEFAULT '',
            dial_prefix             TEXT,
            callback_url            TEXT,
            callback_user           TEXT,
            callback_password       TEXT,
            callback_level          INTEGER NOT NULL DEFAULT 2,
            sender                  TEXT,
            tps                     REAL,
            require_tls             INTEGER NOT NULL DEFAULT 0,
            max_file_bytes          INTEGER,
            max_parts               INTEGER NOT NULL DEFAULT 6,
            allow_duplicates        INTEGER NOT NULL DEFAULT 0,
            duplicate_window_hours  REAL NOT NULL DEFAULT 24,
            enabled                 INTEGER NOT NULL DEFAULT 1,
            created_at              REAL NOT NULL,
            updated_at              REAL NOT NULL
        );

        CREATE TABLE batches (
            seq             INTEGER PRIMARY KEY,
            id              TEXT NOT NULL UNIQUE,
            product         TEXT NOT NULL REFERENCES products(name),
            file_name       TEXT NOT NULL,
            spool_path      TEXT NOT NULL,
            source          TEXT NOT NULL,
            state           TEXT NOT NULL,
            sha256          TEXT,
            size_bytes      INTEGER,
            error_code      TEXT,
            error_text      TEXT,
            duplicate_of    TEXT,
            callback_level  INTEGER,
            rows            INTEGER NOT NULL DEFAULT 0,
            received_at     REAL NOT NULL,
            updated_at      REAL NOT NULL,
            completed_at    REAL,
            -- bumped on every change a report should show; the reporter
            -- remembers the version it last wrote
            version         INTEGER NOT NULL DEFAULT 1,
            reported_version INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX batches_by_product_sha ON batches (product, sha256);
        CREATE INDEX batches_by_state ON batches (state);
        CREATE INDEX batches_unreported ON batches (reported_version, version);

        CREATE TABLE messages (
            id                  INTEGER PRIMARY KEY,
            batch_seq           INTEGER NOT NULL REFERENCES batches(seq),
            row_no              INTEGER NOT NULL,
            product             TEXT NOT NULL,
            destination         TEXT,
            text                TEXT,
            sender              TEXT,
            climsgid            TEXT,
            encoding            TEXT,
            parts               INTEGER NOT NULL DEFAULT 0,
            status              TEXT NOT NULL,
            error_code          TEXT,
            error_text          TEXT,
            not_before          REAL NOT NULL DEFAULT 0,  -- epoch; 0: now
            validity_minutes    INTEGER,
            attempt             INTEGER NOT NULL DEFAULT 0,
            lease_owner         TEXT,
            lease_until         REAL,
            possible_duplicate  INTEGER NOT NULL DEFAULT 0,
            account             TEXT,
            upstream_id         TEXT,
            submitted_at        REAL,
            receipt_due         REAL,
            receipt_timed_out   INTEGER NOT NULL DEFAULT 0,
            updated_at          REAL NOT NULL
        );
        CREATE UNIQUE INDEX messages_by_batch_row ON messages (batch_seq, row_no);
        -- partial indexes keep bulk inserts cheap: only live rows are indexed
        -- the dispatch queue, walked in (not_before, id) order per product
        CREATE INDEX messages_queue ON messages (product, not_before, id)
            WHERE status IN ('002', '011');
        CREATE INDEX messages_awaiting_receipt ON messages (receipt_due)
            WHERE status = '003' AND receipt_timed_out = 0;
        CREATE UNIQUE INDEX messages_by_upstream ON messages (account, upstream_id)
            WHERE upstream_id IS NOT NULL;

        -- receipts whose message is not known yet (the receipt overtook the
        -- submit response): applied when the response is recorded
        CREATE TABLE parked_receipts (
            account      TEXT NOT NULL,
            upstream_id  TEXT NOT NULL,
            status       TEXT NOT NULL,
            error_text   TEXT,
            received_at  REAL NOT NULL,
            PRIMARY KEY (account, upstream_id)
        );

        CREATE TABLE counters (
            name   TEXT PRIMARY KEY,
            value  INTEGER NOT NULL
        );
        """,
    ),
    (
        2,
        "storage quota and retention per product, address bans",
        """
        -- NULL: no quota / the server-wide retention (settings [report] archive_days)
        ALTER TABLE products ADD COLUMN quota_bytes INTEGER;
        ALTER TABLE products ADD COLUMN retention_days INTEGER;

        -- addresses banned after too many failed FTP logins; the FTP server
        -- re-reads this table, so deleting a row (ftpbatch ban lift) unbans
        CREATE TABLE address_bans (
            address       TEXT PRIMARY KEY,
            banned_until  REAL NOT NULL,
            failures      INTEGER NOT NULL,
            reason        TEXT NOT NULL,
            created_at    REAL NOT NULL
        );
        """,
    ),
    (
        3,
        "callback outbox",
        """
        -- one row per status change a product's callback URL must hear of,
        -- inserted in the transaction that changed the status; leased for
        -- delivery like messages (lease + attempt), so a restart resumes it
        -- and two senders never post the same row
        CREATE TABLE callbacks (
            id           INTEGER PRIMARY KEY,
            message_id   INTEGER NOT NULL REFERENCES messages(id),
            product      TEXT NOT NULL,
            status       TEXT NOT NULL,
            event_at     REAL NOT NULL,      -- when the status changed (the POSTed timestamp)
            state        TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
            tries        INTEGER NOT NULL DEFAULT 0,       -- POSTs made
            attempt      INTEGER NOT NULL DEFAULT 0,       -- lease generation
            next_at      REAL NOT NULL,
            lease_owner  TEXT,
            lease_until  REAL,
            last_error   TEXT,
            done_at      REAL
        );
        -- a message reaches a status once: inserting the same change twice is a no-op
        CREATE UNIQUE INDEX callbacks_by_message_status ON callbacks (message_id, status);
        CREATE INDEX callbacks_due ON callbacks (next_at, id) WHERE state = 'pending';
        """,
    ),
    (
        4,
        "message blocks",
        """
        -- rows due now, stored at intake a few thousand to a row and made
        -- messages rows when first leased (see ledger/blocks.py)
        CREATE TABLE message_blocks (
            id          INTEGER PRIMARY KEY,
            batch_seq   INTEGER NOT NULL REFERENCES batches(seq),
            product     TEXT NOT NULL,
            first_row   INTEGER NOT NULL,
            last_row    INTEGER NOT NULL,
            size        INTEGER NOT NULL,             -- messages in the block
            taken       INTEGER NOT NULL DEFAULT 0,   -- the first ``taken`` are messages rows now
            parts_left  INTEGER NOT NULL,             -- parts of the messages not taken yet
            created_at  REAL NOT NULL,
            payload     BLOB NOT NULL                 -- Arrow IPC stream, never changed
        );
        -- the dispatch queue of blocks, oldest first per product; a block
        -- leaves the index when its last message is taken
        CREATE INDEX message_blocks_open ON message_blocks (product, id) WHERE taken < size;
        CREATE INDEX message_blocks_by_batch ON message_blocks (batch_seq, first_row);
        """,
    ),
    (
        5,
        "MO messages, receipt queries, upstream capabilities",
        """
        -- messages sent by handsets to us (deliver_sm that are not receipts);
        -- stored before the SMSC gets its deliver_sm_resp (see ledger/inbound.py)
        CREATE TABLE mo_messages (
            id            INTEGER PRIMARY KEY,
            account       TEXT NOT NULL,      -- the connector account it came in on
            source        TEXT NOT NULL,      -- the handset (source_addr)
            destination   TEXT NOT NULL,      -- our number or short code (destination_addr)
            text          TEXT NOT NULL,      -- decoded
            data_coding   INTEGER NOT NULL,
            raw           BLOB,               -- short_message as received, UDH included
            concat_ref    INTEGER,            -- one part of a concatenated MO: reference, total, sequence
            concat_total  INTEGER,
            concat_seq    INTEGER,
            received_at   REAL NOT NULL
        );
        CREATE INDEX mo_messages_by_source ON mo_messages (source, received_at);

        -- query_sm state of messages whose receipt is overdue: when to ask
        -- (again), how often it was asked, what the last answer said
        CREATE TABLE receipt_queries (
            message_id   INTEGER PRIMARY KEY REFERENCES messages(id),
            tries        INTEGER NOT NULL DEFAULT 0,
            next_at      REAL NOT NULL,
            last_answer  TEXT,
            updated_at   REAL NOT NULL
        );

        -- what an upstream account was found (not) to support, e.g.
        -- ('smpp:esme@host:2775', 'query_sm', 'refused'), remembered across restarts
        CREATE TABLE upstream_capabilities (
            account     TEXT NOT NULL,
            name        TEXT NOT NULL,
            value       TEXT NOT NULL,
            updated_at  REAL NOT NULL,
            PRIMARY KEY (account, name)
        );
        """,
    ),
    (
        6,
        "opt-out lists, batch controls, dry runs",
        """
        -- numbers a product must not send to (E.164 digits); rows of a batch
        -- to one of them are rejected with 122 at intake (see ledger/optouts.py)
        CREATE TABLE optouts (
            product  TEXT NOT NULL REFERENCES products(name),
            number   TEXT NOT NULL,
            since    REAL NOT NULL,
            source   TEXT NOT NULL,       -- ftp | cli | stop-reply
            PRIMARY KEY (product, number)
        );

        -- a file uploaded to /check: checked and reported, never sent; it is
        -- no earlier batch for the duplicate-file check
        ALTER TABLE batches ADD COLUMN dry_run INTEGER NOT NULL DEFAULT 0;
        -- leases skip the messages of a paused batch (in-flight ones finish)
        ALTER TABLE batches ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX batches_paused ON batches (seq) WHERE paused = 1;

        -- every pause, resume and cancel, by whom (ftp | cli), for the record
        CREATE TABLE batch_controls (
            id          INTEGER PRIMARY KEY,
            batch_seq   INTEGER NOT NULL REFERENCES batches(seq),
            verb        TEXT NOT NULL,    -- pause | resume | cancel
            source      TEXT NOT NULL,
            applied_at  REAL NOT NULL
        );
        CREATE INDEX batch_controls_by_batch ON batch_controls (batch_seq, id);
        """,
    ),
    (
        7,
        "SSH keys per product",
        """
        -- SFTP access of a product (see ledger/ssh_keys.py): its OpenSSH
        -- authorized_keys lines, and whether password logins are refused
        CREATE TABLE IF NOT EXISTS product_ssh (
            product          TEXT PRIMARY KEY REFERENCES products(name),
            authorized_keys  TEXT NOT NULL DEFAULT '',
            keys_only        INTEGER NOT NULL DEFAULT 0,
            updated_at       REAL NOT NULL
        );
        """,
    ),
    (
        8,
        "notes on rows and batches",
        """
        -- what was assumed about a row (a number read as national because a
        -- spreadsheet dropped its leading 0): report.csv's note column; only
        -- the few rows with a note have a row here, so intake stays cheap
        CREATE TABLE message_notes (
            batch_seq  INTEGER NOT NULL REFERENCES batches(seq),
            row_no     INTEGER NOT NULL,
            note       TEXT NOT NULL,
            PRIMARY KEY (batch_seq, row_no)
        );
        -- what a sender should know about the whole file (only the first
        -- sheet of a workbook read), one note a line: summary.json's notes
        ALTER TABLE batches ADD COLUMN notes TEXT;
        """,
    ),
    (
        9,
        "nodes",
        """
        -- every gateway process serving on this ledger (serve --node-id), one
        -- row per node id: written at start and by its heartbeat every second
        -- or so (see ledger/nodes.py); a node whose heartbeat is older than its
        -- lease_seconds is down, and its message leases have expired
        CREATE TABLE nodes (
            node_id        TEXT PRIMARY KEY,
            host           TEXT NOT NULL,
            pid            INTEGER NOT NULL,
            started_at     REAL NOT NULL,
            heartbeat_at   REAL NOT NULL,
            lease_seconds  REAL NOT NULL,     -- [dispatch] lease_seconds of the node
            ftp_address    TEXT NOT NULL DEFAULT '',
            binds          INTEGER NOT NULL DEFAULT 0,   -- upstream binds open now
            leases         INTEGER NOT NULL DEFAULT 0,   -- messages it holds leased now
            detail         TEXT NOT NULL DEFAULT '{}',   -- JSON: more of what the node holds
            stopped_at     REAL                          -- a clean stop; NULL while it runs (or died)
        );
        """,
    ),
    (
        11,
        "job leases",
        """
        -- work only one node may do at a time (ledger/jobs.py): report files,
        -- usage files, the callback sender, retention, the rescan, one file's
        -- ingest ('ingest:<seq>'), a bind slot of an account ('bind:<account>:<n>')
        CREATE TABLE job_leases (
            name      TEXT PRIMARY KEY,
            holder    TEXT NOT NULL,     -- a node id (serve --node-id)
            expires   REAL NOT NULL,     -- epoch seconds; after it anyone may take the job
            taken_at  REAL NOT NULL      -- when this holder took it
        );
        """,
    ),
]


def migrate(db: Database) -> None:
    """Bring the ledger's schema up to date; safe to call on every start (and on several nodes at once)."""
    with db.transaction() as tx:
        db.lock_schema(tx)
        tx.execute(
            db.ddl(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
        )
        done = {row[0] for row in tx.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            for statement in _statements(sql):
                tx.execute(db.ddl(statement))
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements at each ``;`` outside quotes and ``--`` comments.

    (``executescript`` would commit on its own, and PostgreSQL takes one
    statement per parameterised call.)
    """
    pending: list[str] = []
    quote = ""
    for line in script.splitlines(keepends=True):
        i = 0
        while i < len(line):
            ch = line[i]
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in ("'", '"'):
                quote = ch
            elif line.startswith("--", i):
                pending.append(line[i:])
                break
            elif ch == ";":
                pending.append(";")
                statement = "".join(pending).strip()
                pending = []
                if statement.strip(";").strip():
                    yield statement
                i += 1
                continue
            pending.append(ch)
            i += 1
    rest = "".join(pending)
    if _code_of(rest):
        yield rest.strip()


def _code_of(text: str) -> str:
    """``text`` without its ``--`` comments and blank space."""
    return "".join(line.split("--", 1)[0] for line in text.splitlines()).strip()
