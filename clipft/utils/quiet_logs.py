"""One line per event in a run's console and ``train.log``.

Lightning gives its loggers their own stderr handler and stops them propagating, so under Hydra
its lines bypass ``train.log`` and any handler a user adds to the root logger (which, once
Lightning's are propagated, would print them twice). :func:`quiet_library_logs` routes them
through the root handlers once, drops vendor advertisements ("💡 Tip: ... litlogger") and known
deprecation chatter from library internals the user cannot act on, and keeps migration tools
(alembic, under Optuna's SQLite storage) at WARNING.
"""

from __future__ import annotations

import logging
import warnings

LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
VENDOR_TIPS = ("💡 Tip:",)
QUIET_LIBRARIES = {"alembic": logging.WARNING}
# chatty at DEBUG (PIL: one line per PNG chunk, matplotlib: font scoring): WARNING unless configured
# (hydra.job_logging.loggers.<name>.level), so a DEBUG root logger does not bury the run's own lines
NOISY_LIBRARIES = ("PIL", "matplotlib", "urllib3", "fsspec", "filelock", "h5py", "httpx", "httpcore", "asyncio",
                   "git", "huggingface_hub")
# library-internal deprecations: raised inside Lightning against torch's API, nothing for a user to change
INTERNAL_DEPRECATIONS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class DropVendorTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(VENDOR_TIPS)


def quiet_library_logs() -> None:
    """Idempotent; call once logging is configured (Hydra has set its handlers)."""
    if logging.getLogger().handlers:  # the run's handlers exist: let library lines reach them, once
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
            logger.propagate = True
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropVendorTips) for f in logger.filters):
            logger.addFilter(DropVendorTips())
    for name, level in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(level)
    for name in NOISY_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    for pattern in INTERNAL_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=pattern)
