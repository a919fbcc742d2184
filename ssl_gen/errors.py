"""The one marker the command lines catch: a mistake or a stop the user is told in one line.

Every error class that means "the input was wrong, here is what to do" (a bad config value,
an unknown dataset, a workdir holding another run, a non-finite loss) subclasses
`UserError` as well as its natural base (`ValueError`, `RuntimeError`, ...). Each CLI
(`ssl_gen.cli.run_main`) prints such an error as `error: <message>` on one line and exits
with status 1; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message is one line telling the user what was wrong and what to do."""
