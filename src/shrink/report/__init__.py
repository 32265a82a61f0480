"""report.json and report.html."""

from shrink.report.html import write_html
from shrink.report.table import Report, Row

__all__ = ["Report", "Row", "write_html"]
