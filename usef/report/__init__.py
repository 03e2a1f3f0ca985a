"""Reports built from the output folders of ``usef eval``."""

from usef.report.compare import (
    ItemMismatchError,
    format_table,
    load_eval,
    paired_compare,
    wilcoxon_signed_rank,
)

__all__ = [
    "ItemMismatchError",
    "format_table",
    "load_eval",
    "paired_compare",
    "wilcoxon_signed_rank",
]
