"""Subcommands of the ``osdface-rtc`` CLI (one module each, see ``osdface_rtc.cli``)."""
