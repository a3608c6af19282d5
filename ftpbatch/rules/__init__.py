"""Rules stage: vectorised validation, normalisation and segmentation of rows.

Public API::

    ProductRules        the product settings that shape the rules
    BatchRules          rules.apply(chunk) -> messages; one per batch
                        (duplicate detection spans the batch's chunks)
    split_parts         text -> the parts it is sent as (for the connector)
    count_parts         text column -> (encoding, parts) columns

Modules: ``numbers`` (destinations, 105), ``segments`` and ``gsm``
(encoding and parts, 113, 116), ``sender`` (123), ``schedule`` (120, 101),
``duplicates`` (132), opt-outs (122) and ``apply`` (the order of the checks, the output frame).
"""

from .apply import OUTPUT_COLUMNS, BatchRules, ProductRules, optout_keys
from .segments import count_parts, split_parts

__all__ = ["OUTPUT_COLUMNS", "BatchRules", "ProductRules", "count_parts", "optout_keys", "split_parts"]
