"""A run's logger: made per run with less work than ``logging.Logger``, the same records and
the same rules (levels, ``logging.disable``, ``extra``, exceptions) as any logger."""

from __future__ import annotations

import logging

import pytest

from scheduler_app.log_pipeline import RunLogRecord, run_logger
from scheduler_app.writer import PendingLine


class Lines:
    def __init__(self) -> None:
        self.lines: list[PendingLine] = []

    def add_line(self, line: PendingLine) -> None:
        self.lines.append(line)


def logger_for(run_id: int = 7) -> tuple[logging.Logger, Lines]:
    sink = Lines()
    logger, _handler = run_logger(sink, run_id=run_id, job_id=3, plugin_id=1, user_id=2, package="p.mod.Plugin")  # type: ignore[arg-type]
    return logger, sink


def test_a_run_record_has_what_a_standard_record_has():
    standard = logging.LogRecord("n", logging.INFO, "(unknown file)", 0, "m %s", ("x",), None, "(unknown function)")
    ours = RunLogRecord("n", logging.INFO, "(unknown file)", 0, "m %s", ("x",), None, "(unknown function)")
    clock = {"created", "msecs", "relativeCreated"}
    assert {k: v for k, v in vars(ours).items() if k not in clock} == {
        k: v for k, v in vars(standard).items() if k not in clock
    }
    assert ours.getMessage() == "m x"


def test_lines_are_numbered_and_levels_apply():
    logger, sink = logger_for()
    logger.debug("one")
    logger.setLevel(logging.WARNING)
    logger.info("dropped: below the level the plugin set")
    logger.warning("two %d", 2)
    assert [(line.seq, line.level, line.message) for line in sink.lines] == [
        (1, logging.DEBUG, "one"),
        (2, logging.WARNING, "two 2"),
    ]
    assert {(line.run_id, line.job_id, line.group) for line in sink.lines} == {(7, 3, "logs.1.2")}


def test_logging_disable_applies_to_run_loggers():
    logger, sink = logger_for()
    logging.disable(logging.INFO)
    try:
        logger.info("not stored")
        logger.warning("stored")
    finally:
        logging.disable(logging.NOTSET)
    logger.info("stored again")
    assert [line.message for line in sink.lines] == ["stored", "stored again"]


def test_extra_fields_and_exceptions_reach_the_line():
    logger, sink = logger_for()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Keep())
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed", extra={"step": 4})
    assert seen[0].step == 4  # type: ignore[attr-defined]
    assert sink.lines[0].message.startswith("failed\nTraceback") and "ValueError: bad" in sink.lines[0].message
    with pytest.raises(KeyError):
        logger.info("x", extra={"msg": "overwrites"})
