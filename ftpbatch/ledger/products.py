"""Products: the sending channels and their FTP users."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..errors import NotFound, ProductError
from ..models import Product, parse_allow_ip
from ..product_checks import check_product
from .db import INTEGRITY_ERRORS, Database, Row

# Product fields that map 1:1 onto columns (the rest need conversion).
_PLAIN_FIELDS = (
    "password_hash",
    "dial_prefix",
    "callback_url",
    "callback_user",
    "callback_password",
    "callback_level",
    "sender",
    "tps",
    "max_file_bytes",
    "max_parts",
    "duplicate_window_hours",
    "quota_bytes",
    "retention_days",
)
_BOOL_FIELDS = ("require_tls", "allow_duplicates", "enabled")


def _to_columns(changes: dict[str, Any]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "allow_ip":
            columns[key] = ",".join(str(n) for n in value)
        elif key in _BOOL_FIELDS:
            columns[key] = int(bool(value))
        elif key in _PLAIN_FIELDS:
            columns[key] = value
        else:
            raise ProductError(f"unknown product setting {key!r}")
    return columns


def _from_row(row: Row) -> Product:
    return Product(
        name=row["name"],
        password_hash=row["password_hash"],
        allow_ip=parse_allow_ip(row["allow_ip"]),
        dial_prefix=row["dial_prefix"],
        callback_url=row["callback_url"],
        callback_user=row["callback_user"],
        callback_password=row["callback_password"],
        callback_level=row["callback_level"],
        sender=row["sender"],
        tps=row["tps"],
        require_tls=bool(row["require_tls"]),
        max_file_bytes=row["max_file_bytes"],
        max_parts=row["max_parts"],
        allow_duplicates=bool(row["allow_duplicates"]),
        duplicate_window_hours=row["duplicate_window_hours"],
        enabled=bool(row["enabled"]),
        quota_bytes=row["quota_bytes"],
        retention_days=row["retention_days"],
    )


class ProductStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_product(self, product: Product) -> None:
        """Store a new product; its settings are checked first (``InvalidSetting``)."""
        check_product(product)
        fields = {k: getattr(product, k) for k in (*_PLAIN_FIELDS, *_BOOL_FIELDS, "allow_ip")}
        columns = {"name": product.name, **_to_columns(fields)}
        now = time.time()
        columns["created_at"] = columns["updated_at"] = now
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        try:
            with self.db.transaction() as tx:
                tx.execute(f"INSERT INTO products ({names}) VALUES ({marks})", tuple(columns.values()))
        except INTEGRITY_ERRORS:
            raise ProductError(f"product {product.name!r} already exists; use 'product set' to change it") from None

    def update_product(self, name: str, **changes: Any) -> Product:
        """Change some settings; the product they make is checked first, and on a refusal nothing changes."""
        columns = _to_columns(changes)
        current = self.get_product(name)
        if current is None:
            raise NotFound(f"no product named {name!r}")
        if not columns:
            return current
        check_product(dataclasses.replace(current, **changes))
        columns["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in columns)
        with self.db.transaction() as tx:
            cur = tx.execute(f"UPDATE products SET {assignments} WHERE name = ?", (*columns.values(), name))
            if cur.rowcount == 0:
                raise NotFound(f"no product named {name!r}")
        product = self.get_product(name)
        if product is None:
            raise NotFound(f"no product named {name!r}")
        return product

    def get_product(self, name: str) -> Product | None:
        row = self.db.connection().execute("SELECT * FROM products WHERE name = ?", (name,)).fetchone()
        return _from_row(row) if row else None

    def list_products(self) -> list[Product]:
        rows = self.db.connection().execute("SELECT * FROM products ORDER BY name").fetchall()
        return [_from_row(r) for r in rows]
