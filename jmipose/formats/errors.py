"""Bad input data: one error type that names the file and the field, and the skip-or-raise policy.

Every reader of :mod:`jmipose.formats` (and the frame and video readers of :mod:`jmipose.data`) raises
:class:`DataError`; the command line reports it as a user's mistake in one line (``jmipose.cli``).
A reader that meets several bad entries hands each to a :class:`BadDataPolicy`, which raises it, or
logs and keeps it (``skip_bad``), or only keeps it (``collect``: the evaluator's pre-check lists every
problem of every prediction file before it stops).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("jmipose.data")


class DataError(ValueError):
    """A data file that cannot be used as it is.

    ``file`` is the offending file (annotation JSON, frame image, video), ``field`` the place inside
    it (``"annotations[3].bbox"``) or ``None`` when the whole file is at fault.
    """

    def __init__(self, *args):
        # DataError(file, field, problem), or DataError(message) as torch's DataLoader rebuilds a
        # worker's exception from its formatted text (that text still names the file).
        if len(args) == 1:
            self.file, self.field, self.problem = None, None, str(args[0])
            super().__init__(self.problem)
            return
        if len(args) != 3:
            raise TypeError("DataError(file, field, problem) or DataError(message)")
        file, field, problem = args
        self.file = None if file is None else str(file)
        self.field = field
        self.problem = problem
        where = self.file if self.file is not None else "<data>"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the attributes when the error is pickled
        if self.file is None and self.field is None:
            return (type(self), (self.problem,))
        return (type(self), (self.file, self.field, self.problem))


class BadDataPolicy:
    """Raise bad-data errors, or, when the user asked for ``skip_bad``, log each one and go on; or,
    with ``collect=True``, keep each one silently and go on (the caller reports them together).

    The skipped messages are kept in ``skipped`` and the errors themselves in ``errors``, so a caller
    can report or inspect them.
    """

    def __init__(self, skip_bad: bool = False, log: logging.Logger = logger, *, collect: bool = False):
        self.skip_bad = bool(skip_bad) or collect
        self.log = None if collect else log
        self.skipped: list[str] = []
        self.errors: list[DataError] = []

    def handle(self, error: DataError, what: str = "entry") -> None:
        if not self.skip_bad:
            raise error
        self.skipped.append(str(error))
        self.errors.append(error)
        if self.log is not None:
            self.log.warning("skip_bad: skipping %s: %s", what, error)
